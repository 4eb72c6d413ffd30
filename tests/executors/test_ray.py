"""Ray executor end to end: a real local Ray instance runs a 2-run tiny campaign through the CLI,
and a campaign stopped with SIGTERM resumes on Ray with every metrics step exactly once.

The campaign uses the default [model] and [data] settings so the session's cached tiny model
(RETRAIN_CACHE, tests/conftest.py) is reused: any change there changes the model's cache key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrain.cli.app import app

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CAMPAIGN = """
[training]
max_steps = 2
batch_size = 2
group_size = 2

[eval]
size = 5

[[campaign.conditions]]
"algorithm.advantage_mode" = "grpo"
"algorithm.transform_mode" = "none"

[campaign]
seeds = [1, 2]
max_workers = 2
"""


@pytest.fixture
def no_ray_left() -> Iterator[None]:
    """Whatever the test does, the local instance the executor started is shut down."""
    assert not ray.is_initialized()
    try:
        yield
    finally:
        ray.shutdown()


def test_local_ray_runs_a_two_run_campaign(tmp_path: Path, no_ray_left: None) -> None:
    spec = tmp_path / "ray_tiny.toml"
    spec.write_text(CAMPAIGN, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(spec), "--out", str(out),
                                      "--executor", "ray", "--no-console-output"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # the executor started a local instance in this process (nothing was initialised before)
    assert ray.is_initialized()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert {n: r["status"] for n, r in manifest["runs"].items()} == {
        "grpo+none_s1": "done", "grpo+none_s2": "done"}
    for name, rec in manifest["runs"].items():
        assert rec["attempts"] == 1
        rows = [json.loads(line) for line in (out / rec["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows if "loss" in r]
        assert steps == [1, 2], name
        assert all(r["condition"] == "grpo+none" for r in rows if "loss" in r)
        assert (out / rec["run_dir"] / "adapter").is_dir()


def _steps(metrics: Path) -> list[int]:
    if not metrics.is_file():
        return []
    rows = []
    for line in metrics.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line while the run writes
    return [r["step"] for r in rows if "loss" in r]


def test_sigterm_interrupts_ray_runs_and_resume_finishes_them(tmp_path: Path) -> None:
    # ray.init replaces the driver's SIGTERM handler; the executor must put the campaign's back,
    # or SIGTERM would kill the campaign instead of checkpointing the runs.
    spec = tmp_path / "ray_stop.toml"
    spec.write_text(CAMPAIGN.replace("max_steps = 2", "max_steps = 60\nsave_every = 5"), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "retrain", "campaign", "run", str(spec), "--out", str(out),
           "--executor", "ray", "--no-console-output"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = [out / "runs" / n / "metrics.jsonl" for n in ("grpo+none_s1", "grpo+none_s2")]
    deadline = time.monotonic() + 300
    while not any(len(_steps(m)) >= 2 for m in metrics):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no run reached step 2"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    statuses = [r["status"] for r in manifest["runs"].values()]
    assert "interrupted" in statuses and "failed" not in statuses, statuses

    resumed = subprocess.run([sys.executable, "-m", "retrain", "campaign", "resume", str(out),
                              "--executor", "ray", "--no-console-output"],
                             env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    for m in metrics:
        assert _steps(m) == list(range(1, 61)), m
