"""The step loop of one run, readable top to bottom:

    sample → reward → advantages (+ gtpo/hicra/sepa) → loss + optimizer step
           → back-pressure decision → log → evaluate → checkpoint

`train_run` is the single-run entry point every executor calls (in-process, worker pool, Ray).
It returns a `RunResult`; bad input raises RetrainError before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrain.algo.backpressure import BackpressureController
from retrain.backend.base import Replay, Rollouts
from retrain.config.render import config_to_dict, render_toml
from retrain.config.schema import RetrainConfig
from retrain.hooks.base import OnCheckpoint, OnEval, PostAdvantages, PostSample, PostStep, PreStep
from retrain.io import atomic_write_text
from retrain.sinks.contract import Metrics
from retrain.tasks.base import Problem, Task
from retrain.trainer.state import StopFlag, TrainerState

if TYPE_CHECKING:
    from retrain.trainer.setup import BackendFactory, RunContext


@dataclass
class RunResult:
    status: str  # done | interrupted | failed
    run_dir: Path
    steps_done: int
    wall_time_s: float
    final_eval: dict[str, float] | None = None
    last_metrics: Metrics = field(default_factory=dict)


def write_run_config(cfg: RetrainConfig, run_dir: Path, *, run_name: str) -> None:
    header = (f"# resolved config of run {run_name}; reproduce it with:\n"
              f"#   retrain run {run_dir / 'config.toml'}")
    atomic_write_text(run_dir / "config.toml", render_toml(cfg, for_run=True, header=header))


def train_run(cfg: RetrainConfig, run_dir: str | Path, *, run_name: str | None = None,
              condition: str | None = None, resume: bool = False, console_mode: str = "progress",
              stop: StopFlag | None = None, write_config: bool | None = None,
              backend_factory: BackendFactory | None = None) -> RunResult:
    """Train one run into `run_dir` (fresh, or continue from its newest checkpoint).

    `write_config` (default: only when fresh) writes the resolved config.toml once the model
    and any checkpoint have loaded, so a failed resume leaves the old config in place.
    """
    from retrain.environment import write_environment
    from retrain.hooks.runner import build_hooks, start_hook_sinks
    from retrain.sinks import RunInfo, build_sinks
    from retrain.trainer.setup import (
        RunContext,
        build_backpressure,
        build_engine,
        build_sepa,
        custom_advantage,
        custom_transform,
    )

    t_entry = time.perf_counter()
    run_dir = Path(run_dir)
    run_name = run_name or run_dir.name
    condition = condition or cfg.condition
    stop = stop or StopFlag()
    task, backend, state = build_engine(cfg, run_dir, resume=resume, progress=console_mode != "none",
                                        backend_factory=backend_factory)
    run_dir.mkdir(parents=True, exist_ok=True)
    if write_config if write_config is not None else not resume:
        write_run_config(cfg, run_dir, run_name=run_name)
    write_environment(run_dir, device=cfg.model.device, resume=resume, start_step=state.step)
    info = RunInfo(run_name=run_name, condition=condition, seed=cfg.training.seed, run_dir=run_dir,
                   max_steps=cfg.training.max_steps, start_step=state.step,
                   config=config_to_dict(cfg, for_run=True), resumed=resume)
    ctx = RunContext(cfg=cfg, run_dir=run_dir, run_name=run_name, condition=condition, task=task,
                     backend=backend, state=state, sepa=build_sepa(cfg, state),
                     bp=build_backpressure(cfg, state), custom_fn=custom_advantage(cfg),
                     custom_transform=custom_transform(cfg),
                     eval_problems=task.eval_problems(cfg.eval.size),
                     sinks=build_sinks(info, cfg.logging, console_mode=console_mode))
    if cfg.phases:
        from retrain.trainer.phases import PhaseDriver

        ctx.phases = PhaseDriver(ctx)
    ctx.hooks = build_hooks(cfg, backend, ctx.sinks)
    sinks = ctx.sinks
    sinks.start(info)
    start_hook_sinks(ctx.hooks, cfg, info, sinks, quiet=console_mode in ("silent", "none"))
    invocation_t0 = time.perf_counter()
    ctx.setup_time_s = invocation_t0 - t_entry
    wall_before = state.wall_time_s
    status = "done"
    last: Metrics = {}
    try:
        if ctx.phases is not None:
            ctx.phases.resume(state.step)  # the phase of the next step (the first one when fresh)
        if not resume and cfg.eval.at_start:
            m = _evaluate(ctx)
            state.initial_eval = m
            sinks.log_eval(0, m)
        for step in range(state.step + 1, cfg.training.max_steps + 1):
            if stop.requested:
                status = "interrupted"
                break
            if ctx.phases is not None:
                ctx.phases.enter(step)
            last = _one_step(ctx, step)
            _check_divergence(cfg, state)
            state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
            phase_end = ctx.phases is not None and ctx.phases.finish_if_last(step)
            if ctx.hooks.stop_reason is not None:
                break  # a hook stopped the run (said so in run.log): it ends done, here
            if (_due(step, cfg.training.save_every) or phase_end) and step < cfg.training.max_steps:
                _checkpoint(ctx)
        state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
        _checkpoint(ctx)
        if status == "done":
            backend.save_adapter()
    except BaseException as exc:
        state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
        interrupted = isinstance(exc, KeyboardInterrupt)
        sinks.finish(_summary(ctx, "interrupted" if interrupted else "failed",
                              error=None if interrupted else f"{type(exc).__name__}: {exc}"),
                     fatal=False)
        raise
    finally:
        ctx.hooks.close()
        backend.close()
    sinks.finish(_summary(ctx, status))
    return RunResult(status=status, run_dir=run_dir, steps_done=state.step, wall_time_s=state.wall_time_s,
                     final_eval=state.last_eval, last_metrics=last)


def _one_step(ctx: RunContext, step: int) -> Metrics:
    from retrain.trainer.explain_record import record_explain
    from retrain.trainer.stages import advantage_stage, reward_stage, sample_stage, train_stage

    cfg, state, sepa, bp, sinks = ctx.cfg, ctx.state, ctx.sepa, ctx.bp, ctx.sinks
    condition = ctx.condition
    t0 = time.perf_counter()
    batch_size, chunk = _sizes(cfg, bp)
    replay: Replay | None = None
    grader: Task = ctx.task
    replay_fields: Metrics = {}
    if ctx.phases is not None:  # the phase's prompts (and replayed ones); cursors advance there
        problems, grader, replay, replay_fields = ctx.phases.batch(step, batch_size)
    else:
        problems = ctx.task.train_problems(state.data_cursor, batch_size)
    sepa_lambda = sepa.lambda_for_step(step) if cfg.uses_sepa else 0.0
    hooks = ctx.hooks
    hooks.call(PreStep(step, cfg.training.max_steps, hooks.base_lr(cfg.optimizer.lr)))

    sampled = sample_stage(ctx.backend, cfg, problems, step=step, chunk_size=chunk)
    rollouts = sampled.rollouts
    hooks.call(PostSample(step, rollouts, cfg.training.max_tokens))
    rewarded = reward_stage(grader, problems, rollouts.completion_text, cfg.training.group_size)
    adv = advantage_stage(cfg, rollouts, rewarded.reward_N, sepa_lambda=sepa_lambda,
                          custom_fn=ctx.custom_fn, custom_transform=ctx.custom_transform,
                          trace=hooks.needs_trace)
    hooks.call(PostAdvantages(step, rollouts, rewarded.reward_N, rollouts.prompt_index, adv.adv_T,
                              adv.planning_T, adv.trace))
    record_explain(ctx, step, problems, rollouts, rewarded.reward_N, adv, sepa_lambda=sepa_lambda)
    micro = chunk if chunk is not None else cfg.training.micro_batch_size
    trained = train_stage(ctx.backend, rollouts, adv.adv_T, micro_batch_size=micro, replay=replay)
    step_time = time.perf_counter() - t0

    state.step = step
    if ctx.phases is None:
        state.data_cursor += batch_size
    state.correct_total += rewarded.correct_count
    state.completions_total += rewarded.total_count
    sepa.update(step, correct_rate=rewarded.correct_rate, exec_var=adv.exec_var)
    m_bp = _bp_observe(bp, tokens=sampled.num_generated_tokens + trained.trained_tokens,
                       seconds=step_time, size=chunk if cfg.backpressure.mode == "concurrency" else batch_size)
    metrics: Metrics = {
        "step": step, "condition": condition,
        "loss": trained.loss, "reported_loss": trained.loss, "loss_is_placeholder": False,
        "backend_reports_sync_loss": True, "backend_preserves_token_advantages": True,
        **rewarded.metrics,
        "running_correct_rate": state.correct_total / max(1, state.completions_total),
        "sepa_lambda": float(sepa_lambda), "sepa_gate_open": bool(sepa.gate_open),
        "num_datums": len(rollouts.completion_text),
        "step_time_s": step_time,
        "batch_size": batch_size, "group_size": cfg.training.group_size,
        "uncertainty_kind": cfg.algorithm.uncertainty_kind,
        **sampled.metrics,
        "tokens_per_s": sampled.num_generated_tokens / max(step_time, 1e-9),
        **trained.metrics,
        "kl": trained.metrics["kl"] if cfg.training.kl_beta > 0 else None,
        "skipped_groups": adv.skipped_groups,
        "skipped_groups_total": state.skipped_groups_total + adv.skipped_groups,
        "skipped_step": trained.skipped,
        "chunk_size": chunk,
        **adv.metrics,  # advantage_time_s, group counts, uncertainty statistics, transform stats
        **m_bp,
    }
    state.skipped_groups_total += adv.skipped_groups
    state.skipped_streak = state.skipped_streak + 1 if trained.skipped else 0
    if ctx.phases is not None:
        metrics.update(ctx.phases.fields(step))
        metrics.update(replay_fields)
        metrics.update(ctx.phases.probe_if_due(step))
    if _due(step, cfg.eval.every) or step == cfg.training.max_steps:
        sinks.log_eval(step, _evaluate(ctx, step=step))
    hooks.call(PostStep(step, metrics, trained.grad_norms, ctx.backend.adapter_arrays))
    sinks.log_step(metrics)
    sinks.log_generations(step, _generation_records(problems, rollouts, rewarded.reward_N, cfg.training.group_size))
    return metrics




def _check_divergence(cfg: RetrainConfig, state: TrainerState) -> None:
    """Fail the run once `training.max_skipped_steps` steps in a row made no update."""
    limit = cfg.training.max_skipped_steps
    if limit <= 0 or state.skipped_streak < limit:
        return
    from retrain.errors import DivergedError

    first = state.step - state.skipped_streak + 1
    raise DivergedError(
        f"training diverged: steps {first}-{state.step} made no update (non-finite loss or "
        f"gradient, or an update that made a weight non-finite, rolled back); lower "
        f"optimizer.lr (now {cfg.optimizer.lr:g}), or raise training.max_skipped_steps "
        f"(now {limit}) to keep going")


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _evaluate(ctx: RunContext, *, step: int = 0) -> dict[str, float]:
    from retrain.trainer.stages import eval_stage

    if ctx.phases is not None:  # a multi-phase run's eval rows: the run's own [data] held-out set
        cfg, task = ctx.phases.base_cfg, ctx.phases.base_task
    else:
        cfg, task = ctx.cfg, ctx.task
    m = eval_stage(ctx.backend, cfg, task, ctx.eval_problems)
    ctx.hooks.call(OnEval(step, m))
    state = ctx.state
    state.last_eval = m
    acc = m["eval_accuracy"]
    if state.best_eval_accuracy is None or acc > state.best_eval_accuracy:
        state.best_eval_accuracy, state.best_eval_step = acc, step
    return m


def _generation_records(problems: list[Problem], rollouts: Rollouts, reward_N: np.ndarray,
                        group_size: int) -> list[Metrics]:
    lengths = np.diff(rollouts.offsets)
    return [{"prompt": problems[i // group_size].prompt, "completion": text,
             "reward": float(reward_N[i]), "num_tokens": int(lengths[i])}
            for i, text in enumerate(rollouts.completion_text)]


def _checkpoint(ctx: RunContext) -> None:
    state = ctx.state
    state.sepa = ctx.sepa.state_dict()
    state.backpressure = ctx.bp.state_dict() if ctx.bp is not None else {}
    path = ctx.backend.save_checkpoint(state.step, state.to_dict())
    ctx.sinks.log_checkpoint(state.step, path)
    ctx.hooks.call(OnCheckpoint(state.step, path))


def _summary(ctx: RunContext, status: str, *, error: str | None = None) -> Metrics:
    params = ctx.backend.params
    out: Metrics = {
        "status": status, "wall_time_s": ctx.state.wall_time_s, "steps_done": ctx.state.step,
        "params_total": params.get("total"), "params_trainable": params.get("trainable"),
        "model": ctx.backend.model_path,
        "setup_time_s": round(ctx.setup_time_s, 3),
    }
    if error:
        out["error"] = error
    return out


# --- back-pressure -----------------------------------------------------------------------------

def _sizes(cfg: RetrainConfig, bp: BackpressureController | None) -> tuple[int, int | None]:
    """(prompts this step, sequences in flight or None for all at once)."""
    if bp is None:
        return cfg.training.batch_size, None
    if cfg.backpressure.mode == "batch":
        return int(bp.size), None
    return cfg.training.batch_size, int(bp.size)


def _bp_observe(bp: BackpressureController | None, *, tokens: int, seconds: float, size: int | None) -> Metrics:
    if bp is None:
        return {"bp_action": "off", "bp_regime": "off", "bp_p_star": None, "bp_sigma": None,
                "bp_kappa": None, "bp_utilization": None, "bp_throughput": tokens / max(seconds, 1e-9),
                "bp_warmup": False}
    decision = bp.observe(size=int(size or bp.size), tokens=tokens, seconds=seconds)
    m = dict(decision.metrics())
    m["bp_warmup"] = decision.regime == "warmup"
    return m
