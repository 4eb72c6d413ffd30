"""The built-in hooks' math on small hand-worked arrays (arithmetic in the comments), plus the
invariants the r x r shortcuts must keep against the full d_out x d_in matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrain.algo.pipeline import AdvantageTrace, TokenBatch, compute_advantages
from retrain.backend.base import LoraArrays, Rollouts
from retrain.hooks.base import PostAdvantages, PostSample, PostStep
from retrain.hooks.builtin import (
    Adv,
    Groups,
    Lengths,
    Norms,
    Rank,
    delta_norm,
    effective_rank,
    group_counts,
    singular_values,
    update_norm,
)

A = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)  # [r=2, d_in=2]
B = np.array([[3.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # [d_out=2, r=2]


def test_delta_norm_hand_worked() -> None:
    # B@A = diag(3, 2); ‖·‖_F = sqrt(9 + 4) = sqrt(13); scale 0.5 -> 0.5·sqrt(13) = 1.80278
    assert delta_norm(LoraArrays(a=A, b=B, scale=0.5)) == pytest.approx(0.5 * math.sqrt(13))


def test_update_norm_hand_worked() -> None:
    # ΔW0 = 0.5·I@A = 0.5·diag(1, 2); ΔW1 = 0.5·diag(3, 2); ΔW1 - ΔW0 = diag(1, 0) -> norm 1
    prev = LoraArrays(a=A, b=np.eye(2, dtype=np.float32), scale=0.5)
    cur = LoraArrays(a=A, b=B, scale=0.5)
    assert update_norm(prev, cur) == pytest.approx(1.0)
    assert update_norm(cur, cur) == pytest.approx(0.0, abs=1e-6)
    zero = LoraArrays(a=A, b=np.zeros_like(B), scale=0.5)  # peft's init: B = 0
    assert update_norm(zero, cur) == pytest.approx(delta_norm(cur))


def test_effective_rank_hand_worked() -> None:
    # σ(0.5·diag(3, 2)) = (1.5, 1); p = (0.6, 0.4); H = -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.67301;
    # exp(H) = 1.96013
    sv = singular_values(LoraArrays(a=A, b=B, scale=0.5))
    assert sv == pytest.approx([1.5, 1.0])
    assert effective_rank(sv) == pytest.approx(math.exp(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4))))
    assert effective_rank(np.array([2.0, 2.0, 2.0])) == pytest.approx(3.0)  # k equal directions: k
    assert effective_rank(np.array([5.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.zeros(4)) == 0.0  # a zero update (B = 0 at init)


def test_shortcuts_match_the_full_matrices() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        a0, a1 = rng.normal(size=(2, 4, 32))
        b0, b1 = rng.normal(size=(2, 24, 4))
        x0, x1 = LoraArrays(a=a0, b=b0, scale=2.0), LoraArrays(a=a1, b=b1, scale=0.5)
        w0, w1 = 2.0 * b0 @ a0, 0.5 * b1 @ a1  # [24, 32]
        assert delta_norm(x1) == pytest.approx(np.linalg.norm(w1))
        assert update_norm(x0, x1) == pytest.approx(np.linalg.norm(w1 - w0))
        assert singular_values(x1) == pytest.approx(np.linalg.svd(w1, compute_uv=False)[:4])


def test_groups_hand_worked() -> None:
    # group 0 all correct, group 1 all wrong, group 2 mixed: 1 informative of 3
    reward_N = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    group_N = np.array([0, 0, 1, 1, 2, 2])
    assert group_counts(reward_N, group_N) == {"all_correct": 1.0, "all_wrong": 1.0,
                                               "informative": 1.0, "informative_frac": 1 / 3}


def _rollouts(lengths: list[int], truncated: list[bool]) -> Rollouts:
    t = sum(lengths)
    return Rollouts(prompt_ids=[[1]] * len(lengths), completion_ids=[[2] * n for n in lengths],
                    completion_text=["x" * n for n in lengths], truncated=np.array(truncated),
                    logprob_T=np.full(t, -0.5, np.float32), entropy_T=np.full(t, 0.3, np.float32),
                    offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    token_spans=[np.zeros((n, 2), np.int64) for n in lengths], n_per_prompt=2,
                    temperature=1.0, top_p=1.0, num_generated_tokens=t)


def test_adv_hook_on_a_traced_step() -> None:
    # rewards (1, 0) in one group: grpo's group std (ddof 1) is sqrt(0.5) = 0.70711, so each
    # sequence gets ±0.5 / 0.70711 = ±a with a = 0.70711; tokens: sequence 0 has 2, sequence 1
    # has 1 -> episode adv_T = (a, a, -a): mean a/3 = 0.23570, abs_mean a, min -a, max a.
    # gtpo at beta 0 weighs every token 1 (changes none); hicra on planning token 0:
    # a + 0.2·|a| = 1.2·a = 0.84853, one token of three changed.
    offsets = np.array([0, 2, 3])
    batch = TokenBatch(logprob_T=np.array([-0.1, -0.2, -0.3]), entropy_T=None,
                       planning_T=np.array([True, False, False]), offsets=offsets,
                       reward_N=np.array([1.0, 0.0]), group_N=np.array([0, 0]))
    trace = AdvantageTrace()
    adv_T, _ = compute_advantages(batch, advantage_mode="grpo", scale="group", eps=1e-6,
                                  transform_mode="gtpo_hicra", uncertainty_kind="surprisal",
                                  gtpo_beta=0.0, gtpo_max_weight=None, hicra_alpha=0.2,
                                  sepa_lambda=0.0, trace=trace)
    out = Adv().observe(PostAdvantages(1, _rollouts([2, 1], [False, False]), batch.reward_N,
                                       batch.group_N, adv_T, batch.planning_T, trace))
    assert isinstance(out, dict)
    a = 0.5 / math.sqrt(0.5)
    assert out["episode.mean"] == pytest.approx(a / 3, rel=1e-5)
    assert out["episode.abs_mean"] == pytest.approx(a, rel=1e-5)
    assert (out["episode.min"], out["episode.max"]) == pytest.approx((-a, a), rel=1e-5)
    assert out["gtpo.changed_frac"] == 0.0
    assert out["hicra.changed_frac"] == pytest.approx(1 / 3)
    assert out["hicra.max"] == pytest.approx(1.2 * a, rel=1e-5)
    assert "episode.changed_frac" not in out and "sepa.changed_frac" not in out
    assert set(out) == {f"{s}.{k}" for s in ("episode", "gtpo", "hicra")
                        for k in ("mean", "std", "abs_mean", "min", "max")} | \
        {"gtpo.changed_frac", "hicra.changed_frac"}


def test_lengths_hand_worked() -> None:
    # lengths (2, 0, 4, 2): mean 2, median 2, max 4, min 0; one truncated of 4; one empty
    out = Lengths().observe(PostSample(1, _rollouts([2, 0, 4, 2], [False, False, True, False]), 4))
    assert out == {"mean": 2.0, "min": 0.0, "p50": 2.0, "max": 4.0, "truncated_frac": 0.25,
                   "empty_frac": 0.25}


def test_norms_step_norm_follows_the_previous_call_and_rank_reads_once() -> None:
    calls: list[int] = []
    arrays = [{"m": LoraArrays(a=A, b=np.eye(2, dtype=np.float32), scale=0.5)},
              {"m": LoraArrays(a=A, b=B, scale=0.5)}]

    def adapter(i: int):  # noqa: ANN202
        return lambda: calls.append(i) or arrays[i]

    norms = Norms()
    first = norms.observe(PostStep(1, {}, {}, adapter(0)))
    second = norms.observe(PostStep(2, {}, {}, adapter(1)))
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["m.step_norm"] == 0.0  # nothing to compare with yet
    assert second["m.step_norm"] == pytest.approx(1.0)  # see test_update_norm_hand_worked
    assert second["m.a_norm"] == pytest.approx(math.sqrt(5))  # ‖diag(1, 2)‖_F
    assert second["m.b_norm"] == pytest.approx(math.sqrt(10))  # ‖diag(3, 1)‖_F
    rank = Rank(every=5)
    assert rank.every == 5
    out = rank.observe(PostStep(5, {}, {}, adapter(1)))
    assert isinstance(out, dict) and out["m.top_sv_share"] == pytest.approx(0.6)


def test_groups_hook_reads_the_payload() -> None:
    out = Groups().observe(PostAdvantages(1, _rollouts([1, 1], [False, False]), np.array([0.0, 0.0]),
                                          np.array([0, 0]), np.zeros(2), np.zeros(2, bool), None))
    assert out == {"all_correct": 0.0, "all_wrong": 1.0, "informative": 0.0, "informative_frac": 0.0}
