"""`backend.name = "vllm"`: sampling by a vLLM engine in this process that serves the run's
current LoRA adapter; training, checkpoints and the final adapter by the local torch + peft code
(LocalBackend), so both backends write the same files.

Data flow: trainer ─▶ Backend protocol ─▶ **VllmBackend.sample**: adapter synced to the engine
(saved in PEFT format, one LoRARequest per version) ─▶ vLLM generate ─▶ Rollouts ─▶ a no-grad
forward of the trained model for entropies and the trainer's log-probs ─▶ train_step with
truncated importance sampling (`backend.is_cap`, docs/algorithms.md).

The engine is started once per process and shared by the runs that need the same engine
settings (`shared_engine`); each run serves its own adapter under an id unique in the process.

Randomness: each sequence is its own request whose seed is drawn from (seed, step, i), so a
sequence does not depend on the others in its batch; whether vLLM itself is bit-reproducible
across runs depends on its kernels (docs/backend.md states what was measured).
"""

from __future__ import annotations

import atexit
import itertools
import json
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrain.backend.base import Replay, Rollouts, SamplingParams
from retrain.backend.local.engine import LocalBackend
from retrain.backend.local.logprobs import build_batch, completion_logprobs
from retrain.backend.local.sampler import token_char_spans
from retrain.config.schema import RetrainConfig
from retrain.errors import MissingExtraError

ADAPTER_DIR = ".vllm-adapter"  # in the run dir: the adapter version the engine serves
# vLLM sizes its LoRA buffers for one of these ranks
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def sequence_seed(seed: int, step: int, index: int) -> int:
    """The vLLM request seed of sequence `index` of `step`: a hash of the three, so it does not
    depend on the batch it is sampled in."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0])


class VllmBackend(LocalBackend):
    """LocalBackend for training; a vLLM engine for sampling."""

    name = "vllm"

    def __init__(self, cfg: RetrainConfig, run_dir: Path, *, progress: bool = True) -> None:
        super().__init__(cfg, run_dir, progress=progress)
        self.is_cap = cfg.backend.is_cap  # its sampler is not the trained model
        # vLLM logs each engine step at INFO from several processes: keep errors only (set
        # VLLM_LOGGING_LEVEL yourself to see more); the env var reaches its worker processes
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        # ... and its engine processes (only they start after this) warn about torch APIs that
        # vLLM itself calls: not retrain's to fix, not the user's to read
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm", "backend.name = 'vllm'") from exc
        b = cfg.backend
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{b.kv_cache_space_gb:g}")
        kwargs: dict[str, Any] = {
            "model": self.model_path, "tokenizer": self.model_path, "dtype": cfg.model.dtype,
            "enable_lora": True, "max_loras": 1,
            "max_lora_rank": next(r for r in _VLLM_LORA_RANKS if r >= cfg.lora.rank),
            "enforce_eager": b.enforce_eager, "logprobs_mode": "processed_logprobs",
            "trust_remote_code": cfg.model.trust_remote_code}
        if b.max_model_len > 0:
            kwargs["max_model_len"] = b.max_model_len
        if self.device.type == "cuda":
            kwargs["gpu_memory_utilization"] = b.gpu_memory_utilization
        if multiprocessing.current_process().daemon:
            # a campaign's pool worker is daemonic and may not start processes: run the engine
            # core and its worker in this process
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            kwargs["distributed_executor_backend"] = "uni"
        self.llm = shared_engine(LLM, kwargs)
        self._version = 0  # adapter versions this run served
        self._lora_id = 0  # the engine-wide id of the current version
        self._synced_to = -1  # the train-step count the engine's adapter reflects
        self._steps = 0

    # --- adapter sync ----------------------------------------------------------------------

    def _lora_request(self) -> Any:
        from vllm.lora.request import LoRARequest

        if self._synced_to != self._steps:
            root = self.run_dir / ADAPTER_DIR
            shutil.rmtree(root, ignore_errors=True)
            self._version += 1
            self._lora_id = next(_LORA_IDS)
            self.model.save_pretrained(str(root / f"v{self._version}"), safe_serialization=True,
                                       selected_adapters=["default"])
            self._synced_to = self._steps
        return LoRARequest(f"{self.run_dir.name}-v{self._version}", self._lora_id,
                           str(self.run_dir / ADAPTER_DIR / f"v{self._version}"))

    # --- protocol ----------------------------------------------------------------------------

    def restore(self) -> dict[str, Any]:
        state = super().restore()
        self._steps += 1  # the weights changed: sync before the next sample
        return state

    def sample(self, prompts: Sequence[str], sampling: SamplingParams) -> Rollouts:
        from vllm import SamplingParams as VllmSampling

        g = sampling.n_per_prompt
        requests = [p for p in prompts for _ in range(g)]  # group-major, as the local sampler
        params = [VllmSampling(
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p, max_tokens=sampling.max_tokens,
            seed=sequence_seed(sampling.seed, sampling.step, i), logprobs=0)
            for i in range(len(requests))]
        outs = self.llm.generate(requests, params, lora_request=self._lora_request(), use_tqdm=False)
        prompt_ids, comp_ids, texts, lps, truncated = [], [], [], [], []
        for out in outs:
            c = out.outputs[0]
            prompt_ids.append(list(out.prompt_token_ids or []))
            comp_ids.append(list(c.token_ids))
            texts.append(c.text)
            lps.append([float(next(iter(d.values())).logprob) if d else 0.0 for d in (c.logprobs or [])])
            truncated.append(c.finish_reason == "length")
        lengths = np.array([len(ids) for ids in comp_ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rollouts = Rollouts(
            prompt_ids=prompt_ids, completion_ids=comp_ids, completion_text=texts,
            truncated=np.array(truncated, dtype=bool),
            logprob_T=np.array([x for seq in lps for x in seq], dtype=np.float32),
            entropy_T=np.zeros(int(offsets[-1]), dtype=np.float32),
            offsets=offsets,
            token_spans=[token_char_spans(self.tokenizer, ids, text) for ids, text in zip(comp_ids, texts, strict=True)],
            n_per_prompt=g, temperature=sampling.temperature, top_p=sampling.top_p,
            num_generated_tokens=int(offsets[-1]))
        rollouts.entropy_T = self._trainer_view(rollouts)
        return rollouts

    def _trainer_view(self, rollouts: Rollouts) -> np.ndarray:
        """Entropies of the trained model over the sampled tokens (vLLM does not return them);
        the uncertainty transforms read them."""
        if rollouts.num_generated_tokens == 0:
            return np.zeros(0, dtype=np.float32)
        pad = int(getattr(self.model.config, "pad_token_id", None) or 0)
        batch = build_batch(rollouts, list(range(rollouts.num_sequences)), pad, self.device)
        with torch.no_grad():
            _, ent = completion_logprobs(self.model, batch, temperature=rollouts.temperature,
                                         top_p=rollouts.top_p)
        return np.zeros(0, dtype=np.float32) if ent is None else ent.float().cpu().numpy()

    def train_step(self, rollouts: Rollouts, adv_T: np.ndarray, *, micro_batch_size: int,
                   replay: Replay | None = None) -> dict[str, float]:
        stats = super().train_step(rollouts, adv_T, micro_batch_size=micro_batch_size, replay=replay)
        self._steps += 1  # the weights changed: sync before the next sample
        return stats

    def load_adapter_from(self, path: Path) -> None:
        super().load_adapter_from(path)
        self._steps += 1  # the weights changed: sync before the next sample

    def close(self) -> None:
        # the engine stays up for the next run of this process (shared_engine); only this
        # run's adapter files go
        self.llm = None
        shutil.rmtree(self.run_dir / ADAPTER_DIR, ignore_errors=True)


# --- one engine per process and engine settings ------------------------------------------------

# Engine start-up costs 30-40 s on 2 cores: the runs of one process (a campaign's in-process
# executor, a pool worker) share an engine per set of engine arguments; LoRA ids are unique per
# process so that one run's adapter never answers for another's.
_ENGINES: dict[str, Any] = {}
_LORA_IDS = itertools.count(1)


def shared_engine(make: Any, kwargs: dict[str, Any]) -> Any:
    """The engine built with `kwargs` in this process, started on first use."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    if key not in _ENGINES:
        if not _ENGINES:
            atexit.register(shutdown_engines)
        _ENGINES[key] = make(**kwargs)
    return _ENGINES[key]


def shutdown_engines() -> None:
    """Stop every engine of this process (its worker processes with it)."""
    while _ENGINES:
        _, llm = _ENGINES.popitem()
        shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
