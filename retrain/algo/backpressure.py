"""Back-pressure: choose the next step's size from measured throughput with the USL.

Where it sits: at the end of every training step the trainer calls
``BackpressureController.observe(size=…, tokens=…, seconds=…)`` with the size it just used, the
tokens it generated plus trained, and the step's wall time. The returned ``BpDecision`` holds the
size for the next step and the ``bp_*`` metrics for ``metrics.jsonl``. What "size" means is the
trainer's business (sequences in flight in ``concurrency`` mode, prompts per step in ``batch``
mode); this module only sees integers and seconds. Pure numpy/scipy, no package imports at runtime.

Model: Gunther's Universal Scalability Law (N. J. Gunther, *Guerrilla Capacity Planning*, 2007)

    X(p) = x1 · p / (1 + σ(p − 1) + κ p(p − 1)),     p* = sqrt((1 − σ) / κ)

σ is contention (serial fraction), κ coherency (crosstalk); throughput peaks at p* and falls
beyond it (the retrograde region). The controller aims at ``throttle_margin · p*``, just below the
knee, where throughput is close to the peak and latency is not yet paying for it.

Deviations from the textbook recipe:
- Gunther normalises by X(1) and regresses p/C − 1 on p − 1. We never need a measurement at p = 1:
  p / X(p) = a + b(p − 1) + c p(p − 1) is linear in (a, b, c) = (1, σ, κ) / x1, so we solve it by
  non-negative least squares with relative (1/y) row weights, which makes σ, κ >= 0 by
  construction and treats multiplicative noise evenly across sizes.
- The fit uses one point per size: the EMA of that size's throughput, for sizes still in the
  sliding window. With fewer than three distinct sizes in the window the last fit is kept (a
  controller that holds one size for a whole window stops learning; see docs/backpressure.md).
- Sizes are integers: the target is round(throttle_margin · p*) and retrograde means
  "size > target" (not "size > throttle_margin · p*"), so a throttle always changes the size
  and a size sitting on its rounded target is never throttled.
- The first decision after warm-up moves straight to the target (action ``settle``) without
  waiting for hysteresis; afterwards a move needs ``hysteresis`` consecutive agreeing decisions.
- Drift: points of sizes no longer visited go stale. When the throughput of the size being held
  is off its level (as measured once held) by more than 15% for ``hysteresis`` steps in a row,
  the window and fit are dropped and the warm-up runs again from the current size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import nnls

if TYPE_CHECKING:
    from retrain.config.schema import BackpressureConfig

__all__ = [
    "BackpressureController",
    "BpDecision",
    "fit_usl",
    "usl_p_star",
    "usl_throughput",
]

# Warm-up stops growing once a size's throughput falls this far below the best seen (past the knee).
_UP_DROP = 0.10
# Warm-up stops shrinking once throughput falls below this fraction of the best (linear region).
_DOWN_FLOOR = 0.5
# Holding one size, `hysteresis` consecutive steps whose throughput is off by more than this from
# the level measured once the size had been held `hysteresis` steps mean the curve moved: the
# warm-up runs again. Consecutive raw steps, not the EMA, so one slow step never triggers it.
_DRIFT = 0.15
_STATE_VERSION = 1


def usl_throughput(
    p: np.ndarray | float, sigma: float, kappa: float, x1: float = 1.0
) -> np.ndarray:
    """USL throughput X(p) = x1 · p / (1 + σ(p − 1) + κ p(p − 1))."""
    p_arr = np.asarray(p, dtype=np.float64)
    return x1 * p_arr / (1.0 + sigma * (p_arr - 1.0) + kappa * p_arr * (p_arr - 1.0))


def fit_usl(
    p: np.ndarray, x: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Fit the USL to throughput ``x`` measured at sizes ``p``; returns ``(sigma, kappa, x1)``.

    ``weights`` (optional, > 0) scale each point's squared relative residual, e.g. the number of
    measurements averaged into it. Needs at least three distinct sizes (three parameters), every
    ``p >= 1`` and ``x > 0``. Raises ``ValueError`` when the data cannot identify the curve.
    """
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    w_arr = np.ones_like(p_arr) if weights is None else np.asarray(weights, np.float64).ravel()
    if p_arr.shape != x_arr.shape or p_arr.shape != w_arr.shape:
        raise ValueError(f"p, x, weights differ in length: {p_arr.size}, {x_arr.size}, {w_arr.size}")
    if not np.all(w_arr > 0):
        raise ValueError("weights must be positive")
    if not (np.all(np.isfinite(p_arr)) and np.all(np.isfinite(x_arr))):
        raise ValueError("p and x must be finite")
    if np.any(p_arr < 1) or np.any(x_arr <= 0):
        raise ValueError("need p >= 1 and x > 0")
    if np.unique(p_arr).size < 3:
        raise ValueError("need at least three distinct sizes to fit the USL")
    y = p_arr / x_arr  # = (1 + σ(p-1) + κp(p-1)) / x1
    design = np.column_stack([np.ones_like(p_arr), p_arr - 1.0, p_arr * (p_arr - 1.0)])
    # Relative residuals (divide by y): multiplicative noise weighs the same at every p.
    root_w = np.sqrt(w_arr)
    weighted = design * (root_w / y)[:, None]
    # Columns span ~1 to ~p²; equilibrate so the active-set solver is well conditioned.
    scale = np.linalg.norm(weighted, axis=0)
    coef_scaled, _ = nnls(weighted / scale, root_w)
    a, b, c = (coef_scaled / scale).tolist()
    if not a > 0.0:
        raise ValueError("degenerate fit: throughput at p = 1 extrapolates to infinity")
    return b / a, c / a, 1.0 / a


def usl_p_star(sigma: float, kappa: float) -> float | None:
    """Size of peak throughput sqrt((1 − σ)/κ); ``None`` when it has no finite peak."""
    if kappa <= 0.0 or sigma >= 1.0:
        return None
    return math.sqrt((1.0 - sigma) / kappa)


@dataclass(frozen=True)
class BpDecision:
    """What the controller decided after one observed step."""

    action: str  # "warmup" | "settle" | "hold" | "increase" | "throttle"
    regime: str  # "warmup" | "retrograde" | "below_target" | "optimal"
    size: int  # size to use for the NEXT step
    p_star: float | None
    sigma: float | None
    kappa: float | None
    utilization: float | None  # observed size / p*
    throughput: float  # this step's measured tokens/s

    def metrics(self) -> dict[str, float | int | str | None]:
        """The ``bp_*`` fields of a metrics.jsonl row."""
        return {
            "bp_action": self.action,
            "bp_regime": self.regime,
            "bp_p_star": self.p_star,
            "bp_sigma": self.sigma,
            "bp_kappa": self.kappa,
            "bp_utilization": self.utilization,
            "bp_throughput": self.throughput,
        }


class BackpressureController:
    """Moves the size towards ``throttle_margin · p*`` of a USL fitted online.

    Warm-up explores sizes geometrically: doubling from ``initial_size`` until throughput drops
    past the knee (or ``max_size``), then halving below ``initial_size`` until throughput is
    clearly in the linear region (or ``min_size``), then revisiting the explored sizes in
    ascending order until ``warmup_steps`` observations are in. Warm-up lasts longer only while a
    fit is impossible and there is still something to explore.
    """

    def __init__(
        self,
        *,
        initial_size: int,
        warmup_steps: int = 10,
        ema_decay: float = 0.9,
        throttle_margin: float = 0.85,
        increase_margin: float = 0.5,
        min_size: int = 1,
        max_size: int = 256,
        window: int = 32,
        hysteresis: int = 3,
    ) -> None:
        errors = []
        if min_size < 1 or max_size < min_size:
            errors.append(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        if warmup_steps < 1:
            errors.append(f"warmup_steps must be >= 1, got {warmup_steps}")
        if not 0.0 <= ema_decay < 1.0:
            errors.append(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0.0 < increase_margin <= throttle_margin <= 1.0:
            errors.append(
                "need 0 < increase_margin <= throttle_margin <= 1, "
                f"got {increase_margin}, {throttle_margin}"
            )
        if window < 3:
            errors.append(f"window must be >= 3, got {window}")
        if hysteresis < 1:
            errors.append(f"hysteresis must be >= 1, got {hysteresis}")
        if errors:
            raise ValueError("; ".join(errors))
        self.warmup_steps = warmup_steps
        self.ema_decay = ema_decay
        self.throttle_margin = throttle_margin
        self.increase_margin = increase_margin
        self.min_size = min_size
        self.max_size = max_size
        self.window = window
        self.hysteresis = hysteresis
        self._size = self._clip(initial_size)
        self._steps = 0
        self._obs: list[tuple[int, float]] = []  # the sliding window: (size, tokens/s)
        self._ema: dict[int, tuple[float, int]] = {}  # size -> (biased EMA, observations)
        self._fit: tuple[float, float, float] | None = None
        self._fit_sizes: list[int] = []  # the sizes the current fit was computed from
        self._phase = "up"  # warm-up: "up" -> "down" -> "cycle" -> "done"
        self._explored: list[int] = []
        self._best = 0.0
        self._cycle_idx = 0
        self._pending: str | None = None
        self._pending_count = 0
        self._last: BpDecision | None = None
        self._warmup_start = 0  # step count when the current warm-up began
        self._hold_size = 0  # size of the current run of identical sizes, its length and level
        self._hold_n = 0
        self._hold_ref: float | None = None
        self._drift_n = 0  # consecutive held steps off the reference level

    @classmethod
    def from_config(cls, cfg: BackpressureConfig, initial_size: int) -> BackpressureController:
        """Build from the ``[backpressure]`` table; ``cfg.enabled``/``cfg.mode`` are the trainer's."""
        return cls(
            initial_size=initial_size,
            warmup_steps=cfg.warmup_steps,
            ema_decay=cfg.ema_decay,
            throttle_margin=cfg.throttle_margin,
            increase_margin=cfg.increase_margin,
            min_size=cfg.min_size,
            max_size=cfg.max_size,
            window=cfg.window,
            hysteresis=cfg.hysteresis,
        )

    @property
    def size(self) -> int:
        """Size to use for the next step."""
        return self._size

    @property
    def last_decision(self) -> BpDecision | None:
        return self._last

    # ------------------------------------------------------------------ observe

    def observe(self, *, size: int, tokens: int, seconds: float) -> BpDecision:
        """Record one step (``size`` used, ``tokens`` generated + trained, wall ``seconds``)."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not seconds > 0.0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be positive and finite, got {seconds}")
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        size = int(size)
        throughput = float(tokens) / float(seconds)
        self._steps += 1
        self._record(size, throughput)
        if self._phase == "done" and self._drifted(size, throughput):
            self._restart_warmup()
            self._record(size, throughput)
        if self._phase != "done":
            decision = self._warmup_decision(size, throughput)
        else:
            decision = self._control_decision(size, throughput)
        self._size = decision.size
        self._last = decision
        return decision

    def _record(self, size: int, throughput: float) -> None:
        self._obs.append((size, throughput))
        del self._obs[: max(0, len(self._obs) - self.window)]
        biased, count = self._ema.get(size, (0.0, 0))
        self._ema[size] = (
            self.ema_decay * biased + (1.0 - self.ema_decay) * throughput,
            count + 1,
        )
        in_window = {s for s, _ in self._obs}
        self._ema = {s: v for s, v in self._ema.items() if s in in_window}
        # Refit only while the window still holds every size the current fit used: once sizes
        # age out (the controller holding one size), the few points left cannot pin the knee
        # and a refit on them would be noise, so the last good fit stays.
        if len(in_window) >= 3 and in_window.issuperset(self._fit_sizes):
            sizes = sorted(in_window)
            try:
                self._fit = fit_usl(
                    np.array(sizes),
                    np.array([self._level(s) for s in sizes]),
                    np.array([self._effective_count(s) for s in sizes]),
                )
                self._fit_sizes = sizes
            except ValueError:
                pass  # keep the previous fit

    def _drifted(self, size: int, throughput: float) -> bool:
        """Has the throughput of the size being held moved away from its level when first held?"""
        if size != self._hold_size:
            self._hold_size, self._hold_n, self._hold_ref, self._drift_n = size, 0, None, 0
        self._hold_n += 1
        if self._hold_n == self.hysteresis:
            self._hold_ref = self._level(size)
        elif self._hold_ref is not None:
            off = abs(throughput / self._hold_ref - 1.0) > _DRIFT
            self._drift_n = self._drift_n + 1 if off else 0
        return self._drift_n >= self.hysteresis

    def _restart_warmup(self) -> None:
        """Forget the window and the fit (measured on a curve that no longer holds); explore again."""
        self._obs, self._ema, self._fit, self._fit_sizes = [], {}, None, []
        self._phase, self._explored, self._best, self._cycle_idx = "up", [], 0.0, 0
        self._pending, self._pending_count = None, 0
        self._hold_size, self._hold_n, self._hold_ref, self._drift_n = 0, 0, None, 0
        self._warmup_start = self._steps - 1  # the current observation is the first of the new one

    def _effective_count(self, size: int) -> float:
        """How many independent measurements the EMA of a size is worth: (Σw)² / Σw²."""
        d, n = self.ema_decay, self._ema[size][1]
        if d == 0.0:
            return 1.0
        return (1.0 - d**n) ** 2 * (1.0 + d) / ((1.0 - d) * (1.0 - d ** (2 * n)))

    def _level(self, size: int) -> float:
        """Bias-corrected EMA of a size's throughput (an even average over its first few steps)."""
        biased, count = self._ema[size]
        return biased / (1.0 - self.ema_decay**count)

    # ------------------------------------------------------------------ warm-up

    def _warmup_decision(self, size: int, throughput: float) -> BpDecision:
        best_before = self._best
        level = self._level(size)
        self._best = max(self._best, level)
        if size not in self._explored:
            self._explored.append(size)
        nxt = self._next_explore(size, level, best_before)
        done = self._steps - self._warmup_start >= self.warmup_steps
        if done and (self._fit is not None or self._phase == "cycle"):
            self._phase = "done"
            if self._fit is None:  # fewer than three sizes exist between min_size and max_size
                best = max(sorted(self._ema), key=self._level)
                return self._decision("settle" if best != size else "hold", "warmup", best, size,
                                      throughput)
            target, p_star = self._target()
            regime = self._classify(size, target, p_star)
            action = "settle" if target != size else "hold"
            return self._decision(action, regime, target, size, throughput)
        return self._decision("warmup", "warmup", nxt, size, throughput)

    def _next_explore(self, size: int, level: float, best_before: float) -> int:
        just_turned = False
        if self._phase == "up":
            if size < self.max_size and level >= (1.0 - _UP_DROP) * best_before:
                return self._clip(2 * size)
            self._phase, just_turned = "down", True
        if self._phase == "down":
            lowest = min(self._explored)
            enough = len(self._explored) >= 3 and level < _DOWN_FLOOR * self._best
            if lowest > self.min_size and (just_turned or not enough):
                return self._clip(lowest // 2)
            self._phase = "cycle"
        ladder = sorted(self._explored)
        nxt = ladder[self._cycle_idx % len(ladder)]
        if nxt == size and len(ladder) > 1:  # do not measure the same size twice in a row
            self._cycle_idx += 1
            nxt = ladder[self._cycle_idx % len(ladder)]
        self._cycle_idx += 1
        return nxt

    # ------------------------------------------------------------------ control

    def _target(self) -> tuple[int, float | None]:
        assert self._fit is not None
        sigma, kappa, _ = self._fit
        p_star = usl_p_star(sigma, kappa)
        if p_star is not None:
            return self._clip(round(self.throttle_margin * p_star)), p_star
        # No finite knee: throughput never falls (kappa = 0) or never rises (sigma >= 1).
        return (self.max_size if sigma < 1.0 else self.min_size), None

    def _classify(self, size: int, target: int, p_star: float | None) -> str:
        if size > target:
            return "retrograde"
        low = self.increase_margin * p_star if p_star is not None else math.inf
        if size < target and size < low:
            return "below_target"
        return "optimal"

    def _control_decision(self, size: int, throughput: float) -> BpDecision:
        if self._fit is None:
            return self._decision("hold", "warmup", size, size, throughput)
        target, p_star = self._target()
        regime = self._classify(size, target, p_star)
        if regime == "optimal":
            self._pending, self._pending_count = None, 0
            return self._decision("hold", regime, size, size, throughput)
        if regime == self._pending:
            self._pending_count += 1
        else:
            self._pending, self._pending_count = regime, 1
        if self._pending_count < self.hysteresis:
            return self._decision("hold", regime, size, size, throughput)
        self._pending, self._pending_count = None, 0
        action = "throttle" if regime == "retrograde" else "increase"
        return self._decision(action, regime, target, size, throughput)

    def _decision(
        self, action: str, regime: str, next_size: int, observed: int, throughput: float
    ) -> BpDecision:
        sigma = kappa = p_star = utilization = None
        if self._fit is not None:
            sigma, kappa, _ = self._fit
            p_star = usl_p_star(sigma, kappa)
            utilization = observed / p_star if p_star is not None else None
        return BpDecision(
            action=action,
            regime=regime,
            size=self._clip(next_size),
            p_star=p_star,
            sigma=sigma,
            kappa=kappa,
            utilization=utilization,
            throughput=throughput,
        )

    def _clip(self, size: int) -> int:
        return int(min(self.max_size, max(self.min_size, size)))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """JSON-safe state: window, EMA, fit, warm-up progress, hysteresis, last decision."""
        return {
            "version": _STATE_VERSION,
            "size": self._size,
            "steps": self._steps,
            "window": [[s, x] for s, x in self._obs],
            "ema": [[s, m, n] for s, (m, n) in sorted(self._ema.items())],
            "fit": list(self._fit) if self._fit is not None else None,
            "fit_sizes": list(self._fit_sizes),
            "phase": self._phase,
            "explored": list(self._explored),
            "best": self._best,
            "cycle_idx": self._cycle_idx,
            "pending": self._pending,
            "pending_count": self._pending_count,
            "last": asdict(self._last) if self._last is not None else None,
            "warmup_start": self._warmup_start,
            "hold": [self._hold_size, self._hold_n, self._hold_ref, self._drift_n],
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore what ``state_dict`` wrote (the constructor's settings are not part of it)."""
        if d.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported back-pressure state version {d.get('version')!r}")
        self._size = int(d["size"])
        self._steps = int(d["steps"])
        self._obs = [(int(s), float(x)) for s, x in d["window"]]
        self._ema = {int(s): (float(m), int(n)) for s, m, n in d["ema"]}
        fit = d["fit"]
        self._fit = (float(fit[0]), float(fit[1]), float(fit[2])) if fit is not None else None
        self._fit_sizes = [int(s) for s in d["fit_sizes"]]
        self._phase = str(d["phase"])
        self._explored = [int(s) for s in d["explored"]]
        self._best = float(d["best"])
        self._cycle_idx = int(d["cycle_idx"])
        self._pending = d["pending"]
        self._pending_count = int(d["pending_count"])
        self._last = BpDecision(**d["last"]) if d["last"] is not None else None
        self._warmup_start = int(d["warmup_start"])
        hold_size, hold_n, hold_ref, drift_n = d["hold"]
        self._hold_size, self._hold_n, self._drift_n = int(hold_size), int(hold_n), int(drift_n)
        self._hold_ref = float(hold_ref) if hold_ref is not None else None
