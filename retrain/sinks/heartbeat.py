"""heartbeat.json: proof of life of a running run, for `retrain status`.

Place in the data flow: a sink like the others; it rewrites one small file in the run dir at
`start`, after steps, evals and checkpoints (at most once a second), and once more at `finish`
with the run's final status. A reader compares the time in it with the clock, and the pid with the processes
of its own host, to tell `running` from `stale` (no heartbeat for too long) and `dead` (the
writing process is gone), see `retrain.analysis.loading.live_status`.

The file (replaced atomically, so a reader never sees half of it):

    {"pid": 4242, "pid_start": 81234567, "host": "node-3", "time": 1767225600.0, "time_utc": "2026-01-01T00:00:00+00:00",
     "step": 17, "max_steps": 100, "status": "running"}

Not essential: a heartbeat that cannot be written is reported once and training goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.io import atomic_write_json
from retrain.sinks.base import NullSink, RunInfo

HEARTBEAT_FILE = "heartbeat.json"
# A running run rewrites the file at most this often: an atomic write costs an fsync, a
# sizeable share of a tiny model's step, while `stale` needs minutes of silence.
MIN_INTERVAL_S = 1.0


def heartbeat_record(*, step: int, max_steps: int, status: str, now: float | None = None) -> dict[str, Any]:
    """The heartbeat.json document of this process at `now` (default: the current time)."""
    now = time.time() if now is None else now
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "host": socket.gethostname(), "time": now,
            "time_utc": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "step": step, "max_steps": max_steps, "status": status}


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22): with
    the pid it names one process, so a pid the system reused later is told apart. None where
    /proc is missing."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace").read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class HeartbeatSink(NullSink):
    """Rewrites <run_dir>/heartbeat.json at every call the loop makes."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.step = 0
        self.max_steps = 0
        self._last = -float("inf")  # time.monotonic() of the last write

    def start(self, info: RunInfo) -> None:
        self.path = info.run_dir / HEARTBEAT_FILE
        self.step, self.max_steps = info.start_step, info.max_steps
        self._beat("running", force=True)

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("step")
        if isinstance(step, int):
            self.step = step
        self._beat("running")

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._beat("running")

    def log_checkpoint(self, step: int, path: Path) -> None:
        self._beat("running")

    def finish(self, summary: Mapping[str, Any]) -> None:
        status = summary.get("status")
        self._beat(status if isinstance(status, str) else "finished", force=True)

    def _beat(self, status: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._last < MIN_INTERVAL_S):
            return
        self._last = now
        atomic_write_json(self.path, heartbeat_record(step=self.step, max_steps=self.max_steps,
                                                      status=status))
