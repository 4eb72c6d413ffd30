"""Compression round trip through peft on a tiny Llama built from a config (no download)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from retrain.squeeze import analyze_adapter, compress_adapter  # noqa: E402
from retrain.squeeze.compress import scaled_alpha  # noqa: E402

RANK = 8


@pytest.fixture(scope="module")
def base_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=64, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def input_ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits  # [B, T, V]


def _train_like_adapter(
    base: LlamaForCausalLM, path: Path, *, use_rslora: bool = False, planted_rank: int | None = None
) -> torch.nn.Module:
    """A LoRA adapter with random (non-zero) factors, optionally of planted rank, saved to `path`."""
    config = LoraConfig(r=RANK, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                        use_rslora=use_rslora, lora_dropout=0.0)
    model = get_peft_model(copy.deepcopy(base), config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        if planted_rank is not None:
            for name, param in model.named_parameters():
                if "lora_B" in name:  # B [out, r] -> B[:, :k] @ M [k, r]: rank B A <= k
                    mix = torch.randn((planted_rank, RANK), generator=gen)
                    param.copy_(param[:, :planted_rank] @ mix)
    model.eval()
    model.save_pretrained(str(path))
    return model


def _load(base: LlamaForCausalLM, path: Path) -> torch.nn.Module:
    return PeftModel.from_pretrained(copy.deepcopy(base), str(path)).eval()


def test_source_rank_round_trip(base_model, input_ids, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = _train_like_adapter(base_model, tmp_path / "src")
    want = _logits(original, input_ids)
    assert not torch.allclose(want, _logits(base_model, input_ids), atol=1e-3)  # LoRA matters

    out = compress_adapter(tmp_path / "src", RANK, tmp_path / "same")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (RANK, 16)
    torch.testing.assert_close(_logits(_load(base_model, out), input_ids), want, atol=1e-5, rtol=1e-5)

    # truncating a full-rank random adapter does change the output
    low = compress_adapter(tmp_path / "src", 2, tmp_path / "low")
    assert json.loads((low / "adapter_config.json").read_text())["r"] == 2
    assert not torch.allclose(_logits(_load(base_model, low), input_ids), want, atol=1e-4)


def test_planted_rank_k_compression_is_exact(base_model, input_ids, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = _train_like_adapter(base_model, tmp_path / "src", planted_rank=3)
    want = _logits(original, input_ids)
    result = analyze_adapter(tmp_path / "src", ranks=[1, 2, 3, 4, 8])
    assert result.recommended_rank == 3  # every layer is exactly rank 3
    np.testing.assert_allclose(result.mean_retention[2:], 1.0, atol=1e-9)
    out = compress_adapter(tmp_path / "src", 3, tmp_path / "r3")
    config = json.loads((out / "adapter_config.json").read_text())
    # alpha/r kept: 16/8 = 2 = 6/3
    assert (config["r"], config["lora_alpha"]) == (3, 6)
    torch.testing.assert_close(_logits(_load(base_model, out), input_ids), want, atol=1e-5, rtol=1e-5)


def test_rslora_keeps_alpha_over_sqrt_r(base_model, input_ids, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = _train_like_adapter(base_model, tmp_path / "src", use_rslora=True, planted_rank=2)
    want = _logits(original, input_ids)
    out = compress_adapter(tmp_path / "src", 2, tmp_path / "r2")
    config = json.loads((out / "adapter_config.json").read_text())
    # alpha/√r kept: 16/√8 = 5.657 = alpha'/√2 -> alpha' = 16 · √(2/8) = 8
    assert config["use_rslora"] is True
    assert config["lora_alpha"] == pytest.approx(8.0)
    torch.testing.assert_close(_logits(_load(base_model, out), input_ids), want, atol=1e-5, rtol=1e-5)


def test_scaled_alpha() -> None:
    assert scaled_alpha(16, 8, 4, use_rslora=False) == 8
    assert scaled_alpha(16, 8, 3, use_rslora=False) == 6
    assert scaled_alpha(10, 8, 3, use_rslora=False) == pytest.approx(3.75)
    assert scaled_alpha(16, 8, 4, use_rslora=True) == pytest.approx(16 * math.sqrt(0.5))
