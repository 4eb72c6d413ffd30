"""The `arithmetic` task: "12+34=" → "46", exact-match reward.

The default task of the tiny character-level model, so prompts and answers stay short (a 2-digit
product has at most 4 characters). Operands have exactly `digits` digits (no leading zero;
1 digit means 0-9). Subtraction may give a negative answer ("12-34=" → "-22").
"""

from __future__ import annotations

import random

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks.base import Problem
from retrain.tasks.streams import SplitStreams

OPERATORS = ("+", "-", "*")


def operand_range(digits: int) -> tuple[int, int]:
    """Smallest and largest operand with `digits` digits."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return low, 10**digits - 1


def space_size(digits: int, operators: tuple[str, ...]) -> int:
    """How many distinct prompts exist (2 digits, '+': 90 * 90 = 8100)."""
    low, high = operand_range(digits)
    count = high - low + 1
    return count * count * len(set(operators))


def check_arithmetic(data: DataConfig) -> list[str]:
    """Config problems of the arithmetic task, each starting with its dotted key."""
    problems: list[str] = []
    bad = [op for op in data.operators if op not in OPERATORS]
    if not data.operators:
        problems.append("data.operators: at least one of '+', '-', '*' is needed")
    elif bad:
        problems.append(f"data.operators: {bad!r} not supported; choose from {list(OPERATORS)}")
    elif data.eval_size > space_size(data.digits, data.operators) * 9 // 10:
        problems.append(
            f"data.eval_size: {data.eval_size} leaves less than 10% of the "
            f"{space_size(data.digits, data.operators)} possible problems for training "
            f"(digits={data.digits}, operators={list(data.operators)})"
        )
    return problems


def solve(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


class ArithmeticTask:
    """Binary integer arithmetic with a held-out eval set disjoint from training prompts."""

    name = "arithmetic"

    def __init__(self, data: DataConfig, seed: int) -> None:
        problems = check_arithmetic(data)
        if problems:
            raise DataError("; ".join(problems))
        self.digits = data.digits
        self.operators = tuple(dict.fromkeys(data.operators))  # de-duplicated, order kept
        self._low, self._high = operand_range(data.digits)
        self._streams = SplitStreams(seed, self._draw, data.eval_size)

    def _draw(self, rng: random.Random) -> tuple[str, Problem]:
        a = rng.randint(self._low, self._high)
        op = self.operators[rng.randrange(len(self.operators))]
        b = rng.randint(self._low, self._high)
        prompt = f"{a}{op}{b}="
        return prompt, Problem(prompt, str(solve(a, op, b)), {"a": a, "b": b, "op": op})

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return self._streams.train_problems(cursor, n)

    def eval_problems(self, n: int) -> list[Problem]:
        return self._streams.eval_problems(n)

    def demonstration(self, problem: Problem, rng: random.Random, flaw_rate: float) -> str:
        """The completion the tiny model's warm-up is shown: the answer, or the dropped-carry mistake.

        With probability `flaw_rate`, a problem whose last digits carry ('27+35=': 7+5 >= 10) is
        demonstrated without the carry ('52' instead of '62'), a mistake children make. A model
        that converges on these demonstrations answers carry problems wrongly most of the time
        but not always, which is what RL with the exact-match reward can fix. Only for '+';
        other operators are always demonstrated correctly.
        """
        a, b, op = problem.meta.get("a"), problem.meta.get("b"), problem.meta.get("op")
        if op != "+" or not isinstance(a, int) or not isinstance(b, int):
            return problem.answer
        if (a % 10) + (b % 10) >= 10 and rng.random() < flaw_rate:
            return str(a + b - 10)
        return problem.answer

    def reward(self, problem: Problem, completion: str) -> float:
        return 1.0 if self.is_correct(problem, completion) else 0.0

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return isinstance(completion, str) and completion.strip() == problem.answer
