"""manifest.json: the campaign's state, rewritten atomically by the campaign process only.

Per run: status (pending | running | done | failed | interrupted | skipped), attempts, start/end
time, wall time, last error lines, the run's directory, step/max_steps; a skipped run (sequential
seeds: a look decided it is not needed) has the `reason`. Also the squeeze recommendation, the
final comparison and, for `seeds_policy = "until_decided"`, the looks ("sequential").
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.io import atomic_write_json, last_jsonl, read_json_object

MANIFEST = "manifest.json"
STATUSES = ("pending", "running", "done", "failed", "interrupted", "skipped")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, out: Path, plan: dict[str, Any]) -> Manifest:
        runs = {r["name"]: pending_record(r) for r in plan["runs"]}
        m = cls(out / MANIFEST, {"campaign": plan["campaign"], "spec_hash": plan["spec_hash"],
                                 "status": "running", "created": now(), "updated": now(),
                                 "runs": runs, "squeeze": None, "comparison": None})
        m.save()
        return m

    @classmethod
    def load(cls, out: Path) -> Manifest | None:
        """The manifest, or None if it is missing or damaged (not a JSON object of runs)."""
        data = read_json_object(out / MANIFEST)
        if not (data is not None and isinstance(data.get("runs"), dict)
                and all(isinstance(r, dict) and r.get("status") in STATUSES
                        for r in data["runs"].values())):
            return None
        return cls(out / MANIFEST, data)

    @classmethod
    def rebuild(cls, out: Path, plan: dict[str, Any]) -> Manifest:
        """A new manifest for `plan` whose run records come from the run dirs: the status in a
        run's summary.json (a run dir without one was cut short: interrupted), the last step of
        its metrics.jsonl. Attempts, times and errors of earlier attempts are not recoverable."""
        m = cls.create(out, plan)
        for r in plan["runs"]:
            run_dir = out / r["run_dir"]
            if not run_dir.is_dir():
                continue
            rec = m.runs[r["name"]]
            summary = read_json_object(run_dir / "summary.json") or {}
            status = summary.get("status")
            rec["status"] = status if status in ("done", "failed", "interrupted") else "interrupted"
            rec["error"] = summary.get("error")
            rec["attempts"] = 1
            last = last_jsonl(run_dir / "metrics.jsonl")
            rec["step"] = last["step"] if last and isinstance(last.get("step"), int) else 0
        m.save()
        return m

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        return self.data["runs"]

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)

    def mark(self, name: str, status: str, **fields: Any) -> None:
        assert status in STATUSES, status
        rec = self.runs[name]
        rec["status"] = status
        rec.update(fields)
        self.save()

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for rec in self.runs.values():
            out[rec["status"]] += 1
        return out


def pending_record(run: dict[str, Any]) -> dict[str, Any]:
    """The manifest record of a run from the plan that has not started."""
    return {"status": "pending", "condition": run["condition"], "seed": run["seed"],
            "run_dir": run["run_dir"], "attempts": 0, "started": None, "ended": None,
            "wall_time_s": None, "error": None, "step": 0, "max_steps": run["max_steps"]}
