"""A pack: K runs of one base model trained together in one process, one LoRA adapter per run.

Data flow: executors/packed.py ─▶ **Pack** (base model + K adapters) ─▶ one `PackMember` backend
per run ─▶ each run's own step loop (trainer/loop.py, in its own thread).

Every run keeps its own step loop, task, trainer state, SEPA and back-pressure state, sinks,
optimizer, LR schedule and checkpoints: a `PackMember` is an ordinary Backend to it. What the
pack shares is the model: a member's `sample` and `train_step` are handed to a rendezvous that
waits until every run still in the pack has asked for something, then serves all the requests
of a kind in one batched call (routing.py sends each run's rows through its adapter), in member
order. So the batches a pack forms depend only on what each run asks, never on thread timing:
a pack trained twice gives each run the same results, and a resumed pack (all runs checkpoint at
the same steps) forms the same batches again.

Sampling stays per run: sequence i of a run draws from (its seed, step, i) as alone.
One backward pass serves the whole pack: the loss is the sum of the runs' losses, and a run's
adapter only touches its own rows, so each adapter receives the gradient of its own loss; then
each run clips, steps its optimizer and its schedule (or skips / rolls back) on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel

from retrain.backend.base import Replay, Rollouts, SamplingParams
from retrain.backend.local.lora import apply_lora
from retrain.backend.local.pack_step import MemberBatch, packed_train_step
from retrain.backend.local.presets import (
    quiet_libraries,
    resolve_model_path,
    seed_everything,
    warmup_task,
)
from retrain.backend.local.routing import route
from retrain.backend.local.sampler import (
    build_rollouts,
    decode_chunk,
    encode_prompts,
    sequence_uniforms,
    special_ids,
)
from retrain.backend.local.warm import keep_base, load_base
from retrain.config.schema import RetrainConfig

if TYPE_CHECKING:
    from retrain.backend.local.pack_member import PackMember


@dataclass
class _Call:
    kind: str  # sample | train
    key: tuple[Any, ...]  # requests with equal keys are served by one batched call
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class Rendezvous:
    """Collects one request per active member; when every active member waits, runs them."""

    def __init__(self, members: int, serve: Callable[[dict[int, _Call]], None]) -> None:
        self.active = set(range(members))
        self.pending: dict[int, _Call] = {}
        self.serve = serve
        self.cond = threading.Condition()

    def submit(self, member: int, call: _Call) -> Any:
        with self.cond:
            if member not in self.active:
                raise RuntimeError(f"pack member {member} has left the pack")
            self.pending[member] = call
            self._serve_if_complete()
            while not call.done:
                self.cond.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def leave(self, member: int) -> None:
        with self.cond:
            self.active.discard(member)
            self._serve_if_complete()

    def _serve_if_complete(self) -> None:
        if not self.pending or set(self.pending) != self.active:
            return
        calls, self.pending = dict(sorted(self.pending.items())), {}
        try:
            self.serve(calls)
        finally:
            for call in calls.values():
                call.done = True
            self.cond.notify_all()


# Rows per batched decode: on 2 CPU cores a pack decodes ~1024-row chunks at 120 µs per
# sequence, 20,000 rows at once at 256 µs (memory traffic), and 64-row batches at 340 µs.
DECODE_ROWS = 1024


def adapter_name(index: int) -> str:
    return "default" if index == 0 else f"run{index}"


class Pack:
    """The shared base model with one adapter per run (adapter k initialised exactly as a run
    alone: torch seeded with run k's seed just before its LoRA is created)."""

    def __init__(self, cfgs: Sequence[RetrainConfig], *, progress: bool = False) -> None:
        quiet_libraries()
        first = cfgs[0]
        if first.backend.threads > 0:
            torch.set_num_threads(first.backend.threads)
        self.cfgs = list(cfgs)
        self.model_path = resolve_model_path(first, warmup_task(first), progress=progress)
        seed_everything(first.training.seed)  # as a run alone: load, then LoRA init
        base, self.tokenizer, self.device, self._warm_key = load_base(
            self.model_path, dtype=first.model.dtype, device=first.model.device,
            local_files_only=first.model.local_files_only,
            trust_remote_code=first.model.trust_remote_code)
        self.model: PeftModel = apply_lora(base, first.lora)
        template = self.model.peft_config["default"]
        for k, cfg in enumerate(cfgs[1:], start=1):
            seed_everything(cfg.training.seed)
            peft_cfg = PeftLoraConfig(
                r=cfg.lora.rank, lora_alpha=cfg.lora.alpha,  # type: ignore[arg-type]
                lora_dropout=0.0, target_modules=getattr(template, "target_modules", None),
                use_rslora=cfg.lora.use_rslora, bias="none", task_type="CAUSAL_LM")
            self.model.add_adapter(adapter_name(k), peft_cfg)
        self.params = [self._adapter_params(adapter_name(k)) for k in range(len(cfgs))]
        for group in self.params:
            for p in group:
                p.requires_grad_(True)
        self.members: list[PackMember | None] = [None] * len(cfgs)
        self.rendezvous = Rendezvous(len(cfgs), self._serve)

    def _adapter_params(self, name: str) -> list[torch.nn.Parameter]:
        marks = (f".lora_A.{name}.", f".lora_B.{name}.")
        return [p for n, p in self.model.named_parameters() if any(m in n for m in marks)]

    def member(self, index: int, cfg: RetrainConfig, run_dir: Path) -> PackMember:
        from retrain.backend.local.pack_member import PackMember

        m = PackMember(self, index, cfg, run_dir)
        self.members[index] = m
        return m

    def leave(self, index: int) -> None:
        self.rendezvous.leave(index)

    def close(self) -> None:
        """After every run has left: keep the base model for the process's next pack or run."""
        keep_base(self._warm_key, self.model, self.tokenizer, self.device)
        self.members = []

    # --- batched service (runs in whichever member thread completed the rendezvous) ---------

    def _serve(self, calls: dict[int, _Call]) -> None:
        groups: dict[tuple[Any, ...], dict[int, _Call]] = {}
        for k, call in calls.items():
            groups.setdefault((call.kind, *call.key), {})[k] = call
        for key in sorted(groups, key=repr):
            group = groups[key]
            try:
                results = self._sample(group) if key[0] == "sample" else self._train(group)
                for k, call in group.items():
                    call.result = results[k]
            except Exception as exc:  # noqa: BLE001 - every run of the failed batch learns why
                for call in group.values():
                    call.error = RuntimeError(f"the pack's batched {key[0]} failed: "
                                              f"{type(exc).__name__}: {exc}")

    def _sample(self, group: dict[int, _Call]) -> dict[int, Rollouts]:
        """All runs' sequences, decoded in chunks of about DECODE_ROWS rows: chunk j holds rows
        [j·m, (j+1)·m) of every run (m = DECODE_ROWS / runs), so blocks stay in run order."""
        t_start = time.perf_counter()
        eos_id, pad_id = special_ids(self.tokenizer)
        encoded: dict[int, list[list[int]]] = {}
        uniforms: dict[int, np.ndarray] = {}
        for k, call in group.items():
            prompts, sp = call.args
            encoded[k] = encode_prompts(self.tokenizer, list(prompts), sp.n_per_prompt)
            uniforms[k] = sequence_uniforms(sp.seed, sp.step, range(len(encoded[k])), sp.max_tokens)
        sp = next(iter(group.values())).args[1]
        rows = max(1, DECODE_ROWS // len(group))
        out_ids: dict[int, list[list[int]]] = {k: [] for k in group}
        out_lp: dict[int, list[list[float]]] = {k: [] for k in group}
        out_ent: dict[int, list[list[float]]] = {k: [] for k in group}
        prefill_s = 0.0
        self.model.eval()
        longest = max(len(e) for e in encoded.values())
        for lo in range(0, longest, rows):
            blocks = [(adapter_name(k), len(encoded[k][lo:lo + rows])) for k in group]
            seqs = [s for k in group for s in encoded[k][lo:lo + rows]]
            if not seqs:
                continue
            with route(self.model, blocks):
                ids, lps, ents, pre = decode_chunk(
                    self.model, seqs, np.concatenate([uniforms[k][lo:lo + rows] for k in group]),
                    max_tokens=sp.max_tokens, temperature=sp.temperature, top_p=sp.top_p,
                    greedy=sp.greedy, eos_id=eos_id, pad_id=pad_id, device=self.device)
            prefill_s += pre
            at = 0
            for k, (_, n) in zip(group, blocks, strict=True):
                out_ids[k] += ids[at:at + n]
                out_lp[k] += lps[at:at + n]
                out_ent[k] += ents[at:at + n]
                at += n
        out: dict[int, Rollouts] = {}
        for k, call in group.items():
            spk = call.args[1]
            out[k] = build_rollouts(self.tokenizer, encoded[k], out_ids[k], out_lp[k], out_ent[k],
                                    n_per_prompt=spk.n_per_prompt, max_tokens=spk.max_tokens,
                                    temperature=spk.temperature, top_p=spk.top_p,
                                    t_start=t_start, prefill_s=prefill_s)
        return out

    def _train(self, group: dict[int, _Call]) -> dict[int, dict[str, float]]:
        batches = []
        for k, call in group.items():
            rollouts, adv_T, micro = call.args
            member = self.members[k]
            assert member is not None
            batches.append(MemberBatch(
                index=k, adapter=adapter_name(k), params=self.params[k], optimizer=member.optimizer,
                scheduler=member.scheduler, rollouts=rollouts, adv_T=adv_T, micro_batch_size=micro,
                cfg_training=member.cfg.training, cfg_optimizer=member.cfg.optimizer,
                grad_norms=member.collect_grad_norms))
        return packed_train_step(self.model, batches)


def sample_call(prompts: Sequence[str], sampling: SamplingParams) -> _Call:
    key = (sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.greedy)
    return _Call("sample", key, (list(prompts), sampling))


def train_call(rollouts: Rollouts, adv_T: np.ndarray, micro_batch_size: int,
               replay: Replay | None) -> _Call:
    if replay is not None:
        raise RuntimeError("a packed run cannot replay earlier phases (multi-phase runs train alone)")
    return _Call("train", (rollouts.temperature, rollouts.top_p), (rollouts, adv_T, micro_batch_size))
