"""Trainer state: everything besides weights and optimizer that a resumed run needs to continue
exactly where it stopped. Saved as `trainer_state.json` in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainerState:
    step: int = 0  # last completed optimizer step
    data_cursor: int = 0  # index of the next training problem
    correct_total: int = 0  # running counts for running_correct_rate
    completions_total: int = 0
    skipped_groups_total: int = 0  # groups with no learning signal (all rewards equal)
    skipped_streak: int = 0  # consecutive steps that made no update, up to the last one
    sepa: dict[str, object] = field(default_factory=dict)  # SepaScheduler.state_dict()
    backpressure: dict[str, object] = field(default_factory=dict)  # BackpressureController.state_dict()
    wall_time_s: float = 0.0  # training wall time summed over invocations
    best_eval_accuracy: float | None = None
    best_eval_step: int | None = None
    initial_eval: dict[str, float] | None = None
    last_eval: dict[str, float] | None = None
    # multi-phase runs (trainer/phases.py)
    phase_cursors: dict[str, int] = field(default_factory=dict)  # next training problem per phase
    phase_good: str = ""  # ledger entry of the last good adapter (what a rollback restores)
    phase_lr_scale: float = 1.0  # product of probe.lr_decay_on_rollback over the rollbacks so far
    phase_commit_probe: dict[str, float] = field(default_factory=dict)  # probe accuracy at each phase's commit
    phase_records: list[dict[str, Any]] = field(default_factory=list)  # consolidated_metrics.json "phases"
    replay_cursors: dict[str, int] = field(default_factory=dict)  # next replayed problem per phase
    replay_count: int = 0  # replayed prompts so far (picks the earlier phase in turn)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TrainerState:
        """Keys this version does not know (written by an older one) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        known: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        return cls(**known)


class StopFlag:
    """Asks a run to stop after its current step (checkpoint, status interrupted).

    Set in-process by a signal handler, or from outside: a campaign creates `stop_file` (works
    for pool workers and Ray tasks on shared storage), and a worker whose parent process died
    (`parent_pid` no longer alive) stops too, so a killed campaign leaves no run behind.
    """

    def __init__(self, *, stop_file: Path | None = None, parent_pid: int | None = None) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.stop_file = stop_file
        self.parent_pid = parent_pid

    def set(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        if self._event.is_set():
            return True
        if self.stop_file is not None and self.stop_file.exists():
            self.set("campaign stop requested")
        elif self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.set("campaign process died")
        return self._event.is_set()
