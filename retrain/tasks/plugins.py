"""A task whose reward is a user function (`data.reward`); loading and checking plugin
references lives in `retrain.plugins`."""

from __future__ import annotations

import math
from collections.abc import Callable

from retrain.errors import DataError
from retrain.tasks.base import Problem, Task

RewardFn = Callable[[str, str, str], float]


class CustomRewardTask:
    """A task whose problems come from `base` and whose reward is a user function.

    The function is called as fn(prompt, completion, answer) and must return a finite number.
    Exceptions from it surface as DataError: silently scoring a broken plugin as 0 would let a
    whole run train on nothing.
    """

    def __init__(self, base: Task, fn: RewardFn, spec: str) -> None:
        self.base = base
        self.name = base.name
        self._fn = fn
        self._spec = spec

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return self.base.train_problems(cursor, n)

    def eval_problems(self, n: int) -> list[Problem]:
        return self.base.eval_problems(n)

    def reward(self, problem: Problem, completion: str) -> float:
        try:
            value = float(self._fn(problem.prompt, completion, problem.answer))
        except Exception as exc:
            raise DataError(
                f"data.reward: {self._spec!r} failed on prompt {problem.prompt[:80]!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not math.isfinite(value):
            raise DataError(f"data.reward: {self._spec!r} returned {value} (must be finite)")
        return value

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self.reward(problem, completion) >= 1.0

    def score(self, problem: Problem, completion: str) -> tuple[float, bool]:
        """Reward and correctness from one reward call (see tasks.base.score)."""
        value = self.reward(problem, completion)
        return value, value >= 1.0
