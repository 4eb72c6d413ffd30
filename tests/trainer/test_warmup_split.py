"""The tiny model's warm-up data: disjoint from every held-out problem, flawed at the configured rate.

These read the exact (prompt, completion) pairs the warm-up trains on (`demonstration_pairs`
over `warmup_task`), without training anything.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from retrain.backend.local.presets import (
    WARMUP_HELD_OUT,
    _data_key,
    demonstration_pairs,
    warmup_data,
    warmup_key,
    warmup_task,
)
from retrain.config.schema import DataConfig, ModelConfig, RetrainConfig
from retrain.tasks import build_task

WARMUP_PAIRS = 1500 * 64 // 8  # an eighth of the default warm-up (1500 steps x 64 pairs)


def _carry(prompt: str) -> bool:
    a, b = prompt.rstrip("=").split("+")
    return int(a) % 10 + int(b) % 10 >= 10


@pytest.mark.parametrize("eval_size", [50, 500, 2000])
def test_warmup_never_sees_a_held_out_problem(eval_size: int) -> None:
    cfg = RetrainConfig(data=DataConfig(eval_size=eval_size))
    pairs = demonstration_pairs(warmup_task(cfg), seed=0, flaw_rate=0.6)(0, WARMUP_PAIRS)
    # what RL evaluates on, for any training seed
    held_out = {p.prompt for p in build_task(cfg.data, seed=123).eval_problems(cfg.eval.size)}
    assert len(held_out) == min(cfg.eval.size, eval_size)
    assert not held_out & {prompt for prompt, _ in pairs}


def test_small_eval_sets_share_the_default_model_and_stay_disjoint() -> None:
    small = RetrainConfig(data=DataConfig(eval_size=50))
    assert warmup_data(small).eval_size == WARMUP_HELD_OUT
    assert _data_key(small) == _data_key(RetrainConfig())  # one cache entry
    tiny_space = RetrainConfig(data=DataConfig(digits=1, eval_size=50))  # 100 problems in all
    assert warmup_data(tiny_space).eval_size == 50  # cannot widen: keeps its own held-out set
    pairs = demonstration_pairs(warmup_task(tiny_space), seed=0, flaw_rate=0.0)(0, 2000)
    held_out = {p.prompt for p in build_task(tiny_space.data, seed=0).eval_problems(50)}
    assert not held_out & {prompt for prompt, _ in pairs}


@pytest.mark.parametrize("flaw_rate", [0.0, 0.6, 1.0])
def test_arithmetic_demonstrations_drop_the_carry_at_the_flaw_rate(flaw_rate: float) -> None:
    task = warmup_task(RetrainConfig())
    problems = task.train_problems(0, 4000)
    pairs = demonstration_pairs(task, seed=0, flaw_rate=flaw_rate)(0, 4000)
    flawed = carries = 0
    for problem, (prompt, completion) in zip(problems, pairs, strict=True):
        assert prompt == problem.prompt
        a, b = problem.meta["a"], problem.meta["b"]
        if not _carry(prompt):
            assert completion == problem.answer  # no carry, nothing to get wrong
            continue
        carries += 1
        assert completion in (str(a + b), str(a + b - 10))
        flawed += completion == str(a + b - 10)
    share = flawed / carries
    # binomial: 4 standard errors around the configured rate
    assert abs(share - flaw_rate) <= 4 * math.sqrt(flaw_rate * (1 - flaw_rate) / carries) + 1e-12
    assert 0.35 < carries / len(problems) < 0.55  # 2-digit addition carries 45% of the time


def test_demonstrations_do_not_depend_on_how_the_stream_is_cut() -> None:
    pairs = demonstration_pairs(warmup_task(RetrainConfig()), seed=0, flaw_rate=0.6)
    assert pairs(0, 100) == pairs(0, 40) + pairs(40, 60)
    other = demonstration_pairs(warmup_task(RetrainConfig()), seed=1, flaw_rate=0.6)
    assert pairs(0, 500) != other(0, 500)  # the flaw draws depend on the warm-up seed


def test_flaw_rate_and_widened_split_are_part_of_the_cache_key() -> None:
    from retrain.backend.local.cache import cache_key

    def key(cfg: RetrainConfig) -> str:
        return cache_key("tiny", task_key=warmup_key(cfg), steps=1, lr=1.0, batch_size=1, seed=0)

    base = RetrainConfig()
    assert key(base) != key(dataclasses.replace(base, model=ModelConfig(warmup_flaw_rate=0.0)))
    assert key(base) != key(dataclasses.replace(base, data=DataConfig(eval_size=2000)))
    assert key(base) == key(dataclasses.replace(base, data=DataConfig(eval_size=100)))
