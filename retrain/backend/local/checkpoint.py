"""Exact checkpoints: adapter, optimizer, LR schedule, trainer state and every RNG.

Data flow: step loop ─▶ **save_checkpoint** every save_every steps ─▶ `--resume` ─▶ **load_checkpoint**.

Layout of `<run>/checkpoints/step_NNNNNN/`:
    adapter_config.json, adapter_model.safetensors   PEFT adapter (the dir loads with PeftModel)
    trainer_state.json   {"format_version", "step", "trainer_state": {...}, "rng_state": {...}}
    optimizer.pt, scheduler.pt   torch.save of state dicts (tensors and plain values only)
A checkpoint is written into a temp dir next to its final name and renamed, so a kill leaves
either the whole checkpoint or none; readers ignore dot-prefixed temp dirs. Nothing is
unpickled on load except through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from retrain.errors import ResumeError
from retrain.io import atomic_write_json

FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTER_FILE = "adapter_model.safetensors"


def rng_state() -> dict[str, Any]:
    """python, numpy (global) and torch RNG states as JSON-able values."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                        "pos": int(np_state["state"]["pos"])}},
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]])


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp dir to its final name, replacing an older dir of that name."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs and dirs without a state file are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoints/step_{step:06d}/ atomically, then keep only the newest `keep`."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / STATE_FILE, {
            "format_version": FORMAT_VERSION, "step": step, "trainer_state": trainer_state,
            "rng_state": rng_state()})
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    ckpt_dir: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and RNG states; returns the trainer_state."""
    ckpt_dir = Path(ckpt_dir)
    state_path = ckpt_dir / STATE_FILE
    if not state_path.exists() or not (ckpt_dir / ADAPTER_FILE).exists():
        raise ResumeError(f"{ckpt_dir} is not a complete checkpoint "
                          f"(needs {STATE_FILE} and {ADAPTER_FILE})")
    saved = json.loads(state_path.read_text())
    device = next(model.parameters()).device
    adapter = load_file(str(ckpt_dir / ADAPTER_FILE), device=str(device))
    result = set_peft_model_state_dict(model, adapter)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise ResumeError(f"{ckpt_dir}: adapter keys do not match the model (e.g. {missing[0]}); "
                          "was lora.rank or lora.target_modules changed?")
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True,
                                         map_location=device))
    scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
    set_rng_state(saved["rng_state"])
    return dict(saved["trainer_state"])


def save_final_adapter(run_dir: Path, model: PeftModel) -> Path:
    """Write `<run>/adapter/` (loadable with peft.PeftModel.from_pretrained), atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / "adapter"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".adapter.tmp-"))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
