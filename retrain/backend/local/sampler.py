"""Batched sampling with a hand-written KV-cache decode loop.

Data flow: prompts ─▶ **sample** ─▶ Rollouts ─▶ rewards / advantages ─▶ loss (logprobs.py).

Why not `model.generate`: the randomness of sequence i must depend only on (seed, step, i), never
on which other sequences share its batch. Then chunking generation (back-pressure in concurrency
mode) or resuming from a checkpoint does not change what is sampled. `generate` draws from one
global generator for the whole batch, so every chunk size would give different samples. Here each
sequence gets its own stream of uniforms and a token is drawn by inverse-CDF from the processed
(temperature-scaled, top-p-filtered) distribution; the log-prob and entropy of exactly that
distribution are recorded for the loss and for the uncertainty transforms.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from retrain.backend.base import Rollouts

__all__ = ["Rollouts", "build_rollouts", "encode_prompts", "entropy_of", "positions_from_mask",
           "process_logits", "sample", "special_ids"]


def process_logits(
    logits: torch.Tensor, temperature: float, top_p: float, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probs of the distribution actually sampled from: logits / T, then nucleus filter.

    logits: [..., V] -> [..., V] float32 log-probs, filtered tokens at -inf. `keep` ([...] token
    ids) forces a token to stay in the nucleus; the training forward uses it so that a sampled
    token sitting on the nucleus boundary never gets -inf from float noise.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [..., V]
    if top_p >= 1.0:
        return logp
    sorted_logp, order = torch.sort(logp, dim=-1, descending=True)  # [..., V]
    mass_before = sorted_logp.exp().cumsum(dim=-1) - sorted_logp.exp()  # [..., V]
    drop_sorted = mass_before >= top_p  # the top token always stays (mass_before = 0)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # [..., V]
    if keep is not None:
        drop.scatter_(-1, keep.unsqueeze(-1), False)
    return torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)


def entropy_of(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of a log-prob distribution with -inf entries. [..., V] -> [...]."""
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(dim=-1)


def sequence_uniforms(seed: int, step: int, seq_indices: range, max_tokens: int) -> np.ndarray:
    """[n, max_tokens] float64 uniforms in (0, 1]: one independent stream per global sequence index."""
    rows = [
        1.0 - np.random.default_rng([seed, step, i]).random(max_tokens) for i in seq_indices
    ]
    return np.stack(rows) if rows else np.zeros((0, max_tokens))


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids [B, L], attention_mask [B, L], padded on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding. [B, L] -> [B, L]."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def decode_chunk(
    model: torch.nn.Module,
    prompts: list[list[int]],
    uniforms: np.ndarray,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    eos_id: int | None,
    pad_id: int,
    device: torch.device,
) -> tuple[list[list[int]], list[list[float]], list[list[float]], float]:
    """Prefill + decode for one chunk. Returns ids, logprobs, entropies per sequence, prefill time."""
    t0 = time.perf_counter()
    ids, mask = _left_pad(prompts, pad_id)  # [B, L]
    ids, mask = ids.to(device), mask.to(device)
    pos = positions_from_mask(mask)  # [B, L]
    u = torch.from_numpy(uniforms).to(device)  # [B, max_tokens]
    cache = DynamicCache()
    cache_kw = {_cache_kwarg(model): cache}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                use_cache=True, logits_to_keep=1, **cache_kw)
    prefill_s = time.perf_counter() - t0
    n = ids.shape[0]
    next_pos = pos[:, -1] + 1  # [B]
    done = torch.zeros(n, dtype=torch.bool, device=device)  # [B]
    tok_steps: list[torch.Tensor] = []
    lp_steps: list[torch.Tensor] = []
    ent_steps: list[torch.Tensor] = []
    for t in range(max_tokens):
        logp = process_logits(out.logits[:, -1, :], temperature, top_p)  # [B, V]
        if greedy:
            tok = logp.argmax(dim=-1)  # [B]
        else:
            cdf = logp.double().exp().cumsum(dim=-1)  # [B, V]
            target = (u[:, t] * cdf[:, -1]).unsqueeze(-1)  # [B, 1]
            tok = torch.searchsorted(cdf, target).squeeze(-1).clamp(max=cdf.shape[-1] - 1)  # [B]
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        is_eos = (tok == eos_id) if eos_id is not None else torch.zeros_like(done)  # [B]
        tok_steps.append(tok)
        lp_steps.append(logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1))
        ent_steps.append(entropy_of(logp))
        done = done | is_eos
        if t == max_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, (~done | is_eos).long().unsqueeze(-1)], dim=-1)  # [B, L+t+1]
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask,
                    position_ids=next_pos.unsqueeze(-1), use_cache=True, **cache_kw)
        next_pos = next_pos + 1
    toks = torch.stack(tok_steps, dim=1).cpu()  # [B, t]
    lps = torch.stack(lp_steps, dim=1).cpu()  # [B, t]
    ents = torch.stack(ent_steps, dim=1).cpu()  # [B, t]
    ids_out: list[list[int]] = []
    lp_out: list[list[float]] = []
    ent_out: list[list[float]] = []
    for row in range(n):
        seq = toks[row].tolist()
        length = len(seq)
        if eos_id is not None and eos_id in seq:
            length = seq.index(eos_id) + 1
        ids_out.append(seq[:length])
        lp_out.append(lps[row, :length].tolist())
        ent_out.append(ents[row, :length].tolist())
    return ids_out, lp_out, ent_out, prefill_s


def token_char_spans(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> np.ndarray:
    """[T, 2] char span of each token in `text` (special tokens get an empty span)."""
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) != text:  # merges across tokens (byte-level, sentencepiece): decode prefixes
        pieces = []
        prev = ""
        for k in range(len(ids)):
            cur = str(tokenizer.decode(ids[: k + 1], skip_special_tokens=True))
            pieces.append(cur[len(prev):] if cur.startswith(prev) else cur)
            prev = cur
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    starts = ends - np.array([len(p) for p in pieces], dtype=np.int64)
    return np.stack([starts, np.minimum(ends, len(text))], axis=1) if ids else np.zeros((0, 2), np.int64)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """The forward() keyword for the KV cache: `cache` in newer transformers (where
    `past_key_values` is deprecated and warns), `past_key_values` before."""
    get_base = getattr(model, "get_base_model", None)  # a peft model wraps the transformers one
    base = get_base() if callable(get_base) else model
    try:
        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def sample(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    n_per_prompt: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    step: int,
    chunk_size: int | None = None,
    greedy: bool = False,
    device: torch.device | str = "cpu",
) -> Rollouts:
    """Sample n_per_prompt completions per prompt; chunk_size = sequences in flight (None = all)."""
    t_start = time.perf_counter()
    device = torch.device(device)
    seq_prompts = encode_prompts(tokenizer, prompts, n_per_prompt)
    n_seq = len(seq_prompts)
    chunk = n_seq if not chunk_size or chunk_size <= 0 else chunk_size
    eos_id, pad_id = special_ids(tokenizer)
    was_training = model.training
    model.eval()
    ids_all: list[list[int]] = []
    lp_all: list[list[float]] = []
    ent_all: list[list[float]] = []
    prefill_s = 0.0
    try:
        for lo in range(0, n_seq, chunk):
            hi = min(lo + chunk, n_seq)
            u = sequence_uniforms(seed, step, range(lo, hi), max_tokens)
            ids, lps, ents, pre = decode_chunk(
                model, seq_prompts[lo:hi], u, max_tokens=max_tokens, temperature=temperature,
                top_p=top_p, greedy=greedy, eos_id=eos_id, pad_id=pad_id, device=device)
            ids_all += ids
            lp_all += lps
            ent_all += ents
            prefill_s += pre
    finally:
        model.train(was_training)
    return build_rollouts(tokenizer, seq_prompts, ids_all, lp_all, ent_all,
                          n_per_prompt=n_per_prompt, max_tokens=max_tokens, temperature=temperature,
                          top_p=top_p, t_start=t_start, prefill_s=prefill_s)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], n_per_prompt: int) -> list[list[int]]:
    """The prompt ids of every sequence, group-major: sequence i continues prompt i // n_per_prompt."""
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return [list(encoded[i // n_per_prompt]) for i in range(len(prompts) * n_per_prompt)]


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int | None, int]:
    """(eos id or None, pad id): the pad falls back to eos, then 0."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_id or 0)
    return eos_id, pad_id


def build_rollouts(tokenizer: PreTrainedTokenizerBase, seq_prompts: list[list[int]],
                   ids_all: list[list[int]], lp_all: list[list[float]], ent_all: list[list[float]],
                   *, n_per_prompt: int, max_tokens: int, temperature: float, top_p: float,
                   t_start: float, prefill_s: float) -> Rollouts:
    """Decoded texts, token spans and flat arrays of sampled sequences, as a Rollouts."""
    eos_id = tokenizer.eos_token_id
    n_seq = len(seq_prompts)
    t_gen = time.perf_counter()
    texts = tokenizer.batch_decode(ids_all, skip_special_tokens=True)
    lengths = np.array([len(s) for s in ids_all], dtype=np.int64)
    offsets = np.zeros(n_seq + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    truncated = np.array(
        [len(s) >= max_tokens and (eos_id is None or s[-1] != eos_id) for s in ids_all], dtype=bool)
    spans = [token_char_spans(tokenizer, ids, txt) for ids, txt in zip(ids_all, texts, strict=True)]
    flat_lp = np.array([x for row in lp_all for x in row], dtype=np.float32)
    flat_ent = np.array([x for row in ent_all for x in row], dtype=np.float32)
    t_end = time.perf_counter()
    return Rollouts(
        prompt_ids=seq_prompts, completion_ids=ids_all, completion_text=texts, truncated=truncated,
        logprob_T=flat_lp, entropy_T=flat_ent, offsets=offsets, token_spans=spans,
        n_per_prompt=n_per_prompt, temperature=temperature, top_p=top_p,
        num_generated_tokens=int(lengths.sum()),
        timings={"prefill_s": prefill_s, "decode_s": t_gen - t_start - prefill_s,
                 "postprocess_s": t_end - t_gen, "total_s": t_end - t_start})
