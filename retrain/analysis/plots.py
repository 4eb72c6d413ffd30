"""`retrain analyze plot`: learning curves, one panel per metric and one line per condition.

Each line is the mean over a condition's seeds at every step (runs still in progress add to the
steps they reached), after optional EMA smoothing of each run; the band is the min–max over seeds
or a t-interval of the mean. matplotlib is used through its Agg canvas directly (no pyplot, no
global backend switch) and imported inside the functions, so the CLI stays fast.
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
    from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Yellow comes late because it is faint on white.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
# Line styles cycle too, so that a greyscale print still separates the conditions.
LINE_STYLES = ("-", "--", "-.", ":")
PANEL_SIZE_IN = (5.0, 3.5)
MAX_COLUMNS = 3
SPARSE_POINTS = 30  # curves with at most this many points get markers

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


def palette(style: str) -> tuple[str, ...]:
    # Okabe-Ito's black would vanish on the dark background; white takes its place.
    return tuple("#ffffff" if c == "#000000" else c for c in OKABE_ITO) if style == "dark" else OKABE_ITO


def condition_curve(
    runs: Sequence[RunData], metric: str, *, smooth: float = 0.0, band: str = "minmax", level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over the runs of one condition at every step any run logged.

    band "minmax": range over seeds; "ci": t-interval of the mean (equal to the mean where only
    one run has the step). Each run is EMA-smoothed before averaging.
    """
    series = []
    for run in runs:
        steps, values = run.series(metric)
        if values:
            series.append(dict(zip(steps, ema(values, smooth), strict=True)))
    all_steps = np.asarray(sorted(set().union(*series)) if series else [], dtype=float)
    grid = np.full((all_steps.size, len(series)), np.nan)
    index = {int(s): i for i, s in enumerate(all_steps)}
    for j, curve in enumerate(series):
        for step, value in curve.items():
            grid[index[step], j] = value
    count = np.sum(~np.isnan(grid), axis=1)
    mean = np.nanmean(grid, axis=1) if grid.size else np.zeros(0)
    if band == "minmax":
        low, high = (np.nanmin(grid, axis=1), np.nanmax(grid, axis=1)) if grid.size else (mean, mean)
    elif band == "ci":
        from scipy import stats

        half = np.zeros_like(mean)
        many = count >= 2
        if np.any(many):
            sd = np.nanstd(grid[many], axis=1, ddof=1)
            tq = stats.t.ppf((1.0 + level) / 2.0, count[many] - 1)
            half[many] = tq * sd / np.sqrt(count[many])
        low, high = mean - half, mean + half
    else:
        raise AnalysisError(f"unknown band '{band}'; choose minmax or ci")
    return all_steps, mean, low, high


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

    The figure is PANEL_SIZE_IN per panel, at most MAX_COLUMNS panels per row, at `dpi`.
    """
    if not metrics:
        raise AnalysisError("no metrics to plot")
    if style not in STYLES:
        raise AnalysisError(f"unknown style '{style}'; choose one of: {', '.join(STYLES)}")
    if not 0.0 <= smooth < 1.0:
        raise AnalysisError(f"--smooth must be in [0, 1), got {smooth}")
    for metric in metrics:
        check_metric(list(runs), metric)
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    conditions = list(dict.fromkeys(r.condition for r in runs))
    colours = palette(style)
    ncols = min(len(metrics), MAX_COLUMNS)
    nrows = math.ceil(len(metrics) / ncols)
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
                ax.plot(steps, mean, color=colour, linestyle=LINE_STYLES[k % 4] if style == "paper" else "-",
                        linewidth=1.6, label=f"{cond} (n={seeds})",
                        # markers keep sparse curves (eval steps, a single point) visible
                        marker="o" if steps.size <= SPARSE_POINTS else None, markersize=3)
                ax.fill_between(steps, low, high, color=colour, alpha=0.18, linewidth=0)
            ax.set_title(metric + (f" (EMA {smooth:g})" if smooth else ""))
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, linewidth=0.5)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
            if ax.get_lines():
                ax.legend(fontsize="small")
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
    return fig


def save_figure(fig: Figure, out: Path, fmt: str) -> Path:
    """Write `fig` as PNG or SVG at its own size (no tight bbox, so the pixel size is known)."""
    if fmt not in ("png", "svg"):
        raise AnalysisError(f"unknown plot format '{fmt}'; choose png or svg")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, facecolor=fig.get_facecolor())
    return out
