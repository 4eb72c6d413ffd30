"""Exact checkpoints: adapter, optimizer, LR schedule, trainer state and every RNG.

Data flow: step loop ─▶ **save_checkpoint** every save_every steps ─▶ `--resume` ─▶ **load_checkpoint**.

Layout of `<run>/checkpoints/step_NNNNNN/`:
    adapter_config.json, adapter_model.safetensors   PEFT adapter (the dir loads with PeftModel)
    trainer_state.json   {"format_version", "step", "trainer_state": {...}, "rng_state": {...}}
    optimizer.pt, scheduler.pt   torch.save of state dicts (tensors and plain values only)
A checkpoint is written into a temp dir next to its final name and renamed, so a kill leaves
either the whole checkpoint or none; readers ignore dot-prefixed temp dirs, and the next run in
the dir deletes the ones a kill left behind (`clean_temp_dirs`). Nothing is unpickled on load
except through `torch.load(weights_only=True)`.

Resume (`load_latest`) reads every file of the newest checkpoint before touching the model; a
checkpoint with a missing or unreadable file is moved aside to `checkpoints/.damaged-step_N/`
and the next older one is tried, so a damaged newest checkpoint costs the steps since the older
one, never the run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from retrain.errors import ResumeError
from retrain.io import atomic_write_json, share_tree, temp_dir

log = logging.getLogger("retrain.checkpoint")

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
    adapter: str = "default",
) -> Path:
    """Write checkpoints/step_{step:06d}/ atomically, then keep only the newest `keep`.
    `adapter`: which of the model's peft adapters is the run's (a pack holds one per run)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = temp_dir(root, prefix=f".{final.name}.tmp-")
    try:
        write_adapter(model, tmp, adapter)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / STATE_FILE, {
            "format_version": FORMAT_VERSION, "step": step, "trainer_state": trainer_state,
            "rng_state": rng_state()})
        share_tree(tmp)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class DamagedCheckpoint(Exception):
    """A checkpoint with a missing or unreadable file; the message names the file."""


def read_checkpoint(ckpt_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every file of a checkpoint, read and checked, without touching any model.

    Returns {"saved": trainer_state.json, "adapter": tensors, "optimizer": ..., "scheduler": ...};
    raises DamagedCheckpoint naming the first file that is missing or unreadable.
    """
    ckpt_dir = Path(ckpt_dir)

    def part(name: str, read: Any) -> Any:
        path = ckpt_dir / name
        if not path.is_file():
            raise DamagedCheckpoint(f"{path} is missing")
        try:
            return read(path)
        except Exception as exc:  # noqa: BLE001 - any reader error means the file is damaged
            raise DamagedCheckpoint(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc

    saved = part(STATE_FILE, lambda p: json.loads(p.read_text()))
    if not (isinstance(saved, dict) and isinstance(saved.get("trainer_state"), dict)
            and isinstance(saved.get("rng_state"), dict) and isinstance(saved.get("step"), int)):
        raise DamagedCheckpoint(f"{ckpt_dir / STATE_FILE} lacks step, trainer_state or rng_state")
    return {
        "saved": saved,
        "adapter": part(ADAPTER_FILE, lambda p: load_file(str(p), device=str(device))),
        "optimizer": part("optimizer.pt", lambda p: torch.load(p, weights_only=True,
                                                              map_location=device)),
        "scheduler": part("scheduler.pt", lambda p: torch.load(p, weights_only=True)),
    }


def load_checkpoint(
    ckpt_dir: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    adapter: str = "default",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and RNG states; returns the trainer_state.
    A pack's runs share the process's global RNG and draw nothing from it after LoRA init, so
    they pass `restore_rng=False`.

    Raises DamagedCheckpoint (before changing anything) if a file is missing or unreadable.
    """
    ckpt_dir = Path(ckpt_dir)
    device = next(model.parameters()).device
    parts = read_checkpoint(ckpt_dir, device)
    unexpected = [k for k in getattr(set_peft_model_state_dict(model, parts["adapter"], adapter_name=adapter),
                                     "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ResumeError(f"{ckpt_dir}: adapter keys do not match the model (e.g. {unexpected[0]}); "
                          "was lora.rank or lora.target_modules changed?")
    try:
        optimizer.load_state_dict(parts["optimizer"])
        scheduler.load_state_dict(parts["scheduler"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DamagedCheckpoint(f"{ckpt_dir}: optimizer.pt or scheduler.pt does not fit this "
                                f"run ({type(exc).__name__}: {exc})") from exc
    if restore_rng:
        set_rng_state(parts["saved"]["rng_state"])
    return dict(parts["saved"]["trainer_state"])


def load_latest(
    run_dir: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    adapter: str = "default",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore from the newest intact checkpoint; damaged newer ones are moved aside.

    Raises ResumeError if there is no checkpoint or none is intact.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise ResumeError(f"{run_dir}: no checkpoint to resume from (checkpoints/ is empty); "
                          "start it fresh with `retrain run CONFIG --out DIR`")
    problems: list[str] = []
    for ckpt in reversed(found):
        try:
            state = load_checkpoint(ckpt, model, optimizer, scheduler, adapter, restore_rng)
        except DamagedCheckpoint as exc:
            problems.append(str(exc))
            aside = ckpt.with_name(f".damaged-{ckpt.name}")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(ckpt, aside)
            log.warning("checkpoint %s is damaged (%s); moved it to %s and trying the one before",
                        ckpt.name, exc, aside.name)
            continue
        if problems:
            log.warning("resuming from %s: the %d newer checkpoint(s) were damaged", ckpt.name,
                        len(problems))
        return state
    raise ResumeError(f"{run_dir}: no intact checkpoint to resume from ({'; '.join(problems)}); "
                      "the damaged ones are in checkpoints/.damaged-*; start the run fresh")


def clean_temp_dirs(run_dir: Path) -> list[Path]:
    """Delete the temp dirs a kill mid-write left (`checkpoints/.step_*.tmp-*`, `.old-*`,
    `.adapter.tmp-*`, and those of a multi-phase run's `ledger/` and `phases/` snapshots); only
    one process writes a run dir at a time. Returns what was removed."""
    run_dir = Path(run_dir)
    found = [*((run_dir / CHECKPOINTS).glob(".step_*.tmp-*")),
             *((run_dir / CHECKPOINTS).glob(".step_*.old-*")),
             *run_dir.glob(".adapter.tmp-*"), *run_dir.glob(".adapter.old-*"),
             *(p for sub in ("ledger", "phases") for pattern in (".*.tmp-*", ".*.old-*")
               for p in (run_dir / sub).glob(pattern))]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def save_final_adapter(run_dir: Path, model: PeftModel, tokenizer: PreTrainedTokenizerBase | None = None,
                       adapter: str = "default") -> Path:
    """Write `<run>/adapter/` atomically: the PEFT adapter and the tokenizer files, so that
    `AutoPeftModelForCausalLM.from_pretrained(adapter)` and `AutoTokenizer.from_pretrained(adapter)`
    both work from the one dir (the base model is found through adapter_config.json)."""
    return save_adapter_dir(model, Path(run_dir) / "adapter", tokenizer, adapter)


def save_adapter_dir(model: PeftModel, path: Path, tokenizer: PreTrainedTokenizerBase | None = None,
                     adapter: str = "default") -> Path:
    """The adapter alone (PEFT safetensors + adapter_config.json, and the tokenizer files when
    given) at `path`, replaced atomically: the final adapter, and a multi-phase run's ledger
    entries and per-phase snapshots."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(path.parent, prefix=f".{path.name}.tmp-")
    try:
        write_adapter(model, tmp, adapter)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        share_tree(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_adapter(model: PeftModel, directory: Path, adapter: str) -> None:
    """The PEFT files of one adapter directly in `directory` (peft writes any adapter but
    "default" into a subfolder named after it; a pack's adapters are moved up from there)."""
    model.save_pretrained(str(directory), safe_serialization=True, selected_adapters=[adapter])
    if adapter != "default":
        sub = Path(directory) / adapter
        for f in sub.iterdir():
            os.replace(f, Path(directory) / f.name)
        sub.rmdir()


def load_adapter_weights(model: PeftModel, path: Path, adapter: str = "default") -> None:
    """Set the adapter's weights to those saved in `path` (by `save_adapter_dir`), bit for bit."""
    device = next(model.parameters()).device
    tensors = load_file(str(Path(path) / ADAPTER_FILE), device=str(device))
    result = set_peft_model_state_dict(model, tensors, adapter_name=adapter)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ResumeError(f"{path}: adapter keys do not match the model (e.g. {unexpected[0]})")


def set_teacher_adapter(model: PeftModel, path: Path | None) -> None:
    """Load the adapter at `path` as the frozen "teacher" adapter next to the trained one (a
    second adapter on the same base, no second model), replacing an earlier teacher; None drops it.
    The trained adapter stays the active one."""
    from retrain.backend.local.step import TEACHER

    if TEACHER in model.peft_config:
        model.delete_adapter(TEACHER)
    if path is not None:
        active = model.active_adapter
        model.load_adapter(str(path), adapter_name=TEACHER, is_trainable=False)
        model.set_adapter(active)
