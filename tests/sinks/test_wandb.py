"""wandb for real in offline mode: key mapping, run config, name/group/tags, resume id."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from retrain.config.schema import LoggingConfig
from retrain.sinks.contract import METRICS_FIELDS, NOT_IN_HISTORY, flat_run_config, wandb_key

from .fakes import CONFIG, fake_metrics, make_info

pytest.importorskip("wandb")


def test_wandb_key_mapping() -> None:
    assert wandb_key("mean_reward") == "train/rewards/mean_reward"
    assert wandb_key("correct_rate") == "train/rewards/correct_rate"
    assert wandb_key("exec_surprisal_mean") == "train/surprisal/exec_mean"
    assert wandb_key("plan_entropy_var") == "train/entropy/plan_var"
    assert wandb_key("bp_p_star") == "train/backpressure/p_star"
    assert wandb_key("bp_warmup") == "train/backpressure/warmup"
    assert wandb_key("backend_reports_sync_loss") == "train/backend/reports_sync_loss"
    assert wandb_key("loss") == "train/loss"
    assert wandb_key("reported_loss") == "train/reported_loss"
    assert wandb_key("eval_accuracy") == "eval/accuracy"
    keys = [wandb_key(f) for f in METRICS_FIELDS if f not in NOT_IN_HISTORY]
    assert len(set(keys)) == len(keys) and all(k.startswith("train/") for k in keys)


def test_flat_run_config() -> None:
    flat = flat_run_config(CONFIG, condition="maxrl+gtpo_sepa", seed=7, max_steps=8)
    assert {k: flat[k] for k in ("advantage_mode", "transform_mode", "lora_rank", "lr",
                                 "sepa_delay_steps", "backend", "seed", "condition")} == {
        "advantage_mode": "maxrl", "transform_mode": "gtpo_sepa", "lora_rank": 8, "lr": 1e-3,
        "sepa_delay_steps": 2, "backend": "local", "seed": 7, "condition": "maxrl+gtpo_sepa"}
    assert flat["config"]["lora"]["target_modules"] == ["q_proj", "v_proj"]


def _invocation(run_dir: Path, cfg: LoggingConfig, steps: range, start_step: int) -> None:
    from retrain.sinks.wandb_sink import WandbSink

    sink = WandbSink(cfg, quiet=True)
    sink.start(make_info(run_dir, start_step=start_step))
    if start_step == 0:
        sink.log_eval(0, {"eval_accuracy": 0.1, "eval_mean_length": 6.0})
    for step in steps:
        if step % 4 == 0:
            sink.log_eval(step, {"accuracy": 0.5, "mean_length": 4.0})
        sink.log_step(fake_metrics(step))
    sink.log_checkpoint(steps[-1], run_dir / "ckpt")
    sink.finish({"status": "done", "steps_done": steps[-1]})


def test_offline_round_trip_and_resume(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .wandb_reader import summarize

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LoggingConfig(wandb_project="retrain-test", wandb_tags=("ablation",))
    _invocation(run_dir, cfg, range(1, 5), start_step=0)
    run_id = (run_dir / "wandb_run_id").read_text(encoding="utf-8").strip()

    got = summarize(run_dir)
    run = got["run"]
    assert run.run_id == run_id
    assert run.display_name == "maxrl+gtpo_sepa_s7"
    assert run.run_group == "maxrl+gtpo_sepa"
    assert list(run.tags) == ["maxrl+gtpo_sepa", "seed7", "ablation"]
    config = got["config"]
    assert config["advantage_mode"] == "maxrl"
    assert config["lora_rank"] == 8 and config["max_steps"] == 8
    assert config["config"]["sepa"]["correct_rate_gate"] == 0.1

    history = got["history"]
    assert sorted(history) == [0, 1, 2, 3, 4]
    assert history[0]["eval/accuracy"] == 0.1
    row = history[4]
    assert row["train/rewards/mean_reward"] == pytest.approx(0.4)
    assert row["train/surprisal/exec_mean"] == 1.5 and row["train/entropy/exec_mean"] == 1.5
    assert row["train/backpressure/action"] == "hold"
    assert row["train/backpressure/throughput"] == 512.0
    # run constants are one summary value, not a flat history series per flag
    assert not any(k.startswith("train/backend/") or k == "train/loss_is_placeholder" for h in history.values() for k in h)
    assert got["summary"]["train/backend/reports_sync_loss"] is True
    assert row["train/loss"] == 0.25 and row["eval/accuracy"] == 0.5
    assert "train/backpressure/p_star" not in row  # nulls are not logged
    assert not any(k in row for k in ("train/step", "train/condition"))
    assert got["summary"]["status"] == "done"

    # a resumed invocation reuses the persisted id and names (a new second: new offline dir)
    time.sleep(1.0)
    _invocation(run_dir, cfg, range(5, 7), start_step=4)
    runs = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(run_id) for p in runs)
    resumed = summarize(run_dir)
    assert resumed["run"].run_id == run_id
    assert sorted(resumed["history"]) == [5, 6]


def test_campaign_runs_carry_the_campaign_as_tag_and_config(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # group stays the condition (wandb aggregates its seeds); the campaign filters one campaign
    # from another with the same conditions.
    import json

    from .wandb_reader import summarize

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    camp = tmp_path / "ablation_20261203"
    run_dir = camp / "runs" / "maxrl+gtpo_sepa_s7"
    run_dir.mkdir(parents=True)
    (camp / "plan.json").write_text(json.dumps({"campaign": "ablation", "runs": []}))
    _invocation(run_dir, LoggingConfig(wandb_project="retrain-test"), range(1, 3), start_step=0)
    got = summarize(run_dir)
    assert got["run"].run_group == "maxrl+gtpo_sepa"
    assert list(got["run"].tags) == ["maxrl+gtpo_sepa", "seed7", "campaign:ablation"]
    assert got["config"]["campaign"] == "ablation"
