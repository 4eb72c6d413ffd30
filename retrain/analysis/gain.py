"""Each condition's gain over its own initial eval: the headline of a campaign's report.

Data flow: run dirs (`loading.RunData`: summary.json, else metrics.jsonl's step-0 row and last
eval row) → per run: initial and final held-out accuracy with their standard errors and the
gain = final − initial → per condition: the mean gain over seeds with a t-interval, the mean
initial and final accuracy with the eval's standard error, and a paired test of the gains
against the baseline condition (Holm-adjusted across conditions) with the minimum detectable
effect at this number of seeds → flat rows → a Markdown or Rich table.

The same for the sampled accuracy (mean@k at the training temperature) when the runs logged it.
Pure apart from what `loading` reads; scipy and statsmodels come in through `stats`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from retrain.analysis import stats
from retrain.analysis.formats import MISSING, markdown_table
from retrain.analysis.loading import AnalysisError, RunData, as_number

DEFAULT_BASELINE = "grpo+none"
# summary.json key (initial_eval / final_eval / deltas) of each eval figure with a gain.
KINDS = ("accuracy", "sampled_accuracy")
_PREFIX = {"accuracy": "", "sampled_accuracy": "sampled_"}


@dataclass(frozen=True)
class RunEval:
    """One run's initial and final eval of one kind; None where the run did not log it."""

    initial: float | None
    initial_se: float | None
    final: float | None
    final_se: float | None
    gain: float | None
    samples: int | None = None  # k of mean@k (sampled accuracy only)


def resolve_baseline(conditions: Sequence[str], baseline: str | None) -> str:
    """`baseline`, else grpo+none when present, else the first condition."""
    base = baseline or (DEFAULT_BASELINE if DEFAULT_BASELINE in conditions else conditions[0])
    if base not in conditions:
        raise AnalysisError(f"unknown baseline '{base}'; conditions: {', '.join(conditions)}")
    return base


def run_eval(run: RunData, kind: str = "accuracy") -> RunEval:
    """summary.json's initial_eval / final_eval / deltas, key by key; what it lacks (old run
    dirs, runs still going) from metrics.jsonl: the step-0 row and the last eval row after it."""
    field = f"eval_{kind}"
    empty: dict[str, Any] = {}
    start = next((r for r in run.rows if r["step"] == 0 and field in r), empty)
    end = next((r for r in reversed(run.rows) if r["step"] > 0 and field in r), empty)
    summary = run.summary or {}

    def pick(section: str, key: str, row: dict[str, Any]) -> float | None:
        doc = summary.get(section)
        value = as_number(doc.get(key)) if isinstance(doc, dict) else None
        return value if value is not None else as_number(row.get(f"eval_{key}"))

    initial, final = pick("initial_eval", kind, start), pick("final_eval", kind, end)
    deltas = summary.get("deltas")
    gain = as_number(deltas.get(kind)) if isinstance(deltas, dict) else None
    if gain is None and initial is not None and final is not None:
        gain = final - initial
    samples = pick("final_eval", "samples", end) if kind == "sampled_accuracy" else None
    return RunEval(initial, pick("initial_eval", f"{kind}_se", start), final,
                   pick("final_eval", f"{kind}_se", end), gain,
                   int(samples) if samples is not None else None)


def gain_verdict(interval: stats.Interval, level: float = 0.95) -> str:
    """`learned: gain +0.310 [0.250, 0.370]` when the interval excludes 0 from above, `got
    worse` from below, `no detectable change` when it includes 0."""
    if interval.mean is None:
        return "no gain measured (no initial or no final eval)"
    text = f"gain {interval.mean:+.3f}"
    if interval.low is None or interval.high is None:
        return f"{text} (one seed: no interval)"
    text += f" [{interval.low:.3f}, {interval.high:.3f}]"
    if interval.low > 0:
        return f"learned: {text}"
    if interval.high < 0:
        return f"got worse: {text}"
    return f"no detectable change: {text} ({level:.0%} interval includes 0)"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rms(values: list[float]) -> float | None:
    # The SE of one eval over its problems; seeds usually share the problems, so it does not
    # shrink with more seeds: report the typical one.
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else None


def seed_gains(runs: Sequence[RunData], evals: Sequence[RunEval]) -> dict[int, float]:
    """{seed: gain}; runs sharing a seed are averaged, seedless runs never pair."""
    groups: dict[int, list[float]] = {}
    for idx, (run, ev) in enumerate(zip(runs, evals, strict=True)):
        if ev.gain is not None:
            groups.setdefault(run.seed if run.seed is not None else -1 - idx, []).append(ev.gain)
    return {s: sum(v) / len(v) for s, v in groups.items()}


def _kind_columns(runs: Sequence[RunData], evals: Sequence[RunEval], *,
                  level: float) -> dict[str, Any]:
    gains = [e.gain for e in evals if e.gain is not None]
    interval = stats.mean_interval(gains, level=level)
    ks = {e.samples for e in evals if e.samples is not None}
    return {
        "initial_mean": _mean([e.initial for e in evals if e.initial is not None]),
        "initial_se": _rms([e.initial_se for e in evals if e.initial_se is not None]),
        "final_mean": _mean([e.final for e in evals if e.final is not None]),
        "final_se": _rms([e.final_se for e in evals if e.final_se is not None]),
        "gain_n": interval.n, "gain_mean": interval.mean, "gain_low": interval.low,
        "gain_high": interval.high, "gain_verdict": gain_verdict(interval, level),
        "samples": ks.pop() if len(ks) == 1 else None,
    }


def _paired(cond: dict[int, float], base: dict[int, float], test: str) -> dict[str, Any]:
    result = stats.compare_to_baseline(cond, base, test=test)
    diffs = stats.paired_differences(cond, base)
    mde = (stats.min_detectable_effect(len(diffs), stats.sample_sd(diffs))
           if result.name != "Welch t (unpaired)" else None)
    return {"result": result, "mde": mde}


def gain_rows(runs: Sequence[RunData], *, baseline: str | None = None, level: float = 0.95,
              test: str = "t") -> list[dict[str, Any]]:
    """One row per condition (order of first appearance) with, for kind k in KINDS (prefix ""
    for accuracy, "sampled_" for sampled accuracy): initial_mean, initial_se, final_mean,
    final_se, gain_n, gain_mean, gain_low, gain_high, gain_verdict, samples; and against the
    baseline: diff (mean Δ gain over paired seeds), p_value, p_holm, test, n_pairs, mde, verdict.
    """
    if not runs:
        raise AnalysisError("no runs to compare")
    conditions = list(dict.fromkeys(r.condition for r in runs))
    base = resolve_baseline(conditions, baseline)
    by_cond = {c: [r for r in runs if r.condition == c] for c in conditions}
    rows: list[dict[str, Any]] = [
        {"condition": c, "n": len(by_cond[c]), "seeds": [r.seed for r in by_cond[c]],
         "baseline": base, "level": level} for c in conditions]
    for kind in KINDS:
        pre = _PREFIX[kind]
        evals = {c: [run_eval(r, kind) for r in by_cond[c]] for c in conditions}
        by_seed = {c: seed_gains(by_cond[c], evals[c]) for c in conditions}
        tests: dict[str, dict[str, Any]] = {
            c: _paired(by_seed[c], by_seed[base], test) for c in conditions if c != base}
        adjusted = dict(zip(tests, stats.holm([t["result"].p_value for t in tests.values()]),
                            strict=True))
        for row in rows:
            cond = row["condition"]
            row.update({pre + k: v for k, v in _kind_columns(by_cond[cond], evals[cond],
                                                            level=level).items()})
            row.update(_baseline_columns(cond, base, tests.get(cond), adjusted.get(cond),
                                         metric="eval gain" if kind == "accuracy"
                                         else "sampled eval gain", prefix=pre))
    return rows


def _baseline_columns(cond: str, base: str, tested: dict[str, Any] | None, p_holm: float | None,
                      *, metric: str, prefix: str) -> dict[str, Any]:
    if tested is None:
        return {f"{prefix}{k}": None for k in ("diff", "p_value", "p_holm", "test", "n_pairs", "mde")} | {
            f"{prefix}verdict": "baseline"}
    result: stats.TestResult = tested["result"]
    shown = dataclasses.replace(result, p_value=p_holm, name=f"{result.name}, Holm-adjusted"
                                ) if p_holm is not None else result
    text = stats.verdict(cond, base, shown, metric=metric, higher=True)
    mde = tested["mde"]
    if mde is not None and (p_holm is None or p_holm >= 0.05):
        text += f"; with {result.n} seeds only |Δ| >= {mde:.3f} is detectable (80% power)"
    return {f"{prefix}diff": result.diff, f"{prefix}p_value": result.p_value,
            f"{prefix}p_holm": p_holm, f"{prefix}test": result.name, f"{prefix}n_pairs": result.n,
            f"{prefix}mde": mde, f"{prefix}verdict": text}


# ---- rendering -------------------------------------------------------------------------------

def has_kind(rows: Sequence[dict[str, Any]], kind: str) -> bool:
    return any(r.get(f"{_PREFIX[kind]}gain_mean") is not None
               or r.get(f"{_PREFIX[kind]}final_mean") is not None for r in rows)


def _se_cell(mean: Any, se: Any) -> str:
    if not isinstance(mean, int | float):
        return MISSING
    return f"{mean:.3f} ± {se:.3f}" if isinstance(se, int | float) else f"{mean:.3f}"


def _gain_cell(row: dict[str, Any], pre: str) -> str:
    mean, low, high = row.get(f"{pre}gain_mean"), row.get(f"{pre}gain_low"), row.get(f"{pre}gain_high")
    if not isinstance(mean, int | float):
        return MISSING
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{mean:+.3f} [{low:.3f}, {high:.3f}]"
    return f"{mean:+.3f}"


def _opt(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else MISSING


def several_compared(rows: Sequence[dict[str, Any]], kind: str = "accuracy") -> bool:
    """More than one condition tested against the baseline: only then does Holm change a p."""
    return sum(r.get(f"{_PREFIX[kind]}verdict") != "baseline" for r in rows) > 1


def gain_table_cells(rows: Sequence[dict[str, Any]], kind: str = "accuracy"
                     ) -> tuple[list[str], list[list[str]]]:
    """Headers and cells; `p (Holm)` only when several conditions are compared (else it is p)."""
    pre = _PREFIX[kind]
    level = rows[0].get("level", 0.95) if rows else 0.95
    holm = several_compared(rows, kind)
    columns = ["condition", "n", "initial ± SE", "final ± SE", f"gain [{level:.0%} CI]",
               "Δ gain", "p", *(["p (Holm)"] if holm else []), "MDE"]
    cells = [[str(r["condition"]), str(r.get(f"{pre}gain_n", r.get("n"))),
              _se_cell(r.get(f"{pre}initial_mean"), r.get(f"{pre}initial_se")),
              _se_cell(r.get(f"{pre}final_mean"), r.get(f"{pre}final_se")),
              _gain_cell(r, pre), _opt(r.get(f"{pre}diff"), "+.3f"),
              _opt(r.get(f"{pre}p_value"), ".3f"),
              *([_opt(r.get(f"{pre}p_holm"), ".3f")] if holm else []),
              _opt(r.get(f"{pre}mde"), ".3f")] for r in rows]
    return columns, cells


def _title(rows: Sequence[dict[str, Any]], kind: str) -> str:
    if kind == "accuracy":
        return "held-out greedy accuracy"
    ks = {r.get("sampled_samples") for r in rows} - {None}
    k = f"mean@{ks.pop()}" if len(ks) == 1 else "mean@k"
    return f"held-out sampled accuracy ({k} at the training temperature)"


def legend(rows: Sequence[dict[str, Any]]) -> str:
    """What each number and each ± means (said once, under or above every gain table)."""
    base = rows[0]["baseline"] if rows else DEFAULT_BASELINE
    level = rows[0].get("level", 0.95) if rows else 0.95
    p = ("p: paired test, raw; p (Holm): Holm-adjusted across the conditions, the one the "
         "verdicts use" if several_compared(rows) else "p: paired test")
    return (f"gain = final − initial eval of each run, mean over seeds with a {level:.0%} "
            f"t-interval over seeds [low, high]; initial, final: mean over seeds ± the eval's "
            f"standard error over held-out problems (an SE, not a CI); Δ gain: the condition's gain minus {base}'s, "
            f"paired by seed; {p}; MDE: smallest Δ gain the paired t-test detects with 80% "
            f"power at this number of seeds (α = 0.05; `retrain analyze power` for the seeds "
            f"needed).")


def _verdict_line(row: dict[str, Any], pre: str) -> tuple[str, str]:
    """(`condition` or `condition (baseline)`, the gain verdict and the test against the baseline)."""
    vs = row.get(f"{pre}verdict")
    text = str(row.get(f"{pre}gain_verdict"))
    if vs == "baseline":
        return f"{row['condition']} (baseline)", text
    return str(row["condition"]), text + (f"; {vs}" if vs else "")


def render_gains_md(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown gain tables (accuracy, then sampled accuracy when logged) with verdicts."""
    lines = [legend(rows), ""]
    for kind in KINDS:
        if not has_kind(rows, kind):
            continue
        pre = _PREFIX[kind]
        columns, cells = gain_table_cells(rows, kind)
        lines += [f"### Gain in {_title(rows, kind)}", "", markdown_table(columns, cells).rstrip(), ""]
        lines += ["- **{}**: {}".format(*_verdict_line(r, pre)) for r in rows]
        lines.append("")
    return "\n".join(lines)


def render_gains_rich(rows: Sequence[dict[str, Any]]) -> Group:
    """Rich tables for the terminal; the title says `conditions:` as the campaign's always has.

    Sized for an 80-column terminal: no vertical rules, the number of seeds in the title, no MDE
    column, `p Holm` for the header of the Holm-adjusted p, and one short line per condition
    instead of the full verdicts (summary.md has both). Where even that is too wide (long
    condition names, or p beside p Holm), the initial and then the final accuracy are left out.
    """
    parts: list[Any] = []
    for kind in KINDS:
        if not has_kind(rows, kind):
            continue
        columns, cells = gain_table_cells(rows, kind)
        seeds = sorted({c[1] for c in cells})
        what = "greedy accuracy" if kind == "accuracy" else _title(rows, kind).split(" (")[1].split(" ")[0]
        what = what if kind == "accuracy" else f"sampled accuracy ({what})"
        # The title is a line of its own: as a table title Rich wraps it to the table's width.
        parts.append(Text(f"conditions: held-out {what}, gain over own initial eval, "
                          f"{'/'.join(seeds)} seeds", style="italic"))
        keep = [i for i, name in enumerate(columns) if name not in ("n", "MDE")]
        variants = [(_console_table(columns, cells, [i for i in keep if i not in hidden]),
                     [columns[i].replace(" ± ", "±") for i in hidden])
                    for hidden in ((), (2,), (2, 3))]  # initial ± SE, then final ± SE
        parts.append(_FirstThatFits(variants))
    parts.append(Text(legend(rows) + " Verdicts with the minimum detectable effect: summary.md.",
                      style="dim"))
    return Group(*parts)


def _console_table(columns: list[str], cells: list[list[str]], keep: list[int]) -> Table:
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=True)
    for i in keep:
        table.add_column(columns[i].replace(" ± ", "±").replace("p (Holm)", "p Holm"),
                         no_wrap=True, justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*(row[i].replace(" ± ", "±").replace(", ", ",") for i in keep))
    return table


class _FirstThatFits:
    """The first table whose one-line-per-row width fits where it is printed (else the last),
    with a line naming the columns it leaves out."""

    def __init__(self, variants: list[tuple[Table, list[str]]]) -> None:
        self.variants = variants

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, hidden = self.variants[-1]
        unbounded = options.update_width(10_000)  # a measurement is clipped to the width it gets
        for candidate, left_out in self.variants:
            if console.measure(candidate, options=unbounded).maximum <= options.max_width:
                table, hidden = candidate, left_out
                break
        yield table
        if hidden:
            yield Text(f"not shown at {options.max_width} columns: {', '.join(hidden)} "
                       "(summary.md has every column)", style="dim")
