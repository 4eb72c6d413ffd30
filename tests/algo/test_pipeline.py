"""compute_advantages end to end: stage order, metrics contract, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrain.algo.modes import TRANSFORM_MODES
from retrain.algo.pipeline import TokenBatch, compute_advantages

REQUIRED = (
    "exec_surprisal_mean", "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var",
    "exec_entropy_mean", "exec_entropy_var", "plan_entropy_mean", "plan_entropy_var",
    "num_groups", "num_informative_groups", "num_all_correct_groups", "num_all_wrong_groups",
    "adv_mean", "adv_abs_mean",
)


def kwargs(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(advantage_mode="maxrl", scale="group", eps=1e-6,
                                   transform_mode="gtpo_sepa_hicra", uncertainty_kind="surprisal",
                                   gtpo_beta=0.5, gtpo_max_weight=None, hicra_alpha=0.5,
                                   sepa_lambda=0.5)
    base.update(kw)
    return base


def small_batch(entropy: bool = False) -> TokenBatch:
    # group 0: completion 0 (reward 1) tokens h = [1, 3, 2(plan)], completion 1 (reward 0) [2]
    # group 1: completion 2 (reward 1) empty, completion 3 (reward 1) [5]  -> all-correct
    h = np.array([1.0, 3.0, 2.0, 2.0, 5.0])
    return TokenBatch(logprob_T=-h, entropy_T=h / 10 if entropy else None,
                      planning_T=np.array([False, False, True, False, False]),
                      offsets=np.array([0, 3, 4, 4, 5]), reward_N=np.array([1.0, 0.0, 1.0, 1.0]),
                      group_N=np.array([0, 0, 1, 1]))


def test_hand_worked_maxrl_gtpo_sepa_hicra() -> None:
    # maxrl group 0: mean .5 -> A = (1 - .5)/(.5 + 1e-6) ≈ 1, (0 - .5)/.5 ≈ -1; group 1 flat -> 0
    # sepa lambda .5, completion 0: exec mean (1 + 3)/2 = 2 -> h' = [1.5, 2.5, 2 (plan)]
    # gtpo beta .5, mean h' = 2: w = 1 + .5(h'/2 - 1) = [.875, 1.125, 1]
    # hicra alpha .5 on token 2: 1 + .5*1 = 1.5
    # completion 1: single token -> h' = 2, w = 1, adv = -1
    adv, m = compute_advantages(small_batch(), **kwargs())  # type: ignore[arg-type]
    a = 0.5 / (0.5 + 1e-6)
    np.testing.assert_allclose(adv, [0.875 * a, 1.125 * a, 1.5 * a, -a, 0.0], rtol=1e-12)
    assert (m["num_groups"], m["num_informative_groups"], m["num_all_correct_groups"],
            m["num_all_wrong_groups"]) == (2, 1, 1, 0)
    # exec tokens [1, 3, 2, 5]: mean 2.75, var (3.0625 + .0625 + .5625 + 5.0625)/4 = 2.1875
    assert m["exec_surprisal_mean"] == pytest.approx(2.75)
    assert m["exec_surprisal_var"] == pytest.approx(2.1875)
    assert (m["plan_surprisal_mean"], m["plan_surprisal_var"]) == (2.0, 0.0)
    # no entropy_T: entropy keys mirror surprisal
    assert m["exec_entropy_var"] == m["exec_surprisal_var"]
    # after pooling: exec tokens [1.5, 2.5, 2, 5] -> var (1.5625+.0625+.5625+5.0625)/4 = 1.8125
    assert m["exec_uncertainty_pooled_var"] == pytest.approx(1.8125)
    assert m["gtpo_weight_max"] == pytest.approx(1.125)


def test_metrics_contract_all_modes() -> None:
    for mode in TRANSFORM_MODES:
        for adv_mode in ("grpo", "maxrl", "rloo"):
            for kind in ("surprisal", "predictive_variance", "shannon_entropy"):
                adv, m = compute_advantages(small_batch(entropy=True), **kwargs(  # type: ignore[arg-type]
                    transform_mode=mode, advantage_mode=adv_mode, uncertainty_kind=kind))
                assert adv.shape == (5,) and np.all(np.isfinite(adv))
                for key in REQUIRED:
                    assert key in m, key
                for key, value in m.items():
                    assert isinstance(value, int | float) and math.isfinite(value), key
                for key in ("num_groups", "num_informative_groups"):
                    assert type(m[key]) is int


def test_transform_none_is_broadcast_episode_advantage() -> None:
    adv, _ = compute_advantages(small_batch(), **kwargs(transform_mode="none"))  # type: ignore[arg-type]
    a = 0.5 / (0.5 + 1e-6)
    np.testing.assert_allclose(adv, [a, a, a, -a, 0.0])


def test_entropy_used_when_given() -> None:
    _, m = compute_advantages(small_batch(entropy=True), **kwargs())  # type: ignore[arg-type]
    assert m["exec_entropy_mean"] == pytest.approx(0.275)  # [1, 3, 2, 5]/10


def test_shannon_entropy_without_entropy_is_an_error() -> None:
    with pytest.raises(ValueError, match="entropy_T"):
        compute_advantages(small_batch(), **kwargs(uncertainty_kind="shannon_entropy"))  # type: ignore[arg-type]
    # nothing reads the uncertainty under transform none: no error
    compute_advantages(small_batch(), **kwargs(uncertainty_kind="shannon_entropy",  # type: ignore[arg-type]
                                               transform_mode="none"))


def test_sepa_lambda_ignored_without_sepa() -> None:
    a1, _ = compute_advantages(small_batch(), **kwargs(transform_mode="gtpo", sepa_lambda=1.0))  # type: ignore[arg-type]
    a0, _ = compute_advantages(small_batch(), **kwargs(transform_mode="gtpo", sepa_lambda=0.0))  # type: ignore[arg-type]
    np.testing.assert_array_equal(a0, a1)


def test_empty_batch_and_empty_completions() -> None:
    b = TokenBatch(logprob_T=np.zeros(0), entropy_T=None, planning_T=np.zeros(0, bool),
                   offsets=np.array([0, 0, 0]), reward_N=np.array([1.0, 0.0]),
                   group_N=np.array([0, 0]))
    adv, m = compute_advantages(b, **kwargs())  # type: ignore[arg-type]
    assert adv.shape == (0,) and m["adv_abs_mean"] == 0.0 and m["num_informative_groups"] == 1


def test_token_batch_validation() -> None:
    good = small_batch()
    with pytest.raises(ValueError, match="offsets"):
        TokenBatch(good.logprob_T, None, good.planning_T, np.array([0, 3, 4]), good.reward_N,
                   good.group_N)
    with pytest.raises(ValueError, match="planning_T"):
        TokenBatch(good.logprob_T, None, good.planning_T.astype(int), good.offsets,
                   good.reward_N, good.group_N)
    with pytest.raises(ValueError, match="transform_mode"):
        compute_advantages(good, **kwargs(transform_mode="sepa"))  # type: ignore[arg-type]
