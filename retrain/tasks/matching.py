"""Answer matchers for dataset-file tasks: `exact`, `numeric`, `boxed`.

The reward step for `data.task = "file"`. Each matcher compares a completion with a reference
answer and returns a bool; none raises on arbitrary text.

- exact: equal after stripping surrounding whitespace.
- numeric: both sides parse as numbers (thousands separators "1,000" and a trailing ".0"
  accepted) and agree within a relative tolerance of 1e-6 (absolute 1e-9 near zero).
- boxed: the content of the last \\boxed{...} (braces balanced, so \\boxed{\\frac{1}{2}} works) of
  the completion is compared with the reference (itself unboxed if it contains \\boxed{}),
  numerically when both sides are numbers, else exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

REL_TOL = 1e-6
ABS_TOL = 1e-9
MAX_NUMBER_CHARS = 64  # float("1" * 10**6) is slow and never a real answer

_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)?(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_BOXED = "\\boxed{"


def parse_number(text: str) -> float | None:
    """A finite float from "1,000", "-3.50", "2.0", "1e-3"; None if the text is not a number."""
    s = text.strip()
    if not s or len(s) > MAX_NUMBER_CHARS or not any(c.isdigit() for c in s):
        return None
    if _NUMBER.fullmatch(s) is None:
        return None
    try:
        value = float(s.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def exact_match(completion: str, answer: str) -> bool:
    return completion.strip() == answer.strip()


def numeric_match(completion: str, answer: str) -> bool:
    got, want = parse_number(completion), parse_number(answer)
    if got is None or want is None:
        return False
    return math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces; None if there is none or it is unclosed."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 1
    pos = start + len(_BOXED)
    for i in range(pos, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[pos:i]
    return None


def boxed_match(completion: str, answer: str) -> bool:
    got = last_boxed(completion)
    if got is None:
        return False
    want = last_boxed(answer)
    want = answer if want is None else want
    if parse_number(got) is not None and parse_number(want) is not None:
        return numeric_match(got, want)
    return exact_match(got, want)


MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact_match,
    "numeric": numeric_match,
    "boxed": boxed_match,
}
