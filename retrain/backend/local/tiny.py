"""The embedded default model: a small Llama with a character-level tokenizer, warmed up and cached.

Data flow: `model = "tiny"` ─▶ **ensure_tiny_model** ─▶ a model directory ─▶ load_model_and_tokenizer.

No model can be downloaded here, so `tiny`/`small` are built from a `LlamaConfig`, trained with a
converging cycle of supervised steps on the task's demonstrations (loss on the completion + EOS
only), then saved with `save_pretrained`. Demonstrations come from `task.demonstration` when the
task has one: arithmetic shows a dropped carry on a share of them (`model.warmup_flaw_rate`), so
the warmed-up policy is stochastic exactly where RL can improve it; see docs/getting-started.md.
The entry is keyed by a hash of everything that changes the weights. Builders take an exclusive
lock (filelock) on the entry's lock file, build into a temp dir and rename it into place, so two processes
asking for the same entry build it once and the second just loads it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from retrain.backend.local.cache import (  # noqa: F401  (re-exported: the cache API)
    FORMAT_VERSION,
    META_FILE,
    PRESETS,
    cache_key,
    cache_root,
    entry_dir,
)
from retrain.io import atomic_write_json, share_tree, temp_dir

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

PairsFn = Callable[[int, int], list[tuple[str, str]]]
CorrectFn = Callable[[int, str], bool]  # (index of the eval pair, completion) -> correct


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII char (plus \\n, \\t), <bos> prepended, left padding."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in ["\n", "\t", *map(chr, range(32, 127))]:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()  # concatenate, no spaces between tokens
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False)


def build_random_model(preset: str, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A randomly initialised LlamaForCausalLM of the given preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    dims = PRESETS[preset]
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=dims["hidden_size"],
        num_hidden_layers=dims["num_hidden_layers"], num_attention_heads=dims["num_attention_heads"],
        num_key_value_heads=dims["num_attention_heads"], intermediate_size=dims["intermediate_size"],
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False)  # untied learned faster and more reliably in warm-up
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _supervised_batch(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded <bos> prompt answer <eos>; labels only on answer + eos. -> ids, mask, labels [B, L]."""
    rows: list[tuple[list[int], int]] = []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + a, len(p)))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (seq, n_prompt) in enumerate(rows):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        labels[r, n_prompt: len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, mask, labels


def _train_phase(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs_fn: PairsFn, *,
    first_step: int, steps: int, lr: float, batch_size: int, progress: bool,
) -> float:
    """One cosine cycle (5% linear warm-up, decay to 0) of AdamW; returns the last batch loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.1)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * s / max(1, steps))))
    model.train()
    loss_val = float("nan")
    for k in range(steps):
        step = first_step + k
        ids, mask, labels = _supervised_batch(tokenizer, pairs_fn(step * batch_size, batch_size))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # answer + eos only
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if progress and (k % 100 == 0 or k == steps - 1):
            print(f"[warm-up] step {step + 1} loss {loss_val:.4f}", file=sys.stderr, flush=True)
    model.eval()
    return loss_val


def warm_up(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs_fn: PairsFn, *,
    steps: int, lr: float, batch_size: int, seed: int, progress: bool = True,
    eval_pairs: list[tuple[str, str]] | None = None, is_correct: CorrectFn | None = None,
    eval_max_tokens: int | None = None,
) -> tuple[float, float, int]:
    """Supervised warm-up, one cosine cycle; returns (final loss, greedy accuracy, steps taken).

    The cycle is long enough to converge on the demonstrations (1500 steps by default): a warm-up
    stopped mid-transition leaves a policy whose RL objective is too sharp to climb (issue 12).
    The greedy accuracy on `eval_pairs` is only measured and recorded, never a stopping rule.
    """
    torch.manual_seed(seed)
    loss = _train_phase(model, tokenizer, pairs_fn, first_step=0, steps=steps, lr=lr,
                        batch_size=batch_size, progress=progress)
    accuracy = (greedy_accuracy(model, tokenizer, eval_pairs, is_correct=is_correct,
                                max_tokens=eval_max_tokens) if eval_pairs else float("nan"))
    return loss, accuracy, steps


def greedy_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]],
    *, max_tokens: int | None = None, is_correct: CorrectFn | None = None,
) -> float:
    """Fraction of prompts whose greedy completion is correct.

    `is_correct(i, completion)` judges pair i (the task's own check); without it the completion
    must equal the answer, whitespace-stripped.
    """
    from retrain.backend.local.sampler import sample

    if not pairs:
        return float("nan")
    if max_tokens is None:  # room for the longest answer, EOS and a little slack
        max_tokens = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in pairs) + 2
    roll = sample(model, tokenizer, [p for p, _ in pairs], n_per_prompt=1, max_tokens=max_tokens,
                  temperature=1.0, top_p=1.0, seed=0, step=0, greedy=True)
    if is_correct is None:
        hits = [txt.strip() == ans.strip()
                for txt, (_, ans) in zip(roll.completion_text, pairs, strict=True)]
    else:
        hits = [is_correct(i, txt) for i, txt in enumerate(roll.completion_text)]
    return float(np.mean(hits))


def ensure_tiny_model(
    preset: str,
    *,
    pairs_fn: PairsFn,
    task_key: dict,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    cache_dir: Path | None = None,
    eval_pairs: list[tuple[str, str]] | None = None,
    is_correct: CorrectFn | None = None,
    eval_max_tokens: int | None = None,
    progress: bool = True,
) -> Path:
    """Return the cached model dir for these settings, building it first if needed (process-safe)."""
    key = cache_key(preset, task_key=task_key, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    final = entry_dir(preset, key, cache_dir)
    models_dir = final.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    if (final / META_FILE).exists():
        return final
    with FileLock(models_dir / f".{preset}-{key}.lock"):  # a second builder waits here, then finds the entry
        if (final / META_FILE).exists():
            return final
        _build_entry(preset, final, key=key, pairs_fn=pairs_fn, task_key=task_key, steps=steps,
                     lr=lr, batch_size=batch_size, seed=seed, eval_pairs=eval_pairs,
                     is_correct=is_correct, eval_max_tokens=eval_max_tokens, progress=progress)
    return final


def _build_entry(
    preset: str, final: Path, *, key: str, pairs_fn: PairsFn, task_key: dict, steps: int,
    lr: float, batch_size: int, seed: int, eval_pairs: list[tuple[str, str]] | None,
    is_correct: CorrectFn | None, eval_max_tokens: int | None, progress: bool,
) -> None:
    t0 = time.perf_counter()
    random.seed(seed)
    np.random.seed(seed)
    tokenizer = build_char_tokenizer()
    model = build_random_model(preset, tokenizer, seed)
    if progress:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"[tiny] building {final.name}: {n_params:,} params, {steps} warm-up steps",
              file=sys.stderr, flush=True)
    final_loss, accuracy, steps_done = warm_up(
        model, tokenizer, pairs_fn, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
        progress=progress, eval_pairs=eval_pairs, is_correct=is_correct,
        eval_max_tokens=eval_max_tokens)
    build_s = time.perf_counter() - t0
    if progress:
        print(f"[tiny] warm-up done in {build_s:.1f}s: loss {final_loss:.4f}, greedy accuracy "
              f"{accuracy:.1%} on {len(eval_pairs or [])} held-out pairs", file=sys.stderr, flush=True)
    tmp = temp_dir(final.parent, prefix=f".{final.name}.tmp-")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, {
            "preset": preset, "key": key, "format_version": FORMAT_VERSION, "task": task_key,
            "warmup_steps": steps, "warmup_steps_done": steps_done, "warmup_lr": lr, "warmup_batch_size": batch_size, "seed": seed,
            "warmup_final_loss": final_loss,
            "warmup_accuracy": None if np.isnan(accuracy) else accuracy,
            "eval_size": len(eval_pairs or []), "build_time_s": round(build_s, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        share_tree(tmp)
        if final.exists():  # a stale, incomplete entry (no meta file): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_model_meta(path: Path) -> dict | None:
    """The retrain_model.json of a built entry, or None for other model dirs."""
    meta = Path(path) / META_FILE
    return json.loads(meta.read_text()) if meta.exists() else None
