"""run.log: the plain-text record of everything a run printed, kept across resumes.

Place in the data flow: a sink beside the console. `RunLogSink` appends a header per invocation
and the same [train]/[eval]/[ckpt]/[sample] lines the console shows (without colours or progress
bars). `tee_output` additionally copies whatever the process writes to stdout/stderr (warnings,
library output, tracebacks) into the same file; the campaign worker wraps each run in it.
The Rich console writes to the real terminal (`terminal_stream`), not through the tee, so lines
are never written to run.log twice and progress-bar control codes never reach it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from retrain.sinks.base import NullSink, RunInfo
from retrain.sinks.text import TextReport

RUN_LOG_FILE = "run.log"


def header_line(info: RunInfo, when: datetime | None = None) -> str:
    """`=== retrain run <name> started|resumed at step k, <iso time> ===`."""
    stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds")
    verb = "resumed" if info.resumed else "started"
    return f"=== retrain run {info.run_name} {verb} at step {info.start_step}, {stamp} ==="


class RunLogSink(NullSink):
    """Appends a header and the run's text lines to `<run_dir>/run.log`, flushed per write."""

    def __init__(self, *, log_every: int = 1, sample_completions: int = 3) -> None:
        self.report = TextReport(log_every=log_every, sample_completions=sample_completions)
        self.path: Path | None = None

    def _write(self, lines: Sequence[str]) -> None:
        if not lines or self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
            fh.flush()

    def start(self, info: RunInfo) -> None:
        info.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = info.run_dir / RUN_LOG_FILE
        self.report.start(info)
        self._write([header_line(info),
                     f"condition={info.condition} seed={info.seed} max_steps={info.max_steps}"])

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        self._write(self.report.step(metrics))

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._write(self.report.eval(step, metrics))

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        self.report.generations(records)

    def log_checkpoint(self, step: int, path: Path) -> None:
        self._write(self.report.checkpoint(step, path))

    def note(self, line: str) -> None:
        self._write([line])

    def finish(self, summary: Mapping[str, Any]) -> None:
        self._write(self.report.finish(summary))


class _Tee(io.TextIOBase):
    """A text stream that writes to the original stream and appends to a log file."""

    def __init__(self, original: TextIO, log_file: IO[str]) -> None:
        self.original = original
        self._log = log_file

    def write(self, text: str) -> int:
        self.original.write(text)
        if not self._log.closed:
            self._log.write(text)
            self._log.flush()
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


@contextmanager
def tee_output(path: str | Path) -> Iterator[Path]:
    """Copy every write to sys.stdout / sys.stderr into `path` (appended) while inside.

    Only Python-level writes are seen (not output of C extensions to fd 1/2).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved_out, saved_err = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log_file:
        sys.stdout = _Tee(saved_out, log_file)  # type: ignore[assignment]
        sys.stderr = _Tee(saved_err, log_file)  # type: ignore[assignment]
        try:
            yield path
        finally:
            sys.stdout, sys.stderr = saved_out, saved_err


def terminal_stream(stream: TextIO | None = None) -> TextIO:
    """The stream under any tee: where the Rich console should draw."""
    current: Any = stream if stream is not None else sys.stdout
    while isinstance(current, _Tee):
        current = current.original
    return current
