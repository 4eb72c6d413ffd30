"""Token uncertainty h(t): the signal that gtpo weights by and sepa pools.

Data flow: logprob_T / entropy_T from the sampler ──▶ h_T ──▶ sepa pooling ──▶ gtpo weights.
Kinds (`algorithm.uncertainty_kind`):

- `surprisal` — −log p(sampled token), capped at 50 nats. This is the *sampled token's*
  surprisal, not the entropy of the distribution; its expectation over sampling is the entropy
  (GTPO, arXiv 2508.04349, uses the entropy; surprisal is the estimate that needs no full
  vocabulary pass). The cap keeps one near-impossible token (logprob −1e4 after a top-p cut,
  for example) from dominating a completion's mean.
- `predictive_variance` — p(1 − p) of the sampled token, the variance of the Bernoulli
  "this token is sampled again", in [0, 1/4].
- `shannon_entropy` — the full-distribution entropy per token, which the backend must supply
  (`entropy_T`); asking for it without one is an error.

The logprobs are at the sampling temperature (the trainer's contract), so all kinds describe the
distribution the completion was actually drawn from.
"""

from __future__ import annotations

import numpy as np

from retrain.algo.modes import UNCERTAINTY_KINDS

SURPRISAL_CAP = 50.0  # nats


def surprisal(logprob_T: np.ndarray) -> np.ndarray:
    """min(−logprob, 50), float64 [T]."""
    out_T = np.negative(logprob_T, dtype=np.float64)
    return np.minimum(out_T, SURPRISAL_CAP, out=out_T)


def predictive_variance(logprob_T: np.ndarray) -> np.ndarray:
    """p(1 − p) of the sampled token, float64 [T]."""
    p_T = np.exp(logprob_T, dtype=np.float64)
    return p_T * (1.0 - p_T)


def token_uncertainty(kind: str, logprob_T: np.ndarray,
                      entropy_T: np.ndarray | None) -> np.ndarray:
    """h_T of the given kind, float64 [T]."""
    if kind == "surprisal":
        return surprisal(logprob_T)
    if kind == "predictive_variance":
        return predictive_variance(logprob_T)
    if kind == "shannon_entropy":
        if entropy_T is None:
            raise ValueError("uncertainty_kind 'shannon_entropy' needs entropy_T from the backend, "
                             "which supplied none; use 'surprisal' or a backend that reports it")
        return np.asarray(entropy_T, dtype=np.float64)
    raise ValueError(f"uncertainty_kind must be one of {UNCERTAINTY_KINDS}, got {kind!r}")
