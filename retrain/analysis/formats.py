"""Rendering of analysis results: Rich tables for the terminal, Markdown, CSV and JSON.

The last step of every analysis command; compare, export, diff and status build plain rows and
hand them here, so every command spells a format the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from enum import StrEnum

from rich.table import Table

MISSING = "—"


class OutputFormat(StrEnum):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"


def fmt_number(value: object, digits: int = 4) -> str:
    """Short human form of a cell: numbers to `digits` significant digits, None as an em dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    if isinstance(value, list | tuple):
        return " ".join(fmt_number(v, digits) for v in value)
    return str(value)


def fmt_interval(mean: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """`mean ±half` for a symmetric interval, `mean [low, high]` otherwise, the mean alone for
    one seed."""
    if mean is None:
        return MISSING
    if low is None or high is None:
        return f"{mean:.{digits}g}"
    half = (high - low) / 2.0
    if math.isclose(mean - low, half, rel_tol=1e-6, abs_tol=1e-12):
        return f"{mean:.{digits}g} ±{half:.2g}"  # symmetric (t) interval: the short form
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def rich_table(columns: Sequence[str], cells: Sequence[Sequence[str]], *, title: str | None = None,
               caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption, show_lines=False, header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, overflow="fold", no_wrap=i == 0)
    for row in cells:
        table.add_row(*row)
    return table


def markdown_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def csv_text(records: Sequence[dict[str, object]]) -> str:
    """Records as CSV; columns are the union of keys in first-seen order, lists space-joined."""
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow([_csv_cell(rec.get(c)) for c in columns])
    return buf.getvalue()


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def json_text(obj: object) -> str:
    """Strict JSON (NaN/inf become null, paths become strings), indented, newline-terminated."""
    return json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n"


def _finite(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
