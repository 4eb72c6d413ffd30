"""End-of-run and end-of-campaign reports: auto-squeeze of the first finished adapter, and the
comparison of conditions across seeds (summary.md + manifest).

Both read only files on disk (adapter dir, metrics.jsonl, summary.json) through the squeeze and
analysis packages, so a report can be re-made from a finished campaign at any time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape

from retrain.campaign.grid import CampaignSpec
from retrain.io import atomic_write_text

Say = Callable[[str], None]  # a status message
Show = Callable[[Any], None]  # a result (table, verdict); the caller decides whether to print


def run_squeeze(spec: CampaignSpec, out: Path, run_name: str, *, say: Say, show: Show) -> dict[str, Any]:
    """Analyse `run_name`'s final adapter; results go to <out>/squeeze/ and the returned dict."""
    from retrain.errors import RetrainError
    from retrain.squeeze.analysis import analyze_adapter
    from retrain.squeeze.report import render_table, write_report

    sq = spec.base.squeeze
    adapter = out / "runs" / run_name / "adapter"
    try:
        result = analyze_adapter(adapter, ranks=sq.ranks or None, min_variance=sq.min_variance_retention,
                                 min_layer=sq.min_layer_retention)
    except RetrainError as exc:
        say(f"[yellow]squeeze skipped[/]: {escape(str(exc))}")
        return {"run": run_name, "error": str(exc)}
    report_dir = out / "squeeze"
    write_report(result, report_dir)
    info: dict[str, Any] = {"run": run_name, **result.summary(), "report": "squeeze/squeeze.json"}
    if sq.compress_to:
        from retrain.squeeze.compress import compress_adapter

        rank = result.recommended_rank if sq.compress_to == -1 else sq.compress_to
        try:
            path = compress_adapter(adapter, rank, report_dir / f"adapter_r{rank}")
            info["compressed_adapter"] = str(path.relative_to(out))
        except RetrainError as exc:
            say(f"[yellow]squeeze compression skipped[/]: {escape(str(exc))}")
            info["compress_error"] = str(exc)
    log = spec.base.logging
    if log.wandb_project:
        from retrain.squeeze.report import log_squeeze_to_wandb

        try:
            log_squeeze_to_wandb(result, project=log.wandb_project, entity=log.wandb_entity or None,
                                 group=log.wandb_group or None, mode=log.wandb_mode or None)
        except Exception as exc:  # noqa: BLE001 - wandb trouble must not fail the campaign
            say(f"[yellow]squeeze wandb logging failed[/]: {escape(str(exc))}")
    show(render_table(result))
    say(f"squeeze: recommended rank {result.recommended_rank} of {result.source_rank} "
        f"(>= {sq.min_variance_retention:.0%} variance retained) from {run_name}")
    return info


def write_comparison(spec: CampaignSpec, out: Path, manifest: Any, *, say: Say,
                     show: Show) -> list[dict[str, Any]] | None:
    """Per condition, over seeds: the gain of held-out accuracy over the condition's own initial
    eval (mean, 95% t-interval, paired test vs the baseline), then the curve statistics of
    DEFAULT_METRIC (the one `retrain analyze compare` uses by default), its mean over the last
    N steps first. Printed, written to summary.md (gain table first),
    returned for the manifest (each comparison row carries its gain row under `gain`)."""
    from retrain.analysis.compare import compare_runs, render_comparison
    from retrain.analysis.gain import gain_rows, render_gains_md, render_gains_rich
    from retrain.analysis.loading import DEFAULT_METRIC, collect_runs
    from retrain.errors import RetrainError

    last_n = spec.base.campaign.compare_last_n
    try:
        runs = collect_runs(out)
        rows = compare_runs(runs, metric=DEFAULT_METRIC, last_n=last_n)
        gains = gain_rows(runs, baseline=str(rows[0]["baseline"]) if rows else None)
    except RetrainError as exc:
        say(f"[yellow]no comparison[/]: {escape(str(exc))}")
        return None
    by_cond = {g["condition"]: g for g in gains}
    for row in rows:
        row["gain"] = by_cond.get(row["condition"])
    findings, audited = _audit(spec, runs)
    manifest.data["audit"] = [dataclasses.asdict(f) for f in findings] if audited else None
    counts = manifest.counts()
    failed = {n: r for n, r in manifest.runs.items() if r["status"] == "failed"}
    lines = [
        f"# Campaign {spec.name}",
        "",
        f"Spec hash `{manifest.data['spec_hash']}`; runs: "
        + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ".",
        "",
        "## Gain over each condition's own initial eval",
        "",
        render_gains_md(gains).rstrip(),
        "",
        f"## Training curves ({DEFAULT_METRIC}: final, best, mean over the last {last_n} steps; "
        "final eval accuracy; mean and 95% interval over seeds)",
        "",
        str(render_comparison(rows, "md")).rstrip(),
        "",
    ]
    if audited:
        from retrain.analysis.audit import audit_md

        lines += ["## Intervention audit", "",
                  "What did not happen, per condition (docs/analysis.md, \"Intervention audit\").", "",
                  audit_md(findings, audited).rstrip(), ""]
    from retrain.campaign.sequential import summary_lines as sequential_lines

    lines += sequential_lines(manifest.data)  # the looks of seeds_policy = "until_decided"
    from retrain.analysis.phase_compare import phase_comparison_md

    phases_md = phase_comparison_md(runs)  # campaigns of multi-phase runs ([[phases]])
    if phases_md:
        lines += [phases_md.rstrip(), ""]
    sq = manifest.data.get("squeeze") or {}
    if "squeeze/recommended_rank" in sq:
        lines += ["## LoRA-Squeeze", "",
                  f"Recommended rank **{sq['squeeze/recommended_rank']}** of {sq['squeeze/source_rank']} "
                  f"({sq['squeeze/num_layers']} layers, threshold {sq['squeeze/min_variance_retention']:.0%}, "
                  f"from run `{sq['run']}`); details in `squeeze/squeeze.json`.", ""]
    if failed:
        lines += ["## Failed runs", ""]
        for name, rec in failed.items():
            tail = (rec.get("error") or "").strip().splitlines()[-3:]
            lines += [f"- `{name}` (attempts {rec.get('attempts', 0)}):", "", "  ```",
                      *[f"  {t}" for t in tail], "  ```", ""]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    show(render_gains_rich(gains))
    show(summary_table(rows, last_n=last_n, metric=DEFAULT_METRIC))
    if audited:
        from retrain.analysis.audit import audit_rich

        show(audit_rich(findings, audited))
    for name, rec in failed.items():
        last = (rec.get("error") or "").strip().splitlines()[-1:] or [""]
        say(f"[red]failed[/] {name}: {escape(last[0])}")
    return rows


def _audit(spec: CampaignSpec, runs: list[Any]) -> tuple[list[Any], list[str]]:
    """The intervention audit of the campaign's runs with its `[audit]` thresholds (none when off)."""
    cfg = spec.base.audit
    if not cfg.enabled:
        return [], []
    from retrain.analysis.audit import AuditThresholds, audit_runs, audited_conditions

    thresholds = AuditThresholds(no_signal_frac=cfg.no_signal_frac,
                                 max_token_hit_rate=cfg.max_token_hit_rate)
    return audit_runs(runs, thresholds), audited_conditions(runs)


def _ci(row: dict[str, Any], key: str) -> str:
    mean, low, high = row.get(f"{key}_mean"), row.get(f"{key}_low"), row.get(f"{key}_high")
    if not isinstance(mean, int | float):
        return "—"
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{mean:.2f}±{(high - low) / 2:.2f}"
    return f"{mean:.2f}"


def summary_table(rows: list[dict[str, Any]], *, last_n: int, metric: str) -> Any:
    """The training-curve table under the gain table: one line per condition, fits 80 columns.
    Title and caption are lines of their own: the table is narrow, and Rich would wrap them to
    its width."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    base = rows[0].get("baseline") if rows else None
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=True)
    table.add_column("condition", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column(f"last-{last_n}", justify="right", no_wrap=True)
    table.add_column("Δ", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    for r in rows:
        diff, p = r.get("diff"), r.get("p_value")
        table.add_row(str(r["condition"]), str(r.get("n", "")), _ci(r, "last_n"),
                      f"{diff:+.3f}" if isinstance(diff, int | float) else "—",
                      f"{p:.3f}" if isinstance(p, int | float) else "—")
    return Group(Text(f"training {metric}: mean ± 95% CI half-width over seeds", style="italic"),
                 table,
                 Text(f"last-{last_n}: mean {metric} over the last {last_n} steps; Δ and paired p "
                      f"vs {base}", style="dim"))
