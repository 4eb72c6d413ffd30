"""The stages of one training step. Each returns `(result, metrics)`; the loop calls them in order.

sample → reward → advantages (+ token transforms) → train. Evaluation is a stage too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrain.algo.pipeline import TokenBatch, compute_advantages
from retrain.algo.planning import planning_mask_batch
from retrain.config.schema import RetrainConfig
from retrain.tasks.base import Problem, Task, score

Metrics = dict[str, Any]


def sample_stage(ctx: Any, problems: Sequence[Problem], *, step: int, chunk_size: int | None) -> tuple[Any, Metrics]:
    from retrain.backend.local.sampler import sample

    t = ctx.cfg.training
    t0 = time.perf_counter()
    rollouts = sample(
        ctx.model, ctx.tokenizer, [p.prompt for p in problems], n_per_prompt=t.group_size,
        max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p, seed=t.seed, step=step,
        chunk_size=chunk_size, device=ctx.device,
    )
    dt = time.perf_counter() - t0
    return rollouts, {
        "sample_time_s": dt,
        "max_token_hit_rate": float(np.mean(rollouts.truncated)) if len(rollouts.truncated) else 0.0,
        "num_generated_tokens": int(rollouts.num_generated_tokens),
        "mean_completion_length": float(np.mean(np.diff(rollouts.offsets))) if len(rollouts.offsets) > 1 else 0.0,
    }


def reward_stage(task: Task, problems: Sequence[Problem], completions: Sequence[str], group_size: int) -> tuple[np.ndarray, Metrics]:
    """Rewards per completion (group-major: completion i belongs to problem i // group_size)."""
    t0 = time.perf_counter()
    reward_N = np.empty(len(completions), dtype=np.float64)
    correct_N = np.zeros(len(completions), dtype=bool)
    for i, text in enumerate(completions):
        reward_N[i], correct_N[i] = score(task, problems[i // group_size], text)
    n = len(completions)
    return reward_N, {
        "reward_time_s": time.perf_counter() - t0,
        "mean_reward": float(reward_N.mean()) if n else 0.0,
        "correct_count": int(correct_N.sum()),
        "total_count": n,
        "correct_rate": float(correct_N.mean()) if n else 0.0,
    }


def advantage_stage(cfg: RetrainConfig, rollouts: Any, reward_N: np.ndarray, *, sepa_lambda: float,
                    custom_fn: Any = None) -> tuple[np.ndarray, Metrics]:
    t0 = time.perf_counter()
    n = len(reward_N)
    group_N = np.repeat(np.arange(n // cfg.training.group_size), cfg.training.group_size)
    planning_T = planning_mask_batch(rollouts.completion_text, rollouts.token_spans,
                                     cfg.algorithm.planning_grams)
    batch = TokenBatch(logprob_T=rollouts.logprob_T, entropy_T=rollouts.entropy_T,
                       planning_T=planning_T, offsets=rollouts.offsets, reward_N=reward_N,
                       group_N=group_N)
    a = cfg.algorithm
    adv_T, metrics = compute_advantages(
        batch, advantage_mode=a.advantage_mode, scale=a.scale, eps=a.eps,
        transform_mode=a.transform_mode, uncertainty_kind=a.uncertainty_kind,
        gtpo_beta=cfg.gtpo.beta, gtpo_max_weight=cfg.gtpo.max_weight, hicra_alpha=cfg.hicra.alpha,
        sepa_lambda=sepa_lambda, custom_fn=custom_fn,
    )
    metrics = dict(metrics)
    metrics["advantage_time_s"] = time.perf_counter() - t0
    return adv_T, metrics


def train_stage(ctx: Any, rollouts: Any, adv_T: np.ndarray, *, micro_batch_size: int) -> Metrics:
    from retrain.backend.local.loss import train_step

    t0 = time.perf_counter()
    m = train_step(ctx.model, ctx.optimizer, ctx.scheduler, rollouts, adv_T,
                   cfg_training=ctx.cfg.training, cfg_optimizer=ctx.cfg.optimizer,
                   micro_batch_size=micro_batch_size)
    m = dict(m)
    m["train_time_s"] = time.perf_counter() - t0
    return m


def eval_stage(ctx: Any, problems: Sequence[Problem]) -> Metrics:
    """Held-out accuracy, greedy and mean@k sampled, each with its standard error over problems.

    Greedy: one completion per problem. Sampled: `eval.samples` completions per problem at the
    training temperature/top_p; a problem's score is its share correct, the figure is the mean
    over problems. Standard errors are the sample std of per-problem scores over sqrt(n), so a
    gain of about 2 * sqrt(se0^2 + se1^2) is what one eval can resolve. The sampling draws from
    (seed, step 0, i) at every eval (training steps start at 1): the same uniforms each time,
    so two evals of one run differ by the policy, not by sampling luck.
    """
    from retrain.backend.local.sampler import sample

    t = ctx.cfg.training
    k = ctx.cfg.eval.samples
    t0 = time.perf_counter()
    prompts = [p.prompt for p in problems]
    greedy = sample(ctx.model, ctx.tokenizer, prompts, n_per_prompt=1, max_tokens=t.max_tokens,
                    temperature=1.0, top_p=1.0, seed=t.seed, step=0, greedy=True, device=ctx.device)
    hits = np.array([ctx.task.is_correct(p, c) for p, c in zip(problems, greedy.completion_text, strict=True)],
                    dtype=np.float64)
    lengths = np.diff(greedy.offsets)
    out: Metrics = {
        "eval_accuracy": float(hits.mean()) if len(hits) else 0.0,
        "eval_accuracy_se": standard_error(hits),
        "eval_size": len(problems),
        "eval_mean_length": float(lengths.mean()) if len(lengths) else 0.0,
    }
    if k > 0 and problems:
        sampled = sample(ctx.model, ctx.tokenizer, prompts, n_per_prompt=k, max_tokens=t.max_tokens,
                         temperature=t.temperature, top_p=t.top_p, seed=t.seed, step=0,
                         device=ctx.device)
        per_problem = np.array([ctx.task.is_correct(problems[i // k], c)
                                for i, c in enumerate(sampled.completion_text)],
                               dtype=np.float64).reshape(len(problems), k).mean(axis=1)
        out.update({"eval_sampled_accuracy": float(per_problem.mean()),
                    "eval_sampled_accuracy_se": standard_error(per_problem), "eval_samples": k})
    out["eval_time_s"] = time.perf_counter() - t0
    return out


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of per-problem scores (sample std, ddof=1); 0 for n < 2."""
    n = len(values)
    return float(values.std(ddof=1) / np.sqrt(n)) if n >= 2 else 0.0
