"""Episode advantages: one scalar per completion, computed within its group (prompt).

Data flow: rewards_N + group_N  ──▶  adv_N  ──▶ (broadcast to tokens, token transforms in
`pipeline`). Modes, spelled as in the papers:

- `grpo` — Shao et al. 2024, DeepSeekMath (arXiv 2402.03300): A_i = r_i − mean_g(r).
  `scale`: `group` divides by the group's std (the original GRPO), `batch` by the std of all
  rewards in the batch, `none` does not divide (Dr. GRPO, Liu et al. 2025, arXiv 2503.20783).
  The names follow TRL's `scale_rewards`.
- `maxrl` — arXiv 2602.02710: A_i = (r_i − mean_g) / (mean_g + eps); 0 for the whole group
  when mean_g <= eps (nothing solved yet: no direction to reinforce).
- `rloo` — Ahmadian et al. 2024 (arXiv 2402.14740), leave-one-out baseline:
  A_i = r_i − mean_{j≠i} r_j = G/(G−1) · (r_i − mean_g).
- custom — `package.module:function` mapping rewards_G → advantages_G, called once per group.

Deviations and choices:
- std is the sample std (ddof=1), as `torch.std` in TRL computes it; the denominator is
  std + eps. A group of one has no spread and is uninformative anyway.
- Uninformative groups (all rewards within 1e-6 of each other) get zero advantage in *every*
  mode, custom included, so that the logged counts mean the same thing in every condition. Such a
  group counts as all-correct when its mean reward is >= 0.5, else as all-wrong.
- Custom functions are called in a Python loop over groups (there are few groups and the user
  function is opaque); their output is checked for length and finiteness.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from retrain.algo.modes import ADVANTAGE_MODES, SCALES

UNINFORMATIVE_TOL = 1e-6  # a group whose rewards span at most this has no learning signal
CORRECT_THRESHOLD = 0.5  # an uninformative group with mean >= this counts as all-correct

AdvantageFn = Callable[[np.ndarray], np.ndarray]


def group_index(group_N: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense group index 0..G-1 per completion (any group ids, contiguous or not) and G."""
    if group_N.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), 0
    _, gidx_N = np.unique(group_N, return_inverse=True)
    gidx_N = gidx_N.reshape(-1).astype(np.int64, copy=False)
    return gidx_N, int(gidx_N.max()) + 1


def episode_advantages(
    reward_N: np.ndarray,
    group_N: np.ndarray,
    *,
    mode: str,
    scale: str = "group",
    eps: float = 1e-6,
    custom_fn: AdvantageFn | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Per-completion advantages, float64 [N], and group counts for the logs.

    `mode` is a built-in name, or anything else together with `custom_fn` (the trainer passes the
    dotted path as the mode and the loaded function as `custom_fn`).
    """
    reward_N = np.asarray(reward_N, dtype=np.float64)
    if reward_N.shape != group_N.shape:
        raise ValueError(f"reward_N {reward_N.shape} and group_N {group_N.shape} differ in shape")
    if not np.all(np.isfinite(reward_N)):
        raise ValueError("rewards must be finite")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if mode in ADVANTAGE_MODES and custom_fn is not None:
        raise ValueError(f"advantage_mode {mode!r} is built in; custom_fn must be None")
    if mode not in ADVANTAGE_MODES and custom_fn is None:
        raise ValueError(f"unknown advantage_mode {mode!r}: use one of {ADVANTAGE_MODES} "
                         "or a 'package.module:function' path loaded with load_custom_advantage")

    gidx_N, num_groups = group_index(group_N)
    count_G = np.bincount(gidx_N, minlength=num_groups).astype(np.float64)
    mean_G = np.bincount(gidx_N, weights=reward_N, minlength=num_groups) / np.maximum(count_G, 1)
    centered_N = reward_N - mean_G[gidx_N]

    if mode == "grpo":
        adv_N = centered_N
        if scale == "group":
            sq_G = np.bincount(gidx_N, weights=centered_N * centered_N, minlength=num_groups)
            std_G = np.sqrt(sq_G / np.maximum(count_G - 1, 1))
            adv_N = centered_N / (std_G[gidx_N] + eps)
        elif scale == "batch":
            std = float(np.std(reward_N, ddof=1)) if reward_N.shape[0] > 1 else 0.0
            adv_N = centered_N / (std + eps)
    elif mode == "maxrl":
        solved_G = mean_G > eps
        denom_G = np.where(solved_G, mean_G + eps, 1.0)
        adv_N = np.where(solved_G[gidx_N], centered_N / denom_G[gidx_N], 0.0)
    elif mode == "rloo":
        factor_G = count_G / np.maximum(count_G - 1, 1)  # G/(G-1); a group of one is zeroed below
        adv_N = centered_N * factor_G[gidx_N]
    else:
        assert custom_fn is not None
        adv_N = _apply_custom(custom_fn, reward_N, gidx_N, num_groups, mode)

    # Uninformative groups: spread <= tol. maximum.at/minimum.at are slow per element but N is
    # the number of completions (hundreds), not tokens.
    hi_G = np.full(num_groups, -np.inf)
    lo_G = np.full(num_groups, np.inf)
    np.maximum.at(hi_G, gidx_N, reward_N)
    np.minimum.at(lo_G, gidx_N, reward_N)
    flat_G = (hi_G - lo_G) <= UNINFORMATIVE_TOL
    adv_N = np.where(flat_G[gidx_N], 0.0, adv_N)

    metrics: dict[str, float] = {
        "num_groups": num_groups,
        "num_informative_groups": int(np.sum(~flat_G)),
        "num_all_correct_groups": int(np.sum(flat_G & (mean_G >= CORRECT_THRESHOLD))),
        "num_all_wrong_groups": int(np.sum(flat_G & (mean_G < CORRECT_THRESHOLD))),
        "episode_adv_mean": float(np.mean(adv_N)) if adv_N.shape[0] else 0.0,
        "episode_adv_abs_mean": float(np.mean(np.abs(adv_N))) if adv_N.shape[0] else 0.0,
    }
    return adv_N, metrics


def _apply_custom(fn: AdvantageFn, reward_N: np.ndarray, gidx_N: np.ndarray,
                  num_groups: int, name: str) -> np.ndarray:
    adv_N = np.zeros_like(reward_N)
    # Loop over groups, not tokens: the user function maps one group's rewards.
    for g in range(num_groups):
        members = np.flatnonzero(gidx_N == g)
        out = _check_output(fn(reward_N[members].copy()), members.shape[0], name)
        adv_N[members] = out
    return adv_N


def _check_output(out: object, n: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(out, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"custom advantage {name!r} returned a non-numeric value: {exc}") from exc
    if arr.shape[0] != n:
        raise ValueError(f"custom advantage {name!r} returned {arr.shape[0]} values for {n} rewards")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"custom advantage {name!r} returned non-finite values: {arr.tolist()}")
    return arr


def load_custom_advantage(path: str) -> AdvantageFn:
    """Import `package.module:function` (or `file.py:function`) and check it on a sample group.

    The function gets a float64 rewards_G array and must return G finite advantages. Raises
    ValueError with a message naming the path on any failure (import, attribute, call, output).
    """
    from retrain.errors import DataError
    from retrain.plugins import ADVANTAGE_ARITY, check_arity, is_plugin_path, load_plugin

    if not is_plugin_path(path):
        raise ValueError(f"custom advantage must be 'package.module:function', got {path!r}")
    key = f"custom advantage {path!r}"
    try:
        fn = load_plugin(path, key)
        check_arity(fn, path, key, ADVANTAGE_ARITY)
    except DataError as exc:
        raise ValueError(str(exc)) from exc
    sample_G = np.array([0.0, 1.0, 1.0, 0.5])
    try:
        out = fn(sample_G.copy())
    except Exception as exc:  # any failure of user code is a config error
        raise ValueError(f"custom advantage {path!r} failed on rewards {sample_G.tolist()}: "
                         f"{type(exc).__name__}: {exc}") from exc
    _check_output(out, sample_G.shape[0], path)
    return fn
