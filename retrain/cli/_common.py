"""Shared CLI plumbing: error handling and consoles.

Every command is wrapped by `handles_errors`, so a RetrainError, or an OSError about a named path
(permission denied, read-only, disk full, a file in the way), becomes one line on stderr and exit
code 2 (also under Typer's CliRunner), never a traceback.
"""

from __future__ import annotations

import errno
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
    "--set", metavar="KEY=VALUE", help="Override a key: section.key=value (repeatable).")]
LiveOpt = Annotated[bool, typer.Option("--live", help="Live view redrawn in place: run, latest metrics, recent lines.")]
SilentOpt = Annotated[bool, typer.Option(
    "--silent", help="Progress bar only, on a terminal: no step lines, tables or report text (nothing in a pipe).")]
NoConsoleOpt = Annotated[bool, typer.Option(
    "--no-console-output", help="Nothing on the console (files are still written).")]


def console_mode(live: bool, silent: bool, no_console: bool) -> str:
    """The display mode the flags ask for: none > silent > live > progress."""
    if no_console:
        return "none"
    if silent:
        return "silent"
    return "live" if live else "progress"


_OS_HINTS = {
    errno.EACCES: "it is not writable (or readable) by you: fix its permissions, or use --out "
                  "to write somewhere else",
    errno.EPERM: "it is not writable by you: fix its permissions, or use --out to write "
                 "somewhere else",
    errno.EROFS: "the file system is read-only: use --out to write somewhere else",
    errno.ENOSPC: "the disk is full: free some space and run the command again",
    errno.ENOTDIR: "a file is in the way where a directory belongs: move it away",
    errno.EISDIR: "a directory is in the way where a file belongs: move it away",
    errno.EEXIST: "something is in the way: move it away",
    errno.ENAMETOOLONG: "a file name is too long: shorten the campaign name or condition labels",
}


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error: the path, what the OS said, what to do."""
    hint = _OS_HINTS.get(exc.errno or 0, "check the path")
    return f"{exc.filename}: {exc.strerror or exc}; {hint}"


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn RetrainError (and a file-system error on a named path) into `error: ...` on stderr
    and its exit code (2 unless the error says otherwise)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RetrainError as exc:
            _print_error(str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except OSError as exc:
            if exc.filename is None:
                raise  # not about a file the user can fix: a bug, keep the traceback
            _print_error(os_error_message(exc))
            raise typer.Exit(code=2) from None

    return wrapper


def _print_error(text: str) -> None:
    message = Text("error: ", style="bold red")
    message.append(text)  # plain text: messages hold [table] names, not markup
    err_console.print(message, highlight=False, soft_wrap=True)
