"""Group-sequential test of a condition against the baseline over seeds: the math behind
`[campaign] seeds_policy = "until_decided"` (retrain/campaign/sequential.py is the glue).

Data flow: the design (alpha, the planned look sizes n_1 < … < n_K = max_seeds) → efficacy
boundaries c_1..c_K, fixed before any data; at look k the per-seed differences condition −
baseline of the first n_k seeds → paired t → a z with the same two-sided p-value → decided when
|z_k| >= c_k, or at the last look "no difference found".

Why boundaries: testing at α = 0.05 after every batch of seeds and stopping at the first
"significant" look rejects a true null far more often than 5% (14% with looks at 3, 6, 9, 12
seeds).
The Lan-DeMets spending function of O'Brien-Fleming type (Lan & DeMets 1983, Biometrika 70:659)
says how much of α may be spent by look k, at information fraction t_k = n_k / n_K. Two-sided
and symmetric, it spends α/2 in each tail with the one-sided function:

    α(t) = 2 · (2 − 2 Φ(z_{1−α/4} / √t))    (= α at t = 1)

This is the form behind the published two-sided tables (DeMets & Lan 1994, Stat Med 13:1341;
gsDesign's sfLDOF with α/2 per side; K = 5 at α = 0.05: 4.877, 3.357, 2.680, 2.290, 2.031).
The one-line form 2 − 2 Φ(z_{1−α/2} / √t) spends a little more early (its K = 5 boundaries
start at 4.383) and reproduces none of those tables. c_k is chosen so that under H0 the canonical joint
normal law of (Z_1..Z_K), corr(Z_i, Z_j) = √(t_i / t_j), gives

    P(|Z_1| < c_1, …, |Z_{k−1}| < c_{k−1}, |Z_k| >= c_k) = α(t_k) − α(t_{k−1}).

The probabilities are computed by recursive numerical integration of the score process
S_k = Z_k √t_k, whose increments are independent N(0, t_k − t_{k−1}) (Armitage, McPherson &
Rowe 1969; Jennison & Turnbull 2000, ch. 19), on a Simpson grid; c_k by brentq.

Deviations from the textbook design, and why:
- The statistic is the paired t of the differences, not a z with known variance: a campaign
  has 3–12 seeds and no variance to assume. Each t_k (n_k − 1 degrees of freedom) is mapped to
  the normal quantile with the same p-value (Jennison & Turnbull's "significance level"
  approach), so its marginal law under H0 is exactly N(0, 1) when the differences are normal.
- The joint law of those z_k is not the canonical one: the variance is estimated afresh at each
  look, so they are less correlated than √(t_i / t_j), and the canonical boundaries
  (`canonical_boundaries`) reject a true null in 5.3% of campaigns at α = 0.05 with looks at
  3, 6, 9, 12 seeds (5.8% at 3, 4, 5, 6). The campaign therefore uses `t_boundaries`: the same
  spending function, spent under the exact null law of the paired t statistics, which gives
  5.00%. Both depend only on α and the planned looks.
- No futility boundary: the policy stops for efficacy only, a condition with no detected
  difference runs to max_seeds.

Pure numpy/scipy; no files, no torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GRID_POINTS = 1201  # Simpson nodes across each look's continuation interval (odd)
CONTINUE = "continue"
HIGHER = "higher than baseline"
LOWER = "lower than baseline"
NO_DIFFERENCE = "no difference found at max_seeds"
TOO_FEW = "not tested: fewer than 2 paired seeds"


def plan_looks(min_seeds: int, max_seeds: int, seed_batch: int) -> tuple[int, ...]:
    """Seeds per condition at each look: min_seeds, then seed_batch more each look, the last
    capped at max_seeds.  plan_looks(3, 12, 3) = (3, 6, 9, 12); plan_looks(3, 10, 3) =
    (3, 6, 9, 10)."""
    if not 1 <= min_seeds <= max_seeds or seed_batch < 1:
        raise ValueError(f"need 1 <= min_seeds <= max_seeds and seed_batch >= 1, got "
                         f"{min_seeds}, {max_seeds}, {seed_batch}")
    return tuple(range(min_seeds, max_seeds, seed_batch)) + (max_seeds,)


def obf_spending(t: float, alpha: float) -> float:
    """Two-sided α spent by information fraction t in (0, 1]: the one-sided Lan-DeMets
    O'Brien-Fleming-type function at α/2 per tail, 2 · (2 − 2 Φ(z_{1−α/4} / √t)); α at t = 1.

    Hand-worked: α = 0.05, t = 1/2: z_{0.9875} = 2.2414, /√0.5 = 3.1698, Φ tail 7.62e-4, × 4
    = 0.00305, whose two-sided normal quantile is the first boundary 2.963 of K = 2."""
    from scipy.stats import norm

    if t <= 0:
        return 0.0
    return float(4.0 * norm.sf(norm.isf(alpha / 4.0) / math.sqrt(min(t, 1.0))))


def _check(alpha: float, looks: Sequence[int], smallest: int) -> None:
    if not looks or looks[0] < smallest or any(b <= a for a, b in zip(looks, looks[1:], strict=False)):
        raise ValueError(f"looks must be increasing counts >= {smallest}, got {list(looks)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def canonical_boundaries(alpha: float, looks: Sequence[int]) -> tuple[float, ...]:
    """Two-sided efficacy boundaries c_k on the z scale for looks at `looks` seeds (t_k =
    looks[k] / looks[-1]) under the canonical joint normal law. K = 5 equally spaced looks at
    α = 0.05 give 4.877, 3.357, 2.680, 2.290, 2.031 (DeMets & Lan 1994 / gsDesign)."""
    from scipy import integrate, optimize
    from scipy.stats import norm

    _check(alpha, looks, 1)
    ts = [n / looks[-1] for n in looks]
    out: list[float] = []
    # sub-density of S_{k-1} on the continuation interval (None before the first look)
    grid: np.ndarray | None = None
    dens: np.ndarray | None = None
    spent = 0.0
    t_prev = 0.0
    for t in ts:
        target = obf_spending(t, alpha) - spent
        sd = math.sqrt(t - t_prev)
        if target <= 0:
            c = math.inf
        elif grid is None or dens is None:
            c = float(norm.isf(target / 2.0))  # S_1 ~ N(0, t_1): crossing probability 2 Φ(−c)
        else:
            c = float(optimize.brentq(_cross, 0.0, 40.0, args=(grid, dens, t, sd, target),
                                      xtol=1e-10))
        out.append(c)
        spent += max(target, 0.0)
        b = min(c, 40.0) * math.sqrt(t)  # nothing crosses beyond 40: the whole line continues
        new_grid = np.linspace(-b, b, GRID_POINTS)
        if grid is None or dens is None:
            new_dens = norm.pdf(new_grid / math.sqrt(t)) / math.sqrt(t)
        else:
            kernel = norm.pdf((new_grid[:, None] - grid[None, :]) / sd) / sd  # [new, old]
            new_dens = integrate.simpson(kernel * dens[None, :], x=grid, axis=1)
        grid, dens, t_prev = new_grid, new_dens, t
    return tuple(out)


def _cross(c: float, grid: np.ndarray, dens: np.ndarray, t: float, sd: float,
           target: float) -> float:
    """P(continue until look k−1, |Z_k| >= c) − target; `dens` is S_{k−1}'s sub-density."""
    from scipy import integrate
    from scipy.stats import norm

    b = c * math.sqrt(t)
    tails = norm.cdf((-b - grid) / sd) + norm.cdf((grid - b) / sd)
    return float(integrate.simpson(dens * tails, x=grid)) - target


# Quasi-Monte-Carlo integration of the exact t law: scrambled Sobol points with a fixed seed (the
# boundaries are a pure function of alpha and the looks), a power of two of them, at most
# T_CELLS path x seed cells (about 100 MB). At 2**17 paths the error rate the boundaries give is
# alpha within about 0.0001 (tests/analysis/test_sequential.py).
T_PATHS = 2**17
T_CELLS = 2**22
T_SEED = 20261203


@functools.lru_cache(maxsize=32)
def t_boundaries(alpha: float, looks: tuple[int, ...]) -> tuple[float, ...]:
    """The boundaries the campaign uses: the same spending, α(t_k) − α(t_{k−1}) at look k, for
    the exact null law of the paired t statistics (normal differences, unknown variance) rather
    than the canonical normal one; on the z scale of `paired_z`. The first equals the canonical
    one (each z_k is exactly N(0, 1)); later ones are a little larger (2.964, 2.378, 2.042 for
    looks at 3, 6, 9, 12 seeds against 2.963, 2.359, 2.014), because with the variance estimated
    afresh at each look the z_k are less correlated than the canonical √(t_i / t_j).

    Computed by quasi-Monte-Carlo integration with a fixed seed, Rao-Blackwellised: in Helmert
    coordinates of the differences (orthonormal, iid N(0, 1) under H0) every look's t depends on
    the grand mean X_N only through an interval of X_N, so the probability of continuing given
    the other N − 1 coordinates is Φ(U) − Φ(L) — a smooth function of each boundary, solved
    look by look with brentq. X_n = √(n/N) X_N − √n Σ_{j>n} h_j / √(j (j − 1)), W_n = Σ_{j<=n}
    h_j², t_n = X_n / √(W_n / (n − 1)).
    """
    from scipy import optimize
    from scipy.stats import norm
    from scipy.stats import t as student

    _check(alpha, looks, 2)  # a t needs two seeds
    canon = canonical_boundaries(alpha, looks)
    n_max = looks[-1]
    if len(looks) == 1:
        return canon
    m_paths = min(T_PATHS, 2 ** int(math.log2(T_CELLS // (n_max - 1))))
    h = _normals(m_paths, n_max - 1)  # h_j, j = 2..N
    j = np.arange(2, n_max + 1)
    w_cum = np.cumsum(h * h, axis=1)  # column n - 2: W_n
    tail = np.cumsum((h / np.sqrt(j * (j - 1.0)))[:, ::-1], axis=1)[:, ::-1]  # col n - 1: Σ_{j>n}
    del h
    lo = np.full(m_paths, -np.inf)
    hi = np.full(m_paths, np.inf)
    p_prev = np.ones(m_paths)
    out = [canon[0]]
    spent = obf_spending(looks[0] / n_max, alpha)
    tau = float(student.isf(norm.sf(canon[0]), looks[0] - 1))
    lo, hi, p_prev = _continue(tau, looks[0], n_max, w_cum, tail, lo, hi)
    for n, c in zip(looks[1:], canon[1:], strict=True):
        target = obf_spending(n / n_max, alpha) - spent
        spent += target
        args = (n, n_max, w_cum, tail, lo, hi, p_prev, target)
        start = float(student.isf(norm.sf(c), n - 1))  # the canonical boundary, on the t scale
        lower, upper = start / 2.0, start * 2.0
        while _shortfall(lower, *args) <= 0:  # a tiny increment: no path crosses near the start
            lower /= 2.0
        while _shortfall(upper, *args) > 0:
            upper *= 2.0
        tau = float(optimize.brentq(_shortfall, lower, upper, args=args, xtol=1e-7))
        lo, hi, p_prev = _continue(tau, n, n_max, w_cum, tail, lo, hi)
        out.append(float(norm.isf(student.sf(tau, n - 1))))
    return tuple(out)


def _shortfall(tau: float, n: int, n_max: int, w_cum: np.ndarray, tail: np.ndarray,
               lo: np.ndarray, hi: np.ndarray, p_prev: np.ndarray, target: float) -> float:
    """α spent at look n with boundary tau on the t scale, minus target."""
    p_now = _continue(tau, n, n_max, w_cum, tail, lo, hi)[2]
    return float(np.mean(p_prev - p_now)) - target


def _continue(tau: float, n: int, n_max: int, w_cum: np.ndarray, tail: np.ndarray,
              lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interval of the grand mean X_N on which |t_n| < tau and every earlier look continued,
    and its probability, per path."""
    from scipy.stats import norm

    mid = math.sqrt(n) * tail[:, n - 1] if n < n_max else np.zeros(len(lo))
    half = tau * np.sqrt(w_cum[:, n - 2] / (n - 1))
    scale = math.sqrt(n_max / n)
    new_lo = np.maximum(lo, (mid - half) * scale)
    new_hi = np.minimum(hi, (mid + half) * scale)
    return new_lo, new_hi, np.clip(norm.cdf(new_hi) - norm.cdf(new_lo), 0.0, None)


@dataclass(frozen=True)
class LookStat:
    """The paired statistic of one condition at one look."""

    n: int  # paired seeds
    mean_diff: float | None
    sd_diff: float | None
    t: float | None
    z: float | None  # normal quantile with the t's two-sided p-value, sign of the mean


def paired_z(diffs: Sequence[float]) -> LookStat:
    """Paired t of per-seed differences, mapped to z = sign(t) Φ⁻¹(F_{n−1}(|t|)).

    Hand-worked: diffs 0.1, 0.2, 0.3 → mean 0.2, sd 0.1, t = 0.2 / (0.1/√3) = 3.4641 with 2
    df, two-sided p = 0.07418, z = Φ⁻¹(1 − 0.03709) = 1.7856.  Identical differences (sd 0):
    z = ±inf when they are not 0, and 0 when they are.
    """
    from scipy.stats import norm
    from scipy.stats import t as student

    n = len(diffs)
    if n < 2:
        return LookStat(n, float(diffs[0]) if n else None, None, None, None)
    arr = np.asarray(diffs, dtype=float)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1))
    if sd == 0.0:
        t = math.copysign(math.inf, mean) if mean != 0 else 0.0
        return LookStat(n, mean, sd, t, t)
    t = mean / (sd / math.sqrt(n))
    z = math.copysign(float(norm.isf(student.sf(abs(t), n - 1))), t)
    return LookStat(n, mean, sd, t, z)


def decide(stat: LookStat, boundary: float, *, last: bool) -> str:
    """`higher/lower than baseline` when |z| >= boundary; at the last look otherwise `no
    difference found at max_seeds`; else `continue`."""
    if stat.z is None:
        return TOO_FEW if last else CONTINUE
    if abs(stat.z) >= boundary:
        return HIGHER if stat.z > 0 else LOWER
    return NO_DIFFERENCE if last else CONTINUE


# --- simulation -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulation:
    """Outcomes of many synthetic campaigns (one condition against the baseline each)."""

    rejected: np.ndarray  # [M] bool: decided "higher" or "lower" at some look
    sign: np.ndarray  # [M] +1 / -1 of the decided difference, 0 when not decided
    seeds_used: np.ndarray  # [M] seeds the condition ran (its decision look's n, else max)
    fixed_rejected: np.ndarray  # [M] bool: the fixed-n paired t at max_seeds, two-sided alpha

    @property
    def rejection_rate(self) -> float:
        return float(self.rejected.mean())

    @property
    def mc_se(self) -> float:
        """Binomial Monte-Carlo standard error of `rejection_rate`."""
        p, m = self.rejection_rate, len(self.rejected)
        return math.sqrt(max(p * (1 - p), 1e-12) / m)

    @property
    def mean_seeds(self) -> float:
        return float(self.seeds_used.mean())

    @property
    def fixed_rejection_rate(self) -> float:
        return float(self.fixed_rejected.mean())


def z_of_prefixes(diffs: np.ndarray, looks: Sequence[int]) -> np.ndarray:
    """[M, K] z of the paired t over the first looks[k] columns of diffs [M, max_n]
    (vectorised `paired_z`)."""
    from scipy.stats import norm
    from scipy.stats import t as student

    csum = np.cumsum(diffs, axis=1)
    csq = np.cumsum(diffs * diffs, axis=1)
    zs = np.empty((diffs.shape[0], len(looks)))
    for k, n in enumerate(looks):
        mean = csum[:, n - 1] / n
        var = np.maximum(csq[:, n - 1] - n * mean * mean, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = mean / np.sqrt(var / n)
        t = np.where(var > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
        zs[:, k] = np.sign(t) * norm.isf(student.sf(np.abs(t), n - 1))
    return zs


def simulate(diffs: np.ndarray, looks: Sequence[int], alpha: float,
             bounds: Sequence[float] | None = None) -> Simulation:
    """Run the policy on each row of per-seed differences diffs [M, looks[-1]]: stop at the first
    look whose |z| reaches its boundary (`bounds`, default `t_boundaries(alpha, looks)`). Also
    the fixed-n design: one paired t test on all looks[-1] seeds at two-sided level alpha."""
    from scipy.stats import norm

    c_k = np.asarray(t_boundaries(alpha, tuple(looks)) if bounds is None else bounds)
    zs = z_of_prefixes(diffs, looks)  # [M, K]
    crossed = np.abs(zs) >= c_k[None, :]
    rejected = crossed.any(axis=1)
    first = np.where(rejected, crossed.argmax(axis=1), len(looks) - 1)
    rows = np.arange(len(diffs))
    sign = np.where(rejected, np.sign(zs[rows, first]), 0).astype(int)
    seeds_used = np.asarray(looks)[first]
    fixed = np.abs(zs[:, -1]) >= norm.isf(alpha / 2)
    return Simulation(rejected=rejected, sign=sign, seeds_used=seeds_used, fixed_rejected=fixed)


def null_rate(looks: Sequence[int], bounds: Sequence[float], *, paths: int = 200_000,
              seed: int = 0) -> tuple[float, float]:
    """The false-positive rate of `bounds` under the exact null law of the paired t (normal
    differences) and its standard error: the Rao-Blackwellised estimate of `t_boundaries` on
    `paths` fresh pseudo-random paths, about 4x more precise than counting rejections."""
    from scipy.stats import norm
    from scipy.stats import t as student

    n_max = looks[-1]
    h = np.random.default_rng(seed).standard_normal((paths, n_max - 1))
    j = np.arange(2, n_max + 1)
    w_cum = np.cumsum(h * h, axis=1)
    tail = np.cumsum((h / np.sqrt(j * (j - 1.0)))[:, ::-1], axis=1)[:, ::-1]
    lo, hi = np.full(paths, -np.inf), np.full(paths, np.inf)
    p_cont = np.ones(paths)
    for n, c in zip(looks, bounds, strict=True):
        lo, hi, p_cont = _continue(float(student.isf(norm.sf(c), n - 1)), n, n_max, w_cum, tail,
                                   lo, hi)
    rejected = 1.0 - p_cont
    return float(rejected.mean()), float(rejected.std() / math.sqrt(paths))


def _normals(m: int, d: int) -> np.ndarray:
    """[m, d] standard normal points: scrambled Sobol (fixed seed), mapped by Φ⁻¹."""
    from scipy.stats import norm, qmc

    u = qmc.Sobol(d, scramble=True, seed=T_SEED).random_base2(int(math.log2(m)))
    return np.asarray(norm.ppf(np.clip(u, 1e-12, 1 - 1e-12)))
