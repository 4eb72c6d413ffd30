"""Presenting a squeeze result: the Rich table, squeeze.json + squeeze.png, the wandb run.

Edge of the squeeze package. matplotlib (Agg, no pyplot state) and wandb are imported at the
point of use, so importing this module stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from retrain.errors import MissingExtraError
from retrain.io import atomic_write_bytes, atomic_write_json
from retrain.squeeze.analysis import SqueezeResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_JSON = "squeeze.json"
REPORT_PNG = "squeeze.png"
TABLE_COLUMNS = ["rank", "mean_variance", "min_variance", "max_variance"]


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def render_table(result: SqueezeResult) -> Table:
    """Rank | mean % | min % | max %, the recommended row marked."""
    floor = f", worst layer >= {_pct(result.min_layer)}" if result.min_layer is not None else ""
    table = Table(
        title=f"LoRA squeeze: {result.num_layers} layers, source rank {result.source_rank}",
        caption=f"recommended rank {result.recommended_rank} (mean retained variance >= "
        f"{_pct(result.min_variance)}{floor})",
    )
    table.add_column("rank", justify="right")
    table.add_column("mean %", justify="right")
    table.add_column("min %", justify="right")
    table.add_column("max %", justify="right")
    table.add_column("", justify="left")
    rows = zip(result.ranks, result.mean_retention, result.min_retention, result.max_retention, strict=True)
    for k, mean, lo, hi in rows:
        mark = k == result.recommended_rank
        table.add_row(
            str(k), _pct(mean), _pct(lo), _pct(hi), "<- recommended" if mark else "",
            style="bold green" if mark else None,
        )
    return table


def rank_ticks(source_rank: int) -> list[int]:
    """Tick positions on the rank axis: the powers of two up to the source rank, and the source rank."""
    return sorted({2**i for i in range(source_rank.bit_length()) if 2**i <= source_rank} | {source_rank})


def retention_figure(result: SqueezeResult) -> Figure:
    """The retention curve over k = 1..source rank: mean line, min/max band, thresholds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    ks = list(range(1, result.source_rank + 1))
    fig = Figure(figsize=(7.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(ks, result.curve_min, result.curve_max, alpha=0.25, label="min-max over layers")
    ax.plot(ks, result.curve_mean, lw=2, label="mean over layers")
    ax.plot(result.ranks, result.mean_retention, "o", ms=4, color="C0")
    ax.axhline(result.min_variance, ls="--", color="grey", lw=1, label=f"threshold {result.min_variance:g}")
    if result.min_layer is not None:
        ax.axhline(result.min_layer, ls=":", color="grey", lw=1, label=f"layer floor {result.min_layer:g}")
    ax.axvline(result.recommended_rank, color="C2", lw=1, label=f"recommended r={result.recommended_rank}")
    if result.source_rank > 1:
        ax.set_xscale("log", base=2)
    # Ranks are whole numbers: label 1 2 4 8 ... (a log axis would print 1.0 2.0 or 2^0 2^1)
    ax.xaxis.set_major_locator(FixedLocator(rank_ticks(result.source_rank)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(1, max(result.source_rank, 2))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("rank k")
    ax.set_ylabel("retained variance")
    layers = f"{result.num_layers} layer{'s' if result.num_layers != 1 else ''}"
    ax.set_title(f"LoRA squeeze ({layers}, source rank {result.source_rank})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def retention_plot_png(result: SqueezeResult) -> bytes:
    buf = io.BytesIO()
    retention_figure(result).savefig(buf, format="png")
    return buf.getvalue()


def write_report(result: SqueezeResult, out_dir: Path) -> None:
    """Write squeeze.json (every figure) and squeeze.png (the retention curves) into `out_dir`."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / REPORT_JSON, result.to_dict())
    atomic_write_bytes(out_dir / REPORT_PNG, retention_plot_png(result))


def table_rows(result: SqueezeResult) -> list[list[float | int]]:
    """The variance table as plain rows, columns TABLE_COLUMNS."""
    return [
        [k, m, lo, hi]
        for k, m, lo, hi in zip(
            result.ranks, result.mean_retention, result.min_retention, result.max_retention, strict=True
        )
    ]


def log_squeeze_to_wandb(
    result: SqueezeResult,
    *,
    project: str,
    entity: str | None = None,
    group: str | None = None,
    mode: str | None = None,
    tags: Sequence[str] = ("squeeze",),
) -> None:
    """A wandb run named "squeeze-analysis": per-rank metrics, the variance table, summary keys."""
    try:
        import wandb
    except ImportError:
        raise MissingExtraError("wandb", "wandb", "squeeze logging") from None
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        mode=mode,  # type: ignore[arg-type]  # a Literal in wandb's stubs; wandb validates it
        name="squeeze-analysis",
        job_type="squeeze",
        tags=list(tags),
        config={
            "adapter_dir": result.adapter_dir,
            "min_variance_retention": result.min_variance,
            "min_layer_retention": result.min_layer,
            "ranks": result.ranks,
        },
        reinit="create_new",  # never finish or reuse a training run active in this process
    )
    try:
        for k, m, lo, hi in table_rows(result):
            run.log({
                "squeeze/rank": k,
                "squeeze/mean_variance": m,
                "squeeze/min_variance": lo,
                "squeeze/max_variance": hi,
            })
        columns: list[str | int] = list(TABLE_COLUMNS)
        run.log({"squeeze/variance_table": wandb.Table(columns=columns, data=table_rows(result))})
        for key, value in result.summary().items():
            run.summary[key] = value
    finally:
        run.finish()
