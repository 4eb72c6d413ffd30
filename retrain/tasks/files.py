"""The `file` task: prompts and answers from a .jsonl or .parquet dataset.

`data.path` is either one file — the eval split is a seeded random slice of `data.eval_size`
rows, the rest is training — or a directory with `train.*` and `test.*` (the eval split is the
first `data.eval_size` test rows). Training rows whose prompt also occurs in the eval split are
dropped, so the two never share a prompt. The training stream visits every row once per epoch in
a seeded order that changes each epoch; row i of the stream depends only on (seed, i).

Reward (`data.match`): exact | numeric | boxed (see matching.py), or countdown — rows with
`numbers` and `target` columns (as `retrain data countdown` writes) graded by the countdown
checker with the row's `ops` group (else data.countdown_ops). With the default match "exact",
such rows are graded as countdown automatically: one string-exact solution is never the intent.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks.base import Problem, check_range, stream_rng
from retrain.tasks.countdown import OPERATOR_GROUPS
from retrain.tasks.countdown_expr import countdown_reward
from retrain.tasks.dataio import file_format, read_columns, read_rows, split_file
from retrain.tasks.matching import MATCHERS

MATCH_MODES = (*MATCHERS, "countdown")
COUNTDOWN_FIELDS = ("numbers", "target")


def _sources(data: DataConfig) -> tuple[Path, Path | None]:
    """(train-or-single file, test file or None); DataError when the layout is wrong."""
    if not data.path:
        raise DataError("data.path: required when data.task = 'file'")
    path = Path(data.path).expanduser()
    if path.is_dir():
        train, test = split_file(path, "train"), split_file(path, "test")
        missing = [n for n, f in (("train", train), ("test", test)) if f is None]
        if train is None or test is None:
            raise DataError(
                f"data.path: directory {data.path!r} needs {' and '.join(missing)}.parquet or .jsonl"
            )
        return train, test
    if not path.exists():
        raise DataError(f"data.path: no such file {data.path!r}")
    if file_format(path) is None:
        raise DataError(f"data.path: {data.path!r} is neither .jsonl nor .parquet")
    return path, None


def _uses_countdown(data: DataConfig, columns: list[str]) -> bool:
    has_fields = all(f in columns for f in COUNTDOWN_FIELDS)
    return data.match == "countdown" or (data.match == "exact" and has_fields)


def check_file(data: DataConfig) -> list[str]:
    """Config problems of the file task (path, layout, fields, match, and every row: a missing
    or null prompt/answer, too few rows for the eval split), each with its dotted key."""
    problems: list[str] = []
    if data.match not in MATCH_MODES:
        problems.append(f"data.match: {data.match!r} is not one of {list(MATCH_MODES)}")
    try:
        files = [f for f in _sources(data) if f is not None]
        for f in files:
            columns = read_columns(f)
            for key, name in (("data.prompt_field", data.prompt_field),
                              ("data.answer_field", data.answer_field)):
                if name not in columns:
                    problems.append(f"{key}: {name!r} not in {str(f)!r} (fields: {columns})")
            if data.match == "countdown" and not all(c in columns for c in COUNTDOWN_FIELDS):
                problems.append(f"data.match: 'countdown' needs columns numbers and target in {str(f)!r}")
    except (DataError, OSError, UnicodeDecodeError) as exc:
        problems.append(str(exc) if isinstance(exc, DataError) else f"data.path: {exc}")
    if not problems:
        problems += _rows_problems(data)
    return problems


def _rows_problems(data: DataConfig) -> list[str]:
    """What building the task would refuse (it reads every row), cached per file version: a
    campaign checks the same file once per condition."""
    stamps = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                   for f in _sources(data) if f is not None)
    return list(_rows_problems_cached(data, stamps))


@functools.lru_cache(maxsize=16)
def _rows_problems_cached(data: DataConfig, stamps: tuple[tuple[str, int, int], ...]) -> tuple[str, ...]:
    try:
        FileTask(data, seed=0)
    except (DataError, OSError, UnicodeDecodeError) as exc:
        return (str(exc) if isinstance(exc, DataError) else f"data.path: {exc}",)
    return ()


def _to_problem(row: dict[str, Any], data: DataConfig, where: str) -> Problem:
    for name in (data.prompt_field, data.answer_field):
        if name not in row or row[name] is None:
            raise DataError(f"data.path: {where} has no {name!r} value (missing or null); "
                            "fix or drop that row")
    meta = dict(row)
    if "numbers" in meta and meta["numbers"] is not None:
        meta["numbers"] = tuple(meta["numbers"])
    return Problem(str(row[data.prompt_field]), str(row[data.answer_field]), meta)


class FileTask:
    """Problems from a dataset file with a prompt-disjoint held-out split."""

    name = "file"

    def __init__(self, data: DataConfig, seed: int) -> None:
        if data.match not in MATCH_MODES:
            raise DataError(f"data.match: {data.match!r} is not one of {list(MATCH_MODES)}")
        train_path, test_path = _sources(data)
        rows = read_rows(train_path)
        problems = [_to_problem(r, data, f"{train_path.name} row {i}") for i, r in enumerate(rows)]
        if test_path is None:
            if len(problems) <= data.eval_size:
                raise DataError(
                    f"data.eval_size: {data.eval_size} leaves no training rows in "
                    f"{str(train_path)!r} ({len(problems)} rows)"
                )
            order = list(range(len(problems)))
            random.Random(seed).shuffle(order)
            held = set(order[: data.eval_size])
            eval_set = [problems[i] for i in sorted(held)]
            train = [p for i, p in enumerate(problems) if i not in held]
        else:
            test_rows = read_rows(test_path)[: data.eval_size]
            eval_set = [_to_problem(r, data, f"{test_path.name} row {i}") for i, r in enumerate(test_rows)]
            train = problems
        eval_prompts = {p.prompt for p in eval_set}
        self._train = [p for p in train if p.prompt not in eval_prompts]
        if not self._train:
            raise DataError(f"data.path: no training rows left in {data.path!r} after holding out eval")
        self._eval = eval_set
        self._seed = seed
        self._epoch_order: tuple[int, list[int]] = (-1, [])
        columns = list(rows[0]) if rows else []
        self._countdown = _uses_countdown(data, columns)
        self._matcher = MATCHERS.get(data.match, MATCHERS["exact"])
        self._default_ops = OPERATOR_GROUPS[data.countdown_ops]
        self._use_all = data.countdown_use_all

    def _order(self, epoch: int) -> list[int]:
        if self._epoch_order[0] != epoch:
            order = list(range(len(self._train)))
            stream_rng(self._seed, "file-epoch", epoch).shuffle(order)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        check_range(cursor, n)
        size = len(self._train)
        return [self._train[self._order(i // size)[i % size]] for i in range(cursor, cursor + n)]

    def eval_problems(self, n: int) -> list[Problem]:
        check_range(0, n)
        return self._eval[:n]

    def reward(self, problem: Problem, completion: str) -> float:
        return 1.0 if self.is_correct(problem, completion) else 0.0

    def is_correct(self, problem: Problem, completion: str) -> bool:
        if not isinstance(completion, str):
            return False
        if self._countdown:
            return self._countdown_correct(problem, completion)
        return self._matcher(completion, problem.answer)

    def _countdown_correct(self, problem: Problem, completion: str) -> bool:
        numbers, target = problem.meta.get("numbers"), problem.meta.get("target")
        if numbers is None or target is None:
            return False
        ops = OPERATOR_GROUPS.get(str(problem.meta.get("ops")), self._default_ops)
        try:
            return countdown_reward(completion, [int(x) for x in numbers], int(target), ops, self._use_all) == 1.0
        except (TypeError, ValueError):  # malformed numbers/target in the dataset row
            return False
