"""`retrain status [PATH] [--watch]` and the table behind `retrain campaign status`.

Reads manifests and the tails of metrics.jsonl only, so it is safe to run next to a campaign that
is writing. ETAs come from the runs' own step_time_s (median of the last steps); they are
estimates, not promises: evaluation steps and back-pressure change the pace.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from retrain.analysis.formats import MISSING, fmt_number
from retrain.analysis.loading import AnalysisError, CampaignData, RunData, discover, load_campaign

STATUS_STYLES = {"done": "green", "running": "cyan", "pending": "dim", "failed": "bold red",
                 "interrupted": "yellow"}
STALE_AFTER_S = 600.0  # a running run that has not written for this long is flagged
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
    if run.status in ("done", "failed", "interrupted") or not run.max_steps:
        return None
    per_step = seconds_per_step(run) or pace
    if per_step is None:
        return None
    return max(0, run.max_steps - run.step) * per_step


def _progress(run: RunData) -> str:
    if run.max_steps:
        return f"{run.step}/{run.max_steps} ({run.step / run.max_steps:.0%})"
    return str(run.step) if run.step else MISSING


def _age(run: RunData, now: float) -> Text:
    if run.updated is None:
        return Text(MISSING)
    age = now - run.updated
    stale = run.status == "running" and age > STALE_AFTER_S
    return Text(fmt_duration(age) + (" (stale?)" if stale else ""), style="yellow" if stale else "")


def _run_cells(run: RunData, now: float, pace: float | None) -> list[Text | str]:
    status = Text(run.status, style=STATUS_STYLES.get(run.status, ""))
    if run.status == "failed" and run.error:
        status.append(f" {run.error.splitlines()[-1][:60]}", style="red")
    return [run.name, status, _progress(run), fmt_number(run.latest("mean_reward")),
            fmt_number(run.latest("correct_rate")), fmt_number(run.latest("eval_accuracy")),
            _age(run, now), fmt_duration(run_eta(run, pace))]


def _status_table(runs: list[RunData], *, title: str, caption: str | None, now: float) -> Table:
    table = Table(title=title, caption=caption, header_style="bold", title_justify="left")
    for name in ("run", "status", "step", "reward", "correct", "eval acc", "age", "ETA"):
        table.add_column(name, no_wrap=name in ("run", "step"))
    paces = [p for p in map(seconds_per_step, runs) if p is not None]
    pace = statistics.median(paces) if paces else None
    for run in runs:
        table.add_row(*_run_cells(run, now, pace))
    return table


def _campaign_caption(campaign: CampaignData) -> str:
    counts = {s: sum(r.status == s for r in campaign.runs) for s in STATUS_STYLES}
    parts = [campaign.status, f"{counts['done']}/{len(campaign.runs)} done"]
    parts += [f"{n} {s}" for s, n in counts.items() if n and s != "done"]
    paces = [p for p in map(seconds_per_step, campaign.runs) if p is not None]
    pace = statistics.median(paces) if paces else None
    left = [e for e in (run_eta(r, pace) for r in campaign.runs) if e is not None]
    if left and campaign.status == "running":
        # Work left spread over the runs going at once now; a rough guide for a pool executor.
        parallel = max(1, counts["running"])
        parts.append(f"ETA ~{fmt_duration(sum(left) / parallel)}")
    return " · ".join(parts)


def campaign_table(campaign: CampaignData, *, now: float | None = None) -> Table:
    return _status_table(campaign.runs, title=f"campaign {campaign.name}  ({campaign.path})",
                         caption=_campaign_caption(campaign), now=time.time() if now is None else now)


def campaign_status_table(campaign_dir: Path) -> Table:
    """Per-run status, step/total, latest reward, correct rate and eval accuracy, age and ETA."""
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        raise AnalysisError(f"{campaign_dir}: not a directory")
    return campaign_table(load_campaign(campaign_dir))


def status_renderable(path: Path, *, now: float | None = None) -> Group:
    """Every campaign and stand-alone run under `path`, one table per campaign."""
    campaigns, loose = discover(Path(path))
    if not campaigns and not loose:
        raise AnalysisError(f"{path}: no campaigns or runs found")
    now = time.time() if now is None else now
    parts: list[Table] = [campaign_table(c, now=now) for c in campaigns]
    if loose:
        parts.append(_status_table(loose, title=f"runs  ({path})", caption=None, now=now))
    return Group(*parts)


def watch_status(path: Path, *, interval: float = 5.0, refreshes: int | None = None,
                 console: Console | None = None) -> None:
    """Redraw the status every `interval` seconds until Ctrl+C (or `refreshes` redraws)."""
    from rich.live import Live

    count = 0
    with Live(status_renderable(path), console=console, auto_refresh=False) as live:
        try:
            while refreshes is None or count < refreshes:
                time.sleep(interval)
                live.update(status_renderable(path), refresh=True)
                count += 1
        except KeyboardInterrupt:
            pass
