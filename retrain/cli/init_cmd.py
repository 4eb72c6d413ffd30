"""`retrain init campaign|plugin` (write a runnable starting point) and `retrain plugins` (what a
config can name here: built-in choices and plugin files in a directory).

Thin shells: the templates and their rendering are `retrain/scaffold.py`, the discovery of
plugin files (parsed, never imported) is `retrain.plugins.discover_plugins`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import console, handles_errors

init_app = typer.Typer(help="Write a runnable campaign, or a plugin with a run config that uses it.",
                       no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option("--dir", help="Directory to write into (created if missing; default: the current one).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")]


class Kind(StrEnum):
    reward = "reward"
    advantage = "advantage"
    transform = "transform"
    task = "task"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


@init_app.command("campaign")
@handles_errors
def init_campaign(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Campaign name; writes NAME.toml.")],
    directory: DirOpt = Path("."),
    force: ForceOpt = False,
) -> None:
    """Write NAME.toml: a small campaign (2 conditions x 2 seeds on the offline tiny model) with
    comments on what to change."""
    from retrain.scaffold import campaign_files, next_steps

    files = campaign_files(name)
    _write(directory, files, force=force)
    _print_next(directory, next_steps(list(files), campaign=True))


@init_app.command("plugin")
@handles_errors
def init_plugin(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Plugin name (a Python identifier); writes NAME.py and NAME.toml.")],
    kind: Annotated[Kind, typer.Option("--kind", help="What the plugin computes.", case_sensitive=False)],
    directory: DirOpt = Path("."),
    force: ForceOpt = False,
) -> None:
    """Write NAME.py (a documented reward, advantage, token-transform or task function) and
    NAME.toml (a run config that uses it as 'NAME.py:function'; run it from the directory the
    files are in)."""
    from retrain.scaffold import next_steps, plugin_files

    files = plugin_files(kind.value, name)
    _write(directory, files, force=force)
    _print_next(directory, next_steps(list(files), campaign=False))


def _write(directory: Path, files: dict[str, str], *, force: bool) -> None:
    from retrain.io import atomic_write_text
    from retrain.scaffold import ScaffoldError

    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"--dir {directory}: is a file; give a directory")
    existing = [name for name in files if (directory / name).exists()]
    if existing and not force:
        shown = ", ".join(str(directory / n) for n in existing)
        raise ScaffoldError(f"{shown} already exist{'s' if len(existing) == 1 else ''}; pick "
                            f"another NAME, or pass --force to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(directory / name, text)
        console.print(f"wrote {directory / name}", highlight=False, markup=False)


def _print_next(directory: Path, commands: list[str]) -> None:
    here = directory.resolve() == Path.cwd().resolve()
    steps = commands if here else [f"cd {directory}", *commands]
    console.print("next:" + ("" if here else " (plugin paths resolve from the directory you run in)"),
                  highlight=False, markup=False)
    for cmd in steps:
        console.print(f"  {cmd}", highlight=False, markup=False)


def hook_entries() -> list[dict[str, str]]:
    """The built-in hooks and hook groups (retrain/hooks/registry.py), as rows {kind, name, use, about}."""
    from retrain.hooks.registry import GROUPS, HOOKS

    rows = [{"kind": "hook", "name": n, "use": f'hooks.names = ["{n}"]',
             "about": str(getattr(cls, "description", ""))} for n, cls in HOOKS.items()]
    rows += [{"kind": "hook group", "name": g, "use": f'hooks.groups = ["{g}"]',
              "about": ", ".join(names)} for g, names in GROUPS.items()]
    return rows


def builtin_entries() -> list[dict[str, str]]:
    """Every built-in choice a config can name, as rows {kind, name, use, about}."""
    from retrain.algo.modes import ADVANTAGE_MODES, TRANSFORM_MODES
    from retrain.backend.registry import BACKENDS
    from retrain.config.schema import DataConfig
    from retrain.tasks.registry import TASKS

    rows = [{"kind": "task", "name": t, "use": f'data.task = "{t}"', "about": ""} for t in TASKS]
    matches = DataConfig.__dataclass_fields__["match"].metadata["choices"]
    rows += [{"kind": "reward", "name": "(the task's own)", "use": "",
              "about": f"file tasks match answers by data.match: {', '.join(matches)}"}]
    rows += [{"kind": "advantage", "name": m, "use": f'algorithm.advantage_mode = "{m}"',
              "about": ""} for m in ADVANTAGE_MODES]
    rows += [{"kind": "transform", "name": m, "use": f'algorithm.transform_mode = "{m}"',
              "about": ""} for m in TRANSFORM_MODES]
    rows += [{"kind": "backend", "name": b, "use": f'backend.name = "{b}"', "about": ""}
             for b in BACKENDS]
    return rows + hook_entries()


def register(app: typer.Typer) -> None:
    app.add_typer(init_app, name="init")

    @app.command("plugins")
    @handles_errors
    def plugins(
        directory: DirOpt = Path("."),
        fmt: Annotated[ListFormat, typer.Option("--format", "-f", help="Output format.")] = ListFormat.table,
    ) -> None:
        """What a config can name: built-in tasks, advantage and transform modes, backends and
        hooks, and the plugin files in --dir (*.py that declare RETRAIN_PLUGIN_KIND, as `retrain
        init plugin` writes them; read, never imported), each with the config line that uses it."""
        from retrain.analysis.formats import print_result, rich_table
        from retrain.errors import DataError
        from retrain.plugins import discover_plugins

        if not directory.is_dir():
            raise DataError(f"--dir {directory}: no such directory")
        found, notes = discover_plugins(directory)
        files = [{"kind": p.kind, "name": p.reference, "use": p.config_line, "about": p.doc}
                 for p in found]
        if fmt is ListFormat.json:
            typer.echo(json.dumps({"builtin": builtin_entries(), "files": files, "problems": notes},
                                  indent=2))
            return
        builtin = builtin_entries()
        print_result(console, rich_table(["kind", "name", "config", "about"],
                                         [[r["kind"], r["name"], r["use"], r["about"]] for r in builtin],
                                         title="built in"))
        where = os.path.relpath(directory) if directory.resolve() != Path.cwd().resolve() else "."
        if files:
            print_result(console, rich_table(["kind", "file:function", "config"],
                                             [[f["kind"], f["name"], f["use"]] for f in files],
                                             title=f"plugin files in {where}"))
        else:
            console.print(f"no plugin files in {where} (files that set RETRAIN_PLUGIN_KIND; "
                          f"write one with `retrain init plugin NAME --kind KIND`)",
                          highlight=False, markup=False)
        for note in notes:
            console.print(f"skipped {note}", highlight=False, markup=False)
