"""Arithmetic task: prompt format, exact-match reward, deterministic resumable streams, held-out split."""

from __future__ import annotations

import pytest

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks import build_task, check_data_config
from retrain.tasks.arithmetic import ArithmeticTask, space_size
from retrain.tasks.base import Problem


def test_prompt_and_answer_format() -> None:
    task = build_task(DataConfig(operators=("+", "-", "*")), seed=0)
    for p in task.train_problems(0, 200):
        a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
        assert p.prompt == f"{a}{op}{b}="
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert int(p.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert len(p.answer) <= 5  # fits max_tokens 8 of the tiny model


def test_reward_exact_match_after_strip() -> None:
    task = build_task(DataConfig(), seed=0)
    p = Problem("12+34=", "46")
    assert task.reward(p, "46") == 1.0
    assert task.reward(p, " 46\n") == 1.0
    assert task.reward(p, "47") == 0.0
    assert task.reward(p, "4 6") == 0.0
    assert task.reward(p, "") == 0.0
    assert task.reward(p, "46 and more") == 0.0
    assert task.is_correct(p, "46") and not task.is_correct(p, "045")


def test_stream_deterministic_and_cursor_resumable() -> None:
    task = build_task(DataConfig(), seed=7)
    again = build_task(DataConfig(), seed=7)
    whole = task.train_problems(0, 10)
    assert whole == task.train_problems(0, 5) + task.train_problems(5, 5)
    assert whole == again.train_problems(0, 10)
    assert task.train_problems(3, 4) == whole[3:7]
    assert whole != build_task(DataConfig(), seed=8).train_problems(0, 10)
    assert task.eval_problems(50) == again.eval_problems(100)[:50]


def test_train_and_eval_disjoint_over_thousands_of_draws() -> None:
    data = DataConfig(eval_size=500)  # 500 of 8100 problems held out
    task = build_task(data, seed=3)
    held_out = {p.prompt for p in task.eval_problems(500)}
    assert len(held_out) == 500
    train = {p.prompt for p in task.train_problems(0, 20000)}
    assert not held_out & train
    assert len(train) > 7000  # the rest of the space is still used


def test_eval_problems_capped_at_eval_size() -> None:
    task = build_task(DataConfig(eval_size=10), seed=0)
    assert len(task.eval_problems(100)) == 10


def test_one_digit_space_and_too_large_eval() -> None:
    assert space_size(1, ("+",)) == 100
    assert space_size(2, ("+",)) == 8100
    data = DataConfig(digits=1, eval_size=95)
    assert check_data_config(data) and check_data_config(data)[0].startswith("data.eval_size:")
    with pytest.raises(DataError):
        ArithmeticTask(data, 0)


def test_bad_operator_reported() -> None:
    problems = check_data_config(DataConfig(operators=("+", "/")))
    assert problems and problems[0].startswith("data.operators:")
