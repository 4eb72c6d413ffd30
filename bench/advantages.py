"""Benchmark of the advantage pipeline and planning-token detection against pure-Python references.

    python bench/advantages.py [--completions 128] [--tokens 2048] [--repeat 7]

Both sides run in this process on the same inputs (each timed as the best of several runs); the
references are written here, token by token, in plain Python (the advantage reference starts from
Python lists, so list conversion is not charged to it), and the outputs are checked equal (advantages and pooled statistics to
1e-6, planning masks exactly) before any figure is printed. Configuration timed: maxrl + sepa
(λ = 0.5) + gtpo (β = 0.1) + hicra (α = 0.2) on surprisal. Thread pools are pinned to one thread
so that the figures are one core's. Targets (issue 3): >= 50x the reference and >= 20 M tokens/s;
planning detection >= 20x the per-position window-regex reference.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from retrain.algo.pipeline import TokenBatch, compute_advantages  # noqa: E402
from retrain.algo.planning import gram_pattern, planning_mask_batch  # noqa: E402

GRAMS = (
    "wait let me", "let me think", "on second thought", "let me check", "let me verify",
    "is this right", "double check", "try another approach", "go back and", "start over",
    "that's not right", "that doesn't work", "another way to", "or we could", "what if we",
    "notice that", "the key is", "the key insight",
)
FILLER = ("so", "the", "sum", "is", "then", "we", "add", "three", "to", "it", "and", "get",
          "letter", "meet", "think", "thinking", "key", "insight", "check", "outlet", "over")
EPS, BETA, ALPHA, LAM = 1e-6, 0.1, 0.2, 0.5


# ---------------------------------------------------------------- synthetic inputs

def make_texts(rng: np.random.Generator, n: int, tokens: int) -> tuple[list[str], list[np.ndarray]]:
    """n completions of exactly `tokens` sub-word tokens each, with grams sprinkled in."""
    texts: list[str] = []
    spans: list[np.ndarray] = []
    for _ in range(n):
        pieces: list[str] = []
        while len(pieces) < tokens:
            word = GRAMS[rng.integers(len(GRAMS))] if rng.random() < 0.03 else \
                FILLER[rng.integers(len(FILLER))]
            if rng.random() < 0.05:
                word = word.capitalize()
            chunk = (" " if pieces else "") + word
            # Split into 1-4 character sub-word tokens, like a BPE tokenizer would.
            i = 0
            while i < len(chunk):
                k = int(rng.integers(1, 5))
                pieces.append(chunk[i:i + k])
                i += k
        pieces = pieces[:tokens]
        lens = np.array([len(p) for p in pieces], dtype=np.int64)
        ends = np.cumsum(lens)
        texts.append("".join(pieces))
        spans.append(np.stack([ends - lens, ends], axis=1))
    return texts, spans


def make_batch(rng: np.random.Generator, n: int, tokens: int, planning_T: np.ndarray,
               group_size: int = 8) -> TokenBatch:
    num_tokens = n * tokens
    logprob_T = -rng.exponential(0.8, num_tokens)
    logprob_T[rng.random(num_tokens) < 1e-3] = -80.0  # exercises the 50-nat surprisal cap
    num_groups = n // group_size
    p_G = rng.random(num_groups)
    p_G[0], p_G[-1] = 1.0, 0.0  # one all-correct and one all-wrong group
    reward_N = (rng.random(n) < np.repeat(p_G, group_size)).astype(np.float64)
    return TokenBatch(logprob_T=logprob_T, entropy_T=None, planning_T=planning_T,
                      offsets=np.arange(n + 1, dtype=np.int64) * tokens, reward_N=reward_N,
                      group_N=np.repeat(np.arange(num_groups), group_size))


# ---------------------------------------------------------------- pure-Python references

def reference_pipeline(logprob: list[float], planning: list[bool], offsets: list[int],
                       rewards: list[float], groups: list[int]) -> tuple[list[float], list[float]]:
    """maxrl + sepa + gtpo + hicra, one token at a time; also exec/plan surprisal mean and var."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    episode = [0.0] * len(rewards)
    for idx in members.values():
        rs = [rewards[i] for i in idx]
        mean = sum(rs) / len(rs)
        if max(rs) - min(rs) <= 1e-6 or mean <= EPS:
            continue
        for i in idx:
            episode[i] = (rewards[i] - mean) / (mean + EPS)
    adv: list[float] = []
    exec_h: list[float] = []
    plan_h: list[float] = []
    for i in range(len(rewards)):
        start, end = offsets[i], offsets[i + 1]
        h = [min(-logprob[t], 50.0) for t in range(start, end)]
        is_plan = planning[start:end]
        ex = [h[k] for k in range(len(h)) if not is_plan[k]]
        for k in range(len(h)):
            (plan_h if is_plan[k] else exec_h).append(h[k])
        mean_exec = sum(ex) / len(ex) if ex else 0.0
        pooled = [h[k] if is_plan[k] else LAM * mean_exec + (1 - LAM) * h[k] for k in range(len(h))]
        mean_h = sum(pooled) / len(pooled) if pooled else 0.0
        for k in range(len(h)):
            w = 1.0 if mean_h < 1e-7 else max(0.0, 1.0 + BETA * (pooled[k] / mean_h - 1.0))
            a = episode[i] * w
            if is_plan[k]:
                a = a + ALPHA * abs(a)
            adv.append(a)
    stats = []
    for xs in (exec_h, plan_h):
        m = sum(xs) / len(xs) if xs else 0.0
        stats += [m, sum((x - m) ** 2 for x in xs) / len(xs) if xs else 0.0]
    return adv, stats


def reference_planning(texts: list[str], spans: list[np.ndarray]) -> list[bool]:
    """Per token: try a gram match at every character position of a window around the token."""
    pattern = gram_pattern(GRAMS)
    assert pattern is not None
    window = max(len(g) for g in GRAMS)  # a match (single spaces) is at most this long
    out: list[bool] = []
    for text, sp in zip(texts, spans, strict=True):
        for s, e in sp.tolist():
            hit = False
            for p in range(max(0, s - window), e):
                m = pattern.match(text, p)  # lookbehind sees the real text before p
                if m is not None and m.end() > s and e > s:
                    hit = True
                    break
            out.append(hit)
    return out


# ---------------------------------------------------------------- timing

def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--completions", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of the numpy side (best)")
    ap.add_argument("--ref-repeat", type=int, default=3,
                    help="timed runs of each pure-Python reference (best)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n, tokens = args.completions, args.tokens
    num_tokens = n * tokens

    texts, spans = make_texts(rng, n, tokens)
    plan_fast = planning_mask_batch(texts, spans, GRAMS)
    t_plan = best_of(lambda: planning_mask_batch(texts, spans, GRAMS), args.repeat)
    plan_ref = reference_planning(texts, spans)
    t_plan_ref = best_of(lambda: reference_planning(texts, spans), args.ref_repeat)
    assert plan_fast.tolist() == plan_ref, "planning masks differ from the reference"

    batch = make_batch(rng, n, tokens, plan_fast)
    kwargs = dict(advantage_mode="maxrl", scale="none", eps=EPS, transform_mode="gtpo_sepa_hicra",
                  uncertainty_kind="surprisal", gtpo_beta=BETA, gtpo_max_weight=None,
                  hicra_alpha=ALPHA, sepa_lambda=LAM)
    adv_T, metrics = compute_advantages(batch, **kwargs)  # type: ignore[arg-type]
    t_fast = best_of(lambda: compute_advantages(batch, **kwargs), args.repeat)  # type: ignore[arg-type]
    lists = (batch.logprob_T.tolist(), batch.planning_T.tolist(), batch.offsets.tolist(),
             batch.reward_N.tolist(), batch.group_N.tolist())
    adv_ref, stats_ref = reference_pipeline(*lists)
    t_ref = best_of(lambda: reference_pipeline(*lists), args.ref_repeat)
    adv_err = float(np.max(np.abs(adv_T - np.array(adv_ref))))
    keys = ("exec_surprisal_mean", "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var")
    stat_err = max(abs(metrics[k] - v) for k, v in zip(keys, stats_ref, strict=True))
    assert adv_err <= 1e-6 and stat_err <= 1e-6, f"mismatch: adv {adv_err:.2e}, stats {stat_err:.2e}"

    print(f"batch: {n} completions x {tokens} tokens = {num_tokens:,} tokens, "
          f"{int(plan_fast.sum()):,} planning tokens, {metrics['num_informative_groups']} of "
          f"{metrics['num_groups']} groups informative")
    print(f"advantages (maxrl+gtpo_sepa_hicra): numpy {t_fast * 1e3:.2f} ms "
          f"= {num_tokens / t_fast / 1e6:.1f} M tokens/s | pure Python {t_ref * 1e3:.0f} ms "
          f"= {num_tokens / t_ref / 1e6:.2f} M tokens/s | speed-up {t_ref / t_fast:.0f}x "
          f"| max |diff| {adv_err:.1e}")
    print(f"planning detection: regex + span mapping {t_plan * 1e3:.2f} ms "
          f"= {num_tokens / t_plan / 1e6:.1f} M tokens/s | per-position window regex "
          f"{t_plan_ref * 1e3:.0f} ms | speed-up {t_plan_ref / t_plan:.0f}x | masks equal")


if __name__ == "__main__":
    main()
