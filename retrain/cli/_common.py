"""Shared CLI plumbing: error handling and consoles.

Every command is wrapped by `handles_errors`, so a RetrainError becomes one line on stderr and
exit code 2 (also under Typer's CliRunner), never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.text import Text

from retrain.errors import RetrainError
from retrain.ui import console, err_console

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["console", "err_console", "handles_errors"]


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
