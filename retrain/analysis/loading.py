"""Read campaign and run directories into plain records, for every offline analysis command.

This is the only place in `retrain.analysis` that touches the file system. It depends on the
on-disk contract alone (plan.json, manifest.json, runs/<run>/{config.toml, metrics.jsonl,
summary.json, heartbeat.json}), never on the trainer, so it works on finished runs, on runs still
being written (torn lines are skipped, and counted in one warning per file; missing files are
normal) and on runs that never started.

A run's status is what its record says (manifest, summary.json); a run recorded as running is
then checked against its heartbeat (`live_status`): running, stale, dead or not started.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrain.analysis.liveness import FINAL_STATUSES, HEARTBEAT_FILE, live_status, stale_after
from retrain.errors import RetrainError
from retrain.io import iter_jsonl, read_json_object

if TYPE_CHECKING:
    import pandas as pd

# What a manifest or summary.json records; a recorded `running` is refined by `live_status`.
# The metric that `retrain analyze compare` and the campaign's summary.md compare conditions on
# by default: the fraction of correct completions reads the same for every verifiable task,
# whereas mean_reward's scale depends on the reward function. Defined in this light module so
# that the CLI can name it without importing numpy.
DEFAULT_METRIC = "correct_rate"
# skipped: a sequential-seeds campaign (seeds_policy = "until_decided") decided it is not needed.
RECORDED_STATUSES = ("pending", "running", "done", "failed", "interrupted", "skipped")
RUN_STATUSES = ("pending", "not started", "running", "stale", "dead", *FINAL_STATUSES, "skipped")
# Directories inside a run that never hold another run; skipping them keeps a tree walk cheap.
_SKIP_DIRS = frozenset({"checkpoints", "adapter", "emergence", "__pycache__", "node_modules"})
_SEED_SUFFIX = re.compile(r"_s(\d+)$")


class AnalysisError(RetrainError):
    """A path, metric or option given to an analysis command cannot be used."""


@dataclass
class RunData:
    """One run as read from disk; `rows` are metrics rows merged per step, sorted by step."""

    name: str
    run_dir: Path
    condition: str
    seed: int | None
    status: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    campaign: str | None = None
    max_steps: int | None = None
    attempts: int | None = None
    started: str | None = None
    ended: str | None = None
    wall_time_s: float | None = None
    error: str | None = None
    reason: str | None = None  # why a skipped run was skipped (the manifest's `reason`)
    updated: float | None = None  # epoch seconds of the newest metrics/summary/heartbeat write
    heartbeat: dict[str, Any] | None = None  # heartbeat.json as the trainer last wrote it

    @property
    def step(self) -> int:
        """Last training step seen (0 when only the initial eval, or nothing, was logged)."""
        steps = [r["step"] for r in self.rows if _is_training_row(r)]
        return max(steps) if steps else 0

    def series(self, metric: str) -> tuple[list[int], list[float]]:
        """Steps and finite values of `metric`, in step order; rows without it are skipped."""
        steps: list[int] = []
        values: list[float] = []
        for row in self.rows:
            value = as_number(row.get(metric))
            if value is not None:
                steps.append(row["step"])
                values.append(value)
        return steps, values

    def latest(self, metric: str) -> float | None:
        _, values = self.series(metric)
        return values[-1] if values else None

    def metric_names(self) -> set[str]:
        return {k for row in self.rows for k, v in row.items() if k != "step" and as_number(v) is not None}


@dataclass
class CampaignData:
    """A campaign directory: its plan/manifest and every planned run (started or not)."""

    name: str
    path: Path
    status: str
    runs: list[RunData]
    plan: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None


def as_number(value: object) -> float | None:
    """`value` as a finite float, or None for missing, non-numeric, bool, NaN and inf."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _is_training_row(row: dict[str, Any]) -> bool:
    # Step 0 may be an initial-eval row holding only step, condition and eval_* keys.
    return any(k not in ("step", "condition") and not k.startswith("eval_") for k in row)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


_warned_files: set[Path] = set()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metrics rows merged per step (a later row for the same step wins key by key), by step.

    A line that is not a JSON object with an integer `step` (a torn write, a damaged file) is
    skipped; how many were skipped in the file is said once per file on stderr.
    """
    by_step: dict[int, dict[str, Any]] = {}
    skipped = 0

    def count() -> None:
        nonlocal skipped
        skipped += 1

    for row in iter_jsonl(path, on_skip=count):
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            count()
            continue
        by_step.setdefault(step, {}).update(row)
    if skipped:
        _warn_skipped(path, skipped)
    return [by_step[s] for s in sorted(by_step)]


def _warn_skipped(path: Path, count: int) -> None:
    key = path.resolve()
    if key in _warned_files:
        return  # once per file: `status --watch` rereads it every few seconds
    _warned_files.add(key)
    from retrain.ui import err_console

    lines = "line" if count == 1 else "lines"
    err_console.print(f"warning: {path}: skipped {count} unreadable {lines} (not a JSON object "
                      "with an integer step; a kill mid-write leaves a torn last line); "
                      "the other rows are used", highlight=False, soft_wrap=True, markup=False)


def _mtime(*paths: Path) -> float | None:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times) if times else None


def _config_condition(config: dict[str, Any]) -> str | None:
    algo = config.get("algorithm")
    if isinstance(algo, dict) and "advantage_mode" in algo and "transform_mode" in algo:
        return f"{algo['advantage_mode']}+{algo['transform_mode']}"
    return None


def _first_int(*values: object) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _first_str(*values: object) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def load_run(run_dir: Path, *, entry: dict[str, Any] | None = None, campaign: str | None = None) -> RunData:
    """Read one run dir. `entry` merges the plan and manifest records of a campaign run."""
    entry = entry or {}
    config = _read_toml(run_dir / "config.toml")
    summary = read_json_object(run_dir / "summary.json")
    rows = read_metrics(run_dir / "metrics.jsonl")
    summ = summary or {}
    training_raw = config.get("training")
    training: dict[str, Any] = training_raw if isinstance(training_raw, dict) else {}
    name = _first_str(entry.get("name"), summ.get("run")) or run_dir.name
    row_condition = next((r["condition"] for r in rows if isinstance(r.get("condition"), str)), None)
    condition = (
        _first_str(entry.get("condition"), summ.get("condition"), row_condition, _config_condition(config))
        or _SEED_SUFFIX.sub("", name)
    )
    suffix = _SEED_SUFFIX.search(name)
    seed = _first_int(entry.get("seed"), summ.get("seed"), training.get("seed"))
    if seed is None and suffix:
        seed = int(suffix.group(1))
    max_steps = _first_int(entry.get("max_steps"), summ.get("max_steps"), training.get("max_steps"))
    run = RunData(
        name=name, run_dir=run_dir, condition=condition, seed=seed, status="pending", rows=rows,
        config=config, summary=summary, campaign=campaign, max_steps=max_steps,
        attempts=_first_int(entry.get("attempts")), started=_first_str(entry.get("started")),
        ended=_first_str(entry.get("ended")), error=_first_str(entry.get("error")),
        reason=_first_str(entry.get("reason")),
        wall_time_s=as_number(entry.get("wall_time_s")) or as_number(summ.get("wall_time_s")),
        heartbeat=read_json_object(run_dir / HEARTBEAT_FILE),
    )
    _set_status(run, entry, summ)
    return run


def _set_status(run: RunData, entry: dict[str, Any], summ: dict[str, Any]) -> None:
    """run.updated (the newest write) and run.status (recorded, then checked for life)."""
    beat = as_number((run.heartbeat or {}).get("time"))
    metrics_written = _mtime(run.run_dir / "metrics.jsonl")
    summary_written = _mtime(run.run_dir / "summary.json")
    run.updated = max((t for t in (metrics_written, summary_written, beat) if t is not None),
                      default=None)
    # A lone run resumed by `retrain run` keeps its old summary.json until it ends again.
    resumed = (run.heartbeat or {}).get("status") == "running" and beat is not None and (
        summary_written is None or beat > summary_written)
    run.status = _recorded_status(entry.get("status"), summ.get("status"), resumed=resumed,
                                  has_files=bool(run.rows) or run.run_dir.exists())
    if run.status == "running":
        _, step_times = run.series("step_time_s")
        run.status = live_status(run.heartbeat,
                                 metrics_written=metrics_written if run.rows else None,
                                 started=_epoch(entry.get("started")),
                                 in_campaign=entry.get("status") == "running",
                                 stale_after_s=stale_after(step_times))


def _recorded_status(manifest_status: object, summary_status: object, *, resumed: bool,
                     has_files: bool) -> str:
    # The manifest is the campaign's truth but is rewritten after summary.json, so a finished
    # summary beats a manifest that still says pending/running.
    if summary_status == "done" and manifest_status in (None, "pending", "running"):
        return "done"
    if isinstance(manifest_status, str) and manifest_status in RECORDED_STATUSES:
        return manifest_status
    if resumed:
        return "running"
    if isinstance(summary_status, str) and summary_status in RECORDED_STATUSES:
        return summary_status
    # A lone run dir without summary.json: the trainer is writing it, or was killed, or never
    # started; `live_status` tells which.
    return "running" if has_files else "pending"


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def is_campaign_dir(path: Path) -> bool:
    return (path / "plan.json").is_file() or (path / "manifest.json").is_file()


def is_run_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("metrics.jsonl", "summary.json", "config.toml"))


def load_campaign(path: Path) -> CampaignData:
    """Every run of a campaign in plan order, plus manifest-only runs and stray runs/<dir>s."""
    plan = read_json_object(path / "plan.json")
    manifest = read_json_object(path / "manifest.json")
    plan_runs = [r for r in (plan or {}).get("runs", []) if isinstance(r, dict) and "name" in r]
    man_runs = (manifest or {}).get("runs") or {}
    man_runs = man_runs if isinstance(man_runs, dict) else {}
    name = _first_str((manifest or {}).get("campaign"), (plan or {}).get("campaign")) or path.name
    entries: dict[str, dict[str, Any]] = {}
    for rec in plan_runs:
        entries[str(rec["name"])] = dict(rec)
    for run_name, rec in man_runs.items():
        if isinstance(rec, dict):
            entries.setdefault(str(run_name), {"name": str(run_name)}).update(rec)
    runs_root = path / "runs"
    if runs_root.is_dir():
        for child in sorted(runs_root.iterdir()):
            if child.is_dir() and child.name not in entries and is_run_dir(child):
                entries[child.name] = {"name": child.name, "run_dir": f"runs/{child.name}"}
    runs = []
    for run_name, entry in entries.items():
        run_dir = path / str(entry.get("run_dir") or f"runs/{run_name}")
        runs.append(load_run(run_dir, entry=entry, campaign=name))
    status = _first_str((manifest or {}).get("status")) or ("running" if runs else "pending")
    return CampaignData(name=name, path=path, status=status, runs=runs, plan=plan, manifest=manifest)


def discover(path: Path) -> tuple[list[CampaignData], list[RunData]]:
    """Campaigns and stand-alone runs at or under `path` (a campaign, a run dir or any tree)."""
    path = Path(path)
    if not path.exists():
        raise AnalysisError(f"{path}: no such file or directory")
    if path.is_file():  # a file of a run or a campaign (config.toml, manifest.json) names its dir
        if not (is_campaign_dir(path.parent) or is_run_dir(path.parent)):
            raise AnalysisError(f"{path} is a file, not a run or campaign directory; give a "
                                f"campaign dir, a run dir, or a directory holding them")
        path = path.parent
    if is_campaign_dir(path):
        return [load_campaign(path)], []
    if is_run_dir(path):
        return [], [load_run(path)]
    campaigns: list[CampaignData] = []
    loose: list[RunData] = []
    for root, dirs, _files in os.walk(path):
        here = Path(root)
        if here != path and is_campaign_dir(here):
            campaigns.append(load_campaign(here))
            dirs[:] = []
        elif here != path and is_run_dir(here):
            loose.append(load_run(here))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
    return campaigns, loose


def collect_runs(path: Path) -> list[RunData]:
    """Every run under `path` (planned-but-pending ones included; skipped ones, which a
    sequential-seeds campaign decided never to run, left out); an error when there is none."""
    campaigns, loose = discover(Path(path))
    runs = [r for c in campaigns for r in c.runs if r.status != "skipped"] + loose
    if not runs:
        raise AnalysisError(
            f"{path}: no runs found (expected a campaign dir with plan.json/manifest.json, "
            "a run dir with metrics.jsonl/summary.json/config.toml, or a tree of them)"
        )
    return runs


def available_metrics(runs: list[RunData]) -> list[str]:
    return sorted(set().union(*(r.metric_names() for r in runs)) - {"step"}) if runs else []


def check_metric(runs: list[RunData], metric: str) -> None:
    """Raise an AnalysisError naming the available metrics when no run logged `metric`."""
    names = available_metrics(runs)
    if metric not in names:
        shown = ", ".join(names) if names else "(no numeric metrics logged yet)"
        raise AnalysisError(f"unknown metric '{metric}'; available: {shown}")


def load_runs(path: str | Path) -> pd.DataFrame | list[dict[str, object]]:
    """Every metrics row of every run under `path`, one record per (run, step).

    Each record holds the run's identity (campaign, run, condition, seed, status) and the row's
    metrics. Returns a pandas DataFrame when pandas is importable, else a list of dicts.
    """
    records: list[dict[str, object]] = []
    for run in collect_runs(Path(path)):
        ident = {"campaign": run.campaign, "run": run.name, "condition": run.condition,
                 "seed": run.seed, "status": run.status}
        for row in run.rows:
            records.append({**ident, **{k: v for k, v in row.items() if k != "condition"}})
    try:
        import pandas as pd
    except ImportError:
        return records
    return pd.DataFrame.from_records(records)
