"""Synthetic campaign and run dirs with known numbers, written exactly as the on-disk contract says.

Curves are linear so the statistics are easy to work by hand: a run with final value f logs
correct_rate f-0.15, f-0.1, f-0.05, f at steps 1..4 (after an initial-eval-only row at step 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

STEPS = 4
# Final correct_rate per seed; maxrl+gtpo = baseline + (0.3, 0.2, 0.4), see test_compare.py.
BASE_FINALS = {42: 0.2, 101: 0.3, 202: 0.4}
GTPO_FINALS = {42: 0.5, 101: 0.5, 202: 0.8}


@dataclass
class FakeRun:
    condition: str
    seed: int
    final: float
    status: str = "done"  # pending|running|done|failed|interrupted
    steps_logged: int = STEPS
    torn: bool = False  # append half a JSON line, as a kill mid-write leaves
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.condition}_s{self.seed}"

    def curve(self) -> list[float]:
        return [round(self.final - 0.05 * (STEPS - s), 10) for s in range(1, STEPS + 1)]


def _toml_config(run: FakeRun) -> str:
    adv, transform = run.condition.split("+")
    return (
        f'[model]\nname = "tiny"\n\n[lora]\nrank = {16 if adv == "grpo" else 8}\n\n'
        f'[algorithm]\nadvantage_mode = "{adv}"\ntransform_mode = "{transform}"\n\n'
        f"[training]\nseed = {run.seed}\nmax_steps = {STEPS}\nbatch_size = 4\n"
    )


def write_run(run_dir: Path, run: FakeRun, *, condition_in_rows: bool = True) -> None:
    """A run dir as the trainer writes it; nothing at all for a pending run."""
    if run.status == "pending":
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(_toml_config(run))
    rows: list[dict[str, object]] = [
        {"step": 0, "condition": run.condition, "eval_accuracy": 0.1, "eval_mean_length": 20.0}
    ]
    for step, value in zip(range(1, run.steps_logged + 1), run.curve(), strict=False):
        row: dict[str, object] = {
            "step": step, "condition": run.condition, "loss": 1.0 / step, "mean_reward": 2 * value,
            "correct_rate": value, "running_correct_rate": value, "step_time_s": 2.0,
            "batch_size": 4, "group_size": 8, **run.extra,
        }
        if step == STEPS:
            row.update(eval_accuracy=run.final + 0.1, eval_mean_length=30.0)
        if not condition_in_rows:
            row.pop("condition")
        rows.append(row)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if run.torn:
        text += '{"step": 99, "condition": "x", "correct_r'
    (run_dir / "metrics.jsonl").write_text(text)
    if run.status in ("done", "failed", "interrupted"):
        summary = {
            "run": run.name, "condition": run.condition, "seed": run.seed, "status": run.status,
            "wall_time_s": 8.0, "steps_done": run.steps_logged, "max_steps": STEPS,
            "params_total": 1000, "params_trainable": 100,
            "initial_eval": {"accuracy": 0.1, "mean_length": 20.0},
            "final_eval": {"accuracy": run.final + 0.1, "mean_length": 30.0},
            "deltas": {"accuracy": run.final, "mean_length": 10.0},
            "best_eval": {"accuracy": run.final + 0.1, "step": STEPS},
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))


def write_campaign(root: Path, runs: list[FakeRun], *, status: str = "done", name: str = "ablation") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "campaign.toml").write_text("[campaign]\nseeds = [42, 101, 202]\n")
    plan = {"campaign": name, "spec_hash": "abc123", "created": "2025-01-01T00:00:00+00:00", "runs": [
        {"name": r.name, "condition": r.condition, "seed": r.seed,
         "overrides": {"algorithm.advantage_mode": r.condition.split("+")[0]},
         "run_dir": f"runs/{r.name}", "config_hash": "h" + r.name, "max_steps": STEPS}
        for r in runs]}
    (root / "plan.json").write_text(json.dumps(plan))
    manifest = {
        "campaign": name, "spec_hash": "abc123", "status": status,
        "created": "2025-01-01T00:00:00+00:00", "updated": "2025-01-01T00:10:00+00:00",
        "runs": {r.name: {
            "status": r.status, "condition": r.condition, "seed": r.seed, "run_dir": f"runs/{r.name}",
            "attempts": 0 if r.status == "pending" else 1,
            "started": None if r.status == "pending" else "2025-01-01T00:00:00+00:00",
            "ended": "2025-01-01T00:01:00+00:00" if r.status == "done" else None,
            "wall_time_s": 8.0 if r.status == "done" else None,
            "error": "RuntimeError: boom" if r.status == "failed" else None,
            "step": r.steps_logged if r.status != "pending" else 0, "max_steps": STEPS,
        } for r in runs},
        "squeeze": None, "comparison": None,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    for r in runs:
        write_run(root / "runs" / r.name, r)
    return root


def done_runs() -> list[FakeRun]:
    return [FakeRun("grpo+none", s, f) for s, f in BASE_FINALS.items()] + [
        FakeRun("maxrl+gtpo", s, f) for s, f in GTPO_FINALS.items()
    ]
