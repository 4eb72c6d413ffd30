"""Multi-phase runs across seeds: per condition, the forgetting matrix averaged over seeds, the
mean forgetting and the final accuracy over groups, each with a 95% t-interval over seeds.
A campaign of multi-phase runs puts this section in its summary.md.

Data flow: runs (loading.collect_runs) → each run's consolidated_metrics.json
(phase_report.load_consolidated) → **phase_comparison_md**.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retrain.analysis import stats
from retrain.analysis.formats import fmt_interval, markdown_table
from retrain.analysis.loading import AnalysisError, RunData
from retrain.analysis.phase_report import (
    CONSOLIDATED_FILE,
    PhaseDoc,
    forgetting_matrix,
    forgetting_summary,
    load_consolidated,
)


def _docs(runs: Sequence[RunData]) -> dict[str, list[PhaseDoc]]:
    """condition → the consolidated docs of its runs that have one."""
    out: dict[str, list[PhaseDoc]] = {}
    for run in runs:
        if not (Path(run.run_dir) / CONSOLIDATED_FILE).is_file():
            continue
        try:
            out.setdefault(run.condition, []).append(load_consolidated(run.run_dir))
        except AnalysisError:
            continue  # a damaged file: the run is left out of this section
    return out


def _final_mean(doc: PhaseDoc) -> float | None:
    _, _, matrix = forgetting_matrix(doc)
    last = [v for v in (matrix[-1] if matrix else []) if v is not None]
    return sum(last) / len(last) if last else None


def phase_comparison_md(runs: Sequence[RunData]) -> str | None:
    """The summary.md section of a campaign of multi-phase runs; None when no run has phases."""
    by_cond = _docs(runs)
    if not by_cond:
        return None
    rows = []
    for cond, docs in by_cond.items():
        forgetting = stats.mean_interval([f for d in docs if (f := forgetting_summary(d).mean_forgetting) is not None])
        final = stats.mean_interval([v for d in docs if (v := _final_mean(d)) is not None])
        rows.append([cond, str(len(docs)), fmt_interval(final.mean, final.low, final.high),
                     fmt_interval(forgetting.mean, forgetting.low, forgetting.high)])
    lines = ["## Multi-phase runs", "",
             "Per condition, over seeds (mean [95% t-interval]): the final held-out accuracy averaged "
             "over the phase groups, and the mean forgetting (Chaudhry et al. 2018: per group, the "
             "best accuracy after any earlier phase minus the final one, averaged over the groups "
             "trained before the last phase; docs/phases.md).", "",
             markdown_table(["condition", "seeds", "final accuracy (mean over groups)", "mean forgetting"],
                            rows).rstrip(), ""]
    for cond, docs in by_cond.items():
        labels, cols, _ = forgetting_matrix(docs[0])
        cells: list[list[str]] = []
        for i, label in enumerate(labels):
            row = [label]
            for j in range(len(cols)):
                vals = []
                for d in docs:
                    r, c, m = forgetting_matrix(d)
                    if r == labels and c == cols and m[i][j] is not None:
                        vals.append(float(m[i][j]))  # type: ignore[arg-type]
                iv = stats.mean_interval(vals)
                row.append(fmt_interval(iv.mean, iv.low, iv.high))
            cells.append(row)
        lines += [f"### Forgetting matrix: {cond} ({len(docs)} seeds)", "",
                  "Held-out accuracy on each group (column) right after each phase (row), mean over "
                  "seeds [95% t-interval].", "",
                  markdown_table(["after phase", *cols], cells).rstrip(), ""]
    return "\n".join(lines) + "\n"
