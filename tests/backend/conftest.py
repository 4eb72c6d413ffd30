"""Fixtures of the backend tests: a random-weight tiny Llama with the char tokenizer, built in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from retrain.backend.local.lora import apply_lora
from retrain.backend.local.model import load_model_and_tokenizer
from retrain.backend.local.tiny import build_char_tokenizer, build_random_model
from retrain.config.schema import LoraConfig

PROMPTS = ["12+34=", "5+77=", "90+9=", "61+18="]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight `tiny` preset saved with save_pretrained (model + tokenizer)."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tiny-random")
    tokenizer = build_char_tokenizer()
    model = build_random_model("tiny", tokenizer, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def make_lora(tiny_dir: Path) -> Callable[..., tuple]:
    """Fresh (peft model, tokenizer) with LoRA; B is randomised so the adapter is not a no-op."""

    def make(seed: int = 0, rank: int = 4, init_b: bool = True) -> tuple:
        base, tokenizer, _ = load_model_and_tokenizer(
            str(tiny_dir), dtype="float32", device="cpu", local_files_only=True,
            trust_remote_code=False)
        torch.manual_seed(seed)
        model = apply_lora(base, LoraConfig(rank=rank, alpha=2.0 * rank))
        if init_b:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, 0.05)
        return model, tokenizer

    return make
