"""Offline analysis of campaigns and runs: status, comparison across seeds, plots, export, diff.

Sits after training in the data flow and reads only run directories (plan.json, manifest.json,
config.toml, metrics.jsonl, summary.json); it never imports the trainer or torch, so it works on
any machine that can see the files, also while a campaign is still writing them. scipy,
matplotlib and pandas are imported inside the functions that use them.

    from retrain.analysis import load_runs, comparison_rows
    df = load_runs("out/ablation")           # pandas DataFrame, one row per (run, step)
    rows = comparison_rows(Path("out/ablation"), metric="correct_rate", last_n=10)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module. Loaded on first use, so that importing one light module of the package
# (the CLI reads loading.DEFAULT_METRIC at start-up) does not import numpy, scipy or matplotlib.
_EXPORTS = {
    "compare_runs": "compare", "comparison_rows": "compare", "render_comparison": "compare",
    "diff_runs": "export", "export_records": "export", "render_diff": "export",
    "render_records": "export",
    "AnalysisError": "loading", "CampaignData": "loading", "RunData": "loading",
    "collect_runs": "loading", "discover": "loading", "load_campaign": "loading",
    "load_run": "loading", "load_runs": "loading",
    "plot_metrics": "plots", "save_figure": "plots",
    "campaign_status_table": "status", "status_renderable": "status", "watch_status": "status",
}

if TYPE_CHECKING:
    from retrain.analysis.compare import compare_runs, comparison_rows, render_comparison
    from retrain.analysis.export import diff_runs, export_records, render_diff, render_records
    from retrain.analysis.loading import (
        AnalysisError,
        CampaignData,
        RunData,
        collect_runs,
        discover,
        load_campaign,
        load_run,
        load_runs,
    )
    from retrain.analysis.plots import plot_metrics, save_figure
    from retrain.analysis.status import campaign_status_table, status_renderable, watch_status


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrain.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"retrain.analysis.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AnalysisError",
    "CampaignData",
    "RunData",
    "campaign_status_table",
    "collect_runs",
    "compare_runs",
    "comparison_rows",
    "diff_runs",
    "discover",
    "export_records",
    "load_campaign",
    "load_run",
    "load_runs",
    "plot_metrics",
    "render_comparison",
    "render_diff",
    "render_records",
    "save_figure",
    "status_renderable",
    "watch_status",
]
