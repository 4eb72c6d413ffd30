"""The Backend protocol: what the step loop asks of a training engine, and the values it trades.

Data flow: trainer ─▶ **Backend** (sample ─▶ Rollouts; train_step(Rollouts, adv_T) ─▶ stats;
checkpoints, adapter; adapter_arrays ─▶ hooks). The trainer imports only this module; `registry.build_backend` picks the
implementation named by `backend.name` (`local`: torch + peft in this process). Nothing here
imports torch, so the algorithm code and the CLI stay light.

Shape suffixes: `_N` one entry per sequence (N = prompts × group size), `_T` one per completion
token, flat over all sequences (sequence i owns `[offsets[i], offsets[i+1])`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class Rollouts:
    """N = len(prompts) * n_per_prompt sequences; sequence i answers prompt i // n_per_prompt."""

    prompt_ids: list[list[int]]  # per sequence, unpadded (special tokens included)
    completion_ids: list[list[int]]  # per sequence; EOS included when produced
    completion_text: list[str]  # decoded without special tokens
    truncated: np.ndarray  # [N] bool: hit max_tokens without EOS
    logprob_T: np.ndarray  # [T_total] float32, flat over all completion tokens
    entropy_T: np.ndarray  # [T_total] float32, entropy of the distribution sampled from
    offsets: np.ndarray  # [N + 1] int64: tokens of sequence i are [offsets[i], offsets[i+1])
    token_spans: list[np.ndarray]  # per sequence [T_i, 2] int64 char span in completion_text
    n_per_prompt: int
    temperature: float
    top_p: float
    num_generated_tokens: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_sequences(self) -> int:
        return len(self.completion_ids)

    @property
    def prompt_index(self) -> np.ndarray:
        """[N] int64: which prompt each sequence answers."""
        return np.arange(self.num_sequences, dtype=np.int64) // self.n_per_prompt

    @property
    def lengths(self) -> np.ndarray:
        """[N] int64 completion lengths in tokens."""
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Replay:
    """Which sequences of a step replay earlier phases' prompts (multi-phase runs), and the
    weight of their k3 KL to the teacher adapter (0: no teacher term)."""

    mask_N: np.ndarray  # [N] bool
    kl_beta: float = 0.0


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: `n_per_prompt` completions of at most `max_tokens` per prompt. The noise of
    sequence i depends only on (seed, step, i); `greedy` takes the argmax instead; `chunk_size`
    caps the sequences decoded at once (back-pressure), without changing what is sampled."""

    n_per_prompt: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    step: int
    greedy: bool = False
    chunk_size: int | None = None


@dataclass(frozen=True)
class LoraArrays:
    """One LoRA module's trainable factors, copied out of the engine: its update is scale · B @ A."""

    a: np.ndarray  # [r, d_in] float32
    b: np.ndarray  # [d_out, r] float32
    scale: float  # alpha / r (alpha / sqrt(r) with rslora)


class Backend(Protocol):
    """A training engine for one run: it owns the model, the adapter and the optimizer."""

    name: str
    model_path: str  # what was loaded (a Hub id, or a built model's directory)
    params: dict[str, int]  # {"total", "trainable", ...} parameter counts
    # When true, train_step also returns each LoRA module's grad norm (before clipping) as
    # "grad_norm/<module>" (the `grad` hook turns it on; off it costs nothing)
    collect_grad_norms: bool

    def restore(self) -> dict[str, Any]:
        """Load the newest intact checkpoint of the run dir; returns the trainer state saved with it."""
        ...

    def sample(self, prompts: Sequence[str], sampling: SamplingParams) -> Rollouts:
        """Completions of every prompt with the current adapter."""
        ...

    def train_step(self, rollouts: Rollouts, adv_T: np.ndarray, *, micro_batch_size: int,
                   replay: Replay | None = None) -> dict[str, float]:
        """One optimizer step on the rollouts weighted by per-token advantages; its statistics
        (loss, grad_norm, lr, clip_frac, kl, skipped, rolled_back, trained_tokens, ...; with
        `replay`: loss_new, loss_old, teacher_kl; with `collect_grad_norms`: grad_norm/<module>)."""
        ...

    def set_teacher(self, path: Path | None) -> None:
        """Load the adapter saved at `path` as the frozen teacher of the replay KL (None: drop it)."""
        ...

    def save_checkpoint(self, step: int, trainer_state: dict[str, Any]) -> Path:
        """Write `checkpoints/step_{step:06d}/` (adapter, optimizer, scheduler, trainer_state, RNG)."""
        ...

    def save_adapter(self) -> Path:
        """Write the final `adapter/` (PEFT format, with the tokenizer files)."""
        ...

    def save_adapter_to(self, path: Path) -> Path:
        """Write the current adapter alone (PEFT format, no optimizer) to `path`, atomically:
        the snapshots of a multi-phase run's ledger."""
        ...

    def load_adapter_from(self, path: Path) -> None:
        """Make the trainable adapter weights exactly those saved in `path` (a rollback)."""
        ...

    def set_lr(self, lr: float) -> None:
        """Use `lr` as the base learning rate from the next step on (the schedule still applies)."""
        ...

    def adapter_arrays(self) -> dict[str, LoraArrays]:
        """Copies of every LoRA module's factors, by module name (the hooks `norms`, `rank`)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, memory); the run is over."""
        ...
