"""Errors users can act on. The CLI turns every RetrainError into one message and exit code 2.

Raise these for bad input (config, files, arguments) and for states a user must fix
(nothing to resume, spec changed). Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations


class RetrainError(Exception):
    """Base class: the message is shown as is, without a traceback."""

    exit_code: int = 2


class ConfigError(RetrainError):
    """A config or campaign file is invalid. Holds every problem found, each with its dotted path."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{where}{len(self.problems)} problems\n{lines}"
        super().__init__(msg)


class ResumeError(RetrainError):
    """Nothing to resume, or the resume would change the experiment."""


class DataError(RetrainError):
    """A task, dataset file or reward plugin is unusable."""


class RunFailedError(RetrainError):
    """A run stopped for a reason the user can act on; the run is marked failed with this message.

    Exit code 1 (the run failed), not 2 (bad input).
    """

    exit_code = 1


class RecordLostError(RunFailedError):
    """A run's record (metrics.jsonl, emergence/, summary.json) could not be written: a run with
    missing steps would look complete to every analysis."""


class DivergedError(RunFailedError):
    """Too many consecutive steps made no update (non-finite loss, gradient or weights)."""


class MissingExtraError(RetrainError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, why: str) -> None:
        super().__init__(
            f"{why} needs the '{package}' package: pip install 'retrain[{extra}]'"
        )
