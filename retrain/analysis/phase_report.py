"""The report of a multi-phase (continual) run: forgetting matrix, forgetting per group, a figure.

Sits at the end of a multi-phase run (docs/phases.md): the trainer writes
`consolidated_metrics.json`, one record per completed (round, phase), and hands that document to
`render_phase_report_md` (a section of the run's report) and `plot_training_metrics`
(`plots/training_metrics.png`). Everything here is a pure function of that document except the
PNG write; matplotlib is imported inside the plot function and drawn on its Agg canvas.

Forgetting follows Chaudhry et al. (2018), "Riemannian Walk for Incremental Learning", eq. 4:
with a_{l,j} the held-out accuracy on group j right after phase l and k the last completed
phase, f_j = max_{l<k} a_{l,j} − a_{k,j}, and the mean forgetting averages f_j over the groups
trained so far except the one phase k trained. Deviation: the paper's tasks come once; here a
group recurs every round, so l runs over every earlier phase of every round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from retrain.analysis.loading import AnalysisError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CONSOLIDATED_FILE = "consolidated_metrics.json"
PLOT_FILE = Path("plots") / "training_metrics.png"
HEATMAP_CMAP = "cividis"  # Nuñez et al. (2018): uniform lightness, readable with any colour vision

Matrix = list[list[float | None]]


@dataclass(frozen=True)
class Phase:
    """One completed (round, phase) of consolidated_metrics.json."""

    index: int
    round: int
    name: str
    phase_index: int
    start_step: int
    end_step: int
    success_rate: float | None
    mean_response_length: float | None
    max_response_length: float | None
    loss: float | None
    grad_norm: float | None
    weight_change: float | None
    eval: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # group → (acc, se)

    @property
    def label(self) -> str:
        return f"r{self.round}:{self.name}"


@dataclass(frozen=True)
class PhaseDoc:
    run: str
    rounds: int
    groups: list[str]
    phases: list[Phase]

    @property
    def eval_groups(self) -> list[str]:
        """The matrix columns: the phase groups in order, then any other evaluated group."""
        names = list(self.groups)
        for phase in self.phases:
            names += [g for g in phase.eval if g not in names]
        return names


Doc = Mapping[str, object] | PhaseDoc


@dataclass(frozen=True)
class GroupForgetting:
    group: str
    trained_in: str | None  # label of the last phase that trained the group (None: never trained)
    after_training: float | None  # accuracy right after that phase
    final: float | None  # accuracy after the last completed phase
    best_earlier: float | None  # max accuracy after any phase before the last one
    best_earlier_in: str | None

    @property
    def drop(self) -> float | None:
        """after_training − final: what the phases since it was last trained took away."""
        return _minus(self.after_training, self.final)

    @property
    def forgetting(self) -> float | None:
        """Chaudhry et al.'s f_j: best_earlier − final (negative: it improved)."""
        return _minus(self.best_earlier, self.final)


@dataclass(frozen=True)
class ForgettingSummary:
    final_phase: str | None
    last_trained: str | None  # the group the final phase trained, left out of the mean
    groups: list[GroupForgetting]

    @property
    def mean_forgetting(self) -> float | None:
        values = [g.forgetting for g in self.groups
                  if g.trained_in is not None and g.group != self.last_trained and g.forgetting is not None]
        return sum(values) / len(values) if values else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# --- reading -------------------------------------------------------------------------------------


def _number(value: object, where: str, problems: list[str], *, integer: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        problems.append(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
        return None
    return float(value) if math.isfinite(value) else None


def _phase(raw: object, i: int, problems: list[str]) -> Phase | None:
    where = f"phases[{i}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected an object")
        return None
    ints = {k: _number(raw.get(k), f"{where}.{k}", problems, integer=True)
            for k in ("index", "round", "phase_index", "start_step", "end_step")}
    for k in ("round", "phase_index"):
        if raw.get(k) is None:
            problems.append(f"{where}.{k}: missing")
    if not isinstance(raw.get("name"), str):
        problems.append(f"{where}.name: expected a string")
    evals: dict[str, tuple[float | None, float | None]] = {}
    raw_eval = raw.get("eval")
    raw_eval = {} if raw_eval is None else raw_eval
    if not isinstance(raw_eval, Mapping):
        problems.append(f"{where}.eval: expected an object")
        raw_eval = {}
    for group, result in raw_eval.items():
        if not isinstance(result, Mapping):
            problems.append(f"{where}.eval.{group}: expected an object")
            continue
        evals[str(group)] = (_number(result.get("accuracy"), f"{where}.eval.{group}.accuracy", problems),
                             _number(result.get("accuracy_se"), f"{where}.eval.{group}.accuracy_se", problems))
    floats = {k: _number(raw.get(k), f"{where}.{k}", problems)
              for k in ("success_rate", "mean_response_length", "max_response_length", "loss",
                        "grad_norm", "weight_change")}
    return Phase(index=int(ints["index"] if ints["index"] is not None else i),
                 round=int(ints["round"] or 0), name=str(raw.get("name")),
                 phase_index=int(ints["phase_index"] or 0), start_step=int(ints["start_step"] or 0),
                 end_step=int(ints["end_step"] or 0), eval=evals, **floats)


def parse_consolidated(doc: Doc, source: str = CONSOLIDATED_FILE) -> PhaseDoc:
    """The document as typed records; every schema problem is collected and raised at once."""
    if isinstance(doc, PhaseDoc):
        return doc
    problems: list[str] = []
    groups = doc.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        problems.append("groups: expected a list of strings")
        groups = []
    raw_phases = doc.get("phases", [])
    if not isinstance(raw_phases, list):
        problems.append("phases: expected a list")
        raw_phases = []
    phases = [p for i, raw in enumerate(raw_phases) if (p := _phase(raw, i, problems)) is not None]
    rounds = _number(doc.get("rounds"), "rounds", problems, integer=True)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise AnalysisError(f"{source}: not a consolidated metrics document\n{lines}")
    return PhaseDoc(run=str(doc.get("run", "")), groups=list(groups), phases=phases,
                    rounds=int(rounds) if rounds is not None else max((p.round for p in phases), default=0))


def load_consolidated(path: Path) -> PhaseDoc:
    """consolidated_metrics.json, given as the file or the run dir that holds it."""
    path = Path(path)
    file = path / CONSOLIDATED_FILE if path.is_dir() else path
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnalysisError(f"{file}: no such file (a multi-phase run writes it)") from None
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise AnalysisError(f"{file}: expected a JSON object")
    return parse_consolidated(doc, str(file))


# --- forgetting ----------------------------------------------------------------------------------


def forgetting_matrix(doc: Doc) -> tuple[list[str], list[str], Matrix]:
    """(row labels `r{round}:{name}`, eval groups, accuracy[row][col]; None where not evaluated)."""
    data = parse_consolidated(doc)
    cols = data.eval_groups
    matrix = [[p.eval.get(g, (None, None))[0] for g in cols] for p in data.phases]
    return [p.label for p in data.phases], cols, matrix


def forgetting_summary(doc: Doc) -> ForgettingSummary:
    """Per eval group: accuracy after the phase that last trained it, final accuracy, their drop,
    and Chaudhry et al.'s forgetting max_{l<k} a_{l,j} − a_{k,j} (module docstring)."""
    data = parse_consolidated(doc)
    rows, cols, matrix = forgetting_matrix(data)
    if not rows:
        return ForgettingSummary(None, None, [GroupForgetting(g, None, None, None, None, None) for g in cols])
    out = []
    for j, group in enumerate(cols):
        column = [row[j] for row in matrix]
        trained = [i for i, p in enumerate(data.phases) if p.name == group]
        last = trained[-1] if trained else None
        earlier = [(v, rows[i]) for i, v in enumerate(column[:-1]) if v is not None]
        best, best_in = max(earlier, key=lambda e: e[0]) if earlier else (None, None)
        out.append(GroupForgetting(
            group=group, trained_in=None if last is None else rows[last],
            after_training=None if last is None else column[last], final=column[-1],
            best_earlier=best, best_earlier_in=best_in))
    return ForgettingSummary(rows[-1], data.phases[-1].name, out)


# --- markdown ------------------------------------------------------------------------------------


def _acc(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} ± {se:.3f}" if se is not None else f"{value:.3f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def render_phase_report_md(doc: Doc) -> str:
    """A markdown section: the forgetting matrix (accuracy ± SE) and the forgetting per group."""
    from retrain.analysis.formats import markdown_table

    data = parse_consolidated(doc)
    head = "## Phase report\n\n"
    if not data.phases:
        return head + "No phase has completed yet.\n"
    rows, cols, _ = forgetting_matrix(data)
    cells = [[label] + [_acc(*p.eval.get(g, (None, None))) for g in cols]
             for label, p in zip(rows, data.phases, strict=True)]
    summary = forgetting_summary(data)
    per_group = [[g.group, g.trained_in or "never", _acc(g.after_training), _acc(g.final),
                  _signed(g.drop), f"{_acc(g.best_earlier)} ({g.best_earlier_in})" if g.best_earlier_in else "—",
                  _signed(g.forgetting)] for g in summary.groups]
    mean = summary.mean_forgetting
    mean_line = (f"Mean forgetting over the groups trained so far except {summary.last_trained} "
                 f"(trained last): {_signed(mean)}." if mean is not None else
                 "Mean forgetting: none yet (it needs an earlier phase and a group other than the "
                 "last one trained).")
    return (
        f"{head}Run {data.run or '(unnamed)'}: {_plural(len(data.phases), 'phase')} completed "
        f"({', '.join(data.groups)}; {data.rounds} rounds planned).\n\n"
        "### Forgetting matrix\n\n"
        "Held-out accuracy on each group (column) right after each phase (row), ± its standard "
        "error.\n\n"
        + markdown_table(["after phase", *cols], cells)
        + "\n### Forgetting per group\n\n"
        + markdown_table(["group", "last trained in", "accuracy then", "final accuracy",
                          "drop", "best earlier", "forgetting"], per_group)
        + f"\nFinal accuracy: after {summary.final_phase}. Drop: accuracy right after the phase "
        "that last trained the group minus final. Forgetting (Chaudhry et al., 2018): the best "
        "accuracy after any earlier phase minus final; negative means the group improved. "
        f"{mean_line}\n")


# --- the figure ----------------------------------------------------------------------------------


def plot_training_metrics(doc: Doc, out: Path, *, dpi: int = 150) -> Path:
    """Write the 2×2 figure of a multi-phase run and return its path.

    `out` is the run dir (the figure goes to `out/plots/training_metrics.png`) or, ending in
    `.png`, the file itself. (a) training success rate per group over rounds, (b) weight change
    per phase, (c) mean and max response length per phase, (d) the forgetting matrix.
    """
    from retrain.analysis.plots import save_figure
    from retrain.io import atomic_path

    data = parse_consolidated(doc)
    if not data.phases:
        raise AnalysisError("no completed phase to plot")
    target = Path(out) if Path(out).suffix.lower() == ".png" else Path(out) / PLOT_FILE
    fig = training_metrics_figure(data, dpi=dpi)
    with atomic_path(target) as tmp:  # a reader never sees half a PNG
        save_figure(fig, tmp, "png")
    return target


def training_metrics_figure(doc: Doc, *, dpi: int = 150) -> Figure:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from retrain.analysis.plots import LINE_STYLES, STYLES

    data = parse_consolidated(doc)
    n = len(data.phases)
    with matplotlib.rc_context(STYLES["paper"]):
        # the phase axes and the heatmap's rows grow with the number of phases
        fig = Figure(figsize=(max(11.0, 5.0 + 0.45 * n), max(8.0, 5.0 + 0.32 * n)), dpi=dpi,
                     layout="constrained")
        FigureCanvasAgg(fig)
        (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
        colours = _group_colours(data)
        _success_panel(ax_a, data, colours)
        _weight_panel(ax_b, data, colours)
        _length_panel(ax_c, data)
        _heatmap_panel(fig, ax_d, data)
        fig.suptitle(f"{data.run or 'multi-phase run'}: {_plural(n, 'phase')} over "
                     f"{max(p.round for p in data.phases)} of {data.rounds} rounds")
        handles = [Line2D([], [], color=c, marker="o", markersize=4, linewidth=2.0, label=g,
                          linestyle=LINE_STYLES[k % len(LINE_STYLES)])  # type: ignore[arg-type]
                   for k, (g, c) in enumerate(colours.items())]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
                   title="phase group: lines in (a), bars in (b)", fontsize="small",
                   title_fontsize="small")
    return fig


def _group_colours(data: PhaseDoc) -> dict[str, str]:
    from retrain.analysis.plots import OKABE_ITO

    names = list(dict.fromkeys([*data.groups, *(p.name for p in data.phases)]))
    return {g: OKABE_ITO[k % len(OKABE_ITO)] for k, g in enumerate(names)}


def _tidy(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, loc="left", fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _phase_axis(ax: Axes, data: PhaseDoc) -> None:
    ax.set_xticks(range(len(data.phases)), [p.label for p in data.phases], rotation=40, ha="right",
                  rotation_mode="anchor", fontsize="small")
    ax.set_xlim(-0.6, len(data.phases) - 0.4)


def _success_panel(ax: Axes, data: PhaseDoc, colours: Mapping[str, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    from retrain.analysis.plots import LINE_STYLES

    for k, (group, colour) in enumerate(colours.items()):
        points = [(p.round, p.success_rate) for p in data.phases if p.name == group and p.success_rate is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=colour, linestyle=LINE_STYLES[k % len(LINE_STYLES)], marker="o",
                    markersize=4, linewidth=1.6, label=group)
    if not ax.lines:
        ax.text(0.5, 0.5, "no success rate recorded", transform=ax.transAxes, ha="center",
                va="center", color="#555555")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _tidy(ax, "(a) training success rate per group", "round", "success rate (mean correct_rate)")


def _weight_panel(ax: Axes, data: PhaseDoc, colours: Mapping[str, str]) -> None:
    values = [p.weight_change for p in data.phases]
    recorded = any(v is not None for v in values)
    for i, (phase, value) in enumerate(zip(data.phases, values, strict=True)):
        if value is None and recorded:
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize="small", color="#555555")
        elif value is not None:
            ax.bar(i, value, color=colours[phase.name], width=0.7)
    if not recorded:
        ax.text(0.5, 0.5, "no weight change recorded\n(no base model to measure against)",
                transform=ax.transAxes, ha="center", va="center", color="#555555")
        ax.set_yticks([])
    _phase_axis(ax, data)
    _tidy(ax, "(b) weight change per phase, vs the previous phase's adapter",
          "phase (round:group)", "relative weight change\n‖ΔW − ΔW_prev‖_F / ‖W0‖_F")


def _length_panel(ax: Axes, data: PhaseDoc) -> None:
    xs = range(len(data.phases))
    for attr, label, style, colour in (("mean_response_length", "mean", "-", "#000000"),
                                       ("max_response_length", "max", "--", "#777777")):
        ys = [getattr(p, attr) for p in data.phases]
        ys_plot = [math.nan if y is None else y for y in ys]
        ax.plot(xs, ys_plot, linestyle=style, color=colour, marker="o", markersize=4, label=label)
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    _phase_axis(ax, data)
    _tidy(ax, "(c) response length per phase", "phase (round:group)", "response length (tokens)")


def _ink(rgba: tuple[float, float, float, float]) -> str:
    """Black or white, whichever contrasts more with the cell (WCAG 2 relative luminance: black
    wins above L = 0.179, so mid-grey cells get black, not the faint white of a plain cut-off)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def _heatmap_panel(fig: Figure, ax: Axes, data: PhaseDoc) -> None:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    rows, cols, matrix = forgetting_matrix(data)
    values = np.array([[math.nan if v is None else v for v in row] for row in matrix], dtype=float)
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad="#e6e6e6")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    size = 8 if len(rows) <= 8 else 7 if len(rows) <= 14 else 6
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if math.isnan(v):
                ax.text(j, i, "—", ha="center", va="center", fontsize=size, color="#555555")
                continue
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=size, color=_ink(cmap(v)))
    for i, phase in enumerate(data.phases):  # box the group each phase trained
        if phase.name in cols:
            ax.add_patch(Rectangle((cols.index(phase.name) - 0.5, i - 0.5), 1, 1, fill=False,
                                   edgecolor="#D55E00", linewidth=1.8))
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right", rotation_mode="anchor",
                  fontsize="small")
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    ax.set_xlabel("eval group (held-out)")
    ax.set_ylabel("after phase (round:group)")
    ax.set_title("(d) forgetting matrix (boxed: the group that phase trained)", loc="left",
                 fontsize="medium")
    fig.colorbar(image, ax=ax, label="held-out accuracy", fraction=0.05)
