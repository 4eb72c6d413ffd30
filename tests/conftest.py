"""Shared fixtures. Everything runs offline on CPU."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One model cache for the whole test session (and across sessions on the same checkout):
# the tiny model is built once, then loaded.
os.environ.setdefault("RETRAIN_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "retrain"))

REPO = Path(__file__).resolve().parent.parent
