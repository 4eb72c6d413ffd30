"""HICRA: amplify the advantage of planning tokens.

Data flow: adv_T (after gtpo) and planning_T ──▶ adv_T + α·|adv_T| on planning tokens.

Paper: "Emergent Hierarchical Reasoning in LLMs through Reinforcement Learning",
arXiv 2509.03646 (Hierarchy-Aware Credit Assignment). Deviations:
- planning tokens are found by matching strategic grams in the decoded text
  (`retrain.algo.planning`), not by the paper's semantic-clustering of "strategic grams" mined
  from a corpus; the default gram list is a fixed, configurable set of such phrases;
- the amplification is applied to the token advantage after gtpo weighting when both run, so a
  planning token's credit is A·w·(1 + α·sign); for a negative advantage, A + α|A| = (1 − α)·A
  shrinks the penalty, as in the paper.
"""

from __future__ import annotations

import numpy as np


def hicra(adv_T: np.ndarray, planning_T: np.ndarray, *, alpha: float) -> np.ndarray:
    """A(t) + α·|A(t)| where planning_T, A(t) elsewhere; a new float64 array [T]."""
    out_T = np.array(adv_T, dtype=np.float64, copy=True)
    hicra_inplace(out_T, np.flatnonzero(planning_T), alpha=alpha)
    return out_T


def hicra_inplace(adv_T: np.ndarray, plan_idx_P: np.ndarray, *, alpha: float) -> None:
    """`hicra` on `adv_T` in place, planning tokens given by index (they are sparse)."""
    if alpha < 0:
        raise ValueError(f"hicra alpha must be >= 0, got {alpha}")
    if alpha == 0.0 or plan_idx_P.shape[0] == 0:
        return
    a_P = adv_T[plan_idx_P]
    adv_T[plan_idx_P] = a_P + alpha * np.abs(a_P)
