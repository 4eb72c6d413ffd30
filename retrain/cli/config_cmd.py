"""`retrain config show|validate`: inspect a config file as retrain resolves it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import SetOpt, console, handles_errors

config_app = typer.Typer(help="Show or validate a config file.", no_args_is_help=True)



def _is_campaign(path: Path) -> bool:
    from retrain.config.load import read_toml

    return isinstance(read_toml(path).get("campaign"), dict)


@config_app.command("show")
@handles_errors
def show(
    file: Annotated[Path, typer.Argument(help="A run or campaign TOML file.")],
    set_: SetOpt = None,
) -> None:
    """Print the fully resolved config as TOML (defaults < file < --set).

    For a campaign file this is the base config every condition starts from; `campaign plan
    --json` shows each run's resolved config. Plugins are checked without running their code."""
    from retrain.config import render_toml

    if _is_campaign(file):
        from retrain.campaign.grid import load_campaign

        spec = load_campaign(file, set_ or [], plugins="locate")
        header = (f"# base config of campaign '{spec.name}' ({file}); per-run configs: "
                  f"retrain campaign plan {file} --json")
        typer.echo(render_toml(spec.base, header=header), nl=False)
        return
    from retrain.config import load_config

    cfg = load_config(file, set_ or [], plugins="locate")
    typer.echo(render_toml(cfg, header=f"# resolved from {file}"), nl=False)


@config_app.command("validate")
@handles_errors
def validate(
    file: Annotated[Path, typer.Argument(help="A run or campaign TOML file.")],
    set_: SetOpt = None,
) -> None:
    """Check a file: every problem is reported with its dotted path; exit 2 when invalid.

    Plugins the file names (data.task, data.reward, a custom advantage_mode) are imported to
    check them, so their module-level code runs; the output lists them."""
    from retrain.plugins import plugin_references

    if _is_campaign(file):
        from retrain.campaign.grid import load_campaign

        spec = load_campaign(file, set_ or [])
        configs = [spec.base, *(r.config for r in spec.runs)]
        console.print(f"[green]ok[/]: campaign '{spec.name}', {len(spec.conditions)} conditions, "
                      f"{len(spec.runs)} runs")
    else:
        from retrain.config import load_config

        cfg = load_config(file, set_ or [])
        configs = [cfg]
        console.print(f"[green]ok[/]: run config, condition {cfg.condition}, {cfg.training.max_steps} steps")
    refs = dict.fromkeys(ref for c in configs for ref in plugin_references(c))
    for key, ref in refs:
        console.print(f"imported {key} plugin {ref!r} to check it (its module-level code ran)",
                      highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
