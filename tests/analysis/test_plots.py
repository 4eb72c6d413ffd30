"""Plots: valid PNG/SVG files of the expected size, one line per condition, smoothing, bands."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from retrain.analysis import AnalysisError, collect_runs, plot_metrics, save_figure
from retrain.analysis.plots import OKABE_ITO, condition_curve

from .fakes import FakeRun, write_campaign

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_size_and_one_line_per_condition(done_campaign: Path, tmp_path: Path) -> None:
    runs = collect_runs(done_campaign)
    fig = plot_metrics(runs, ["correct_rate", "mean_reward"], dpi=50)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        assert len(ax.get_lines()) == 2  # grpo+none, maxrl+gtpo
        assert [line.get_label() for line in ax.get_lines()] == ["grpo+none (n=3)", "maxrl+gtpo (n=3)"]
        assert len(ax.collections) == 2  # one band per condition
    assert axes[0].get_lines()[0].get_color().lower() == OKABE_ITO[0].lower()
    out = save_figure(fig, tmp_path / "p" / "curves.png", "png")
    # two panels of 5 x 3.5 inches side by side at 50 dpi → 500 x 175 pixels
    assert png_size(out) == (500, 175)


def test_svg_grid_layout_dark_style(done_campaign: Path, tmp_path: Path) -> None:
    runs = collect_runs(done_campaign)
    metrics = ["correct_rate", "mean_reward", "loss", "eval_accuracy"]
    fig = plot_metrics(runs, metrics, style="dark", smooth=0.9, band="ci")
    assert sum(ax.get_visible() for ax in fig.axes) == 4  # 3 columns x 2 rows, one hidden
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes if ax.get_visible())
    out = save_figure(fig, tmp_path / "curves.svg", "svg")
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    # 3 x 5 in by 2 x 3.5 in = 1080 x 504 pt
    width = re.search(r'<svg[^>]*\swidth="([\d.]+)pt"', text)
    height = re.search(r'<svg[^>]*\sheight="([\d.]+)pt"', text)
    assert width and height and (float(width.group(1)), float(height.group(1))) == (1080.0, 504.0)


def test_lines_follow_conditions_with_data(tmp_path: Path) -> None:
    runs = [FakeRun(c, 1, 0.5) for c in ("grpo+none", "maxrl+none", "maxrl+gtpo")]
    runs.append(FakeRun("maxrl+gtpo_sepa", 1, 0.5, status="pending", steps_logged=0))
    camp = write_campaign(tmp_path / "c", runs, status="running")
    fig = plot_metrics(collect_runs(camp), ["correct_rate"], dpi=20)
    assert len(fig.axes[0].get_lines()) == 3  # the pending condition has nothing to draw


def test_condition_curve_mean_and_bands(running_campaign: Path) -> None:
    runs = [r for r in collect_runs(running_campaign) if r.condition == "maxrl+gtpo"]
    steps, mean, low, high = condition_curve(runs, "correct_rate")
    # s42 logged 0.35, 0.4; s101 0.35, 0.4, 0.45: step 3 has a single run
    assert steps.tolist() == [1.0, 2.0, 3.0]
    assert mean == pytest.approx([0.35, 0.4, 0.45])
    assert low == pytest.approx(mean) and high == pytest.approx(mean)
    _, _, lo_ci, hi_ci = condition_curve(runs, "correct_rate", band="ci")
    assert np.allclose(lo_ci, mean) and np.allclose(hi_ci, mean)  # zero spread


def test_plot_errors(done_campaign: Path, tmp_path: Path) -> None:
    runs = collect_runs(done_campaign)
    with pytest.raises(AnalysisError, match="unknown metric 'nope'"):
        plot_metrics(runs, ["nope"])
    with pytest.raises(AnalysisError, match="style"):
        plot_metrics(runs, ["loss"], style="neon")
    with pytest.raises(AnalysisError, match="smooth"):
        plot_metrics(runs, ["loss"], smooth=1.0)
    with pytest.raises(AnalysisError, match="png or svg"):
        save_figure(plot_metrics(runs, ["loss"], dpi=10), tmp_path / "x.pdf", "pdf")
