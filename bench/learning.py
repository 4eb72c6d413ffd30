"""Benchmark: does RL learn on the built-in testbeds? Gains over each run's own initial eval.

Part `default` (the default testbed, campaigns/demo.toml): every condition of the demo and an
untrained control (the first condition with `optimizer.lr = 0`, which samples, scores and
evaluates like any run but never changes the adapter), over >= 3 seeds. Part `reasoning` (campaigns/reasoning.toml,
countdown with reasoning traces): maxrl+gtpo against maxrl+gtpo_hicra, with the share of
planning tokens and of tokens whose advantage HICRA changed.

For every condition it prints the gain tables of the campaign report (retrain.analysis.gain):
mean initial and final held-out accuracy (greedy and mean@k sampled, each ± its standard error
over problems), the gain over the initial eval (mean over seeds with a Student-t 95% interval),
and a paired t-test across seeds (Holm-adjusted) of each condition's gains against the control
(default) or the first condition (reasoning), with the minimum detectable effect. All runs train in this one process (the imports are paid once); the
tiny models are built first if the cache lacks them (that time is printed, not counted).

    .venv/bin/python bench/learning.py [--part default|reasoning|both] [--seeds 42 101 202]
        [--set section.key=value ...] [--keep DIR]

Measured figures are in docs/getting-started.md ("What it can show").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PARTS = {"default": REPO / "campaigns" / "demo.toml", "reasoning": REPO / "campaigns" / "reasoning.toml"}
CONTROL = "control_lr=0"
EVAL_KEYS = ("accuracy", "sampled_accuracy")


def _dirname(label: str) -> str:
    return label.replace(" ", "_")


def plan(campaign: Path, sets: list[str], *, control: bool) -> dict[str, list[tuple[int, Any]]]:
    """condition label -> [(seed, resolved config)], in the campaign's order; plus the lr = 0
    control (the first condition with optimizer.lr = 0) when asked."""
    import dataclasses

    from retrain.campaign.grid import load_campaign

    spec = load_campaign(campaign, sets)
    runs: dict[str, list[tuple[int, Any]]] = {}
    for run in spec.runs:
        runs.setdefault(run.condition, []).append((run.seed, run.config))
    if control:
        first = next(iter(runs.values()))
        runs[CONTROL] = [(seed, dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=0.0)))
                         for seed, cfg in first]
    return runs


def run_condition(label: str, runs: list[tuple[int, Any]], out: Path) -> list[dict[str, Any]]:
    """Train one run per seed in this process; returns per-run initial/final evals and metrics."""
    from retrain.trainer.loop import train_run

    rows = []
    for seed, cfg in runs:
        run_dir = out / f"s{seed}"
        t0 = time.perf_counter()
        result = train_run(cfg, run_dir, condition=label, console_mode="none")
        wall = time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
        text = (run_dir / "metrics.jsonl").read_text()
        steps = [m for m in map(json.loads, text.splitlines()) if m.get("step", 0) > 0 and "loss" in m]
        rows.append({"seed": seed, "status": result.status, "wall_s": wall,
                     "initial": summary["initial_eval"], "final": summary["final_eval"],
                     "steps": steps, "metrics_text": text})
    return rows


def report(part: str, root: Path, results: dict[str, list[dict[str, Any]]], reference: str) -> None:
    """The gain tables of `retrain analyze` / the campaign report (retrain.analysis.gain), then
    what they do not show: planning-token shares, wall times, identical conditions."""
    import numpy as np
    from rich.console import Console

    from retrain.analysis.gain import gain_rows, render_gains_md
    from retrain.analysis.loading import collect_runs

    rows = gain_rows(collect_runs(root), baseline=reference)
    print(f"\n== {part} ==\n")
    Console(width=200).print(render_gains_md(rows), markup=False, highlight=False)
    for label, runs in results.items():
        frac = [s["planning_token_frac"] for r in runs for s in r["steps"] if "planning_token_frac" in s]
        changed = [s["hicra_changed_frac"] for r in runs for s in r["steps"] if "hicra_changed_frac" in s]
        line = f"{label}: run wall time {np.median([r['wall_s'] for r in runs]):.1f} s (median)"
        if frac:
            line += f", planning_token_frac {np.mean(frac):.3f}"
        if changed:
            line += f", hicra_changed_frac {np.mean(changed):.3f}"
        print(line)
    labels = [label for label in results if label != CONTROL]
    for a, b in zip(labels, labels[1:], strict=False):
        same = sum(_metrics_equal(ra, rb) for ra, rb in zip(results[a], results[b], strict=True))
        if same:
            print(f"{a} and {b}: identical metrics.jsonl on {same} of {len(results[a])} seeds")


def _metrics_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keep = ("loss", "mean_reward", "correct_rate", "grad_norm")
    return [[s.get(k) for k in keep] for s in a["steps"]] == [[s.get(k) for k in keep] for s in b["steps"]]


def ensure_model(cfg: Any) -> None:
    from retrain.backend.local.presets import resolve_model_path, warmup_task

    t0 = time.perf_counter()
    path = resolve_model_path(cfg, warmup_task(cfg), progress=True)
    print(f"[bench] model {path} ({time.perf_counter() - t0:.1f} s to find or build)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("default", "reasoning", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 101, 202])
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="extra section.key=value for every run (e.g. training.max_steps=30)")
    parser.add_argument("--keep", type=Path, help="keep the run dirs here instead of a temp dir")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        print("[bench] note: fewer than 3 seeds; the intervals are wide", file=sys.stderr)
    from retrain.backend.local.presets import quiet_libraries

    quiet_libraries()
    parts = ["default", "reasoning"] if args.part == "both" else [args.part]
    root = args.keep or Path(tempfile.mkdtemp(prefix="retrain-bench-learning-"))
    sets = [*args.sets, "campaign.seeds=[" + ",".join(map(str, args.seeds)) + "]"]
    try:
        for part in parts:
            runs = plan(PARTS[part], sets, control=part == "default")
            ensure_model(next(iter(runs.values()))[0][1])
            t0 = time.perf_counter()
            results = {label: run_condition(label, cfg_runs, root / part / _dirname(label))
                       for label, cfg_runs in runs.items()}
            report(part, root / part, results, CONTROL if part == "default" else next(iter(results)))
            print(f"[bench] {part}: {time.perf_counter() - t0:.0f} s for "
                  f"{sum(map(len, runs.values()))} runs")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
