"""GTPO token weighting: scale each token's advantage by its relative uncertainty.

Data flow: adv_N (episode) and h_T (after sepa pooling) ──▶ w_T ──▶ adv_T = A_i · w_T.

Paper: "GTPO and GRPO-S: Token and Sequence-Level Reward Shaping with Policy Entropy",
arXiv 2508.04349. Deviations (a simplified, multiplicative form):
- the paper redistributes a reward bonus by each token's share of the group's summed entropy,
  separately for positive and negative samples; here each completion is weighted on its own:
  w(t) = max(0, 1 + β · (h(t) / mean_h − 1)), mean_h the completion's mean uncertainty. Before
  the floor the weights average exactly 1 over the completion, so β only redistributes credit
  within the completion and never changes its total;
- β = 0, or mean_h < 1e-7 (a completion of certain tokens), gives uniform weights 1;
- the floor at 0 keeps the sign of every token's advantage (a very certain token at large β
  would otherwise flip its sign);
- optional `max_weight` cap: surprisal can reach the 50-nat cap, and in a completion of mostly
  certain tokens (mean_h ≈ 0.2) one such token gets w ≈ 1 + 0.1·(50/0.2 − 1) ≈ 26 at β = 0.1 —
  one token carrying the update of 26. The cap bounds that; unset means no cap, as in the paper.
"""

from __future__ import annotations

import numpy as np

from retrain.algo import ragged

MIN_MEAN_UNCERTAINTY = 1e-7


def gtpo_weights(h_T: np.ndarray, offsets: np.ndarray, *, beta: float,
                 max_weight: float | None = None) -> np.ndarray:
    """Per-token weights w_T, float64 [T]; mean 1 per completion before the floor and cap."""
    if beta < 0:
        raise ValueError(f"gtpo beta must be >= 0, got {beta}")
    if max_weight is not None and max_weight <= 0:
        raise ValueError(f"gtpo max_weight must be > 0, got {max_weight}")
    if beta == 0.0:
        return np.ones(h_T.shape[0], dtype=np.float64)
    mean_N = ragged.segment_mean(h_T, offsets)
    active_N = mean_N >= MIN_MEAN_UNCERTAINTY
    # w = slope·h + (1 − β) with slope = β/mean_h, computed in one buffer.
    slope_N = np.where(active_N, beta / np.where(active_N, mean_N, 1.0), 0.0)
    w_T = ragged.broadcast(slope_N, offsets)
    w_T *= h_T
    w_T += 1.0 - beta
    # Uniform completions are rare (all tokens certain): a loop over them sets exactly 1.
    for i in np.flatnonzero(~active_N):
        w_T[offsets[i]:offsets[i + 1]] = 1.0
    np.maximum(w_T, 0.0, out=w_T)
    if max_weight is not None:
        np.minimum(w_T, max_weight, out=w_T)
    return w_T
