"""The user docs stay in step with the code: the configuration reference is generated from the
schema, and docs/cli.md names every command and option of the `retrain` CLI."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from retrain.cli.app import app
from retrain.config.docs import render_configuration_md
from retrain.config.schema import SECTIONS

REPO = Path(__file__).resolve().parents[2]
CONFIG_MD = REPO / "docs" / "configuration.md"
CLI_MD = REPO / "docs" / "cli.md"
REGENERATE = "python -m retrain.config.docs > docs/configuration.md"


def test_configuration_md_is_current() -> None:
    assert CONFIG_MD.read_text(encoding="utf-8") == render_configuration_md(), (
        f"docs/configuration.md is out of date with retrain/config/schema.py; regenerate it with "
        f"`{REGENERATE}` and commit the result"
    )


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_key_is_documented(section: str) -> None:
    text = render_configuration_md()
    assert f"## `[{section}]`" in text
    body = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
    for f in dataclasses.fields(SECTIONS[section]):
        assert f"| `{f.name}` |" in body, f"[{section}] {f.name} is missing from its table"
        assert f.metadata.get("help"), f"[{section}] {f.name} has no help text in schema.py"


def test_docs_module_does_not_import_torch() -> None:
    code = "import sys, retrain.config.docs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Typer may vendor its own click, so the tree is walked by duck typing, not click's classes.
def _walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app), ("retrain",)))


def test_command_tree_is_complete() -> None:
    # Guards the walk itself: a Typer upgrade that hides sub-commands must not make the test vacuous.
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"retrain campaign plan", "retrain analyze diff", "retrain model info", "retrain status"} <= names


def _section(text: str, name: str) -> str:
    """The part of cli.md under the heading that names `name` (up to the next heading)."""
    match = re.search(rf"^#+ `{re.escape(name)}`$", text, flags=re.MULTILINE)
    assert match, f"docs/cli.md has no heading for `{name}`"
    rest = text[match.end():]
    nxt = re.search(r"^#+ ", rest, flags=re.MULTILINE)
    return rest[: nxt.start()] if nxt else rest


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_cli_md_documents_every_command_and_option(path: tuple[str, ...], cmd: Any) -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    name = " ".join(path)
    assert f"`{name}" in text, f"docs/cli.md does not mention `{name}`"
    # A leaf command has its own heading, and its options are named under it.
    where = text if len(path) == 1 or hasattr(cmd, "commands") else _section(text, name)
    for param in cmd.params:
        if param.param_type_name == "option":
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in where, f"docs/cli.md does not document {opt} of `{name}`"


def test_logging_md_fields_table_is_current() -> None:
    from retrain.sinks.contract import with_fields_md

    text = (REPO / "docs" / "logging.md").read_text(encoding="utf-8")
    assert text == with_fields_md(text), (
        "docs/logging.md's metrics table differs from FIELDS in retrain/sinks/contract.py; "
        "regenerate it (the command is under the table)")
