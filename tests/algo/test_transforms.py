"""Token transforms: uncertainty kinds, gtpo, hicra, sepa pooling, ragged helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.algo import ragged
from retrain.algo.gtpo import gtpo_weights
from retrain.algo.hicra import hicra
from retrain.algo.sepa import sepa_pool
from retrain.algo.uncertainty import predictive_variance, surprisal, token_uncertainty


def test_uncertainty_kinds() -> None:
    lp = np.log(np.array([1.0, 0.5, 0.25])).tolist() + [-80.0]
    lp_T = np.array(lp)
    # surprisal: -log p = [0, .6931, 1.3863], and 80 capped at 50
    np.testing.assert_allclose(surprisal(lp_T), [0.0, np.log(2), np.log(4), 50.0])
    # p(1-p) = [0, .25, .1875, ~0]
    np.testing.assert_allclose(predictive_variance(lp_T), [0.0, 0.25, 0.1875, 0.0], atol=1e-30)
    ent = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(token_uncertainty("shannon_entropy", lp_T, ent), ent)
    with pytest.raises(ValueError, match="entropy_T"):
        token_uncertainty("shannon_entropy", lp_T, None)
    with pytest.raises(ValueError, match="uncertainty_kind"):
        token_uncertainty("varentropy", lp_T, None)


def test_segment_sum_handles_empty_completions() -> None:
    # completions: [] [1,2,3] [] [4,5] [] -> sums 0, 6, 0, 9, 0
    x = np.array([1.0, 2, 3, 4, 5])
    off = np.array([0, 0, 3, 3, 5, 5])
    np.testing.assert_array_equal(ragged.segment_sum(x, off), [0, 6, 0, 9, 0])
    np.testing.assert_array_equal(ragged.segment_mean(x, off), [0, 2, 0, 4.5, 0])
    np.testing.assert_array_equal(ragged.segment_sum(np.zeros(0), np.array([0, 0, 0])), [0, 0])
    np.testing.assert_array_equal(ragged.segment_of(np.array([0, 2, 3, 4]), off), [1, 1, 3, 3])


def test_split_mean_var_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.exponential(2.0, 1000) + 30.0  # a large mean stresses the one-pass variance
    plan = rng.random(1000) < 0.1
    e_mean, e_var, p_mean, p_var = ragged.split_mean_var(x, np.flatnonzero(plan))
    assert e_mean == pytest.approx(x[~plan].mean(), rel=1e-12)
    assert e_var == pytest.approx(x[~plan].var(), rel=1e-9)
    assert p_mean == pytest.approx(x[plan].mean(), rel=1e-12)
    assert p_var == pytest.approx(x[plan].var(), rel=1e-12)
    assert ragged.split_mean_var(x[:0], np.zeros(0, np.int64)) == (0.0, 0.0, 0.0, 0.0)


def test_gtpo_hand_worked() -> None:
    # completion 1: h = [1, 3], mean 2, beta .5: w = 1 + .5(1/2 - 1) = .75, 1 + .5(3/2 - 1) = 1.25
    # completion 2: h = [0, 0], mean 0 < 1e-7 -> uniform 1
    w = gtpo_weights(np.array([1.0, 3.0, 0.0, 0.0]), np.array([0, 2, 4]), beta=0.5)
    np.testing.assert_allclose(w, [0.75, 1.25, 1.0, 1.0])
    # floor: h = [0, 4], mean 2, beta 2: w = 1 + 2(0 - 1) = -1 -> 0; 1 + 2(2 - 1) = 3
    w = gtpo_weights(np.array([0.0, 4.0]), np.array([0, 2]), beta=2.0)
    np.testing.assert_allclose(w, [0.0, 3.0])
    # cap: one 50-nat token among certain ones, h = [50, .1, .1, .1] mean 12.575, beta .1:
    # w0 = 1 + .1(50/12.575 - 1) = 1.2976 -> capped at 1.2
    w = gtpo_weights(np.array([50.0, 0.1, 0.1, 0.1]), np.array([0, 4]), beta=0.1, max_weight=1.2)
    assert w[0] == 1.2 and w[1] == pytest.approx(1 + 0.1 * (0.1 / 12.575 - 1))


def test_hicra_hand_worked() -> None:
    # planning tokens 0 and 1, alpha .5: 1 + .5*1 = 1.5; -1 + .5*1 = -.5; token 2 untouched
    out = hicra(np.array([1.0, -1.0, 2.0]), np.array([True, True, False]), alpha=0.5)
    np.testing.assert_allclose(out, [1.5, -0.5, 2.0])


def test_sepa_hand_worked() -> None:
    # h = [1, 2, 3 | 10(planning)], lambda .5: mean_exec = 2 -> [1.5, 2, 2.5], planning stays 10
    # second completion: only a planning token -> unchanged; third: empty
    h = np.array([1.0, 2.0, 3.0, 10.0, 7.0])
    plan = np.array([False, False, False, True, True])
    out = sepa_pool(h, plan, np.array([0, 4, 5, 5]), lam=0.5)
    np.testing.assert_allclose(out, [1.5, 2.0, 2.5, 10.0, 7.0])
    with pytest.raises(ValueError):
        sepa_pool(h, plan, np.array([0, 5]), lam=1.5)


# ---------------------------------------------------------------- properties

@st.composite
def ragged_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lens = draw(st.lists(st.integers(0, 12), min_size=1, max_size=6))
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    total = int(offsets[-1])
    h = np.array(draw(st.lists(st.floats(0, 50), min_size=total, max_size=total)))
    plan = np.array(draw(st.lists(st.booleans(), min_size=total, max_size=total)), dtype=bool)
    return h, plan, offsets


@settings(max_examples=60, deadline=None)
@given(ragged_batches(), st.floats(-3, 3), st.floats(0, 3), st.none() | st.floats(0.5, 5))
def test_gtpo_keeps_sign_and_identity_at_beta_zero(batch, a: float, beta: float,
                                                    cap: float | None) -> None:
    h, _, off = batch
    w = gtpo_weights(h, off, beta=beta, max_weight=cap)
    assert np.all(w >= 0.0)
    adv = a * w
    assert np.all((np.sign(adv) == np.sign(a)) | (adv == 0.0))
    np.testing.assert_array_equal(gtpo_weights(h, off, beta=0.0), np.ones_like(h))


@settings(max_examples=60, deadline=None)
@given(ragged_batches(), st.floats(0, 1))
def test_gtpo_mean_weight_one_before_floor(batch, beta: float) -> None:
    # with beta <= 1 and h >= 0 the floor never binds: 1 + beta(h/m - 1) >= 1 - beta >= 0
    h, _, off = batch
    w = gtpo_weights(h, off, beta=beta)
    lens = ragged.lengths(off)
    mean_w = ragged.segment_mean(w, off)
    np.testing.assert_allclose(mean_w[lens > 0], 1.0, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(ragged_batches(), st.floats(0, 2))
def test_hicra_changes_only_planning_tokens(batch, alpha: float) -> None:
    adv, plan, _ = batch
    adv = adv - 25.0  # both signs
    out = hicra(adv, plan, alpha=alpha)
    np.testing.assert_array_equal(out[~plan], adv[~plan])
    np.testing.assert_allclose(out[plan], adv[plan] + alpha * np.abs(adv[plan]))


@settings(max_examples=60, deadline=None)
@given(ragged_batches(), st.floats(0, 1))
def test_sepa_identity_pooling_and_planning_untouched(batch, lam: float) -> None:
    h, plan, off = batch
    np.testing.assert_array_equal(sepa_pool(h, plan, off, lam=0.0), h)
    out = sepa_pool(h, plan, off, lam=lam)
    np.testing.assert_array_equal(out[plan], h[plan])
    full = sepa_pool(h, plan, off, lam=1.0)
    for i in range(off.shape[0] - 1):
        ex = ~plan[off[i]:off[i + 1]]
        seg_h, seg_full = h[off[i]:off[i + 1]][ex], full[off[i]:off[i + 1]][ex]
        if seg_h.size:
            np.testing.assert_allclose(seg_full, seg_h.mean(), rtol=1e-12, atol=1e-12)
            # pooling keeps the completion's mean execution uncertainty
            seg_out = out[off[i]:off[i + 1]][ex]
            assert seg_out.mean() == pytest.approx(seg_h.mean(), rel=1e-9, abs=1e-9)
