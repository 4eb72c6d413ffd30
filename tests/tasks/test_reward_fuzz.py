"""Property tests: no reward raises on arbitrary text, and valid answers keep scoring 1."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.config.schema import DataConfig
from retrain.tasks import build_task
from retrain.tasks.base import Problem
from retrain.tasks.countdown_expr import countdown_reward
from retrain.tasks.matching import MATCHERS

EXPR_CHARS = st.text(alphabet="0123456789+-*/() x=.", max_size=60)
ANY_TEXT = st.text(max_size=200)

ARITH = build_task(DataConfig(), seed=0)
COUNTDOWN = build_task(DataConfig(task="countdown", countdown_ops="plus_minus_mul_div"), seed=0)
CD_PROBLEM = Problem("3 5 7 -> 15:", "3+5+7", {"numbers": (3, 5, 7), "target": 15})


@settings(max_examples=300, deadline=None)
@given(st.one_of(EXPR_CHARS, ANY_TEXT))
def test_countdown_reward_never_raises(text: str) -> None:
    assert COUNTDOWN.reward(CD_PROBLEM, text) in (0.0, 1.0)
    assert countdown_reward(text, [0, 0, 1], 0, "+-*/", True) in (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, ANY_TEXT)
def test_matchers_and_arithmetic_never_raise(completion: str, answer: str) -> None:
    for match in MATCHERS.values():
        assert match(completion, answer) in (True, False)
    assert ARITH.reward(Problem("1+1=", answer), completion) in (0.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_generated_answer_always_rewarded(index: int) -> None:
    p = COUNTDOWN.train_problems(index, 1)[0]
    assert COUNTDOWN.reward(p, p.answer) == 1.0
    assert COUNTDOWN.reward(p, f" {p.answer}\n") == 1.0
