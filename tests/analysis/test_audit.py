"""The intervention audit on hand-made run dirs: each finding fires on exactly the situation it
names and stays silent one step away from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from retrain.analysis.audit import AuditThresholds, audit_path, lora_delta_is_zero, thresholds_for
from retrain.analysis.loading import AnalysisError
from retrain.cli import analyze_cmd

from .conftest import command_app


def _row(step: int, **fields: Any) -> dict[str, Any]:
    base = {"step": step, "loss": 0.5 / step, "correct_rate": 0.5, "mean_reward": 0.5,
            "num_groups": 4, "num_informative_groups": 3, "num_all_correct_groups": 1,
            "num_all_wrong_groups": 0, "max_token_hit_rate": 0.0, "clip_frac": 0.0, "kl": None,
            "step_time_s": 0.1 * step, "sample_time_s": 0.05, "tokens_per_s": 100.0 + step}
    base.update(fields)
    return base


def write_run(root: Path, condition: str, seed: int, rows: list[dict[str, Any]], *,
              config: str = "", lora_b: float | None = 0.5) -> Path:
    """A campaign run dir: config.toml, metrics.jsonl (rows get the condition), a final adapter
    whose lora_B tensors are filled with `lora_b` (None: no adapter)."""
    run_dir = root / "runs" / f"{condition}_s{seed}"
    run_dir.mkdir(parents=True)
    adv, transform = condition.split("~")[0].split("+")
    (run_dir / "config.toml").write_text(
        f'[algorithm]\nadvantage_mode = "{adv}"\ntransform_mode = "{transform}"\n\n'
        f"[training]\nseed = {seed}\n{config}")
    initial = {"step": 0, "eval_accuracy": 0.4, "eval_mean_length": 3.0, "eval_time_s": 0.3}
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"condition": condition, **r}) + "\n" for r in [initial, *rows]))
    if lora_b is not None:
        (run_dir / "adapter").mkdir()
        save_file({"base_model.model.layers.0.q_proj.lora_A.weight": np.ones((4, 8), np.float32),
                   "base_model.model.layers.0.q_proj.lora_B.weight": np.full((8, 4), lora_b, np.float32)},
                  str(run_dir / "adapter" / "adapter_model.safetensors"))
    return run_dir


def campaign(root: Path, runs: dict[str, list[list[dict[str, Any]]]], **kw: Any) -> Path:
    """condition -> one row list per seed (seeds 1, 2, ...); a plan.json makes it a campaign."""
    root.mkdir()
    (root / "plan.json").write_text(json.dumps({"campaign": "audit", "runs": []}))
    for cond, per_seed in runs.items():
        for seed, rows in enumerate(per_seed, start=1):
            write_run(root, cond, seed, rows, **kw)
    return root


def kinds(path: Path, **kw: Any) -> set[tuple[str, str]]:
    findings, _ = audit_path(path, **kw)
    return {(f.condition, f.kind) for f in findings}


def test_identical_conditions_ignore_timings_and_a_transforms_own_fields(tmp_path: Path) -> None:
    gtpo = [[_row(1, gtpo_weight_min=0.5, gtpo_weight_max=1.5), _row(2, gtpo_weight_min=0.4, gtpo_weight_max=1.7)]]
    hicra = [[_row(1, gtpo_weight_min=0.5, gtpo_weight_max=1.5, hicra_changed_frac=0.0, step_time_s=9.0),
              _row(2, gtpo_weight_min=0.4, gtpo_weight_max=1.7, hicra_changed_frac=0.0, tokens_per_s=1.0)]]
    camp = campaign(tmp_path / "c", {"maxrl+gtpo": gtpo, "maxrl+gtpo_hicra": hicra})
    findings, conditions = audit_path(camp)
    assert conditions == ["maxrl+gtpo_hicra", "maxrl+gtpo"]  # run dirs in name order
    ident = [f for f in findings if f.kind == "identical"]
    # the one whose intervention never acted, though it comes first
    assert len(ident) == 1 and ident[0].condition == "maxrl+gtpo_hicra"
    assert ident[0].sentence.startswith("identical to maxrl+gtpo: every logged metric is equal at "
                                        "every step on 1 of 1 shared seeds (timings aside)")
    assert "algorithm.transform_mode ('gtpo_hicra' vs 'gtpo')" in ident[0].sentence


def test_one_differing_number_is_not_identical(tmp_path: Path) -> None:
    a = [[_row(1), _row(2, loss=0.25)]]
    b = [[_row(1), _row(2, loss=0.25000001)]]
    camp = campaign(tmp_path / "c", {"maxrl+gtpo": a, "maxrl+gtpo_sepa": b})
    assert ("maxrl+gtpo_sepa", "identical") not in kinds(camp)


def test_hicra_that_never_acted_says_why(tmp_path: Path) -> None:
    none = [[_row(s, hicra_changed_frac=0.0, planning_token_frac=0.0) for s in (1, 2)]] * 2
    some = [[_row(s, hicra_changed_frac=0.0, planning_token_frac=0.1) for s in (1, 2)]]
    acted = [[_row(1, hicra_changed_frac=0.0, planning_token_frac=0.1),
              _row(2, hicra_changed_frac=0.2, planning_token_frac=0.1)]]
    camp = campaign(tmp_path / "c", {"grpo+hicra": none, "maxrl+hicra": some, "rloo+hicra": acted})
    findings, _ = audit_path(camp)
    by = {f.condition: f.sentence for f in findings if f.kind == "never_acted"}
    assert by["grpo+hicra"] == ("HICRA never acted on 2 seeds: no planning token occurred "
                                "(planning_token_frac 0 at every step), so it changed no token's advantage.")
    assert "planning tokens were 10% of completion tokens, but none was in an episode" in by["maxrl+hicra"]
    assert "rloo+hicra" not in by


def test_sepa_gtpo_clip_kl_and_truncated_is(tmp_path: Path) -> None:
    quiet = [[_row(s, sepa_lambda_applied=0.0, sepa_gate_open=False, gtpo_weight_min=1.0,
                   gtpo_weight_max=1.0, is_truncated_frac=0.0, logprob_diff_max=4.8e-7, kl=0.0)
              for s in (1, 2)]]
    busy = [[_row(s, sepa_lambda_applied=0.1 * s, sepa_gate_open=True, gtpo_weight_min=0.9,
                  gtpo_weight_max=1.1, is_truncated_frac=0.01, logprob_diff_max=0.3, kl=0.01,
                  clip_frac=0.02) for s in (1, 2)]]
    cfg = "clip_eps = 0.2\nkl_beta = 0.05\n"
    camp = campaign(tmp_path / "c", {"maxrl+gtpo_sepa": quiet, "grpo+gtpo_sepa": busy}, config=cfg)
    findings, _ = audit_path(camp)
    quiet_sentences = [f.sentence for f in findings if f.condition == "maxrl+gtpo_sepa"]
    assert [s.split(" never")[0] for s in quiet_sentences] == [
        "SEPA", "GTPO", "PPO clipping (training.clip_eps = 0.2)",
        "the KL penalty (training.kl_beta = 0.05)", "truncated importance sampling (backend.is_cap)"]
    assert "(its correct-rate gate never opened)" in quiet_sentences[0]
    assert "largest |log-prob difference| 4.8e-07" in quiet_sentences[-1]
    assert not [f for f in findings if f.condition == "grpo+gtpo_sepa"]


def test_clip_and_kl_are_not_reported_when_switched_off(tmp_path: Path) -> None:
    camp = campaign(tmp_path / "c", {"grpo+none": [[_row(1), _row(2)]]})
    assert kinds(camp) == set()


def test_no_signal_and_truncation_thresholds(tmp_path: Path) -> None:
    # 8 groups over 2 steps, 1 informative: 7/8 = 87.5% without signal
    dry = [[_row(s, num_groups=4, num_informative_groups=s - 1, num_all_correct_groups=5 - s,
                 num_all_wrong_groups=0, max_token_hit_rate=0.6) for s in (1, 2)]]
    camp = campaign(tmp_path / "c", {"grpo+none": dry})
    assert kinds(camp) == {("grpo+none", "truncated")}  # 87.5% <= 90%; 60% > 50%
    findings, _ = audit_path(camp, AuditThresholds(no_signal_frac=0.8, max_token_hit_rate=0.6))
    assert [f.kind for f in findings] == ["no_signal"]  # 87.5% > 80%; 60% is not above 60%
    assert findings[0].sentence == (
        "little learning signal on 1 seed: 88% of groups had equal rewards, so zero advantage "
        "(88% all correct, 0% all wrong; above audit.no_signal_frac = 80%).")


def test_unchanged_adapter(tmp_path: Path) -> None:
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "plan.json").write_text("{}")
    write_run(camp, "grpo+none~optimizer.lr=0.0", 1, [_row(1)], config="", lora_b=0.0)
    write_run(camp, "grpo+none~optimizer.lr=0.0", 2, [_row(1)], lora_b=0.0)
    write_run(camp, "maxrl+none", 1, [_row(1)], lora_b=0.0)
    write_run(camp, "maxrl+none", 2, [_row(1)], lora_b=1e-8)
    write_run(camp, "rloo+none", 1, [_row(1)], lora_b=None)  # no adapter yet: nothing to say
    cfg = camp / "runs" / "grpo+none~optimizer.lr=0.0_s1" / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[optimizer]\nlr = 0.0\n")
    findings, _ = audit_path(camp)
    unchanged = {f.condition: f.sentence for f in findings if f.kind == "unchanged"}
    assert unchanged["grpo+none~optimizer.lr=0.0"].startswith(
        "the trainable weights did not change on 2 of 2 seeds (optimizer.lr is 0): every LoRA B")
    assert unchanged["maxrl+none"].startswith("the trainable weights did not change on 1 of 2 seeds:")
    assert "rloo+none" not in unchanged
    assert lora_delta_is_zero(camp / "runs" / "rloo+none_s1") is None


def test_thresholds_from_campaign_toml_and_flags(tmp_path: Path) -> None:
    (tmp_path / "campaign.toml").write_text("[audit]\nno_signal_frac = 0.7\n")
    assert thresholds_for(tmp_path) == AuditThresholds(no_signal_frac=0.7, max_token_hit_rate=0.5)
    assert thresholds_for(tmp_path, max_token_hit_rate=0.2).max_token_hit_rate == 0.2
    with pytest.raises(AnalysisError, match=r"audit.no_signal_frac = 1.5: give a share between 0 and 1"):
        thresholds_for(tmp_path, no_signal_frac=1.5)


def test_cli_formats_and_errors(tmp_path: Path) -> None:
    camp = campaign(tmp_path / "c", {"grpo+none": [[_row(1, max_token_hit_rate=0.9)]],
                                     "maxrl+none": [[_row(1, loss=0.1)]]})
    runner = CliRunner()
    app = command_app(analyze_cmd)
    res = runner.invoke(app, ["analyze", "audit", str(camp)])
    assert res.exit_code == 0, res.output
    assert "grpo+none:" in res.output and "90% of completions stopped at training.max_tokens" in res.output
    assert "no finding: maxrl+none" in res.output
    res = runner.invoke(app, ["analyze", "audit", str(camp), "-f", "md"])
    assert res.output.startswith("## Intervention audit\n\n- **grpo+none**\n  - 90% of completions")
    assert res.output.rstrip().endswith("- No finding: maxrl+none.")
    res = runner.invoke(app, ["analyze", "audit", str(camp), "-f", "csv"])
    assert res.output.splitlines()[0] == "condition,kind,seeds,finding"
    res = runner.invoke(app, ["analyze", "audit", str(camp), "--max-token-hit-rate", "-1"])
    assert res.exit_code == 2 and "audit.max_token_hit_rate = -1.0" in res.output
    empty = tmp_path / "empty"
    (empty / "runs" / "x").mkdir(parents=True)
    (empty / "plan.json").write_text("{}")
    (empty / "runs" / "x" / "config.toml").write_text("")
    res = runner.invoke(app, ["analyze", "audit", str(empty)])
    assert res.exit_code == 2 and "no run has logged a training step yet" in res.output


def test_compare_ends_with_the_audit(tmp_path: Path) -> None:
    camp = campaign(tmp_path / "c", {"grpo+none": [[_row(1), _row(2)], [_row(1), _row(2)]],
                                     "maxrl+none": [[_row(1), _row(2)], [_row(1), _row(2)]]})
    res = CliRunner().invoke(command_app(analyze_cmd), ["analyze", "compare", str(camp), "-f", "md"])
    assert res.exit_code == 0, res.output
    assert "## Intervention audit" in res.output and "identical to grpo+none" in res.output
    res = CliRunner().invoke(command_app(analyze_cmd), ["analyze", "compare", str(camp), "-f", "json"])
    assert "Intervention audit" not in res.output


def test_the_audit_does_not_import_torch(tmp_path: Path) -> None:
    camp = campaign(tmp_path / "c", {"grpo+none": [[_row(1)]]}, lora_b=0.0)
    code = ("import sys; from pathlib import Path; from retrain.analysis.audit import audit_path; "
            f"f, _ = audit_path(Path({str(camp)!r})); assert f and 'torch' not in sys.modules, f")
    subprocess.run([sys.executable, "-c", code], check=True)
