"""`retrain analyze diff` shows the environment.json keys that differ, in every format, and
says when the runs have no environment.json (run dirs written before it existed)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from retrain.cli import analyze_cmd

from .conftest import command_app

BASE = {"retrain": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "transformers": "5.19.0",
        "peft": "0.21.2", "vllm": None, "device": "cpu", "gpu_name": None, "cpu_count": 2,
        "torch_threads": 1, "git_commit": "abc", "git_dirty": False, "host_hash": "5bce98f73f3e",
        "utc_time": "2026-01-01T00:00:00Z", "invocation": "fresh", "start_step": 0, "history": []}


def _diff(app: typer.Typer, a: Path, b: Path, *fmt: str) -> str:
    result = CliRunner().invoke(app, ["analyze", "diff", str(a), str(b), *fmt])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_diff_shows_environment_keys_that_differ(done_campaign: Path) -> None:
    app = command_app(analyze_cmd)
    a, b = done_campaign / "runs/grpo+none_s42", done_campaign / "runs/maxrl+gtpo_s42"
    assert "environment not recorded" in _diff(app, a, b)
    (a / "environment.json").write_text(json.dumps(BASE))
    # B: an older torch, run later, resumed once: only torch differs (time and history do not count)
    (b / "environment.json").write_text(json.dumps({
        **BASE, "torch": "2.12.0", "utc_time": "2026-02-01T00:00:00Z", "invocation": "resume",
        "start_step": 10, "history": [BASE]}))

    table = _diff(app, a, b)
    assert "environment differences" in table
    line = next(ln for ln in table.splitlines() if ln.startswith("torch "))
    assert line.split() == ["torch", "2.13.0", "2.12.0"]
    assert "utc_time" not in table and "start_step" not in table

    md = _diff(app, a, b, "-f", "md")
    assert "### environment" in md and "| torch | 2.13.0 | 2.12.0 |" in md
    rows = list(csv.DictReader(io.StringIO(_diff(app, a, b, "-f", "csv"))))
    assert [(r["key"], r["a"], r["b"]) for r in rows if r["section"] == "environment"] == [
        ("torch", "2.13.0", "2.12.0")]
    data = json.loads(_diff(app, a, b, "-f", "json"))
    assert data["environment"] == [{"key": "torch", "a": "2.13.0", "b": "2.12.0"}]
    assert data["environment_recorded"] is True

    (b / "environment.json").write_text(json.dumps(BASE))
    assert "environments identical" in _diff(app, a, b)
    (b / "environment.json").unlink()
    data = json.loads(_diff(app, a, b, "-f", "json"))
    assert data["environment"] == [{"key": "environment.json", "a": "present", "b": "missing"}]
