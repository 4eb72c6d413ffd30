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
from typing import Any

import numpy as np

from retrain.config.render import config_to_dict, render_toml
from retrain.config.schema import RetrainConfig
from retrain.io import atomic_write_text
from retrain.trainer.state import StopFlag, TrainerState


@dataclass
class RunResult:
    status: str  # done | interrupted | failed
    run_dir: Path
    steps_done: int
    wall_time_s: float
    final_eval: dict[str, float] | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)


def write_run_config(cfg: RetrainConfig, run_dir: Path, *, run_name: str) -> None:
    header = (f"# resolved config of run {run_name}; reproduce it with:\n"
              f"#   retrain run {run_dir / 'config.toml'}")
    atomic_write_text(run_dir / "config.toml", render_toml(cfg, for_run=True, header=header))


def train_run(cfg: RetrainConfig, run_dir: str | Path, *, run_name: str | None = None,
              condition: str | None = None, resume: bool = False, console_mode: str = "progress",
              stop: StopFlag | None = None, write_config: bool | None = None) -> RunResult:
    """Train one run into `run_dir` (fresh, or continue from its newest checkpoint).

    `write_config` (default: only when fresh) writes the resolved config.toml once the model
    and any checkpoint have loaded, so a failed resume leaves the old config in place.
    """
    from retrain.algo.sepa import SepaScheduler
    from retrain.sinks import RunInfo, build_sinks
    from retrain.trainer.setup import build_context

    run_dir = Path(run_dir)
    run_name = run_name or run_dir.name
    condition = condition or cfg.condition
    stop = stop or StopFlag()
    ctx = build_context(cfg, run_dir, resume=resume, progress=console_mode != "none")
    run_dir.mkdir(parents=True, exist_ok=True)
    if write_config if write_config is not None else not resume:
        write_run_config(cfg, run_dir, run_name=run_name)
    state = ctx.state
    sepa = SepaScheduler(schedule=cfg.sepa.schedule, steps=cfg.sepa.steps, delay_steps=cfg.sepa.delay_steps,
                         correct_rate_gate=cfg.sepa.correct_rate_gate, ema_decay=cfg.sepa.ema_decay,
                         auto_warmup_steps=cfg.sepa.auto_warmup_steps, auto_threshold=cfg.sepa.auto_threshold)
    if state.sepa:
        sepa.load_state_dict(state.sepa)
    bp = _build_backpressure(cfg, state)
    custom_fn = _custom_advantage(cfg)
    info = RunInfo(run_name=run_name, condition=condition, seed=cfg.training.seed, run_dir=run_dir,
                   max_steps=cfg.training.max_steps, start_step=state.step,
                   config=config_to_dict(cfg, for_run=True), resumed=resume)
    sinks = build_sinks(info, cfg.logging, console_mode=console_mode)
    sinks.start(info)
    eval_problems = ctx.task.eval_problems(cfg.eval.size)
    invocation_t0 = time.perf_counter()
    wall_before = state.wall_time_s
    status = "done"
    last: dict[str, Any] = {}
    try:
        if not resume and cfg.eval.at_start:
            m = _evaluate(ctx, eval_problems)
            state.initial_eval = m
            sinks.log_eval(0, m)
        for step in range(state.step + 1, cfg.training.max_steps + 1):
            if stop.requested:
                status = "interrupted"
                break
            last = _one_step(ctx, step, sepa=sepa, bp=bp, custom_fn=custom_fn, condition=condition,
                             sinks=sinks, eval_problems=eval_problems)
            _check_divergence(cfg, state)
            state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
            if _due(step, cfg.training.save_every) and step < cfg.training.max_steps:
                _checkpoint(ctx, sinks, sepa, bp)
        state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
        _checkpoint(ctx, sinks, sepa, bp)
        if status == "done":
            from retrain.backend.local.checkpoint import save_final_adapter

            save_final_adapter(run_dir, ctx.model, ctx.tokenizer)
    except BaseException as exc:
        state.wall_time_s = wall_before + (time.perf_counter() - invocation_t0)
        interrupted = isinstance(exc, KeyboardInterrupt)
        sinks.finish(_summary(ctx, "interrupted" if interrupted else "failed",
                              error=None if interrupted else f"{type(exc).__name__}: {exc}"),
                     fatal=False)
        raise
    sinks.finish(_summary(ctx, status))
    return RunResult(status=status, run_dir=run_dir, steps_done=state.step, wall_time_s=state.wall_time_s,
                     final_eval=state.last_eval, last_metrics=last)


def _one_step(ctx: Any, step: int, *, sepa: Any, bp: Any, custom_fn: Any, condition: str,
              sinks: Any, eval_problems: list[Any]) -> dict[str, Any]:
    from retrain.trainer.stages import advantage_stage, reward_stage, sample_stage, train_stage

    cfg, state = ctx.cfg, ctx.state
    t0 = time.perf_counter()
    batch_size, chunk = _sizes(cfg, state, bp)
    problems = ctx.task.train_problems(state.data_cursor, batch_size)
    sepa_lambda = sepa.lambda_for_step(step) if cfg.uses_sepa else 0.0

    rollouts, m_sample = sample_stage(ctx, problems, step=step, chunk_size=chunk)
    reward_N, m_reward = reward_stage(ctx.task, problems, rollouts.completion_text, cfg.training.group_size)
    adv_T, m_adv = advantage_stage(cfg, rollouts, reward_N, sepa_lambda=sepa_lambda, custom_fn=custom_fn)
    micro = chunk if chunk is not None else cfg.training.micro_batch_size
    m_train = train_stage(ctx, rollouts, adv_T, micro_batch_size=micro)
    step_time = time.perf_counter() - t0

    state.step = step
    state.data_cursor += batch_size
    state.correct_total += m_reward["correct_count"]
    state.completions_total += m_reward["total_count"]
    exec_var = m_adv.get("exec_uncertainty_var")  # the configured uncertainty kind, before pooling
    sepa.update(step, correct_rate=m_reward["correct_rate"],
                exec_var=float("nan") if exec_var is None else float(exec_var))
    trained_tokens = int(m_train.get("trained_tokens", 0))
    m_bp = _bp_observe(bp, state, tokens=int(m_sample["num_generated_tokens"]) + trained_tokens,
                       seconds=step_time, size=chunk if cfg.backpressure.mode == "concurrency" else batch_size)
    skipped_groups = int(m_adv.get("num_groups", 0)) - int(m_adv.get("num_informative_groups", 0))
    loss = float(m_train["loss"])
    if state.loss_at_start is None and np.isfinite(loss):
        state.loss_at_start = loss
    metrics: dict[str, Any] = {
        "step": step, "condition": condition,
        "loss": loss, "reported_loss": loss, "loss_is_placeholder": False,
        "backend_reports_sync_loss": True, "backend_preserves_token_advantages": True,
        "mean_reward": m_reward["mean_reward"], "correct_rate": m_reward["correct_rate"],
        "running_correct_rate": state.correct_total / max(1, state.completions_total),
        "correct_count": m_reward["correct_count"], "total_count": m_reward["total_count"],
        "sepa_lambda": float(sepa_lambda), "sepa_gate_open": bool(sepa.gate_open),
        "num_datums": len(rollouts.completion_text),
        "max_token_hit_rate": m_sample["max_token_hit_rate"], "step_time_s": step_time,
        "batch_size": batch_size, "group_size": cfg.training.group_size,
        "uncertainty_kind": cfg.algorithm.uncertainty_kind,
        "sample_time_s": m_sample["sample_time_s"], "reward_time_s": m_reward["reward_time_s"],
        "advantage_time_s": m_adv["advantage_time_s"], "train_time_s": m_train["train_time_s"],
        "tokens_per_s": m_sample["num_generated_tokens"] / max(step_time, 1e-9),
        "grad_norm": float(m_train.get("grad_norm", float("nan"))),
        "clip_frac": float(m_train.get("clip_frac", 0.0)),
        "kl": m_train.get("kl") if cfg.training.kl_beta > 0 else None,
        "lr": float(m_train.get("lr", 0.0)),
        "skipped_groups": skipped_groups,
        "skipped_groups_total": state.skipped_groups_total + skipped_groups,
        "skipped_step": bool(m_train.get("skipped", 0)),
        "mean_completion_length": m_sample["mean_completion_length"],
        "chunk_size": chunk,
        **{k: m_adv[k] for k in _ADV_KEYS if k in m_adv},
        **m_bp,
    }
    state.skipped_groups_total = metrics["skipped_groups_total"]
    state.skipped_streak = state.skipped_streak + 1 if metrics["skipped_step"] else 0
    if _due(step, cfg.eval.every) or step == cfg.training.max_steps:
        sinks.log_eval(step, _evaluate(ctx, eval_problems, step=step))
    sinks.log_step(metrics)
    sinks.log_generations(step, _generation_records(problems, rollouts, reward_N, cfg.training.group_size))
    return metrics


_ADV_KEYS = (
    "exec_entropy_mean", "exec_entropy_var", "plan_entropy_mean", "plan_entropy_var",
    "exec_surprisal_mean", "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var",
    "num_all_correct_groups", "num_all_wrong_groups", "num_informative_groups", "adv_abs_mean",
    "planning_token_frac", "num_planning_tokens", "hicra_changed_frac",
)


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


def _evaluate(ctx: Any, problems: list[Any], *, step: int = 0) -> dict[str, float]:
    from retrain.trainer.stages import eval_stage

    m = eval_stage(ctx, problems)
    state = ctx.state
    state.last_eval = m
    acc = m["eval_accuracy"]
    if state.best_eval_accuracy is None or acc > state.best_eval_accuracy:
        state.best_eval_accuracy, state.best_eval_step = acc, step
    return m


def _generation_records(problems: list[Any], rollouts: Any, reward_N: np.ndarray, group_size: int) -> list[dict[str, Any]]:
    lengths = np.diff(rollouts.offsets)
    return [{"prompt": problems[i // group_size].prompt, "completion": text,
             "reward": float(reward_N[i]), "num_tokens": int(lengths[i])}
            for i, text in enumerate(rollouts.completion_text)]


def _checkpoint(ctx: Any, sinks: Any, sepa: Any, bp: Any) -> None:
    from retrain.backend.local.checkpoint import save_checkpoint

    state: TrainerState = ctx.state
    state.sepa = sepa.state_dict()
    state.backpressure = bp.state_dict() if bp is not None else {}
    path = save_checkpoint(ctx.run_dir, state.step, ctx.model, ctx.optimizer, ctx.scheduler,
                           trainer_state=state.to_dict(), keep=ctx.cfg.training.keep_checkpoints)
    sinks.log_checkpoint(state.step, path)


def _summary(ctx: Any, status: str, *, error: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": status, "wall_time_s": ctx.state.wall_time_s, "steps_done": ctx.state.step,
        "params_total": ctx.params.get("total"), "params_trainable": ctx.params.get("trainable"),
        "model": ctx.model_path,
    }
    if error:
        out["error"] = error
    return out


# --- back-pressure -----------------------------------------------------------------------------

def _build_backpressure(cfg: RetrainConfig, state: TrainerState) -> Any:
    if not cfg.backpressure.enabled:
        return None
    from retrain.algo.backpressure import BackpressureController

    t = cfg.training
    initial = t.batch_size if cfg.backpressure.mode == "batch" else t.batch_size * t.group_size
    initial = max(cfg.backpressure.min_size, min(cfg.backpressure.max_size, initial))
    bp = BackpressureController.from_config(cfg.backpressure, initial_size=initial)
    if state.backpressure:
        bp.load_state_dict(state.backpressure)
    return bp


def _sizes(cfg: RetrainConfig, state: TrainerState, bp: Any) -> tuple[int, int | None]:
    """(prompts this step, sequences in flight or None for all at once)."""
    if bp is None:
        return cfg.training.batch_size, None
    if cfg.backpressure.mode == "batch":
        return int(bp.size), None
    return cfg.training.batch_size, int(bp.size)


def _bp_observe(bp: Any, state: TrainerState, *, tokens: int, seconds: float, size: int | None) -> dict[str, Any]:
    if bp is None:
        return {"bp_action": "off", "bp_regime": "off", "bp_p_star": None, "bp_sigma": None,
                "bp_kappa": None, "bp_utilization": None, "bp_throughput": tokens / max(seconds, 1e-9),
                "bp_warmup": False}
    decision = bp.observe(size=int(size or bp.size), tokens=tokens, seconds=seconds)
    m = dict(decision.metrics())
    m["bp_warmup"] = decision.regime == "warmup"
    return m


def _custom_advantage(cfg: RetrainConfig) -> Any:
    if ":" not in cfg.algorithm.advantage_mode:
        return None
    from retrain.algo.advantages import load_custom_advantage

    return load_custom_advantage(cfg.algorithm.advantage_mode)
