"""What `retrain explain` needs of one step, written by the step loop into the run directory.

Data flow: `_one_step` (loop.py), right after the advantage stage and before the optimizer step,
hands this module the step's prompts, rollouts, rewards, planning mask, the sepa λ it used and the
final adv_T it is about to train on; every `logging.explain_every` steps (and at the last step)
they go to `<run>/explain/step_NNNNNN.npz`. `retrain.analysis.explain` reads the file back and
recomputes the advantages from it alone, so the file carries the inputs of
`compute_advantages` exactly as the trainer passed them (same dtypes: float32 logprobs stay
float32) and the algorithm settings of that step (a multi-phase run's phase may differ from the
run's config.toml).

Format (numpy .npz, zlib-compressed, no pickled objects; docs/logging.md):
    meta        uint8   UTF-8 JSON: format, step, sepa_lambda, algorithm settings, group_size,
                        prompts (one per group), completions (one per sequence), phase
    logprob_T   float   sampled-token logprob, as given to the pipeline
    entropy_T   float   per-token entropy (absent when the backend gives none)
    planning_T  bool    planning-token mask
    offsets     int32   [N+1] token offsets of each sequence
    spans_T     int32   [T, 2] char span of each token in its completion text (absent if the
                        backend's spans do not cover every token)
    reward_N    float64 rewards;  group_N int32 group of each sequence;  truncated_N bool
    adv_T       float64 the advantages the trainer trained on
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrain.backend.base import Rollouts
from retrain.config.schema import RetrainConfig
from retrain.io import atomic_write_bytes
from retrain.tasks.base import Problem
from retrain.trainer.stages import Advantaged

if TYPE_CHECKING:
    from retrain.trainer.setup import RunContext

EXPLAIN_DIR = "explain"
FORMAT_VERSION = 1


def explain_path(run_dir: Path, step: int) -> Path:
    return run_dir / EXPLAIN_DIR / f"step_{step:06d}.npz"


def explain_due(step: int, *, every: int, last_step: int) -> bool:
    """Record this step? Every `every`-th step and the run's last one; never when every = 0."""
    return every > 0 and (step % every == 0 or step == last_step)


def algorithm_settings(cfg: RetrainConfig) -> dict[str, object]:
    """The settings `compute_advantages` reads, named as its keyword arguments."""
    a = cfg.algorithm
    return {"advantage_mode": a.advantage_mode, "scale": a.scale, "eps": a.eps,
            "transform_mode": a.transform_mode, "uncertainty_kind": a.uncertainty_kind,
            "gtpo_beta": cfg.gtpo.beta, "gtpo_max_weight": cfg.gtpo.max_weight,
            "hicra_alpha": cfg.hicra.alpha}


def record_explain(ctx: RunContext, step: int, problems: Sequence[Problem], rollouts: Rollouts,
                   reward_N: np.ndarray, adv: Advantaged, *, sepa_lambda: float) -> Path | None:
    """Write the step's explain record when it is due; the path written, or None.

    `ctx.cfg` is the config of this step (a multi-phase run's phase config), so the settings in
    the record are the ones the step used.
    """
    cfg = ctx.cfg
    if not explain_due(step, every=cfg.logging.explain_every, last_step=cfg.training.max_steps):
        return None
    g = cfg.training.group_size
    slot = ctx.phases.slot if ctx.phases is not None else None
    data = encode_record(step, settings=algorithm_settings(cfg), group_size=g,
                         prompts=[p.prompt for p in problems],
                         rollouts=rollouts, reward_N=reward_N, planning_T=adv.planning_T,
                         adv_T=adv.adv_T, sepa_lambda=sepa_lambda,
                         phase=slot.name if slot is not None else None)
    path = explain_path(ctx.run_dir, step)
    atomic_write_bytes(path, data)  # a resumed run re-runs the step and replaces the file
    return path


def encode_record(step: int, *, settings: dict[str, object], group_size: int,
                  prompts: Sequence[str], rollouts: Rollouts, reward_N: np.ndarray,
                  planning_T: np.ndarray, adv_T: np.ndarray, sepa_lambda: float,
                  phase: str | None = None) -> bytes:
    """The .npz bytes of one step (pure: no file system)."""
    n = len(rollouts.completion_text)
    num_tokens = int(rollouts.offsets[-1])
    index_dtype = np.int32 if num_tokens < 2**31 else np.int64  # a 2^31-token step is not a thing
    meta = {"format": FORMAT_VERSION, "step": step, "sepa_lambda": float(sepa_lambda),
            "algorithm": settings, "group_size": group_size, "phase": phase,
            "prompts": list(prompts), "completions": list(rollouts.completion_text)}
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8),
        # as passed to the pipeline: casting here would make the recomputation inexact
        "logprob_T": np.asarray(rollouts.logprob_T),
        "planning_T": np.asarray(planning_T, dtype=np.bool_),
        "offsets": np.asarray(rollouts.offsets).astype(index_dtype),
        "reward_N": np.asarray(reward_N),
        "group_N": (np.arange(n) // group_size).astype(np.int32),
        "truncated_N": np.asarray(rollouts.truncated, dtype=np.bool_),
        "adv_T": np.asarray(adv_T, dtype=np.float64),
    }
    if rollouts.entropy_T is not None:
        arrays["entropy_T"] = np.asarray(rollouts.entropy_T)
    spans = [np.asarray(s).reshape(-1, 2) for s in rollouts.token_spans]
    if len(spans) == n and sum(s.shape[0] for s in spans) == num_tokens:
        arrays["spans_T"] = (np.concatenate(spans) if spans else np.zeros((0, 2))).astype(index_dtype)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
