"""In-process executor: runs one after another in this process (torch is imported once)."""

from __future__ import annotations

from pathlib import Path

from retrain.executors.base import EventFn, RunTask, execute_run
from retrain.trainer.state import StopFlag


class InProcessExecutor:
    def __init__(self, *, console_mode: str = "none") -> None:
        self.console_mode = console_mode
        self.stop = StopFlag()

    def run(self, tasks: list[RunTask], on_event: EventFn) -> None:
        for task in tasks:
            if self.stop.requested:
                break
            on_event("started", task.name, None)
            self.stop.stop_file = Path(task.stop_file)
            outcome = execute_run(task, console_mode=self.console_mode, stop=self.stop)
            on_event("finished", task.name, outcome)

    def request_stop(self) -> None:
        self.stop.set("campaign stop requested")

    def kill(self) -> None:
        # Nothing to kill: the second Ctrl+C already raised KeyboardInterrupt in this process,
        # which ended the run (its sinks wrote status interrupted) on the way out.
        return None
