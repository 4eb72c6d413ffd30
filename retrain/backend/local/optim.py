"""AdamW over the trainable (adapter) parameters and the LR schedule.

Data flow: `[optimizer]` ─▶ **build_optimizer / build_scheduler** ─▶ train_step.
The schedule is transformers' `get_scheduler` (the one TRL and the HF Trainer use): a LambdaLR
whose LR is a pure function of the step, so a resumed run gets the same LR from the restored
step count alone. Warm-up follows transformers: the LR at step s < warmup_steps is lr * s / warmup_steps
(0 at the first step).
"""

from __future__ import annotations

from typing import cast

import torch

from retrain.config.schema import OptimizerConfig


def build_optimizer(
    model: torch.nn.Module, cfg: OptimizerConfig, *, max_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over parameters with requires_grad (the LoRA adapter) and its LR schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (was LoRA applied?)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    return optimizer, build_scheduler(optimizer, cfg, max_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig,
                    max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`optimizer.schedule` as a transformers scheduler; call `.step()` once per train step."""
    from transformers import get_scheduler

    if cfg.schedule == "cosine":
        sched = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=max_steps,
                              scheduler_specific_kwargs={"min_lr_rate": cfg.min_lr_ratio})
    else:
        sched = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps)
    return cast(torch.optim.lr_scheduler.LambdaLR, sched)


def set_base_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                lr: float) -> None:
    """Make `lr` the schedule's base learning rate from now on (a phase of a multi-phase run):
    the current factor of the schedule applies to it at once, and every later step scales it."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = lr * fn(scheduler.last_epoch)
