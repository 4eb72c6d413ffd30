"""Token-level policy-gradient loss with optional PPO clipping and a k3 KL penalty.

Data flow: completion_logprobs ─▶ **policy_loss** ─▶ backward (step.py).

Per token t of sequence i, with r_t = exp(logp_new - logp_old) and advantage A_t:

    pg_t  = -A_t * r_t                                      (no clipping)
    pg_t  = max(-A_t * r_t, -A_t * clip(r_t, 1 - eps, 1 + eps_high))   (PPO / DAPO clip-higher)
    k3_t  = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1         (Schulman's k3, >= 0)
    loss  = sum_t w_t * (pg_t + beta * k3_t)

The aggregation lives entirely in the per-token weights w_t, which depend only on the whole
batch (never on the micro-batch), so summing micro-batch losses gives exactly the full loss:

    token_mean     w_t = 1 / (total tokens in the batch)
    sequence_mean  w_t = 1 / (N * len_i)            (mean over sequences of per-sequence means)
    constant       w_t = 1 / (N * max_tokens)       (Dr. GRPO: no length normalisation)

Deviation from PPO: there is one optimizer step per batch, so `logp_old` is the sampler's own
log-prob and r_t = 1 on-policy; clipping only acts if the policy moved between sampling and the
step (e.g. stale rollouts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def token_weights(lengths_N: np.ndarray, agg: str, max_tokens: int) -> np.ndarray:
    """[T_total] float64 weights w_t of the aggregation (see module docstring)."""
    lengths_N = np.asarray(lengths_N, dtype=np.int64)
    n_seq = len(lengths_N)
    total = int(lengths_N.sum())
    if agg == "token_mean":
        return np.full(total, 1.0 / max(total, 1))
    if agg == "sequence_mean":
        per_seq = 1.0 / (np.maximum(lengths_N, 1) * max(n_seq, 1))
        return np.repeat(per_seq, lengths_N)
    if agg == "constant":
        return np.full(total, 1.0 / (max(n_seq, 1) * max_tokens))
    raise ValueError(f"unknown loss aggregation {agg!r}; choose from {AGGREGATIONS}")


@dataclass
class LossParts:
    """Sums over the micro-batch's tokens; the caller adds them up over micro-batches."""

    loss: torch.Tensor  # scalar with grad: sum_t w_t * (pg_t + beta * k3_t)
    pg_loss: float  # sum_t w_t * pg_t
    kl_sum: float  # sum_t k3_t (unweighted; divide by token count for the mean)
    clipped: int  # tokens whose clipped term was the active one
    ratio_max_dev: float  # max_t |r_t - 1|


def policy_loss(
    new_logprob_T: torch.Tensor,
    old_logprob_T: torch.Tensor,
    adv_T: torch.Tensor,
    weight_T: torch.Tensor,
    *,
    clip_eps: float | None = None,
    clip_eps_high: float | None = None,
    kl_beta: float = 0.0,
    ref_logprob_T: torch.Tensor | None = None,
) -> LossParts:
    """Weighted token-level policy-gradient loss; all inputs are flat [T] over the same tokens."""
    log_ratio = new_logprob_T - old_logprob_T  # [T]
    ratio = torch.exp(log_ratio)  # [T]
    pg = -adv_T * ratio  # [T]
    clipped = torch.zeros_like(pg, dtype=torch.bool)
    if clip_eps is not None:
        high = clip_eps_high if clip_eps_high is not None else clip_eps
        pg_clipped = -adv_T * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)  # [T]
        clipped = pg_clipped > pg
        pg = torch.maximum(pg, pg_clipped)
    total = (weight_T * pg).sum()
    kl_sum = 0.0
    if kl_beta > 0.0:
        if ref_logprob_T is None:
            raise ValueError("kl_beta > 0 needs ref_logprob_T")
        log_ref_ratio = ref_logprob_T - new_logprob_T  # [T]
        k3 = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0  # [T]
        total = total + kl_beta * (weight_T * k3).sum()
        kl_sum = float(k3.detach().sum())
    with torch.no_grad():
        pg_val = float((weight_T * pg).sum())
        dev = float((ratio - 1.0).abs().max()) if ratio.numel() else 0.0
    return LossParts(loss=total, pg_loss=pg_val, kl_sum=kl_sum, clipped=int(clipped.sum()),
                     ratio_max_dev=dev)
