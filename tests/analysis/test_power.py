"""`retrain analyze power` and the MDE / raw-vs-Holm columns of the compare and gain tables.

Hand-worked example (used throughout): per-seed differences 0.1, 0.2, 0.3
  mean 0.2; SD = sqrt((0.01 + 0 + 0.01) / 2) = 0.1; d = mean / SD = 2.
  MDE at n = 3 (two-sided α 0.05, power 0.8): 3.264044 SD (statsmodels
  TTestPower().solve_power(nobs=3) = 3.264043552819638) → 0.326404 in metric units.
  Pairs needed for d = 2: statsmodels' nobs = 4.2207 → 5. Check: the MDE at n = 4 is 2.128 SD
  (> 2, so 4 pairs are not enough) and at n = 5 it is 1.682 SD (< 2, enough).
  Holm worst case with 2 comparisons, α/2 = 0.025: 6 pairs (nobs 5.1146 → 6).
  --effect 0.1 → d = 0.1 / 0.1 = 1: nobs 9.9379 → 10 pairs (13 at α/2).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats as sps
import typer
from rich.console import Console
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from typer.testing import CliRunner

from retrain.analysis import comparison_rows, render_comparison
from retrain.analysis.gain import gain_rows, render_gains_md, render_gains_rich
from retrain.analysis.loading import collect_runs
from retrain.analysis.power import power_row, power_rows, render_power
from retrain.analysis.stats import (
    detectable_effect_size,
    holm,
    min_detectable_effect,
    paired_t_power,
    seeds_needed,
)
from retrain.cli import analyze_cmd

from .conftest import command_app
from .fakes import BASE_FINALS, FakeRun, done_runs, write_campaign
from .test_gain import GAINS
from .test_gain import _write_run as write_gain_run

runner = CliRunner()
MDE_D_N3 = 3.264043552819638  # statsmodels TTestPower().solve_power(nobs=3, alpha=.05, power=.8)


def nct_power(d: float, n: int, alpha: float = 0.05) -> float:
    """Independent of statsmodels: P(|T| > t_crit), T ~ noncentral t(n - 1, d·√n)."""
    crit = sps.t.isf(alpha / 2, n - 1)
    nc = d * math.sqrt(n)
    lower = float(sps.nct.cdf(-crit, n - 1, nc))  # NaN where it underflows (~0)
    return float(sps.nct.sf(crit, n - 1, nc)) + (lower if math.isfinite(lower) else 0.0)


# ---- the power math ---------------------------------------------------------------------------

def test_hand_worked_example() -> None:
    row = power_row("a", "b", [0.1, 0.2, 0.3], effect=0.1, comparisons=2)
    assert row["n_pairs"] == 3 and row["diff_mean"] == pytest.approx(0.2)
    assert row["diff_sd"] == pytest.approx(0.1) and row["effect_size"] == pytest.approx(2.0)
    assert row["mde_effect_size"] == pytest.approx(MDE_D_N3, rel=1e-6)
    assert row["mde"] == pytest.approx(0.326404, abs=1e-6)
    assert row["seeds_needed"] == 5 and row["alpha_holm"] == pytest.approx(0.025)
    assert row["seeds_needed_holm"] == 6
    assert (row["seeds_for_effect"], row["seeds_for_effect_holm"]) == (10, 13)
    # the reasoning of the docstring, with the detectable effect sizes at n = 4 and 5
    assert detectable_effect_size(4) == pytest.approx(2.127949, abs=1e-6)
    assert detectable_effect_size(5) == pytest.approx(1.681997, abs=1e-6)
    assert "needs 5 pairs (2 more), 6 at α/2 = 0.025 (Holm, worst case)" in row["note"]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 30, 100])
def test_mde_agrees_with_statsmodels_and_has_the_power_asked(n: int) -> None:
    d = detectable_effect_size(n)
    assert d is not None
    # statsmodels' solver stops within ~3e-6 (at n = 100 its d has power 0.7999974); ours is
    # exact to 1e-9 by the independent check below
    assert d == pytest.approx(TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8), rel=1e-5)
    assert nct_power(d, n) == pytest.approx(0.8, abs=1e-9)
    assert min_detectable_effect(n, 0.05) == pytest.approx(0.05 * d, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01])
@pytest.mark.parametrize("d", [0.3, 0.5, 1.0, 2.0, 3.0, 10.0])
def test_seeds_needed_is_the_smallest_n_with_the_power(d: float, alpha: float) -> None:
    n = seeds_needed(d, alpha=alpha)
    assert n is not None and n >= 2
    assert nct_power(d, n, alpha) >= 0.8
    assert n == 2 or nct_power(d, n - 1, alpha) < 0.8
    assert seeds_needed(-d, alpha=alpha) == n  # two-sided: the sign does not matter


def test_where_statsmodels_solve_power_is_wrong() -> None:
    # solve_power says 2.0 pairs for d = 10, but 2 pairs give only 73% power: 3 are needed
    assert TTestPower().solve_power(effect_size=10.0, alpha=0.05, power=0.8) == pytest.approx(2.0)
    assert nct_power(10.0, 2) == pytest.approx(0.7328, abs=1e-4)
    assert seeds_needed(10.0) == 3
    # at n = 3, α = 0.025 it returns an effect size of power 0.786; ours has 0.8
    wrong = TTestPower().solve_power(nobs=3, alpha=0.025, power=0.8)
    assert nct_power(wrong, 3, 0.025) == pytest.approx(0.7857, abs=1e-4)
    assert nct_power(detectable_effect_size(3, alpha=0.025) or 0.0, 3, 0.025) == pytest.approx(0.8)


def test_power_where_the_far_tail_underflows() -> None:
    # statsmodels' two-sided power is NaN here: nct.cdf of the far (lower) tail underflows.
    # That tail is ~0, so the power is the upper tail alone.
    assert math.isnan(TTestPower().power(5.0, 5, 0.2))
    upper = sps.nct.sf(sps.t.isf(0.1, 4), 4, 5.0 * math.sqrt(5))
    assert paired_t_power(5.0, 5, alpha=0.2) == pytest.approx(upper)
    assert paired_t_power(0.0, 5) == pytest.approx(0.05)  # no effect: rejects at rate α


def test_edge_cases_give_none_and_say_why() -> None:
    assert seeds_needed(0.0) is None and seeds_needed(None) is None
    assert detectable_effect_size(1) is None
    none = power_row("a", "b", [])
    assert none["diff_mean"] is None and none["mde"] is None and none["seeds_needed"] is None
    one = power_row("a", "b", [0.2], effect=0.1)
    assert one["diff_mean"] == pytest.approx(0.2) and one["diff_sd"] is None
    assert one["mde"] is None and one["seeds_for_effect"] is None
    assert one["note"].startswith("1 paired seed: no SD")
    flat = power_row("a", "b", [0.3345 - 0.2345, 0.4345 - 0.3345])  # equal up to rounding
    assert flat["diff_sd"] == 0.0 and flat["mde"] is None and flat["seeds_needed"] is None
    assert "SD 0" in flat["note"]
    zero = power_row("a", "b", [-0.1, 0.0, 0.1])
    assert zero["effect_size"] == 0.0 and zero["seeds_needed"] is None
    assert zero["mde"] == pytest.approx(0.1 * MDE_D_N3, rel=1e-6)
    assert "the observed Δ is 0, which no number of seeds detects" in zero["note"]
    text = str(render_power([{"condition": "a", "quantity": "eval gain", **zero}], "md"))
    assert "| a | 3 | +0 | 0.1 | +0.00 | 0.326 | never |" in text


def test_holm_is_statsmodels_multipletests_with_none_kept() -> None:
    ps = [0.035099, None, 0.074180, 0.5]
    expected = multipletests([0.035099, 0.074180, 0.5], method="holm")[1]
    assert holm(ps) == pytest.approx([expected[0], None, expected[1], expected[2]])
    # by hand: 3 · 0.035099 = 0.105297; max(0.105297, 2 · 0.074180) = 0.148360; 0.5
    assert holm(ps) == pytest.approx([0.105297, None, 0.148360, 0.5])


# ---- rows from run dirs -----------------------------------------------------------------------

def three_condition_runs() -> list[FakeRun]:
    """maxrl+gtpo − grpo+none per seed (42, 101, 202): 0.3, 0.2, 0.4 → mean 0.3, SD 0.1, d = 3;
    maxrl+none − grpo+none: 0.1, 0.2, 0.3 → the hand-worked example (d = 2)."""
    return done_runs() + [FakeRun("maxrl+none", s, f + delta) for (s, f), delta
                          in zip(BASE_FINALS.items(), (0.1, 0.2, 0.3), strict=True)]


@pytest.fixture
def three_campaign(tmp_path: Path) -> Path:
    return write_campaign(tmp_path / "three", three_condition_runs())


def test_power_rows_of_the_eval_gain(three_campaign: Path) -> None:
    # fakes.py: a run's eval gain (summary deltas.accuracy) is its final value
    rows = {r["condition"]: r for r in power_rows(collect_runs(three_campaign))}
    assert list(rows) == ["maxrl+gtpo", "maxrl+none"]
    gtpo, none = rows["maxrl+gtpo"], rows["maxrl+none"]
    assert gtpo["quantity"] == "eval gain" and gtpo["baseline"] == "grpo+none"
    assert gtpo["seeds"] == [42, 101, 202] and gtpo["comparisons"] == 2
    assert gtpo["diff_mean"] == pytest.approx(0.3) and gtpo["effect_size"] == pytest.approx(3.0)
    # d = 3: MDE at n = 3 is 3.264 SD > 3, at n = 4 2.128 SD < 3 → 4 pairs; at α/2 also 4
    assert (gtpo["seeds_needed"], gtpo["seeds_needed_holm"]) == (4, 4)
    assert nct_power(3.0, 3) < 0.8 <= nct_power(3.0, 4) and nct_power(3.0, 4, 0.025) >= 0.8
    assert (none["seeds_needed"], none["seeds_needed_holm"]) == (5, 6)
    assert none["mde"] == pytest.approx(0.326404, abs=1e-6)


def test_power_rows_of_a_training_metric(three_campaign: Path) -> None:
    # last-2 mean of correct_rate = final − 0.025 in every run, so the differences are the same
    rows = power_rows(collect_runs(three_campaign), metric="correct_rate", last_n=2,
                      baseline="grpo+none", effect=0.1)
    assert rows[1]["quantity"] == "correct_rate (last_n)"
    assert rows[1]["diff_mean"] == pytest.approx(0.2) and rows[1]["seeds_for_effect"] == 10
    best = power_rows(collect_runs(three_campaign), stat="final")
    assert best[0]["quantity"] == "correct_rate (final)" and best[0]["seeds_needed"] == 4


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd)


def invoke(app: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_table_and_json(app: typer.Typer, three_campaign: Path, tmp_path: Path) -> None:
    code, out, err = invoke(app, "analyze", "power", three_campaign, "--effect", "0.1")
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("condition"))
    assert "seeds (Holm)" in header and "seeds for Δ=0.1 (Holm)" in header
    # piped: one line per row, cells separated by two or more spaces
    row = next(line for line in lines if line.startswith("maxrl+none")).split()
    assert row == ["maxrl+none", "3", "+0.2", "0.1", "+2.00", "0.326", "5", "6", "10", "13"]
    assert "two-sided paired t-test on the per-seed differences" in out
    assert "normally distributed" in out and "rough" in out
    assert "with 2 comparisons a Holm-protected claim needs α/2 = 0.025 at worst" in out
    code, out, _ = invoke(app, "analyze", "power", three_campaign, "-f", "json")
    data = json.loads(out)
    assert code == 0 and [r["condition"] for r in data] == ["maxrl+gtpo", "maxrl+none"]
    assert data[1]["seeds_needed"] == 5 and data[1]["effect"] is None
    assert data[1]["mde"] == pytest.approx(0.326404, abs=1e-6)
    target = tmp_path / "power.md"
    code, _, _ = invoke(app, "analyze", "power", three_campaign, "-f", "md", "--out", target,
                        "--alpha", "0.01", "--power", "0.9")
    text = target.read_text()
    assert code == 0 and text.startswith("| condition | pairs |") and "α = 0.01, power 90%" in text


def test_cli_single_comparison_has_no_holm_column(app: typer.Typer, done_campaign: Path) -> None:
    code, out, _ = invoke(app, "analyze", "power", done_campaign, "-f", "md")
    assert code == 0 and "Holm, worst case" not in out.splitlines()[0]
    assert "one comparison, none needed" in out


def test_cli_errors_name_the_option(app: typer.Typer, three_campaign: Path, tmp_path: Path) -> None:
    cases = [
        (("--metric", "acc"), "--metric: unknown metric 'acc'; available:"),
        (("--baseline", "nope"), "--baseline: unknown baseline 'nope'"),
        (("--effect", "0"), "--effect must be a difference > 0"),
        (("--effect", "-0.1"), "--effect must be a difference > 0"),
        (("--power", "0.01"), "--power must be above --alpha"),
        (("--alpha", "1.5"), "--alpha must be in (0, 1)"),
    ]
    for args, message in cases:
        code, _, err = invoke(app, "analyze", "power", three_campaign, *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err
    # seeds that never match: no pairs at all
    unpaired = write_campaign(tmp_path / "unpaired", [
        FakeRun("grpo+none", 1, 0.2), FakeRun("grpo+none", 2, 0.3),
        FakeRun("maxrl+gtpo", 3, 0.5), FakeRun("maxrl+gtpo", 4, 0.6)])
    code, _, err = invoke(app, "analyze", "power", unpaired)
    assert code == 2 and "no paired seeds" in err and "--baseline" in err


def test_power_imports_no_torch(done_campaign: Path, tmp_path: Path) -> None:
    script = (f"import sys\nfrom retrain.cli.app import app\n"
              f"app(['analyze', 'power', {str(done_campaign)!r}, '-f', 'json'], standalone_mode=False)\n"
              "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'peft') "
              "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout and '"seeds_needed": 4' in proc.stdout


# ---- the compare and gain tables --------------------------------------------------------------

def test_compare_rows_have_raw_and_holm_p_and_mde(three_campaign: Path) -> None:
    rows = {r["condition"]: r for r in comparison_rows(three_campaign, last_n=2)}
    gtpo, none = rows["maxrl+gtpo"], rows["maxrl+none"]
    # gtpo: t = 0.3 / (0.1 / √3) = 5.196 → p = 0.035099; none: t = 0.2 / (0.1 / √3) = 3.4641,
    # F(t) = 1/2 + t / (2 √(2 + t²)) = 0.962910 → p = 0.074180.
    # Holm: 2 · 0.035099 = 0.070198; max(0.070198, 0.074180) = 0.074180
    assert gtpo["p_value"] == pytest.approx(0.035099, abs=1e-6)
    assert none["p_value"] == pytest.approx(0.074180, abs=1e-6)
    assert gtpo["p_holm"] == pytest.approx(0.070198, abs=1e-6)
    assert none["p_holm"] == pytest.approx(0.074180, abs=1e-6)
    assert gtpo["mde"] == pytest.approx(0.326404, abs=1e-6) == none["mde"]
    assert "Holm-adjusted over 2 comparisons p=0.0702 (not significant after adjustment)" in \
        str(gtpo["verdict"])
    assert rows["grpo+none"]["p_holm"] is None and rows["grpo+none"]["mde"] is None
    md = str(render_comparison(list(rows.values()), "md"))
    assert "| Δ last_n | p | p (Holm) | MDE | test |" in md
    assert "| 0.3 | 0.0351 | 0.0702 | 0.326 | paired t |" in md
    # one comparison: p (Holm) = p, and the column is left out
    two = comparison_rows(write_campaign(three_campaign.parent / "two", done_runs()), last_n=2)
    assert two[1]["p_holm"] == pytest.approx(two[1]["p_value"])
    assert "p (Holm)" not in str(render_comparison(two, "md")) and "Holm" not in str(two[1]["verdict"])


def test_compare_table_fits_80_columns(three_campaign: Path) -> None:
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=True, color_system=None).print(
        render_comparison(comparison_rows(three_campaign, last_n=2), "table"))
    text = buf.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    assert "(Holm)" in text and "MDE" in text and "0.0702" in text


def test_gain_table_raw_and_holm_p(three_campaign: Path) -> None:
    rows = gain_rows(collect_runs(three_campaign))
    md = render_gains_md(rows)
    assert "| Δ gain | p | p (Holm) | MDE |" in md
    assert "| +0.300 | 0.035 | 0.070 | 0.326 |" in md
    assert "p: paired test, raw; p (Holm): Holm-adjusted across the conditions" in md
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(render_gains_rich(rows))
    text = buf.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    header = next(line for line in text.splitlines() if line.startswith("condition "))
    assert header.split()[-3:] == ["p", "p", "Holm"]
    row = next(line for line in text.splitlines() if line.startswith("maxrl+gtpo"))
    assert row.split()[-3:] == ["+0.300", "0.035", "0.070"]
    # one comparison: no Holm column
    two = gain_rows(collect_runs(write_campaign(three_campaign.parent / "g2", done_runs())))
    assert "p (Holm)" not in render_gains_md(two)


def test_gain_console_table_leaves_out_initial_to_fit_80_columns(tmp_path: Path) -> None:
    # With the eval's SEs, p and p Holm need 82 columns: initial ± SE goes, and a line says so.
    for cond, gains in GAINS.items():
        for seed, g in zip((1, 2, 3), gains, strict=True):
            write_gain_run(tmp_path / f"{cond}_s{seed}", cond, seed, g)
    group = render_gains_rich(gain_rows(collect_runs(tmp_path)))
    narrow, wide = io.StringIO(), io.StringIO()
    Console(file=narrow, width=80, color_system=None).print(group)
    Console(file=wide, width=120, color_system=None).print(group)
    text = narrow.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    assert "not shown at 80 columns: initial±SE (summary.md has every column)" in text
    row = next(line for line in text.splitlines() if line.startswith("maxrl+none "))
    assert row.split() == ["maxrl+none", "0.850±0.021", "+0.350", "[0.226,0.474]", "+0.150",
                           "0.035", "0.070"]
    assert "initial±SE" in wide.getvalue() and "not shown" not in wide.getvalue()
