"""Warm workers: a process keeps the last base model it loaded (and its tokenizer) between runs.

Data flow: LocalBackend / Pack ─▶ **load_base** (cached or from disk) ─▶ apply_lora ─▶ … ─▶
close ─▶ **keep_base** (the LoRA layers removed, the frozen base kept for the next run).

A campaign's runs share one base model, and a worker (pool, in-process, packed) trains them one
after another; loading the base again for each run is pure fixed cost. The base weights are
frozen (only the adapter trains), so the model a finished run leaves behind, with its LoRA
layers unloaded, is the model the next run would load. Loading draws nothing from torch's RNG,
so a run's LoRA init (seeded just before it) is the same warm or cold; tests compare the two.
One model is kept at a time: a run of another model replaces it.
"""

from __future__ import annotations

import threading

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from retrain.backend.local.model import load_model_and_tokenizer

Key = tuple[str, str, str, bool, bool]
_lock = threading.Lock()
_kept: dict[Key, tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]] = {}
stats = {"loads": 0, "reuses": 0}  # for the bench and the tests


def load_base(name_or_path: str, *, dtype: str, device: str, local_files_only: bool,
              trust_remote_code: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device, Key]:
    """The base model, tokenizer and device: the kept ones when they match, else from disk."""
    key: Key = (name_or_path, dtype, device, local_files_only, trust_remote_code)
    with _lock:
        kept = _kept.pop(key, None)
    if kept is not None:
        stats["reuses"] += 1
        model, tokenizer, dev = kept
        model.eval()
        return model, tokenizer, dev, key
    stats["loads"] += 1
    model, tokenizer, dev = load_model_and_tokenizer(
        name_or_path, dtype=dtype, device=device, local_files_only=local_files_only,
        trust_remote_code=trust_remote_code)
    return model, tokenizer, dev, key


def keep_base(key: Key, model: PeftModel, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> None:
    """Keep `model`'s base (its LoRA layers and every adapter removed) for the next run."""
    base = model.unload()
    for p in base.parameters():
        p.requires_grad_(False)
        p.grad = None
    with _lock:
        _kept.clear()
        _kept[key] = (base, tokenizer, device)


def drop_kept() -> None:
    with _lock:
        _kept.clear()
