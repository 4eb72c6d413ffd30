"""Plots: valid PNG/SVG/PDF files of the expected size, one line per condition, smoothing, bands,
labelled axes, one legend outside the panels, distinct colours, bands inside a metric's range."""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from matplotlib.colors import to_hex
from typer.testing import CliRunner

from retrain.analysis import AnalysisError, collect_runs, plot_metrics, save_figure
from retrain.analysis.plots import OKABE_ITO, condition_curve, metric_range, palette
from retrain.cli import analyze_cmd

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
    assert to_hex(axes[0].get_lines()[0].get_color()) == OKABE_ITO[0].lower()
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
    with pytest.raises(AnalysisError, match="png, svg, pdf"):
        save_figure(plot_metrics(runs, ["loss"], dpi=10), tmp_path / "x.jpg", "jpg")
    with pytest.raises(AnalysisError, match="unknown band 'iqr'"):
        plot_metrics(runs, ["loss"], band="iqr")


def test_panels_have_axis_labels(done_campaign: Path) -> None:
    metrics = ["correct_rate", "mean_reward", "loss", "eval_accuracy"]
    fig = plot_metrics(collect_runs(done_campaign), metrics, dpi=20)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in panels] == metrics
    assert [ax.get_xlabel() for ax in panels] == ["step"] * 4


@pytest.mark.parametrize("style", ["paper", "dark"])
def test_one_legend_below_the_panels(done_campaign: Path, style: str) -> None:
    fig = plot_metrics(collect_runs(done_campaign), ["correct_rate", "mean_reward", "loss"],
                       style=style, band="bootstrap", dpi=40)
    assert all(ax.get_legend() is None for ax in fig.axes)  # not one per panel
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["grpo+none (n=3)", "maxrl+gtpo (n=3)"]
    assert legend.get_title().get_text() == (
        "line: mean over 3 seeds; band: 95% bootstrap CI of the mean")
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in fig.axes:  # over no panel: it cannot hide a curve or a band
        assert not box.overlaps(ax.get_window_extent()), ax.get_ylabel()
    assert box.y1 < min(ax.get_window_extent().y0 for ax in fig.axes)  # below them
    single = plot_metrics(collect_runs(done_campaign), ["loss"], band="se", smooth=0.5, dpi=40)
    assert single.legends[0].get_title().get_text() == (
        "line: mean over 3 seeds (EMA 0.5 per run)\nband: ±1 standard error of the mean")


def cielab(colour: str) -> np.ndarray:
    """sRGB hex → CIELAB (D65), the standard formulas (IEC 61966-2-1, CIE 15)."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
    x, y, z = to_xyz @ linear / np.array([0.95047, 1.0, 1.08883])
    f = [c ** (1 / 3) if c > (6 / 29) ** 3 else c / (3 * (6 / 29) ** 2) + 4 / 29 for c in (x, y, z)]
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: str, b: str) -> float:
    return float(np.linalg.norm(cielab(a) - cielab(b)))  # CIE76


def test_cielab_reference_values() -> None:
    assert cielab("#ffffff") == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert cielab("#000000") == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert cielab("#ff0000") == pytest.approx([53.24, 80.09, 67.20], abs=0.05)  # sRGB red
    # the two oranges issue 14 saw side by side: close enough to be mistaken at line width
    assert delta_e("#E69F00", "#D55E00") == pytest.approx(33.4, abs=0.1)


@pytest.mark.parametrize("style", ["paper", "dark"])
def test_first_six_colours_are_far_apart(tmp_path: Path, style: str) -> None:
    colours = palette(style)[:6]
    # ΔE ≈ 2 is a just-noticeable difference; Okabe-Ito's own order had ΔE 26 (sky blue vs
    # blue) and 33 (orange vs vermillion) among its first five
    assert min(delta_e(a, b) for a, b in itertools.combinations(colours, 2)) > 50
    conditions = ["grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"]
    camp = write_campaign(tmp_path / "c", [FakeRun(c, s, 0.5) for c in conditions for s in (42, 101)])
    fig = plot_metrics(collect_runs(camp), ["correct_rate"], style=style, dpi=20)
    drawn = [to_hex(line.get_color()) for line in fig.axes[0].get_lines()]
    assert len(drawn) == 5
    assert min(delta_e(a, b) for a, b in itertools.combinations(drawn, 2)) > 50


def test_metric_ranges() -> None:
    assert metric_range("correct_rate") == (0.0, 1.0)
    assert metric_range("eval_accuracy") == (0.0, 1.0)
    assert metric_range("my_pass_rate") == (0.0, 1.0)  # a user field, by its name
    assert metric_range("step_time_s") == (0.0, np.inf)
    assert metric_range("loss") == (-np.inf, np.inf)
    assert metric_range("mean_reward") == (-np.inf, np.inf)  # a reward plugin may return anything


def test_bands_with_two_seeds_stay_in_range(tmp_path: Path) -> None:
    # two seeds whose correct_rate ends at 0.2 and 0.9 (step 4), mean_reward = 2 x correct_rate
    camp = write_campaign(tmp_path / "c", [FakeRun("grpo+none", 42, 0.2), FakeRun("grpo+none", 101, 0.9)])
    runs = collect_runs(camp)
    # t-interval: mean 0.55, s = 0.7/sqrt(2) = 0.49497, s/sqrt(2) = 0.35, t(0.975, 1) = 12.7062
    # → 0.55 ± 4.4472 = [-3.897, 4.997]: clipped to [0, 1] for a rate
    _, mean, low, high = condition_curve(runs, "correct_rate", band="ci")
    assert (mean[-1], low[-1], high[-1]) == pytest.approx((0.55, 0.0, 1.0))
    assert np.all(low >= 0.0) and np.all(high <= 1.0)
    # mean_reward has no known range: 1.1 ± 12.7062 x 0.7 = [-7.794, 9.994], left as it is
    _, _, low, high = condition_curve(runs, "mean_reward", band="ci")
    assert (low[-1], high[-1]) == pytest.approx((-7.7944, 9.9944), abs=1e-3)
    # standard error: 0.55 ± 0.35 = [0.2, 0.9]
    _, _, low, high = condition_curve(runs, "correct_rate", band="se")
    assert (low[-1], high[-1]) == pytest.approx((0.2, 0.9))
    # bootstrap of two values a < b: a resampled mean is a, (a+b)/2 or b with chance 1/4, 1/2,
    # 1/4, so the 2.5% and 97.5% percentiles are a and b
    _, _, low, high = condition_curve(runs, "correct_rate", band="bootstrap")
    assert (low[-1], high[-1]) == pytest.approx((0.2, 0.9))


def test_bootstrap_band_narrows_with_seeds(tmp_path: Path) -> None:
    # six seeds: all six resamples at one end has chance 6^-6, so the 95% interval lies strictly
    # inside the min-max range and around the mean
    finals = [0.2, 0.3, 0.35, 0.5, 0.6, 0.9]
    camp = write_campaign(tmp_path / "c", [FakeRun("grpo+none", 42 + i, f) for i, f in enumerate(finals)])
    runs = collect_runs(camp)
    _, mean, low, high = condition_curve(runs, "correct_rate", band="bootstrap")
    assert mean[-1] == pytest.approx(np.mean(finals))
    assert 0.2 < low[-1] < mean[-1] < high[-1] < 0.9
    again = condition_curve(runs, "correct_rate", band="bootstrap")
    assert again[2][-1] == low[-1] and again[3][-1] == high[-1]  # the same figure every time


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    analyze_cmd.register(app)
    return app


@pytest.mark.parametrize("ext", ["png", "svg", "pdf", "PDF"])
def test_out_extension_sets_the_format(cli: typer.Typer, done_campaign: Path, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"fig.{ext}"
    res = CliRunner().invoke(cli, ["analyze", "plot", str(done_campaign), "--out", str(out), "--dpi", "20"])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    if ext == "svg":
        assert data.lstrip().startswith(b"<?xml") and b"<svg" in data[:1000]
    else:
        assert data.startswith(MAGIC[ext.lower()])


def test_out_with_an_unknown_extension_writes_nothing(cli: typer.Typer, done_campaign: Path, tmp_path: Path) -> None:
    for name, extra in (("fig.jpg", []), ("fig", []), ("fig.png", ["--format", "pdf"])):
        res = CliRunner().invoke(cli, ["analyze", "plot", str(done_campaign), "--out", str(tmp_path / name), *extra])
        assert res.exit_code == 2, (name, res.output)
        message = " ".join(res.stderr.split())
        assert "--out" in message and (".png, .svg or .pdf" in message or "--format pdf" in message)
        assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == [done_campaign]  # nothing written
    assert not (done_campaign / "analysis").exists()
    res = CliRunner().invoke(cli, ["analyze", "plot", str(done_campaign), "-f", "pdf", "--dpi", "20"])
    assert res.exit_code == 0
    assert (done_campaign / "analysis" / "correct_rate-mean_reward.pdf").read_bytes().startswith(b"%PDF-")
