"""Read an offline `run-<id>.wandb` file back, for the round-trip test.

wandb 0.31 ships no Python reader for its transaction log (the old `internal.datastore` is gone
with the Go core), so this decodes the documented layout: a 7-byte header (":W&B", magic, version)
then LevelDB-log framed chunks (crc32 4B, length 2B LE, type 1B; blocks of 32 KiB) holding
`wandb_internal.Record` protobufs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    out: list[Any] = []
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        rec = pb.Record()
        rec.ParseFromString(pending)
        out.append(rec)
        pending = b""
    return out


def complete_records(path: Path, timeout_s: float = 20.0) -> list[Any]:
    """The records once the run's exit record is on disk: wandb-core (a separate process)
    may still be flushing the log for a moment after `run.finish()` returns."""
    deadline = time.monotonic() + timeout_s
    while True:
        recs = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in recs):
            return recs
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout_s} s")
        time.sleep(0.1)


def summarize(run_dir: Path) -> dict[str, Any]:
    """history (step -> {key: value}), config {key: value}, run name/group/tags/id, summary."""
    (log,) = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))[-1:]
    result: dict[str, Any] = {"history": {}, "config": {}, "summary": {}, "run": None}
    for rec in complete_records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            result["run"] = rec.run
            for item in rec.run.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            result["history"][row.get("_step", rec.history.step.num)] = row
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                result["summary"][key] = json.loads(item.value_json)
    return result
