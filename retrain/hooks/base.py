"""Hooks: observers the step loop calls at named points, and the typed, read-only data they get.

Place in the data flow: beside the step, never inside it. The loop (trainer/loop.py) calls
`HookRunner.call(payload)` once per point; each hook that observes the point returns metrics
(rows of hooks.csv / hooks.jsonl / wandb, sinks.py) and may return an `Intervention` (stop the
run, set the learning rate), which the runner applies and announces in run.log.

    pre_step ─▶ sample ─▶ post_sample ─▶ reward, advantages ─▶ post_advantages ─▶ train
            ─▶ post_step ─▶ (on_eval) ─▶ (on_checkpoint)

Payload arrays are read-only views: a hook that writes into one gets numpy's "assignment
destination is read-only" instead of silently changing what the trainer uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from retrain.algo.pipeline import AdvantageTrace
from retrain.backend.base import LoraArrays, Rollouts

POINTS = ("pre_step", "post_sample", "post_advantages", "post_step", "on_eval", "on_checkpoint")


@dataclass(frozen=True)
class PreStep:
    """Before the step samples anything."""

    step: int
    max_steps: int
    lr: float  # the base learning rate the step will use (optimizer.lr, or what a hook set)
    point: str = field(default="pre_step", init=False)


@dataclass(frozen=True)
class PostSample:
    """After sampling: the step's completions with their sampler log-probs and entropies."""

    step: int
    rollouts: Rollouts
    max_tokens: int  # training.max_tokens: the length a truncated completion reached
    point: str = field(default="post_sample", init=False)


@dataclass(frozen=True)
class PostAdvantages:
    """After rewards and advantages, before the optimizer step sees them."""

    step: int
    rollouts: Rollouts
    reward_N: np.ndarray  # [N] reward per completion
    group_N: np.ndarray  # [N] prompt (group) index per completion
    adv_T: np.ndarray  # [T] the final per-token advantages the loss will use
    planning_T: np.ndarray  # [T] bool, token is part of a planning gram
    trace: AdvantageTrace | None  # every stage's output (present when a hook asks for it)
    point: str = field(default="post_advantages", init=False)


@dataclass(frozen=True)
class PostStep:
    """After the optimizer step and the step's metrics row (before it is logged)."""

    step: int
    metrics: Mapping[str, object]  # the step's metrics.jsonl row
    grad_norms: Mapping[str, float]  # LoRA module -> grad norm before clipping (grad hook only)
    adapter: Callable[[], Mapping[str, LoraArrays]]  # LoRA module -> (A, B, scale); read on call
    point: str = field(default="post_step", init=False)


@dataclass(frozen=True)
class OnEval:
    """After a held-out evaluation (step 0: the initial one)."""

    step: int
    metrics: Mapping[str, float]
    point: str = field(default="on_eval", init=False)


@dataclass(frozen=True)
class OnCheckpoint:
    """After a checkpoint was written."""

    step: int
    path: Path
    point: str = field(default="on_checkpoint", init=False)


Payload = PreStep | PostSample | PostAdvantages | PostStep | OnEval | OnCheckpoint


@dataclass(frozen=True)
class Intervention:
    """What a hook asks the loop to do; the runner applies it and prints why to run.log."""

    reason: str  # shown in the log line: why the hook intervened
    stop: bool = False  # end the run after this step (status done, final adapter written)
    lr: float | None = None  # base learning rate from the next step on (the schedule still applies)


@dataclass(frozen=True)
class HookOutput:
    """A hook's answer when it has more to say than metrics."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    intervention: Intervention | None = None


Observation = HookOutput | Mapping[str, float] | None


@runtime_checkable
class Hook(Protocol):
    """An observer of named points of the step loop.

    `metrics` declares what the hook emits: metric name -> unit and meaning. A name may hold
    `{module}` (one per LoRA module, e.g. `model.layers.0.self_attn.q_proj`), `{stage}` (one per
    advantage stage that ran) or `{hook}` (one per other active hook): `--hooks-describe`
    prints them and the tests check the rows against them.
    """

    name: str
    points: tuple[str, ...]  # from POINTS
    every: int  # observe steps where step % every == 0 (1: every step)
    description: str  # one line
    metrics: Mapping[str, str]

    def observe(self, payload: Payload) -> Observation: ...


def read_only(a: np.ndarray) -> np.ndarray:
    """A view of `a` that numpy refuses to write through."""
    v = a.view()
    v.flags.writeable = False
    return v
