"""Benchmark: what the hooks cost per training step (retrain/hooks/, docs/hooks.md).

Runs the same small run (the tiny preset unless --set says otherwise) without hooks, with each
group (`minimal`, `full`) and with each built-in hook alone, in rounds that alternate the
variants (A B C ... A B C ...), so drifting machine load hits every variant alike. A variant's
step time is the run's wall time, less its final evaluation, over its steps (checkpoints only
at the end, the same in every variant). Per round, each variant's extra time is taken against
that round's no-hook run (wall); beside it, the time spent inside the hook runner per step and
its share of the same run's step (runner: immune to the machine's load drifting between
runs). The medians over rounds are printed; the runner figures are written to
retrain/hooks/measured_cost.json (with machine, preset and date), which `retrain run
--hooks-list` and `--hooks-describe` show. `rank` runs every step here (hooks.rank_every = 1),
its worst case.

    .venv/bin/python bench/hooks.py [--steps 8] [--rounds 3] [--set section.key=value ...]
        [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

BASE = """\
[model]
name = "tiny"

[training]
seed = 7
batch_size = 4
group_size = 4
save_every = 0

[eval]
size = 10
samples = 0
at_start = false
every = 0

[data]
eval_size = 50

[backend]
threads = 1
"""


def variants() -> dict[str, list[str]]:
    from retrain.hooks.registry import GROUPS, HOOKS

    out: dict[str, list[str]] = {"none": []}
    sinks = 'hooks.sinks=["csv", "jsonl"]'  # the files are part of what a hook costs
    out.update({g: [f'hooks.groups=["{g}"]', sinks] for g in GROUPS})
    out.update({h: [f'hooks.names=["{h}"]', sinks] for h in HOOKS})
    return out


IN_CALLS = [0.0]  # seconds spent inside HookRunner.call (hooks, read-only views, sink writes)


def _timed_calls() -> None:
    from retrain.hooks.runner import HookRunner

    inner = HookRunner.call

    def call(self: HookRunner, payload: object) -> None:
        t0 = time.perf_counter()
        try:
            inner(self, payload)  # type: ignore[arg-type]
        finally:
            IN_CALLS[0] += time.perf_counter() - t0

    HookRunner.call = call  # type: ignore[method-assign]


def step_seconds(cfg_path: Path, sets: list[str], steps: int, out: Path) -> tuple[float, float]:
    """(wall seconds per step of one run, its final evaluation left out; seconds per step
    inside the hook runner)."""
    from retrain.config import load_config
    from retrain.trainer.loop import train_run

    cfg = load_config(cfg_path, [*sets, f"training.max_steps={steps}", "hooks.rank_every=1"])
    IN_CALLS[0] = 0.0
    result = train_run(cfg, out, console_mode="none")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    eval_s = float(rows[-1].get("eval_time_s") or 0.0)
    return (result.wall_time_s - eval_s) / steps, IN_CALLS[0] / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="training steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternations (medians over them; >= 3)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value")
    ap.add_argument("--no-write", action="store_true", help="do not update measured_cost.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="retrain-bench-hooks-"))
    cfg_path = work / "run.toml"
    cfg_path.write_text(BASE, encoding="utf-8")
    var = variants()
    step_s: dict[str, list[float]] = {k: [] for k in var}
    inside_s: dict[str, list[float]] = {k: [] for k in var}
    _timed_calls()
    t0 = time.perf_counter()
    step_seconds(cfg_path, args.sets, 2, work / "warm")  # builds/loads the model, warms caches
    for r in range(args.rounds):
        for name, sets in var.items():
            wall, inside = step_seconds(cfg_path, [*args.sets, *sets], args.steps, work / f"r{r}_{name}")
            step_s[name].append(wall)
            inside_s[name].append(inside)
        print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = statistics.median(step_s["none"])
    costs: dict[str, dict[str, float]] = {}
    print(f"\nno hooks: {base * 1e3:.1f} ms/step (median of {args.rounds})\n")
    # Two measures. wall: the step's wall time against the round's no-hook run (everything a
    # hook costs, also grad norms in the backward pass and trace copies; noisy on a shared
    # machine). runner: time inside HookRunner.call per step, over the same run's step time
    # (robust to load; this one is written to measured_cost.json).
    print(f"{'variant':<9} {'wall ms':>8} {'wall extra':>10} {'wall ratio':>10} {'runner ms':>9} "
          f"{'runner share':>12}   wall extra per round")
    for name in var:
        if name == "none":
            continue
        extra = [(s - b) * 1e3 for s, b in zip(step_s[name], step_s["none"], strict=True)]
        med = statistics.median(extra)
        inside = statistics.median(inside_s[name]) * 1e3
        share = statistics.median(i / s for i, s in zip(inside_s[name], step_s[name], strict=True))
        costs[name] = {"ms_per_step": inside, "share": share, "wall_extra_ms": med}
        print(f"{name:<9} {statistics.median(step_s[name]) * 1e3:>8.1f} {med:>+10.2f} "
              f"{1 + med / (base * 1e3):>10.3f} {inside:>9.2f} {share:>12.2%}   "
              + " ".join(f"{e:+.1f}" for e in extra))
    from retrain.config import load_config

    preset = load_config(cfg_path, args.sets).model.name
    record = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch threads 1",
              "preset": f"{preset}, batch 4 x group 4, {args.steps} steps, {args.rounds} rounds",
              "date": datetime.now(UTC).strftime("%Y-%m-%d"), "no_hooks_ms_per_step": base * 1e3,
              "costs": costs}
    if not args.no_write:
        from retrain.hooks.registry import COST_FILE
        from retrain.io import atomic_write_json

        atomic_write_json(COST_FILE, record)
        print(f"\nwrote {COST_FILE.relative_to(REPO)}")
    print(f"runner share of a step: minimal {costs['minimal']['share']:.2%} (target < 5%), "
          f"full {costs['full']['share']:.2%}")


if __name__ == "__main__":
    main()
