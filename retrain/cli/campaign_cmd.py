"""`retrain campaign plan|run|resume|status`: the main job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrain.cli._common import console, handles_errors

campaign_app = typer.Typer(help="Plan, run, resume and watch campaigns.", no_args_is_help=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a base key: section.key=value (repeatable).")]


@campaign_app.command("plan")
@handles_errors
def plan(
    file: Annotated[Path, typer.Argument(help="Campaign TOML file.")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Expand the grid and print every run (nothing is trained or written)."""
    from retrain.campaign.grid import load_campaign
    from retrain.campaign.plan import plan_dict

    spec = load_campaign(file, set_ or [])
    data = plan_dict(spec)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"campaign '{spec.name}' — spec {data['spec_hash']}", show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("run")
    table.add_column("condition", style="cyan")
    table.add_column("seed", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("overrides", style="dim")
    for i, run in enumerate(spec.runs, 1):
        ov = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "—"
        table.add_row(str(i), run.name, run.condition, str(run.seed), str(run.max_steps), ov)
    console.print(table)
    console.print(f"{len(spec.conditions)} conditions × {len(spec.base.campaign.seeds)} seeds = "
                  f"[bold]{len(spec.runs)} runs[/], {data['total_steps']} steps in total")


def register(app: typer.Typer) -> None:
    app.add_typer(campaign_app, name="campaign")
