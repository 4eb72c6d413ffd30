"""`retrain analyze compare`: one row per condition, aggregated over seeds, tested against a
baseline. Also what the campaign runner calls for its end-of-campaign summary.md.

Data flow: run dirs → `loading.collect_runs` → per-run curve summaries (`stats.run_stats`) →
mean and interval over seeds → paired test vs the baseline → flat rows → `formats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Group
from rich.text import Text

from retrain.analysis import gain, stats
from retrain.analysis.formats import (
    Col,
    OutputFormat,
    csv_text,
    fmt_interval,
    fmt_number,
    json_text,
    markdown_table,
    rich_table,
)
from retrain.analysis.loading import (
    DEFAULT_METRIC,
    AnalysisError,
    RunData,
    as_number,
    check_metric,
    collect_runs,
)

DEFAULT_BASELINE = gain.DEFAULT_BASELINE
# eval_gain / eval_sampled_gain: final − initial eval (greedy / mean@k) of each run.
EVAL_STATS = ("eval_accuracy", "eval_gain", "eval_sampled_gain")
STATS = (*stats.RUN_STATS, *EVAL_STATS)
CI_METHODS = ("t", "bootstrap")
TESTS = ("t", "wilcoxon")


def final_eval_accuracy(run: RunData) -> float | None:
    """summary.json final_eval.accuracy, else the last eval_accuracy logged in metrics.jsonl."""
    final = (run.summary or {}).get("final_eval")
    if isinstance(final, dict) and as_number(final.get("accuracy")) is not None:
        return as_number(final.get("accuracy"))
    return run.latest("eval_accuracy")


def trained_series(run: RunData, metric: str) -> tuple[list[int], list[float]]:
    """`run.series(metric)` from step 1 on. The step-0 row is the eval before any training (for
    eval_* metrics): it is the run's starting point, reported as the initial eval of the gain,
    never its final, best or last-N value, nor a step at which it reached the threshold."""
    steps, values = run.series(metric)
    keep = [i for i, step in enumerate(steps) if step > 0]
    return [steps[i] for i in keep], [values[i] for i in keep]


def default_threshold(runs: Sequence[RunData], metric: str) -> float | None:
    """0.5 for rate-like metrics (every value in [0, 1]); otherwise no threshold."""
    values = [v for r in runs for v in r.series(metric)[1]]
    return 0.5 if values and all(0.0 <= v <= 1.0 for v in values) else None


def comparison_rows(
    campaign_dir: Path,
    *,
    metric: str = DEFAULT_METRIC,
    last_n: int = 10,
    baseline: str | None = None,
    stat: str = "last_n",
    ci: str = "t",
    test: str = "t",
    threshold: float | None = None,
    level: float = 0.95,
) -> list[dict[str, object]]:
    """One flat row per condition (plan order) of every run under `campaign_dir`; see
    `compare_runs` for the keys."""
    return compare_runs(collect_runs(Path(campaign_dir)), metric=metric, last_n=last_n,
                        baseline=baseline, stat=stat, ci=ci, test=test, threshold=threshold,
                        level=level)


def compare_runs(
    runs: Sequence[RunData],
    *,
    metric: str = DEFAULT_METRIC,
    last_n: int = 10,
    baseline: str | None = None,
    stat: str = "last_n",
    ci: str = "t",
    test: str = "t",
    threshold: float | None = None,
    level: float = 0.95,
) -> list[dict[str, object]]:
    """Rows with, per statistic s in STATS: `s_mean`, `s_low`, `s_high` (interval over seeds);
    and against the baseline on statistic `stat`: `diff`, `p_value` (raw), `p_holm` (Holm-adjusted
    over the conditions tested against the baseline), `test`, `n_pairs`, `mde` (the smallest |Δ|
    a paired t-test over these pairs detects with 80% power, `stats.min_detectable_effect`),
    `verdict`. `eval_gain` / `eval_sampled_gain` are each run's final − initial eval (see
    `gain.run_eval`); the gain table itself is `gain.gain_rows`.
    """
    _check_options(runs, metric=metric, last_n=last_n, stat=stat, ci=ci, test=test, level=level)
    higher = stats.higher_is_better(metric)
    if threshold is None:
        threshold = default_threshold(runs, metric)
    conditions = list(dict.fromkeys(r.condition for r in runs))
    base = gain.resolve_baseline(conditions, baseline)
    per_run = run_summaries(runs, metric=metric, last_n=last_n, threshold=threshold)
    tested = {cond: stats.compare_to_baseline(seed_values(per_run.get(cond, {}), runs, stat),
                                              seed_values(per_run.get(base, {}), runs, stat),
                                              test=test)
              for cond in conditions if cond != base}
    adjusted = dict(zip(tested, stats.holm([t.p_value for t in tested.values()]), strict=True))
    rows = []
    for cond in conditions:
        row = _condition_row(cond, runs, per_run.get(cond, {}), metric=metric, ci=ci,
                             level=level, last_n=last_n, threshold=threshold)
        row.update(_baseline_columns(cond, base, per_run, runs, tested.get(cond),
                                     adjusted.get(cond), metric=metric, stat=stat,
                                     higher=higher, comparisons=len(tested)))
        rows.append(row)
    return rows


def run_summaries(runs: Sequence[RunData], *, metric: str, last_n: int, threshold: float | None
                  ) -> dict[str, dict[int, dict[str, float | None]]]:
    """{condition: {index in `runs`: {statistic: value}}} for every statistic in STATS; runs
    that logged nothing yet (pending) are left out. Keyed by position in `runs`: names repeat
    when a tree holds several campaigns."""
    higher = stats.higher_is_better(metric)
    per_run: dict[str, dict[int, dict[str, float | None]]] = {}
    for idx, run in enumerate(runs):
        steps, values = trained_series(run, metric)
        if not values and final_eval_accuracy(run) is None:
            continue  # pending: nothing logged yet
        summary = stats.run_stats(steps, values, last_n=last_n, threshold=threshold, higher=higher)
        summary["eval_accuracy"] = final_eval_accuracy(run)
        summary["eval_gain"] = gain.run_eval(run, "accuracy").gain
        summary["eval_sampled_gain"] = gain.run_eval(run, "sampled_accuracy").gain
        per_run.setdefault(run.condition, {})[idx] = summary
    return per_run


def _check_options(runs: Sequence[RunData], *, metric: str, last_n: int, stat: str, ci: str,
                   test: str, level: float) -> None:
    check_metric(list(runs), metric)
    if last_n < 1:
        raise AnalysisError(f"--last must be >= 1, got {last_n}")
    if stat not in STATS:
        raise AnalysisError(f"unknown statistic '{stat}'; choose one of: {', '.join(STATS)}")
    if ci not in CI_METHODS:
        raise AnalysisError(f"unknown interval method '{ci}'; choose one of: {', '.join(CI_METHODS)}")
    if test not in TESTS:
        raise AnalysisError(f"unknown test '{test}'; choose one of: {', '.join(TESTS)}")
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"confidence level must be in (0, 1), got {level}")


def _condition_row(cond: str, runs: Sequence[RunData], summaries: dict[int, dict[str, float | None]],
                   *, metric: str, ci: str, level: float, last_n: int,
                   threshold: float | None) -> dict[str, object]:
    cond_runs = [r for r in runs if r.condition == cond]
    seeds = [runs[i].seed for i in summaries]
    row: dict[str, object] = {
        "condition": cond, "metric": metric, "n": len(summaries), "seeds": seeds,
        "runs_total": len(cond_runs), "runs_done": sum(r.status == "done" for r in cond_runs),
        "ci": ci, "level": level, "last_n": last_n, "threshold": threshold,
    }
    for name in STATS:
        values = [v for s in summaries.values() if (v := s[name]) is not None]
        interval = stats.mean_interval(values, method=ci, level=level)
        row[f"{name}_mean"], row[f"{name}_low"], row[f"{name}_high"] = (
            interval.mean, interval.low, interval.high)
    reached = [s["steps_to_threshold"] for s in summaries.values()]
    row["threshold_reached"] = sum(v is not None for v in reached)
    return row


def seed_values(summaries: dict[int, dict[str, float | None]], runs: Sequence[RunData],
              stat: str) -> dict[int, float]:
    """{seed: value of `stat`}; runs sharing a seed are averaged, seedless runs never pair."""
    groups: dict[int, list[float]] = {}
    for idx, summary in summaries.items():
        value = summary.get(stat)
        if value is None:
            continue
        seed = runs[idx].seed
        # A run without a seed gets a key no other run (of either condition) can share.
        groups.setdefault(seed if seed is not None else -1 - idx, []).append(value)
    return {s: sum(v) / len(v) for s, v in groups.items()}


def _baseline_columns(cond: str, base: str, per_run: dict[str, dict[int, dict[str, float | None]]],
                      runs: Sequence[RunData], result: stats.TestResult | None,
                      p_holm: float | None, *, metric: str, stat: str, higher: bool,
                      comparisons: int) -> dict[str, object]:
    out: dict[str, object] = {"baseline": base, "stat": stat}
    if result is None:
        return {**out, "diff": None, "p_value": None, "p_holm": None, "test": None,
                "n_pairs": None, "mde": None, "verdict": "baseline"}
    label = stat if stat in EVAL_STATS else f"{metric} ({stat})"
    if stat in EVAL_STATS:
        higher = True
    elif stat == "steps_to_threshold":
        higher = False  # reaching the threshold in fewer steps is better
    note = ""
    if comparisons > 1 and p_holm is not None and result.p_value is not None:
        note = f"; Holm-adjusted over {comparisons} comparisons p={p_holm:.3g}"
        if result.p_value < 0.05 <= p_holm:
            note += " (not significant after adjustment)"
    text = stats.verdict(cond, base, result, metric=label, higher=higher, note=note)
    mde = None
    if result.name != "Welch t (unpaired)":
        diffs = stats.paired_differences(seed_values(per_run.get(cond, {}), runs, stat),
                                         seed_values(per_run.get(base, {}), runs, stat))
        mde = stats.min_detectable_effect(len(diffs), stats.sample_sd(diffs))
    decisive = p_holm if comparisons > 1 else result.p_value
    if mde is not None and (decisive is None or decisive >= 0.05):
        text += f"; with {result.n} seeds only |Δ| >= {mde:.3g} is detectable (80% power)"
    unfinished = sum(r.status != "done" for r in runs if r.condition in (cond, base))
    if unfinished:
        text += f"; partial: {unfinished} run(s) of these two conditions not done"
    return {**out, "diff": result.diff, "p_value": result.p_value, "p_holm": p_holm,
            "test": result.name, "n_pairs": result.n, "mde": mde, "verdict": text}


def _display(rows: Sequence[dict[str, object]]) -> tuple[list[str], list[list[str]]]:
    """Condensed cells for humans: one `mean [low, high]` per statistic."""
    first = rows[0] if rows else {}
    thr = first.get("threshold")
    stat = first.get("stat")
    holm = sum(r.get("verdict") != "baseline" for r in rows) > 1
    columns = ["condition", "n", "final", "best", f"last-{first.get('last_n')}", "AUC",
               f"steps→{fmt_number(thr)}" if thr is not None else "steps→thr", "eval acc",
               "eval gain", f"Δ {stat}", "p", *(["p (Holm)"] if holm else []), "MDE", "test",
               "verdict"]
    cells = []
    for row in rows:

        def iv(name: str, row: dict[str, object] = row) -> str:
            return fmt_interval(_num(row.get(f"{name}_mean")), _num(row.get(f"{name}_low")),
                                _num(row.get(f"{name}_high")))

        steps = iv("steps_to_threshold")
        if thr is not None:
            steps += f" ({row['threshold_reached']}/{row['n']})"
        done = f"{row['n']}" + (f" ({row['runs_done']}/{row['runs_total']} done)"
                                if row["runs_done"] != row["runs_total"] else "")
        cells.append([str(row["condition"]), done, iv("final"), iv("best"), iv("last_n"), iv("auc"),
                      steps, iv("eval_accuracy"), iv("eval_gain"), fmt_number(row.get("diff")),
                      fmt_number(row.get("p_value"), 3),
                      *([fmt_number(row.get("p_holm"), 3)] if holm else []),
                      fmt_number(row.get("mde"), 3), fmt_number(row.get("test")),
                      str(row.get("verdict"))])
    return columns, cells


# Which columns a narrow terminal hides first (higher first); the condition, n, the statistic the
# test uses, Δ, p and p (Holm) always stay. Keyed by position in `_display`'s columns, then (for
# the columns after p, whose position depends on whether p (Holm) is shown) by header.
_DROP = {2: 5, 3: 7, 4: 3, 5: 8, 6: 9, 7: 4, 8: 6}
_DROP_BY_NAME = {"MDE": 2}
_STAT_COLUMN = {"final": 2, "best": 3, "last_n": 4, "auc": 5, "steps_to_threshold": 6,
                "eval_accuracy": 7, "eval_gain": 8}


def _columns(names: Sequence[str], stat: str) -> list[Col]:
    tested = _STAT_COLUMN.get(stat)
    return [Col(name, kind="name" if i == 0 else "words", justify="left" if i == 0 else "right",
                drop=0 if i == tested else _DROP.get(i, _DROP_BY_NAME.get(name, 0)))
            for i, name in enumerate(names)]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def render_comparison(rows: Sequence[dict[str, object]], fmt: OutputFormat | str) -> str | Group:
    """A Rich table plus verdict lines (fmt "table"), or the text of the md / csv / json form."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.csv:
        return csv_text(rows)
    if fmt is OutputFormat.json:
        return json_text(list(rows))
    columns, cells = _display(rows)
    if fmt is OutputFormat.md:
        return markdown_table(columns, cells)
    first = rows[0] if rows else {}
    level = _num(first.get("level")) or 0.95
    caption = (f"{first.get('metric')}: mean over seeds, {level:.0%} "
               f"{'bootstrap' if first.get('ci') == 'bootstrap' else 't'} interval; "
               f"Δ and p vs {first.get('baseline')}"
               + ("; p raw, p (Holm) adjusted over the conditions tested" if
                  sum(r.get("verdict") != "baseline" for r in rows) > 1 else "")
               + "; MDE: smallest |Δ| a paired t-test detects with 80% power at this n")
    # Verdicts are sentences; they read better under the table than squeezed into a column.
    table = rich_table(_columns(columns[:-2], str(first.get("stat"))), [c[:-2] for c in cells],
                       title="comparison", caption=caption)
    verdicts = [Text.assemble((f"{c[0]}: ", "bold"), c[-1]) for c in cells if c[-1] != "baseline"]
    return Group(table, *verdicts)
