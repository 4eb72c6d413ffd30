"""Compress a PEFT LoRA adapter to a lower rank: a new adapter directory PEFT loads as is.

Per layer, with B A = L diag(s) R from `analysis.lora_svd`, the top k directions give
B' = L_k diag(√s_k) and A' = diag(√s_k) R_k, splitting the singular values evenly between the
factors so both stay on the same scale (as LoRA-Squeeze, arXiv 2602.10993, does). `lora_alpha`
is rescaled so that PEFT's scaling is unchanged: alpha/r for plain LoRA, alpha/√r for rsLoRA.
At k = the source rank the new adapter computes the same ΔW up to float rounding.

Tensors that are not LoRA factors (lora biases, modules_to_save) are copied unchanged.
Adapters whose layers differ in rank (`rank_pattern` / `alpha_pattern`) and DoRA adapters are
refused: their per-layer scaling cannot be carried over by one `r` / `lora_alpha` pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from retrain.io import atomic_path, atomic_write_text
from retrain.squeeze.adapter import CONFIG_NAME, SAFETENSORS_NAME, SqueezeError, load_adapter
from retrain.squeeze.analysis import lora_svd


def scaled_alpha(alpha: float, source_rank: int, rank: int, *, use_rslora: bool) -> float | int:
    """The lora_alpha at `rank` that keeps alpha/r (or alpha/√r with rsLoRA) as at `source_rank`."""
    factor = math.sqrt(rank / source_rank) if use_rslora else rank / source_rank
    value = alpha * factor
    return int(round(value)) if abs(value - round(value)) < 1e-9 else value


def truncate_pair(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-`rank` factors (A' [rank, in], B' [out, rank]) of B @ A, √S on each side.

    If the layer's numerical rank is below `rank` (out or in < r), the extra rows are zeros.
    """
    svd = lora_svd(a, b)
    k = min(rank, svd.s.shape[0])
    root = np.sqrt(svd.s[:k])
    new_a = np.zeros((rank, a.shape[1]))
    new_b = np.zeros((b.shape[0], rank))
    new_a[:k] = root[:, None] * svd.right[:k]
    new_b[:, :k] = svd.left[:, :k] * root[None, :]
    return new_a, new_b


def _check_compressible(config: dict[str, object], source_rank: int, layer_ranks: set[int], rank: int) -> None:
    if rank < 1:
        raise SqueezeError(f"--compress-to must be >= 1, got {rank}")
    if rank > source_rank:
        raise SqueezeError(f"cannot compress to rank {rank}: the adapter's source rank is {source_rank}")
    if config.get("use_dora"):
        raise SqueezeError("cannot compress a DoRA adapter (use_dora = true): its magnitude vector depends on the rank")
    if config.get("rank_pattern") or config.get("alpha_pattern") or len(layer_ranks) > 1:
        raise SqueezeError(
            "cannot compress an adapter whose layers differ in rank or alpha (rank_pattern / alpha_pattern)"
        )
    if "lora_alpha" not in config:
        raise SqueezeError(f"{CONFIG_NAME} has no lora_alpha")


def compress_adapter(adapter_dir: str | Path, rank: int, out_dir: str | Path) -> Path:
    """Write a rank-`rank` copy of the adapter to `out_dir`; returns `out_dir`."""
    adapter = load_adapter(adapter_dir)
    out = Path(out_dir)
    if out.resolve() == adapter.path.resolve():
        raise SqueezeError(f"--out must differ from the source adapter directory ({out})")
    source_rank = max(p.rank for p in adapter.pairs)
    _check_compressible(adapter.config, source_rank, {p.rank for p in adapter.pairs}, rank)

    new_tensors: dict[str, np.ndarray] = dict(adapter.tensors)
    for pair in adapter.pairs:
        new_a, new_b = truncate_pair(pair.a, pair.b, rank)
        # Conv layers: A [r, in, kh, kw] and B [out, r, 1, 1] keep their trailing dims.
        new_tensors[pair.key_a] = new_a.reshape((rank, *pair.shape_a[1:]))
        new_tensors[pair.key_b] = new_b.reshape((pair.shape_b[0], rank, *pair.shape_b[2:]))

    config = dict(adapter.config)
    alpha = float(config["lora_alpha"])  # type: ignore[arg-type]
    config["lora_alpha"] = scaled_alpha(alpha, source_rank, rank, use_rslora=bool(config.get("use_rslora")))
    config["r"] = rank
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(new_tensors, adapter.dtypes, out / SAFETENSORS_NAME)
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def _save_safetensors(tensors: dict[str, np.ndarray], dtypes: dict[str, str], path: Path) -> None:
    """Save in each tensor's original dtype (bf16 included, hence torch), via temp file + rename."""
    import torch
    from safetensors.torch import save_file

    state = {
        key: torch.from_numpy(np.ascontiguousarray(value)).to(getattr(torch, dtypes.get(key, "float32")))
        for key, value in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
