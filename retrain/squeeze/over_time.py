"""Rank trajectory of a run: the squeeze analysis of every saved checkpoint, in step order.

Beyond the LoRA-Squeeze paper: it analyses only the final adapter; here every
`checkpoints/step_NNNNNN/` adapter of a run directory (and the final `adapter/`) is analysed
with the same thresholds, to show how the effective and recommended rank grow during training.
A checkpoint's adapter is the step directory itself or its `adapter/` subdirectory.
Reads only the on-disk run directory; writes squeeze_over_time.json + squeeze_over_time.png.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from retrain.io import atomic_write_bytes, atomic_write_json
from retrain.squeeze.adapter import CONFIG_NAME, SqueezeError
from retrain.squeeze.analysis import SqueezeResult, analyze_adapter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OVER_TIME_JSON = "squeeze_over_time.json"
OVER_TIME_PNG = "squeeze_over_time.png"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class OverTimePoint:
    """One analysed adapter of the run."""

    label: str  # "step_000010" or "final"
    step: int | None  # None for the final adapter
    result: SqueezeResult

    def to_dict(self) -> dict[str, object]:
        r = self.result
        return {
            "label": self.label,
            "step": self.step,
            "adapter_dir": r.adapter_dir,
            "source_rank": r.source_rank,
            "num_layers": r.num_layers,
            "recommended_rank": r.recommended_rank,
            "mean_effective_rank": r.mean_effective_rank,
            "max_effective_rank": r.max_effective_rank,
            "ranks": r.ranks,
            "mean_retention": r.mean_retention,
            "min_retention": r.min_retention,
            "max_retention": r.max_retention,
        }


@dataclass(frozen=True)
class OverTimeResult:
    """The trajectory: points in step order, the final adapter last."""

    run_dir: str
    min_variance: float
    min_layer: float | None
    points: list[OverTimePoint]

    def to_dict(self) -> dict[str, object]:
        return {
            "run_dir": self.run_dir,
            "min_variance_retention": self.min_variance,
            "min_layer_retention": self.min_layer,
            "points": [p.to_dict() for p in self.points],
        }


def _adapter_in(directory: Path) -> Path | None:
    for candidate in (directory, directory / "adapter"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def find_run_adapters(run_dir: str | Path) -> list[tuple[str, int | None, Path]]:
    """(label, step, adapter dir) for every checkpoint in step order, then the final adapter."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SqueezeError(f"run directory not found: {root}")
    found: list[tuple[str, int | None, Path]] = []
    ckpt_root = root / "checkpoints"
    if ckpt_root.is_dir():
        steps = []
        for child in ckpt_root.iterdir():
            m = _STEP_DIR.match(child.name)
            adapter = _adapter_in(child) if m and child.is_dir() else None
            if m and adapter is not None:
                steps.append((int(m.group(1)), child.name, adapter))
        found.extend((name, step, adapter) for step, name, adapter in sorted(steps))
    if (root / "adapter" / CONFIG_NAME).is_file():
        found.append(("final", None, root / "adapter"))
    if not found:
        raise SqueezeError(
            f"{root}: no adapters to analyse over time "
            f"(expected checkpoints/step_NNNNNN/ with {CONFIG_NAME}, or adapter/)"
        )
    return found


def analyze_over_time(
    run_dir: str | Path,
    *,
    ranks: Sequence[int] | None = None,
    min_variance: float = 0.95,
    min_layer: float | None = None,
    on_adapter: Callable[[str], None] | None = None,
) -> OverTimeResult:
    """Analyse every checkpoint adapter and the final adapter of a run directory."""
    points: list[OverTimePoint] = []
    for label, step, adapter in find_run_adapters(run_dir):
        result = analyze_adapter(adapter, ranks=ranks, min_variance=min_variance, min_layer=min_layer)
        points.append(OverTimePoint(label, step, result))
        if on_adapter is not None:
            on_adapter(label)
    return OverTimeResult(str(Path(run_dir)), float(min_variance), min_layer, points)


def render_over_time_table(result: OverTimeResult) -> Table:
    """One row per adapter: step, recommended rank, mean/max effective rank, mean retention at it."""
    table = Table(title=f"LoRA rank over time (mean retained variance >= {100 * result.min_variance:.2f}%)")
    for name in ("adapter", "step", "recommended rank", "mean eff. rank", "max eff. rank", "source rank"):
        table.add_column(name, justify="left" if name == "adapter" else "right")
    for p in result.points:
        r = p.result
        table.add_row(
            p.label, "" if p.step is None else str(p.step), str(r.recommended_rank),
            f"{r.mean_effective_rank:.2f}", f"{r.max_effective_rank:.2f}", str(r.source_rank),
        )
    return table


def over_time_figure(result: OverTimeResult) -> Figure:
    """Effective rank (mean, max over layers) and recommended rank against the training step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stepped = [p for p in result.points if p.step is not None]
    steps = [p.step for p in stepped if p.step is not None]
    fig = Figure(figsize=(7.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if stepped:
        xs = steps
        ax.plot(xs, [p.result.mean_effective_rank for p in stepped], "o-", label="mean effective rank")
        ax.plot(xs, [p.result.max_effective_rank for p in stepped], "s--", ms=3, label="max effective rank")
        ax.step(xs, [p.result.recommended_rank for p in stepped], where="post", label="recommended rank")
    final = [p for p in result.points if p.step is None]
    if final:
        x = max(steps, default=0)
        ax.plot([x], [final[0].result.recommended_rank], "*", ms=12, color="C2", label="final adapter")
    # steps and ranks are whole numbers: no 1.5 ticks between them
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("rank")
    ax.set_title("LoRA rank over training")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def over_time_plot_png(result: OverTimeResult) -> bytes:
    buf = io.BytesIO()
    over_time_figure(result).savefig(buf, format="png")
    return buf.getvalue()


def write_over_time_report(result: OverTimeResult, out_dir: Path) -> None:
    """squeeze_over_time.json (every point) and squeeze_over_time.png into `out_dir`."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / OVER_TIME_JSON, result.to_dict())
    atomic_write_bytes(out_dir / OVER_TIME_PNG, over_time_plot_png(result))
