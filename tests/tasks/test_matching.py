"""Answer matchers of the file task: exact, numeric, boxed."""

from __future__ import annotations

import pytest

from retrain.tasks.matching import boxed_match, exact_match, last_boxed, numeric_match, parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42.0), (" -3.5 ", -3.5), ("1,000", 1000.0), ("1,234,567.0", 1234567.0), ("2.0", 2.0),
     ("1e-3", 0.001), (".5", 0.5), ("5.", 5.0)],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1,00", "12,3456", "nan", "inf", "1e999", "1-2", "e5", "1" * 100])
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


def test_exact_match() -> None:
    assert exact_match(" 42\n", "42")
    assert not exact_match("42.0", "42")


def test_numeric_match() -> None:
    assert numeric_match("1,000", "1000")
    assert numeric_match("42.0", "42")
    assert numeric_match("1000000.5", "1000000")  # relative error 5e-7 <= 1e-6
    assert not numeric_match("1000002", "1000000")  # relative error 2e-6
    assert numeric_match("0", "0.0")
    assert not numeric_match("forty-two", "42")
    assert not numeric_match("The answer is 42", "42")


def test_last_boxed_nested_braces() -> None:
    assert last_boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{1} then \boxed{{a}{b}}") == "{a}{b}"
    assert last_boxed(r"\boxed{unclosed {x}") is None
    assert last_boxed("no box") is None


def test_boxed_match() -> None:
    assert boxed_match(r"The answer is \boxed{1,000}.", "1000")
    assert boxed_match(r"\boxed{42.0}", "42")
    assert boxed_match(r"\boxed{\frac{1}{2}}", r"\frac{1}{2}")
    assert boxed_match(r"\boxed{x+1}", r"so \boxed{x+1}")  # reference itself boxed
    assert not boxed_match(r"wrong \boxed{3} then \boxed{4}", "3")  # the last box counts
    assert not boxed_match("42", "42")  # no box, no reward
