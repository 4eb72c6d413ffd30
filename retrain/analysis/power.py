"""`retrain analyze power`: how big a difference the seeds so far can detect, and how many seeds a
comparison needs.

Data flow: run dirs (`loading.collect_runs`) → one value per run: the gain in held-out greedy
accuracy over the run's own initial eval (`gain.run_eval`, as the gain table), or a curve
statistic of `--metric` (`compare.run_summaries`, as `analyze compare`) → {seed: value} per
condition → the per-seed differences of each condition from the baseline
(`stats.paired_differences`) → n, mean, SD, d = mean / SD → the power of the two-sided paired
t-test: the minimum detectable effect at this n, and the pairs needed for the observed d and for
a given effect, at α and at the Holm worst case α/m → flat rows → `formats`.

The power math (`stats.paired_t_power`, `stats.detectable_effect_size`, `stats.seeds_needed`)
is statsmodels' power formula with retrain's own root finding; see `stats` for why. Pure apart
from what `loading` reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.text import Text

from retrain.analysis import compare, gain, stats
from retrain.analysis.formats import (
    MISSING,
    Col,
    FitTable,
    OutputFormat,
    csv_text,
    json_text,
    markdown_table,
)
from retrain.analysis.loading import AnalysisError, RunData, check_metric

TEST = "two-sided paired t"
MAX_SEEDS = stats.MAX_SEEDS


# ---- rows -------------------------------------------------------------------------------------

def power_row(condition: str, baseline: str, diffs: Sequence[float], *, alpha: float = 0.05,
              power: float = 0.8, effect: float | None = None, comparisons: int = 1
              ) -> dict[str, Any]:
    """The power figures of one comparison from its per-seed differences (condition − baseline).

    d = mean / SD (SD with ddof 1); mde = the detectable d at this n times SD; seeds_needed for
    the observed d, seeds_for_effect for `effect` / SD; the `_holm` twins at α / comparisons,
    which is what the first step of Holm's procedure asks of the smallest p-value.
    """
    n = len(diffs)
    mean = sum(diffs) / n if n else None
    sd = stats.sample_sd(list(diffs))
    # The same tolerance as stats.compare_to_baseline: equal differences up to float rounding.
    if sd is not None and sd <= 1e-12 * max(1.0, max(abs(v) for v in diffs)):
        sd = 0.0
    d = mean / sd if mean is not None and sd else None
    alpha_holm = alpha / max(1, comparisons)
    mde_d = stats.detectable_effect_size(n, alpha=alpha, power=power) if sd else None
    d_effect = effect / sd if effect is not None and sd else None
    row: dict[str, Any] = {
        "condition": condition, "baseline": baseline, "test": TEST, "n_pairs": n,
        "diff_mean": mean, "diff_sd": sd, "effect_size": d, "alpha": alpha, "power": power,
        "mde": mde_d * sd if mde_d is not None and sd else None, "mde_effect_size": mde_d,
        "seeds_needed": stats.seeds_needed(d, alpha=alpha, power=power),
        "comparisons": comparisons, "alpha_holm": alpha_holm,
        "seeds_needed_holm": stats.seeds_needed(d, alpha=alpha_holm, power=power),
        "effect": effect,
        "seeds_for_effect": stats.seeds_needed(d_effect, alpha=alpha, power=power),
        "seeds_for_effect_holm": stats.seeds_needed(d_effect, alpha=alpha_holm, power=power),
    }
    row["note"] = _note(row)
    return row


def _note(row: dict[str, Any]) -> str:
    n, d, sd = row["n_pairs"], row["effect_size"], row["diff_sd"]
    if n < 2:
        return (f"{n} paired seed{'s' if n != 1 else ''}: no SD of the differences, no power "
                f"estimate; run at least 2 seeds of both with the same seed values")
    if not sd:
        return "the same difference on every seed (SD 0): no power estimate"
    text = (f"with {n} pairs the smallest |Δ| detectable is {row['mde']:.3g} "
            f"({row['mde_effect_size']:.2f} SD, {row['power']:.0%} power)")
    if d == 0:
        return text + "; the observed Δ is 0, which no number of seeds detects"
    text += f"; the observed Δ {row['diff_mean']:+.3g} (d = {d:+.2f}) needs "
    text += _count(row["seeds_needed"], n)
    if row["comparisons"] > 1:
        holm = row["seeds_needed_holm"]
        text += (f", {holm if holm is not None else 'more'} at α/{row['comparisons']} = "
                 f"{row['alpha_holm']:.3g} (Holm, worst case)")
    if row["effect"] is not None:
        text += f"; Δ = {row['effect']:g} needs {_count(row['seeds_for_effect'], n)}"
    return text


def _count(needed: int | None, n: int) -> str:
    if needed is None:
        return f"more than {MAX_SEEDS:.0e} pairs"
    if needed <= n:
        return f"{needed} pairs (has {n})"
    return f"{needed} pairs ({needed - n} more)"


def seed_values_by_condition(runs: Sequence[RunData], *, metric: str | None = None,
                             stat: str | None = None, last_n: int = 10
                             ) -> tuple[str, dict[str, dict[int, float]]]:
    """(what was measured, {condition: {seed: value}}). Without `metric` and `stat`: each run's
    gain in held-out greedy accuracy over its own initial eval; with either: the per-run
    statistic `stat` (default last_n) of `metric` (default correct_rate), as `analyze compare`."""
    conditions = list(dict.fromkeys(r.condition for r in runs))
    by_cond = {c: [r for r in runs if r.condition == c] for c in conditions}
    if metric is None and stat is None:
        values = {c: gain.seed_gains(rs, [gain.run_eval(r) for r in rs]) for c, rs in by_cond.items()}
        if not any(values.values()):
            raise AnalysisError("no run has an eval gain (an initial and a final eval_accuracy); "
                                "choose a training metric with --metric")
        return "eval gain", values
    metric = metric or compare.DEFAULT_METRIC
    stat = stat or "last_n"
    try:
        check_metric(list(runs), metric)
    except AnalysisError as exc:
        raise AnalysisError(f"--metric: {exc}") from None
    if stat not in compare.STATS:
        raise AnalysisError(f"--stat: unknown statistic '{stat}'; choose one of: "
                            f"{', '.join(compare.STATS)}")
    if last_n < 1:
        raise AnalysisError(f"--last must be >= 1, got {last_n}")
    per_run = compare.run_summaries(runs, metric=metric, last_n=last_n,
                                    threshold=compare.default_threshold(runs, metric))
    label = stat if stat in compare.EVAL_STATS else f"{metric} ({stat})"
    return label, {c: compare.seed_values(per_run.get(c, {}), runs, stat) for c in conditions}


def power_rows(runs: Sequence[RunData], *, metric: str | None = None, stat: str | None = None,
               last_n: int = 10, baseline: str | None = None, alpha: float = 0.05,
               power: float = 0.8, effect: float | None = None) -> list[dict[str, Any]]:
    """One row per condition other than the baseline (see `power_row` for the keys, plus
    `quantity` and `seeds`, the paired seeds)."""
    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"--alpha must be in (0, 1), got {alpha}")
    if not alpha < power < 1.0:
        raise AnalysisError(f"--power must be above --alpha ({alpha}) and below 1, got {power}")
    if effect is not None and not (math.isfinite(effect) and effect > 0):
        raise AnalysisError(f"--effect must be a difference > 0 in the metric's units, got {effect}")
    if not runs:
        raise AnalysisError("no runs to analyse")
    conditions = list(dict.fromkeys(r.condition for r in runs))
    try:
        base = gain.resolve_baseline(conditions, baseline)
    except AnalysisError as exc:
        raise AnalysisError(f"--baseline: {exc}") from None
    others = [c for c in conditions if c != base]
    if not others:
        raise AnalysisError(f"only one condition ({base}): nothing to compare with the baseline")
    quantity, values = seed_values_by_condition(runs, metric=metric, stat=stat, last_n=last_n)
    if not any(set(values[c]) & set(values[base]) for c in others):
        raise AnalysisError(f"no paired seeds: no condition has a {quantity} value for a seed that "
                            f"the baseline ({base}, --baseline) also has")
    rows = []
    for cond in others:
        row = power_row(cond, base, stats.paired_differences(values[cond], values[base]),
                        alpha=alpha, power=power, effect=effect, comparisons=len(others))
        rows.append({"condition": cond, "quantity": quantity,
                     "seeds": sorted(set(values[cond]) & set(values[base])), **row})
    return rows


# ---- rendering --------------------------------------------------------------------------------

def caption(rows: Sequence[dict[str, Any]]) -> str:
    """The test assumed and what the numbers can and cannot say (under every power table)."""
    first = rows[0] if rows else {}
    m, alpha = first.get("comparisons", 1), first.get("alpha", 0.05)
    text = (f"{first.get('quantity')} vs {first.get('baseline')}, paired by seed. Test assumed: "
            f"{TEST}-test on the per-seed differences (α = {alpha:g}, power "
            f"{first.get('power', 0.8):.0%}), differences normally distributed. The SD is "
            "estimated from the seeds so far, so with few pairs the seeds-needed figures are "
            "rough. MDE: the smallest |Δ| this test detects at the current n. No multiplicity "
            "correction: ")
    if m > 1:
        text += (f"with {m} comparisons a Holm-protected claim needs α/{m} = {alpha / m:.3g} at "
                 f"worst (the Holm column{'s' if first.get('effect') is not None else ''}).")
    else:
        text += "one comparison, none needed."
    return text


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[Col, str]]:
    """(column, row key) pairs; the Holm and --effect columns only when they say something."""
    first = rows[0] if rows else {}
    holm = first.get("comparisons", 1) > 1
    effect = first.get("effect")
    cols = [(Col("condition", kind="name"), "condition"),
            (Col("pairs", justify="right"), "n_pairs"),
            (Col("Δ mean", justify="right", drop=3), "diff_mean"),
            (Col("SD of Δ", justify="right", drop=5), "diff_sd"),
            (Col("d", justify="right", drop=4), "effect_size"),
            (Col("MDE", justify="right"), "mde"),
            (Col("seeds needed", justify="right"), "seeds_needed")]
    if holm:
        cols.append((Col("seeds (Holm)", justify="right"), "seeds_needed_holm"))
    if effect is not None:
        cols.append((Col(f"seeds for Δ={effect:g}", justify="right"), "seeds_for_effect"))
        if holm:
            cols.append((Col(f"seeds for Δ={effect:g} (Holm)", justify="right", drop=2),
                         "seeds_for_effect_holm"))
    return cols


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key.startswith("seeds_"):
        d = row["effect_size"] if key.startswith("seeds_needed") else row.get("effect")
        if value is not None:
            return str(value)
        if d == 0:
            return "never"
        return f">{MAX_SEEDS:.0e}" if d is not None and row.get("diff_sd") else MISSING
    if not isinstance(value, int | float):
        return MISSING if value is None else str(value)
    if key == "diff_mean":
        return f"{value:+.3g}"
    if key == "effect_size":
        return f"{value:+.2f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render_power(rows: Sequence[dict[str, Any]], fmt: OutputFormat | str) -> str | Group:
    """A table with the caption and one note per condition (fmt "table"), or md / csv / json."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.csv:
        return csv_text(rows)
    if fmt is OutputFormat.json:
        return json_text(list(rows))
    cols = _columns(rows)
    cells = [[_cell(r, key) for _, key in cols] for r in rows]
    if fmt is OutputFormat.md:
        table = markdown_table([c.header for c, _ in cols] + ["note"],
                               [c + [str(r["note"])] for c, r in zip(cells, rows, strict=True)])
        return f"{table}\n{caption(rows)}\n"
    fit = FitTable([c for c, _ in cols], title="power", caption=caption(rows))
    for row in cells:
        fit.add_row(*row)
    notes = [Text.assemble((f"{r['condition']}: ", "bold"), str(r["note"])) for r in rows]
    return Group(fit, *notes)
