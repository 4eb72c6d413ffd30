"""Benchmark of the back-pressure controller (retrain/algo/backpressure.py, issue 6).

    python bench/backpressure.py [--trials 200] [--steps 100] [--skip-real]

Part 1, synthetic: loads that follow the USL exactly, with known σ, κ, times 5% Gaussian
multiplicative noise per step. Each trial draws σ ~ U[0, σmax] (σmax 0.1, and 0.3 as a
flat-peaked stress case), p* ~ log-U[8, 128] (κ from p*) and x1 ~ U[500, 5000] tokens/s.
1a fits with fit_usl on a fixed design (sizes 1, 2, 4, ..., 256, each measured twice).
1b drives the controller (defaults, max_size 256, warm-up 10 and 20 steps, initial size 1, 4,
16, 64 in turn) for `--steps` steps; its fit is sampled where it samples: the warm-up's
geometric exploration, then its own path. Reported: how often p* is recovered within 10%; where
the size settles against the true target margin·p*; direction changes of the size after
warm-up; throughput at the settled size against the true peak.

Part 2, real sampler: tokens/s of retrain.backend.local.sampler.sample on the tiny preset (random
weights, character tokenizer, CPU) over chunk sizes, then the controller driven by the same
sampler. Only generated tokens are counted (no training step), so the curve is the sampler's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrain.algo.backpressure import (  # noqa: E402
    BackpressureController,
    fit_usl,
    usl_p_star,
    usl_throughput,
)

NOISE = 0.05
TOKENS_PER_STEP = 4096
MARGIN = 0.85
SIGMA_MAX = (0.1, 0.3)  # typical contention, and a flat-peaked stress case
DESIGN = [2**k for k in range(9)] * 2  # fixed design: 1, 2, ..., 256, each measured twice


@dataclass(frozen=True)
class Load:
    sigma: float
    kappa: float
    x1: float

    @property
    def p_star(self) -> float:
        p_star = usl_p_star(self.sigma, self.kappa)
        assert p_star is not None
        return p_star


@dataclass(frozen=True)
class Trial:
    load: Load
    sizes: list[int]  # size used at each step
    p_star_warmup: float | None  # the controller's p* after its last warm-up step
    p_star_end: float | None
    direction_changes: int  # after warm-up


def draw_load(rng: np.random.Generator, sigma_max: float) -> Load:
    sigma = float(rng.uniform(0.0, sigma_max))
    p_star = float(math.exp(rng.uniform(math.log(8.0), math.log(128.0))))
    return Load(sigma=sigma, kappa=(1.0 - sigma) / p_star**2, x1=float(rng.uniform(500, 5000)))


def direction_changes(sizes: list[int]) -> int:
    deltas = [b - a for a, b in zip(sizes, sizes[1:], strict=False) if b != a]
    return sum(1 for a, b in zip(deltas, deltas[1:], strict=False) if (a > 0) != (b > 0))


def run_trial(
    load: Load, initial: int, steps: int, rng: np.random.Generator, warmup_steps: int = 10
) -> Trial:
    ctrl = BackpressureController(initial_size=initial, warmup_steps=warmup_steps)
    sizes: list[int] = []
    p_star_warmup = None
    decision = None
    for step in range(steps):
        size = ctrl.size
        x = float(usl_throughput(size, load.sigma, load.kappa, load.x1))
        x *= max(0.05, 1.0 + NOISE * rng.standard_normal())
        decision = ctrl.observe(size=size, tokens=TOKENS_PER_STEP, seconds=TOKENS_PER_STEP / x)
        sizes.append(size)
        if step + 1 == ctrl.warmup_steps:
            p_star_warmup = decision.p_star
    assert decision is not None
    return Trial(load, sizes, p_star_warmup, decision.p_star,
                 direction_changes(sizes[ctrl.warmup_steps:] + [ctrl.size]))


def within(estimate: float | None, truth: float, tol: float) -> bool:
    return estimate is not None and abs(estimate / truth - 1.0) <= tol


def fixed_design(trials: int, seed: int, sigma_max: float) -> float:
    """Part 1a: fit_usl alone on a fixed design, p* recovered within 10%."""
    rng = np.random.default_rng(seed)
    p = np.array(DESIGN, dtype=np.float64)
    hits = 0
    for _ in range(trials):
        load = draw_load(rng, sigma_max)
        x = usl_throughput(p, load.sigma, load.kappa, load.x1)
        x = x * np.maximum(0.05, 1.0 + NOISE * rng.standard_normal(p.size))
        sigma, kappa, _ = fit_usl(p, x)
        hits += within(usl_p_star(sigma, kappa), load.p_star, 0.10)
    rate = hits / trials
    print(f"Part 1a: fit_usl, fixed design (powers of two 1..256, twice each), sigma <= {sigma_max}, "
          f"{trials} trials: p* within 10% in {rate:.1%}")
    return rate


def synthetic(
    trials: int, steps: int, seed: int, sigma_max: float, warmup_steps: int
) -> dict[str, float]:
    """Part 1: fit recovery and settling on simulated USL loads."""
    rng = np.random.default_rng(seed)
    results = []
    for i in range(trials):
        load = draw_load(rng, sigma_max)
        results.append(run_trial(load, (1, 4, 16, 64)[i % 4], steps, rng, warmup_steps))
    target = np.array([MARGIN * r.load.p_star for r in results])
    final = np.array([r.sizes[-1] for r in results], dtype=np.float64)
    ratio = final / target
    peak = np.array([usl_throughput(r.load.p_star, r.load.sigma, r.load.kappa, r.load.x1)
                     for r in results])
    at_final = np.array([usl_throughput(r.sizes[-1], r.load.sigma, r.load.kappa, r.load.x1)
                         for r in results])
    changes = np.array([r.direction_changes for r in results])
    figures = {
        "trials": float(trials),
        "p_star_within_10pct_end_of_warmup": float(np.mean(
            [within(r.p_star_warmup, r.load.p_star, 0.10) for r in results])),
        "p_star_within_10pct_end_of_run": float(np.mean(
            [within(r.p_star_end, r.load.p_star, 0.10) for r in results])),
        "settled_within_15pct_of_target": float(np.mean(np.abs(ratio - 1.0) <= 0.15)),
        "size_over_target_p5": float(np.percentile(ratio, 5)),
        "size_over_target_median": float(np.median(ratio)),
        "size_over_target_p95": float(np.percentile(ratio, 95)),
        "throughput_over_peak_median": float(np.median(at_final / peak)),
        "throughput_over_peak_min": float(np.min(at_final / peak)),
        "direction_changes_after_warmup_max": float(changes.max()),
        "trials_with_2plus_direction_changes": float(np.mean(changes >= 2)),
    }
    print(f"Part 1b: controller on USL loads, sigma <= {sigma_max}, warmup_steps = {warmup_steps}, "
          f"{trials} trials x {steps} steps")
    print(f"  p* within 10%, controller fit after warm-up : "
          f"{figures['p_star_within_10pct_end_of_warmup']:.1%}")
    print(f"  p* within 10%, controller fit end of run    : "
          f"{figures['p_star_within_10pct_end_of_run']:.1%}")
    print(f"  final size within 15% of margin*p*          : "
          f"{figures['settled_within_15pct_of_target']:.1%}")
    print(f"  final size / (margin*p*)  p5/median/p95     : "
          f"{figures['size_over_target_p5']:.3f} / {figures['size_over_target_median']:.3f} / "
          f"{figures['size_over_target_p95']:.3f}")
    print(f"  throughput at final size / peak  median/min : "
          f"{figures['throughput_over_peak_median']:.3f} / {figures['throughput_over_peak_min']:.3f}")
    print(f"  direction changes after warm-up   max       : "
          f"{figures['direction_changes_after_warmup_max']:.0f}  "
          f"(trials with >= 2: {figures['trials_with_2plus_direction_changes']:.1%})")
    return figures


def real_sampler(steps: int, seed: int) -> dict[str, float] | None:
    """Part 2: the tiny model's sampler. Returns None (and says why) if it cannot run."""
    try:
        import torch

        from retrain.backend.local.sampler import sample
        from retrain.backend.local.tiny import build_char_tokenizer, build_random_model
    except ImportError as exc:  # the local backend is optional for this bench
        print(f"Part 2 skipped: {exc}")
        return None
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    model = build_random_model("tiny", tokenizer, seed=seed)
    prompts = [f"{a}+{b}=" for a, b in zip(range(10, 26), range(40, 56), strict=True)]
    n_per_prompt, max_tokens = 8, 32  # logical batch: 16 prompts x 8 = 128 sequences
    n_seq = len(prompts) * n_per_prompt

    def measure(chunk: int, step: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        out = sample(model, tokenizer, prompts, n_per_prompt=n_per_prompt, max_tokens=max_tokens,
                     temperature=1.0, top_p=1.0, seed=seed, step=step, chunk_size=chunk)
        return out.num_generated_tokens, time.perf_counter() - t0

    measure(n_seq, 0)  # warm the allocator and kernels
    chunks = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= n_seq]
    curve: dict[int, float] = {}
    for chunk in chunks:
        runs = [measure(chunk, rep) for rep in range(2)]
        curve[chunk] = sum(t for t, _ in runs) / sum(s for _, s in runs)
    best = max(curve, key=lambda c: curve[c])
    print(f"Part 2: tiny sampler (random weights, CPU, 1 thread), {n_seq} sequences x "
          f"{max_tokens} tokens per step")
    print("  chunk   tokens/s")
    for chunk, tps in curve.items():
        print(f"  {chunk:5d}   {tps:8.0f}{'   <- best' if chunk == best else ''}")

    ctrl = BackpressureController(initial_size=8, min_size=1, max_size=n_seq)
    sizes = []
    decision = None
    for step in range(steps):
        size = ctrl.size
        tokens, seconds = measure(size, step)
        decision = ctrl.observe(size=size, tokens=tokens, seconds=seconds)
        sizes.append(size)
    assert decision is not None
    settled = ctrl.size
    settled_tps = curve.get(settled)
    p_star = decision.p_star
    print(f"  controller sizes: {sizes + [settled]}")
    print(f"  fit: sigma={decision.sigma:.4f} kappa={decision.kappa:.2e} "
          f"p*={'none' if p_star is None else f'{p_star:.1f}'}; settles at {settled} "
          f"(measured best chunk {best})")
    if settled_tps is not None:
        print(f"  measured tokens/s at settled chunk / best: {settled_tps / curve[best]:.3f}")
    return {"best_chunk": float(best), "settled_chunk": float(settled),
            "settled_over_best_tps": (settled_tps / curve[best]) if settled_tps else float("nan")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--real-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic part")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    for sigma_max in SIGMA_MAX:
        fixed_design(args.trials, args.seed, sigma_max)
    for sigma_max in SIGMA_MAX:
        for warmup_steps in (10, 20):
            synthetic(args.trials, args.steps, args.seed, sigma_max, warmup_steps)
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    if not args.skip_real:
        t1 = time.perf_counter()
        real_sampler(args.real_steps, args.seed)
        print(f"  ({time.perf_counter() - t1:.1f} s)")


if __name__ == "__main__":
    main()
