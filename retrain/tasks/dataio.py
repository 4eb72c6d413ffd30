"""Reading and writing dataset rows (jsonl, parquet) for the file task and `retrain data`.

Edges of the tasks package: everything that touches the disk. Rows are plain dicts; parquet goes
through pyarrow, jsonl through the json module, one object per line. Writes are atomic
(temp file + rename) so an interrupted `retrain data` never leaves a half-written split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain.errors import DataError
from retrain.io import atomic_path

FORMATS = ("parquet", "jsonl")


def file_format(path: Path) -> str | None:
    """'parquet' or 'jsonl' from the suffix; None for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return None


def split_file(directory: Path, split: str) -> Path | None:
    """`<directory>/<split>.parquet` or `.jsonl`, whichever exists (parquet first)."""
    for suffix in (".parquet", ".jsonl", ".ndjson"):
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_columns(path: Path) -> list[str]:
    """Field names of a dataset file: the parquet schema, or the keys of the first jsonl row."""
    fmt = file_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise DataError(f"data.path: cannot read parquet {str(path)!r}: {exc}") from exc
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                return list(_json_row(line, path, number))
    return []


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a .jsonl or .parquet file; DataError for a missing, unreadable or bad file."""
    fmt = file_format(path)
    if fmt is None:
        raise DataError(f"data.path: {str(path)!r} is neither .jsonl nor .parquet")
    if not path.is_file():
        raise DataError(f"data.path: no such file {str(path)!r}")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_table(path).to_pylist())
        except Exception as exc:
            raise DataError(f"data.path: cannot read parquet {str(path)!r}: {exc}") from exc
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                rows.append(_json_row(line, path, number))
    return rows


def _json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"data.path: {str(path)!r} line {number} is not JSON: {exc.msg}") from exc
    if not isinstance(row, dict):
        raise DataError(f"data.path: {str(path)!r} line {number} is not a JSON object")
    return row


def write_rows(path: Path, columns: dict[str, Sequence[Any]], fmt: str) -> None:
    """Write column data atomically as parquet or jsonl."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(dict(columns)), tmp)
        else:
            names = list(columns)
            with open(tmp, "w", encoding="utf-8") as fh:
                for values in zip(*(columns[n] for n in names), strict=True):
                    fh.write(json.dumps(dict(zip(names, values, strict=True))) + "\n")
