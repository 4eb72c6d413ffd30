"""One optimizer step for every run of a pack: a shared forward/backward, then each run's own
clip, AdamW step and LR schedule (step.py's rules: skip a non-finite step, roll back an update
that made a weight non-finite).

Data flow: Pack._train ─▶ **packed_train_step** ─▶ per-run stats (the keys of step.train_step).

Micro-batch j holds micro-batch j of every run (each run cut by its own micro_batch_size), rows
in member order, so each run's rows and tokens stay contiguous. Each run's loss uses its own
token weights (`step.token_weights` over its own batch), so the summed loss's gradient with
respect to run k's adapter is exactly the gradient of run k's loss alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from peft import PeftModel

from retrain.backend.base import Rollouts
from retrain.backend.local.logprobs import build_batch, completion_logprobs
from retrain.backend.local.routing import route
from retrain.backend.local.step import (
    LossParts,
    _micro_batches,
    _pad_id,
    apply_update,
    policy_loss,
    token_weights,
)
from retrain.config.schema import OptimizerConfig, TrainingConfig


@dataclass
class MemberBatch:
    index: int
    adapter: str
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rollouts: Rollouts
    adv_T: np.ndarray
    micro_batch_size: int
    cfg_training: TrainingConfig
    cfg_optimizer: OptimizerConfig
    grad_norms: bool = False  # also grad_norm/<module> (the `grad` hook)


def _concat(rollouts: list[Rollouts]) -> Rollouts:
    """The pack's sequences as one Rollouts (member order), for `build_batch`."""
    lengths = np.concatenate([r.lengths for r in rollouts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    first = rollouts[0]
    return Rollouts(
        prompt_ids=[p for r in rollouts for p in r.prompt_ids],
        completion_ids=[c for r in rollouts for c in r.completion_ids],
        completion_text=[], truncated=np.zeros(len(lengths), dtype=bool),
        logprob_T=np.concatenate([r.logprob_T for r in rollouts]),
        entropy_T=np.concatenate([r.entropy_T for r in rollouts]), offsets=offsets, token_spans=[],
        n_per_prompt=first.n_per_prompt, temperature=first.temperature, top_p=first.top_p,
        num_generated_tokens=int(lengths.sum()))


def packed_train_step(model: PeftModel, members: list[MemberBatch]) -> dict[int, dict[str, float]]:
    """Train every member one step; returns each member's stats by its index."""
    rollouts = [m.rollouts for m in members]
    for m in members:
        if m.adv_T.shape != m.rollouts.logprob_T.shape:
            raise ValueError(f"adv_T has shape {m.adv_T.shape}, expected {m.rollouts.logprob_T.shape}")
    merged = _concat(rollouts)
    seq_base = np.cumsum([0] + [r.num_sequences for r in rollouts])
    chunks = [_micro_batches(r.num_sequences, m.micro_batch_size) for r, m in zip(rollouts, members, strict=True)]
    weights = [token_weights(r.lengths, m.cfg_training.loss_agg, m.cfg_training.max_tokens)
               for r, m in zip(rollouts, members, strict=True)]
    advs = [np.asarray(m.adv_T, dtype=np.float32) for m in members]  # as step.train_step casts them
    sums = [_Sums() for _ in members]
    lrs = [float(m.optimizer.param_groups[0]["lr"]) for m in members]
    model.train()
    for m in members:
        m.optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    for j in range(max(len(c) for c in chunks)):
        seqs: list[int] = []
        blocks: list[tuple[str, int]] = []
        spans: list[tuple[int, list[int]]] = []  # (member position, its local rows)
        for pos, (m, c) in enumerate(zip(members, chunks, strict=True)):
            if j < len(c):
                rows = c[j]
                seqs += [int(seq_base[pos]) + i for i in rows]
                blocks.append((m.adapter, len(rows)))
                spans.append((pos, rows))
        if int(merged.lengths[seqs].sum()) == 0:
            continue
        batch = build_batch(merged, seqs, _pad_id(model), device)
        with route(model, blocks):
            new_lp, ent = completion_logprobs(model, batch, temperature=merged.temperature,
                                              top_p=merged.top_p)
            ref_lp = None
            if any(m.cfg_training.kl_beta > 0 for m in members):
                with torch.no_grad(), model.disable_adapter():
                    ref_lp, _ = completion_logprobs(model, batch, temperature=merged.temperature,
                                                    top_p=merged.top_p, with_entropy=False)
        total: torch.Tensor | None = None
        cursor = 0
        for pos, rows in spans:
            m, r = members[pos], rollouts[pos]
            lo, hi = int(r.offsets[rows[0]]), int(r.offsets[rows[-1] + 1])
            sl = slice(cursor, cursor + hi - lo)
            cursor += hi - lo
            if hi == lo:
                continue
            old_lp, adv, w = (torch.as_tensor(a[lo:hi], device=device, dtype=new_lp.dtype)
                              for a in (r.logprob_T, advs[pos], weights[pos]))
            t = m.cfg_training
            parts = policy_loss(new_lp[sl], old_lp, adv, w, clip_eps=t.clip_eps,
                                clip_eps_high=t.clip_eps_high, kl_beta=t.kl_beta,
                                ref_logprob_T=None if ref_lp is None else ref_lp[sl])
            total = parts.loss if total is None else total + parts.loss
            sums[pos].add(parts, ent[sl] if ent is not None else None)
        if total is not None:
            total.backward()
    t1 = time.perf_counter()
    out: dict[int, dict[str, float]] = {}
    for pos, m in enumerate(members):
        t_opt = time.perf_counter()
        per_module = _module_grad_norms(model, m.adapter) if m.grad_norms else {}
        grad_norm, skipped, rolled_back = apply_update(m.params, m.optimizer, m.scheduler,
                                                       m.cfg_optimizer, loss=sums[pos].loss)
        n_tokens = int(rollouts[pos].offsets[-1])
        out[m.index] = {**sums[pos].stats(n_tokens), "grad_norm": grad_norm, "lr": lrs[pos],
                        "skipped": float(skipped), "rolled_back": float(rolled_back),
                        "forward_backward_s": t1 - t0, "optimizer_s": time.perf_counter() - t_opt,
                        **per_module}
    model.eval()
    return out


class _Sums:
    """A member's loss statistics summed over micro-batches (step.forward_backward's keys)."""

    def __init__(self) -> None:
        self.loss = self.pg_loss = self.kl_sum = self.entropy_sum = self.ratio_max_dev = 0.0
        self.clipped = 0

    def add(self, parts: LossParts, ent: torch.Tensor | None) -> None:
        self.loss += float(parts.loss.detach())
        self.pg_loss += parts.pg_loss
        self.kl_sum += parts.kl_sum
        self.clipped += parts.clipped
        self.ratio_max_dev = max(self.ratio_max_dev, parts.ratio_max_dev)
        self.entropy_sum += float(ent.sum()) if ent is not None else 0.0

    def stats(self, n_tokens: int) -> dict[str, float]:
        d = max(n_tokens, 1)
        return {"loss": self.loss, "pg_loss": self.pg_loss, "kl": self.kl_sum / d,
                "clip_frac": self.clipped / d, "ratio_max_dev": self.ratio_max_dev,
                "entropy": self.entropy_sum / d, "trained_tokens": float(n_tokens)}


@torch.no_grad()
def _module_grad_norms(model: PeftModel, adapter: str) -> dict[str, float]:
    """{"grad_norm/<module>": sqrt(|grad A|^2 + |grad B|^2)} of one run's adapter, before clipping
    (step.module_grad_norms for a pack's run)."""
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        for part in (f".lora_A.{adapter}.weight", f".lora_B.{adapter}.weight"):
            if name.endswith(part) and p.grad is not None:
                module = name.removesuffix(part).removeprefix("base_model.model.")
                sq[module] = sq.get(module, 0.0) + float(p.grad.pow(2).sum())
    return {f"grad_norm/{k}": v ** 0.5 for k, v in sq.items()}
