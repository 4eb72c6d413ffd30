"""Checkpoints: exact resume (adapter, optimizer, scheduler, RNG), pruning, final adapter."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel

from retrain.backend.local.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_final_adapter,
)
from retrain.backend.local.loss import train_step
from retrain.backend.local.optim import build_optimizer
from retrain.backend.local.sampler import sample
from retrain.config.schema import OptimizerConfig, TrainingConfig
from tests.backend.conftest import PROMPTS

OPT = OptimizerConfig(lr=5e-3, warmup_steps=2, schedule="cosine")
TRAIN = TrainingConfig(max_tokens=6)


def _step(model, tok, opt, sched, step: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    r = sample(model, tok, PROMPTS, n_per_prompt=2, max_tokens=6, temperature=1.0, top_p=1.0,
               seed=5, step=step)
    adv = np.random.default_rng(step).normal(size=r.logprob_T.shape).astype(np.float32)
    return train_step(model, opt, sched, r, adv, cfg_training=TRAIN, cfg_optimizer=OPT,
                      micro_batch_size=0)


def test_resume_is_exact(make_lora: Callable[..., tuple], tmp_path: Path) -> None:
    model, tok = make_lora(init_b=False)
    opt, sched = build_optimizer(model, OPT, max_steps=6)
    for s in range(2):
        _step(model, tok, opt, sched, s)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path, 2, model, opt, sched, {"step": 2, "cursor": 16}, keep=2)
    after_save = (random.random(), np.random.rand(), torch.rand(1).item())
    cont = [_step(model, tok, opt, sched, s) for s in (2, 3)]
    final_ids = sample(model, tok, PROMPTS, n_per_prompt=2, max_tokens=6, temperature=1.0,
                       top_p=1.0, seed=5, step=4).completion_ids

    fresh, tok2 = make_lora(seed=99, init_b=False)  # different init: load must overwrite it
    opt2, sched2 = build_optimizer(fresh, OPT, max_steps=6)
    state = load_checkpoint(ckpt, fresh, opt2, sched2)
    assert state == {"step": 2, "cursor": 16}
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == after_save
    resumed = [_step(fresh, tok2, opt2, sched2, s) for s in (2, 3)]
    for a, b in zip(cont, resumed, strict=True):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"] and a["grad_norm"] == b["grad_norm"]
    assert sample(fresh, tok2, PROMPTS, n_per_prompt=2, max_tokens=6, temperature=1.0, top_p=1.0,
                  seed=5, step=4).completion_ids == final_ids
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


def test_keep_and_latest(make_lora: Callable[..., tuple], tmp_path: Path) -> None:
    model, _ = make_lora()
    opt, sched = build_optimizer(model, OPT, max_steps=6)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, {"step": step}, keep=2)
    (tmp_path / "checkpoints" / ".step_000004.tmp-xyz").mkdir()  # a kill mid-write
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000003"
    assert latest_checkpoint(tmp_path / "nothing") is None
    again = save_checkpoint(tmp_path, 3, model, opt, sched, {"step": 3}, keep=2)  # same step
    assert (again / "adapter_model.safetensors").exists()


def test_final_adapter_loads_with_peft(make_lora: Callable[..., tuple], tiny_dir: Path,
                                       tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, _ = make_lora()
    out = save_final_adapter(tmp_path, model)
    assert out == tmp_path / "adapter" and (out / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    loaded = PeftModel.from_pretrained(base, out)
    ids = torch.tensor([[1, 20, 21, 15]])
    with torch.no_grad():
        np.testing.assert_allclose(loaded(input_ids=ids).logits.numpy(),
                                   model(input_ids=ids).logits.numpy(), atol=1e-5)
