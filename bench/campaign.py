"""Benchmark: the demo campaign in-process vs the worker pool (2 workers x 1 thread).

Each mode runs `retrain campaign run campaigns/demo.toml` as a subprocess into a fresh temp dir
(`--no-console-output`), after the tiny model is built once and cached (not timed). Reported per
mode: campaign wall time, the sum of run wall times (each run's summary.json `wall_time_s`), and
the overhead = campaign wall time - sum of run times / parallel runs (1 in-process, max_workers
for the pool), in seconds and as % of the campaign wall time. The overhead holds everything that
is not a run's training loop: interpreter start and imports, per-run model load and LoRA setup,
checkpoint and adapter writes, squeeze, the comparison, and idle slots at the end of a pool.
A second figure uses the manifest's start/end times per run (whole seconds), which include each
run's setup, so it isolates what the campaign machinery itself costs.

Targets (issue 7): pool >= 1.7x in-process, overhead < 5%.

    .venv/bin/python bench/campaign.py [--campaign campaigns/demo.toml] [--keep]

The in-process campaign gets torch's default thread count (OMP_NUM_THREADS is removed from its
environment) so that both modes may use every core; `--inprocess-threads 1` gives it one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class Result:
    mode: str
    parallel: int
    wall_s: float
    run_sum_s: float  # sum of summary.json wall_time_s
    span_sum_s: float  # sum of manifest ended - started (includes each run's setup)
    runs: int
    done: int
    exit_code: int

    def overhead(self, per_run: float) -> tuple[float, float]:
        abs_s = self.wall_s - per_run / self.parallel
        return abs_s, 100.0 * abs_s / self.wall_s


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


def run_mode(mode: str, campaign: Path, out: Path, sets: list[str], parallel: int,
             threads: int = 0) -> Result:
    cmd = [sys.executable, "-m", "retrain", "campaign", "run", str(campaign), "--out", str(out),
           "--no-console-output"]
    cmd += ["--executor", mode]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"[{mode}] exit code {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    run_sum = span_sum = 0.0
    done = 0
    for rec in manifest["runs"].values():
        summary = out / rec["run_dir"] / "summary.json"
        if summary.is_file():
            run_sum += float(json.loads(summary.read_text()).get("wall_time_s", 0.0))
        if rec.get("started") and rec.get("ended"):
            span_sum += (datetime.fromisoformat(rec["ended"]) - datetime.fromisoformat(rec["started"])).total_seconds()
        done += rec["status"] == "done"
    return Result(mode=mode, parallel=parallel, wall_s=wall, run_sum_s=run_sum, span_sum_s=span_sum,
                  runs=len(manifest["runs"]), done=done, exit_code=proc.returncode)


def report(results: list[Result]) -> None:
    print(f"\n{'mode':<24}{'wall s':>9}{'Σ run s':>10}{'overhead s':>12}{'%':>7}"
          f"{'Σ span s':>10}{'machinery s':>13}{'%':>7}{'done':>8}")
    for r in results:
        o_abs, o_pct = r.overhead(r.run_sum_s)
        m_abs, m_pct = r.overhead(r.span_sum_s)
        label = r.mode if r.parallel == 1 else f"{r.mode} ({r.parallel} parallel)"
        print(f"{label:<24}{r.wall_s:>9.1f}{r.run_sum_s:>10.1f}{o_abs:>12.1f}{o_pct:>6.1f}%"
              f"{r.span_sum_s:>10.1f}{m_abs:>13.1f}{m_pct:>6.1f}%{r.done:>5}/{r.runs}")
    base = next((r for r in results if r.mode == "inprocess"), None)
    for r in results:
        if base is not None and r is not base:
            speedup = base.wall_s / r.wall_s
            verdict = "meets" if speedup >= 1.7 else "misses"
            print(f"speed-up {r.mode} vs inprocess: {speedup:.2f}x ({verdict} the 1.7x target)")
    for r in results:
        _, pct = r.overhead(r.run_sum_s)
        print(f"overhead {r.mode}: {pct:.1f}% ({'meets' if pct < 5 else 'misses'} the 5% target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", type=Path, default=REPO / "campaigns" / "demo.toml")
    parser.add_argument("--workers", type=int, default=2, help="pool workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per pool worker (default 1)")
    parser.add_argument("--modes", default="inprocess,pool", help="comma-separated: inprocess,pool")
    parser.add_argument("--inprocess-threads", type=int, default=0,
                        help="torch threads of the in-process campaign (default 0 = torch's default)")
    parser.add_argument("--keep", action="store_true", help="keep the campaign dirs (printed)")
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    print(f"model: {ensure_model(args.campaign)} (ready in {time.perf_counter() - t0:.1f}s, not timed)")
    root = Path(tempfile.mkdtemp(prefix="retrain-bench-campaign-"))
    results = []
    try:
        for mode in args.modes.split(","):
            sets = [] if mode == "inprocess" else [f"campaign.max_workers={args.workers}",
                                                    f"campaign.threads_per_worker={args.threads}"]
            parallel = 1 if mode == "inprocess" else args.workers
            threads = args.inprocess_threads if mode == "inprocess" else 0
            print(f"running {mode} {' '.join(sets)}"
                  f"{f' OMP_NUM_THREADS={threads}' if threads else ''} ...", flush=True)
            r = run_mode(mode, args.campaign, root / mode, sets, parallel, threads)
            print(f"  {r.wall_s:.1f}s, {r.done}/{r.runs} runs done", flush=True)
            results.append(r)
    finally:
        if args.keep:
            print(f"campaign dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
