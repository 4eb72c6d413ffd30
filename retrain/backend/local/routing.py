"""Per-row LoRA routing: one forward pass of the shared base model in which each block of rows
goes through its own run's adapter (a pack of runs, `pack.py`).

Data flow: Pack ─▶ **route(model, blocks)** ─▶ sampler.decode_chunk / logprobs.completion_logprobs.

peft can route rows to adapters itself (`forward(adapter_names=...)`), but it refuses in training
mode and loops over adapters in every layer. Here the rows of a pack are contiguous blocks, one
per run, in a fixed order. When every block has the same number of rows (runs of one campaign
usually do), each adapted layer adds its LoRA update for all runs with two batched matmuls over
stacked weights:

    x [K·n, L, d_in] ─reshape▶ [K, n·L, d_in] ─bmm Aᵀ [K, d_in, r]▶ ─bmm (s·B)ᵀ [K, r, d_out]▶ + base(x)

Blocks of unequal size take one pair of matmuls per block. Gradients reach each run's own A and
B only through its rows, so one backward over the pack's summed losses gives every run the
gradient of its own loss. LoRA dropout is not applied: packs hold only runs with dropout 0
(`packable` in pack.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear


def lora_layers(model: torch.nn.Module) -> list[LoraLinear]:
    return [m for m in model.modules() if isinstance(m, LoraLinear)]


@contextmanager
def route(model: torch.nn.Module, blocks: list[tuple[str, int]]) -> Iterator[None]:
    """Within the block, rows [sum(n_<k), sum(n_<=k)) of every forward use adapter k of
    `blocks` = [(adapter name, rows), ...]. Not re-entrant; one pack per model."""
    blocks = [(name, n) for name, n in blocks if n > 0]
    layers = lora_layers(model)
    for layer in layers:
        layer.forward = _routed_forward(layer, blocks)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # back to the class's forward


def _routed_forward(layer: LoraLinear, blocks: list[tuple[str, int]]) -> Any:
    names = [name for name, _ in blocks]
    sizes = [n for _, n in blocks]
    equal = len(set(sizes)) == 1
    frozen: list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]] = []

    def weights() -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        if frozen:  # sampling: the weights cannot change within one routed call
            return frozen[0]
        a_w = [_weight(layer.lora_A[n]) for n in names]
        b_w = [_weight(layer.lora_B[n]) * layer.scaling[n] for n in names]
        stacked = (a_w, b_w, torch.stack(a_w).transpose(1, 2), torch.stack(b_w).transpose(1, 2))
        if not torch.is_grad_enabled():
            frozen.append(stacked)
        return stacked

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = layer.base_layer(x, *args, **kwargs)  # [N, L, d_out]
        if layer.disable_adapters or not names:
            return result  # the KL reference: the base model alone
        a_w, b_w, a_t, b_t = weights()  # a_t [K, d_in, r], b_t [K, r, d_out] (scaled)
        xc = x.to(a_w[0].dtype)
        if equal:
            xs = xc.reshape(len(names), -1, xc.shape[-1])  # [K, n·L, d_in]
            delta = torch.bmm(torch.bmm(xs, a_t), b_t)  # [K, n·L, d_out]
            return result + delta.reshape(result.shape).to(result.dtype)
        parts = []
        lo = 0
        for k, n in enumerate(sizes):
            parts.append((xc[lo:lo + n] @ a_w[k].T) @ b_w[k].T)
            lo += n
        return result + torch.cat(parts, dim=0).to(result.dtype)

    return forward


def _weight(module: torch.nn.Module) -> torch.Tensor:
    w = module.weight
    assert isinstance(w, torch.Tensor)
    return w
