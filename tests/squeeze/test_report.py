"""The Rich table and the wandb squeeze-analysis run (a fake wandb module records the calls)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from rich.console import Console

from retrain.errors import MissingExtraError
from retrain.squeeze import analyze_adapter, log_squeeze_to_wandb, render_table


def test_table_marks_recommended_row(planted: Path) -> None:
    result = analyze_adapter(planted, ranks=[1, 2, 3], min_variance=0.85)
    console = Console(width=120, record=True)
    console.print(render_table(result))
    lines = console.export_text().splitlines()
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if "%" in line and "│" in line]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]  # the source rank is always a row
    assert [row[0] for row in rows if row[4] == "<- recommended"] == ["3"]
    # k=1: mean (0.752941 + 0.25)/2 = 50.15%, min 25.00%, max 75.29%
    assert rows[0][1:4] == ["50.15%", "25.00%", "75.29%"]


class _FakeRun:
    def __init__(self) -> None:
        self.logged: list[dict[str, object]] = []
        self.summary: dict[str, object] = {}
        self.finished = False

    def log(self, data: dict[str, object]) -> None:
        self.logged.append(data)

    def finish(self) -> None:
        self.finished = True


def test_wandb_run(planted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _FakeRun()
    calls: dict[str, object] = {}
    fake = types.ModuleType("wandb")

    def init(**kwargs: object) -> _FakeRun:
        calls.update(kwargs)
        return run

    class Table:
        def __init__(self, columns: list[str], data: list[list[float]]) -> None:
            self.columns, self.data = columns, data

    fake.init = init  # type: ignore[attr-defined]
    fake.Table = Table  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)

    result = analyze_adapter(planted)
    log_squeeze_to_wandb(result, project="p", group="g", mode="offline")
    assert calls["name"] == "squeeze-analysis" and calls["project"] == "p" and calls["group"] == "g"
    per_rank = [row for row in run.logged if "squeeze/rank" in row]
    assert [row["squeeze/rank"] for row in per_rank] == [1, 2, 4]
    assert set(per_rank[0]) == {"squeeze/rank", "squeeze/mean_variance", "squeeze/min_variance", "squeeze/max_variance"}
    table = next(row["squeeze/variance_table"] for row in run.logged if "squeeze/variance_table" in row)
    assert table.columns == ["rank", "mean_variance", "min_variance", "max_variance"] and len(table.data) == 3
    assert run.summary == result.summary() and run.finished


def test_wandb_missing(planted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(MissingExtraError, match=r"retrain\[wandb\]"):
        log_squeeze_to_wandb(analyze_adapter(planted), project="p")
