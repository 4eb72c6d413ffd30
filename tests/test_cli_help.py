"""What `--help` shows: -h works, shell completion is offered, flags show no value type, and
docstring paragraphs reflow instead of breaking where the source wrapped them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from retrain.cli.app import app

runner = CliRunner()


def _leaves(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(cmd, "commands", {})
    out = [path]
    for name, sub in sorted(subs.items()):
        out += _leaves(sub, (*path, name))
    return out


COMMANDS = _leaves(typer.main.get_command(app))


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "120"}, terminal_width=120)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "retrain")
def test_help_of_every_command_shows_no_bool_type_and_accepts_h(path: tuple[str, ...]) -> None:
    text = _help(*path)
    assert "<bool>" not in text, text
    short = runner.invoke(app, [*path, "-h"], env={"COLUMNS": "120"}, terminal_width=120)
    assert short.exit_code == 0 and short.output == text


def test_docstring_paragraph_reflows() -> None:
    # The source wraps this docstring between "`campaign plan" and "--json`".
    text = _help("config", "show")
    line = next(ln for ln in text.splitlines() if "`campaign plan" in ln)
    assert "`campaign plan --json` shows" in line, text


def test_shell_completion_is_offered_and_completes() -> None:
    assert "--install-completion" in _help()
    env = {**os.environ, "_RETRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "retrain campaign st",
           "COMP_CWORD": "2"}
    script = Path(sys.executable).parent / "retrain"  # the completion variable is named after it
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["status"], out
