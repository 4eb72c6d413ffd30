"""SEPA: pool execution-token uncertainty toward its completion mean, on a schedule.

Data flow: h_T (token uncertainty) ──▶ `sepa_pool` (λ from `SepaScheduler`) ──▶ gtpo weights.
The trainer asks `lambda_for_step(step)` before a step and calls `update(step, ...)` after it
with the step's correct rate and the execution-token uncertainty variance measured *before*
pooling (`metrics["exec_uncertainty_var"]` of `pipeline.compute_advantages`).

Pooling: for an execution (non-planning) token of completion i,
    h'(t) = λ · mean_exec_i + (1 − λ) · h(t),
mean_exec_i the mean uncertainty of completion i's execution tokens; planning tokens are
untouched. At λ = 1 every execution token of a completion has the same uncertainty, so gtpo
stops redistributing credit among execution tokens and only planning tokens stand out: credit
concentrates on strategy once execution has become routine. No paper is cited for SEPA
(selective entropy pooling with annealing): this docstring and docs/algorithms.md are its
specification. It builds on GTPO (arXiv 2508.04349) and on HICRA's planning/execution split
(arXiv 2509.03646).

Schedule, decided here:
- The correctness gate (`correct_rate_gate` > 0) is sticky: λ is 0 until a step's correct rate
  reaches the gate; from then on the gate stays open (also across resume). Gate 0 = open from
  step 0.
- **The ramp starts at the gate opening.** If the update after step s opens the gate, step s+1 is
  SEPA's step zero: λ(t) = clip((t − (s+1) − delay_steps) / steps, 0, 1), so λ grows from 0 then
  rather than jumping to the value an ungated ramp would have reached. Without a gate the origin
  is step 0. Reason: the gate exists because pooling is premature before the model solves
  anything; jumping to a large λ the moment it first does would be the abrupt change the gate
  was meant to avoid.
- `auto`: after the gate opens (and the delay has passed — same as linear), the first
  `auto_warmup_steps` updates measure a baseline (the mean of their execution-uncertainty
  variances); afterwards an EMA (decay `ema_decay`, started at the baseline) tracks the variance
  and λ_auto = clip((1 − ema/baseline) / (1 − auto_threshold), 0, 1): 0 at the baseline, 1 once
  the EMA has fallen to `auto_threshold` × baseline. λ_auto only ratchets up (a noisy rebound in
  variance does not undo pooling), and the linear ramp is the floor: λ = max(λ_linear, λ_auto).
  Steps with a non-finite variance (no execution tokens) are skipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from retrain.algo import ragged

SCHEDULES = ("linear", "auto")
STATE_VERSION = 1


def sepa_pool(h_T: np.ndarray, planning_T: np.ndarray, offsets: np.ndarray, *,
              lam: float, plan_idx_P: np.ndarray | None = None) -> np.ndarray:
    """λ·mean_exec + (1 − λ)·h on execution tokens, h on planning tokens; new float64 [T].

    `plan_idx_P` (= flatnonzero(planning_T)) may be passed when the caller has it already.
    A completion without execution tokens is returned unchanged.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"sepa lambda must be in [0, 1], got {lam}")
    h_T = np.asarray(h_T, dtype=np.float64)
    if lam == 0.0:
        return h_T.copy()
    if plan_idx_P is None:
        plan_idx_P = np.flatnonzero(planning_T)
    n = offsets.shape[0] - 1
    h_P = h_T[plan_idx_P]
    plan_seg_P = ragged.segment_of(plan_idx_P, offsets)
    # Execution sums = completion sums − planning sums: planning tokens are sparse, so this
    # needs no temporary of size T.
    exec_sum_N = ragged.segment_sum(h_T, offsets) - np.bincount(plan_seg_P, h_P, minlength=n)
    exec_count_N = ragged.lengths(offsets) - np.bincount(plan_seg_P, minlength=n)
    mean_exec_N = exec_sum_N / np.maximum(exec_count_N, 1)
    if lam == 1.0:
        out_T = ragged.broadcast(mean_exec_N, offsets)
    else:
        # (λ/(1−λ)·mean + h)·(1−λ) = λ·mean + (1−λ)·h, computed in one buffer.
        out_T = ragged.broadcast(mean_exec_N * (lam / (1.0 - lam)), offsets)
        out_T += h_T
        out_T *= 1.0 - lam
    out_T[plan_idx_P] = h_P
    return out_T


class SepaScheduler:
    """λ per step: linear ramp or auto (variance EMA, linear floor), behind a sticky gate."""

    def __init__(self, *, schedule: str, steps: int, delay_steps: int, correct_rate_gate: float,
                 ema_decay: float, auto_warmup_steps: int, auto_threshold: float) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"sepa schedule must be one of {SCHEDULES}, got {schedule!r}")
        if steps < 1 or delay_steps < 0 or auto_warmup_steps < 1:
            raise ValueError("sepa: need steps >= 1, delay_steps >= 0, auto_warmup_steps >= 1")
        if not (0.0 <= correct_rate_gate <= 1.0 and 0.0 <= ema_decay < 1.0
                and 0.0 < auto_threshold < 1.0):
            raise ValueError("sepa: need correct_rate_gate in [0,1], ema_decay in [0,1), "
                             "auto_threshold in (0,1)")
        self.schedule = schedule
        self.steps = steps
        self.delay_steps = delay_steps
        self.correct_rate_gate = correct_rate_gate
        self.ema_decay = ema_decay
        self.auto_warmup_steps = auto_warmup_steps
        self.auto_threshold = auto_threshold
        # State (everything below goes into state_dict).
        self._open_step: int | None = 0 if correct_rate_gate <= 0.0 else None
        self._warmup_vars: list[float] = []
        self._baseline: float | None = None
        self._ema: float | None = None
        self._auto_lambda = 0.0

    @property
    def gate_open(self) -> bool:
        return self._open_step is not None

    @property
    def open_step(self) -> int | None:
        """SEPA's step zero: the first step that runs with the gate open (None: still closed)."""
        return self._open_step

    def _ramp_started(self, step: int) -> bool:
        return self._open_step is not None and step >= self._open_step + self.delay_steps

    def lambda_for_step(self, step: int) -> float:
        """λ to use at `step`, before its results are known; in [0, 1]."""
        if self._open_step is None or not self._ramp_started(step):
            return 0.0
        lam = min(1.0, (step - self._open_step - self.delay_steps) / self.steps)
        if self.schedule == "auto":
            lam = max(lam, self._auto_lambda)
        return float(min(1.0, max(0.0, lam)))

    def update(self, step: int, *, correct_rate: float, exec_var: float) -> None:
        """Record the results of `step`: may open the gate, feeds the auto schedule."""
        if self._open_step is None:
            if correct_rate >= self.correct_rate_gate:
                self._open_step = step + 1
            return
        if self.schedule != "auto" or not self._ramp_started(step) or not math.isfinite(exec_var):
            return
        if self._baseline is None:
            self._warmup_vars.append(float(exec_var))
            if len(self._warmup_vars) >= self.auto_warmup_steps:
                self._baseline = float(np.mean(self._warmup_vars))
                self._ema = self._baseline
            return
        assert self._ema is not None
        self._ema = self.ema_decay * self._ema + (1.0 - self.ema_decay) * float(exec_var)
        if self._baseline > 0.0:
            drop = (1.0 - self._ema / self._baseline) / (1.0 - self.auto_threshold)
            self._auto_lambda = max(self._auto_lambda, min(1.0, max(0.0, drop)))

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-safe state (ints, floats, None, lists) for checkpoints."""
        return {
            "version": STATE_VERSION,
            "schedule": self.schedule,
            "open_step": self._open_step,
            "warmup_vars": list(self._warmup_vars),
            "baseline": self._baseline,
            "ema": self._ema,
            "auto_lambda": self._auto_lambda,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"sepa state version {d.get('version')!r} != {STATE_VERSION}")
        if d.get("schedule") != self.schedule:
            raise ValueError(f"sepa state is for schedule {d.get('schedule')!r}, "
                             f"this scheduler is {self.schedule!r}")
        open_step = d["open_step"]
        self._open_step = None if open_step is None else int(open_step)
        self._warmup_vars = [float(v) for v in d["warmup_vars"]]
        self._baseline = None if d["baseline"] is None else float(d["baseline"])
        self._ema = None if d["ema"] is None else float(d["ema"])
        self._auto_lambda = float(d["auto_lambda"])
