"""The hook runner the step loop calls: `runner.call(payload)` at each point.

Place in the data flow: trainer/loop.py ─▶ **HookRunner.call** ─▶ each hook observing the point
(every N steps) ─▶ rows to the hook sinks (sinks.py) ─▶ interventions applied (stop after this
step, set the learning rate) and announced with one line in run.log.

Each hook call is timed; the `timing` hook reports those costs. A run without hooks gets an
empty runner: `call` returns at once, no file is written and the backend collects nothing extra.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrain.hooks.base import (
    POINTS,
    Hook,
    HookOutput,
    Intervention,
    Payload,
    PostStep,
    read_only,
)
from retrain.hooks.sinks import CsvSink, HookSink, JsonlSink, Row, WandbHookSink

if TYPE_CHECKING:
    from retrain.backend.base import Backend
    from retrain.config.schema import RetrainConfig
    from retrain.sinks.base import RunInfo, SinkSet


class HookRunner:
    def __init__(self, hooks: Sequence[Hook], *, note: Callable[[str], None] = print,
                 set_lr: Callable[[float], None] | None = None) -> None:
        # timing last at its point: it reports the costs of the hooks before it
        self.hooks = sorted(hooks, key=lambda h: h.name == "timing")
        self.note = note
        self.set_lr = set_lr
        self.sinks: list[HookSink] = []
        self.stop_reason: str | None = None  # set by a stop intervention; the loop ends the run
        self.lr: float | None = None  # the base lr a hook set, if any
        self.costs_ms = self._zero_costs()  # this step's cost per hook so far
        self.total_ms: dict[str, float] = {}  # whole run, per hook (bench/hooks.py reads it)
        self._by_point = {p: [h for h in self.hooks if p in h.points] for p in POINTS}
        self._rows: list[Row] = []  # this step's rows until its post_step

    def _zero_costs(self) -> dict[str, float]:
        return dict.fromkeys((h.name for h in self.hooks if h.name != "timing"), 0.0)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    @property
    def needs_trace(self) -> bool:
        """Whether advantage_stage must record an AdvantageTrace for a hook."""
        return any(getattr(h, "wants_trace", False) for h in self._by_point["post_advantages"])

    @property
    def needs_grad_norms(self) -> bool:
        return any(getattr(h, "wants_grads", False) for h in self.hooks)

    def base_lr(self, configured: float) -> float:
        """The base learning rate of the next step: what a hook set, else the configured one."""
        return configured if self.lr is None else self.lr

    def open_sinks(self, sinks: Sequence[HookSink]) -> None:
        self.sinks = list(sinks)

    def call(self, payload: Payload) -> None:
        hooks = self._by_point[payload.point]
        if not hooks:
            return
        payload = _read_only(payload)
        step = payload.step
        rows: list[Row] = []
        for hook in hooks:
            if hook.every > 1 and step % hook.every != 0:
                continue
            if hook.name == "timing":
                hook.costs_ms = dict(self.costs_ms)  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            out = hook.observe(payload)
            ms = (time.perf_counter() - t0) * 1e3
            self.costs_ms[hook.name] = self.costs_ms.get(hook.name, 0.0) + ms
            self.total_ms[hook.name] = self.total_ms.get(hook.name, 0.0) + ms
            metrics, intervention = _split(out)
            rows += [Row(step, payload.point, hook.name, k, float(v)) for k, v in metrics.items()]
            if intervention is not None:
                self._apply(hook.name, step, intervention)
        self._rows += rows
        if payload.point in ("post_step", "on_eval", "on_checkpoint"):
            self.flush()  # once per step (a step's later points come after its row is logged)
        if isinstance(payload, PostStep):  # a new step's costs start after post_step
            self.costs_ms = self._zero_costs()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            for sink in self.sinks:
                sink.write(rows)

    def _apply(self, hook: str, step: int, iv: Intervention) -> None:
        if iv.lr is not None and self.set_lr is not None:
            self.set_lr(iv.lr)
            self.lr = iv.lr
            self.note(f"[hooks] {hook} set the learning rate to {iv.lr:g} after step {step}: {iv.reason}")
        if iv.stop and self.stop_reason is None:
            self.stop_reason = f"{hook}: {iv.reason}"
            self.note(f"[hooks] {hook} stopped the run after step {step}: {iv.reason}")

    def close(self) -> None:
        self.flush()
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _split(out: object) -> tuple[Mapping[str, float], Intervention | None]:
    if out is None:
        return {}, None
    if isinstance(out, HookOutput):
        return out.metrics, out.intervention
    if isinstance(out, Intervention):
        return {}, out
    if isinstance(out, Mapping):
        return out, None
    raise TypeError(f"a hook returned {type(out).__name__}; return a dict of metrics, a "
                    f"HookOutput or None")


def _read_only(payload: Payload) -> Payload:
    """The payload with every array (also inside rollouts and trace) a read-only view."""
    changes: dict[str, object] = {}
    for f in dataclasses.fields(payload):
        if not f.init:
            continue
        v = getattr(payload, f.name)
        if isinstance(v, np.ndarray):
            changes[f.name] = read_only(v)
        elif f.name == "rollouts":
            changes[f.name] = dataclasses.replace(v, **{
                k: read_only(getattr(v, k)) for k in ("truncated", "logprob_T", "entropy_T", "offsets")})
        elif f.name == "adapter":  # read once per call, however many hooks ask
            changes[f.name] = functools.cache(v)
        elif f.name == "trace" and v is not None:
            changes[f.name] = dataclasses.replace(v, **{
                k: read_only(getattr(v, k)) for k in ("adv_N", "uncertainty_T", "pooled_T", "gtpo_weight_T")
                if getattr(v, k) is not None}, stages={k: read_only(a) for k, a in v.stages.items()})
    return dataclasses.replace(payload, **changes)  # type: ignore[arg-type, type-var]


def file_sinks(names: Sequence[str], run_dir: Path, *, start_step: int, resumed: bool) -> list[HookSink]:
    out: list[HookSink] = []
    if "csv" in names:
        out.append(CsvSink(run_dir, start_step=start_step, resumed=resumed))
    if "jsonl" in names:
        out.append(JsonlSink(run_dir, start_step=start_step, resumed=resumed))
    return out


def build_hooks(cfg: RetrainConfig, backend: Backend, sinks: SinkSet) -> HookRunner:
    """The run's hooks from [hooks] (no hooks: an empty runner), wired to the backend."""
    if not (cfg.hooks.groups or cfg.hooks.names):
        return HookRunner([])
    from retrain.hooks.registry import resolve

    runner = HookRunner(resolve(cfg), note=sinks.note, set_lr=backend.set_lr)
    backend.collect_grad_norms = runner.needs_grad_norms
    return runner


def start_hook_sinks(runner: HookRunner, cfg: RetrainConfig, info: RunInfo, sinks: SinkSet, *,
                     quiet: bool) -> None:
    """Open the hook sinks [hooks] names, after the run's own sinks started (wandb shares their run)."""
    if not runner:
        return
    opened = file_sinks(cfg.hooks.sinks, info.run_dir, start_step=info.start_step, resumed=info.resumed)
    if "wandb" in cfg.hooks.sinks:
        from retrain.sinks.wandb_sink import WandbSink

        shared = next((s for s in sinks.sinks if isinstance(s, WandbSink) and s.run is not None), None)
        if shared is not None:
            opened.append(WandbHookSink(shared.run, owned=False))
        else:
            own = WandbSink(dataclasses.replace(cfg.logging, wandb_project=cfg.hooks.wandb_project),
                            quiet=quiet)
            own.start(info)
            opened.append(WandbHookSink(own.run, owned=True))
    runner.open_sinks(opened)
