"""Shared CLI plumbing: error handling and consoles.

Every command is wrapped by `handles_errors`, so a RetrainError becomes one line on stderr and
exit code 2 (also under Typer's CliRunner), never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.text import Text

from retrain.errors import RetrainError
from retrain.ui import console, err_console

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["LiveOpt", "NoConsoleOpt", "SetOpt", "SilentOpt", "console", "console_mode",
           "err_console", "handles_errors"]

# Options several commands share (run, campaign run/resume, config show/validate, campaign plan).
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a key: section.key=value (repeatable).")]
LiveOpt = Annotated[bool, typer.Option("--live", help="Full-screen live display.")]
SilentOpt = Annotated[bool, typer.Option(
    "--silent", help="Progress display only: no step lines, tables or report text.")]
NoConsoleOpt = Annotated[bool, typer.Option(
    "--no-console-output", help="Nothing on the console (files are still written).")]


def console_mode(live: bool, silent: bool, no_console: bool) -> str:
    """The display mode the flags ask for: none > silent > live > progress."""
    if no_console:
        return "none"
    if silent:
        return "silent"
    return "live" if live else "progress"


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn RetrainError into `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RetrainError as exc:
            message = Text("error: ", style="bold red")
            message.append(str(exc))  # plain text: messages hold [table] names, not markup
            err_console.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None

    return wrapper
