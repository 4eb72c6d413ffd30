"""The `countdown` task: reach a target from given numbers with a group's operators.

Prompt format (compact, for the character-level tiny model): the numbers separated by spaces,
" -> ", the target, ":" — e.g. "3 5 7 -> 15:". The reference answer is one valid expression
with minimal parentheses, e.g. "3+5+7"; the reward accepts any valid one (see countdown_expr).

Problems are solvable by construction: numbers are drawn uniformly from 1..max_number (with
repetition), then combined pairwise in random order with random operators of the group into one
expression that uses every number once. Division is only chosen when it is exact, subtraction
keeps intermediates non-negative, and the target is at least 1. The held-out key is the sorted
numbers plus the target, so a reordering of an eval problem never appears in training.

Reasoning mode (`data.countdown_reasoning`): completions think before answering and only the
expression inside the last `<answer>…</answer>` is graded; a completion without the tags scores
0. The tiny model's warm-up demonstrations are then short traces built from planning phrases of
the default HICRA grams, so planning tokens occur in the policy's completions:

    let me think: 3+5=8, 8+7=15. <answer>3+5+7</answer>
    let me think: 3+5=8, 8-7=1. that doesn't work. try another approach: 3+5=8, 8+7=15. <answer>3+5+7</answer>
    let me think: 3+5=8, 8-7=1. <answer>3+5-7</answer>      (the flaw: a missed attempt accepted)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks.base import Problem
from retrain.tasks.countdown_expr import countdown_reward, evaluate, evaluation_steps
from retrain.tasks.streams import SplitStreams

# Operator groups of the continual-learning curriculum (docs/tasks.md, `countdown`).
OPERATOR_GROUPS: dict[str, str] = {
    "plus": "+",
    "plus_minus": "+-",
    "plus_minus_mul": "+-*",
    "plus_minus_mul_div": "+-*/",
}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3
_TARGET_TRIES = 20  # redraws of the expression until the target is >= 1
_MISS_TRIES = 8  # redraws of a wrong first attempt until its value misses the target
RETRY_SHARE = 0.3  # share of correct reasoning traces that first show a failed attempt


@dataclass(frozen=True)
class _Node:
    value: int
    text: str
    precedence: int


def _wrap(node: _Node, needs: bool) -> str:
    return f"({node.text})" if needs else node.text


def _combine(left: _Node, op: str, right: _Node) -> _Node:
    p = _PRECEDENCE[op]
    # Right operand of - or / needs parentheses at equal precedence: a-(b+c), a/(b*c).
    left_text = _wrap(left, left.precedence < p)
    right_text = _wrap(right, right.precedence < p or (right.precedence == p and op in "-/"))
    if op == "+":
        value = left.value + right.value
    elif op == "-":
        value = left.value - right.value
    elif op == "*":
        value = left.value * right.value
    else:
        value = left.value // right.value
    return _Node(value, f"{left_text}{op}{right_text}", p)


def random_expression(numbers: list[int], ops: str, rng: random.Random) -> _Node:
    """An expression using every number once, with only integer, non-negative intermediates."""
    pool = [_Node(n, str(n), _ATOM) for n in numbers]
    while len(pool) > 1:
        left = pool.pop(rng.randrange(len(pool)))
        right = pool.pop(rng.randrange(len(pool)))
        op = ops[rng.randrange(len(ops))]
        if op == "/" and (right.value == 0 or left.value % right.value != 0):
            if right.value != 0 and left.value != 0 and right.value % left.value == 0:
                left, right = right, left
            else:
                op = ops[rng.randrange(len(ops) - 1)]  # groups list "/" last
        if op == "-" and left.value < right.value:
            left, right = right, left
        pool.append(_combine(left, op, right))
    return pool[0]


def generate_problem(
    rng: random.Random, count: int, max_number: int, ops_group: str
) -> tuple[list[int], int, str]:
    """Draw numbers and build a solution; returns (numbers, target, answer expression)."""
    ops = OPERATOR_GROUPS[ops_group]
    numbers = [rng.randint(1, max_number) for _ in range(count)]
    for _ in range(_TARGET_TRIES):
        node = random_expression(list(numbers), ops, rng)
        if node.value >= 1:
            return numbers, node.value, node.text
    return numbers, sum(numbers), "+".join(map(str, numbers))  # always valid: + is in every group


def format_prompt(numbers: list[int], target: int) -> str:
    return f"{' '.join(map(str, numbers))} -> {target}:"


def make_problem(numbers: list[int], target: int, answer: str, ops_group: str) -> Problem:
    meta = {"numbers": tuple(numbers), "target": target, "ops": ops_group}
    return Problem(format_prompt(numbers, target), answer, meta)


def attempt_text(expression: str, ops: str) -> str:
    """One attempt of a reasoning trace: its operations in evaluation order ("3+5=8, 8+7=15")."""
    return ", ".join(evaluation_steps(expression, ops)) or expression


def reasoning_trace(attempts: list[str], answer: str, ops: str) -> str:
    """'let me think: <attempt>. [that doesn't work. try another approach: <attempt>.] <answer>…'"""
    shown = [attempt_text(a, ops) for a in attempts]
    body = ". that doesn't work. try another approach: ".join(shown)
    return f"let me think: {body}. <answer>{answer}</answer>"


def missed_attempt(numbers: list[int], target: int, ops: str, rng: random.Random) -> str | None:
    """A plausible wrong expression: the group's operators over the numbers, missing the target.

    With '+' alone every expression over all numbers reaches the target, so the fallback drops
    one number (numbers are >= 1, so the value changes). None if no miss was found.
    """
    for pool in (numbers, numbers[:-1]):
        for _ in range(_MISS_TRIES if len(pool) > 1 else 1):
            text = random_expression(list(pool), ops, rng).text
            if evaluate(text, ops)[0] != target:
                return text
    return None


def check_countdown(data: DataConfig) -> list[str]:
    """Config problems of the countdown task, each starting with its dotted key."""
    if data.countdown_ops not in OPERATOR_GROUPS:
        return [f"data.countdown_ops: {data.countdown_ops!r} is not one of {list(OPERATOR_GROUPS)}"]
    # With '+' alone the problem space is exactly the number multisets (one target each); the
    # other groups have more targets per multiset and a too-large eval set is caught when drawn.
    multisets = math.comb(data.countdown_max_number + data.countdown_numbers - 1, data.countdown_numbers)
    if data.countdown_ops == "plus" and data.eval_size > multisets * 9 // 10:
        return [
            f"data.eval_size: {data.eval_size} leaves less than 10% of the {multisets} possible "
            f"'plus' problems for training (countdown_numbers={data.countdown_numbers}, "
            f"countdown_max_number={data.countdown_max_number})"
        ]
    return []


class CountdownTask:
    """Generated countdown problems with a held-out set disjoint from training."""

    name = "countdown"

    def __init__(self, data: DataConfig, seed: int) -> None:
        problems = check_countdown(data)
        if problems:
            raise DataError("; ".join(problems))
        self.ops_group = data.countdown_ops
        self.ops = OPERATOR_GROUPS[data.countdown_ops]
        self.count = data.countdown_numbers
        self.max_number = data.countdown_max_number
        self.use_all = data.countdown_use_all
        self.reasoning = data.countdown_reasoning
        self._streams = SplitStreams(seed, self._draw, data.eval_size)

    def _draw(self, rng: random.Random) -> tuple[tuple[tuple[int, ...], int], Problem]:
        numbers, target, answer = generate_problem(rng, self.count, self.max_number, self.ops_group)
        key = (tuple(sorted(numbers)), target)
        return key, make_problem(numbers, target, answer, self.ops_group)

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return self._streams.train_problems(cursor, n)

    def eval_problems(self, n: int) -> list[Problem]:
        return self._streams.eval_problems(n)

    def demonstration(self, problem: Problem, rng: random.Random, flaw_rate: float) -> str:
        """The warm-up completion: the answer, or in reasoning mode a short trace (module docstring).

        Reasoning traces: with probability `flaw_rate` a wrong first attempt is accepted as the
        answer (the flaw RL can fix); otherwise the trace ends in the reference answer, after a
        failed attempt and "that doesn't work. try another approach:" in RETRY_SHARE of them.
        """
        if not self.reasoning:
            return problem.answer
        numbers, target = list(problem.meta["numbers"]), int(problem.meta["target"])
        miss = missed_attempt(numbers, target, self.ops, rng)
        flawed, retry = rng.random() < flaw_rate, rng.random() < RETRY_SHARE
        if miss is not None and flawed:
            return reasoning_trace([miss], miss, self.ops)
        if miss is not None and retry:
            return reasoning_trace([miss, problem.answer], problem.answer, self.ops)
        return reasoning_trace([problem.answer], problem.answer, self.ops)

    def reward(self, problem: Problem, completion: str) -> float:
        try:
            numbers = problem.meta["numbers"]
            target = problem.meta["target"]
        except (KeyError, TypeError):
            return 0.0
        return countdown_reward(completion, numbers, target, self.ops, self.use_all,
                                require_tags=self.reasoning)

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self.reward(problem, completion) >= 1.0

    def score(self, problem: Problem, completion: str) -> tuple[float, bool]:
        """Reward and correctness from one reward call (see tasks.base.score)."""
        value = self.reward(problem, completion)
        return value, value >= 1.0
