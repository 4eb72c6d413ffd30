"""Issue 14.4: the tables of `analyze compare`, `campaign status` and `campaign plan` are whole
wherever they are printed. Piped (not a terminal): one line per row, every number and override
as it is, no ellipsis. In an 80-column terminal: no line longer than 80, no number split across
lines or cut short; columns that do not fit are hidden and named.

The numbers are realistic ones: 4-digit correct rates (0.2345), intervals like 0.393 ±0.16, and
long condition labels such as maxrl+gtpo_sepa_hicra.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from retrain.analysis import campaign_status_table, comparison_rows, render_comparison
from retrain.analysis.compare import _display
from retrain.cli import analyze_cmd, campaign_cmd

from .conftest import command_app
from .fakes import FakeRun, write_campaign

runner = CliRunner()
CONDITIONS = ("grpo+none", "maxrl+gtpo_sepa_hicra", "maxrl+gtpo", "grpo+gtpo_sepa")


@pytest.fixture
def wide_campaign(tmp_path: Path) -> Path:
    """4 conditions x 3 seeds with 4-digit finals; the last run is still running (2 of 4 steps)."""
    runs = [FakeRun(cond, seed, round(0.2345 + 0.1 * i + 0.0711 * j + 0.0123 * (i * j % 3), 4))
            for i, cond in enumerate(CONDITIONS) for j, seed in enumerate((42, 101, 202))]
    runs[-1].status, runs[-1].steps_logged = "running", 2
    return write_campaign(tmp_path / "camp", runs, status="running")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd, campaign_cmd)


def _terminal(width: int = 80) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


def _text(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def _assert_whole(text: str, values: list[str]) -> None:
    """Each value appears as a whole token (not split, not cut, not glued to a neighbour)."""
    tokens = set(re.findall(r"[^\s│┃|]+", text))
    missing = [v for v in values if v not in tokens]
    assert not missing, f"split or cut: {missing}\n{text}"


def _assert_fits(text: str, width: int) -> None:
    assert "…" not in text, text
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)


def test_compare_piped_has_every_cell_of_a_row_on_its_line(app: typer.Typer, wide_campaign: Path) -> None:
    result = runner.invoke(app, ["analyze", "compare", str(wide_campaign)])
    assert result.exit_code == 0, result.output
    _, cells = _display(comparison_rows(wide_campaign))
    lines = result.stdout.splitlines()
    for row in cells:
        line = next(ln for ln in lines if ln.startswith(row[0] + " "))
        for cell in row[1:-2]:  # the last two (test, verdict) are the sentences under the table
            assert cell in line, (cell, line)
    assert "…" not in result.stdout
    # every verdict is one line, whole
    assert any(ln.startswith("maxrl+gtpo_sepa_hicra: better than grpo+none (+0.") and
               ln.endswith("add seeds before concluding") for ln in lines), result.stdout


def test_compare_in_an_80_column_terminal(wide_campaign: Path) -> None:
    rows = comparison_rows(wide_campaign)
    console = _terminal(80)
    console.print(render_comparison(rows, "table"))
    text = _text(console)
    _assert_fits(text, 80)
    # the statistic the test uses (last-10), Δ and p are always shown, each number whole
    _, cells = _display(rows)
    _assert_whole(text, [tok for row in cells for tok in " ".join([row[4], *row[9:11]]).split()])
    _assert_whole(text, list(CONDITIONS))
    assert "not shown at 80 columns:" in text  # what did not fit is named, not silently lost


def test_campaign_status_piped_shows_whole_values(app: typer.Typer, wide_campaign: Path) -> None:
    result = runner.invoke(app, ["campaign", "status", str(wide_campaign)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("maxrl+gtpo_sepa_hicra_s101 "))
    # final 0.4179 at step 4: correct 0.4179, reward 0.8358, eval 0.5179
    assert row.split()[1:7] == ["done", "4/4", "(100%)", "0.8358", "0.4179", "0.5179"], row
    running = next(ln for ln in lines if ln.startswith("grpo+gtpo_sepa_s202 "))
    assert "running" in running and "2/4 (50%)" in running
    assert "…" not in result.stdout


def test_campaign_status_in_an_80_column_terminal(wide_campaign: Path) -> None:
    console = _terminal(80)
    console.print(campaign_status_table(wide_campaign))
    text = _text(console)
    _assert_fits(text, 80)
    # one line per run: reward, the least needed column, is hidden (and named) instead
    row = next(ln for ln in text.splitlines() if ln.startswith("maxrl+gtpo_sepa_hicra_s101 "))
    assert row.split()[1:6] == ["done", "4/4", "(100%)", "0.4179", "0.5179"], text
    assert "not shown at 80 columns: reward" in text


PLAN_TOML = """\
[model]
name = "tiny"

[training]
max_steps = 30

[campaign]
seeds = [42, 101]

[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa_hicra"

[campaign.grid]
"lora.rank" = [8, 32]
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(PLAN_TOML, encoding="utf-8")
    return path


def test_campaign_plan_piped_keeps_every_override(app: typer.Typer, plan_file: Path) -> None:
    result = runner.invoke(app, ["campaign", "plan", str(plan_file)])
    assert result.exit_code == 0, result.output
    rows = [ln for ln in result.stdout.splitlines() if re.match(r"\s*\d+ .*_s\d+ ", ln)]
    assert len(rows) == 8
    assert any(ln.endswith("algorithm.advantage_mode=maxrl, algorithm.transform_mode="
                           "gtpo_sepa_hicra, lora.rank=32") for ln in rows), result.stdout
    assert "…" not in result.stdout


def test_campaign_plan_in_an_80_column_terminal(app: typer.Typer, plan_file: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    console = _terminal(80)
    monkeypatch.setattr(campaign_cmd, "console", console)
    result = runner.invoke(app, ["campaign", "plan", str(plan_file)])
    assert result.exit_code == 0, result.output
    text = _text(console)
    _assert_fits(text, 80)
    # an override wraps between items, never inside `key=value`
    _assert_whole(text, ["algorithm.advantage_mode=maxrl,", "algorithm.transform_mode=gtpo_sepa_hicra,",
                         "lora.rank=32"])
