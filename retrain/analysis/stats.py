"""Pure statistics behind `retrain analyze compare`: per-run curve summaries, intervals over
seeds, paired tests against a baseline, and the plain-language verdict.

Also the power of the paired t-test (minimum detectable effect, seeds needed) that the MDE
columns and `retrain analyze power` report.

Functional core: plain lists in, plain dataclasses out; no files. scipy and statsmodels are
imported inside the functions that need them so that importing this module stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Metrics where a smaller value is the better one; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset({"loss", "reported_loss", "step_time_s", "max_token_hit_rate"})
RUN_STATS = ("final", "best", "last_n", "auc", "steps_to_threshold")
MAX_SEEDS = 10**9  # past this, `seeds_needed` reports the effect as out of reach (None)


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a two-sided interval; low/high are None when n < 2."""

    n: int
    mean: float | None
    low: float | None
    high: float | None
    std: float | None


@dataclass(frozen=True)
class TestResult:
    """A comparison of one condition against the baseline over seeds."""

    name: str  # "paired t", "Wilcoxon signed-rank", "Welch t (unpaired)" or "none"
    n: int  # pairs (paired tests) or the smaller group size (Welch)
    diff: float | None  # mean difference, condition minus baseline
    p_value: float | None
    note: str = ""


def run_stats(
    steps: list[int], values: list[float], *, last_n: int, threshold: float | None, higher: bool
) -> dict[str, float | None]:
    """Summaries of one run's curve.

    final: last value; best: max (min when lower is better); last_n: mean of the last `last_n`
    values; auc: trapezoidal area under the curve divided by the step span, i.e. the curve's
    average height (so runs of different length compare); steps_to_threshold: first step whose
    value reaches `threshold` (None if never reached or no threshold).
    """
    if not values:
        return dict.fromkeys(RUN_STATS)
    arr = np.asarray(values, dtype=float)
    xs = np.asarray(steps, dtype=float)
    span = float(xs[-1] - xs[0])
    area = float(np.sum(np.diff(xs) * (arr[1:] + arr[:-1]) / 2.0))
    auc = area / span if span > 0 else float(arr[0])
    reached: float | None = None
    if threshold is not None:
        hits = np.nonzero(arr >= threshold if higher else arr <= threshold)[0]
        reached = float(steps[hits[0]]) if hits.size else None
    return {
        "final": float(arr[-1]),
        "best": float(arr.max() if higher else arr.min()),
        "last_n": float(arr[-max(1, last_n):].mean()),
        "auc": auc,
        "steps_to_threshold": reached,
    }


def mean_interval(
    values: list[float], *, method: str = "t", level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> Interval:
    """Mean over seeds and its `level` interval: Student t (default) or percentile bootstrap.

    t: mean ± t_{(1+level)/2, n-1} · s/√n with s the sample standard deviation (ddof=1).
    bootstrap: percentile interval of `n_boot` resampled means (scipy.stats.bootstrap, fixed
    `seed`, so the table is reproducible); with few seeds it is narrower than t and over-confident.
    """
    clean = [v for v in values if v is not None and math.isfinite(v)]
    n = len(clean)
    if n == 0:
        return Interval(0, None, None, None, None)
    arr = np.asarray(clean, dtype=float)
    mean = float(arr.mean())
    if n < 2:
        return Interval(1, mean, None, None, None)
    std = float(arr.std(ddof=1))
    from scipy import stats

    if method == "bootstrap":
        if std == 0.0:  # every resample has the same mean (scipy calls such data degenerate)
            return Interval(n, mean, mean, mean, std)
        res = stats.bootstrap((arr,), np.mean, n_resamples=n_boot, confidence_level=level,
                              method="percentile", rng=np.random.default_rng(seed))
        ci = res.confidence_interval
        return Interval(n, mean, float(ci.low), float(ci.high), std)
    if method != "t":
        raise ValueError(f"unknown interval method {method!r}")

    half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, mean - half, mean + half, std)


def compare_to_baseline(
    cond: dict[int, float], base: dict[int, float], *, test: str = "t"
) -> TestResult:
    """Test `cond` against `base`, each a {seed: value} map.

    Seeds present in both give pairs; with at least two pairs the test is paired (`test`="t":
    paired t on the differences; "wilcoxon": Wilcoxon signed-rank, exact for small n). Without
    two pairs it falls back to Welch's unpaired t over all values, and says so.
    """
    common = sorted(set(cond) & set(base))
    if len(common) >= 2:
        diffs = np.asarray([cond[s] - base[s] for s in common], dtype=float)
        diff = float(diffs.mean())
        if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
            # Zero variance (up to float rounding: 0.3345 - 0.2345 != 0.4345 - 0.3345): t is
            # undefined and every Wilcoxon rank ties; report no p-value.
            return TestResult(_test_name(test), len(common), diff, None,
                              "identical difference on every seed; test undefined")
        from scipy import stats

        if test == "wilcoxon":
            p = float(stats.wilcoxon(diffs).pvalue)
        elif test == "t":
            p = float(stats.ttest_rel([cond[s] for s in common], [base[s] for s in common]).pvalue)
        else:
            raise ValueError(f"unknown test {test!r}")
        return TestResult(_test_name(test), len(common), diff, p)
    a = [v for v in cond.values() if math.isfinite(v)]
    b = [v for v in base.values() if math.isfinite(v)]
    if not a or not b:
        return TestResult("none", 0, None, None, "no values to compare")
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return TestResult("none", min(len(a), len(b)), diff, None, "need at least 2 seeds per side")
    from scipy import stats

    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    note = "seeds do not match; unpaired test"
    return TestResult("Welch t (unpaired)", min(len(a), len(b)), diff, p if math.isfinite(p) else None, note)


def _test_name(test: str) -> str:
    return {"t": "paired t", "wilcoxon": "Wilcoxon signed-rank"}.get(test, test)


def verdict(
    condition: str, baseline: str, result: TestResult, *, metric: str, higher: bool,
    alpha: float = 0.05, note: str = ""
) -> str:
    """One sentence a reader can act on, with the caveat that few seeds deserve; `note` (e.g. the
    Holm-adjusted p) goes between the test and the caveat."""
    if result.diff is None:
        return f"no comparison with {baseline}: {result.note}"
    better = (result.diff > 0) == higher and result.diff != 0
    direction = "better than" if better else "worse than"
    size = f"{signed_diff(result.diff)} {metric}"
    if result.p_value is None:
        text = f"{size} vs {baseline}; {result.note or 'no test possible'}"
    elif result.p_value < alpha:
        text = f"{direction} {baseline} ({size}, {result.name} p={result.p_value:.3g}, n={result.n})"
    else:
        text = (f"no clear difference from {baseline} ({size}, {result.name} "
                f"p={result.p_value:.3g}, n={result.n})")
    return text + note + _caveat(result)


def signed_diff(value: float) -> str:
    """A difference as the tables print it: 3 decimals (+0.037), or 3 significant digits when
    that would hide it or it is large (+4.2e-05, +1.23e+03)."""
    if value != 0 and (abs(value) < 0.0005 or abs(value) >= 1000):
        return f"{value:+.3g}"
    return f"{value:+.3f}"


def _caveat(result: TestResult) -> str:
    if result.n < 2:
        return "; a single seed cannot separate the effect from seed noise"
    if result.name.startswith("Wilcoxon") and result.n < 6:
        # The smallest two-sided exact p-value is 2/2^n, which is >= 0.0625 for n <= 5.
        return f"; caveat: with {result.n} pairs Wilcoxon cannot reach p<0.05, use more seeds"
    if result.n < 5:
        return f"; caveat: only {result.n} seeds, treat as a hint and add seeds before concluding"
    return ""


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values tested together (None stays None, not counted).

    With the m real p-values sorted, p_(1) <= ... <= p_(m): adj_(i) = max over j <= i of
    min(1, (m - j + 1) · p_(j)). It controls the family-wise error at alpha under any dependence.
    statsmodels' `multipletests(method="holm")` computes it (scipy has no Holm adjustment: its
    `false_discovery_control` is BH/BY); the Nones are taken out before and put back after.
    """
    real = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not real:
        return out
    from statsmodels.stats.multitest import multipletests

    adjusted = multipletests([p_values[i] for i in real], method="holm")[1]
    for i, p in zip(real, adjusted, strict=True):
        out[i] = float(p)
    return out


def paired_differences(cond: dict[int, float], base: dict[int, float]) -> list[float]:
    """cond[s] - base[s] for every seed s of both {seed: value} maps, in seed order."""
    return [cond[s] - base[s] for s in sorted(set(cond) & set(base))]


def sample_sd(values: list[float]) -> float | None:
    """Sample standard deviation (ddof = 1); None below 2 values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ---- power of the paired t-test --------------------------------------------------------------
# The power formula is statsmodels' (`statsmodels.stats.power.ttest_power`, the one TTestPower
# uses); the root finding is done here, because `TTestPower.solve_power` (statsmodels 0.15)
# returns wrong answers, without a warning, at the edges `analyze power` meets (few pairs, α/m):
# at n = 3 and α = 0.025 an effect size of 4.523 SD whose power is 0.786, not 0.8 (4.625 here);
# nobs = 2.0 for d = 10, whose power at n = 2 is 0.73. Its two-sided power is also NaN where the
# far tail underflows; that tail is 0 here.

def paired_t_power(effect_size: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test (a one-sample t on the n differences) when the true
    mean difference is `effect_size` standard deviations of the differences: P(|T| > t_crit)
    for T ~ noncentral t(n - 1, d·√n), t_crit = t_{1-α/2, n-1}."""
    from statsmodels.stats.power import ttest_power

    d = abs(effect_size)
    upper = float(ttest_power(d, nobs=n, alpha=alpha / 2.0, alternative="larger"))
    lower = float(ttest_power(d, nobs=n, alpha=alpha / 2.0, alternative="smaller"))
    if not math.isfinite(upper):  # only at absurd d·√n, where the test always rejects
        from scipy import stats as sps

        upper = float(d * math.sqrt(n) > sps.t.isf(alpha / 2.0, n - 1))
    return upper + (lower if math.isfinite(lower) else 0.0)


def detectable_effect_size(n: int, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest d (in SDs of the differences) that the test over `n` pairs finds with
    probability `power`; None below 2 pairs (no SD, no test)."""
    if n < 2:
        return None
    from scipy import optimize

    def shortfall(d: float) -> float:
        return paired_t_power(d, n, alpha=alpha) - power

    high = 1.0
    while shortfall(high) < 0:  # ~11.5 SDs at n = 2 (α 0.05, power 0.8), ~1 at n = 10
        high *= 2.0
        if high > 1e9:
            return None
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12))


def seeds_needed(effect_size: float | None, *, alpha: float = 0.05,
                 power: float = 0.8) -> int | None:
    """The smallest number of pairs n >= 2 whose test finds a true effect of `effect_size` SDs
    with probability `power`. None when it is 0 or unknown (no number of seeds does it) or more
    than MAX_SEEDS. The power grows with n, so this doubles and then bisects."""
    if effect_size is None or not math.isfinite(effect_size) or effect_size == 0:
        return None
    if paired_t_power(effect_size, 2, alpha=alpha) >= power:
        return 2
    low, high = 2, 4  # power(low) < target <= power(high) once the loop ends
    while paired_t_power(effect_size, high, alpha=alpha) < power:
        low, high = high, 2 * high
        if low > MAX_SEEDS:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        if paired_t_power(effect_size, mid, alpha=alpha) >= power:
            high = mid
        else:
            low = mid
    return high if high <= MAX_SEEDS else None


def min_detectable_effect(n: int, sd: float | None, *, alpha: float = 0.05,
                          power: float = 0.8) -> float | None:
    """The smallest true mean difference that a two-sided paired t-test over `n` pairs finds
    (p < alpha) with probability `power`, when the per-pair differences have standard deviation
    `sd`: `detectable_effect_size(n)` (in SDs) times `sd`. None below 2 pairs or without spread.
    """
    if n < 2 or sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    d = detectable_effect_size(n, alpha=alpha, power=power)
    return d * sd if d is not None else None


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with the start-up bias removed (as TensorBoard's smoothing).

    s_t = w·s_{t-1} + (1-w)·x_t, s_0 = 0, reported as s_t / (1 - w^t); weight 0 returns `values`.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out: list[float] = []
    acc = 0.0
    for t, x in enumerate(values, start=1):
        acc = weight * acc + (1.0 - weight) * x
        out.append(acc / (1.0 - weight**t))
    return out
