"""`retrain data …`: generate task datasets on disk.

`retrain data countdown` writes the countdown curriculum of the continual-learning experiments:
one directory per operator group with train and test splits that never share a problem. The files
load back with `data.task = "file"` and are graded by the countdown checker (docs/tasks.md,
"`retrain data countdown`").
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import console, handles_errors

data_app = typer.Typer(help="Generate task datasets (countdown curriculum).", no_args_is_help=True)

_CHUNK = 2000  # problems generated between progress-bar updates


class OpsChoice(StrEnum):
    plus = "plus"
    plus_minus = "plus_minus"
    plus_minus_mul = "plus_minus_mul"
    plus_minus_mul_div = "plus_minus_mul_div"
    all = "all"


class FormatChoice(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"


@data_app.command("countdown")
@handles_errors
def countdown(
    ops: Annotated[OpsChoice, typer.Option(help="Operator group, or 'all' for the four groups.")] = OpsChoice.plus_minus,
    train: Annotated[int, typer.Option(min=1, help="Training rows per group.")] = 100_000,
    test: Annotated[int, typer.Option(min=1, help="Test rows per group (disjoint from train).")] = 1000,
    out: Annotated[Path, typer.Option(help="Output directory; files go to <out>/<ops>/.")] = Path("data/continual"),
    fmt: Annotated[FormatChoice, typer.Option("--format", help="File format.")] = FormatChoice.parquet,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    numbers: Annotated[int, typer.Option(min=2, max=6, help="Numbers per problem.")] = 3,
    max_number: Annotated[int, typer.Option(min=2, help="Largest number drawn.")] = 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Write <out>/<ops>/train.<format> and test.<format> with prompt, answer, numbers, target, ops."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from retrain.config.schema import DataConfig
    from retrain.tasks.countdown import OPERATOR_GROUPS, CountdownTask
    from retrain.tasks.dataio import write_rows

    groups = list(OPERATOR_GROUPS) if ops is OpsChoice.all else [ops.value]
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        for group in groups:
            data = DataConfig(task="countdown", countdown_ops=group, countdown_numbers=numbers,
                              countdown_max_number=max_number, eval_size=test)
            task = CountdownTask(data, seed)
            bar = progress.add_task(group, total=train + test)
            test_rows = task.eval_problems(test)
            progress.advance(bar, len(test_rows))
            train_rows = []
            for start in range(0, train, _CHUNK):
                train_rows += task.train_problems(start, min(_CHUNK, train - start))
                progress.advance(bar, min(_CHUNK, train - start))
            for split, problems in (("train", train_rows), ("test", test_rows)):
                write_rows(out / group / f"{split}.{fmt.value}", {
                    "prompt": [p.prompt for p in problems],
                    "answer": [p.answer for p in problems],
                    "numbers": [list(p.meta["numbers"]) for p in problems],
                    "target": [p.meta["target"] for p in problems],
                    "ops": [group] * len(problems),
                }, fmt.value)
    if not quiet:
        for group in groups:
            console.print(f"wrote {out / group}/train.{fmt.value} ({train} rows), test.{fmt.value} ({test} rows)")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
