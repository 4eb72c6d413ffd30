"""Statistics with hand-worked numbers (arithmetic in the comments) and scipy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from retrain.analysis.stats import (
    compare_to_baseline,
    ema,
    holm,
    mean_interval,
    min_detectable_effect,
    run_stats,
    verdict,
)

T_975_DF2 = 4.302652729749464  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def test_t_interval_by_hand() -> None:
    # values 0.2, 0.3, 0.4: mean 0.3; s = sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    # half width = t_{.975,2} * s / sqrt(3) = 4.302653 * 0.1 / 1.732051 = 0.248414
    iv = mean_interval([0.2, 0.3, 0.4])
    assert iv.n == 3 and iv.mean == pytest.approx(0.3)
    assert iv.std == pytest.approx(0.1)
    assert iv.low == pytest.approx(0.3 - 0.248414, abs=1e-6)
    assert iv.high == pytest.approx(0.3 + 0.248414, abs=1e-6)
    assert iv.high - iv.mean == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))


def test_t_interval_matches_scipy_and_level() -> None:
    values = [0.11, 0.52, 0.33, 0.48, 0.27]
    low, high = sps.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    iv = mean_interval(values, level=0.9)
    assert (iv.low, iv.high) == pytest.approx((low, high))


def test_interval_edge_cases() -> None:
    assert mean_interval([]).mean is None
    one = mean_interval([0.7])
    assert one.n == 1 and one.mean == 0.7 and one.low is None and one.high is None
    const = mean_interval([0.5, 0.5, 0.5])
    assert const.low == const.high == pytest.approx(0.5)


def test_bootstrap_interval_is_reproducible_and_inside_the_data() -> None:
    values = [0.2, 0.3, 0.4, 0.9]
    a = mean_interval(values, method="bootstrap")
    b = mean_interval(values, method="bootstrap")
    assert (a.low, a.high) == (b.low, b.high)
    # Means of resamples cannot leave [min, max]; the t interval is wider for n=4.
    assert 0.2 <= a.low < a.mean < a.high <= 0.9
    t = mean_interval(values)
    assert t.high - t.low > a.high - a.low


def test_paired_t_by_hand() -> None:
    # diffs 0.3, 0.2, 0.4: mean 0.3, s_d = 0.1, t = 0.3 / (0.1 / sqrt 3) = 5.196152, df 2.
    # Student t with 2 df has cdf F(t) = 1/2 + t / (2 sqrt(2 + t^2)):
    # F = 0.5 + 5.196152 / (2 * sqrt 29) = 0.5 + 0.482450 = 0.982450, p = 2 (1 - F) = 0.035099
    base = {42: 0.2, 101: 0.3, 202: 0.4}
    cond = {42: 0.5, 101: 0.5, 202: 0.8}
    res = compare_to_baseline(cond, base)
    assert res.name == "paired t" and res.n == 3
    assert res.diff == pytest.approx(0.3)
    t = 0.3 / (0.1 / math.sqrt(3))
    assert res.p_value == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))))
    assert res.p_value == pytest.approx(0.035099, abs=1e-6)


def test_wilcoxon_exact_small_n() -> None:
    # 3 positive diffs: of the 2^3 equally likely sign patterns only "all +" and "all -" are
    # as extreme, so the exact two-sided p = 2 / 8 = 0.25.
    res = compare_to_baseline({1: 0.5, 2: 0.5, 3: 0.8}, {1: 0.2, 2: 0.3, 3: 0.4}, test="wilcoxon")
    assert res.name == "Wilcoxon signed-rank"
    assert res.p_value == pytest.approx(0.25)
    text = verdict("b", "a", res, metric="m", higher=True)
    assert "no clear difference" in text and "cannot reach p<0.05" in text


def test_only_matching_seeds_are_paired() -> None:
    res = compare_to_baseline({1: 1.0, 2: 2.0, 3: 9.0}, {1: 0.5, 2: 1.0, 4: 7.0})
    assert res.n == 2
    assert res.p_value == pytest.approx(sps.ttest_rel([1.0, 2.0], [0.5, 1.0]).pvalue)


def test_welch_fallback_when_seeds_differ() -> None:
    res = compare_to_baseline({1: 0.5, 2: 0.6}, {3: 0.2, 4: 0.3, 5: 0.25})
    assert res.name == "Welch t (unpaired)"
    expected = sps.ttest_ind([0.5, 0.6], [0.2, 0.3, 0.25], equal_var=False).pvalue
    assert res.p_value == pytest.approx(expected)
    assert "unpaired" in verdict("c", "b", res, metric="m", higher=True)


def test_degenerate_comparisons() -> None:
    same = compare_to_baseline({1: 0.5, 2: 0.6}, {1: 0.4, 2: 0.5})  # identical diff 0.1
    assert same.p_value is None and same.diff == pytest.approx(0.1)
    assert "test undefined" in verdict("c", "b", same, metric="m", higher=True)
    single = compare_to_baseline({1: 0.5}, {1: 0.4})
    assert single.p_value is None and "single seed" in verdict("c", "b", single, metric="m", higher=True)
    empty = compare_to_baseline({}, {1: 0.4})
    assert empty.diff is None and verdict("c", "b", empty, metric="m", higher=True).startswith("no comparison")


def test_verdict_direction_respects_lower_is_better() -> None:
    res = compare_to_baseline({i: 1.0 - 0.1 * i for i in range(6)}, {i: 2.0 for i in range(6)})
    assert res.p_value is not None and res.p_value < 0.05
    assert verdict("c", "b", res, metric="loss", higher=False).startswith("better than b")
    assert verdict("c", "b", res, metric="reward", higher=True).startswith("worse than b")
    assert "caveat" not in verdict("c", "b", res, metric="loss", higher=False)  # 6 seeds


def test_run_stats_by_hand() -> None:
    # steps 1..4, values 0.35, 0.4, 0.45, 0.5
    # final 0.5, best 0.5, last-2 mean (0.45 + 0.5) / 2 = 0.475,
    # trapezoid area = (0.35+0.4)/2 + (0.4+0.45)/2 + (0.45+0.5)/2 = 1.275 over a span of 3 → 0.425,
    # first step >= 0.4 is step 2.
    s = run_stats([1, 2, 3, 4], [0.35, 0.4, 0.45, 0.5], last_n=2, threshold=0.4, higher=True)
    assert s == pytest.approx({"final": 0.5, "best": 0.5, "last_n": 0.475, "auc": 0.425,
                               "steps_to_threshold": 2.0})
    low = run_stats([1, 2, 3], [3.0, 1.0, 2.0], last_n=10, threshold=1.5, higher=False)
    assert low["best"] == 1.0 and low["steps_to_threshold"] == 2.0 and low["last_n"] == 2.0
    assert run_stats([5], [0.3], last_n=3, threshold=0.9, higher=True)["auc"] == 0.3
    assert run_stats([], [], last_n=3, threshold=None, higher=True)["final"] is None


def test_ema_is_debiased() -> None:
    # w = 0.5: s1 = 0.5*1 = 0.5 → /0.5 = 1; s2 = 0.25 + 0.5*3 = 1.75 → /0.75 = 2.333...
    assert ema([1.0, 3.0], 0.5) == pytest.approx([1.0, 7.0 / 3.0])
    assert ema([1.0, 2.0], 0.0) == [1.0, 2.0]
    assert ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_holm_by_hand() -> None:
    # sorted p: 0.01, 0.03, 0.04 (m = 3) → 3·0.01 = 0.03, max(0.03, 2·0.03) = 0.06,
    # max(0.06, 1·0.04) = 0.06; None is not a test and stays None
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # 2·0.6 capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_min_detectable_effect_of_a_paired_t_test() -> None:
    # Effect size d (in SDs of the differences) with 80% power, two-sided alpha 0.05; the same
    # numbers as statsmodels' TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8).
    assert min_detectable_effect(3, 1.0) == pytest.approx(3.264043552819638, rel=1e-6)
    assert min_detectable_effect(10, 1.0) == pytest.approx(0.99600191, rel=1e-6)
    assert min_detectable_effect(3, 0.05) == pytest.approx(0.05 * 3.264043552819638, rel=1e-6)
    # at the MDE the power is 0.8: P(|T| > t_crit) for T ~ nct(2, d·sqrt 3)
    d = min_detectable_effect(3, 1.0)
    crit = sps.t.ppf(0.975, 2)
    assert sps.nct.sf(crit, 2, d * math.sqrt(3)) + sps.nct.cdf(-crit, 2, d * math.sqrt(3)) == (
        pytest.approx(0.8))
    assert min_detectable_effect(1, 1.0) is None and min_detectable_effect(3, 0.0) is None
    assert min_detectable_effect(3, None) is None
