"""Ragged-batch helpers: a batch of completions is a flat token array plus `offsets`.

Completion i owns tokens `offsets[i]:offsets[i+1]`; `offsets` has N+1 entries, starts at 0 and
ends at T. Completions may be empty. Every per-completion reduction in `retrain.algo` goes
through these helpers so that the one classic bug — `np.add.reduceat` returns the element *at*
the start index for a zero-length segment instead of 0, and rejects a start index equal to T —
is handled in one place.
"""

from __future__ import annotations

import numpy as np


def check_offsets(offsets: np.ndarray, num_tokens: int) -> None:
    """Raise ValueError unless `offsets` is a valid N+1 offsets array over `num_tokens` tokens."""
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with N+1 >= 1 entries, got shape {offsets.shape}")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be integers, got {offsets.dtype}")
    if offsets[0] != 0 or offsets[-1] != num_tokens:
        raise ValueError(
            f"offsets must start at 0 and end at T={num_tokens}, got {offsets[0]}..{offsets[-1]}")
    if offsets.shape[0] > 1 and np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")


def lengths(offsets: np.ndarray) -> np.ndarray:
    """Tokens per completion, int64 [N]."""
    return np.diff(offsets).astype(np.int64, copy=False)


def segment_sum(x_T: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of `x_T` over each completion, float64 [N]; empty completions give 0."""
    n = offsets.shape[0] - 1
    out_N = np.zeros(n, dtype=np.float64)
    if n == 0 or x_T.shape[0] == 0:
        return out_N
    starts_N = offsets[:-1]
    nonempty_N = offsets[1:] > starts_N
    # reduceat over the starts of non-empty segments only: consecutive non-empty starts are
    # exactly segment boundaries (empty segments in between own no tokens), and every such
    # start is < T, which reduceat requires.
    out_N[nonempty_N] = np.add.reduceat(x_T, starts_N[nonempty_N], dtype=np.float64)
    return out_N


def segment_mean(x_T: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean of `x_T` over each completion, float64 [N]; empty completions give 0."""
    len_N = lengths(offsets)
    return segment_sum(x_T, offsets) / np.maximum(len_N, 1)


def broadcast(x_N: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-completion values repeated onto their tokens, [T]."""
    return np.repeat(x_N, lengths(offsets))


def segment_of(index_K: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Completion of each token index in `index_K` (sorted or not), int64 [K]."""
    return np.searchsorted(offsets, index_K, side="right").astype(np.int64) - 1


def pooled_mean_var(x_T: np.ndarray, mask_T: np.ndarray | None = None) -> tuple[float, float, int]:
    """Mean and population variance over the selected tokens of the whole batch, and their count.

    Pooled over tokens (not an average of per-completion or per-group variances). An empty
    selection gives (0.0, 0.0, 0) so that logged metrics are never NaN. Two-pass; use
    `split_mean_var` on full-size batches, which allocates nothing of size T.
    """
    sel_T = x_T if mask_T is None else x_T[mask_T]
    n = int(sel_T.shape[0])
    if n == 0:
        return 0.0, 0.0, 0
    mean = float(np.mean(sel_T, dtype=np.float64))
    dev_T = sel_T - mean
    return mean, float(np.dot(dev_T, dev_T) / n), n


def split_mean_var(x_T: np.ndarray, plan_idx_P: np.ndarray) -> tuple[float, float, float, float]:
    """(exec mean, exec var, plan mean, plan var) pooled over tokens; planning = `plan_idx_P`.

    Planning tokens are few, so they are gathered (size P) and their statistics are two-pass;
    the execution statistics are the batch totals minus the planning ones, from sums and sums of
    squares (no temporary of size T: on a 262k-token batch each such temporary costs ~1 ms of
    page faults). The one-pass variance loses about eps·mean²/var in relative precision,
    ~1e-13 for token uncertainties; it is clipped at 0. Empty selections give 0.0.
    """
    n_all = x_T.shape[0]
    x_P = np.asarray(x_T[plan_idx_P], dtype=np.float64)
    n_plan = x_P.shape[0]
    plan_mean, plan_var, _ = pooled_mean_var(x_P)
    n_exec = n_all - n_plan
    if n_exec == 0:
        return 0.0, 0.0, plan_mean, plan_var
    sum_all = float(np.sum(x_T, dtype=np.float64))
    sq_all = float(np.dot(x_T, x_T))
    sum_exec = sum_all - float(np.sum(x_P))
    sq_exec = sq_all - float(np.dot(x_P, x_P))
    exec_mean = sum_exec / n_exec
    exec_var = max(0.0, sq_exec / n_exec - exec_mean * exec_mean)
    return exec_mean, exec_var, plan_mean, plan_var
