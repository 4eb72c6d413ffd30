"""`retrain status [PATH] [--watch]` and `retrain campaign status DIR [--watch]`.

Reads manifests, heartbeats and metrics.jsonl only, so it is safe to run next to a campaign that
is writing. A run's status is what `loading` says: the recorded one, with a run recorded as
running checked against its heartbeat (running, stale, dead, not started; see
`liveness.live_status`). ETAs come from the runs' own step_time_s (median of the last steps);
they are estimates, not promises: evaluation steps and back-pressure change the pace.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.text import Text

from retrain.analysis.formats import MISSING, Col, FitTable, fmt_number, print_result
from retrain.analysis.loading import (
    AnalysisError,
    CampaignData,
    RunData,
    discover,
    is_campaign_dir,
    is_run_dir,
    load_campaign,
)

STATUS_STYLES = {"done": "green", "running": "cyan", "pending": "dim", "not started": "dim",
                 "stale": "yellow", "dead": "bold red", "failed": "bold red", "interrupted": "yellow",
                 "skipped": "dim"}
_ETA_STATUSES = ("running", "pending", "not started")  # the others will not go on by themselves
_PACE_WINDOW = 10


def fmt_duration(seconds: float | None) -> str:
    """Compact duration: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return MISSING
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def seconds_per_step(run: RunData) -> float | None:
    """Median step_time_s of the last steps; else wall time / steps for finished runs."""
    _, times = run.series("step_time_s")
    if times:
        return statistics.median(times[-_PACE_WINDOW:])
    if run.wall_time_s and run.step:
        return run.wall_time_s / run.step
    return None


def run_eta(run: RunData, pace: float | None = None) -> float | None:
    """Seconds until `run` reaches max_steps at its own pace (or `pace` when it has none)."""
    if run.status not in _ETA_STATUSES or not run.max_steps:
        return None
    per_step = seconds_per_step(run) or pace
    if per_step is None:
        return None
    return max(0, run.max_steps - run.step) * per_step


def _progress(run: RunData) -> str:
    if run.status == "skipped":
        return MISSING
    if run.max_steps:
        return f"{run.step}/{run.max_steps} ({run.step / run.max_steps:.0%})"
    return str(run.step) if run.step else MISSING


def _age(run: RunData, now: float) -> Text:
    if run.updated is None:
        return Text(MISSING)
    return Text(fmt_duration(now - run.updated), style=STATUS_STYLES[run.status]
                if run.status in ("stale", "dead") else "")


def _run_cells(run: RunData, now: float, pace: float | None) -> list[Text | str]:
    status = Text(run.status, style=STATUS_STYLES.get(run.status, ""))
    if run.status == "failed" and run.error:
        status.append(f" {run.error.strip().splitlines()[-1]}", style="red")
    elif run.status == "dead" and run.heartbeat:
        status.append(f" (pid {run.heartbeat.get('pid')} is gone)", style="red")
    elif run.status == "skipped" and run.reason:  # sequential seeds: not needed
        status.append(f" ({run.reason})", style="dim")
    return [run.name, status, _progress(run), fmt_number(run.latest("mean_reward")),
            fmt_number(run.latest("correct_rate")), fmt_number(run.latest("eval_accuracy")),
            _age(run, now), fmt_duration(run_eta(run, pace))]


# On a narrow terminal the metrics go first, then ETA and age; run, status and step always stay.
_COLUMNS = (Col("run", kind="name"), Col("status", kind="text"), Col("step"),
            Col("reward", justify="right", drop=5), Col("correct", justify="right", drop=4),
            Col("eval acc", justify="right", drop=3), Col("age", drop=1), Col("ETA", drop=2))


def _status_table(runs: list[RunData], *, title: str, caption: str | None, now: float) -> FitTable:
    # One line per run: on a narrow terminal the metrics are hidden before a cell wraps.
    table = FitTable([Col(c.header, c.justify, c.kind, c.drop) for c in _COLUMNS], title=title,
                     caption=caption, one_line=True)
    paces = [p for p in map(seconds_per_step, runs) if p is not None]
    pace = statistics.median(paces) if paces else None
    for run in runs:
        table.add_row(*_run_cells(run, now, pace))
    return table


def _campaign_caption(campaign: CampaignData) -> str:
    counts = {s: sum(r.status == s for r in campaign.runs) for s in STATUS_STYLES}
    # skipped runs (sequential seeds) will never run: they are not part of the work
    parts = [campaign.status, f"{counts['done']}/{len(campaign.runs) - counts['skipped']} done"]
    if campaign.status == "running" and not counts["running"] and (counts["dead"] or counts["stale"]):
        # The manifest cannot say that the campaign process was killed; its runs can.
        parts[0] = (f"running per its manifest, but no run is alive: `retrain campaign resume "
                    f"{campaign.path}` continues it")
    parts += [f"{n} {s}" for s, n in counts.items() if n and s != "done"]
    paces = [p for p in map(seconds_per_step, campaign.runs) if p is not None]
    pace = statistics.median(paces) if paces else None
    left = [e for e in (run_eta(r, pace) for r in campaign.runs) if e is not None]
    if left and campaign.status == "running":
        # Work left spread over the runs going at once now; a rough guide for a pool executor.
        parallel = max(1, counts["running"])
        parts.append(f"ETA ~{fmt_duration(sum(left) / parallel)}")
    return " · ".join(parts)


def campaign_table(campaign: CampaignData, *, now: float | None = None) -> FitTable:
    return _status_table(campaign.runs, title=f"campaign {campaign.name}  ({campaign.path})",
                         caption=_campaign_caption(campaign), now=time.time() if now is None else now)


def campaign_status_table(campaign_dir: Path) -> FitTable:
    """Per-run status, step/total, latest reward, correct rate and eval accuracy, age and ETA;
    an AnalysisError when `campaign_dir` is not a campaign directory."""
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        raise AnalysisError(f"{campaign_dir}: no such directory")
    if not is_campaign_dir(campaign_dir):
        what = ("it is a run dir" if is_run_dir(campaign_dir)
                else "it is empty" if not any(campaign_dir.iterdir()) else "it has neither file")
        raise AnalysisError(
            f"{campaign_dir} is not a campaign directory: a campaign dir holds plan.json and "
            f"manifest.json (and runs/<run>/ per run), as `retrain campaign run` writes it; "
            f"{what}. For run dirs, or a directory holding campaigns, use `retrain status "
            f"{campaign_dir}`")
    return campaign_table(load_campaign(campaign_dir))


def status_renderable(path: Path, *, now: float | None = None) -> Group:
    """Every campaign and stand-alone run under `path`, one table per campaign."""
    campaigns, loose = discover(Path(path))
    if not campaigns and not loose:
        raise AnalysisError(f"{path}: no campaigns or runs found")
    now = time.time() if now is None else now
    tables: list[FitTable] = [campaign_table(c, now=now) for c in campaigns]
    if loose:
        tables.append(_status_table(loose, title=f"runs  ({path})", caption=None, now=now))
    parts: list[RenderableType] = []
    for table in tables:
        parts += [Text(""), table] if parts else [table]
    return Group(*parts)


def watch_status(path: Path, *, interval: float = 5.0, refreshes: int | None = None,
                 console: Console | None = None,
                 render: Callable[[], RenderableType] | None = None) -> None:
    """Show the status every `interval` seconds until Ctrl+C (or `refreshes` more times).

    `render` builds what is shown (default: `status_renderable(path)`). In a terminal it is
    redrawn in place; elsewhere (a pipe, a log file) each snapshot is printed in full under a
    line with the time, so that a log of the watch reads top to bottom.
    """
    from rich.live import Live

    from retrain.ui import console as default_console

    show = render or (lambda: status_renderable(path))
    out = console or default_console
    count = 0
    try:
        if out.is_terminal:
            with Live(show(), console=out, auto_refresh=False) as live:
                while refreshes is None or count < refreshes:
                    time.sleep(interval)
                    live.update(show(), refresh=True)
                    count += 1
            return
        while True:
            snapshot = show()  # built before the time line, so a failure prints no orphan line
            print_result(out, Group(Text(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}"), snapshot))
            if refreshes is not None and count >= refreshes:
                return
            time.sleep(interval)
            count += 1
    except KeyboardInterrupt:
        pass
