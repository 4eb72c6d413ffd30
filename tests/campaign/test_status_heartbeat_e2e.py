"""Issue 14.5 end to end: a real campaign on the tiny model writes heartbeat.json while it trains;
`retrain campaign status` reads it running, and after `kill -9` of the campaign, dead (before the
fix: running forever) with the command that continues it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retrain.cli import campaign_cmd

pytestmark = pytest.mark.slow

CAMPAIGN = """\
[model]
name = "tiny"

[training]
max_steps = 5000
batch_size = 4
group_size = 4

[eval]
size = 10
every = 0

[data]
eval_size = 50

[backend]
threads = 1

[campaign]
seeds = [1]
executor = "inprocess"

[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"""


def _status(campaign_dir: Path) -> str:
    app = typer.Typer()
    app.callback()(lambda: None)
    campaign_cmd.register(app)
    result = CliRunner().invoke(app, ["campaign", "status", str(campaign_dir)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_killed_campaign_reads_dead(tmp_path: Path) -> None:
    spec = tmp_path / "hb.toml"
    spec.write_text(CAMPAIGN, encoding="utf-8")
    out = tmp_path / "camp"
    proc = subprocess.Popen([sys.executable, "-m", "retrain", "campaign", "run", str(spec), "--out",
                             str(out), "--no-console-output"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    beat_file = out / "runs" / "grpo+none_s1" / "heartbeat.json"
    try:
        deadline = time.monotonic() + 120
        beat: dict[str, object] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                beat = json.loads(beat_file.read_text())
            except (OSError, ValueError):
                beat = {}
            if isinstance(beat.get("step"), int) and int(beat["step"]) >= 2:  # type: ignore[call-overload]
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert beat.get("pid") == proc.pid and beat.get("status") == "running", beat
        row = next(ln for ln in _status(out).splitlines() if ln.startswith("grpo+none_s1 "))
        assert row.split()[1] == "running", row
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    text = _status(out)
    row = next(ln for ln in text.splitlines() if ln.startswith("grpo+none_s1 "))
    assert row.split()[1:4] == ["dead", "(pid", str(proc.pid)], text
    assert f"`retrain campaign resume {out}` continues it" in text
