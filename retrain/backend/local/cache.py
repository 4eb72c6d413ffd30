"""Where built tiny/small models live, and their cache key. No torch import.

Kept apart from `tiny.py` (which imports torch and transformers) so that a campaign process
can find an already-built entry without paying for those imports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT_VERSION = 3  # bump when the build recipe changes: old entries are then ignored
META_FILE = "retrain_model.json"

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 256},
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 512},
}

# The Linear layers of every preset (Llama layout): what lora.target_modules may name.
PRESET_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj", "lm_head")


def cache_root() -> Path:
    """`$RETRAIN_CACHE`, default ~/.cache/retrain; a ConfigError if it names a file."""
    from retrain.errors import ConfigError

    path = Path(os.environ.get("RETRAIN_CACHE") or Path.home() / ".cache" / "retrain")
    if path.exists() and not path.is_dir():
        raise ConfigError([f"RETRAIN_CACHE={path} is a file, not a directory; point RETRAIN_CACHE "
                           "at a directory (it is created if missing)"])
    return path


def cache_key(preset: str, *, task_key: dict, steps: int, lr: float, batch_size: int, seed: int) -> str:
    """12 hex chars over everything that changes the built weights."""
    blob = json.dumps({"preset": preset, "dims": PRESETS.get(preset), "task": task_key,
                       "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
                       "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def entry_dir(preset: str, key: str, cache_dir: Path | None = None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else cache_root()) / "models" / f"{preset}-{key}"


def built_entry(preset: str, *, task_key: dict, steps: int, lr: float, batch_size: int, seed: int,
                cache_dir: Path | None = None) -> Path | None:
    """The entry's directory if it is completely built (its meta file is written last)."""
    key = cache_key(preset, task_key=task_key, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    path = entry_dir(preset, key, cache_dir)
    return path if (path / META_FILE).exists() else None
