"""Reasoning countdown: warm-up traces (graded, flawed at flaw_rate, planning grams), tag-only grading."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrain.algo.planning import planning_mask
from retrain.config.schema import DEFAULT_PLANNING_GRAMS, DataConfig
from retrain.tasks import build_task
from retrain.tasks.base import Problem, stream_rng
from retrain.tasks.countdown import RETRY_SHARE, CountdownTask, reasoning_trace
from retrain.tasks.countdown_expr import evaluation_steps

N = 2000  # traces per statistical check: the binomial SE of a 0.6 share is ~0.011


def task(reasoning: bool = True, **data: object) -> CountdownTask:
    cfg = DataConfig(task="countdown", countdown_reasoning=reasoning, countdown_max_number=9,
                     eval_size=50, **data)
    built = build_task(cfg, seed=0)
    assert isinstance(built, CountdownTask)
    return built


def traces(t: CountdownTask, flaw_rate: float, n: int = N, seed: int = 0) -> list[tuple[Problem, str]]:
    problems = t.train_problems(0, n)
    return [(p, t.demonstration(p, stream_rng(seed, "demonstration", i), flaw_rate))
            for i, p in enumerate(problems)]


def test_evaluation_steps_in_evaluation_order() -> None:
    assert evaluation_steps("3+5+7") == ["3+5=8", "8+7=15"]    # left to right
    assert evaluation_steps("9-(3+2)") == ["3+2=5", "9-5=4"]   # parentheses first
    assert evaluation_steps("2+3*4") == ["3*4=12", "2+12=14"]  # precedence
    assert evaluation_steps("7") == []


def test_trace_format() -> None:
    assert reasoning_trace(["3+5+7"], "3+5+7", "+-") == (
        "let me think: 3+5=8, 8+7=15. <answer>3+5+7</answer>")
    assert reasoning_trace(["3+5-7", "3+5+7"], "3+5+7", "+-") == (
        "let me think: 3+5=8, 8-7=1. that doesn't work. try another approach: 3+5=8, 8+7=15. "
        "<answer>3+5+7</answer>")


@pytest.mark.parametrize(("ops", "use_all"), [("plus", False), ("plus_minus", False),
                                              ("plus_minus_mul", True), ("plus_minus_mul_div", False)])
def test_clean_traces_are_graded_correct(ops: str, use_all: bool) -> None:
    t = task(countdown_ops=ops, countdown_use_all=use_all)
    for p, trace in traces(t, flaw_rate=0.0, n=500):
        assert t.reward(p, trace) == 1.0, (p.prompt, trace)
        assert trace.startswith("let me think: ") and trace.endswith(f"<answer>{p.answer}</answer>")


def test_wrong_final_answers_appear_at_flaw_rate() -> None:
    t = task()
    for flaw_rate in (0.3, 0.6):
        wrong = np.mean([t.reward(p, trace) == 0.0 for p, trace in traces(t, flaw_rate)])
        assert abs(wrong - flaw_rate) < 0.04, (flaw_rate, wrong)  # ~3.5 SE; a miss always exists here


def test_failed_attempts_are_followed_by_the_solution_in_retry_share() -> None:
    t = task()
    clean = traces(t, flaw_rate=0.0)
    retried = [trace for _, trace in clean if "that doesn't work. try another approach: " in trace]
    assert abs(len(retried) / len(clean) - RETRY_SHARE) < 0.04
    assert all(t.reward(p, trace) == 1.0 for p, trace in clean)


def test_traces_are_short_and_rich_in_planning_tokens() -> None:
    t = task()
    texts = [trace for _, trace in traces(t, flaw_rate=0.6)]
    # The character tokenizer: one token per character, token t spans [t, t+1).
    marked = [planning_mask(s, np.stack([np.arange(len(s)), np.arange(1, len(s) + 1)], 1),
                            DEFAULT_PLANNING_GRAMS) for s in texts]
    assert all(m.any() for m in marked)  # every trace opens with "let me think"
    frac = sum(int(m.sum()) for m in marked) / sum(len(s) for s in texts)
    assert frac >= 0.05 and frac > 0.2  # measured 0.29 (max_number 9, flaw 0.6)
    assert np.median([len(s) for s in texts]) <= 60


def test_demonstrations_deterministic_per_rng_seed() -> None:
    t = task()
    p = t.train_problems(0, 1)[0]
    a = [t.demonstration(p, random.Random(s), 0.5) for s in range(20)]
    b = [t.demonstration(p, random.Random(s), 0.5) for s in range(20)]
    assert a == b
    assert traces(t, 0.6, n=50, seed=3) == traces(t, 0.6, n=50, seed=3)
    assert len(set(a)) > 1  # the rng does vary the trace


def test_reasoning_mode_grades_only_the_last_answer_span() -> None:
    t = task()
    p = Problem("3 5 7 -> 15:", "3+5+7", {"numbers": (3, 5, 7), "target": 15, "ops": "plus_minus"})
    assert t.reward(p, "3+5+7") == 0.0  # no tags: the reasoning contract was not followed
    assert t.reward(p, "let me think: 3+5=8, 8+7=15. 3+5+7") == 0.0
    assert t.reward(p, "let me think: 3+5=8, 8+7=15. <answer>3+5+7</answer>") == 1.0
    assert t.reward(p, "<answer>3+5+7</answer> no, <answer>3+5-7</answer>") == 0.0  # last span
    assert t.reward(p, "<answer>3+5-7</answer> no, <answer> 3+5+7 </answer>") == 1.0
    assert t.reward(p, "<answer>3+5+7") == 0.0  # unclosed
    assert t.score(p, "3+5+7") == (0.0, False)


def test_non_reasoning_mode_unchanged() -> None:
    t = task(reasoning=False)
    p = Problem("3 5 7 -> 15:", "3+5+7", {"numbers": (3, 5, 7), "target": 15, "ops": "plus_minus"})
    assert t.reward(p, "3+5+7") == 1.0  # bare expression still graded whole
    assert t.reward(p, "think <answer>3+5+7</answer>") == 1.0
    for q, demo in traces(t, flaw_rate=0.6, n=200):
        assert demo == q.answer
    # The held-out split does not depend on the mode: same problems either way.
    assert task(reasoning=True).eval_problems(100) == t.eval_problems(100)
    assert task(reasoning=True).train_problems(0, 100) == t.train_problems(0, 100)
