"""Kill-and-resume equals the uninterrupted run; graceful Ctrl+C; `--resume` errors and overrides."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from .conftest import (
    SMALL,
    assert_ok,
    metrics_without_timings,
    read_jsonl,
    start_run,
    wait_for_step,
)

pytestmark = pytest.mark.slow

SIX_STEPS = (*SMALL, "--set", "training.max_steps=6", "--set", "training.save_every=2")


@pytest.fixture(scope="module")
def uninterrupted(cli: Callable[..., Result], base_config: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A: 6 steps, a checkpoint every 2, never stopped."""
    run_dir = tmp_path_factory.mktemp("resume") / "A"
    assert_ok(cli("run", base_config, *SIX_STEPS, "--out", run_dir, "--no-console-output"))
    return run_dir


def _assert_same_run(resumed: Path, reference: Path) -> None:
    """Same metrics (timings aside), each step exactly once, in every per-step file."""
    rows = metrics_without_timings(resumed)
    assert [r["step"] for r in rows] == list(range(7))
    assert rows == metrics_without_timings(reference)
    steps = read_jsonl(resumed / "emergence" / "steps.jsonl")
    assert steps == read_jsonl(reference / "emergence" / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 7))
    gens = read_jsonl(resumed / "emergence" / "generations.jsonl")
    assert gens == read_jsonl(reference / "emergence" / "generations.jsonl")
    assert Counter(g["step"] for g in gens) == dict.fromkeys(range(1, 7), 4)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == 6
    ref = json.loads((reference / "summary.json").read_text())
    for key in ("initial_eval", "final_eval", "best_eval", "params_total", "params_trainable"):
        assert summary[key] == ref[key], key
    assert (resumed / "adapter" / "adapter_model.safetensors").is_file()


def test_sigkill_then_resume_equals_uninterrupted(uninterrupted: Path, cli: Callable[..., Result],
                                                  tmp_path: Path, base_config: Path,
                                                  background: list[subprocess.Popen[bytes]]) -> None:
    run_dir, log = tmp_path / "B", tmp_path / "B.out"
    proc = start_run(["run", base_config, *SIX_STEPS, "--out", run_dir, "--no-console-output"], log)
    background.append(proc)
    wait_for_step(proc, run_dir, 3, log)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[-1]["step"] < 6 and not (run_dir / "summary.json").exists(), \
        "the run finished before the kill; the test did not interrupt anything"
    assert (run_dir / "checkpoints" / "step_000002").is_dir()

    result = cli("run", "--resume", run_dir, "--no-console-output")
    assert_ok(result)
    _assert_same_run(run_dir, uninterrupted)
    log_text = (run_dir / "run.log").read_text()
    assert "started at step 0" in log_text
    assert "resumed at step 2" in log_text or "resumed at step 4" in log_text


def test_sigint_stops_gracefully_then_resume_completes(uninterrupted: Path, cli: Callable[..., Result],
                                                       tmp_path: Path, base_config: Path,
                                                       background: list[subprocess.Popen[bytes]]) -> None:
    run_dir, log = tmp_path / "C", tmp_path / "C.out"
    proc = start_run(["run", base_config, *SIX_STEPS, "--out", run_dir], log)
    background.append(proc)
    wait_for_step(proc, run_dir, 1, log)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text(errors="replace")[-3000:]
    out = log.read_text(errors="replace")
    assert "Traceback" not in out
    assert "stopping after this step" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped_at = summary["steps_done"]
    assert 1 <= stopped_at < 6
    assert (run_dir / "checkpoints" / f"step_{stopped_at:06d}").is_dir()  # checkpoint of the stop
    assert not (run_dir / "adapter").exists()  # the final adapter is for finished runs
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(stopped_at + 1))

    result = cli("run", "--resume", run_dir, "--no-console-output")
    assert_ok(result)
    _assert_same_run(run_dir, uninterrupted)
    assert f"resumed at step {stopped_at}" in (run_dir / "run.log").read_text()


# --- --resume errors -------------------------------------------------------------------------

def _refused(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert text.startswith("error: "), text
    for needle in needles:
        assert needle in text, (needle, text)


def test_resume_of_a_missing_dir_is_an_error(cli: Callable[..., Result], tmp_path: Path) -> None:
    _refused(cli("run", "--resume", tmp_path / "nope"), "no such run directory")


def test_resume_without_checkpoints_is_an_error(uninterrupted: Path, cli: Callable[..., Result],
                                                tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(cli("run", "--resume", empty), "no config.toml")
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(uninterrupted / "config.toml", no_ckpt / "config.toml")
    _refused(cli("run", "--resume", no_ckpt), "nothing to resume")
    (no_ckpt / "checkpoints" / ".step_000002.tmp-x").mkdir(parents=True)  # a torn checkpoint only
    result = cli("run", "--resume", no_ckpt)
    _refused(result, "resume")
    assert not (no_ckpt / "metrics.jsonl").exists()


def test_resume_refuses_a_key_that_changes_the_experiment(uninterrupted: Path, cli: Callable[..., Result],
                                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(uninterrupted, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    _refused(cli("run", "--resume", run_dir, "--set", "lora.rank=4"), "lora.rank")
    _refused(cli("run", "--resume", run_dir, "--set", "training.seed=1"), "training.seed")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_resume_with_more_steps_continues(uninterrupted: Path, cli: Callable[..., Result],
                                          tmp_path: Path) -> None:
    """A finished 6-step run resumed with max_steps=8 trains steps 7 and 8 and nothing else."""
    run_dir = tmp_path / "longer"
    shutil.copytree(uninterrupted, run_dir)
    result = cli("run", "--resume", run_dir, "--set", "training.max_steps=8", "--no-console-output")
    assert_ok(result)
    rows = metrics_without_timings(run_dir)
    assert [r["step"] for r in rows] == list(range(9))
    assert rows[:7] == metrics_without_timings(uninterrupted)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == 8 and summary["max_steps"] == 8
    assert "max_steps = 8" in (run_dir / "config.toml").read_text()
    assert (run_dir / "checkpoints" / "step_000008").is_dir()


def test_resume_refuses_fewer_steps_than_already_done(uninterrupted: Path, cli: Callable[..., Result],
                                                      tmp_path: Path) -> None:
    run_dir = tmp_path / "shorter"
    shutil.copytree(uninterrupted, run_dir)
    config_before = (run_dir / "config.toml").read_text()
    result = cli("run", "--resume", run_dir, "--set", "training.max_steps=2", "--no-console-output")
    _refused(result, "training.max_steps")
    assert (run_dir / "config.toml").read_text() == config_before
