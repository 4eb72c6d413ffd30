"""metrics.jsonl and the emergence logs: the per-step files `retrain analyze` reads.

Place in the data flow: last stage of a step; the loop's flat metrics dict becomes one line of
`<run_dir>/metrics.jsonl` and one line of `emergence/steps.jsonl`; the step's completions go to
`emergence/generations.jsonl`. Append-only, one flushed line per write. On resume every file is
first cut back to rows with step <= start_step, so each step appears exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain.io import append_jsonl, iter_jsonl, truncate_jsonl_after
from retrain.sinks.base import NullSink, RunInfo, eval_key
from retrain.sinks.contract import (
    COMPLETION_CHARS,
    PROMPT_CHARS,
    ordered_row,
    validate_row,
)

log = logging.getLogger("retrain.sinks")

METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "emergence/steps.jsonl"
GENERATIONS_FILE = "emergence/generations.jsonl"


class JsonlSink(NullSink):
    """Writes metrics.jsonl, emergence/steps.jsonl and emergence/generations.jsonl.

    `generations_every`: write completions every N steps (0 = never); `generations_per_prompt`:
    at most this many completions per distinct prompt (the first ones in the loop's order).
    """

    essential = True  # the run's record: a write that fails fails the run

    def __init__(self, *, generations_every: int = 1, generations_per_prompt: int = 1) -> None:
        self.generations_every = generations_every
        self.generations_per_prompt = generations_per_prompt
        self.info: RunInfo | None = None
        self._pending_eval: dict[int, dict[str, Any]] = {}
        self._last_row: dict[str, Any] | None = None
        self._last_row_offset = 0  # byte offset where the last metrics row starts
        self._has_initial_row = False
        self._warned = False

    @property
    def metrics_path(self) -> Path:
        assert self.info is not None, "start() first"
        return self.info.run_dir / METRICS_FILE

    def start(self, info: RunInfo) -> None:
        self.info = info
        (info.run_dir / "emergence").mkdir(parents=True, exist_ok=True)
        paths = [info.run_dir / p for p in (METRICS_FILE, STEPS_FILE, GENERATIONS_FILE)]
        if info.resumed:
            for path in paths:
                dropped = truncate_jsonl_after(path, info.start_step)
                if dropped:
                    log.info("%s: dropped %d rows after step %d", path, dropped, info.start_step)
        self._has_initial_row = any(row.get("step") == 0 for row in iter_jsonl(paths[0]))

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = {eval_key(k): v for k, v in metrics.items()}
        if step == 0:
            if self._has_initial_row:
                return  # a resumed run that evaluates again at start keeps the first one
            assert self.info is not None
            append_jsonl(self.metrics_path,
                         {"step": 0, "condition": self.info.condition, **values})
            self._has_initial_row = True
        elif self._last_row is not None and self._last_row.get("step") == step:
            self._rewrite_last_row({**self._last_row, **values})
        else:
            self._pending_eval.setdefault(step, {}).update(values)

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        assert self.info is not None, "start() first"
        step = metrics.get("step")
        row = ordered_row(metrics)
        row.setdefault("condition", self.info.condition)
        if isinstance(step, int):
            row.update(self._pending_eval.pop(step, {}))
        self._check(row)
        path = self.metrics_path
        self._last_row_offset = path.stat().st_size if path.exists() else 0
        append_jsonl(path, row)
        self._last_row = row
        append_jsonl(self.info.run_dir / STEPS_FILE, {
            "step": step,
            "mean_reward": metrics.get("mean_reward"),
            "correct_count": metrics.get("correct_count"),
            "total_count": metrics.get("total_count"),
            "condition": row["condition"],
        })

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        assert self.info is not None, "start() first"
        if self.generations_every <= 0 or step % self.generations_every != 0:
            return
        per_prompt: dict[str, int] = {}
        path = self.info.run_dir / GENERATIONS_FILE
        for rec in records:
            prompt = str(rec.get("prompt", ""))
            if per_prompt.get(prompt, 0) >= self.generations_per_prompt:
                continue
            per_prompt[prompt] = per_prompt.get(prompt, 0) + 1
            append_jsonl(path, {
                "step": step,
                "prompt": prompt[:PROMPT_CHARS],
                "completion": str(rec.get("completion", ""))[:COMPLETION_CHARS],
                "reward": rec.get("reward"),
                "num_tokens": rec.get("num_tokens"),
            })

    def _rewrite_last_row(self, row: dict[str, Any]) -> None:
        """An eval that arrived after its step's row: replace that (last) line in place."""
        path = self.metrics_path
        os.truncate(path, self._last_row_offset)
        append_jsonl(path, row)
        self._last_row = row

    def _check(self, row: Mapping[str, Any]) -> None:
        if self._warned:
            return
        # numpy scalars are written as plain numbers; check them as such
        plain = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        problems = validate_row(plain)
        if problems:
            self._warned = True
            log.warning("metrics row of step %s breaks the contract (first time only): %s",
                        row.get("step"), "; ".join(problems[:8]))
