"""Reading a PEFT LoRA adapter directory into per-layer (A, B) factor pairs.

Edge of the squeeze package: the only place that touches adapter files on the way in. Works on
any PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`, or the older
`adapter_model.bin`), not only the ones retrain writes. Safetensors files load through numpy;
torch is imported only for `.bin` files and bfloat16 tensors, which numpy cannot hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.errors import RetrainError

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"

# `...q_proj.lora_A.weight` as saved by PEFT, or `...q_proj.lora_A.default.weight` as found in a
# live model's state dict (adapter name inside the key).
_LORA_KEY = re.compile(r"^(?P<layer>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


class SqueezeError(RetrainError):
    """An adapter cannot be analysed or compressed as asked (missing files, bad tensors, bad rank)."""


@dataclass(frozen=True)
class LoraPair:
    """One LoRA layer: ΔW = scaling · B @ A, with A [r, in] and B [out, r] (flattened if conv)."""

    name: str  # the module path, e.g. base_model.model.model.layers.0.self_attn.q_proj
    key_a: str  # tensor key of A in the weights file
    key_b: str
    a: np.ndarray  # [r, in] float64
    b: np.ndarray  # [out, r] float64
    shape_a: tuple[int, ...]  # original tensor shapes (conv layers carry kernel dims)
    shape_b: tuple[int, ...]

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter directory in memory: its config, every LoRA pair, the original dtype."""

    path: Path
    config: dict[str, object]
    pairs: list[LoraPair]
    dtype: str  # dtype name of the LoRA tensors as stored, e.g. "float32", "bfloat16"
    weights_file: str  # file name the tensors came from
    tensors: dict[str, np.ndarray]  # every tensor of the file (bf16 widened to float32)
    dtypes: dict[str, str]  # original dtype name per key


def resolve_adapter_dir(path: str | Path) -> Path:
    """The adapter directory for `path`: the directory itself, or `<run dir>/adapter`."""
    p = Path(path)
    if not p.exists():
        raise SqueezeError(f"adapter directory not found: {p}")
    if not p.is_dir():
        raise SqueezeError(f"not a directory: {p} (give a PEFT adapter directory)")
    if (p / CONFIG_NAME).is_file():
        return p
    if (p / "adapter" / CONFIG_NAME).is_file():
        return p / "adapter"
    raise SqueezeError(
        f"{p} is not a PEFT adapter directory: no {CONFIG_NAME} (nor adapter/{CONFIG_NAME})"
    )


def read_config(adapter_dir: Path) -> dict[str, object]:
    path = adapter_dir / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SqueezeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise SqueezeError(f"{path}: expected a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise SqueezeError(f"{path}: peft_type is {peft_type}, squeeze handles LORA adapters only")
    return config


def load_tensors(adapter_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Every tensor of the weights file as numpy, the original dtype of each, and the file name."""
    st_path = adapter_dir / SAFETENSORS_NAME
    bin_path = adapter_dir / BIN_NAME
    if st_path.is_file():
        try:
            from safetensors.numpy import load_file

            arrays = load_file(str(st_path))
            return arrays, {k: str(v.dtype) for k, v in arrays.items()}, SAFETENSORS_NAME
        except TypeError:
            pass  # "data type 'bfloat16' not understood": numpy has no bf16, use torch
        except Exception as exc:  # SafetensorError (a Rust type) for truncated or corrupt files
            raise SqueezeError(f"{st_path}: cannot read ({exc})") from None
        from safetensors.torch import load_file as torch_load_file

        return _torch_to_numpy(torch_load_file(str(st_path))) + (SAFETENSORS_NAME,)
    if bin_path.is_file():
        import torch

        try:
            state = torch.load(str(bin_path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SqueezeError(f"{bin_path}: cannot read ({exc})") from None
        if not isinstance(state, dict):
            raise SqueezeError(f"{bin_path}: expected a state dict")
        return _torch_to_numpy(state) + (BIN_NAME,)
    raise SqueezeError(f"{adapter_dir}: no {SAFETENSORS_NAME} or {BIN_NAME} next to {CONFIG_NAME}")


def _torch_to_numpy(state: Mapping[str, object]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import torch

    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        dtypes[key] = str(value.dtype).removeprefix("torch.")
        if value.dtype == torch.bfloat16:
            value = value.float()
        arrays[key] = value.detach().cpu().numpy()
    return arrays, dtypes


def pair_lora_tensors(tensors: dict[str, np.ndarray]) -> list[LoraPair]:
    """Match every `lora_A.weight` with its `lora_B.weight`; check the shapes agree."""
    halves: dict[tuple[str, str], dict[str, str]] = {}
    for key in tensors:
        m = _LORA_KEY.match(key)
        if m:
            halves.setdefault((m["layer"], m["adapter"] or ""), {})[m["which"]] = key
    if not halves:
        raise SqueezeError("no LoRA tensors found (expected keys ending in lora_A.weight / lora_B.weight)")
    pairs: list[LoraPair] = []
    for (layer, adapter), keys in sorted(halves.items()):
        name = f"{layer}[{adapter}]" if adapter else layer
        if "A" not in keys or "B" not in keys:
            missing = "lora_A" if "A" not in keys else "lora_B"
            raise SqueezeError(f"layer {name}: has no {missing}.weight to pair with")
        raw_a, raw_b = tensors[keys["A"]], tensors[keys["B"]]
        if raw_a.ndim < 2 or raw_b.ndim < 2:
            raise SqueezeError(
                f"layer {name}: lora_A {tuple(raw_a.shape)} and lora_B {tuple(raw_b.shape)} must be matrices"
            )
        a = raw_a.reshape(raw_a.shape[0], -1).astype(np.float64)  # [r, in·k·k] for conv
        b = raw_b.reshape(raw_b.shape[0], -1).astype(np.float64)  # [out, r]
        if b.shape[1] != a.shape[0]:
            raise SqueezeError(
                f"layer {name}: mismatched shapes, lora_A is {tuple(raw_a.shape)} (rank {a.shape[0]}) "
                f"but lora_B is {tuple(raw_b.shape)} (rank {b.shape[1]})"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise SqueezeError(f"layer {name}: LoRA weights contain NaN or inf")
        pairs.append(LoraPair(name, keys["A"], keys["B"], a, b, tuple(raw_a.shape), tuple(raw_b.shape)))
    return pairs


def load_adapter(path: str | Path) -> LoadedAdapter:
    """Read and validate an adapter directory (or a run dir holding `adapter/`)."""
    adapter_dir = resolve_adapter_dir(path)
    config = read_config(adapter_dir)
    tensors, dtypes, weights_file = load_tensors(adapter_dir)
    try:
        pairs = pair_lora_tensors(tensors)
    except SqueezeError as exc:
        raise SqueezeError(f"{adapter_dir / weights_file}: {exc}") from None
    dtype = dtypes.get(pairs[0].key_a, "float32")
    return LoadedAdapter(adapter_dir, config, pairs, dtype, weights_file, tensors, dtypes)
