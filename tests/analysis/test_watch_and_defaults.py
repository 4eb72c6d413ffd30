"""Issue 14.8 (the analysis parts): `--watch` writes when piped and exists for `campaign status`;
the step-0 pre-training eval is never a run's best; summary.md and `analyze compare` compare on
the same metric; a damaged metrics.jsonl line is reported (once) instead of skipped silently.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from retrain.analysis import collect_runs, comparison_rows, render_comparison
from retrain.analysis.stats import compare_to_baseline
from retrain.campaign.manifest import Manifest
from retrain.campaign.report import write_comparison
from retrain.cli import analyze_cmd
from retrain.config.schema import AuditConfig

from .conftest import command_app
from .fakes import FakeRun, done_runs, write_campaign, write_run

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd)


def _piped_lines(args: list[str], *, wanted: int, timeout: float = 60.0) -> list[str]:
    """Run `retrain ARGS` with stdout on a pipe; the lines it wrote until `wanted` lines start
    with '# ' (one per snapshot) or `timeout` passes; then Ctrl+C."""
    proc = subprocess.Popen([sys.executable, "-m", "retrain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    got: list[str] = []
    try:
        while sum(ln.startswith("# ") for ln in got) < wanted:
            try:
                got.append(lines.get(timeout=timeout).rstrip("\n"))
            except queue.Empty:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return got


@pytest.mark.parametrize("command", [["status"], ["campaign", "status"]])
def test_watch_prints_every_snapshot_when_piped(done_campaign: Path, command: list[str]) -> None:
    lines = _piped_lines([*command, str(done_campaign), "--watch", "--interval", "0.2"], wanted=2)
    snapshots = [i for i, ln in enumerate(lines) if ln.startswith("# ")]
    assert len(snapshots) == 2, lines  # before the fix: nothing until Ctrl+C (or no --watch at all)
    first = lines[snapshots[0]:snapshots[1]]
    assert any(ln.startswith("grpo+none_s42 ") and "done" in ln for ln in first), lines
    assert "campaign ablation" in "\n".join(first)


def _eval_run(run_dir: Path, seed: int, evals: dict[int, float]) -> None:
    """A run whose pre-training eval (step 0) beats every eval after training."""
    write_run(run_dir, FakeRun("grpo+none", seed, 0.2))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("eval_accuracy", None)
        if row["step"] in evals:
            row["eval_accuracy"] = evals[row["step"]]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_pre_training_eval_is_not_the_best(tmp_path: Path) -> None:
    _eval_run(tmp_path / "r1", 1, {0: 0.9, 2: 0.5, 4: 0.6})
    _eval_run(tmp_path / "r2", 2, {0: 0.9, 2: 0.3, 4: 0.4})
    (row,) = comparison_rows(tmp_path, metric="eval_accuracy", threshold=0.45)
    # per run over steps 2 and 4 only: best 0.6 and 0.4; last-N mean 0.55 and 0.35;
    # AUC (0.5+0.6)/2 = 0.55 and 0.35; r1 reaches 0.45 at step 2, r2 never
    assert row["best_mean"] == pytest.approx(0.5)  # not 0.9, the step-0 eval
    assert row["last_n_mean"] == pytest.approx(0.45)
    assert row["auc_mean"] == pytest.approx(0.45)
    assert row["final_mean"] == pytest.approx(0.5)
    assert row["steps_to_threshold_mean"] == pytest.approx(2.0) and row["threshold_reached"] == 1


def test_summary_md_compares_on_the_metric_analyze_compare_uses(tmp_path: Path) -> None:
    # fakes: mean_reward = 2 x correct_rate, so the two metrics give different tables
    camp = write_campaign(tmp_path / "camp", done_runs())
    manifest = Manifest.load(camp)
    assert manifest is not None
    manifest.data.setdefault("spec_hash", "abc123")
    spec = SimpleNamespace(name="ablation",
                           base=SimpleNamespace(campaign=SimpleNamespace(compare_last_n=10), audit=AuditConfig()))
    shown: list[Any] = []
    write_comparison(spec, camp, manifest, say=lambda _: None, show=shown.append)  # type: ignore[arg-type]
    summary = (camp / "summary.md").read_text(encoding="utf-8")
    default_table = str(render_comparison(comparison_rows(camp), "md")).strip()
    assert default_table in summary
    assert "correct_rate" in summary.split("## Training curves")[1].splitlines()[0]


def test_a_damaged_metrics_line_is_reported_once(app: typer.Typer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, FakeRun("grpo+none", 1, 0.4))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines.insert(2, "{not json")
    lines.insert(4, '["a list, not a row"]')
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["analyze", "export", str(run_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["steps_done"] == 4  # the other rows are still read
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert warned == [f"warning: {run_dir / 'metrics.jsonl'}: skipped 2 unreadable lines (not a JSON "
                      "object with an integer step; a kill mid-write leaves a torn last line); the "
                      "other rows are used"]
    collect_runs(run_dir)  # read again in the same process: no second warning
    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_equal_differences_up_to_rounding_raise_no_warning() -> None:
    # (0.1 + 0.2) - 0.2 and 0.7 - 0.6 differ in the last bits; scipy warned of precision loss
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare_to_baseline({1: 0.1 + 0.2, 2: 0.4, 3: 0.7}, {1: 0.2, 2: 0.3, 3: 0.6})
    assert result.p_value is None and result.diff == pytest.approx(0.1)
