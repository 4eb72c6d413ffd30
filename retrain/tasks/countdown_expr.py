"""Safe checking of a countdown answer: tokenizer, recursive-descent parser, exact evaluation.

The reward step of the data flow for the countdown task. Nothing is ever `eval`-ed: the grammar is

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := NUMBER | '(' expr ')'

evaluated with `fractions.Fraction`. An answer is valid only if every number literal is one of the
given numbers (each occurrence usable once; with `use_all` every one used exactly once), only the
group's operators appear, every intermediate result is an integer (so "7/2*2" is rejected even
though it equals 7; division must be exact at the point it happens), no division by zero, and the
value equals the target. There is no unary minus and no exponent. Oversized input (length,
nesting, digits) is rejected before any work, so the check is cheap and never raises.

With `require_tags` (reasoning countdown) a completion without an `<answer>…</answer>` span
scores 0: the text around the tags is reasoning, and grading all of it would reward a bare
expression that skipped the trace. `evaluation_steps` lists an expression's operations in the
order they are evaluated, for the reasoning traces of the warm-up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

MAX_CHARS = 512  # an honest answer over <= 6 numbers is far shorter
MAX_DEPTH = 32  # parenthesis nesting
MAX_DIGITS = 12  # a longer literal cannot be one of the given numbers

_TOKEN = re.compile(r"\s*(?:([0-9]+)|([-+*/()]))")  # ASCII digits only: int("٣") would be 3


class InvalidExpression(ValueError):
    """Why an answer earns no reward."""


def answer_span(completion: str) -> str | None:
    """The content of the last <answer>…</answer>, stripped; None if there is no such span."""
    end = completion.rfind("</answer>")
    start = completion.rfind("<answer>", 0, end) if end >= 0 else -1
    return completion[start + len("<answer>"):end].strip() if start >= 0 else None


def extract_expression(completion: str) -> str:
    """The part of a completion that is graded: the last <answer>…</answer> if any, else all of it."""
    span = answer_span(completion)
    return completion.strip() if span is None else span


def tokenize(text: str) -> list[str]:
    if len(text) > MAX_CHARS:
        raise InvalidExpression(f"longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    pos = 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidExpression(f"unexpected character {text[pos:].lstrip()[:1]!r}")
        if m.group(1) is not None and len(m.group(1)) > MAX_DIGITS:
            raise InvalidExpression("number literal too long")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    if not tokens:
        raise InvalidExpression("empty answer")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], allowed_ops: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.allowed_ops = allowed_ops
        self.literals: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise InvalidExpression("expression ends early")
        self.pos += 1
        return token

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            value = self.apply(op, value, self.term(depth))
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            value = self.apply(op, value, self.factor(depth))
        return value

    def factor(self, depth: int) -> Fraction:
        token = self.take()
        if token == "(":
            if depth >= MAX_DEPTH:
                raise InvalidExpression("parentheses nested too deeply")
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise InvalidExpression("unbalanced parentheses")
            return value
        if token[0] in "0123456789":
            self.literals.append(int(token))
            return Fraction(int(token))
        raise InvalidExpression(f"unexpected {token!r}")

    def apply(self, op: str, left: Fraction, right: Fraction) -> Fraction:
        if op not in self.allowed_ops:
            raise InvalidExpression(f"operator {op!r} not allowed (allowed: {' '.join(self.allowed_ops)})")
        if op == "+":
            result = left + right
        elif op == "-":
            result = left - right
        elif op == "*":
            result = left * right
        else:
            if right == 0:
                raise InvalidExpression("division by zero")
            result = left / right
        if result.denominator != 1:
            raise InvalidExpression(f"non-integer intermediate result {result}")
        return result


class _StepParser(_Parser):
    """A parser that also records each operation it applies, in evaluation order."""

    def __init__(self, tokens: list[str], allowed_ops: str) -> None:
        super().__init__(tokens, allowed_ops)
        self.steps: list[tuple[Fraction, str, Fraction, Fraction]] = []

    def apply(self, op: str, left: Fraction, right: Fraction) -> Fraction:
        result = super().apply(op, left, right)
        self.steps.append((left, op, right, result))
        return result


def evaluation_steps(text: str, allowed_ops: str = "+-*/") -> list[str]:
    """Each operation of an expression as "a<op>b=c", in evaluation order. Raises InvalidExpression.

    "9-(3+2)" -> ["3+2=5", "9-5=4"]; a lone number has no steps.
    """
    parser = _StepParser(tokenize(text), allowed_ops)
    parser.expr(0)
    if parser.peek() is not None:
        raise InvalidExpression(f"unexpected {parser.peek()!r} after the expression")
    return [f"{a}{op}{b}={c}" for a, op, b, c in parser.steps]


def evaluate(text: str, allowed_ops: str = "+-*/") -> tuple[Fraction, list[int]]:
    """Value of an expression and the number literals it used, in order. Raises InvalidExpression."""
    parser = _Parser(tokenize(text), allowed_ops)
    value = parser.expr(0)
    if parser.peek() is not None:
        raise InvalidExpression(f"unexpected {parser.peek()!r} after the expression")
    return value, parser.literals


def check_answer(
    completion: str, numbers: Sequence[int], target: int, allowed_ops: str, use_all: bool = False,
    *, require_tags: bool = False,
) -> str | None:
    """None if the completion solves the problem, else the reason it does not."""
    if require_tags and answer_span(completion) is None:
        return "no <answer>…</answer> span"
    try:
        value, used = evaluate(extract_expression(completion), allowed_ops)
    except InvalidExpression as exc:
        return str(exc)
    except (RecursionError, MemoryError, OverflowError):  # belt and braces; limits prevent these
        return "expression too large"
    extra = Counter(used) - Counter(numbers)
    if extra:
        return f"uses numbers not given (or more often than given): {sorted(extra.elements())}"
    if use_all and Counter(used) != Counter(numbers):
        unused = sorted((Counter(numbers) - Counter(used)).elements())
        return f"every number must be used exactly once; unused: {unused}"
    if value != target:
        return f"evaluates to {value}, not {target}"
    return None


def countdown_reward(
    completion: str, numbers: Sequence[int], target: int, allowed_ops: str, use_all: bool = False,
    *, require_tags: bool = False,
) -> float:
    """1.0 for a valid solution, 0.0 for anything else; never raises on text input."""
    if not isinstance(completion, str):
        return 0.0
    reason = check_answer(completion, numbers, target, allowed_ops, use_all, require_tags=require_tags)
    return 1.0 if reason is None else 0.0
