"""`retrain analyze plot`: learning curves, one panel per metric and one line per condition.

Each line is the mean over a condition's seeds at every step (runs still in progress add to the
steps they reached), after optional EMA smoothing of each run. The band is the min–max over
seeds, a t-interval or a percentile-bootstrap interval of the mean, or ±1 standard error; it is
clipped to the metric's known range (a rate never below 0 or above 1) and named in the legend.
matplotlib is used through its Agg canvas directly (no pyplot, no global backend switch) and
imported inside the functions, so the CLI stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrain.analysis.loading import AnalysisError, RunData, check_metric
from retrain.analysis.stats import ema

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Reordered so that the first five (and six) are far apart: the published order
# puts orange next to vermillion and sky blue next to blue (CIELAB ΔE 33 and 26), which read as
# the same colour at line width. The first six here are at least ΔE 54 apart; yellow, faint on
# white, comes sixth, the two near-twins last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#000000", "#CC79A7", "#F0E442", "#56B4E9", "#E69F00")
# Line styles cycle too, so that a greyscale print still separates the conditions.
LINE_STYLES = ("-", "--", "-.", ":")
PANEL_SIZE_IN = (5.0, 3.5)
MAX_COLUMNS = 3
SPARSE_POINTS = 30  # curves with at most this many points get markers
PLOT_FORMATS = ("png", "svg", "pdf")
BOOTSTRAP_RESAMPLES = 4000  # enough for 95% percentile ends to settle at plot resolution
BOOTSTRAP_SEED = 0  # the same figure every time

# What the legend says about each --band ({level}: the confidence level in percent).
BANDS: dict[str, str] = {
    "minmax": "min–max over seeds",
    "ci": "{level:g}% t-interval of the mean",
    "bootstrap": "{level:g}% bootstrap CI of the mean",
    "se": "±1 standard error of the mean",
}

# Known ranges of the metrics.jsonl fields (retrain.sinks.contract; meanings in docs/logging.md).
# Shares of completions or tokens, accuracies and SEPA's pooling weight lie in [0, 1]; times,
# counts, sizes, norms, variances and the k3 KL estimate are never negative. Fields outside the
# contract get a range from their name's ending; anything else (loss, mean_reward) is unbounded.
UNIT_INTERVAL = frozenset({
    "correct_rate", "running_correct_rate", "max_token_hit_rate", "clip_frac", "sepa_lambda",
    "planning_token_frac", "hicra_changed_frac", "eval_accuracy", "eval_sampled_accuracy",
})
NON_NEGATIVE = frozenset({
    "num_datums", "step_time_s", "batch_size", "group_size", "exec_entropy_mean",
    "exec_entropy_var", "plan_entropy_mean", "plan_entropy_var", "exec_surprisal_mean",
    "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var", "correct_count",
    "total_count", "sample_time_s", "reward_time_s", "advantage_time_s", "train_time_s",
    "tokens_per_s", "grad_norm", "kl", "lr", "skipped_groups", "skipped_groups_total",
    "bp_p_star", "bp_utilization", "bp_throughput", "num_planning_tokens", "eval_mean_length",
    "eval_accuracy_se", "eval_size", "eval_sampled_accuracy_se", "eval_samples", "eval_time_s",
})
UNIT_SUFFIXES = ("_rate", "_frac", "accuracy")
NON_NEGATIVE_SUFFIXES = ("_time_s", "_per_s", "_count", "_length", "_var", "_se")

STYLES: dict[str, Any] = {  # name → matplotlib rcParams
    "paper": {
        "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
        "axes.edgecolor": "#333333", "axes.labelcolor": "#222222", "text.color": "#222222",
        "xtick.color": "#333333", "ytick.color": "#333333", "grid.color": "#dddddd",
        "font.family": "DejaVu Serif", "font.size": 9.0, "legend.frameon": False,
    },
    "dark": {
        "figure.facecolor": "#1b1d23", "axes.facecolor": "#1b1d23", "savefig.facecolor": "#1b1d23",
        "axes.edgecolor": "#8a8f98", "axes.labelcolor": "#d8dee9", "text.color": "#d8dee9",
        "xtick.color": "#aab1bd", "ytick.color": "#aab1bd", "grid.color": "#3b4252",
        "font.family": "DejaVu Sans", "font.size": 9.0, "legend.frameon": False,
    },
}


def band_alpha(n_conditions: int) -> float:
    """Opacity of one band such that the bands of all conditions stacked on each other stay at
    most half opaque (five overlapping bands at a fixed 0.18 made a grey mass over the lines)."""
    return min(0.2, 1.0 - 0.5 ** (1.0 / max(1, n_conditions)))


def palette(style: str) -> tuple[str, ...]:
    # Okabe-Ito's black would vanish on the dark background; white takes its place.
    return tuple("#ffffff" if c == "#000000" else c for c in OKABE_ITO) if style == "dark" else OKABE_ITO


def metric_range(metric: str) -> tuple[float, float]:
    """(low, high) that no value of `metric` can leave; (-inf, inf) when nothing is known."""
    if metric in UNIT_INTERVAL:
        return 0.0, 1.0
    if metric in NON_NEGATIVE:
        return 0.0, math.inf
    if metric.endswith(UNIT_SUFFIXES):
        return 0.0, 1.0
    if metric.endswith(NON_NEGATIVE_SUFFIXES):
        return 0.0, math.inf
    return -math.inf, math.inf


def band_description(band: str, level: float = 0.95) -> str:
    if band not in BANDS:
        raise AnalysisError(f"unknown band '{band}'; choose one of: {', '.join(BANDS)}")
    return BANDS[band].format(level=100.0 * level)


def _bootstrap_band(grid: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean at each step (row) with two or more runs.

    Rows are grouped by which runs they hold, so that scipy resamples each group of steps in one
    vectorised call. NaN where a row has fewer than two runs.
    """
    from scipy import stats

    low = np.full(grid.shape[0], np.nan)
    high = np.full(grid.shape[0], np.nan)
    present = ~np.isnan(grid)
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(present):
        if row.sum() >= 2:
            groups.setdefault(row.tobytes(), []).append(i)
    for rows in groups.values():
        data = grid[np.ix_(rows, present[rows[0]])]  # [steps, runs]
        # percentile, not BCa: BCa needs a jackknife that is undefined for 2 seeds or equal values
        result = stats.bootstrap(
            (data,), np.mean, axis=1, vectorized=True, method="percentile",
            confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES, batch=500,
            rng=np.random.default_rng(BOOTSTRAP_SEED))
        low[rows], high[rows] = result.confidence_interval.low, result.confidence_interval.high
    return low, high


def condition_curve(
    runs: Sequence[RunData], metric: str, *, smooth: float = 0.0, band: str = "minmax", level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over the runs of one condition at every step any run logged.

    band (see BANDS) "minmax": range over seeds; "ci": t-interval of the mean; "bootstrap":
    percentile bootstrap of the mean (scipy.stats.bootstrap); "se": mean ± s/√n. Where only
    one run has the step the band is the mean itself. Each run is EMA-smoothed before
    averaging, and the band is clipped to metric_range(metric).
    """
    band_description(band)
    series = []
    for run in runs:
        steps, values = run.series(metric)
        if values:
            series.append(dict(zip(steps, ema(values, smooth), strict=True)))
    all_steps = np.asarray(sorted(set().union(*series)) if series else [], dtype=float)
    grid = np.full((all_steps.size, len(series)), np.nan)  # [steps, runs]
    index = {int(s): i for i, s in enumerate(all_steps)}
    for j, curve in enumerate(series):
        for step, value in curve.items():
            grid[index[step], j] = value
    if grid.size == 0:
        empty = np.zeros(0)
        return all_steps, empty, empty, empty
    count = np.sum(~np.isnan(grid), axis=1)
    mean = np.nanmean(grid, axis=1)
    many = count >= 2
    low, high = mean.copy(), mean.copy()
    if band == "minmax":
        low, high = np.nanmin(grid, axis=1), np.nanmax(grid, axis=1)
    elif band == "bootstrap":
        boot_low, boot_high = _bootstrap_band(grid, level)
        low[many], high[many] = boot_low[many], boot_high[many]
    elif np.any(many):
        se = np.nanstd(grid[many], axis=1, ddof=1) / np.sqrt(count[many])
        if band == "ci":
            from scipy import stats

            se = stats.t.ppf((1.0 + level) / 2.0, count[many] - 1) * se
        low[many], high[many] = mean[many] - se, mean[many] + se
    lo, hi = metric_range(metric)
    return all_steps, mean, np.clip(low, lo, hi), np.clip(high, lo, hi)


def _seed_counts(runs: Sequence[RunData], metrics: Sequence[str]) -> dict[str, int]:
    """Runs per condition that logged any of `metrics` (conditions without data left out)."""
    counts: dict[str, int] = {}
    for run in runs:
        if any(run.series(m)[1] for m in metrics):
            counts[run.condition] = counts.get(run.condition, 0) + 1
    return counts


def _legend_title(counts: dict[str, int], *, band: str, smooth: float, sep: str = "; ") -> str:
    seeds = set(counts.values())
    n = seeds.pop() if len(seeds) == 1 else None
    over = "seeds (n per condition)" if n is None else f"{n} seed{'s' if n != 1 else ''}"
    ema_note = f" (EMA {smooth:g} per run)" if smooth else ""
    return f"line: mean over {over}{ema_note}{sep}band: {band_description(band)}"


def _style_panel(ax: Axes, metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_metrics(
    runs: Sequence[RunData],
    metrics: Sequence[str],
    *,
    smooth: float = 0.0,
    style: str = "paper",
    band: str = "minmax",
    dpi: int = 100,
    title: str | None = None,
) -> Figure:
    """A figure with one panel per metric and one line (plus band) per condition with data.

    The figure is PANEL_SIZE_IN per panel, at most MAX_COLUMNS panels per row, at `dpi`; one
    legend for the whole figure sits below the panels and says what the line and band are.
    """
    if not metrics:
        raise AnalysisError("no metrics to plot")
    if style not in STYLES:
        raise AnalysisError(f"unknown style '{style}'; choose one of: {', '.join(STYLES)}")
    if not 0.0 <= smooth < 1.0:
        raise AnalysisError(f"--smooth must be in [0, 1), got {smooth}")
    band_description(band)
    for metric in metrics:
        check_metric(list(runs), metric)
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conditions = list(dict.fromkeys(r.condition for r in runs))
    colours = palette(style)
    ncols = min(len(metrics), MAX_COLUMNS)
    nrows = math.ceil(len(metrics) / ncols)
    handles: dict[str, Any] = {}  # condition → its line in the first panel that has one
    with matplotlib.rc_context(STYLES[style]):
        fig = Figure(figsize=(PANEL_SIZE_IN[0] * ncols, PANEL_SIZE_IN[1] * nrows), dpi=dpi,
                     layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            for k, cond in enumerate(conditions):
                cond_runs = [r for r in runs if r.condition == cond]
                steps, mean, low, high = condition_curve(cond_runs, metric, smooth=smooth, band=band)
                if steps.size == 0:
                    continue
                colour = colours[k % len(colours)]
                seeds = sum(1 for r in cond_runs if r.series(metric)[1])
                (line,) = ax.plot(
                    steps, mean, color=colour, linestyle=LINE_STYLES[k % 4] if style == "paper" else "-",
                    linewidth=1.6, label=f"{cond} (n={seeds})",
                    # markers keep sparse curves (eval steps, a single point) visible
                    marker="o" if steps.size <= SPARSE_POINTS else None, markersize=3)
                ax.fill_between(steps, low, high, color=colour, alpha=band_alpha(len(conditions)),
                                linewidth=0)
                handles.setdefault(cond, line)
            _style_panel(ax, metric)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        if handles:
            ordered = [handles[c] for c in conditions if c in handles]
            # below the panels: a legend inside a panel hides the curves it explains
            fig.legend(handles=ordered, loc="outside lower center", ncols=min(len(ordered), 2 * ncols + 1),
                       fontsize="small", title_fontsize="small",
                       title=_legend_title(_seed_counts(runs, metrics), band=band, smooth=smooth,
                                           sep="\n" if ncols == 1 else "; "))
    return fig


def plot_format(out: Path | None, fmt: str | None) -> str:
    """The file format of `--out` / `--format`: the extension of `out` decides, `fmt` must agree.

    Without `out`, `fmt` or png. An unknown extension or a disagreement is an AnalysisError, so
    that nothing is written under a name that lies about its contents.
    """
    allowed = ", ".join(f".{f}" for f in PLOT_FORMATS[:-1]) + f" or .{PLOT_FORMATS[-1]}"
    if fmt is not None and fmt not in PLOT_FORMATS:
        raise AnalysisError(f"unknown plot format '{fmt}'; choose one of: {', '.join(PLOT_FORMATS)}")
    if out is None:
        return fmt or "png"
    suffix = Path(out).suffix.lstrip(".").lower()
    if suffix not in PLOT_FORMATS:
        raise AnalysisError(f"--out {out}: the file name must end in {allowed} "
                            "(the extension sets the format)")
    if fmt is not None and fmt != suffix:
        raise AnalysisError(f"--format {fmt} does not match --out {out}; give one or make them agree")
    return suffix


def save_figure(fig: Figure, out: Path, fmt: str) -> Path:
    """Write `fig` as PNG, SVG or PDF at its own size (no tight bbox, so the pixel size is known)."""
    if fmt not in PLOT_FORMATS:
        raise AnalysisError(f"unknown plot format '{fmt}'; choose one of: {', '.join(PLOT_FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, facecolor=fig.get_facecolor())
    return out
