"""The advantage pipeline: a batch of completions in, per-token advantages and metrics out.

Stage order (the trainer calls `compute_advantages` once per step, between reward and loss):

    reward_N, group_N ──episode advantages (grpo | maxrl | rloo | custom)──▶ adv_N
    logprob_T / entropy_T ──uncertainty kind──▶ h_T ──sepa pooling (λ)──▶ h'_T
    adv_N ──broadcast──▶ adv_T ──gtpo weights w(h'_T)──▶ adv_T·w_T ──hicra (planning_T)──▶ adv_T

`transform_mode` picks the token stages (`modes.transform_parts`), or is a user's
'package.module:function' (`custom_transform`: called as fn(adv_T, batch) on the broadcast
episode advantages, in place of the built-in stages). Papers and deviations are
listed in each stage's module (`advantages`, `gtpo`, `hicra`, `sepa`, `uncertainty`,
`planning`); docs/algorithms.md has the formulas in one place.

Metrics (flat dict, NaN-free floats, counts as ints):
- `exec_surprisal_*`, `plan_surprisal_*`: mean / variance of the sampled-token surprisal over the
  batch's execution / planning tokens, pooled over tokens;
- `exec_entropy_*`, `plan_entropy_*`: the same over `entropy_T` when the backend supplies it;
  otherwise they *mirror the surprisal values* (surprisal is the one-sample entropy estimate),
  which keeps the keys of the logging contract present in every run;
- `exec_uncertainty_*`, `plan_uncertainty_*`: the configured uncertainty kind before sepa, and
  `exec_uncertainty_pooled_*` after it (what gtpo saw); `exec_uncertainty_var` is what the
  trainer feeds to `SepaScheduler.update`;
- group counts from the episode stage, gtpo weight statistics, planning-token fraction,
  `adv_mean` / `adv_abs_mean` of the final token advantages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from retrain.algo import ragged
from retrain.algo.advantages import episode_advantages
from retrain.algo.gtpo import gtpo_weights
from retrain.algo.hicra import hicra_inplace
from retrain.algo.modes import UNCERTAINTY_KINDS, transform_parts
from retrain.algo.sepa import sepa_pool
from retrain.algo.uncertainty import surprisal, token_uncertainty


@dataclass(frozen=True)
class TokenBatch:
    """A ragged batch: completion i is tokens offsets[i]:offsets[i+1]; groups contiguous."""

    logprob_T: np.ndarray  # float, sampled-token logprob at the sampling temperature
    entropy_T: np.ndarray | None  # full-distribution entropy per token, or None
    planning_T: np.ndarray  # bool, token is part of a planning gram
    offsets: np.ndarray  # int64 [N+1]
    reward_N: np.ndarray  # float per completion
    group_N: np.ndarray  # int group (prompt) id per completion

    def __post_init__(self) -> None:
        num_tokens = self.logprob_T.shape[0]
        ragged.check_offsets(self.offsets, num_tokens)
        n = self.offsets.shape[0] - 1
        if self.planning_T.shape != (num_tokens,) or self.planning_T.dtype != np.bool_:
            raise ValueError(f"planning_T must be bool [{num_tokens}], got "
                             f"{self.planning_T.dtype} {self.planning_T.shape}")
        if self.entropy_T is not None and self.entropy_T.shape != (num_tokens,):
            raise ValueError(f"entropy_T must be [{num_tokens}], got {self.entropy_T.shape}")
        if self.reward_N.shape != (n,) or self.group_N.shape != (n,):
            raise ValueError(f"reward_N and group_N must be [{n}], got "
                             f"{self.reward_N.shape} and {self.group_N.shape}")


TransformFn = Callable[[np.ndarray, TokenBatch], np.ndarray]


@dataclass
class AdvantageTrace:
    """What each stage of one `compute_advantages` call produced, token by token: filled in when
    the caller passes one (`retrain explain` records, the `adv` hook). Arrays are copies [T]
    (adv_N [N]); a stage that did not run leaves its entry None."""

    adv_N: np.ndarray | None = None  # episode advantages per completion
    uncertainty_T: np.ndarray | None = None  # h_T of the uncertainty kind, before sepa
    pooled_T: np.ndarray | None = None  # h_T after sepa pooling (what gtpo weighed)
    gtpo_weight_T: np.ndarray | None = None  # w_T
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # adv_T after each stage, in order

    def record(self, stage: str, adv_T: np.ndarray) -> None:
        self.stages[stage] = np.array(adv_T, dtype=np.float64, copy=True)


def compute_advantages(
    batch: TokenBatch,
    *,
    advantage_mode: str,
    scale: str,
    eps: float,
    transform_mode: str,
    uncertainty_kind: str,
    gtpo_beta: float,
    gtpo_max_weight: float | None,
    hicra_alpha: float,
    sepa_lambda: float,
    custom_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    custom_transform: TransformFn | None = None,
    trace: AdvantageTrace | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Per-token advantages adv_T (float64 [T]) and the step's algorithm metrics.

    `sepa_lambda` is ignored unless the transform mode includes sepa; `gtpo_*` and `hicra_alpha`
    likewise. `custom_fn` is the loaded function when `advantage_mode` is a dotted path, and
    `custom_transform` when `transform_mode` is. `trace`, when given, receives every stage's
    output (`AdvantageTrace`); the stage names are `episode`, then `gtpo`, `hicra` or `custom`.
    """
    if custom_transform is not None:
        parts: frozenset[str] = frozenset()
    else:
        parts = transform_parts(transform_mode)  # raises for an unknown mode
    if uncertainty_kind not in UNCERTAINTY_KINDS:
        raise ValueError(f"uncertainty_kind must be one of {UNCERTAINTY_KINDS}, "
                         f"got {uncertainty_kind!r}")
    use_gtpo, use_sepa, use_hicra = "gtpo" in parts, "sepa" in parts, "hicra" in parts
    offsets = batch.offsets
    # Planning tokens are sparse: every stage works on their indices, and nothing below
    # allocates more than a few arrays of size T (see ragged.split_mean_var for why).
    plan_idx_P = np.flatnonzero(batch.planning_T)

    adv_N, metrics = episode_advantages(batch.reward_N, batch.group_N, mode=advantage_mode,
                                        scale=scale, eps=eps, custom_fn=custom_fn)
    if trace is not None:
        trace.adv_N = np.array(adv_N, dtype=np.float64, copy=True)

    surprisal_T = surprisal(batch.logprob_T)
    surprisal_stats = _split_stats(surprisal_T, plan_idx_P)
    entropy_T = None if batch.entropy_T is None else np.asarray(batch.entropy_T, np.float64)
    entropy_stats = surprisal_stats if entropy_T is None else _split_stats(entropy_T, plan_idx_P)

    if uncertainty_kind == "surprisal":
        h_T, h_stats = surprisal_T, surprisal_stats
    elif uncertainty_kind == "shannon_entropy" and entropy_T is None and not (use_gtpo or use_sepa):
        h_T, h_stats = surprisal_T, surprisal_stats  # nothing reads h: log what the entropy keys log
    elif uncertainty_kind == "shannon_entropy" and entropy_T is not None:
        h_T, h_stats = entropy_T, entropy_stats
    else:  # raises for shannon_entropy without entropy_T
        h_T = token_uncertainty(uncertainty_kind, batch.logprob_T, entropy_T)
        h_stats = _split_stats(h_T, plan_idx_P)
    if trace is not None:
        trace.uncertainty_T = np.array(h_T, dtype=np.float64, copy=True)
    for name, stats in (("surprisal", surprisal_stats), ("entropy", entropy_stats),
                        ("uncertainty", h_stats)):
        metrics.update({f"{part}_{name}_{stat}": value for (part, stat), value in stats.items()})

    lam = float(sepa_lambda) if use_sepa else 0.0
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"sepa_lambda must be in [0, 1], got {sepa_lambda}")
    if lam > 0.0:
        h_T = sepa_pool(h_T, batch.planning_T, offsets, lam=lam, plan_idx_P=plan_idx_P)
        pooled = _split_stats(h_T, plan_idx_P)
    else:
        pooled = h_stats
    metrics["exec_uncertainty_pooled_mean"] = pooled[("exec", "mean")]
    metrics["exec_uncertainty_pooled_var"] = pooled[("exec", "var")]
    metrics["sepa_lambda_applied"] = lam
    if trace is not None:
        trace.pooled_T = np.array(h_T, dtype=np.float64, copy=True)
        trace.record("episode", ragged.broadcast(adv_N, offsets))
    # Drop dead T-sized buffers as soon as possible so that the next allocation reuses their
    # memory instead of faulting in fresh pages (the largest cost of this function otherwise).
    del surprisal_T, entropy_T

    if use_gtpo:
        adv_T = gtpo_weights(h_T, offsets, beta=gtpo_beta, max_weight=gtpo_max_weight)
        del h_T
        metrics.update(_weight_stats(adv_T))
        if trace is not None:
            trace.gtpo_weight_T = np.array(adv_T, dtype=np.float64, copy=True)
        adv_T *= ragged.broadcast(adv_N, offsets)  # the weight buffer becomes adv_T
        if trace is not None:
            trace.record("gtpo", adv_T)
    else:
        del h_T
        adv_T = ragged.broadcast(adv_N, offsets)
    if use_hicra:
        # Tokens whose advantage HICRA changes: planning tokens of episodes with A != 0.
        changed = int(np.count_nonzero(adv_T[plan_idx_P])) if plan_idx_P.shape[0] else 0
        metrics["hicra_changed_frac"] = changed / max(adv_T.shape[0], 1)
        hicra_inplace(adv_T, plan_idx_P, alpha=hicra_alpha)
        if trace is not None:
            trace.record("hicra", adv_T)
    if custom_transform is not None:
        adv_T = _apply_transform(custom_transform, adv_T, batch, transform_mode)
        if trace is not None:
            trace.record("custom", adv_T)

    num_tokens = adv_T.shape[0]
    metrics["num_tokens"] = int(num_tokens)
    metrics["num_planning_tokens"] = int(plan_idx_P.shape[0])
    metrics["planning_token_frac"] = float(plan_idx_P.shape[0] / max(num_tokens, 1))
    metrics["adv_mean"] = float(np.mean(adv_T)) if num_tokens else 0.0
    metrics["adv_abs_mean"] = float(np.linalg.norm(adv_T, 1) / num_tokens) if num_tokens else 0.0
    return adv_T, metrics


def _apply_transform(fn: TransformFn, adv_T: np.ndarray, batch: TokenBatch, name: str) -> np.ndarray:
    """Call a user's transform on a copy and check what it returns: float [T], all finite."""
    out = np.asarray(fn(adv_T.copy(), batch), dtype=np.float64)
    if out.shape != adv_T.shape:
        raise ValueError(f"transform {name!r} returned shape {out.shape}; it must return one "
                         f"advantage per token, shape {adv_T.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"transform {name!r} returned non-finite advantages")
    return out


def _split_stats(x_T: np.ndarray, plan_idx_P: np.ndarray) -> dict[tuple[str, str], float]:
    exec_mean, exec_var, plan_mean, plan_var = ragged.split_mean_var(x_T, plan_idx_P)
    return {("exec", "mean"): exec_mean, ("exec", "var"): exec_var,
            ("plan", "mean"): plan_mean, ("plan", "var"): plan_var}


def _weight_stats(w_T: np.ndarray) -> dict[str, float]:
    if w_T.shape[0] == 0:
        return {"gtpo_weight_mean": 1.0, "gtpo_weight_max": 1.0, "gtpo_weight_min": 1.0,
                "gtpo_weight_zero_frac": 0.0}
    w_min = float(np.min(w_T))
    # Floored weights are rare at usual β; count them only when there are any.
    zeros = int(np.count_nonzero(w_T == 0.0)) if w_min == 0.0 else 0
    return {"gtpo_weight_mean": float(np.mean(w_T)), "gtpo_weight_max": float(np.max(w_T)),
            "gtpo_weight_min": w_min, "gtpo_weight_zero_frac": zeros / w_T.shape[0]}
