"""`backend.name = "local"`: the torch engine in this process. It owns the base model with its
LoRA adapter, the optimizer and LR schedule; it samples with the KV-cache decode loop
(sampler.py), trains with the token-weighted policy loss (step.py) and writes checkpoints and
the final adapter (checkpoint.py).

Data flow: trainer ─▶ Backend protocol (retrain/backend/base.py) ─▶ **LocalBackend** ─▶ torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrain.backend.base import LoraArrays, Replay, Rollouts, SamplingParams
from retrain.backend.local.checkpoint import (
    clean_temp_dirs,
    load_adapter_weights,
    load_latest,
    save_adapter_dir,
    save_checkpoint,
    save_final_adapter,
    set_teacher_adapter,
)
from retrain.backend.local.lora import apply_lora
from retrain.backend.local.model import count_parameters
from retrain.backend.local.optim import build_optimizer, set_base_lr
from retrain.backend.local.presets import (
    quiet_libraries,
    resolve_model_path,
    seed_everything,
    warmup_task,
)
from retrain.backend.local.sampler import sample
from retrain.backend.local.step import module_name, train_step
from retrain.backend.local.warm import keep_base, load_base
from retrain.config.schema import RetrainConfig


class LocalBackend:
    """One run's model, adapter and optimizer, in this process."""

    name = "local"
    # Truncated importance sampling cap: None here, the trained model samples (ratio 1);
    # a backend with another sampler sets it (vllm: backend.is_cap).
    is_cap: float | None = None
    collect_grad_norms = False  # the `grad` hook turns it on (per-module norms in the step stats)

    def __init__(self, cfg: RetrainConfig, run_dir: Path, *, progress: bool = True) -> None:
        quiet_libraries()
        if cfg.backend.threads > 0:
            torch.set_num_threads(cfg.backend.threads)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.model_path = resolve_model_path(cfg, warmup_task(cfg), progress=progress)
        seed_everything(cfg.training.seed)  # LoRA init and dropout draw from torch's global RNG
        base, self.tokenizer, self.device, self._warm_key = load_base(  # kept from the last run, or loaded
            self.model_path, dtype=cfg.model.dtype, device=cfg.model.device,
            local_files_only=cfg.model.local_files_only,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        self.model = apply_lora(base, cfg.lora)
        self.params: dict[str, int] = count_parameters(self.model)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.optimizer,
                                                         max_steps=cfg.training.max_steps)
        clean_temp_dirs(self.run_dir)

    def restore(self) -> dict[str, Any]:
        return load_latest(self.run_dir, self.model, self.optimizer, self.scheduler)

    def sample(self, prompts: Sequence[str], sampling: SamplingParams) -> Rollouts:
        return sample(self.model, self.tokenizer, list(prompts), n_per_prompt=sampling.n_per_prompt,
                      max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                      top_p=sampling.top_p, seed=sampling.seed, step=sampling.step,
                      greedy=sampling.greedy, chunk_size=sampling.chunk_size, device=self.device)

    def train_step(self, rollouts: Rollouts, adv_T: np.ndarray, *, micro_batch_size: int,
                   replay: Replay | None = None) -> dict[str, float]:
        return train_step(self.model, self.optimizer, self.scheduler, rollouts, adv_T,
                          cfg_training=self.cfg.training, cfg_optimizer=self.cfg.optimizer,
                          micro_batch_size=micro_batch_size, is_cap=self.is_cap, replay=replay,
                          collect_grad_norms=self.collect_grad_norms)

    def set_teacher(self, path: Path | None) -> None:
        set_teacher_adapter(self.model, None if path is None else Path(path))

    def save_checkpoint(self, step: int, trainer_state: dict[str, Any]) -> Path:
        return save_checkpoint(self.run_dir, step, self.model, self.optimizer, self.scheduler,
                               trainer_state=trainer_state, keep=self.cfg.training.keep_checkpoints)

    def save_adapter(self) -> Path:
        return save_final_adapter(self.run_dir, self.model, self.tokenizer)

    def save_adapter_to(self, path: Path) -> Path:
        return save_adapter_dir(self.model, Path(path))

    def load_adapter_from(self, path: Path) -> None:
        load_adapter_weights(self.model, Path(path))

    def set_lr(self, lr: float) -> None:
        set_base_lr(self.optimizer, self.scheduler, lr)

    def adapter_arrays(self) -> dict[str, LoraArrays]:
        return lora_arrays(self.model)

    def close(self) -> None:
        # nothing runs in the background; the base model stays in this process for its next run
        if getattr(self, "model", None) is not None:
            keep_base(self._warm_key, self.model, self.tokenizer, self.device)
            del self.model, self.optimizer, self.scheduler


def lora_arrays(model: torch.nn.Module, adapter: str = "default") -> dict[str, LoraArrays]:
    """Every LoRA module's (A, B, scale) of the trained adapter (`adapter`: a pack's run),
    copied to numpy float32. Module names drop peft's wrapper prefix: `model.layers.0.self_attn.q_proj`."""
    out: dict[str, LoraArrays] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        scaling = getattr(module, "scaling", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or adapter not in lora_a:
            continue
        assert isinstance(lora_b, torch.nn.ModuleDict) and isinstance(scaling, dict)
        wa, wb = lora_a[adapter].weight, lora_b[adapter].weight
        assert isinstance(wa, torch.Tensor) and isinstance(wb, torch.Tensor)
        with torch.no_grad():
            a = wa.detach().float().cpu().numpy().copy()  # [r, d_in]
            b = wb.detach().float().cpu().numpy().copy()  # [d_out, r]
        out[module_name(name)] = LoraArrays(a=a, b=b, scale=float(scaling[adapter]))
    return out

