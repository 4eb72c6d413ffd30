"""The task contract: what the trainer asks of a verifiable task.

Sits between the config (`[data]`) and the trainer's step loop: the trainer draws prompts with
`train_problems`, scores completions with `reward`, and evaluates on `eval_problems`. Streams are
pure functions of (seed, index), so a resumed run that restarts at its saved cursor sees exactly
the problems the uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer."""

    prompt: str  # what the model sees, e.g. "12+34="
    answer: str  # reference answer; for countdown one valid expression (used for warm-up)
    # task-specific, e.g. numbers/target; left out of the hash so problems can go in sets
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)


@runtime_checkable
class Task(Protocol):
    """A verifiable task. Implementations: arithmetic, countdown, file, or a user plugin."""

    name: str

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        """Problems cursor .. cursor+n-1 of the training stream; problem i never depends on n."""
        ...

    def eval_problems(self, n: int) -> list[Problem]:
        """The first n held-out problems (at most data.eval_size), disjoint from training."""
        ...

    def reward(self, problem: Problem, completion: str) -> float:
        """Score a completion; 1.0 = correct. Never raises on arbitrary text."""
        ...

    def is_correct(self, problem: Problem, completion: str) -> bool:
        """Whether the completion counts as solved."""
        ...


# Optional: `demonstration(problem, rng, flaw_rate) -> str`, the completion the built-in tiny
# model's supervised warm-up trains on for `problem` (default: problem.answer). Arithmetic shows a
# dropped carry with probability flaw_rate; reasoning countdown writes a short reasoning trace.


def stream_rng(seed: int, stream: str, index: int) -> random.Random:
    """A generator owned by one element of one stream, independent of every other element.

    Hashing (seed, stream, index) instead of advancing one shared generator is what makes
    problem i identical whatever cursor/n split produced it.
    """
    digest = hashlib.blake2b(f"{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def check_range(cursor: int, n: int) -> None:
    """Reject negative cursors and counts: a bug in the caller, not a user error."""
    if cursor < 0 or n < 0:
        raise ValueError(f"cursor and n must be >= 0, got cursor={cursor}, n={n}")


def score(task: Task, problem: Problem, completion: str) -> tuple[float, bool]:
    """(reward, correct) of one completion, calling the reward once where possible.

    A task whose correctness is derived from its reward (countdown, a `data.reward` plugin)
    defines `score(problem, completion)`; for the others both methods are called. This keeps a
    user's reward function — possibly slow or stateful — to one call per completion.
    """
    both = getattr(task, "score", None)
    if callable(both):
        reward, correct = both(problem, completion)
        return float(reward), bool(correct)
    return float(task.reward(problem, completion)), bool(task.is_correct(problem, completion))
