"""`retrain run` with wandb in offline mode: the offline run lands under the run dir with the
contract's history keys, group and tags."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from .conftest import SMALL, assert_ok, read_jsonl

pytestmark = pytest.mark.slow


def test_wandb_offline_through_retrain_run(cli: Callable[..., Result], base_config: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sinks.wandb_reader import summarize

    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "wb"
    result = cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output",
                 "--set", "logging.wandb_project=retrain-test", "--set", "logging.wandb_mode=offline")
    assert_ok(result)
    offline = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(offline) == 1, sorted(p.name for p in run_dir.rglob("*"))[:50]

    got = summarize(run_dir)
    rows = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl")}
    condition, seed = rows[1]["condition"], 7
    run = got["run"]
    assert run.run_group == condition
    assert condition in run.tags and f"seed{seed}" in run.tags
    assert run.display_name == f"{condition}_s{seed}"
    history = got["history"]
    assert {1, 2, 3} <= set(history)
    for step in (1, 2, 3):
        h = history[step]
        for key in ("train/loss", "train/rewards/mean_reward", "train/rewards/correct_rate",
                    "train/grad_norm", "train/lr", "train/surprisal/exec_mean",
                    "train/entropy/exec_mean", "train/backpressure/action"):
            assert key in h, (step, key, sorted(h))
        assert "train/backend/reports_sync_loss" not in h  # a run constant: in the summary
        assert math.isclose(h["train/loss"], rows[step]["loss"], rel_tol=0, abs_tol=0)
        assert h["train/rewards/mean_reward"] == rows[step]["mean_reward"]
    assert history[0]["eval/accuracy"] == rows[0]["eval_accuracy"]
    assert history[3]["eval/accuracy"] == rows[3]["eval_accuracy"]
    assert got["config"]["seed"] == seed and got["config"]["condition"] == condition
    assert got["config"]["batch_size"] == 4 and got["config"]["max_steps"] == 3
    assert (run_dir / "wandb_run_id").read_text().strip() == run.run_id
