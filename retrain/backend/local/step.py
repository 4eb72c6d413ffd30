"""The optimizer step of the local backend: token-level policy-gradient loss with optional PPO
clipping and a k3 KL penalty, micro-batched backward, clipping, AdamW, rollback.

Data flow: rollouts + adv_T ─▶ completion_logprobs ─▶ **policy_loss** ─▶ backward ─▶ **train_step**.

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

`train_step` runs one optimizer step over micro-batches of sequences. Every token's weight is
fixed by the whole batch, so the accumulated gradient equals the unchunked one. A step whose loss
or gradient norm is non-finite makes no update: gradients are dropped, adapter and optimizer state
stay as they were (the LR schedule still advances, so LR stays a function of the step). A step
whose update makes a trainable weight non-finite (an absurd learning rate, an overflowing moment),
or that torch refuses because the step size overflows float32, is rolled back: adapter and optimizer state return to their values before the step, and it
counts as skipped. So the adapter is always finite, in memory and on disk.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft import PeftModel

from retrain.backend.base import Replay
from retrain.backend.local.logprobs import build_batch, completion_logprobs
from retrain.backend.local.sampler import Rollouts
from retrain.config.schema import OptimizerConfig, TrainingConfig

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
    is_weight_sum: float = 0.0  # sum_t of the truncated importance weights (is_cap only)
    is_truncated: int = 0  # tokens whose weight hit the cap
    lp_diff_sum: float = 0.0  # sum_t |logp_train - logp_sampler|
    lp_diff_max: float = 0.0
    pg_replay: float = 0.0  # the part of pg_loss on replayed tokens (multi-phase replay)
    teacher_kl_sum: float = 0.0  # sum over replayed tokens of the k3 KL to the teacher


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
    is_cap: float | None = None,
    replay_T: torch.Tensor | None = None,
    teacher_logprob_T: torch.Tensor | None = None,
    teacher_beta: float = 0.0,
) -> LossParts:
    """Weighted token-level policy-gradient loss; all inputs are flat [T] over the same tokens.

    `is_cap` (a sampler other than the trained model, e.g. vLLM): `old_logprob_T` are the
    sampler's log-probs; the ratio is taken to the trainer's own log-probs at this step (value 1,
    the gradient of log pi), and each token's term is weighted by the truncated importance
    weight min(pi_train / pi_sampler, is_cap), detached (truncated importance sampling).

    `replay_T` (bool, multi-phase replay) marks the tokens of replayed sequences: their share of
    the policy-gradient loss is reported apart, and with `teacher_beta` > 0 each adds
    teacher_beta · w_t · k3_t, the k3 KL estimate to the teacher's log-probs `teacher_logprob_T`
    (the previous phase's committed adapter), like the KL to the base model above."""
    is_w: torch.Tensor | None = None
    if is_cap is not None:
        with torch.no_grad():
            lp_diff = new_logprob_T - old_logprob_T  # [T]
            is_w = torch.clamp(torch.exp(lp_diff), max=is_cap)  # [T]
        old_logprob_T = new_logprob_T.detach()
    log_ratio = new_logprob_T - old_logprob_T  # [T]
    ratio = torch.exp(log_ratio)  # [T]
    pg = -adv_T * ratio  # [T]
    clipped = torch.zeros_like(pg, dtype=torch.bool)
    if clip_eps is not None:
        high = clip_eps_high if clip_eps_high is not None else clip_eps
        pg_clipped = -adv_T * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)  # [T]
        clipped = pg_clipped > pg
        pg = torch.maximum(pg, pg_clipped)
    if is_w is not None:
        pg = pg * is_w
    total = (weight_T * pg).sum()
    kl_sum = 0.0
    if kl_beta > 0.0:
        if ref_logprob_T is None:
            raise ValueError("kl_beta > 0 needs ref_logprob_T")
        log_ref_ratio = ref_logprob_T - new_logprob_T  # [T]
        k3 = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0  # [T]
        total = total + kl_beta * (weight_T * k3).sum()
        kl_sum = float(k3.detach().sum())
    teacher_kl = 0.0
    if replay_T is not None and teacher_beta > 0.0:
        if teacher_logprob_T is None:
            raise ValueError("teacher_beta > 0 needs teacher_logprob_T")
        log_t_ratio = teacher_logprob_T - new_logprob_T  # [T]
        tk3 = (torch.exp(log_t_ratio) - log_t_ratio - 1.0) * replay_T  # [T], 0 off replay
        total = total + teacher_beta * (weight_T * tk3).sum()
        teacher_kl = float(tk3.detach().sum())
    with torch.no_grad():
        pg_val = float((weight_T * pg).sum())
        pg_replay = float((weight_T * pg * replay_T).sum()) if replay_T is not None else 0.0
        dev = float((ratio - 1.0).abs().max()) if ratio.numel() else 0.0
    parts = LossParts(loss=total, pg_loss=pg_val, kl_sum=kl_sum, clipped=int(clipped.sum()),
                      ratio_max_dev=dev, pg_replay=pg_replay, teacher_kl_sum=teacher_kl)
    if is_w is not None and is_cap is not None:
        diff = lp_diff.abs()
        parts.is_weight_sum = float(is_w.sum())
        parts.is_truncated = int((is_w >= is_cap).sum())
        parts.lp_diff_sum = float(diff.sum())
        parts.lp_diff_max = float(diff.max()) if diff.numel() else 0.0
    return parts

# --- one optimizer step ---------------------------------------------------------------


TEACHER = "teacher"  # the peft adapter name of a multi-phase run's teacher


def teacher_logprobs(model: PeftModel, batch: Any, rollouts: Rollouts) -> torch.Tensor:
    """Log-probs of the batch's completion tokens under the teacher adapter (no gradient); the
    trained adapter is active again afterwards."""
    active = model.active_adapter
    try:
        model.set_adapter(TEACHER)
        with torch.no_grad():
            lp, _ = completion_logprobs(model, batch, temperature=rollouts.temperature,
                                        top_p=rollouts.top_p, with_entropy=False)
    finally:
        model.set_adapter(active)
    return lp


def _micro_batches(n_seq: int, micro_batch_size: int) -> list[list[int]]:
    size = n_seq if micro_batch_size <= 0 else micro_batch_size
    return [list(range(lo, min(lo + size, n_seq))) for lo in range(0, n_seq, size)]


def _pad_id(model: PeftModel) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def forward_backward(
    model: PeftModel,
    rollouts: Rollouts,
    adv_T: np.ndarray,
    *,
    cfg_training: TrainingConfig,
    micro_batch_size: int,
    is_cap: float | None = None,
    replay: Replay | None = None,
) -> dict[str, float]:
    """Accumulate gradients of the full-batch loss into .grad; returns loss statistics.
    `replay`: which sequences are replayed, and the teacher KL weight (multi-phase runs)."""
    device = next(model.parameters()).device
    weights_T = token_weights(rollouts.lengths, cfg_training.loss_agg, cfg_training.max_tokens)
    n_tokens = int(rollouts.offsets[-1])
    use_kl = cfg_training.kl_beta > 0.0
    sums = {"loss": 0.0, "pg_loss": 0.0, "kl_sum": 0.0, "clipped": 0.0, "ratio_max_dev": 0.0,
            "entropy_sum": 0.0, "is_weight_sum": 0.0, "is_truncated": 0.0, "lp_diff_sum": 0.0,
            "lp_diff_max": 0.0, "pg_replay": 0.0, "teacher_kl_sum": 0.0}
    replay_T = (np.repeat(replay.mask_N, rollouts.lengths).astype(np.float32)
                if replay is not None else None)  # [T] 1 on replayed sequences' tokens
    for seqs in _micro_batches(rollouts.num_sequences, micro_batch_size):
        if int(rollouts.offsets[seqs[-1] + 1] - rollouts.offsets[seqs[0]]) == 0:
            continue  # no completion tokens in this chunk
        batch = build_batch(rollouts, seqs, _pad_id(model), device)
        lo, hi = int(rollouts.offsets[seqs[0]]), int(rollouts.offsets[seqs[-1] + 1])
        teacher_lp = rep = None
        if replay is not None and replay_T is not None:
            rep = torch.as_tensor(replay_T[lo:hi], device=device)
            if replay.kl_beta > 0.0 and bool(rep.any()):
                teacher_lp = teacher_logprobs(model, batch, rollouts)
        new_lp, ent = completion_logprobs(model, batch, temperature=rollouts.temperature,
                                          top_p=rollouts.top_p)
        ref_lp = None
        if use_kl:
            with torch.no_grad(), model.disable_adapter():
                ref_lp, _ = completion_logprobs(model, batch, temperature=rollouts.temperature,
                                                top_p=rollouts.top_p, with_entropy=False)
        old_lp, adv, w = (torch.as_tensor(a[lo:hi], device=device, dtype=new_lp.dtype)
                          for a in (rollouts.logprob_T, adv_T, weights_T))
        parts = policy_loss(
            new_lp, old_lp, adv, w,
            clip_eps=cfg_training.clip_eps, clip_eps_high=cfg_training.clip_eps_high,
            kl_beta=cfg_training.kl_beta, ref_logprob_T=ref_lp, is_cap=is_cap,
            replay_T=None if rep is None else rep.to(new_lp.dtype), teacher_logprob_T=teacher_lp,
            teacher_beta=replay.kl_beta if replay is not None and teacher_lp is not None else 0.0)
        parts.loss.backward()
        sums["loss"] += float(parts.loss.detach())
        sums["pg_loss"] += parts.pg_loss
        sums["kl_sum"] += parts.kl_sum
        sums["clipped"] += parts.clipped
        sums["ratio_max_dev"] = max(sums["ratio_max_dev"], parts.ratio_max_dev)
        sums["entropy_sum"] += float(ent.sum()) if ent is not None else 0.0
        sums["is_weight_sum"] += parts.is_weight_sum
        sums["is_truncated"] += parts.is_truncated
        sums["lp_diff_sum"] += parts.lp_diff_sum
        sums["lp_diff_max"] = max(sums["lp_diff_max"], parts.lp_diff_max)
        sums["pg_replay"] += parts.pg_replay
        sums["teacher_kl_sum"] += parts.teacher_kl_sum
    denom = max(n_tokens, 1)
    out = {"loss": sums["loss"], "pg_loss": sums["pg_loss"], "kl": sums["kl_sum"] / denom,
           "clip_frac": sums["clipped"] / denom, "ratio_max_dev": sums["ratio_max_dev"],
           "entropy": sums["entropy_sum"] / denom, "trained_tokens": float(n_tokens)}
    if replay is not None and replay_T is not None:
        n_replay = float(replay_T.sum())
        out.update({"loss_new": sums["pg_loss"] - sums["pg_replay"], "loss_old": sums["pg_replay"],
                    "teacher_kl": sums["teacher_kl_sum"] / n_replay if n_replay else 0.0})
    if is_cap is not None:
        out.update({"is_weight_mean": sums["is_weight_sum"] / denom,
                    "is_truncated_frac": sums["is_truncated"] / denom,
                    "logprob_diff_mean": sums["lp_diff_sum"] / denom,
                    "logprob_diff_max": sums["lp_diff_max"]})
    return out


def train_step(
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rollouts: Rollouts,
    adv_T: np.ndarray,
    *,
    cfg_training: TrainingConfig,
    cfg_optimizer: OptimizerConfig,
    micro_batch_size: int,
    is_cap: float | None = None,
    replay: Replay | None = None,
    collect_grad_norms: bool = False,
) -> dict[str, float]:
    """Forward/backward over micro-batches, clip, AdamW step, LR schedule step.

    Returns loss, pg_loss, grad_norm, clip_frac, kl, entropy, lr (the LR this step used),
    ratio_max_dev, skipped (1.0 when non-finite, or rolled back), rolled_back (1.0 when the update
    made a weight non-finite and was undone), trained_tokens, forward_backward_s, optimizer_s;
    with `collect_grad_norms`, also `grad_norm/<module>` for every LoRA module (A and B together,
    before clipping: what the `grad` hook logs).
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
                             micro_batch_size=micro_batch_size, is_cap=is_cap, replay=replay)
    t1 = time.perf_counter()
    per_module = module_grad_norms(model) if collect_grad_norms else {}
    grad_norm, skipped, rolled_back = apply_update(params, optimizer, scheduler, cfg_optimizer,
                                                   loss=stats["loss"])
    t2 = time.perf_counter()
    model.eval()
    return {**stats, "grad_norm": grad_norm, "lr": lr, "skipped": float(skipped),
            "rolled_back": float(rolled_back), "forward_backward_s": t1 - t0, "optimizer_s": t2 - t1,
            **per_module}


def module_name(name: str) -> str:
    """`base_model.model.model.layers.0.mlp.up_proj(.lora_A.default.weight)` -> the module path
    in the base model, `model.layers.0.mlp.up_proj`."""
    name = name.removeprefix("base_model.model.")
    for suffix in (".lora_A.default.weight", ".lora_B.default.weight"):
        name = name.removesuffix(suffix)
    return name


@torch.no_grad()
def module_grad_norms(model: PeftModel) -> dict[str, float]:
    """{"grad_norm/<module>": sqrt(|grad A|^2 + |grad B|^2)} over the trained adapter's modules."""
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None or not p.requires_grad or ".default." not in name:
            continue
        key = "grad_norm/" + module_name(name)
        sq[key] = sq.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {k: float(np.sqrt(v)) for k, v in sq.items()}


def apply_update(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, cfg_optimizer: OptimizerConfig,
                 *, loss: float) -> tuple[float, bool, bool]:
    """The update after a backward pass: (grad_norm, skipped, rolled_back). Skip a non-finite
    loss or gradient; else clip, step, and roll back an update that made a weight non-finite;
    the LR schedule steps either way. Also a pack's per-run update (pack_step.py)."""
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    skipped = not (np.isfinite(loss) and np.isfinite(grad_norm))
    rolled_back = False
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        if cfg_optimizer.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, cfg_optimizer.max_grad_norm,
                                                 torch.tensor(grad_norm))
        before = _snapshot(params, optimizer)
        try:
            optimizer.step()
            rolled_back = not _all_finite(params)
        except RuntimeError as exc:  # torch refuses a step size beyond float32 (lr ~1e38 and up)
            if "overflow" not in str(exc):
                raise
            rolled_back = True
        optimizer.zero_grad(set_to_none=True)
        if rolled_back:
            _restore(params, optimizer, before)
            skipped = True
    if skipped:
        # The LR is a function of the step even when a skipped step never called optimizer.step();
        # torch warns about that order on a first step. Only here: catch_warnings() resets
        # Python's once-only registry, so wrapping every step repeated library warnings each step.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            scheduler.step()
    else:
        scheduler.step()
    return grad_norm, skipped, rolled_back


# --- rollback of an update that made a weight non-finite -------------------------------------

_Snapshot = tuple[list[torch.Tensor], dict[torch.Tensor, dict[str, object]]]


def _snapshot(params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer) -> _Snapshot:
    """Copies of the trainable weights and their optimizer state (moments, step count)."""
    weights = [p.detach().clone() for p in params]
    state = {p: {k: v.clone() if isinstance(v, torch.Tensor) else v
                 for k, v in optimizer.state[p].items()}
             for p in params if p in optimizer.state}
    return weights, state


def _all_finite(params: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


@torch.no_grad()
def _restore(params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer, snap: _Snapshot) -> None:
    weights, state = snap
    for p, w in zip(params, weights, strict=True):
        p.copy_(w)
        if p in state:
            optimizer.state[p] = state[p]
        else:
            optimizer.state.pop(p, None)  # the first step created it
