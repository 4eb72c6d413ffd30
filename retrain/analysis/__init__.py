"""Offline analysis of campaigns and runs: status, comparison across seeds, plots, export, diff.

Sits after training in the data flow and reads only run directories (plan.json, manifest.json,
config.toml, metrics.jsonl, summary.json); it never imports the trainer or torch, so it works on
any machine that can see the files, also while a campaign is still writing them. scipy,
matplotlib and pandas are imported inside the functions that use them.

    from retrain.analysis import load_runs, comparison_rows
    df = load_runs("out/ablation")           # pandas DataFrame, one row per (run, step)
    rows = comparison_rows(Path("out/ablation"), metric="correct_rate", last_n=10)
"""

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
