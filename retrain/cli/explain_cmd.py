"""`retrain explain RUN_DIR`: one recorded step of a run, token by token (retrain.analysis.explain).

Thin shell: pick the step and completions, recompute and check the advantages, print a table (or
JSON / CSV), optionally write the HTML view. Reads the run dir only; never imports torch.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import console, err_console, handles_errors


class ExplainFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@handles_errors
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (it has explain/step_NNNNNN.npz files).")],
    step: Annotated[int | None, typer.Option("--step", help="Recorded step to show (default: the latest recorded one).")] = None,
    sample: Annotated[list[int] | None, typer.Option("--sample", help="Completion index in the step's batch (repeatable).")] = None,
    group: Annotated[int | None, typer.Option("--group", help="Show every completion of this group (prompt) index.")] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML page, tokens coloured by advantage.")] = None,
    fmt: Annotated[ExplainFormat, typer.Option("--format", help="table (terminal), json or csv (one line per token).")] = ExplainFormat.table,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Show at most this many tokens of each completion.")] = None,
) -> None:
    """Show which tokens of a step got which advantage, and why.

    Default: the first completion of the first group whose rewards differ. The advantages are
    recomputed from the recorded inputs and must equal what the trainer used; a difference is
    reported and exits 1. Steps are recorded every logging.explain_every steps and at the last.
    """
    from retrain.analysis.explain import explain_step
    from retrain.analysis.explain_render import check_line, render_console, to_csv, to_html, to_json
    from retrain.io import atomic_write_text

    ex = explain_step(run_dir, step=step, samples=sample or [], group=group, max_tokens=max_tokens)
    if fmt is ExplainFormat.json:
        typer.echo(to_json(ex))
    elif fmt is ExplainFormat.csv:
        typer.echo(to_csv(ex), nl=False)
    else:
        console.print(render_console(ex))
    if html_path is not None:
        atomic_write_text(html_path, to_html(ex, title=f"{run_dir.name}, step {ex.record.step}"))
        err_console.print(f"wrote {html_path}", highlight=False)
    text, ok = check_line(ex)
    if not ok:
        err_console.print(f"[bold red]{text}[/]", highlight=False)
        raise typer.Exit(code=1)
    if fmt is ExplainFormat.table:
        console.print(f"[green]✓[/] {text}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
