"""What a person watching the terminal sees: Rich progress bars, [train] lines, a live layout.

Place in the data flow: a sink beside the files. Modes (docs/logging.md, "Console"):
  progress  progress bar (steps, reward, eval accuracy, s/step, ETA) + [train] lines every
            `log_every` steps, [eval]/[ckpt] lines (loss change since start and checkpoint), samples at the end
  live      a `rich.live.Live` view redrawn in place: current run, latest metrics, recent lines
  silent    the progress bar only, on a terminal (nothing when output goes to a pipe or file)
  none      nothing (build_sinks adds no ConsoleSink at all)
The console draws on the real terminal, under any `tee_output`, so run.log (written by
RunLogSink) gets the same lines without colours or bars. `CampaignDisplay` is the campaign view.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressBar,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from retrain.sinks.base import NullSink, RunInfo, eval_key
from retrain.sinks.runlog import terminal_stream
from retrain.sinks.text import TextReport

# Shown in the live metrics table, in this order, when present.
LIVE_FIELDS = ("loss", "mean_reward", "correct_rate", "running_correct_rate", "eval_accuracy",
               "eval_accuracy_se", "eval_sampled_accuracy", "kl", "grad_norm", "clip_frac", "lr", "sepa_lambda", "batch_size", "group_size",
               "tokens_per_s", "step_time_s", "bp_action", "bp_regime")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _acc(metrics: Mapping[str, Any]) -> str:
    """Eval accuracy with its standard error when known: `0.552±0.022`."""
    acc, se = metrics.get("eval_accuracy"), metrics.get("eval_accuracy_se")
    if isinstance(acc, float) and isinstance(se, float):
        return f"{acc:.3f}±{se:.3f}"
    return _fmt(acc)


def default_console() -> Console:
    return Console(file=terminal_stream())


class StepClock:
    """Seconds per step (mean of the last 10) and the ETA that follows."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=10)
        self._last = time.monotonic()

    def tick(self, step_time_s: Any) -> None:
        """Wall time since the previous step, so evals and checkpoints count towards the ETA; the
        first step after start-up uses its own step_time_s (the gap also holds model loading)."""
        now = time.monotonic()
        first = not self._times
        measured = step_time_s if first and isinstance(step_time_s, int | float) else now - self._last
        self._last = now
        self._times.append(float(measured))

    @property
    def s_per_step(self) -> float | None:
        return sum(self._times) / len(self._times) if self._times else None

    def eta(self, remaining: int) -> str:
        sps = self.s_per_step
        if sps is None:
            return "-"
        secs = math.ceil(sps * max(0, remaining))  # 0:00:00 only when nothing remains
        return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


class ConsoleSink(NullSink):
    """The run's terminal view; see the module docstring for the modes."""

    def __init__(self, mode: str = "progress", *, log_every: int = 1, sample_completions: int = 3,
                 console: Console | None = None) -> None:
        if mode not in ("progress", "live", "silent"):
            raise ValueError(f"ConsoleSink mode must be progress, live or silent, got {mode!r}")
        self.mode = mode
        self.console = console or default_console()
        self.report = TextReport(log_every=log_every, sample_completions=sample_completions)
        self.info: RunInfo | None = None
        self.clock = StepClock()
        self.step = 0
        self.latest: dict[str, Any] = {}
        self.recent: deque[str] = deque(maxlen=14)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._live: Live | None = None

    # ---- sink calls ---------------------------------------------------------------------------

    def start(self, info: RunInfo) -> None:
        self.info = info
        self.step = info.start_step
        self.report.start(info)
        if self.mode == "live":
            # Redrawn in place at the size of its content (a full-screen layout left ~25 empty
            # rows); the last frame stays in the scrollback when the run ends.
            self._live = Live(self._layout(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.start()
            self._say(f"{'resumed' if info.resumed else 'started'} {info.run_name}"
                      f" at step {info.start_step}")
            return
        if self.mode == "silent" and not self.console.is_terminal:
            return  # --silent shows a progress bar; in a pipe or a log file there is none to show
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]}"), TextColumn("eval {task.fields[acc]}"),
            TextColumn("{task.fields[sps]} s/step"), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, refresh_per_second=4, transient=False)
        self._task = self._progress.add_task(info.run_name, total=info.max_steps,
                                             completed=info.start_step,
                                             reward="-", acc="-", sps="-")
        self._progress.start()
        if info.resumed:
            self._say(f"resumed {info.run_name} at step {info.start_step}")

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("step")
        if isinstance(step, int):
            self.step = step
        self.clock.tick(metrics.get("step_time_s"))
        self.latest.update(metrics)
        self._say(*self.report.step(metrics))
        self._refresh()

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.latest.update({eval_key(k): v for k, v in metrics.items()})
        self._say(*self.report.eval(step, metrics))
        self._refresh()

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        self.report.generations(records)

    def log_checkpoint(self, step: int, path: Path) -> None:
        self._say(*self.report.checkpoint(step, path))
        self._refresh()

    def note(self, line: str) -> None:
        self._say(line)
        self._refresh()

    def finish(self, summary: Mapping[str, Any]) -> None:
        lines = self.report.finish(summary)
        self._refresh()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.mode != "silent":
            for line in lines:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    # ---- drawing ------------------------------------------------------------------------------

    def _say(self, *lines: str) -> None:
        """A text line: printed above the bar (progress), kept in the layout (live)."""
        for line in lines:
            if self.mode == "live":
                self.recent.append(line)
            elif self.mode == "progress":
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._layout())
        if self._progress is not None and self._task is not None:
            sps = self.clock.s_per_step
            self._progress.update(
                self._task, completed=self.step,
                reward=_fmt(self.latest.get("mean_reward")),
                acc=_acc(self.latest),
                sps="-" if sps is None else f"{sps:.2f}")

    def _layout(self) -> RenderableType:
        """Header with a bar, then the latest metrics beside the recent lines; as tall as its
        content."""
        info = self.info
        max_steps = info.max_steps if info else 0
        sps = self.clock.s_per_step
        head = Text.assemble(
            (f"{info.run_name if info else ''}", "bold"),
            f"  condition={info.condition if info else ''} seed={info.seed if info else ''}",
            f"  step {self.step}/{max_steps}",
            f"  {'-' if sps is None else f'{sps:.2f}'} s/step  ETA {self.clock.eta(max_steps - self.step)}",
        )
        bar = ProgressBar(total=max(1, max_steps), completed=self.step)
        table = Table(title="latest metrics", show_header=False, box=box.SIMPLE, pad_edge=False)
        table.add_column("metric", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        for name in LIVE_FIELDS:
            if name in self.latest:
                table.add_row(name, _fmt(self.latest[name]))
        body = Table.grid(expand=True, padding=(0, 2))
        body.add_column(no_wrap=True)
        body.add_column(ratio=1)
        body.add_row(table, Panel(Text("\n".join(self.recent) or "-"), title="recent"))
        return Group(Panel(Group(head, bar), title="retrain"), body)


class CampaignDisplay:
    """Progress of a campaign's runs: a live table on a terminal, plain status lines otherwise.

    The runner calls `update(run_name, step, max_steps, metrics)` whenever it learns something
    (thread-safe) and `finish_run(run_name, status)` at the end of each run.
    """

    def __init__(self, total_runs: int, *, title: str = "campaign", mode: str = "progress",
                 console: Console | None = None) -> None:
        self.total_runs = total_runs
        self.title = title
        self.mode = mode
        self.console = console or default_console()
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> CampaignDisplay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def interactive(self) -> bool:
        return self.mode != "none" and self.console.is_terminal

    def start(self) -> None:
        if self.interactive and self._live is None:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2,
                              transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()
            self._live = None

    def update(self, run_name: str, step: int, max_steps: int,
               metrics: Mapping[str, Any] | None = None, *, status: str = "running") -> None:
        with self._lock:
            row = self.rows.setdefault(run_name, {"status": "", "metrics": {}})
            changed = row["status"] != status
            row.update(step=step, max_steps=max_steps, status=status)
            row["metrics"].update({eval_key(k) if k in ("accuracy", "accuracy_se", "mean_length") else k: v
                                   for k, v in (metrics or {}).items()})
            self._show(run_name, changed)

    def finish_run(self, run_name: str, status: str) -> None:
        with self._lock:
            row = self.rows.setdefault(run_name, {"step": 0, "max_steps": 0, "metrics": {}})
            changed = row.get("status") != status
            row["status"] = status
            self._show(run_name, changed)

    def _show(self, run_name: str, status_changed: bool) -> None:
        if self.mode == "none" or (self.mode == "silent" and self._live is None):
            return  # --silent: the live table on a terminal, no status lines in a pipe
        if self._live is not None:
            self._live.update(self.render())
        elif status_changed:  # not a terminal: one line per state change, no redraws
            row = self.rows[run_name]
            done = sum(r["status"] in ("done", "failed", "interrupted") for r in self.rows.values())
            self.console.print(
                f"[{self.title}] {run_name}: {row['status']} step {row.get('step', 0)}"
                f"/{row.get('max_steps', 0)} ({done}/{self.total_runs} runs finished)",
                markup=False, highlight=False)

    def render(self) -> RenderableType:
        """One row per run. Sized for an 80-column terminal: the run name (condition and seed)
        is never cut, so there is no bar column (step shows progress) and no vertical rules."""
        done = sum(r["status"] in ("done", "failed", "interrupted") for r in self.rows.values())
        table = Table(title=f"{self.title}: {done}/{self.total_runs} runs finished",
                      box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for col in ("run", "status", "step", "reward", "eval acc", "loss"):
            table.add_column(col, no_wrap=True,
                             justify="left" if col in ("run", "status") else "right")
        for name, row in self.rows.items():
            m = row["metrics"]
            loss = m.get("loss")
            table.add_row(
                name, row["status"], f"{row.get('step', 0)}/{row.get('max_steps', 0)}",
                _fmt(m.get("mean_reward")), _acc(m),
                f"{loss:.3g}" if isinstance(loss, float) else _fmt(loss))
        return table
