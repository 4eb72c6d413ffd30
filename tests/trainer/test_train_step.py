"""One optimizer step of the real trainer on a fresh sampled batch: the on-policy importance ratio is
1, and a non-finite step leaves the adapter and optimizer untouched (also inside the step loop)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from retrain.backend.local.engine import LocalBackend
from retrain.config import load_config
from retrain.config.schema import RetrainConfig
from retrain.tasks.base import Task
from retrain.trainer.setup import build_engine
from retrain.trainer.stages import advantage_stage, reward_stage, sample_stage

from .conftest import read_jsonl, small_sets


@dataclass
class Ctx:
    cfg: RetrainConfig
    task: Task
    backend: LocalBackend

    @property
    def model(self) -> Any:
        return self.backend.model

    @property
    def optimizer(self) -> Any:
        return self.backend.optimizer

    @property
    def scheduler(self) -> Any:
        return self.backend.scheduler


def _context(base_config: Path, run_dir: Path, *sets: str) -> Ctx:
    cfg = load_config(base_config, [*small_sets(), *sets])
    task, backend, _ = build_engine(cfg, run_dir, resume=False, progress=False)
    assert isinstance(backend, LocalBackend)
    return Ctx(cfg, task, backend)


def _fresh_batch(ctx: Ctx, step: int = 1) -> tuple[Any, np.ndarray]:
    """Sample B x G completions from the current policy; GRPO advantages of their rewards."""
    t = ctx.cfg.training
    problems = ctx.task.train_problems(0, t.batch_size)
    rollouts = sample_stage(ctx.backend, ctx.cfg, problems, step=step, chunk_size=None).rollouts
    rewarded = reward_stage(ctx.task, problems, rollouts.completion_text, t.group_size)
    adv = advantage_stage(ctx.cfg, rollouts, rewarded.reward_N, sepa_lambda=0.0)
    return rollouts, adv.adv_T


def _step(ctx: Ctx, rollouts: Any, adv_T: np.ndarray, micro_batch_size: int = 0) -> dict[str, float]:
    return ctx.backend.train_step(rollouts, adv_T, micro_batch_size=micro_batch_size)


def _lora(ctx: Ctx) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("temperature", "top_p", "micro"), [
    (1.0, 1.0, 0),  # the defaults, whole batch in one forward
    (0.7, 0.9, 3),  # tempered nucleus sampling, ragged micro-batches (padding differs from sampling)
])
def test_on_policy_ratio_is_one(base_config: Path, tiny_model: Path, tmp_path: Path,
                                temperature: float, top_p: float, micro: int) -> None:
    ctx = _context(base_config, tmp_path, f"training.temperature={temperature}",
                   f"training.top_p={top_p}")
    rollouts, adv_T = _fresh_batch(ctx)
    assert rollouts.num_generated_tokens > 0 and np.abs(adv_T).sum() > 0  # something to learn
    before = _lora(ctx)
    m = _step(ctx, rollouts, adv_T, micro)
    assert m["ratio_max_dev"] < 1e-4
    assert m["clip_frac"] == 0.0 and m["skipped"] == 0.0
    assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
    assert m["trained_tokens"] == rollouts.num_generated_tokens
    after = _lora(ctx)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_non_finite_step_is_skipped_and_changes_nothing(base_config: Path, tiny_model: Path,
                                                        tmp_path: Path) -> None:
    ctx = _context(base_config, tmp_path)
    rollouts, adv_T = _fresh_batch(ctx)
    bad = adv_T.copy()
    bad[len(bad) // 2] = np.nan
    before = _lora(ctx)
    lr_before = ctx.scheduler.get_last_lr()
    m = _step(ctx, rollouts, bad)
    assert m["skipped"] == 1.0
    assert not math.isfinite(m["loss"]) or not math.isfinite(m["grad_norm"])
    after = _lora(ctx)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in ctx.model.parameters())
    assert ctx.optimizer.state_dict()["state"] == {}  # AdamW moments untouched (never stepped)
    assert ctx.scheduler.get_last_lr() == lr_before  # constant schedule: same LR, one step later
    assert ctx.scheduler.last_epoch == 1

    # the same batch with finite advantages trains normally afterwards
    m = _step(ctx, rollouts, adv_T)
    assert m["skipped"] == 0.0
    assert any(not torch.equal(before[n], p) for n, p in _lora(ctx).items())


def test_an_update_that_makes_a_weight_non_finite_is_rolled_back(base_config: Path, tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    """An AdamW update that leaves an inf in the adapter (simulated by poisoning one weight after
    the real step), or that torch refuses (lr = 1e300 overflows float32), is undone: weights and
    optimizer state are as before, and the step counts as skipped."""
    ctx = _context(base_config, tmp_path)
    rollouts, adv_T = _fresh_batch(ctx)
    before = _lora(ctx)
    real_step = ctx.optimizer.step

    def overflowing_step(*args: Any, **kwargs: Any) -> Any:
        out = real_step(*args, **kwargs)
        with torch.no_grad():
            next(p for p in ctx.model.parameters() if p.requires_grad).view(-1)[0] = math.inf
        return out

    ctx.optimizer.step = overflowing_step  # type: ignore[method-assign]
    m = _step(ctx, rollouts, adv_T)
    assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])  # the batch itself was fine
    assert m["skipped"] == 1.0 and m["rolled_back"] == 1.0
    after = _lora(ctx)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert ctx.optimizer.state_dict()["state"] == {}  # the first step's moments are gone again
    ctx.optimizer.step = real_step  # type: ignore[method-assign]

    for group in ctx.optimizer.param_groups:
        group["lr"] = 1e300
    m = _step(ctx, rollouts, adv_T)
    assert m["skipped"] == 1.0 and m["rolled_back"] == 1.0
    assert all(torch.equal(before[n], p) for n, p in _lora(ctx).items())

    # with a sane learning rate the same model trains: the rollback left nothing behind
    for group in ctx.optimizer.param_groups:
        group["lr"] = 1e-3
    m = _step(ctx, rollouts, adv_T)
    assert m["skipped"] == 0.0 and m["rolled_back"] == 0.0
    assert all(bool(torch.isfinite(p).all()) for p in _lora(ctx).values())


@pytest.mark.slow
def test_consecutive_skipped_steps_fail_the_run_with_the_reason(base_config: Path, tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    """lr = 1e30 makes one finite but absurd update; every later step has a NaN loss. After
    training.max_skipped_steps (3 here) such steps in a row the run fails, says why, and
    leaves no non-finite weights on disk."""
    import json

    from retrain.errors import DivergedError
    from retrain.trainer.loop import train_run

    cfg = load_config(base_config, [*small_sets(), "training.max_steps=10", "optimizer.lr=1e30",
                                    "training.max_skipped_steps=3", "training.save_every=1"])
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"steps 2-4 made no update.*optimizer\.lr"):
        train_run(cfg, run, console_mode="none")
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["skipped_step"] for r in rows[1:]] == [False, True, True, True]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "training diverged" in summary["error"]
    assert not (run / "adapter").exists()  # no final adapter for a failed run
    from safetensors.torch import load_file

    for ckpt in (run / "checkpoints").iterdir():
        weights = load_file(ckpt / "adapter_model.safetensors")
        assert all(bool(torch.isfinite(w).all()) for w in weights.values())


@pytest.mark.slow
def test_loop_logs_a_skipped_step_and_keeps_the_adapter(base_config: Path, tiny_model: Path,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through train_run: NaN advantages at step 2 → skipped_step true, checkpoint 2 == checkpoint 1,
    and step 3 trains again."""
    from safetensors.torch import load_file

    from retrain.trainer import stages
    from retrain.trainer.loop import train_run

    real = stages.advantage_stage
    calls = {"n": 0}

    def nan_at_step_two(*args: Any, **kwargs: Any) -> stages.Advantaged:
        adv = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            adv = dataclasses.replace(adv, adv_T=np.full_like(adv.adv_T, np.nan))
        return adv

    monkeypatch.setattr(stages, "advantage_stage", nan_at_step_two)
    cfg = load_config(base_config, [*small_sets(), "training.save_every=1", "training.keep_checkpoints=5"])
    result = train_run(cfg, tmp_path / "run", console_mode="none")
    assert result.status == "done" and result.steps_done == 3
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["skipped_step"] for r in rows[1:]] == [False, True, False]
    assert math.isfinite(rows[1]["loss"]) and math.isfinite(rows[3]["loss"])
    ckpts = tmp_path / "run" / "checkpoints"
    w1, w2, w3 = (load_file(ckpts / f"step_{s:06d}" / "adapter_model.safetensors") for s in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w2[k], w3[k]) for k in w2)
