"""Fixtures for squeeze tests: planted-spectrum adapters written in PEFT's on-disk format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

PREFIX = "base_model.model.model.layers"


def planted_factors(
    s: Sequence[float], out: int, inp: int, rank: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(A [rank, inp], B [out, rank]) with B @ A having exactly the singular values `s`.

    B = U diag(s) M⁻¹ and A = M Vᵀ with a random invertible M, so neither factor is itself
    orthogonal and the QR path has real work to do.
    """
    s = np.asarray(s, dtype=np.float64)
    u, _ = np.linalg.qr(rng.standard_normal((out, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((inp, rank)))
    diag = np.zeros(rank)
    diag[: s.shape[0]] = s
    m = rng.standard_normal((rank, rank)) + 3.0 * np.eye(rank)
    b = (u * diag) @ np.linalg.inv(m)
    a = m @ v.T
    return a.astype(np.float32), b.astype(np.float32)


def write_adapter(
    path: Path,
    spectra: Sequence[Sequence[float]],
    *,
    rank: int,
    out: int = 24,
    inp: int = 20,
    alpha: float = 16,
    seed: int = 0,
    extra_config: dict[str, object] | None = None,
) -> Path:
    """An adapter dir with one q_proj layer per spectrum."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for i, s in enumerate(spectra):
        a, b = planted_factors(s, out, inp, rank, rng)
        tensors[f"{PREFIX}.{i}.self_attn.q_proj.lora_A.weight"] = a
        tensors[f"{PREFIX}.{i}.self_attn.q_proj.lora_B.weight"] = b
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["q_proj"]}
    config.update(extra_config or {})
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """Two layers, rank 4: s = [8, 4, 2, 1] and s = [1, 1, 1, 1]."""
    return write_adapter(tmp_path / "adapter", [[8, 4, 2, 1], [1, 1, 1, 1]], rank=4)


@pytest.fixture
def make_adapter() -> object:
    """The `write_adapter` helper, for tests that plant their own spectra."""
    return write_adapter
