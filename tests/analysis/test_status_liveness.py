"""Issue 14.5: status tells running, stale, dead and not-started runs apart (heartbeat.json), and
`retrain campaign status` refuses a directory that is not a campaign's.

Before the fix every run dir without summary.json read `running`: a dir holding only
config.toml showed `running 0/5 ETA 1s`, a run killed days ago still read running, and
`campaign status` on any directory printed an empty table with exit code 0.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retrain.analysis import load_campaign, load_run
from retrain.cli import analyze_cmd, campaign_cmd

from .conftest import command_app
from .fakes import FakeRun, write_campaign, write_run

runner = CliRunner()
DAYS_AGO = time.time() - 3 * 86400


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd, campaign_cmd)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _beat(run_dir: Path, *, pid: int, host: str, at: float, status: str = "running") -> None:
    (run_dir / "heartbeat.json").write_text(json.dumps(
        {"pid": pid, "host": host, "time": at, "step": 2, "max_steps": 4, "status": status}))


def _row(output: str, name: str) -> list[str]:
    return next(line for line in output.splitlines() if line.startswith(name + " ")).split()


def test_a_dir_with_only_config_toml_is_not_started(app: typer.Typer, tmp_path: Path) -> None:
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text("[training]\nmax_steps = 5\n")
    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    row = _row(result.stdout, "fresh")  # not `running 0/5 ... ETA 1s`
    assert row[1:5] == ["not", "started", "0/5", "(0%)"] and row[-1] == "—", result.stdout


@pytest.mark.parametrize(("beat", "expected"), [
    ({"pid": os.getpid(), "host": socket.gethostname(), "at": DAYS_AGO}, "running"),  # alive here
    ({"pid": -1, "host": socket.gethostname(), "at": time.time()}, "dead"),  # pid set below
    ({"pid": 12345, "host": "another-node", "at": time.time() - 30}, "running"),
    ({"pid": 12345, "host": "another-node", "at": DAYS_AGO}, "stale"),
    (None, "stale"),  # no heartbeat (an older retrain), metrics.jsonl last written 3 days ago
])
def test_a_run_recorded_as_running_is_checked_against_its_heartbeat(
        tmp_path: Path, beat: dict[str, object] | None, expected: str) -> None:
    run_dir = tmp_path / "solo"
    write_run(run_dir, FakeRun("maxrl+gtpo", 1, 0.5, status="running", steps_logged=2))
    os.utime(run_dir / "metrics.jsonl", (DAYS_AGO, DAYS_AGO))
    if beat is not None:
        pid = _dead_pid() if beat["pid"] == -1 else int(beat["pid"])  # type: ignore[call-overload]
        _beat(run_dir, pid=pid, host=str(beat["host"]), at=float(beat["at"]))  # type: ignore[arg-type]
    assert load_run(run_dir).status == expected


def test_a_killed_campaign_reads_dead_with_the_way_to_resume(app: typer.Typer, tmp_path: Path) -> None:
    runs = [FakeRun("grpo+none", 1, 0.4), FakeRun("maxrl+gtpo", 1, 0.5, status="running", steps_logged=2)]
    camp = write_campaign(tmp_path / "camp", runs, status="running")
    _beat(camp / "runs" / "maxrl+gtpo_s1", pid=_dead_pid(), host=socket.gethostname(), at=time.time())
    result = runner.invoke(app, ["campaign", "status", str(camp)])
    assert result.exit_code == 0, result.output
    assert _row(result.stdout, "maxrl+gtpo_s1")[1:4] == ["dead", "(pid", str(
        json.loads((camp / "runs/maxrl+gtpo_s1/heartbeat.json").read_text())["pid"])]
    assert f"no run is alive: `retrain campaign resume {camp}` continues it" in result.stdout
    assert "1 dead" in result.stdout


def test_heartbeat_of_an_earlier_attempt_does_not_count(tmp_path: Path) -> None:
    """A retried run whose new attempt is still loading its model: the old heartbeat (final
    status failed) predates the manifest's start of this attempt."""
    camp = write_campaign(tmp_path / "camp", [FakeRun("maxrl+gtpo", 1, 0.5, status="running", steps_logged=0)],
                          status="running")
    _beat(camp / "runs/maxrl+gtpo_s1", pid=os.getpid(), host=socket.gethostname(), at=DAYS_AGO,
          status="failed")
    manifest = json.loads((camp / "manifest.json").read_text())
    manifest["runs"]["maxrl+gtpo_s1"]["started"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    (camp / "manifest.json").write_text(json.dumps(manifest))
    (run,) = load_campaign(camp).runs
    assert run.status == "running"


@pytest.mark.parametrize("kind", ["empty", "run dir", "tree"])
def test_campaign_status_refuses_a_dir_that_is_not_a_campaign(app: typer.Typer, tmp_path: Path,
                                                              kind: str) -> None:
    target = tmp_path / "x"
    if kind == "run dir":
        write_run(target, FakeRun("grpo+none", 1, 0.4))
    elif kind == "tree":
        write_campaign(target / "inner", [FakeRun("grpo+none", 1, 0.4)])
    else:
        target.mkdir()
    result = runner.invoke(app, ["campaign", "status", str(target)])
    assert result.exit_code == 2
    assert result.stdout == ""  # no empty table
    err = " ".join(result.stderr.split())
    assert err.startswith(f"error: {target} is not a campaign directory: a campaign dir holds "
                          "plan.json and manifest.json"), err
    assert f"use `retrain status {target}`" in err


def test_the_heartbeat_sink_beats_at_start_every_second_and_finish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrain.config.schema import LoggingConfig
    from retrain.sinks import RunInfo, build_sinks

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    info = RunInfo(run_name="run", condition="grpo+none", seed=1, run_dir=run_dir, max_steps=3,
                   start_step=0)
    sinks = build_sinks(info, LoggingConfig(), console_mode="none")
    sinks.start(info)

    def beat() -> dict[str, object]:
        return json.loads((run_dir / "heartbeat.json").read_text())

    first = beat()
    assert (first["pid"], first["host"], first["step"], first["status"]) == (
        os.getpid(), socket.gethostname(), 0, "running")
    assert abs(float(first["time"]) - time.time()) < 60  # type: ignore[arg-type]
    sinks.log_step({"step": 1, "condition": "grpo+none", "correct_rate": 0.5, "step_time_s": 0.1})
    assert beat()["step"] == 0  # within a second of the last write: no fsync per step
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 2.0)
    sinks.log_step({"step": 2, "condition": "grpo+none", "correct_rate": 0.5, "step_time_s": 0.1})
    assert beat()["step"] == 2
    assert load_run(run_dir).status == "running"
    sinks.finish({"status": "interrupted", "wall_time_s": 1.0, "steps_done": 1})
    assert beat()["status"] == "interrupted" and load_run(run_dir).status == "interrupted"


def test_a_lone_run_resumed_after_an_interrupt_reads_running(tmp_path: Path) -> None:
    """`retrain run --resume` keeps the old summary.json (interrupted) until the run ends again;
    the newer heartbeat of the resumed process wins."""
    run_dir = tmp_path / "solo"
    write_run(run_dir, FakeRun("maxrl+gtpo", 1, 0.5, status="interrupted", steps_logged=2))
    os.utime(run_dir / "summary.json", (DAYS_AGO, DAYS_AGO))
    assert load_run(run_dir).status == "interrupted"
    _beat(run_dir, pid=os.getpid(), host=socket.gethostname(), at=time.time())
    assert load_run(run_dir).status == "running"


def test_a_pid_reused_by_a_later_process_reads_dead() -> None:
    """The heartbeat's pid_start names one process: this test process with another start time
    is a later process that took the pid, so the run's own process is gone."""
    from retrain.analysis.liveness import live_status, pid_alive
    from retrain.sinks.heartbeat import heartbeat_record, process_start

    me, start = os.getpid(), process_start(os.getpid())
    if start is None:
        pytest.skip("no /proc on this platform")
    assert pid_alive(me, start=start) is True and pid_alive(me) is True
    assert pid_alive(me, start=start + 1) is False
    beat = heartbeat_record(step=3, max_steps=10, status="running")
    assert beat["pid"] == me and beat["pid_start"] == start
    common = {"metrics_written": None, "started": None, "in_campaign": True, "stale_after_s": 60.0}
    assert live_status(beat, **common) == "running"
    assert live_status({**beat, "pid_start": start + 1}, **common) == "dead"
    assert live_status({k: v for k, v in beat.items() if k != "pid_start"}, **common) == "running"
