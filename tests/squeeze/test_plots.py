"""The squeeze figures: whole-number rank ticks (1 2 4 8, not 1.0 2.0 4.0) and labelled axes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes

from retrain.squeeze import analyze_adapter, analyze_over_time
from retrain.squeeze.over_time import over_time_figure, over_time_plot_png
from retrain.squeeze.report import rank_ticks, retention_figure, retention_plot_png


def tick_texts(ax: Axes, axis: str) -> list[str]:
    ax.figure.canvas.draw()  # tick labels are only formatted when drawn
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in labels if t.get_text()]


def test_rank_ticks() -> None:
    assert rank_ticks(1) == [1]
    assert rank_ticks(16) == [1, 2, 4, 8, 16]
    assert rank_ticks(12) == [1, 2, 4, 8, 12]  # the source rank is always a tick


def test_retention_plot_rank_ticks_are_integers(make_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spectra = [[0.8**i for i in range(16)], [1.0] * 4 + [0.0] * 12]
    result = analyze_adapter(make_adapter(tmp_path / "a16", spectra, rank=16, out=24, inp=20))
    ax = retention_figure(result).axes[0]
    assert tick_texts(ax, "x") == ["1", "2", "4", "8", "16"]
    assert ax.get_xlabel() == "rank k" and ax.get_ylabel() == "retained variance"
    ax12 = retention_figure(analyze_adapter(make_adapter(tmp_path / "a12", [[0.8**i for i in range(12)]], rank=12))).axes[0]
    assert tick_texts(ax12, "x") == ["1", "2", "4", "8", "12"]
    assert retention_plot_png(result)[:8] == b"\x89PNG\r\n\x1a\n"


def test_over_time_plot_integer_ticks(make_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # recommended ranks 1, 2, 4 at steps 10, 20, 30: a float axis would label 1.0 1.5 2.0 ...
    root = tmp_path / "run"
    make_adapter(root / "checkpoints" / "step_000010", [[1, 0, 0, 0]] * 2, rank=4)
    make_adapter(root / "checkpoints" / "step_000020", [[1, 1, 0, 0]] * 2, rank=4)
    make_adapter(root / "checkpoints" / "step_000030", [[1, 1, 1, 1]] * 2, rank=4)
    result = analyze_over_time(root)
    ax = over_time_figure(result).axes[0]
    for axis in ("x", "y"):
        texts = tick_texts(ax, axis)
        assert texts and all(t.lstrip("−-").isdigit() for t in texts), (axis, texts)
    assert "1" in tick_texts(ax, "y") and "4" in tick_texts(ax, "y")
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "rank"
    assert over_time_plot_png(result)[:8] == b"\x89PNG\r\n\x1a\n"
