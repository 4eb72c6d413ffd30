"""The gain table: each condition's final − initial eval, with hand-worked intervals and tests.

Per-seed gains (seeds 1, 2, 3), initial accuracy 0.5 ± 0.022 everywhere:
  grpo+none  (baseline) 0.10, 0.20, 0.30 → mean 0.20, s = 0.10
  maxrl+none            0.30, 0.35, 0.40 → mean 0.35, s = 0.05
  maxrl+gtpo            0.10, 0.25, 0.30 → mean 0.2167
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from retrain.analysis import comparison_rows
from retrain.analysis.gain import gain_rows, render_gains_md, run_eval
from retrain.analysis.loading import collect_runs, load_run

T_975_DF2 = 4.302652729749464  # t quantile 0.975, 2 degrees of freedom (tables: 4.303)
GAINS = {"grpo+none": (0.10, 0.20, 0.30), "maxrl+none": (0.30, 0.35, 0.40),
         "maxrl+gtpo": (0.10, 0.25, 0.30)}


def _write_run(run_dir: Path, condition: str, seed: int, gain: float, *, summary: bool = True,
               sampled: tuple[float, float] | None = None) -> None:
    run_dir.mkdir(parents=True)
    start = {"eval_accuracy": 0.5, "eval_accuracy_se": 0.022, "eval_size": 500,
             "eval_mean_length": 6.0}
    end = {**start, "eval_accuracy": 0.5 + gain, "eval_accuracy_se": 0.021}
    if sampled:
        start |= {"eval_sampled_accuracy": sampled[0], "eval_sampled_accuracy_se": 0.015,
                  "eval_samples": 4}
        end |= {"eval_sampled_accuracy": sampled[1], "eval_sampled_accuracy_se": 0.016,
                "eval_samples": 4}
    rows = [{"step": 0, "condition": condition, **start},
            {"step": 1, "condition": condition, "loss": 1.0, "mean_reward": 0.3},
            {"step": 2, "condition": condition, "loss": 0.5, "mean_reward": 0.4, **end}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not summary:
        return

    def view(ev: dict[str, float]) -> dict[str, float | None]:
        return {k[len("eval_"):]: v for k, v in ev.items()}

    doc = {"run": run_dir.name, "condition": condition, "seed": seed, "status": "done",
           "initial_eval": view(start), "final_eval": view(end),
           "deltas": {"accuracy": gain, "mean_length": 0.0,
                      "sampled_accuracy": sampled[1] - sampled[0] if sampled else None}}
    (run_dir / "summary.json").write_text(json.dumps(doc))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    for cond, gains in GAINS.items():
        for seed, g in zip((1, 2, 3), gains, strict=True):
            _write_run(tmp_path / f"{cond}_s{seed}", cond, seed, g)
    return tmp_path


def _rows(path: Path) -> dict[str, dict]:
    return {r["condition"]: r for r in gain_rows(collect_runs(path))}


def test_gain_interval_and_verdicts_by_hand(runs_dir: Path) -> None:
    rows = _rows(runs_dir)
    base, maxrl = rows["grpo+none"], rows["maxrl+none"]
    # maxrl+none: half width = t · s / sqrt n = 4.302653 · 0.05 / sqrt 3 = 0.124207
    half = T_975_DF2 * 0.05 / math.sqrt(3)
    assert half == pytest.approx(0.124207, abs=1e-6)
    assert maxrl["gain_mean"] == pytest.approx(0.35)
    assert (maxrl["gain_low"], maxrl["gain_high"]) == pytest.approx((0.35 - half, 0.35 + half))
    assert maxrl["gain_verdict"] == "learned: gain +0.350 [0.226, 0.474]"
    # baseline: half = 4.302653 · 0.1 / sqrt 3 = 0.248414 → [-0.048, 0.448] includes 0
    assert base["gain_low"] == pytest.approx(0.2 - 0.248414, abs=1e-6)
    assert base["gain_verdict"].startswith("no detectable change: gain +0.200 [-0.048, 0.448]")
    # initial and final: mean over seeds, the eval's standard error beside it
    assert maxrl["initial_mean"] == pytest.approx(0.5) and maxrl["initial_se"] == pytest.approx(0.022)
    assert maxrl["final_mean"] == pytest.approx(0.85) and maxrl["final_se"] == pytest.approx(0.021)


def test_paired_test_holm_and_mde_by_hand(runs_dir: Path) -> None:
    rows = _rows(runs_dir)
    maxrl, gtpo = rows["maxrl+none"], rows["maxrl+gtpo"]
    # maxrl+none − baseline per seed: 0.20, 0.15, 0.10 → mean 0.15, s_d = 0.05,
    # t = 0.15 / (0.05 / sqrt 3) = 5.196152, df 2; F(t) = 1/2 + t / (2 sqrt(2 + t²)) → p = 0.035099
    assert maxrl["diff"] == pytest.approx(0.15) and maxrl["n_pairs"] == 3
    assert maxrl["p_value"] == pytest.approx(0.035099, abs=1e-6)
    # maxrl+gtpo − baseline: 0, 0.05, 0 → mean 0.016667, s_d = 0.028868, t = 1.0
    # → p = 2 (1 − (1/2 + 1 / (2 sqrt 3))) = 0.422650
    assert gtpo["p_value"] == pytest.approx(0.422650, abs=1e-6)
    # Holm over the two: 2 · 0.035099 = 0.070198; max(0.070198, 0.422650) = 0.422650
    assert maxrl["p_holm"] == pytest.approx(0.070198, abs=1e-6)
    assert gtpo["p_holm"] == pytest.approx(0.422650, abs=1e-6)
    # MDE at n = 3: d = 3.264044 SDs (statsmodels TTestPower agrees) · s_d 0.05 = 0.163202
    assert maxrl["mde"] == pytest.approx(0.163202, abs=1e-6)
    assert maxrl["verdict"].startswith("no clear difference from grpo+none")
    assert "Holm-adjusted p=0.0702" in maxrl["verdict"]
    assert "only |Δ| >= 0.163 is detectable" in maxrl["verdict"]
    assert rows["grpo+none"]["verdict"] == "baseline"


def test_markdown_table_leads_with_gain_rows(runs_dir: Path) -> None:
    text = render_gains_md(gain_rows(collect_runs(runs_dir)))
    assert "| condition | n | initial ± SE | final ± SE | gain [95% CI] |" in text
    # two conditions against the baseline: the raw p (0.035) beside the Holm-adjusted one (0.070)
    assert "| Δ gain | p | p (Holm) | MDE |" in text
    assert "| maxrl+none | 3 | 0.500 ± 0.022 | 0.850 ± 0.021 | +0.350 [0.226, 0.474] | +0.150 | 0.035 | 0.070 | 0.163 |" in text
    assert "standard error over held-out problems (an SE, not a CI)" in text
    assert "95% t-interval over seeds" in text
    assert "- **maxrl+none**: learned: gain +0.350 [0.226, 0.474]; no clear difference" in text
    assert "- **grpo+none (baseline)**: no detectable change: gain +0.200" in text
    assert "sampled" not in text.split("###", 1)[1]  # no sampled table without sampled evals


def test_sampled_accuracy_gets_its_own_table(tmp_path: Path) -> None:
    for cond, gains in list(GAINS.items())[:2]:
        for seed, g in zip((1, 2, 3), gains, strict=True):
            # sampled gain = 2 · greedy gain
            _write_run(tmp_path / f"{cond}_s{seed}", cond, seed, g, sampled=(0.3, 0.3 + 2 * g))
    rows = _rows(tmp_path)
    assert rows["maxrl+none"]["sampled_gain_mean"] == pytest.approx(0.7)
    assert rows["maxrl+none"]["sampled_samples"] == 4
    assert rows["maxrl+none"]["sampled_p_value"] == pytest.approx(0.035099, abs=1e-6)  # 2 · diffs
    text = render_gains_md(list(rows.values()))
    assert "### Gain in held-out sampled accuracy (mean@4 at the training temperature)" in text
    assert "| maxrl+none | 3 | 0.300 ± 0.015 | 1.000 ± 0.016 | +0.700 [0.452, 0.948] |" in text


def test_gain_from_metrics_when_summary_is_missing_or_old(tmp_path: Path) -> None:
    _write_run(tmp_path / "a_s1", "a", 1, 0.25, summary=False)
    ev = run_eval(load_run(tmp_path / "a_s1"))
    assert (ev.initial, ev.initial_se, ev.final, ev.gain) == pytest.approx((0.5, 0.022, 0.75, 0.25))
    # an old summary.json (accuracy and mean_length only): the SEs come from metrics.jsonl
    _write_run(tmp_path / "b_s1", "b", 1, 0.25, summary=False)
    (tmp_path / "b_s1" / "summary.json").write_text(json.dumps({
        "status": "done", "initial_eval": {"accuracy": 0.5, "mean_length": 6.0},
        "final_eval": {"accuracy": 0.7, "mean_length": 6.0},
        "deltas": {"accuracy": 0.2, "mean_length": 0.0}}))
    ev = run_eval(load_run(tmp_path / "b_s1"))
    assert ev.gain == pytest.approx(0.2) and ev.final == pytest.approx(0.7)  # summary wins
    assert ev.initial_se == pytest.approx(0.022)
    assert run_eval(load_run(tmp_path / "b_s1"), "sampled_accuracy").gain is None


def test_compare_selects_eval_gain(runs_dir: Path) -> None:
    rows = {r["condition"]: r for r in comparison_rows(runs_dir, metric="mean_reward",
                                                       stat="eval_gain")}
    maxrl = rows["maxrl+none"]
    assert maxrl["eval_gain_mean"] == pytest.approx(0.35)
    assert maxrl["diff"] == pytest.approx(0.15)
    assert maxrl["p_value"] == pytest.approx(0.035099, abs=1e-6)
    assert "eval_gain" in maxrl["verdict"]
    assert rows["grpo+none"]["eval_sampled_gain_mean"] is None
