"""Benchmark: LoRA-Squeeze's QR + core SVD against the full SVD of ΔW = B A.

Default problem (issue 8): 200 layers, rank 128, 2048×2048 weights. The fast path runs on every
layer; the full SVD (form the out×in product, then SVD it) runs on `--full-layers` of them and its
total is extrapolated to all layers, which the output says. On the layers both paths see, the
top-r singular values must agree to 1e-4 relative.

    OMP_NUM_THREADS=1 .venv/bin/python bench/squeeze.py [--layers 200] [--full-layers 10]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from retrain.squeeze.analysis import lora_svd


def make_layer(seed: int, out: int, inp: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Random factors A [rank, in], B [out, rank] scaled like a trained adapter's."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rank, inp)) / np.sqrt(inp)
    b = rng.standard_normal((out, rank)) * np.exp(-np.arange(rank) / (rank / 4))  # decaying spectrum
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=200, help="LoRA layers (default 200)")
    parser.add_argument("--rank", type=int, default=128, help="LoRA rank (default 128)")
    parser.add_argument("--dim", type=int, default=2048, help="out = in dimension (default 2048)")
    parser.add_argument("--full-layers", type=int, default=10,
                        help="layers on which the full SVD is timed, 0 = all (default 10, then extrapolated)")
    parser.add_argument("--tol", type=float, default=1e-4, help="max relative singular value difference")
    args = parser.parse_args()
    full_layers = args.layers if args.full_layers <= 0 else min(args.full_layers, args.layers)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{args.layers} layers, rank {args.rank}, {args.dim}x{args.dim}, float64, OMP_NUM_THREADS={threads}")

    fast_s = 0.0
    full_s = 0.0
    worst = 0.0
    for i in range(args.layers):
        a, b = make_layer(i, args.dim, args.dim, args.rank)
        t0 = time.perf_counter()
        s_fast = lora_svd(a, b, vectors=False).s
        fast_s += time.perf_counter() - t0
        if i < full_layers:
            t0 = time.perf_counter()
            s_full = np.linalg.svd(b @ a, compute_uv=False)[: args.rank]  # forms out×in, then SVD
            full_s += time.perf_counter() - t0
            worst = max(worst, float(np.max(np.abs(s_fast - s_full) / s_full)))

    full_total = full_s * args.layers / full_layers
    note = "" if full_layers == args.layers else f" (extrapolated from {full_layers} layers: {full_s:.2f} s)"
    print(f"QR + core SVD : {fast_s:8.3f} s for {args.layers} layers ({1e3 * fast_s / args.layers:.2f} ms/layer)")
    print(f"full SVD of dW: {full_total:8.3f} s for {args.layers} layers{note}")
    print(f"speed-up      : {full_total / fast_s:8.1f}x (target >= 50x)")
    status = "OK" if worst <= args.tol else "FAIL"
    print(f"max relative singular value difference on {full_layers} layers: {worst:.2e} "
          f"(tolerance {args.tol:g}) {status}")
    if worst > args.tol:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
