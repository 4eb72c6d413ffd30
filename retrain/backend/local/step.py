"""One optimizer step on a batch of rollouts: forward, loss, backward, clip, step.

Data flow: Rollouts + adv_T (algo) ─▶ **train_step** ─▶ updated adapter + step metrics.

Micro-batches split the sequences; every token's loss weight is fixed by the whole batch
(loss.token_weights), so the accumulated gradient equals the unchunked one. A step whose loss or
gradient norm is non-finite makes no update at all: gradients are dropped and the adapter and
optimizer state stay as they were (the LR schedule still advances, so LR stays a function of step).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from transformers import PreTrainedModel

from retrain.backend.local.logprobs import build_batch, completion_logprobs
from retrain.backend.local.loss import policy_loss, token_weights
from retrain.backend.local.sampler import Rollouts
from retrain.config.schema import OptimizerConfig, TrainingConfig


def _micro_batches(n_seq: int, micro_batch_size: int) -> list[list[int]]:
    size = n_seq if micro_batch_size <= 0 else micro_batch_size
    return [list(range(lo, min(lo + size, n_seq))) for lo in range(0, n_seq, size)]


def _flat_slice(flat: np.ndarray, offsets: np.ndarray, seqs: list[int]) -> np.ndarray:
    """Tokens of the given (contiguous, ascending) sequences from a flat [T_total] array."""
    return flat[offsets[seqs[0]]: offsets[seqs[-1] + 1]]


def _pad_id(model: PreTrainedModel) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def forward_backward(
    model: PreTrainedModel,
    rollouts: Rollouts,
    adv_T: np.ndarray,
    *,
    cfg_training: TrainingConfig,
    micro_batch_size: int,
) -> dict[str, float]:
    """Accumulate gradients of the full-batch loss into .grad; returns loss statistics."""
    device = next(model.parameters()).device
    weights_T = token_weights(rollouts.lengths, cfg_training.loss_agg, cfg_training.max_tokens)
    n_tokens = int(rollouts.offsets[-1])
    use_kl = cfg_training.kl_beta > 0.0
    sums = {"loss": 0.0, "pg_loss": 0.0, "kl_sum": 0.0, "clipped": 0.0, "ratio_max_dev": 0.0,
            "entropy_sum": 0.0}
    for seqs in _micro_batches(rollouts.num_sequences, micro_batch_size):
        if int(rollouts.offsets[seqs[-1] + 1] - rollouts.offsets[seqs[0]]) == 0:
            continue  # no completion tokens in this chunk
        batch = build_batch(rollouts, seqs, _pad_id(model), device)
        new_lp, ent = completion_logprobs(model, batch, temperature=rollouts.temperature,
                                          top_p=rollouts.top_p)
        ref_lp = None
        if use_kl:
            with torch.no_grad(), model.disable_adapter():
                ref_lp, _ = completion_logprobs(model, batch, temperature=rollouts.temperature,
                                                top_p=rollouts.top_p, with_entropy=False)

        def _t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(_flat_slice(a, rollouts.offsets, seqs), device=device,
                                   dtype=new_lp.dtype)

        parts = policy_loss(
            new_lp, _t(rollouts.logprob_T), _t(adv_T), _t(weights_T),
            clip_eps=cfg_training.clip_eps, clip_eps_high=cfg_training.clip_eps_high,
            kl_beta=cfg_training.kl_beta, ref_logprob_T=ref_lp)
        parts.loss.backward()
        sums["loss"] += float(parts.loss.detach())
        sums["pg_loss"] += parts.pg_loss
        sums["kl_sum"] += parts.kl_sum
        sums["clipped"] += parts.clipped
        sums["ratio_max_dev"] = max(sums["ratio_max_dev"], parts.ratio_max_dev)
        sums["entropy_sum"] += float(ent.sum()) if ent is not None else 0.0
    denom = max(n_tokens, 1)
    return {"loss": sums["loss"], "pg_loss": sums["pg_loss"], "kl": sums["kl_sum"] / denom,
            "clip_frac": sums["clipped"] / denom, "ratio_max_dev": sums["ratio_max_dev"],
            "entropy": sums["entropy_sum"] / denom, "trained_tokens": float(n_tokens)}


def train_step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rollouts: Rollouts,
    adv_T: np.ndarray,
    *,
    cfg_training: TrainingConfig,
    cfg_optimizer: OptimizerConfig,
    micro_batch_size: int,
) -> dict[str, float]:
    """Forward/backward over micro-batches, clip, AdamW step, LR schedule step.

    Returns loss, pg_loss, grad_norm, clip_frac, kl, entropy, lr (the LR this step used),
    ratio_max_dev, skipped (1.0 when non-finite), trained_tokens, forward_backward_s, optimizer_s.
    """
    adv_T = np.asarray(adv_T, dtype=np.float32)
    if adv_T.shape != rollouts.logprob_T.shape:
        raise ValueError(f"adv_T has shape {adv_T.shape}, expected {rollouts.logprob_T.shape}")
    params = [p for p in model.parameters() if p.requires_grad]
    lr = float(optimizer.param_groups[0]["lr"])
    model.train()
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    stats = forward_backward(model, rollouts, adv_T, cfg_training=cfg_training,
                             micro_batch_size=micro_batch_size)
    t1 = time.perf_counter()
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    skipped = not (np.isfinite(stats["loss"]) and np.isfinite(grad_norm))
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        if cfg_optimizer.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, cfg_optimizer.max_grad_norm,
                                                 torch.tensor(grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # LR is a function of the step even when a skipped first step never called optimizer.step().
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        scheduler.step()
    t2 = time.perf_counter()
    model.eval()
    return {**stats, "grad_norm": grad_norm, "lr": lr, "skipped": float(skipped),
            "forward_backward_s": t1 - t0, "optimizer_s": t2 - t1}
