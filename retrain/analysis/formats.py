"""Rendering of analysis results: tables for the terminal and for pipes, Markdown, CSV and JSON.

The last step of every analysis command; compare, export, diff, status and `campaign plan` build
plain rows and hand them here, so every command spells a format the same way.

Tables are `FitTable`s, which lay themselves out where they are printed. In a terminal they fit
its width: a cell wraps only at a space, so a number (or `key=value`) is never split or cut, and
when even that is too wide the least important columns are hidden and the caption names them.
Anywhere else (a pipe, a file) there is no width to fit: the table is plain text, one line per
row, columns aligned and separated by at least two spaces, nothing wrapped, cut or elided, so
`grep`, `awk -F '  +'` and `column` read it. Print results with `print_result`, which keeps
Rich from wrapping or cutting those lines at its default 80 columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

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


# How a column may break its cells in a terminal: "name" never (one line, e.g. a run name);
# "words" at spaces only, a word is never split (numbers, intervals, key=value lists);
# "text" at spaces, and a word longer than the column folds (error messages, paths).
ColumnKind = Literal["name", "words", "text"]
_GAP = 2  # spaces between columns, in the terminal table and in the plain text
_FOLD_MIN = 8  # narrowest a "text" column (or, as a last resort, a "name" column) gets
_TEXT_LINE = 24  # a "text" cell longer than this may wrap even in a one-line table


@dataclass
class Col:
    """One column of a FitTable. `drop`: 0 = always shown; on a terminal too narrow for every
    column, the one with the highest `drop` is hidden first."""

    header: str
    justify: Literal["left", "right"] = "left"
    kind: ColumnKind = "words"
    drop: int = 0
    cells: list[str | Text] = field(default_factory=list)


class FitTable:
    """A table that fits where it is printed (see the module docstring); a Rich renderable."""

    def __init__(self, columns: Sequence[Col | str], *, title: str | None = None,
                 caption: str | None = None, one_line: bool = False) -> None:
        self.columns = [c if isinstance(c, Col) else Col(c) for c in columns]
        self.title = title
        self.caption = caption
        self.one_line = one_line  # in a terminal, hide columns rather than wrap cells

    def add_row(self, *cells: str | Text) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        for col, cell in zip(self.columns, cells, strict=True):
            col.cells.append(cell)

    @property
    def row_count(self) -> int:
        return len(self.columns[0].cells) if self.columns else 0

    def plain_lines(self) -> list[str]:
        """Title, header, one line per row, caption: the whole table without a width limit."""
        widths = [_longest(col, whole=True) for col in self.columns]
        lines = [self.title] if self.title else []
        lines.append(_plain_row([c.header for c in self.columns], widths, self.columns))
        for i in range(self.row_count):
            lines.append(_plain_row([_plain(c.cells[i]) for c in self.columns], widths, self.columns))
        if self.caption:
            lines.append(self.caption)
        return lines

    def fitted(self, width: int) -> Table:
        """A Rich table at most `width` columns wide (unless even the columns that are never
        hidden cannot fit), with the hidden columns named in the caption."""
        keep, widths = fit_columns(self.columns, width, one_line=self.one_line)
        hidden = [c.header for i, c in enumerate(self.columns) if i not in keep]
        caption = self.caption or ""
        if hidden:
            note = (f"not shown at {width} columns: {', '.join(hidden)} (a wider terminal, or "
                    "piping the output, shows every column)")
            caption = f"{caption}\n{note}" if caption else note
        table = Table(title=self.title, caption=caption or None, title_justify="left",
                      caption_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
        for i, w in zip(keep, widths, strict=True):
            col = self.columns[i]
            table.add_column(col.header, justify=col.justify, width=w, overflow="fold",
                             no_wrap=col.kind == "name" and w >= _longest(col, whole=True))
        for r in range(self.row_count):
            # A plain string is text, not Rich markup: run names and overrides may hold brackets.
            cells = [_as_text(self.columns[i].cells[r]) for i in keep]
            for j, i in enumerate(keep):
                if self.columns[i].kind == "name" and cell_len(cells[j].plain) > widths[j]:
                    cells[j] = _break_name(cells[j], widths[j])
            table.add_row(*cells)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield self.fitted(options.max_width)
            return
        # Not a terminal: Segments are passed through unwrapped (print_result turns cropping off).
        for line in self.plain_lines():
            yield Segment(line)
            yield Segment.line()


def _plain(cell: str | Text) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _as_text(cell: str | Text) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


_NAME_BREAKS = "~_+,/"  # a name too long for its column breaks after one of these


def _break_name(text: Text, width: int) -> Text:
    """`text` in lines of at most `width` cells, broken after a separator of a run name
    (`grpo+none~lora.rank=8_s42`), so that its numbers stay whole when the name has separators."""
    pieces: list[str] = []
    start = 0
    for k, ch in enumerate(text.plain):
        if ch in _NAME_BREAKS:
            pieces.append(text.plain[start:k + 1])
            start = k + 1
    pieces.append(text.plain[start:])
    lines = [""]
    for piece in pieces:
        while piece:
            if cell_len(lines[-1] + piece) <= width:
                lines[-1] += piece
                piece = ""
            elif lines[-1]:
                lines.append("")
            else:  # a piece wider than the column: cut it (no separator to break at)
                lines[-1], piece = piece[:width], piece[width:]
                lines.append("")
    return Text("\n".join(line for line in lines if line), style=text.style)


def _plain_row(cells: Sequence[str], widths: Sequence[int], columns: Sequence[Col]) -> str:
    parts = []
    for text, w, col in zip(cells, widths, columns, strict=True):
        pad = " " * (w - cell_len(text))
        parts.append(pad + text if col.justify == "right" else text + pad)
    return (" " * _GAP).join(parts).rstrip()


def _longest(col: Col, *, whole: bool, header: bool = True) -> int:
    """Width of the widest cell (`whole`), else of the widest word; with the header or not."""
    texts = [col.header] if header else []
    texts += [_plain(c) for c in col.cells]
    if whole:
        return max((cell_len(t) for t in texts), default=1)
    return max((cell_len(w) for t in texts for w in t.split()), default=1)


def _min_width(col: Col, relaxed: bool) -> int:
    """Narrowest width without breaking a word (names: without wrapping at all); `relaxed`:
    what a name may fold to on a very narrow terminal."""
    if col.kind == "name":
        return min(_FOLD_MIN, _longest(col, whole=True)) if relaxed else _longest(col, whole=True)
    if col.kind == "text":
        return min(_FOLD_MIN, _longest(col, whole=False))
    return _longest(col, whole=False)


def _one_line_width(col: Col) -> int:
    """Width at which every cell (the header may still wrap) is on one line; free text (an
    error message) wraps at _TEXT_LINE anyway."""
    cells = _longest(col, whole=True, header=False)
    if col.kind == "text":
        cells = min(cells, _TEXT_LINE)
    return max(_min_width(col, relaxed=False), cells)


def _shown(columns: Sequence[Col], width: int, need: Callable[[Col], int]) -> list[int] | None:
    """Columns kept when hiding the highest `drop` (rightmost of a tie) until the `need`s fit."""
    keep = list(range(len(columns)))
    while sum(need(columns[i]) for i in keep) + _GAP * (len(keep) - 1) > width:
        droppable = [i for i in keep if columns[i].drop > 0]
        if not droppable:
            return None
        keep.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    return keep


def fit_columns(columns: Sequence[Col], width: int, *,
                one_line: bool = False) -> tuple[list[int], list[int]]:
    """(indices of the columns shown, their widths) for a terminal `width` columns wide.

    Columns are hidden (highest `drop` first) until every shown one gets at least its narrowest
    width without breaking a word; with `one_line`, until every cell fits on one line, when
    hiding columns can achieve that. Width left over goes first to the columns that need the
    least to show all their cells on one line, then to headers. When even the columns that are
    never hidden do not fit, names and text may fold (a last resort for very narrow terminals).
    """
    def strict(col: Col) -> int:
        return _min_width(col, relaxed=False)

    def relaxed(col: Col) -> int:
        return _min_width(col, relaxed=True)

    keep, mins = None, strict
    for need in ([_one_line_width] if one_line else []) + [strict, relaxed]:
        keep = _shown(columns, width, need)
        if keep is not None:
            mins = relaxed if need is relaxed else strict
            break
    if keep is None:  # nothing fits: the essential columns at their narrowest, cut at the edge
        keep = [i for i, c in enumerate(columns) if c.drop == 0]
        mins = relaxed
    widths = [mins(columns[i]) for i in keep]
    spare = width - _GAP * (len(keep) - 1) - sum(widths)
    for target in (lambda c: _one_line_width(c), lambda c: _longest(c, whole=True)):
        goals = [max(w, target(columns[i])) for w, i in zip(widths, keep, strict=True)]
        for j in sorted(range(len(keep)), key=lambda j: goals[j] - widths[j]):
            extra = min(max(0, spare), goals[j] - widths[j])
            widths[j] += extra
            spare -= extra
    return keep, widths


def print_result(console: Console, renderable: RenderableType) -> None:
    """Print a result so that it is complete: in a terminal, as it fits there; elsewhere with
    no wrapping or cropping at all (Rich would otherwise cut lines at its default 80 columns)."""
    console.print(renderable, soft_wrap=not console.is_terminal, highlight=False)


def rich_table(columns: Sequence[str | Col], cells: Sequence[Sequence[str | Text]], *,
               title: str | None = None, caption: str | None = None) -> FitTable:
    """A FitTable; a plain-string column header gets the defaults: the first column is a name
    that is never wrapped, the others are words, hidden right to left on a narrow terminal."""
    specs = [c if isinstance(c, Col) else Col(c, kind="name") if i == 0 else Col(c, drop=i)
             for i, c in enumerate(columns)]
    table = FitTable(specs, title=title, caption=caption)
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
