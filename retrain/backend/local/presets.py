"""Which weights a run starts from: a Hub id or a local model dir as given, or a `tiny`/`small`
preset built once by a supervised warm-up on the task's demonstrations and cached.

Data flow: `[model] name` ─▶ **resolve_model_path** ─▶ a model dir ─▶ LocalBackend. Also used by
`retrain model build` and by a campaign that builds the model before its workers start. Only
`resolve_model_path` (on a cache miss) and `seed_everything` import torch.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from retrain.config.schema import DataConfig, RetrainConfig
from retrain.tasks import build_task
from retrain.tasks.base import Task, stream_rng

TINY_PRESETS = ("tiny", "small")


def resolve_model_path(cfg: RetrainConfig, task: Task, *, progress: bool = True) -> str:
    """A preset name becomes its cached, warmed-up model dir (built on first use)."""
    name = cfg.model.name
    if name not in TINY_PRESETS:
        return name
    m = cfg.model
    task_key = warmup_key(cfg)
    from retrain.backend.local.cache import built_entry

    cached = built_entry(name, task_key=task_key, steps=m.warmup_steps, lr=m.warmup_lr,
                         batch_size=m.warmup_batch_size, seed=m.warmup_seed)
    if cached is not None:
        return str(cached)  # found without importing torch
    quiet_libraries()
    from retrain.backend.local.tiny import ensure_tiny_model

    pairs_fn = demonstration_pairs(task, seed=m.warmup_seed, flaw_rate=m.warmup_flaw_rate)
    held_out = task.eval_problems(min(200, cfg.data.eval_size))
    path = ensure_tiny_model(
        name, pairs_fn=pairs_fn, task_key=task_key, steps=m.warmup_steps,
        lr=m.warmup_lr, batch_size=m.warmup_batch_size, seed=m.warmup_seed,
        eval_pairs=[(p.prompt, p.answer) for p in held_out],
        is_correct=lambda i, text: task.is_correct(held_out[i], text),
        eval_max_tokens=cfg.training.max_tokens, progress=progress,
    )
    return str(path)


# Bump when a task's `demonstration()` writes different completions: cached models then rebuild.
DEMONSTRATIONS_VERSION = 1


def warmup_key(cfg: RetrainConfig) -> dict[str, Any]:
    """Everything about the task that changes the warm-up's data (part of the model cache key).

    "split" names the held-out scheme: bump it when eval problems change, so the warm-up never
    trains on what RL evaluates on.
    """
    return {"task": cfg.data.task, "data": _data_key(cfg), "split": "fixed-eval-v1",
            "flaw_rate": cfg.model.warmup_flaw_rate, "demonstrations": DEMONSTRATIONS_VERSION}


def demonstration_pairs(task: Task, *, seed: int, flaw_rate: float) -> Callable[[int, int], list[tuple[str, str]]]:
    """(prompt, completion) pairs cursor .. cursor+n-1 of the warm-up: the task's demonstrations.

    A task with `demonstration(problem, rng, flaw_rate)` writes its own completion (a flawed
    answer, a reasoning trace); otherwise the reference answer is the completion. Demonstration
    i draws from its own generator, so any cursor/n split gives the same pairs.
    """
    demo = getattr(task, "demonstration", None)

    def pairs(cursor: int, n: int) -> list[tuple[str, str]]:
        problems = task.train_problems(cursor, n)
        if not callable(demo):
            return [(p.prompt, p.answer) for p in problems]
        return [(p.prompt, demo(p, stream_rng(seed, "demonstration", cursor + i), flaw_rate))
                for i, p in enumerate(problems)]

    return pairs


# [data] keys that only change how completions are scored, never the warm-up's (prompt, answer)
# pairs: leaving them out of the cache key lets runs with a reward plugin share the model.
_SCORING_ONLY_KEYS = ("reward", "match")


# The warm-up holds out at least this many eval problems, whatever data.eval_size is, so runs
# that evaluate on fewer problems (tests, quick looks) share one built model with the defaults.
WARMUP_HELD_OUT = 500


def warmup_data(cfg: RetrainConfig) -> DataConfig:
    """The [data] of the warm-up stream: as configured, with the held-out set widened to
    max(data.eval_size, WARMUP_HELD_OUT) where the problem space allows it. The eval set is a
    prefix of that wider set (streams.SplitStreams), so the warm-up never sees an eval problem."""
    from retrain.tasks import check_data_config

    wide = dataclasses.replace(cfg.data, eval_size=max(cfg.data.eval_size, WARMUP_HELD_OUT))
    return wide if not check_data_config(wide) else cfg.data


def _data_key(cfg: RetrainConfig) -> dict[str, Any]:
    """The [data] settings that change what the warm-up sees (the training seed does not)."""
    data = dataclasses.asdict(warmup_data(cfg))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()
            if k not in _SCORING_ONLY_KEYS}


def warmup_task(cfg: RetrainConfig) -> Task:
    """The stream the tiny model is warmed up on: the configured task under the warm-up seed."""
    return build_task(warmup_data(cfg), cfg.model.warmup_seed)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quiet_libraries() -> None:
    """transformers' weight-loading bars and deprecation notices are noise in a training log."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"peft\..*")
