"""manifest.json: the campaign's state, rewritten atomically by the campaign process only.

Per run: status (pending | running | done | failed | interrupted), attempts, start/end time,
wall time, last error lines, the run's directory, step/max_steps. Also the squeeze
recommendation and the final comparison.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.io import atomic_write_json

MANIFEST = "manifest.json"
STATUSES = ("pending", "running", "done", "failed", "interrupted")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, out: Path, plan: dict[str, Any]) -> Manifest:
        runs = {
            r["name"]: {"status": "pending", "condition": r["condition"], "seed": r["seed"],
                        "run_dir": r["run_dir"], "attempts": 0, "started": None, "ended": None,
                        "wall_time_s": None, "error": None, "step": 0, "max_steps": r["max_steps"]}
            for r in plan["runs"]
        }
        m = cls(out / MANIFEST, {"campaign": plan["campaign"], "spec_hash": plan["spec_hash"],
                                 "status": "running", "created": now(), "updated": now(),
                                 "runs": runs, "squeeze": None, "comparison": None})
        m.save()
        return m

    @classmethod
    def load(cls, out: Path) -> Manifest:
        return cls(out / MANIFEST, json.loads((out / MANIFEST).read_text()))

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
