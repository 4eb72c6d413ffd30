"""The campaign directory: create it, or reopen it for resume (plan.json, manifest.json,
campaign.toml), after checking its layout; rebuild a damaged plan or manifest from the run dirs;
reconcile a changed spec (`--force`). Called by `retrain campaign run|resume` before the
CampaignRunner (runner.py) trains anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.campaign import sequential
from retrain.campaign.grid import CampaignSpec
from retrain.campaign.manifest import MANIFEST, Manifest, pending_record
from retrain.campaign.plan import diff_plans, hash_runs, plan_dict
from retrain.errors import ResumeError
from retrain.io import atomic_write_json, atomic_write_text, read_json_object


def default_out_dir(spec: CampaignSpec) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("logs") / f"{spec.name}_{stamp}"


def prepare(spec: CampaignSpec, out: Path, *, source_text: str, sets: list[str], force: bool,
            say: Any = None) -> tuple[Manifest, bool]:
    """Create the campaign dir, or reopen it for resume. Returns (manifest, resumed).

    A damaged plan.json is rebuilt from the run dirs' config.toml, a damaged manifest.json from
    plan.json and the run dirs (`say` reports each repair). Anything else in the way (a file
    where a directory belongs) is a ResumeError before anything is written.
    """
    plan = plan_dict(spec, sets)
    check_layout(out, plan)
    if (out / "plan.json").exists():
        old = read_json_object(out / "plan.json")
        if old is None:
            old = plan_from_run_dirs(out, plan)
            _report(say, f"{out / 'plan.json'} was damaged; rebuilt it from the run directories")
        manifest = Manifest.load(out)
        spec_changed = old.get("spec_hash") != plan["spec_hash"]
        recorded = manifest.data.get("sequential") if manifest is not None else None
        redesigned = sequential.design_changes(recorded or old.get("sequential"),
                                               plan.get("sequential"))
        if spec_changed or redesigned:
            changes = (diff_plans(old, plan) if spec_changed else []) + redesigned
            if not force:
                lines = "\n".join(f"  - {c}" for c in changes) or "  - (run settings differ)"
                raise ResumeError(f"{out}: the campaign spec changed since it started:\n{lines}\n"
                                  "resume with the original file, or pass --force to continue "
                                  "(changed runs restart from scratch"
                                  + ("; the sequential looks are taken again" if recorded else "")
                                  + ")")
            atomic_write_text(out / "campaign.toml", source_text)  # later resumes use the new spec
        if manifest is None:
            if (out / MANIFEST).exists():
                _report(say, f"{out / MANIFEST} was damaged; rebuilt it from plan.json and the "
                             "run directories")
            manifest = Manifest.rebuild(out, old)
        _reconcile(manifest, old, plan, out)
        # a forced change may have restarted runs that recorded looks read: take them again
        sequential.sync(manifest.data, plan.get("sequential"), restart=spec_changed)
        atomic_write_json(out / "plan.json", plan)
        manifest.data["spec_hash"] = plan["spec_hash"]
        manifest.data["status"] = "running"
        manifest.save()
        return manifest, True
    if out.exists() and any(out.iterdir()):
        raise ResumeError(f"{out} exists and is not a campaign directory (no plan.json); pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "campaign.toml", source_text)
    atomic_write_json(out / "plan.json", plan)
    manifest = Manifest.create(out, plan)
    if plan.get("sequential"):
        sequential.sync(manifest.data, plan["sequential"], restart=False)  # pre-registered
        manifest.save()
    return manifest, False


def _report(say: Any, text: str) -> None:
    if say is not None:
        say(text)


def check_layout(out: Path, plan: dict[str, Any]) -> None:
    """Refuse, before writing, a campaign dir with a file where a directory belongs or the
    reverse (a run would fail on it, or the campaign process would crash mid-way)."""
    dirs = [out, out / "runs"]
    files = [out / "plan.json", out / MANIFEST, out / "campaign.toml", out / "summary.md"]
    for run in plan["runs"]:
        run_dir = out / run["run_dir"]
        dirs += [run_dir, run_dir / "checkpoints", run_dir / "emergence", run_dir / "adapter"]
        files += [run_dir / f for f in ("metrics.jsonl", "summary.json", "config.toml", "run.log")]
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise ResumeError(f"{d} is a file where retrain needs a directory; move it away, or "
                              f"pick another --out")
    for f in files:
        if f.is_dir():
            raise ResumeError(f"{f} is a directory where retrain writes a file; move it away, or "
                              f"pick another --out")


def plan_from_run_dirs(out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """What plan.json said, recovered from what the runs recorded: each started run's resolved
    config.toml. A run that never started (no config.toml) is taken from `plan`: it has nothing
    to protect. Run dirs that `plan` lacks come first, so the diff shows them as removed."""
    from retrain.config.load import build_config, read_toml
    from retrain.config.render import config_hash, config_to_dict
    from retrain.errors import RetrainError

    planned = {r["name"]: r for r in plan["runs"]}
    runs_root = out / "runs"
    extra = sorted(p.name for p in runs_root.iterdir() if p.is_dir() and p.name not in planned) \
        if runs_root.is_dir() else []
    runs = []
    for name in [*extra, *planned]:
        entry = planned.get(name) or {"name": name, "run_dir": f"runs/{name}"}
        cfg_path = out / entry["run_dir"] / "config.toml"
        if not cfg_path.is_file():
            if name in planned:
                runs.append(entry)
            continue
        try:
            cfg, _ = build_config(read_toml(cfg_path), source=str(cfg_path))
        except RetrainError:
            runs.append({**entry, "config_hash": "unreadable", "config": {}})  # restarts as changed
            continue
        runs.append({**entry, "config_hash": config_hash(cfg),
                     "config": config_to_dict(cfg, for_run=True)})
    return {"campaign": plan["campaign"], "runs": runs,
            "spec_hash": hash_runs([(r["name"], r["config_hash"]) for r in runs])}


def _reconcile(manifest: Manifest, old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    """After --force: runs whose config changed start over, new runs are pending, and the run
    dirs of changed or removed runs move to `superseded/<UTC time>/` at once (kept, not deleted;
    out of the comparison; and a kill before the run restarts cannot resume the old config)."""
    old_hash = {r["name"]: r["config_hash"] for r in old.get("runs", [])}
    new_names = {r["name"] for r in new["runs"]}
    stale = [n for n in old_hash if n not in new_names]
    fresh: dict[str, dict[str, Any]] = {}
    for r in new["runs"]:
        rec = manifest.runs.get(r["name"])
        if rec is None or old_hash.get(r["name"]) != r["config_hash"]:
            if rec is not None:
                stale.append(r["name"])
            rec = pending_record(r)
        rec["max_steps"] = r["max_steps"]
        fresh[r["name"]] = rec
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for name in stale:
        src = out / "runs" / name
        if src.exists():
            dest = out / "superseded" / stamp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dest)
    manifest.data["runs"] = fresh
