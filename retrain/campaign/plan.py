"""The plan: every run of a campaign with its resolved config, plus a spec hash.

`plan.json` is written when a campaign starts; a resumed campaign compares its new plan with the
stored one (`diff_plans`) and refuses to continue on a changed spec unless forced. Under
`seeds_policy = "until_decided"` the plan lists every potential run (up to max_seeds seeds) and
holds the pre-registered design under "sequential" (campaign/sequential.py).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from retrain.campaign.grid import CampaignSpec, RunSpec
from retrain.campaign.sequential import design, plan_summary
from retrain.config.render import config_to_dict, flat_dict


def spec_hash(runs: tuple[RunSpec, ...] | list[RunSpec]) -> str:
    """Hash of the run names and their resolved configs: equal iff the experiments are equal."""
    return hash_runs([(r.name, r.config_hash) for r in runs])


def hash_runs(pairs: list[tuple[str, str]]) -> str:
    """`spec_hash` of (run name, config hash) pairs in plan order."""
    blob = json.dumps([list(p) for p in pairs], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_entry(run: RunSpec) -> dict[str, Any]:
    return {
        "name": run.name,
        "condition": run.condition,
        "seed": run.seed,
        "overrides": dict(run.overrides),
        "run_dir": run.run_dir,
        "config_hash": run.config_hash,
        "max_steps": run.max_steps,
        "config": config_to_dict(run.config, for_run=True),
    }


def plan_dict(spec: CampaignSpec, sets: list[str] | None = None) -> dict[str, Any]:
    return {
        "campaign": spec.name,
        "spec_hash": spec_hash(spec.runs),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": spec.source,
        "sets": list(sets or []),  # --set overrides given at start; `campaign resume` reapplies them
        "num_conditions": len(spec.conditions),
        "seeds": list(spec.base.campaign.run_seeds),
        "total_steps": sum(r.max_steps for r in spec.runs),
        "runs": [run_entry(r) for r in spec.runs],
        "packs": packing(spec),
    } | ({"sequential": seq} if (seq := design(spec)) is not None else {})


def packing(spec: CampaignSpec) -> list[list[str]] | None:
    """The packs the campaign trains (executors/packed.py; with max_workers > 1 the pool's
    workers train one pack each at a time), each a list of run names in plan order, a run alone
    being a pack of one; None when the campaign does not pack."""
    from retrain.executors.packed import plan_packs

    c = spec.base.campaign
    if c.executor != "auto" or not c.pack_runs:
        return None
    return plan_packs([(r.name, r.config) for r in spec.runs], c.pack_size, c.max_workers)


def packing_line(packs: list[list[str]] | None) -> str:
    """How the plan's runs are packed, for the line under `campaign plan`'s table."""
    if packs is None:
        return "packing: off (each run loads the model and trains alone)"
    sizes = [len(p) for p in packs if len(p) > 1]
    alone = sum(len(p) == 1 for p in packs)
    shown = ", ".join(f"{n}" for n in sizes) or "none"
    return (f"packing: {len(sizes)} pack{'s' if len(sizes) != 1 else ''} of {shown} runs, each on "
            f"one base model with its runs batched in lockstep; {alone} run{'s' if alone != 1 else ''} "
            f"alone")


def summary_line(spec: CampaignSpec, plan: dict[str, Any]) -> str:
    """The line under `retrain campaign plan`'s table (Rich markup)."""
    if plan.get("sequential"):
        return plan_summary(plan["sequential"], len(spec.conditions), len(spec.runs))
    return (f"{len(spec.conditions)} conditions × {len(spec.base.campaign.seeds)} seeds = "
            f"[bold]{len(spec.runs)} runs[/], {plan['total_steps']} steps in total")


def diff_plans(old: dict[str, Any], new: dict[str, Any], *, limit: int = 12) -> list[str]:
    """Human-readable differences between two plan dicts (runs added/removed, settings changed)."""
    old_runs = {r["name"]: r for r in old.get("runs", [])}
    new_runs = {r["name"]: r for r in new.get("runs", [])}
    out: list[str] = []
    added = [n for n in new_runs if n not in old_runs]
    removed = [n for n in old_runs if n not in new_runs]
    if added:
        out.append(f"runs added: {', '.join(added[:limit])}" + (" …" if len(added) > limit else ""))
    if removed:
        out.append(f"runs removed: {', '.join(removed[:limit])}" + (" …" if len(removed) > limit else ""))
    changed: dict[str, tuple[Any, Any]] = {}
    for name in old_runs.keys() & new_runs.keys():
        a = _flat(old_runs[name].get("config", {}))
        b = _flat(new_runs[name].get("config", {}))
        for k in sorted(a.keys() | b.keys()):
            if a.get(k) != b.get(k):
                changed.setdefault(k, (a.get(k), b.get(k)))
    for k, (a, b) in list(changed.items())[:limit]:
        out.append(f"{k}: {a!r} -> {b!r}")
    return out


def _flat(nested: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, t in nested.items() if isinstance(t, dict) for k, v in t.items()}


__all__ = ["diff_plans", "flat_dict", "hash_runs", "packing", "packing_line", "plan_dict",
           "run_entry", "spec_hash", "summary_line"]
