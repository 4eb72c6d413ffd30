"""Char tokenizer round trip, model loading errors, LoRA targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from retrain.backend.local.lora import LoraTargetError, apply_lora, lora_parameter_counts
from retrain.backend.local.model import ModelLoadError, load_model_and_tokenizer
from retrain.backend.local.tiny import build_char_tokenizer
from retrain.config.schema import LoraConfig
from retrain.errors import RetrainError


def test_tokenizer_round_trip_keeps_spaces(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "What is  12 + 34 ?\nAnswer: 46"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    ids = again(text)["input_ids"]
    assert ids[0] == again.bos_token_id
    assert len(ids) == len(text) + 1  # one token per character, plus <bos>
    assert again.decode(ids, skip_special_tokens=True) == text
    assert again.padding_side == "left"
    assert (again.pad_token, again.eos_token) == ("<pad>", "<eos>")
    batch = again(["1+1=", "12+34="], padding=True)["input_ids"]
    assert batch[0][:2] == [again.pad_token_id] * 2  # left padded


def test_load_model_and_tokenizer(tiny_dir: Path) -> None:
    model, tok, device = load_model_and_tokenizer(
        str(tiny_dir), dtype="auto", device="auto", local_files_only=True, trust_remote_code=False)
    assert device.type == "cpu" and not model.training
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_missing_models_are_clear_errors(tmp_path: Path) -> None:
    kw = dict(dtype="float32", device="cpu", local_files_only=True, trust_remote_code=False)
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model_and_tokenizer(str(tmp_path / "nope"), **kw)
    with pytest.raises(RetrainError, match="'no-such-org/no-such-model' is not in the Hugging Face cache"):
        load_model_and_tokenizer("no-such-org/no-such-model", **kw)


def test_lora_targets_filtered_and_counted(tiny_dir: Path) -> None:
    kw = dict(dtype="float32", device="cpu", local_files_only=True, trust_remote_code=False)
    base, _, _ = load_model_and_tokenizer(str(tiny_dir), **kw)
    with pytest.raises(LoraTargetError, match=r"\['c_attn'\] not found"):  # a given list must exist
        apply_lora(base, LoraConfig(rank=4, target_modules=("q_proj", "v_proj", "c_attn")))
    model = apply_lora(base, LoraConfig(rank=4, target_modules=("q_proj", "v_proj")))
    counts = lora_parameter_counts(model)
    # 2 layers x 2 modules x (A: 64x4 + B: 4x64)
    assert counts["trainable"] == 2 * 2 * (64 * 4 + 4 * 64)
    assert counts["total"] == counts["base"] + counts["trainable"]
    base2, _, _ = load_model_and_tokenizer(str(tiny_dir), **kw)
    with pytest.raises(LoraTargetError, match="c_attn"):
        apply_lora(base2, LoraConfig(target_modules=("c_attn", "c_proj")))
