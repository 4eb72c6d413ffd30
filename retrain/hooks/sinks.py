"""Where hook metrics go: `<run>/hooks.csv`, `<run>/hooks.jsonl` and wandb, in long format, one
row per step per hook metric: step, point, hook, metric, value.

Place in the data flow: the runner (runner.py) hands each call's rows here. Files are append-only
and flushed per call; on resume, rows of steps after the checkpoint are dropped first (as
metrics.jsonl does), so each step's rows appear once. Wandb logs to the run's own wandb run when
`logging.wandb_project` is set (keys `hooks/<hook>/<metric>`), else starts one for
`hooks.wandb_project` with the same machinery (retrain/sinks/wandb_sink.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from retrain.io import atomic_write_text, truncate_jsonl_after

CSV_FILE = "hooks.csv"
JSONL_FILE = "hooks.jsonl"
COLUMNS = ("step", "point", "hook", "metric", "value")


@dataclass(frozen=True)
class Row:
    step: int
    point: str
    hook: str
    metric: str
    value: float

    def as_dict(self) -> dict[str, object]:
        # JSON has no NaN: a metric without a value this step is null
        v = self.value if math.isfinite(self.value) else None
        return {"step": self.step, "point": self.point, "hook": self.hook, "metric": self.metric,
                "value": v}


class HookSink(Protocol):
    def write(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


class CsvSink:
    def __init__(self, run_dir: Path, *, start_step: int, resumed: bool) -> None:
        self.path = run_dir / CSV_FILE
        if resumed and self.path.exists():
            _truncate_csv_after(self.path, start_step)
        elif self.path.exists():
            self.path.unlink()  # a fresh run: rows of an earlier one are not this run's
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._fh)
        if self._fh.tell() == 0:
            self._writer.writerow(COLUMNS)
            self._fh.flush()

    def write(self, rows: Sequence[Row]) -> None:
        for r in rows:
            self._writer.writerow((r.step, r.point, r.hook, r.metric, _csv_value(r.value)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _csv_value(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ""


def _truncate_csv_after(path: Path, step: int) -> None:
    with open(path, encoding="utf-8", newline="") as fh:
        lines = list(csv.reader(fh))
    kept = [r for r in lines[1:] if len(r) == len(COLUMNS) and r[0].isdigit() and int(r[0]) <= step]
    if len(kept) == len(lines) - 1:
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    w.writerows(kept)
    atomic_write_text(path, buf.getvalue())


class JsonlSink:
    def __init__(self, run_dir: Path, *, start_step: int, resumed: bool) -> None:
        self.path = run_dir / JSONL_FILE
        if resumed:
            truncate_jsonl_after(self.path, start_step)
        elif self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, rows: Sequence[Row]) -> None:
        # one write per call: a kill leaves at most a torn last line, which readers skip
        self._fh.write("".join(json.dumps(r.as_dict()) + "\n" for r in rows))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class WandbHookSink:
    """Logs `hooks/<hook>/<metric>` at the row's step into a wandb run (`run` has `.log`)."""

    def __init__(self, run: object, *, owned: bool) -> None:
        self.run = run
        self.owned = owned  # started for the hooks alone: finish it at close

    def write(self, rows: Sequence[Row]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for r in rows:
            # on_checkpoint comes after the step's row was committed: files only
            if math.isfinite(r.value) and r.point != "on_checkpoint":
                by_step.setdefault(r.step, {})[f"hooks/{r.hook}/{r.metric}"] = r.value
        for step, data in sorted(by_step.items()):
            # shared run: the step's metrics row commits it; a run of our own commits per call
            self.run.log(data, step=step, commit=None if self.owned else False)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.owned:
            self.run.finish()  # type: ignore[attr-defined]
