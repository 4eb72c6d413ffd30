"""The shared file primitives: atomic replace, torn-line-tolerant JSONL, truncation on resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrain.io import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    read_jsonl,
    truncate_jsonl_after,
)


def test_atomic_write_leaves_no_temp_and_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    # readable by group/others like any normally created file (mkstemp alone would give 0600)
    assert (tmp_path / "m.json").stat().st_mode & 0o044 == 0o044


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as fh:
        fh.write('{"step": 3, "loss": 0.')  # what a kill mid-write leaves
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_truncate_after_keeps_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in range(0, 8):
        append_jsonl(path, {"step": step})
    with open(path, "a") as fh:
        fh.write('{"step": 8')
    assert truncate_jsonl_after(path, 5) == 3  # steps 6, 7 and the torn line
    for step in range(6, 9):
        append_jsonl(path, {"step": step})
    assert [r["step"] for r in read_jsonl(path)] == list(range(9))


def test_last_jsonl_reads_only_the_tail(tmp_path: Path) -> None:
    from retrain.io import last_jsonl

    path = tmp_path / "metrics.jsonl"
    assert last_jsonl(path) is None
    append_jsonl(path, {"step": 0, "eval_accuracy": 0.5})
    for step in range(1, 2000):
        append_jsonl(path, {"step": step, "loss": 0.1, "pad": "x" * 50})
    with open(path, "a") as fh:
        fh.write('{"step": 2000, "lo')
    assert last_jsonl(path)["step"] == 1999  # torn last line skipped
    assert last_jsonl(path, max_bytes=200)["step"] == 1999  # window cuts the first line: still fine
    assert last_jsonl(path, accept=lambda r: "eval_accuracy" in r) is None  # outside the tail window
    assert last_jsonl(path, accept=lambda r: "eval_accuracy" in r, max_bytes=1 << 20)["step"] == 0
