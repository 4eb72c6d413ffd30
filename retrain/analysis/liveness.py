"""Is a run that its record calls running really running? The rule behind the running, stale,
dead and not-started states of `retrain status`, from the heartbeat a run writes.

A running run rewrites heartbeat.json in its run dir (retrain.sinks.heartbeat: pid, host, time,
step) at start and after every step, eval and checkpoint. `live_status` is pure apart from the
defaults of `now`, `host` and `alive`; `pid_alive` is the only system call.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FINAL_STATUSES = ("done", "failed", "interrupted")
HEARTBEAT_FILE = "heartbeat.json"  # written by retrain.sinks.heartbeat.HeartbeatSink
# A run recorded as running whose newest write (heartbeat, else metrics.jsonl) is older than
# max(STALE_MIN_S, STALE_STEPS x its median step time) is stale, unless its process is known
# to be alive on this host.
STALE_MIN_S = 300.0
STALE_STEPS = 10


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def stale_after(step_times: list[float]) -> float:
    """Seconds without a write after which a running run is stale: STALE_MIN_S, or STALE_STEPS
    times the median of its last 10 step times when that is longer."""
    typical = statistics.median(step_times[-10:]) if step_times else 0.0
    return max(STALE_MIN_S, STALE_STEPS * typical)


def live_status(heartbeat: dict[str, Any] | None, *, metrics_written: float | None,
                started: float | None, in_campaign: bool, stale_after_s: float,
                now: float | None = None, host: str | None = None,
                alive: Callable[[int], bool | None] | None = None) -> str:
    """What a run recorded as running is now: running, stale, dead or not started (or the final
    status its heartbeat recorded when summary.json is missing).

    Evidence older than the manifest's start of this attempt (a heartbeat or metrics left by an
    earlier attempt) does not count. With a heartbeat written on this host, its pid decides:
    alive is running, gone is dead. Otherwise (another host, a platform without the check, or
    no heartbeat: a run of an older retrain) the age of the newest write decides: running
    within `stale_after_s`, stale after. No evidence at all: a campaign run that started less
    than `stale_after_s` ago is running (loading its model), an older one stale; a lone run dir
    (only config.toml) is not started.
    """
    now = time.time() if now is None else now
    floor = started - 1.0 if started is not None else None  # manifest times are whole seconds
    beat = _number((heartbeat or {}).get("time"))
    if heartbeat is not None and beat is not None and (floor is None or beat >= floor):
        recorded = heartbeat.get("status")
        if recorded in FINAL_STATUSES:
            return str(recorded)
        pid = heartbeat.get("pid")
        if heartbeat.get("host") == (host or socket.gethostname()) and isinstance(pid, int):
            start = heartbeat.get("pid_start")
            verdict = alive(pid) if alive is not None else pid_alive(
                pid, start=start if isinstance(start, int) else None)
            if verdict is not None:
                return "running" if verdict else "dead"
        return "running" if now - beat <= stale_after_s else "stale"
    if metrics_written is not None and (floor is None or metrics_written >= floor):
        return "running" if now - metrics_written <= stale_after_s else "stale"
    if in_campaign:
        return "running" if started is not None and now - started <= stale_after_s else "stale"
    return "not started"


def pid_alive(pid: int, *, start: int | None = None) -> bool | None:
    """Whether process `pid` of this host is alive (a zombie is not); None when it cannot be told.
    `start` (the heartbeat's `pid_start`): a live process with that pid but another start time
    is a later process that reused the pid, and the run's process is gone."""
    if pid <= 0 or os.name != "posix":
        return None  # os.kill(0, ...) means the process group; on Windows it would send a signal
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    if fields[0] == "Z":
        return False
    return start is None or fields[19] == str(start)
