"""Benchmark: a campaign trained packed, in a worker pool, or in-process, alternated in one run.

Modes (each runs `retrain campaign run` as a subprocess into a fresh temp dir, after the tiny
model is built once and cached, not timed):
- `pool`: 2 worker processes x 1 torch thread, each run loading its model and training alone
  (`--executor pool`);
- `packed`: the same 2 workers x 1 thread, each training a pack of half the runs: one base model
  with one adapter per run, batched sampling and one forward/backward per step for the pack's
  runs (`campaign.pack_runs`, the default of `executor = "auto"`);
- `packed1`: every run in one pack in the campaign process (`max_workers = 1`), torch's default
  thread count;
- `inprocess`: one run after another in the campaign process (`--executor inprocess`).

The modes alternate (A B A B ...) for `--rounds` rounds; the figures are medians over rounds,
and each speed-up is the median of the per-round ratios (so a round under a heavier load
counts against both sides). Reported per mode: campaign wall time, the sum of the runs' loop
times (summary.json `wall_time_s`), the overhead = wall - sum / parallel (parallel = workers
for the pool, the pack's size for packed, 1 in-process) in seconds and % of wall, and the
per-run fixed cost: `setup_time_s` (model load or reuse of the worker's kept model, LoRA init)
and the first step's excess over the run's median step time.

Scales: `--scale demo` is campaigns/demo.toml as shipped (15 runs x 20 steps); `--scale 20x100`
the same campaign with 4 seeds (20 runs) of 100 steps and an eval every 25 steps, the kind of
campaign a researcher runs.

Targets (issue 20): packed >= 3x the pool's throughput at both scales; overhead <= 10% at 100 steps.

    .venv/bin/python bench/campaign.py [--scale demo|20x100] [--rounds 3] [--modes pool,packed]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SCALES = {
    "demo": [],
    "20x100": ["training.max_steps=100", "eval.every=25", "campaign.seeds=[42, 101, 202, 303]"],
}


@dataclass
class Result:
    mode: str
    parallel: int
    wall_s: float
    run_sum_s: float  # sum of summary.json wall_time_s (each run's step loop, evals included)
    setup_s: list[float]  # per run: summary.json setup_time_s
    first_step_excess_s: list[float]  # per run: first step time - median step time
    runs: int
    done: int
    exit_code: int

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.run_sum_s / self.parallel

    @property
    def overhead_pct(self) -> float:
        return 100.0 * self.overhead_s / self.wall_s


def ensure_model(campaign: Path) -> str:
    """Build (or find) the cached tiny model the campaign uses, so no mode pays for the build."""
    from retrain.backend.local.presets import resolve_model_path, warmup_task
    from retrain.campaign.grid import load_campaign

    cfg = load_campaign(campaign, []).base
    return resolve_model_path(cfg, warmup_task(cfg), progress=True)


def child_env(threads: int) -> dict[str, str]:
    """The campaign's environment: offline; torch's default thread count, or `threads` if > 0."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    for var in THREAD_VARS:
        env.pop(var, None)
        if threads > 0:
            env[var] = str(threads)
    return env


def mode_args(mode: str, workers: int, threads: int) -> list[str]:
    if mode == "pool":
        return ["--executor", "pool", "--set", f"campaign.max_workers={workers}",
                "--set", f"campaign.threads_per_worker={threads}"]
    if mode == "inprocess":
        return ["--executor", "inprocess"]
    if mode == "packed1":  # one pack in the campaign process, torch's default threads
        return ["--set", "campaign.pack_runs=true", "--set", "campaign.max_workers=1"]
    return ["--set", "campaign.pack_runs=true", "--set", f"campaign.max_workers={workers}",  # executor auto
            "--set", f"campaign.threads_per_worker={threads}"]


def run_mode(mode: str, campaign: Path, out: Path, sets: list[str], args: list[str]) -> Result:
    cmd = [sys.executable, "-m", "retrain", "campaign", "run", str(campaign), "--out", str(out),
           "--no-console-output", *args]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(0), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"[{mode}] exit code {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    run_sum = 0.0
    setups: list[float] = []
    excess: list[float] = []
    done = 0
    for rec in manifest["runs"].values():
        run_dir = out / rec["run_dir"]
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            run_sum += float(summary.get("wall_time_s", 0.0))
            setups.append(float(summary.get("setup_time_s", float("nan"))))
        steps = [json.loads(line)["step_time_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"step_time_s"' in line]
        if len(steps) > 1:
            excess.append(steps[0] - statistics.median(steps))
        done += rec["status"] == "done"
    workers = int(next((a.split("=")[1] for a in args if a.startswith("campaign.max_workers=")), 1))
    if mode.startswith("packed"):  # the runs of the packs trained at once (one pack per worker)
        parallel = sum(len(p) for p in (plan.get("packs") or [[0]])[:workers])
    else:
        parallel = workers
    return Result(mode=mode, parallel=parallel, wall_s=wall, run_sum_s=run_sum, setup_s=setups,
                  first_step_excess_s=excess, runs=len(manifest["runs"]), done=done,
                  exit_code=proc.returncode)


def med(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def report(rounds: list[dict[str, Result]], modes: list[str]) -> None:
    print(f"\nmedians over {len(rounds)} rounds")
    print(f"{'mode':<22}{'wall s':>9}{'Σ run s':>10}{'overhead s':>12}{'%':>7}"
          f"{'setup s/run':>13}{'1st step +s':>13}{'done':>8}")
    for mode in modes:
        rs = [r[mode] for r in rounds]
        label = mode if rs[0].parallel == 1 else f"{mode} ({rs[0].parallel} parallel)"
        print(f"{label:<22}{med([r.wall_s for r in rs]):>9.1f}{med([r.run_sum_s for r in rs]):>10.1f}"
              f"{med([r.overhead_s for r in rs]):>12.1f}{med([r.overhead_pct for r in rs]):>6.1f}%"
              f"{med([x for r in rs for x in r.setup_s]):>13.3f}"
              f"{med([x for r in rs for x in r.first_step_excess_s]):>13.3f}"
              f"{rs[-1].done:>5}/{rs[-1].runs}")
    if "pool" in modes:
        for mode in modes:
            if mode == "pool":
                continue
            ratios = [r["pool"].wall_s / r[mode].wall_s for r in rounds]
            target = "" if mode != "packed" else f" ({'meets' if med(ratios) >= 3 else 'misses'} the 3x target)"
            print(f"throughput {mode} / pool: {med(ratios):.2f}x (per round: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}){target}")
    if "packed" in modes:
        pct = med([r["packed"].overhead_pct for r in rounds])
        print(f"overhead packed: {pct:.1f}% of wall ({'meets' if pct <= 10 else 'misses'} the 10% target at 100 steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", type=Path, default=REPO / "campaigns" / "demo.toml")
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the modes (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="pool workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per pool worker (default 1)")
    parser.add_argument("--modes", default="pool,packed", help="comma-separated: pool,packed,packed1,inprocess")
    parser.add_argument("--keep", action="store_true", help="keep the campaign dirs (printed)")
    args = parser.parse_args()
    modes = args.modes.split(",")

    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    print(f"model: {ensure_model(args.campaign)} (ready in {time.perf_counter() - t0:.1f}s, not timed)")
    print(f"scale {args.scale}: {args.campaign.name} {' '.join(SCALES[args.scale])}")
    root = Path(tempfile.mkdtemp(prefix="retrain-bench-campaign-"))
    rounds: list[dict[str, Result]] = []
    try:
        for i in range(args.rounds):
            results: dict[str, Result] = {}
            for mode in modes:
                print(f"round {i + 1}: {mode} ...", end=" ", flush=True)
                r = run_mode(mode, args.campaign, root / f"{mode}{i}", SCALES[args.scale],
                             mode_args(mode, args.workers, args.threads))
                print(f"{r.wall_s:.1f}s, {r.done}/{r.runs} runs done", flush=True)
                results[mode] = r
            rounds.append(results)
    finally:
        if args.keep:
            print(f"campaign dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(rounds, modes)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
