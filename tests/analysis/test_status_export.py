"""Status tables (campaign and lone runs), ETA, watch loop, export records and run diffs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from retrain.analysis import (
    AnalysisError,
    campaign_status_table,
    diff_runs,
    export_records,
    status_renderable,
    watch_status,
)
from retrain.analysis.status import fmt_duration

from .fakes import FakeRun, write_run


def render(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_campaign_status_table(running_campaign: Path) -> None:
    table = campaign_status_table(running_campaign)
    assert table.row_count == 6
    cols = {c.header: list(c.cells) for c in table.columns}
    assert [str(s).split()[0] for s in cols["status"]] == ["done"] * 3 + ["running", "failed", "pending"]
    assert cols["step"][3] == "2/4 (50%)" and cols["step"][5] == "0/4 (0%)"
    assert cols["reward"][3] == "0.8"  # 2 * correct_rate 0.4 at step 2
    assert cols["eval acc"][0] == "0.3"  # step 4 eval of grpo+none_s42
    # running: 2 steps left x 2 s/step; pending borrows the campaign's pace: 4 x 2 s
    assert cols["ETA"][3] == "4s" and cols["ETA"][5] == "8s" and cols["ETA"][0] == "—"
    text = render(table)
    assert "3/6 done" in text and "1 running" in text and "1 failed" in text and "ETA ~12s" in text
    assert "RuntimeError: boom" in text


def test_status_of_a_tree(tmp_path: Path, done_campaign: Path) -> None:
    write_run(tmp_path / "solo_run", FakeRun("maxrl+none", 3, 0.6, status="running"))
    text = render(status_renderable(tmp_path))
    assert "campaign ablation" in text and "solo_run" in text and "running" in text
    (tmp_path / "none").mkdir()
    with pytest.raises(AnalysisError, match="no campaigns or runs"):
        status_renderable(tmp_path / "none")
    with pytest.raises(AnalysisError):
        campaign_status_table(tmp_path / "missing")


def test_watch_redraws(done_campaign: Path) -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    watch_status(done_campaign, interval=0.0, refreshes=2, console=console)
    assert "campaign ablation" in console.file.getvalue()  # type: ignore[attr-defined]


def test_fmt_duration() -> None:
    assert [fmt_duration(s) for s in (None, 4.4, 75, 720, 3 * 3600 + 300, 2 * 86400 + 7200)] == [
        "—", "4s", "1m15s", "12m", "3h05m", "2d02h"]


def test_export_records(running_campaign: Path) -> None:
    recs = {r["run"]: r for r in export_records(running_campaign)}
    assert len(recs) == 6
    done = recs["grpo+none_s101"]
    assert done["final_eval.accuracy"] == pytest.approx(0.4) and done["params_total"] == 1000
    assert done["deltas.accuracy"] == pytest.approx(0.3) and done["status"] == "done"
    live = recs["maxrl+gtpo_s42"]
    assert live["status"] == "running" and live["steps_done"] == 2
    assert live["latest.correct_rate"] == pytest.approx(0.4) and live["initial_eval.accuracy"] == 0.1
    assert recs["maxrl+gtpo_s202"]["status"] == "pending"


def test_diff_runs(done_campaign: Path) -> None:
    d = diff_runs(done_campaign / "runs/grpo+none_s42", done_campaign / "runs/maxrl+gtpo_s42", last_n=2)
    keys = {c["key"]: (c["a"], c["b"]) for c in d.config}
    assert keys == {"algorithm.advantage_mode": ("grpo", "maxrl"),
                    "algorithm.transform_mode": ("none", "gtpo"), "lora.rank": (16, 8)}
    metrics = {m["metric"]: m for m in d.metrics}
    # final correct_rate 0.2 vs 0.5; last-2 means 0.175 vs 0.475
    assert metrics["correct_rate"]["final_delta"] == pytest.approx(0.3)
    assert metrics["correct_rate"]["last_n_a"] == pytest.approx(0.175)
    assert metrics["summary.final_eval.accuracy"]["final_delta"] == pytest.approx(0.3)
    with pytest.raises(AnalysisError, match="expected one run dir, found 6"):
        diff_runs(done_campaign, done_campaign / "runs/grpo+none_s42")
