"""comparison_rows on synthetic campaigns with known numbers.

Finals per seed (42, 101, 202): grpo+none 0.2, 0.3, 0.4; maxrl+gtpo 0.5, 0.5, 0.8. Each curve is
f-0.15, f-0.1, f-0.05, f at steps 1..4, so per run: last-2 mean f-0.025, AUC/step f-0.075, and
final eval accuracy f+0.1 (summary.json).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as sps

from retrain.analysis import AnalysisError, comparison_rows, render_comparison

from .fakes import done_runs, write_campaign

HALF_BASE = 4.302652729749464 * 0.1 / math.sqrt(3)  # t_{.975,2} * s / sqrt(n), s = 0.1
HALF_GTPO = 4.302652729749464 * math.sqrt(0.03) / math.sqrt(3)  # s = sqrt(0.06 / 2)


def _by_condition(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["condition"]): r for r in rows}


def test_means_intervals_and_paired_test(done_campaign: Path) -> None:
    rows = _by_condition(comparison_rows(done_campaign, last_n=2, stat="final"))
    base, gtpo = rows["grpo+none"], rows["maxrl+gtpo"]
    assert base["n"] == 3 and base["seeds"] == [42, 101, 202]
    assert base["final_mean"] == pytest.approx(0.3)
    assert (base["final_low"], base["final_high"]) == pytest.approx((0.3 - HALF_BASE, 0.3 + HALF_BASE))
    assert gtpo["final_mean"] == pytest.approx(0.6)
    assert gtpo["final_high"] == pytest.approx(0.6 + HALF_GTPO)  # 0.6 + 0.430265
    assert base["last_n_mean"] == pytest.approx(0.275) and gtpo["last_n_mean"] == pytest.approx(0.575)
    assert base["auc_mean"] == pytest.approx(0.225) and gtpo["auc_mean"] == pytest.approx(0.525)
    assert gtpo["eval_accuracy_mean"] == pytest.approx(0.7)
    # threshold defaults to 0.5 (a rate): gtpo curves reach it at steps 4, 4, 1 → mean 3;
    # the baseline never does.
    assert gtpo["threshold"] == 0.5 and gtpo["steps_to_threshold_mean"] == pytest.approx(3.0)
    assert base["threshold_reached"] == 0 and base["steps_to_threshold_mean"] is None
    # paired t over diffs 0.3, 0.2, 0.4 → p = 0.035099 (worked in test_stats.py)
    assert base["verdict"] == "baseline" and base["p_value"] is None
    assert gtpo["diff"] == pytest.approx(0.3) and gtpo["test"] == "paired t" and gtpo["n_pairs"] == 3
    assert gtpo["p_value"] == pytest.approx(
        sps.ttest_rel([0.5, 0.5, 0.8], [0.2, 0.3, 0.4]).pvalue)
    assert gtpo["p_value"] == pytest.approx(0.035099, abs=1e-6)
    verdict = str(gtpo["verdict"])
    assert verdict.startswith("better than grpo+none") and "paired t" in verdict
    assert "only 3 seeds" in verdict


def test_every_statistic_is_testable(done_campaign: Path) -> None:
    # The diffs are 0.3, 0.2, 0.4 for final, last_n, auc and eval accuracy alike.
    for stat in ("final", "best", "last_n", "auc", "eval_accuracy"):
        gtpo = _by_condition(comparison_rows(done_campaign, stat=stat))["maxrl+gtpo"]
        assert gtpo["p_value"] == pytest.approx(0.035099, abs=1e-6), stat
    base_fast = _by_condition(comparison_rows(done_campaign, stat="steps_to_threshold",
                                              threshold=0.1))
    # threshold 0.1: baseline reaches it at steps 2, 1, 1; gtpo at 1, 1, 1 → fewer steps is better
    assert base_fast["maxrl+gtpo"]["diff"] == pytest.approx(-1 / 3)


def test_wilcoxon_and_bootstrap_options(done_campaign: Path) -> None:
    rows = _by_condition(comparison_rows(done_campaign, test="wilcoxon", ci="bootstrap"))
    gtpo = rows["maxrl+gtpo"]
    assert gtpo["test"] == "Wilcoxon signed-rank" and gtpo["p_value"] == pytest.approx(0.25)
    assert "Wilcoxon" in str(gtpo["verdict"]) and gtpo["ci"] == "bootstrap"
    # per-run last-10 means (all 4 steps) are 0.425, 0.425, 0.725: resampled means stay inside
    low, high = gtpo["last_n_low"], gtpo["last_n_high"]
    assert isinstance(low, float) and isinstance(high, float)
    assert 0.425 - 1e-9 <= low < high <= 0.725 + 1e-9


def test_baseline_choice_and_errors(done_campaign: Path) -> None:
    rows = _by_condition(comparison_rows(done_campaign, baseline="maxrl+gtpo"))
    assert rows["grpo+none"]["diff"] == pytest.approx(-0.3)
    assert str(rows["grpo+none"]["verdict"]).startswith("worse than maxrl+gtpo")
    with pytest.raises(AnalysisError, match="unknown baseline 'nope'; conditions: grpo\\+none"):
        comparison_rows(done_campaign, baseline="nope")
    with pytest.raises(AnalysisError, match="unknown metric 'acc'; available:"):
        comparison_rows(done_campaign, metric="acc")
    with pytest.raises(AnalysisError, match="--last"):
        comparison_rows(done_campaign, last_n=0)


def test_lower_is_better_metric(done_campaign: Path) -> None:
    rows = _by_condition(comparison_rows(done_campaign, metric="loss"))
    # loss = 1/step in every run: best is the minimum 0.25; all values lie in [0, 1], so the
    # default threshold is 0.5, reached (loss <= 0.5) at step 2
    assert rows["grpo+none"]["best_mean"] == pytest.approx(0.25)
    assert rows["grpo+none"]["threshold"] == 0.5
    assert rows["grpo+none"]["steps_to_threshold_mean"] == pytest.approx(2.0)
    big = _by_condition(comparison_rows(done_campaign, metric="step_time_s"))
    assert big["grpo+none"]["threshold"] is None  # 2.0 s is not a rate: no default threshold
    assert "test undefined" in str(rows["maxrl+gtpo"]["verdict"])  # identical on every seed


def test_running_campaign_is_partial(running_campaign: Path) -> None:
    rows = _by_condition(comparison_rows(running_campaign, stat="final"))
    gtpo = rows["maxrl+gtpo"]
    # s42 logged 2 steps (0.35, 0.4), s101 failed after 3 (..., 0.45); s202 has not started.
    assert gtpo["n"] == 2 and gtpo["seeds"] == [42, 101] and gtpo["runs_total"] == 3
    assert gtpo["final_mean"] == pytest.approx((0.4 + 0.45) / 2)
    assert gtpo["n_pairs"] == 2 and "partial" in str(gtpo["verdict"])


def test_tree_of_two_campaigns_pools_by_condition(tmp_path: Path) -> None:
    # Same run names in both campaigns (seeds 42, 101, 202 again): 6 runs per condition, and
    # each seed's pair is the mean of its two runs, so the paired diffs stay 0.3, 0.2, 0.4.
    write_campaign(tmp_path / "a", done_runs(), name="a")
    write_campaign(tmp_path / "b", done_runs(), name="b")
    rows = _by_condition(comparison_rows(tmp_path, stat="final"))
    gtpo = rows["maxrl+gtpo"]
    assert gtpo["n"] == 6 and gtpo["final_mean"] == pytest.approx(0.6)
    assert gtpo["n_pairs"] == 3 and gtpo["p_value"] == pytest.approx(0.035099, abs=1e-6)


def test_renderings(done_campaign: Path) -> None:
    rows = comparison_rows(done_campaign)
    md = render_comparison(rows, "md")
    assert isinstance(md, str) and md.count("\n") == 4 and "| maxrl+gtpo | 3 |" in md
    assert "paired t" in md
    csv_text = render_comparison(rows, "csv")
    assert isinstance(csv_text, str) and csv_text.splitlines()[0].startswith("condition,metric,n,seeds")
