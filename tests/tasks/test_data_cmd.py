"""`retrain data countdown` through Typer's CliRunner: files, row counts, disjoint splits, loadable."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from retrain.cli.app import app
from retrain.config.schema import DataConfig
from retrain.tasks import build_task
from retrain.tasks.countdown import OPERATOR_GROUPS
from retrain.tasks.countdown_expr import countdown_reward


def key(row: dict[str, object]) -> tuple[tuple[int, ...], object]:
    return tuple(sorted(row["numbers"])), row["target"]  # type: ignore[call-overload]


def test_all_groups_parquet(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "countdown", "--ops", "all", "--train", "400",
                                      "--test", "50", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    for group, ops in OPERATOR_GROUPS.items():
        train = pq.read_table(tmp_path / group / "train.parquet").to_pylist()
        test = pq.read_table(tmp_path / group / "test.parquet").to_pylist()
        assert (len(train), len(test)) == (400, 50)
        assert set(train[0]) == {"prompt", "answer", "numbers", "target", "ops"}
        assert not {key(r) for r in train} & {key(r) for r in test}
        for row in train[:50] + test:
            assert countdown_reward(row["answer"], row["numbers"], row["target"], ops, True) == 1.0
        # the written files load back as a file task graded by countdown
        task = build_task(DataConfig(task="file", path=str(tmp_path / group), eval_size=50), seed=0)
        assert len(task.eval_problems(50)) == 50
        p = task.train_problems(0, 1)[0]
        assert task.reward(p, p.answer) == 1.0 and task.reward(p, "0") == 0.0


def test_jsonl_single_group_with_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "countdown", "--ops", "plus_minus_mul", "--train", "30",
                                      "--test", "10", "--out", str(tmp_path), "--format", "jsonl",
                                      "--seed", "3", "--numbers", "4", "--max-number", "9"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["plus_minus_mul"]
    lines = (tmp_path / "plus_minus_mul" / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 30
    assert all(len(r["numbers"]) == 4 and max(r["numbers"]) <= 9 for r in rows)
    assert len((tmp_path / "plus_minus_mul" / "test.jsonl").read_text().splitlines()) == 10


def test_impossible_request_is_one_line_exit_2(tmp_path: Path) -> None:
    # 2 numbers from 1..2 with '+': only 3 problems exist, 100 cannot be held out
    result = CliRunner().invoke(app, ["data", "countdown", "--ops", "plus", "--numbers", "2",
                                      "--max-number", "2", "--test", "100", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "data.eval_size" in result.output and "Traceback" not in result.output
