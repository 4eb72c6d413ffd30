"""Countdown: reward cases, operator groups, generated problems solvable, streams, held-out split."""

from __future__ import annotations

import pytest

from retrain.config.schema import DataConfig
from retrain.tasks import build_task, check_data_config
from retrain.tasks.base import Problem
from retrain.tasks.countdown import OPERATOR_GROUPS, format_prompt
from retrain.tasks.countdown_expr import check_answer, countdown_reward, evaluate

ALL = "+-*/"


def reward(completion: str, numbers: list[int], target: int, ops: str = ALL, use_all: bool = False) -> float:
    return countdown_reward(completion, numbers, target, ops, use_all)


@pytest.mark.parametrize(
    ("completion", "numbers", "target", "expected"),
    [
        ("3+5+7", [3, 5, 7], 15, 1.0),             # 3+5+7 = 15
        (" (7-3)*5 ", [3, 5, 7], 20, 1.0),         # (7-3)*5 = 4*5 = 20
        ("7*5/(3+2)", [2, 3, 5, 7], 7, 1.0),       # 35/5 = 7, every step an integer
        ("3+5", [3, 5, 7], 8, 1.0),                # at most once: 7 may stay unused
        ("3+5+7", [3, 5, 7], 16, 0.0),             # wrong value: 15 != 16
        ("7+7", [3, 5, 7], 14, 0.0),               # 7 reused
        ("5+5", [5, 5, 7], 10, 1.0),               # 5 given twice: both uses allowed
        ("3+9", [3, 5, 7], 12, 0.0),               # 9 not given
        ("7/(5-5)", [5, 5, 7], 0, 0.0),            # division by zero
        ("7/2*2", [2, 2, 7], 7, 0.0),              # 7/2 = 3.5 is a non-integer intermediate
        ("(3+5)/2", [2, 3, 5], 4, 1.0),            # 8/2 = 4 exact
        ("hello", [3, 5, 7], 15, 0.0),             # junk
        ("", [3, 5, 7], 15, 0.0),                  # empty
        ("   ", [3, 5, 7], 15, 0.0),               # blank
        ("3+5+7=15", [3, 5, 7], 15, 0.0),          # '=' is not part of the grammar
        ("-3+18", [3, 18], 15, 0.0),               # no unary minus
        ("3**5", [3, 5], 243, 0.0),                # no exponent
        ("(3+5", [3, 5], 8, 0.0),                  # unbalanced
        ("3+5)", [3, 5], 8, 0.0),                  # trailing garbage
        ("3 5", [3, 5], 8, 0.0),                   # two literals, no operator
        ("3.0+5", [3, 5], 8, 0.0),                 # no decimals
        ("٣+5", [3, 5], 8, 0.0),                   # non-ASCII digit
        ("think... <answer>3+5</answer>", [3, 5], 8, 1.0),  # tagged answer is graded
    ],
)
def test_reward_cases(completion: str, numbers: list[int], target: int, expected: float) -> None:
    assert reward(completion, numbers, target) == expected


def test_operator_outside_group() -> None:
    plus = OPERATOR_GROUPS["plus"]
    assert reward("3+5", [3, 5], 8, plus) == 1.0
    assert reward("5-3", [3, 5], 2, plus) == 0.0
    assert reward("5*3", [3, 5], 15, OPERATOR_GROUPS["plus_minus"]) == 0.0
    assert reward("6/3", [3, 6], 2, OPERATOR_GROUPS["plus_minus_mul"]) == 0.0
    assert reward("6/3", [3, 6], 2, OPERATOR_GROUPS["plus_minus_mul_div"]) == 1.0
    assert "not allowed" in (check_answer("5-3", [3, 5], 2, plus) or "")


def test_exactly_once_mode() -> None:
    assert reward("3+5", [3, 5, 7], 8, use_all=True) == 0.0    # 7 unused
    assert reward("3+5-7", [3, 5, 7], 1, use_all=True) == 1.0  # 3+5-7 = 1
    assert reward("3+5+7", [3, 5, 7], 15, use_all=True) == 1.0


def test_very_long_and_deep_inputs_score_zero_quickly() -> None:
    assert reward("1+" * 100_000 + "1", [1, 1], 2) == 0.0
    assert reward("(" * 5000 + "3" + ")" * 5000, [3], 3) == 0.0
    assert reward("9" * 5000, [3], 3) == 0.0
    assert reward("x" * 10_000_000, [3], 3) == 0.0
    assert reward("<answer>" * 100_000, [3], 3) == 0.0
    assert reward("((3))", [3], 3) == 1.0  # moderate nesting is fine


def test_non_string_completion_scores_zero() -> None:
    assert countdown_reward(None, [3], 3, ALL) == 0.0  # type: ignore[arg-type]


def test_evaluate_uses_left_associativity_and_precedence() -> None:
    # 8-3-2 = (8-3)-2 = 3, not 8-(3-2) = 7; 2+3*4 = 14
    assert evaluate("8-3-2")[0] == 3
    assert evaluate("2+3*4")[0] == 14
    assert evaluate("2+3*4")[1] == [2, 3, 4]


@pytest.mark.parametrize("group", list(OPERATOR_GROUPS))
@pytest.mark.parametrize("count", [2, 3, 5])
def test_generated_answers_are_valid_solutions(group: str, count: int) -> None:
    data = DataConfig(task="countdown", countdown_ops=group, countdown_numbers=count, countdown_use_all=True,
                      eval_size=50)  # 2 numbers up to 20 make only ~400 distinct problems
    task = build_task(data, seed=1)
    for p in task.train_problems(0, 300) + task.eval_problems(50):
        assert p.prompt == format_prompt(list(p.meta["numbers"]), p.meta["target"])
        assert p.meta["target"] >= 1
        assert task.reward(p, p.answer) == 1.0, (p, check_answer(p.answer, p.meta["numbers"], p.meta["target"], OPERATOR_GROUPS[group], True))
        assert set(p.answer) <= set("0123456789()" + OPERATOR_GROUPS[group])


def test_prompt_format() -> None:
    assert format_prompt([3, 5, 7], 15) == "3 5 7 -> 15:"


def test_task_reward_uses_group_and_mode() -> None:
    task = build_task(DataConfig(task="countdown", countdown_ops="plus", countdown_use_all=True), seed=0)
    p = Problem("3 5 7 -> 15:", "3+5+7", {"numbers": (3, 5, 7), "target": 15})
    assert task.reward(p, "7+5+3") == 1.0 and task.is_correct(p, "7+5+3")
    assert task.reward(p, "(3+7)+5") == 1.0
    assert task.reward(p, "3*5") == 0.0
    assert task.reward(Problem("x", "y"), "3+5") == 0.0  # no meta: zero, not a crash


def test_stream_deterministic_resumable_and_disjoint() -> None:
    data = DataConfig(task="countdown", countdown_ops="plus_minus", eval_size=300)
    task = build_task(data, seed=5)
    whole = task.train_problems(0, 10)
    assert whole == task.train_problems(0, 5) + task.train_problems(5, 5)
    assert whole == build_task(data, seed=5).train_problems(0, 10)
    key = lambda p: (tuple(sorted(p.meta["numbers"])), p.meta["target"])  # noqa: E731
    held = {key(p) for p in task.eval_problems(300)}
    assert len(held) == 300
    assert not held & {key(p) for p in task.train_problems(0, 5000)}


def test_plus_group_eval_size_checked() -> None:
    # 2 numbers from 1..4: C(5, 2) = 10 multisets, one target each with '+'
    data = DataConfig(task="countdown", countdown_ops="plus", countdown_numbers=2,
                      countdown_max_number=4, eval_size=10)
    assert check_data_config(data)[0].startswith("data.eval_size:")
