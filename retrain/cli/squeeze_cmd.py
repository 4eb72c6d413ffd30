"""`retrain squeeze PATH`: LoRA rank analysis, compression, and the rank trajectory of a run.

Thin shell over `retrain.squeeze`: parse, call the library, print. The library (numpy, and
torch only when compressing or reading .bin / bf16 files) is imported inside the command body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import console, handles_errors


def _parse_ranks(text: str | None) -> list[int] | None:
    from retrain.squeeze import SqueezeError

    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise SqueezeError(f"--ranks: expected comma-separated integers like 1,2,4,8, got {text!r}") from None


@handles_errors
def squeeze(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA adapter directory, or a run directory (its adapter/).")],
    min_variance: Annotated[float, typer.Option("--min-variance", help="Recommend the smallest rank whose mean retained variance reaches this.")] = 0.95,
    min_layer: Annotated[float | None, typer.Option("--min-layer", help="Also require the worst layer to retain at least this.")] = None,
    ranks: Annotated[str | None, typer.Option("--ranks", help="Ranks to evaluate, e.g. 1,2,4,8 (default: powers of two up to the source rank, plus it).")] = None,
    compress_to: Annotated[int | None, typer.Option("--compress-to", help="Write a compressed adapter at this rank to --out (-1 = the recommended rank).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory of the compressed adapter.")] = None,
    over_time: Annotated[bool, typer.Option("--over-time", help="PATH is a run dir: analyse every checkpoint and the final adapter.")] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where squeeze.json / .png go (default: the analysed directory).")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no JSON / PNG files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON instead of the table.")] = False,
) -> None:
    """Find the smallest LoRA rank that keeps what an adapter learned (LoRA-Squeeze)."""
    from retrain.squeeze import (
        SqueezeError,
        analyze_adapter,
        analyze_over_time,
        compress_adapter,
        render_over_time_table,
        render_table,
        write_over_time_report,
        write_report,
    )
    from retrain.squeeze.adapter import resolve_adapter_dir

    rank_list = _parse_ranks(ranks)
    if compress_to is not None and out is None:
        raise SqueezeError("--compress-to needs --out DIR for the compressed adapter")
    if out is not None and compress_to is None:
        raise SqueezeError("--out is only used with --compress-to K")
    if over_time:
        if compress_to is not None:
            raise SqueezeError("--over-time and --compress-to cannot be combined")
        trajectory = analyze_over_time(path, ranks=rank_list, min_variance=min_variance, min_layer=min_layer)
        if not no_report:
            write_over_time_report(trajectory, report_dir or path)
        if as_json:
            typer.echo(json.dumps(trajectory.to_dict(), indent=2))
        else:
            console.print(render_over_time_table(trajectory))
        return

    adapter_dir = resolve_adapter_dir(path)
    result = analyze_adapter(adapter_dir, ranks=rank_list, min_variance=min_variance, min_layer=min_layer)
    if compress_to is not None and compress_to != -1 and not 1 <= compress_to <= result.source_rank:
        raise SqueezeError(
            f"--compress-to {compress_to}: must be between 1 and the adapter's source rank "
            f"{result.source_rank} (or -1 for the recommended rank)"
        )
    if not no_report:
        write_report(result, report_dir or adapter_dir)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(render_table(result))
    if compress_to is not None and out is not None:
        target = result.recommended_rank if compress_to == -1 else compress_to
        written = compress_adapter(adapter_dir, target, out)
        if not as_json:
            console.print(f"compressed adapter (rank {result.source_rank} -> {target}) written to {written}")


def register(app: typer.Typer) -> None:
    app.command("squeeze")(squeeze)
