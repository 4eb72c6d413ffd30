"""One run's Backend inside a pack (pack.py): its adapter, optimizer and schedule; sampling and
training go through the pack's rendezvous, everything else acts on its own adapter directly.

Data flow: trainer (one thread per run) ─▶ **PackMember** ─▶ Pack (batched) ─▶ torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
)
from retrain.backend.local.optim import build_scheduler, set_base_lr
from retrain.config.schema import RetrainConfig
from retrain.errors import RetrainError

if TYPE_CHECKING:
    from retrain.backend.local.pack import Pack


class PackMember:
    """The Backend of run `index` of `pack`."""

    name = "local"
    is_cap: float | None = None
    collect_grad_norms = False  # the `grad` hook: per-module norms in this run's step stats

    def __init__(self, pack: Pack, index: int, cfg: RetrainConfig, run_dir: Path) -> None:
        from retrain.backend.local.pack import adapter_name

        self.pack = pack
        self.index = index
        self.adapter = adapter_name(index)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.model_path = pack.model_path
        self.tokenizer = pack.tokenizer
        params = pack.params[index]
        o = cfg.optimizer
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.adam_eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, o, cfg.training.max_steps)
        trainable = sum(p.numel() for p in params)
        base = sum(p.numel() for n, p in pack.model.named_parameters() if "lora_" not in n)
        self.params: dict[str, int] = {"trainable": trainable, "total": base + trainable, "base": base}
        clean_temp_dirs(self.run_dir)

    def restore(self) -> dict[str, Any]:
        return load_latest(self.run_dir, self.pack.model, self.optimizer, self.scheduler,
                           adapter=self.adapter, restore_rng=False)

    def sample(self, prompts: Sequence[str], sampling: SamplingParams) -> Rollouts:
        from retrain.backend.local.pack import sample_call

        result: Rollouts = self.pack.rendezvous.submit(self.index, sample_call(prompts, sampling))
        return result

    def train_step(self, rollouts: Rollouts, adv_T: np.ndarray, *, micro_batch_size: int,
                   replay: Replay | None = None) -> dict[str, float]:
        from retrain.backend.local.pack import train_call

        result: dict[str, float] = self.pack.rendezvous.submit(
            self.index, train_call(rollouts, adv_T, micro_batch_size, replay))
        return result

    def set_teacher(self, path: Path | None) -> None:
        if path is not None:
            raise RetrainError("a packed run has no teacher adapter (multi-phase runs train alone)")

    def save_checkpoint(self, step: int, trainer_state: dict[str, Any]) -> Path:
        return save_checkpoint(self.run_dir, step, self.pack.model, self.optimizer, self.scheduler,
                               trainer_state=trainer_state, keep=self.cfg.training.keep_checkpoints,
                               adapter=self.adapter)

    def save_adapter(self) -> Path:
        return save_final_adapter(self.run_dir, self.pack.model, self.tokenizer, adapter=self.adapter)

    def save_adapter_to(self, path: Path) -> Path:
        return save_adapter_dir(self.pack.model, Path(path), adapter=self.adapter)

    def load_adapter_from(self, path: Path) -> None:
        load_adapter_weights(self.pack.model, Path(path), adapter=self.adapter)

    def set_lr(self, lr: float) -> None:
        set_base_lr(self.optimizer, self.scheduler, lr)

    def adapter_arrays(self) -> dict[str, LoraArrays]:
        from retrain.backend.local.engine import lora_arrays

        return lora_arrays(self.pack.model, self.adapter)

    def close(self) -> None:
        self.pack.leave(self.index)  # the pack stops waiting for this run
