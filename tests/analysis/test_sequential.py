"""The group-sequential test behind `seeds_policy = "until_decided"` (retrain/analysis/sequential.py):
boundaries against the published Lan-DeMets O'Brien-Fleming-type values, hand-worked statistics,
and a simulation of many synthetic campaigns (no training): the false-positive rate stays at α
under the null, and under a real effect the policy uses fewer seeds than the fixed-n design with
about its power. `pytest -s` prints the numbers docs/campaigns.md quotes.

Monte-Carlo bound: with M simulated campaigns a rate whose true value is α is estimated with
binomial SE √(α(1−α)/M) (0.00154 at M = 20 000, α = 0.05); the tests allow α + 3 SE = 0.0546.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrain.analysis import sequential as sq

ALPHA = 0.05
M = 20_000
LOOKS = sq.plan_looks(3, 12, 3)  # (3, 6, 9, 12)
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / M)


# --- boundaries ---------------------------------------------------------------------------------

# Two-sided α = 0.05, K equally spaced looks, Lan-DeMets O'Brien-Fleming-type spending
# (DeMets & Lan 1994 table 1; gsDesign sfLDOF, ldbounds).
PUBLISHED = {
    2: (2.963, 1.969),
    3: (3.710, 2.511, 1.993),
    4: (4.333, 2.963, 2.359, 2.014),
    5: (4.877, 3.357, 2.680, 2.290, 2.031),
}


@pytest.mark.parametrize("k", sorted(PUBLISHED))
def test_canonical_boundaries_match_the_published_values(k: int) -> None:
    got = sq.canonical_boundaries(ALPHA, tuple(range(1, k + 1)))
    assert [round(c, 2) for c in got] == [round(c, 2) for c in PUBLISHED[k]]
    assert got == pytest.approx(PUBLISHED[k], abs=2e-3)


def test_one_look_is_the_fixed_test() -> None:
    assert sq.canonical_boundaries(ALPHA, (12,)) == pytest.approx((1.959964,), abs=1e-6)
    assert sq.t_boundaries(ALPHA, (12,)) == pytest.approx((1.959964,), abs=1e-6)


def test_boundaries_spend_alpha_under_the_canonical_joint_normal_law() -> None:
    # Independent check with scipy's multivariate normal: K = 3 looks at t = 1/3, 2/3, 1,
    # corr(Z_i, Z_j) = √(t_i / t_j); P(no crossing through look k) = 1 − α(t_k).
    from scipy.stats import multivariate_normal

    c = np.asarray(sq.canonical_boundaries(ALPHA, (1, 2, 3)))
    t = np.array([1, 2, 3]) / 3
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in (2, 3):
        inside = multivariate_normal(mean=np.zeros(k), cov=cov[:k, :k]).cdf(
            c[:k], lower_limit=-c[:k], rng=np.random.default_rng(0))
        assert inside == pytest.approx(1 - sq.obf_spending(t[k - 1], ALPHA), abs=2e-4)


def test_spending_function() -> None:
    # α = 0.05, t = 1/2: z_0.9875 = 2.2414; 2.2414 / √0.5 = 3.1698; 4 Φ(−3.1698) = 0.003050
    assert sq.obf_spending(0.5, ALPHA) == pytest.approx(0.003050, abs=1e-6)
    assert sq.obf_spending(1.0, ALPHA) == pytest.approx(ALPHA, rel=1e-12)
    assert sq.obf_spending(0.0, ALPHA) == 0.0


def test_t_boundaries_are_pre_registered_and_above_the_canonical_ones() -> None:
    canon = sq.canonical_boundaries(ALPHA, LOOKS)
    got = sq.t_boundaries(ALPHA, LOOKS)
    assert got[0] == canon[0]  # z_1 is exactly N(0, 1): nothing to correct at the first look
    assert all(g > c for g, c in zip(got[2:], canon[2:], strict=True))
    assert got == pytest.approx((4.333, 2.964, 2.378, 2.042), abs=2e-3)
    sq.t_boundaries.cache_clear()
    assert sq.t_boundaries(ALPHA, LOOKS) == got  # a pure function of (alpha, looks)


def test_plan_looks() -> None:
    assert sq.plan_looks(3, 12, 3) == (3, 6, 9, 12)
    assert sq.plan_looks(3, 10, 3) == (3, 6, 9, 10)
    assert sq.plan_looks(4, 4, 2) == (4,)
    with pytest.raises(ValueError):
        sq.plan_looks(5, 4, 1)


# --- the statistic and the decision ---------------------------------------------------------------

def test_paired_z_hand_worked() -> None:
    # diffs 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / √3) = 3.4641, 2 df, two-sided
    # p = 0.07418, z = Φ⁻¹(1 − 0.03709) = 1.7855
    stat = sq.paired_z([0.1, 0.2, 0.3])
    assert (stat.n, stat.mean_diff, stat.sd_diff) == (3, pytest.approx(0.2), pytest.approx(0.1))
    assert stat.t == pytest.approx(3.464102, abs=1e-6)
    assert stat.z == pytest.approx(1.785502, abs=1e-5)
    assert sq.paired_z([-0.1, -0.2, -0.3]).z == pytest.approx(-1.785502, abs=1e-5)
    assert sq.paired_z([0.2, 0.2]).z == math.inf and sq.paired_z([0.0, 0.0]).z == 0.0
    assert sq.paired_z([0.2]).z is None


def test_vectorised_z_equals_paired_z() -> None:
    d = np.random.default_rng(1).standard_normal((5, 12))
    z = sq.z_of_prefixes(d, LOOKS)
    for i in range(5):
        assert [sq.paired_z(list(d[i, :n])).z for n in LOOKS] == pytest.approx(list(z[i]))


def test_decide() -> None:
    stat = sq.LookStat(3, 0.3, 0.01, 52.0, 3.56)
    assert sq.decide(stat, 2.96, last=False) == sq.HIGHER
    assert sq.decide(sq.LookStat(3, -0.3, 0.01, -52.0, -3.56), 2.96, last=False) == sq.LOWER
    assert sq.decide(sq.LookStat(3, 0.1, 0.2, 0.8, 0.7), 2.96, last=False) == sq.CONTINUE
    assert sq.decide(sq.LookStat(3, 0.1, 0.2, 0.8, 0.7), 2.04, last=True) == sq.NO_DIFFERENCE


# --- simulation: thousands of synthetic campaigns ------------------------------------------------

def _lognormal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Standardised lognormal(0, 1): skewness 6.2."""
    x = rng.lognormal(0.0, 1.0, shape)
    return (x - math.exp(0.5)) / math.sqrt((math.e - 1) * math.e)


def test_null_false_positive_rate_stays_at_alpha() -> None:
    rng = np.random.default_rng(20261203)
    normal = rng.standard_normal((M, 12))
    # Skewed gains: when the condition changes nothing, a seed's two gains are exchangeable, so
    # their difference is symmetric however skewed the gains are.
    skewed_gains = (_lognormal(rng, (M, 12)) - _lognormal(rng, (M, 12))) / math.sqrt(2)
    for name, d in (("normal differences", normal), ("lognormal gains", skewed_gains)):
        sim = sq.simulate(d, LOOKS, ALPHA)
        canon = sq.simulate(d, LOOKS, ALPHA, sq.canonical_boundaries(ALPHA, LOOKS))
        print(f"\nnull, {name}: false positives {sim.rejection_rate:.4f} ± {sim.mc_se:.4f} "
              f"(canonical boundaries {canon.rejection_rate:.4f}, fixed n=12 t test "
              f"{sim.fixed_rejection_rate:.4f}), mean seeds {sim.mean_seeds:.2f}")
        assert sim.rejection_rate <= BOUND, (name, sim.rejection_rate)


def test_the_exact_null_rate_is_alpha_and_the_canonical_boundaries_exceed_it() -> None:
    # Rao-Blackwellised over the grand mean on 200 000 fresh paths: SE about 0.00014.
    rate, se = sq.null_rate(LOOKS, sq.t_boundaries(ALPHA, LOOKS), seed=1)
    canon, _ = sq.null_rate(LOOKS, sq.canonical_boundaries(ALPHA, LOOKS), seed=1)
    print(f"\nexact null rate, looks {LOOKS}: {rate:.5f} ± {se:.5f} (canonical boundaries "
          f"{canon:.5f})")
    assert abs(rate - ALPHA) < 3 * se + 2e-4  # 2e-4: the error of the QMC integration
    assert canon > ALPHA + 0.002  # why the campaign does not use them


def test_skewed_differences_cost_the_sequential_test_little_more_than_the_fixed_one() -> None:
    # Differences that are themselves skewed (the condition changes the noise's shape, not its
    # mean; centred gamma(4), skewness 1): the paired t is not exact here at n <= 12, fixed or
    # sequential. Recorded, and held to the fixed-n test's error plus 0.015.
    rng = np.random.default_rng(7)
    d = (rng.gamma(4.0, 1.0, (M, 12)) - 4.0) / 2.0
    sim = sq.simulate(d, LOOKS, ALPHA)
    print(f"\nnull, skewed differences (gamma(4), skewness 1): false positives "
          f"{sim.rejection_rate:.4f} ± {sim.mc_se:.4f} (fixed n=12 t test "
          f"{sim.fixed_rejection_rate:.4f}), mean seeds {sim.mean_seeds:.2f}")
    assert sim.rejection_rate <= sim.fixed_rejection_rate + 0.015


@pytest.mark.parametrize("effect", [1.0, 1.5])
def test_a_real_effect_stops_earlier_than_fixed_n_with_about_its_power(effect: float) -> None:
    # Δ = effect · σ of the per-seed differences; fixed n = 12 has power 0.88 at 1.0σ.
    rng = np.random.default_rng(11)
    for name, d in (("normal", rng.standard_normal((M, 12))),
                    ("lognormal gains", (_lognormal(rng, (M, 12)) - _lognormal(rng, (M, 12)))
                     / math.sqrt(2))):
        sim = sq.simulate(d + effect, LOOKS, ALPHA)
        print(f"\neffect {effect}σ, {name}: power {sim.rejection_rate:.3f} (fixed n=12 "
              f"{sim.fixed_rejection_rate:.3f}), mean seeds {sim.mean_seeds:.2f} of 12, wrong "
              f"sign {float((sim.sign < 0).mean()):.4f}")
        assert sim.mean_seeds < 12 - 1.5 * effect  # 10.1 and 8.6 seeds (normal)
        assert sim.rejection_rate >= sim.fixed_rejection_rate - 0.03
        assert (sim.sign < 0).mean() < 1e-3
