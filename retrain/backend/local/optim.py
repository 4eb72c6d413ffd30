"""AdamW over the trainable (adapter) parameters and the LR schedule.

Data flow: `[optimizer]` ─▶ **build_optimizer / build_scheduler** ─▶ train_step.
The schedule is a pure function of the step (`lr_factor`), so a resumed run gets the same LR.
"""

from __future__ import annotations

import math

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


def lr_factor(step: int, cfg: OptimizerConfig, max_steps: int) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based): linear warm-up, then constant/cosine."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig,
                    max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `lr_factor`; call `.step()` once per train step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps))
