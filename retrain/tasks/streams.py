"""Deterministic train/eval problem streams with a held-out set disjoint by construction.

Used by the generated tasks (arithmetic, countdown). The eval set is the first `eval_size`
distinct problems of the "eval" stream, which does NOT depend on the run's seed: every seed of a
campaign is scored on the same held-out problems (less variance between seeds), and the tiny
model's supervised warm-up, drawn under its own seed, never sees them either. Training problem i
comes from its own generator (seed, "train", i) and redraws while its key is in the eval set, so
any cursor/n split of the training stream yields the same problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

from retrain.errors import DataError
from retrain.tasks.base import Problem, check_range, stream_rng

# A draw returns the problem and the key that identifies it for the disjointness check
# (for countdown the sorted numbers and target, so a reordered prompt is still held out).
Draw = Callable[[random.Random], tuple[Hashable, Problem]]

_TRAIN_REDRAWS = 1000  # a space where 1000 draws all hit the eval set is misconfigured
_EVAL_DRAWS_PER_PROBLEM = 50
EVAL_SEED = 0  # the held-out set is fixed per task settings, whatever the run's seed


class SplitStreams:
    """Held-out eval problems plus a training stream that never contains them."""

    def __init__(self, seed: int, draw: Draw, eval_size: int) -> None:
        self._seed = seed
        self._draw = draw
        self._eval_size = eval_size
        self._eval: list[Problem] | None = None
        self._eval_keys: frozenset[Hashable] = frozenset()

    def _held_out(self) -> list[Problem]:
        if self._eval is None:
            problems: list[Problem] = []
            keys: set[Hashable] = set()
            budget = self._eval_size * _EVAL_DRAWS_PER_PROBLEM + 1000
            for j in range(budget):
                if len(problems) == self._eval_size:
                    break
                key, problem = self._draw(stream_rng(EVAL_SEED, "eval", j))
                if key not in keys:
                    keys.add(key)
                    problems.append(problem)
            if len(problems) < self._eval_size:
                raise DataError(
                    f"data.eval_size: found only {len(problems)} distinct problems for a held-out "
                    f"set of {self._eval_size}; lower data.eval_size or widen the problem space"
                )
            self._eval = problems
            self._eval_keys = frozenset(keys)
        return self._eval

    def eval_problems(self, n: int) -> list[Problem]:
        check_range(0, n)
        return self._held_out()[:n]

    def train_problem(self, index: int) -> Problem:
        self._held_out()
        rng = stream_rng(self._seed, "train", index)
        for _ in range(_TRAIN_REDRAWS):
            key, problem = self._draw(rng)
            if key not in self._eval_keys:
                return problem
        raise DataError(
            "data.eval_size: the held-out set covers almost the whole problem space; "
            "lower data.eval_size or widen the problem space"
        )

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        check_range(cursor, n)
        return [self.train_problem(i) for i in range(cursor, cursor + n)]
