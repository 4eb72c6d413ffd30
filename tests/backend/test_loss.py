"""Loss and train_step: on-policy ratio 1, micro-batch equality, non-finite skip, LoRA moves."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from retrain.backend.local.logprobs import build_batch, completion_logprobs
from retrain.backend.local.optim import build_optimizer, build_scheduler
from retrain.backend.local.sampler import sample
from retrain.backend.local.step import forward_backward, policy_loss, token_weights, train_step
from retrain.config.schema import OptimizerConfig, TrainingConfig
from tests.backend.conftest import PROMPTS


def _rollouts(model, tok, *, temperature: float = 0.8, top_p: float = 0.9, eos_bump: float = 2.5):  # type: ignore[no-untyped-def]
    bump = torch.zeros(len(tok))
    bump[tok.eos_token_id] = eos_bump  # ragged lengths: some sequences stop early
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: out + bump)
    try:
        return sample(model, tok, PROMPTS, n_per_prompt=3, max_tokens=8, temperature=temperature,
                      top_p=top_p, seed=0, step=1)
    finally:
        hook.remove()


def _adv(r, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.random.default_rng(seed).normal(size=r.logprob_T.shape).astype(np.float32)


def test_on_policy_ratio_is_one(make_lora: Callable[..., tuple]) -> None:
    model, tok = make_lora()
    r = _rollouts(model, tok, eos_bump=0.0)
    batch = build_batch(r, list(range(r.num_sequences)), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        new_lp, ent = completion_logprobs(model, batch, temperature=r.temperature, top_p=r.top_p)
    ratio = torch.exp(new_lp - torch.from_numpy(r.logprob_T))
    assert float((ratio - 1).abs().max()) < 1e-4
    np.testing.assert_allclose(ent.numpy(), r.entropy_T, atol=1e-4)


def test_token_weights_hand_worked() -> None:
    lengths = np.array([1, 3])  # 4 tokens, 2 sequences, max_tokens 4
    np.testing.assert_allclose(token_weights(lengths, "token_mean", 4), [0.25] * 4)
    # sequence_mean: 1/(2*1) for seq 0, 1/(2*3) for each token of seq 1
    np.testing.assert_allclose(token_weights(lengths, "sequence_mean", 4), [0.5, 1 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(token_weights(lengths, "constant", 4), [1 / 8] * 4)


def test_policy_loss_clipping_hand_worked() -> None:
    # ratios e^0.5 = 1.6487 and e^-0.5 = 0.6065; eps 0.2: A=+1 on the first clips at 1.2
    # (min objective), A=-1 on the second clips at 0.8 -> per-token losses -1.2 and 0.8.
    new = torch.tensor([0.0, -1.0])
    old = torch.tensor([-0.5, -0.5])
    adv = torch.tensor([1.0, -1.0])
    w = torch.tensor([0.5, 0.5])
    parts = policy_loss(new, old, adv, w, clip_eps=0.2)
    assert parts.clipped == 2
    assert float(parts.loss) == pytest.approx(0.5 * (-1.2) + 0.5 * 0.8, abs=1e-6)
    unclipped = policy_loss(new, old, adv, w)
    assert float(unclipped.loss) == pytest.approx(0.5 * (-np.exp(0.5)) + 0.5 * np.exp(-0.5), abs=1e-6)
    # k3 at ref == new is 0
    assert policy_loss(new, old, adv, w, kl_beta=1.0, ref_logprob_T=new).kl_sum == 0.0


@pytest.mark.parametrize("agg", ["token_mean", "sequence_mean", "constant"])
def test_micro_batches_equal_full_batch(make_lora: Callable[..., tuple], agg: str) -> None:
    model, tok = make_lora()
    r = _rollouts(model, tok)
    assert len(set(np.diff(r.offsets).tolist())) > 1  # ragged
    adv = _adv(r)
    cfg = TrainingConfig(loss_agg=agg, max_tokens=8, kl_beta=0.05, clip_eps=0.2, clip_eps_high=0.3)
    grads, losses = [], []
    for mb in (0, 5):
        model.zero_grad(set_to_none=True)
        stats = forward_backward(model, r, adv, cfg_training=cfg, micro_batch_size=mb)
        losses.append(stats["loss"])
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert float((grads[0] - grads[1]).abs().max()) < 1e-5


def _lora_snapshot(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_train_step_moves_lora_and_reports(make_lora: Callable[..., tuple]) -> None:
    model, tok = make_lora(init_b=False)
    optimizer, scheduler = build_optimizer(model, OptimizerConfig(lr=1e-2), max_steps=10)
    r = _rollouts(model, tok, eos_bump=0.0)  # sampled by the same model the step scores with
    before = _lora_snapshot(model)
    m = train_step(model, optimizer, scheduler, r, _adv(r), cfg_training=TrainingConfig(max_tokens=8),
                   cfg_optimizer=OptimizerConfig(lr=1e-2), micro_batch_size=4)
    after = _lora_snapshot(model)
    assert m["skipped"] == 0.0 and np.isfinite(m["loss"]) and m["grad_norm"] > 0
    assert m["ratio_max_dev"] < 1e-4 and m["trained_tokens"] == r.num_generated_tokens
    assert m["lr"] == pytest.approx(1e-2)
    # peft initialises B = 0, so the first step moves B (A's gradient is B^T-weighted, i.e. 0)
    assert all(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)


def test_non_finite_step_is_skipped(make_lora: Callable[..., tuple]) -> None:
    model, tok = make_lora()
    optimizer, scheduler = build_optimizer(model, OptimizerConfig(), max_steps=10)
    r = _rollouts(model, tok)
    adv = _adv(r)
    adv[3] = np.nan
    before = _lora_snapshot(model)
    m = train_step(model, optimizer, scheduler, r, adv, cfg_training=TrainingConfig(max_tokens=8),
                   cfg_optimizer=OptimizerConfig(), micro_batch_size=0)
    assert m["skipped"] == 1.0
    after = _lora_snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert len(optimizer.state) == 0


def _lrs(cfg: OptimizerConfig, max_steps: int, n: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, cfg, max_steps)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedule() -> None:
    # transformers' warm-up: s / warmup at step s; then cosine from 1 to the floor over steps 4..12.
    cfg = OptimizerConfig(warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    lrs = _lrs(cfg, 12, 13)
    assert lrs[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lrs[8] == pytest.approx(0.55)  # halfway: 0.1 + 0.9 * 0.5
    assert lrs[12] == pytest.approx(0.1)
    assert _lrs(OptimizerConfig(), 12, 8) == [1.0] * 8
    assert _lrs(OptimizerConfig(warmup_steps=2), 12, 4) == [0.0, 0.5, 1.0, 1.0]


def test_lr_schedule_resumes_exactly() -> None:
    cfg = OptimizerConfig(warmup_steps=3, schedule="cosine", min_lr_ratio=0.2)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_scheduler(opt2, cfg, 10)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr() == [_lrs(cfg, 10, 6)[5]]


def test_truncated_importance_weights_by_hand() -> None:
    # trainer probs 0.5, 0.2; sampler probs 0.25, 0.4: pi_train / pi_sampler = 2, 0.5; cap 1.5
    new = torch.log(torch.tensor([0.5, 0.2], dtype=torch.float64)).requires_grad_()
    old = torch.log(torch.tensor([0.25, 0.4], dtype=torch.float64))
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    parts = policy_loss(new, old, adv, w, is_cap=1.5)
    # weights min(2, 1.5) = 1.5 and 0.5; the ratio to the trainer's own log-probs is 1
    assert float(parts.loss.detach()) == pytest.approx(0.5 * -1.5 + 0.5 * 0.5)
    parts.loss.backward()
    assert new.grad is not None
    assert new.grad.tolist() == pytest.approx([0.5 * -1.0 * 1.5, 0.5 * 1.0 * 0.5])
    assert parts.is_weight_sum == pytest.approx(2.0) and parts.is_truncated == 1
    assert parts.lp_diff_sum == pytest.approx(2 * math.log(2)) and parts.lp_diff_max == pytest.approx(math.log(2))
    # without is_cap the sampler's log-probs are the PPO "old" ones: ratio 2 and 0.5, no cap
    plain = policy_loss(new.detach(), old, adv, w)
    assert float(plain.loss) == pytest.approx(0.5 * -2.0 + 0.5 * 0.5)
