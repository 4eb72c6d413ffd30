"""Everything a run needs before its first step, on one typed context: the task, the backend
(model, adapter, optimizer; restored from the newest checkpoint on resume), the trainer state,
the SEPA scheduler, the back-pressure controller, custom advantage and transform functions and
the sinks.

The step loop (`loop.py`) receives one `RunContext` and never looks at files or devices itself.
This module imports no engine: `registry.build_backend` loads the one `backend.name` names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from retrain.algo.advantages import AdvantageFn
from retrain.algo.backpressure import BackpressureController
from retrain.algo.pipeline import TransformFn
from retrain.algo.sepa import SepaScheduler
from retrain.backend.base import Backend
from retrain.config.schema import RetrainConfig
from retrain.hooks.runner import HookRunner
from retrain.sinks.base import SinkSet
from retrain.tasks import build_task
from retrain.tasks.base import Problem, Task
from retrain.trainer.state import TrainerState

if TYPE_CHECKING:
    from retrain.trainer.phases import PhaseDriver


@dataclass
class RunContext:
    cfg: RetrainConfig
    run_dir: Path
    run_name: str
    condition: str
    task: Task
    backend: Backend
    state: TrainerState
    sepa: SepaScheduler
    bp: BackpressureController | None  # None: back-pressure off
    custom_fn: AdvantageFn | None  # advantage_mode given as 'package.module:function'
    eval_problems: list[Problem]
    sinks: SinkSet
    phases: PhaseDriver | None = None  # multi-phase runs ([[phases]])
    custom_transform: TransformFn | None = None  # transform_mode given as 'package.module:function'
    hooks: HookRunner = field(default_factory=lambda: HookRunner([]))  # [hooks]; empty: none
    setup_time_s: float = 0.0  # this invocation's time before its first step (load, LoRA, restore)


# Builds a run's backend instead of `backend.name`'s engine: a pack's member (executors/packed.py).
BackendFactory = Callable[[RetrainConfig, Path], Backend]


def build_engine(cfg: RetrainConfig, run_dir: Path, *, resume: bool, progress: bool = True,
                 backend_factory: BackendFactory | None = None) -> tuple[Task, Backend, TrainerState]:
    """The task, the backend and the trainer state (restored from the newest intact checkpoint
    on resume). The task is built first: its streams do not touch torch's RNG, and the backend
    seeds torch before it initialises LoRA."""
    from retrain.backend.registry import build_backend

    task = build_task(cfg.data, cfg.training.seed)
    backend = (backend_factory(cfg, run_dir) if backend_factory is not None
               else build_backend(cfg, run_dir, progress=progress))
    state = TrainerState.from_dict(backend.restore()) if resume else TrainerState()
    return task, backend, state


def build_sepa(cfg: RetrainConfig, state: TrainerState) -> SepaScheduler:
    s = cfg.sepa
    sepa = SepaScheduler(schedule=s.schedule, steps=s.steps, delay_steps=s.delay_steps,
                         correct_rate_gate=s.correct_rate_gate, ema_decay=s.ema_decay,
                         auto_warmup_steps=s.auto_warmup_steps, auto_threshold=s.auto_threshold)
    if state.sepa:
        sepa.load_state_dict(state.sepa)
    return sepa


def build_backpressure(cfg: RetrainConfig, state: TrainerState) -> BackpressureController | None:
    if not cfg.backpressure.enabled:
        return None
    t = cfg.training
    initial = t.batch_size if cfg.backpressure.mode == "batch" else t.batch_size * t.group_size
    initial = max(cfg.backpressure.min_size, min(cfg.backpressure.max_size, initial))
    bp = BackpressureController.from_config(cfg.backpressure, initial_size=initial)
    if state.backpressure:
        bp.load_state_dict(state.backpressure)
    return bp


def custom_advantage(cfg: RetrainConfig) -> AdvantageFn | None:
    if ":" not in cfg.algorithm.advantage_mode:
        return None
    from retrain.algo.advantages import load_custom_advantage

    return load_custom_advantage(cfg.algorithm.advantage_mode)


def custom_transform(cfg: RetrainConfig) -> TransformFn | None:
    if ":" not in cfg.algorithm.transform_mode:
        return None
    from retrain.plugins import load_custom_transform

    return load_custom_transform(cfg.algorithm.transform_mode)
