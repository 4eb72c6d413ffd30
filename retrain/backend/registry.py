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
}


def build_backend(cfg: RetrainConfig, run_dir: Path, *, progress: bool) -> Backend:
    """The engine `cfg.backend.name` names, loaded and ready to sample (a resume then calls
    `restore`)."""
    module, _, cls_name = BACKENDS[cfg.backend.name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    backend: Backend = cls(cfg, run_dir, progress=progress)
    return backend
