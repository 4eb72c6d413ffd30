"""The stages of one training step; the loop calls them in order:

    sample → reward → advantages (+ token transforms) → train; evaluation is a stage too.

Each returns a small frozen dataclass: the typed values the loop acts on, and `metrics`, the
stage's share of the step's metrics row (names as in sinks/contract.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrain.algo.advantages import AdvantageFn
from retrain.algo.pipeline import AdvantageTrace, TokenBatch, TransformFn, compute_advantages
from retrain.algo.planning import planning_mask_batch
from retrain.backend.base import Backend, Replay, Rollouts, SamplingParams
from retrain.config.schema import RetrainConfig
from retrain.sinks.contract import Metrics
from retrain.tasks.base import Problem, Task, score


@dataclass(frozen=True)
class Sampled:
    rollouts: Rollouts
    num_generated_tokens: int
    metrics: Metrics


def sample_stage(backend: Backend, cfg: RetrainConfig, problems: Sequence[Problem], *, step: int,
                 chunk_size: int | None) -> Sampled:
    t = cfg.training
    t0 = time.perf_counter()
    rollouts = backend.sample([p.prompt for p in problems], SamplingParams(
        n_per_prompt=t.group_size, max_tokens=t.max_tokens, temperature=t.temperature,
        top_p=t.top_p, seed=t.seed, step=step, chunk_size=chunk_size))
    dt = time.perf_counter() - t0
    return Sampled(rollouts, int(rollouts.num_generated_tokens), {
        "sample_time_s": dt,
        "max_token_hit_rate": float(np.mean(rollouts.truncated)) if len(rollouts.truncated) else 0.0,
        "mean_completion_length": float(np.mean(np.diff(rollouts.offsets))) if len(rollouts.offsets) > 1 else 0.0,
        "max_completion_length": int(np.max(np.diff(rollouts.offsets))) if len(rollouts.offsets) > 1 else 0,
    })


@dataclass(frozen=True)
class Rewarded:
    reward_N: np.ndarray  # [N] float64
    correct_count: int
    total_count: int
    correct_rate: float
    metrics: Metrics


def reward_stage(task: Task, problems: Sequence[Problem], completions: Sequence[str], group_size: int) -> Rewarded:
    """Rewards per completion (group-major: completion i belongs to problem i // group_size)."""
    t0 = time.perf_counter()
    reward_N = np.empty(len(completions), dtype=np.float64)
    correct_N = np.zeros(len(completions), dtype=bool)
    for i, text in enumerate(completions):
        reward_N[i], correct_N[i] = score(task, problems[i // group_size], text)
    n = len(completions)
    correct = int(correct_N.sum())
    rate = float(correct_N.mean()) if n else 0.0
    return Rewarded(reward_N, correct, n, rate, {
        "reward_time_s": time.perf_counter() - t0,
        "mean_reward": float(reward_N.mean()) if n else 0.0,
        "correct_count": correct,
        "total_count": n,
        "correct_rate": rate,
    })


@dataclass(frozen=True)
class Advantaged:
    adv_T: np.ndarray  # [T] float, final per-token advantages (after the transforms)
    exec_var: float  # execution-token uncertainty variance before pooling (nan: none); SEPA reads it
    skipped_groups: int  # groups without learning signal (all rewards equal)
    metrics: Metrics
    planning_T: np.ndarray  # bool [T], token is part of a planning gram
    trace: AdvantageTrace | None = None  # every stage's output, when asked for (explain, hooks)


def advantage_stage(cfg: RetrainConfig, rollouts: Rollouts, reward_N: np.ndarray, *, sepa_lambda: float,
                    custom_fn: AdvantageFn | None = None, custom_transform: TransformFn | None = None,
                    trace: bool = False) -> Advantaged:
    t0 = time.perf_counter()
    n = len(reward_N)
    group_N = np.repeat(np.arange(n // cfg.training.group_size), cfg.training.group_size)
    planning_T = planning_mask_batch(rollouts.completion_text, rollouts.token_spans,
                                     cfg.algorithm.planning_grams)
    batch = TokenBatch(logprob_T=rollouts.logprob_T, entropy_T=rollouts.entropy_T,
                       planning_T=planning_T, offsets=rollouts.offsets, reward_N=reward_N,
                       group_N=group_N)
    a = cfg.algorithm
    tr = AdvantageTrace() if trace else None
    adv_T, metrics = compute_advantages(
        batch, advantage_mode=a.advantage_mode, scale=a.scale, eps=a.eps,
        transform_mode=a.transform_mode, uncertainty_kind=a.uncertainty_kind,
        gtpo_beta=cfg.gtpo.beta, gtpo_max_weight=cfg.gtpo.max_weight, hicra_alpha=cfg.hicra.alpha,
        sepa_lambda=sepa_lambda, custom_fn=custom_fn, custom_transform=custom_transform, trace=tr,
    )
    out: Metrics = dict(metrics)
    out["advantage_time_s"] = time.perf_counter() - t0
    exec_var = metrics.get("exec_uncertainty_var")
    skipped = int(metrics.get("num_groups", 0)) - int(metrics.get("num_informative_groups", 0))
    return Advantaged(adv_T, math.nan if exec_var is None else float(exec_var), skipped, out,
                      planning_T, tr)


REPLAY_KEYS = ("loss_new", "loss_old", "teacher_kl")
OFF_POLICY_KEYS = ("logprob_diff_mean", "logprob_diff_max", "is_weight_mean", "is_truncated_frac")


@dataclass(frozen=True)
class Trained:
    loss: float
    skipped: bool  # no update: non-finite loss or gradient, or an update rolled back
    trained_tokens: int
    metrics: Metrics
    grad_norms: dict[str, float]  # LoRA module -> grad norm, when the backend collects them (grad hook)


def train_stage(backend: Backend, rollouts: Rollouts, adv_T: np.ndarray, *, micro_batch_size: int,
                replay: Replay | None = None) -> Trained:
    t0 = time.perf_counter()
    stats = backend.train_step(rollouts, adv_T, micro_batch_size=micro_batch_size, replay=replay)
    dt = time.perf_counter() - t0
    trained_tokens = int(stats.get("trained_tokens", 0.0))
    m: Metrics = {
        "train_time_s": dt,
        "grad_norm": stats.get("grad_norm", math.nan), "clip_frac": stats.get("clip_frac", 0.0),
        "kl": stats.get("kl"), "lr": stats.get("lr", 0.0),
        "rolled_back": bool(stats.get("rolled_back", 0.0)), "trained_tokens": trained_tokens,
        "pg_loss": stats.get("pg_loss", math.nan), "policy_entropy": stats.get("entropy", math.nan),
        "ratio_max_dev": stats.get("ratio_max_dev", math.nan),
        "forward_backward_time_s": stats.get("forward_backward_s", math.nan),
        "optimizer_time_s": stats.get("optimizer_s", math.nan),
        # a sampler other than the trained model (vllm): its mismatch and the correction
        **{k: stats[k] for k in OFF_POLICY_KEYS if k in stats},
        # multi-phase replay: the loss on current-phase and on replayed sequences, teacher KL
        **{k: stats[k] for k in REPLAY_KEYS if k in stats},
    }
    # per-module grad norms ride in the stats as "grad_norm/<module>"; they are hook rows, not
    # metrics.jsonl fields
    grad_norms = {k.removeprefix("grad_norm/"): v for k, v in stats.items() if k.startswith("grad_norm/")}
    return Trained(float(stats["loss"]), bool(stats.get("skipped", 0.0)), trained_tokens, m, grad_norms)


def eval_stage(backend: Backend, cfg: RetrainConfig, task: Task, problems: Sequence[Problem]) -> dict[str, float]:
    """Held-out accuracy, greedy and mean@k sampled, each with its standard error over problems.

    Greedy: one completion per problem. Sampled: `eval.samples` completions per problem at the
    training temperature/top_p; a problem's score is its share correct, the figure is the mean
    over problems. Standard errors are the sample std of per-problem scores over sqrt(n), so a
    gain of about 2 * sqrt(se0^2 + se1^2) is what one eval can resolve. The sampling draws from
    (seed, step 0, i) at every eval (training steps start at 1): the same uniforms each time,
    so two evals of one run differ by the policy, not by sampling luck.
    """
    t = cfg.training
    k = cfg.eval.samples
    t0 = time.perf_counter()
    prompts = [p.prompt for p in problems]
    greedy = backend.sample(prompts, SamplingParams(n_per_prompt=1, max_tokens=t.max_tokens,
                                                    temperature=1.0, top_p=1.0, seed=t.seed,
                                                    step=0, greedy=True))
    hits = np.array([task.is_correct(p, c) for p, c in zip(problems, greedy.completion_text, strict=True)],
                    dtype=np.float64)
    lengths = np.diff(greedy.offsets)
    out: dict[str, float] = {
        "eval_accuracy": float(hits.mean()) if len(hits) else 0.0,
        "eval_accuracy_se": standard_error(hits),
        "eval_size": len(problems),
        "eval_mean_length": float(lengths.mean()) if len(lengths) else 0.0,
    }
    if k > 0 and problems:
        sampled = backend.sample(prompts, SamplingParams(
            n_per_prompt=k, max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p,
            seed=t.seed, step=0))
        per_problem = np.array([task.is_correct(problems[i // k], c)
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
