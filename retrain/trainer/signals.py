"""Ctrl+C / SIGTERM handling shared by `retrain run` and campaigns.

The first signal asks the loop to stop after the current step, write a checkpoint and mark the
run interrupted; a second one stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from retrain.trainer.state import StopFlag


@contextmanager
def graceful_stop(stop: StopFlag, *, on_first: Callable[[], None] | None = None,
                  quiet: bool = False) -> Iterator[StopFlag]:
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count == 1:
            stop.set("SIGTERM" if signum == signal.SIGTERM else "SIGINT")
            if not quiet:
                print("\nstopping after this step (checkpoint + manifest); press Ctrl+C again to "
                      "stop now", file=sys.stderr, flush=True)
            if on_first is not None:
                on_first()
            return
        raise KeyboardInterrupt

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
