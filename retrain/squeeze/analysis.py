"""LoRA-Squeeze analysis: how much of each layer's update survives truncation to rank k.

Method (LoRA-Squeeze, arXiv 2602.10993): a LoRA layer's update is ΔW = scaling · B A with
B [out, r] and A [r, in]. Its singular values come from QR factorisations of the thin factors,
B = Q_B R_B and Aᵀ = Q_A R_A, so that B A = Q_B (R_B R_Aᵀ) Q_Aᵀ, and the SVD of the r×r core
R_B R_Aᵀ = U S Vᵀ. The out×in product is never formed: cost O((out + in) r² + r³) per layer
instead of O(out · in · min(out, in)).

Retained variance at rank k is Σ_{i<=k} s_i² / Σ_i s_i²; the recommendation is the smallest
evaluated rank whose mean over layers reaches `min_variance` (and, if set, whose worst layer
reaches `min_layer`). Retention is scale-invariant, so `lora_alpha` plays no part here.

Deviations from the paper: a layer whose update is exactly zero (B = 0, as at initialisation)
counts as fully retained at every rank; the source rank is always among the evaluated ranks so
the recommendation is always a row of the table; each layer also gets an entropy effective rank
(Roy & Vetterli 2007, exp of the entropy of s / Σ s) for the over-time trajectory.

Pure numpy over plain data; file reading lives in `adapter.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrain.squeeze.adapter import SqueezeError, load_adapter

# Thresholds are compared with a little slack so 0.95 is met by a retention of 0.9499999999.
_EPS = 1e-9


@dataclass(frozen=True)
class CoreSVD:
    """ΔW / scaling = left @ diag(s) @ right, with left [out, m], right [m, in], m = min(r, out, in)."""

    s: np.ndarray  # [m] singular values, descending
    left: np.ndarray  # [out, m] orthonormal columns
    right: np.ndarray  # [m, in] orthonormal rows


def lora_svd(a: np.ndarray, b: np.ndarray, *, vectors: bool = True) -> CoreSVD:
    """SVD of B @ A through QR of both factors and an SVD of the small core."""
    if not vectors:  # singular values only: the R factors suffice, Q is never built
        rb: np.ndarray = np.linalg.qr(b, mode="r")  # type: ignore[assignment]  # [m_b, r], m_b = min(out, r)
        ra: np.ndarray = np.linalg.qr(a.T, mode="r")  # type: ignore[assignment]  # [m_a, r]
        sv = np.linalg.svd(rb @ ra.T, compute_uv=False)
        return CoreSVD(sv, np.empty((b.shape[0], 0)), np.empty((0, a.shape[1])))
    q_b, r_b = np.linalg.qr(b)  # [out, m_b], [m_b, r]
    q_a, r_a = np.linalg.qr(a.T)  # [in, m_a], [m_a, r]
    core = r_b @ r_a.T  # [m_b, m_a]
    u, s, vt = np.linalg.svd(core, full_matrices=False)
    return CoreSVD(s, q_b @ u, vt @ q_a.T)


def retention_curve(s: np.ndarray, rank: int) -> np.ndarray:
    """Retained variance at k = 1..rank: cumsum(s²) / sum(s²); ones for an all-zero update."""
    energy = np.zeros(rank)
    n = min(rank, s.shape[0])
    energy[:n] = np.square(s[:n])
    total = energy.sum()
    if total <= 0.0:
        return np.ones(rank)
    curve = np.cumsum(energy) / total
    curve[n - 1 :] = 1.0  # exact at and past the numerical rank, not 0.99999999
    return np.minimum(curve, 1.0)


def effective_rank(s: np.ndarray) -> float:
    """exp(entropy of s / Σ s): 1.0 for one direction, r for r equal directions, 0 for ΔW = 0."""
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def default_ranks(source_rank: int) -> list[int]:
    """Powers of two up to the source rank, plus the source rank itself."""
    ranks = [1 << i for i in range(source_rank.bit_length()) if (1 << i) <= source_rank]
    return sorted(set(ranks) | {source_rank})


def select_ranks(source_rank: int, ranks: Sequence[int] | None) -> list[int]:
    """The ranks to evaluate: given ones (those above the source rank dropped) plus the source rank."""
    if not ranks:
        return default_ranks(source_rank)
    bad = [k for k in ranks if k < 1]
    if bad:
        raise SqueezeError(f"ranks must be >= 1, got {bad}")
    return sorted({k for k in ranks if k <= source_rank} | {source_rank})


def recommend_rank(
    ranks: Sequence[int],
    mean: Sequence[float],
    worst: Sequence[float],
    min_variance: float,
    min_layer: float | None,
) -> int:
    """Smallest rank whose mean (and, if set, worst-layer) retention reaches the thresholds."""
    for k, m, w in zip(ranks, mean, worst, strict=True):
        if m >= min_variance - _EPS and (min_layer is None or w >= min_layer - _EPS):
            return int(k)
    return int(ranks[-1])  # the source rank retains everything; reached only through rounding


def rank_at(curve: np.ndarray, threshold: float) -> int:
    """Smallest k (1-based) with curve[k-1] >= threshold."""
    return int(np.argmax(curve >= threshold - _EPS)) + 1


@dataclass(frozen=True)
class LayerSqueeze:
    """One layer's spectrum and what truncation keeps of it."""

    name: str
    shape: tuple[int, int]  # ΔW is [out, in]
    rank: int
    singular_values: list[float]  # of B @ A (without lora scaling), descending
    retention: list[float]  # at the result's evaluated ranks
    effective_rank: float
    rank_at_threshold: int  # smallest k whose retention reaches min_variance

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "rank": self.rank,
            "singular_values": self.singular_values,
            "retention": self.retention,
            "effective_rank": self.effective_rank,
            "rank_at_threshold": self.rank_at_threshold,
        }


@dataclass(frozen=True)
class SqueezeResult:
    """Everything the squeeze analysis found for one adapter; `to_dict` is squeeze.json."""

    adapter_dir: str
    source_rank: int
    num_layers: int
    ranks: list[int]
    mean_retention: list[float]  # aligned with ranks
    min_retention: list[float]
    max_retention: list[float]
    recommended_rank: int
    min_variance: float
    min_layer: float | None
    layers: list[LayerSqueeze] = field(repr=False)
    # Retention at every k = 1..source_rank (mean, min, max over layers), for the plot.
    curve_mean: list[float] = field(repr=False)
    curve_min: list[float] = field(repr=False)
    curve_max: list[float] = field(repr=False)

    @property
    def mean_effective_rank(self) -> float:
        return float(np.mean([layer.effective_rank for layer in self.layers]))

    @property
    def max_effective_rank(self) -> float:
        return float(max(layer.effective_rank for layer in self.layers))

    def summary(self) -> dict[str, float | int]:
        return {
            "squeeze/recommended_rank": self.recommended_rank,
            "squeeze/source_rank": self.source_rank,
            "squeeze/min_variance_retention": self.min_variance,
            "squeeze/num_layers": self.num_layers,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "adapter_dir": self.adapter_dir,
            "method": "qr-core-svd (arXiv 2602.10993)",
            "source_rank": self.source_rank,
            "num_layers": self.num_layers,
            "min_variance_retention": self.min_variance,
            "min_layer_retention": self.min_layer,
            "recommended_rank": self.recommended_rank,
            "mean_effective_rank": self.mean_effective_rank,
            "table": [
                {"rank": k, "mean": m, "min": lo, "max": hi, "recommended": k == self.recommended_rank}
                for k, m, lo, hi in zip(
                    self.ranks, self.mean_retention, self.min_retention, self.max_retention, strict=True
                )
            ],
            "curve": {"mean": self.curve_mean, "min": self.curve_min, "max": self.curve_max},
            "layers": [layer.to_dict() for layer in self.layers],
        }


def squeeze_spectra(
    names: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    spectra: Sequence[np.ndarray],
    layer_ranks: Sequence[int],
    *,
    adapter_dir: str = "",
    ranks: Sequence[int] | None = None,
    min_variance: float = 0.95,
    min_layer: float | None = None,
) -> SqueezeResult:
    """The pure core of `analyze_adapter`: from each layer's singular values to a result."""
    if not spectra:
        raise SqueezeError("no LoRA layers to analyse")
    if not 0.0 < min_variance <= 1.0:
        raise SqueezeError(f"min_variance must be in (0, 1], got {min_variance}")
    if min_layer is not None and not 0.0 < min_layer <= 1.0:
        raise SqueezeError(f"min_layer must be in (0, 1], got {min_layer}")
    source_rank = max(layer_ranks)
    evaluated = select_ranks(source_rank, ranks)
    # A layer of lower rank (rank_pattern) retains everything past its own rank.
    curves = np.stack([retention_curve(s, source_rank) for s in spectra])  # [L, source_rank]
    idx = np.array(evaluated) - 1
    table = curves[:, idx]  # [L, len(evaluated)]
    mean, lo, hi = table.mean(axis=0), table.min(axis=0), table.max(axis=0)
    layers = [
        LayerSqueeze(
            name=name,
            shape=(int(shape[0]), int(shape[1])),
            rank=int(r),
            singular_values=[float(x) for x in s],
            retention=[float(x) for x in row],
            effective_rank=effective_rank(s),
            rank_at_threshold=rank_at(curve, min_variance),
        )
        for name, shape, s, r, row, curve in zip(names, shapes, spectra, layer_ranks, table, curves, strict=True)
    ]
    return SqueezeResult(
        adapter_dir=adapter_dir,
        source_rank=source_rank,
        num_layers=len(layers),
        ranks=evaluated,
        mean_retention=[float(x) for x in mean],
        min_retention=[float(x) for x in lo],
        max_retention=[float(x) for x in hi],
        recommended_rank=recommend_rank(evaluated, mean, lo, min_variance, min_layer),
        min_variance=float(min_variance),
        min_layer=None if min_layer is None else float(min_layer),
        layers=layers,
        curve_mean=[float(x) for x in curves.mean(axis=0)],
        curve_min=[float(x) for x in curves.min(axis=0)],
        curve_max=[float(x) for x in curves.max(axis=0)],
    )


def analyze_adapter(
    adapter_dir: str | Path,
    *,
    ranks: Sequence[int] | None = None,
    min_variance: float = 0.95,
    min_layer: float | None = None,
) -> SqueezeResult:
    """Analyse a PEFT LoRA adapter directory (or a run dir holding `adapter/`)."""
    adapter = load_adapter(adapter_dir)
    spectra = [lora_svd(p.a, p.b, vectors=False).s for p in adapter.pairs]
    return squeeze_spectra(
        [p.name for p in adapter.pairs],
        [(p.b.shape[0], p.a.shape[1]) for p in adapter.pairs],
        spectra,
        [p.rank for p in adapter.pairs],
        adapter_dir=str(adapter.path),
        ranks=ranks,
        min_variance=min_variance,
        min_layer=min_layer,
    )
