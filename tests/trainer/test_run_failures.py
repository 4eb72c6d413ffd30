"""A run that cannot go on fails loudly, with its reason, and resumes cleanly: its record cannot
be written (issue 13.2), or training diverged (13.3); the step a failed run reached is reported
(13.9)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from retrain.config.render import render_toml

from .conftest import SMALL, assert_ok, read_jsonl, small_sets

pytestmark = pytest.mark.slow


def test_a_metrics_file_that_cannot_be_written_fails_the_run_and_resume_rewrites_it(
        cli: Callable[..., Result], base_config: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from retrain.sinks import metrics

    real = metrics.append_jsonl
    writes = {"metrics.jsonl": 0}

    def disk_full_at_step_two(path: str | Path, record: dict[str, Any]) -> None:
        if Path(path).name == "metrics.jsonl":
            writes["metrics.jsonl"] += 1
            if writes["metrics.jsonl"] == 3:  # rows 0 and 1 went through
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, record)

    run = tmp_path / "run"
    monkeypatch.setattr(metrics, "append_jsonl", disk_full_at_step_two)
    res = cli("run", base_config, *SMALL, "--set", "training.save_every=1", "--out", run,
              "--no-console-output")
    assert res.exit_code == 1, res.stderr
    assert res.stderr.startswith("error: run failed: could not write ")
    assert "metrics.jsonl" in res.stderr and "No space left on device" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
    # the unrecorded step 2 was never checkpointed: resume redoes it
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001"]
    assert not (run / "adapter").exists()

    monkeypatch.setattr(metrics, "append_jsonl", real)
    assert_ok(cli("run", "--resume", run, "--no-console-output"))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]
    assert [r["step"] for r in read_jsonl(run / "emergence" / "steps.jsonl")] == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["status"] == "done"


def test_a_failed_run_reports_the_step_it_reached(base_config: Path, tiny_model: Path,
                                                  tmp_path: Path) -> None:
    """What a campaign's manifest records for a run that failed at step 4 of 10."""
    from retrain.config import load_config
    from retrain.executors.base import RunTask, execute_run

    cfg = load_config(base_config, [*small_sets(), "training.max_steps=10", "optimizer.lr=1e30",
                                    "training.max_skipped_steps=3"])
    task = RunTask(name="diverges", condition="grpo", run_dir=str(tmp_path / "run"),
                   config_toml=render_toml(cfg, for_run=True), resume=False,
                   stop_file=str(tmp_path / "STOP"))
    outcome = execute_run(task)
    assert outcome.status == "failed" and outcome.steps_done == 4
    assert outcome.error is not None and outcome.error.startswith("training diverged: steps 2-4")
