"""File task: jsonl and parquet, single file and train/test directory, every match mode."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks import build_task, check_data_config
from retrain.tasks.base import Problem


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


ROWS = [{"question": f"q{i}", "solution": str(i * 1000)} for i in range(50)]


def file_config(path: Path, **kw: object) -> DataConfig:
    return DataConfig(task="file", path=str(path), prompt_field="question", answer_field="solution", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet])
def test_single_file_split_is_disjoint_deterministic_and_resumable(tmp_path: Path, writer: object) -> None:
    suffix = ".jsonl" if writer is write_jsonl else ".parquet"
    path = writer(tmp_path / f"d{suffix}", ROWS)  # type: ignore[operator]
    data = file_config(path, eval_size=10)
    assert check_data_config(data) == []
    task = build_task(data, seed=1)
    held = {p.prompt for p in task.eval_problems(100)}
    assert len(held) == 10
    stream = task.train_problems(0, 200)  # five epochs of the 40 training rows
    assert not held & {p.prompt for p in stream}
    assert {p.prompt for p in stream[:40]} == {r["question"] for r in ROWS} - held  # each row once per epoch
    assert stream == task.train_problems(0, 73) + task.train_problems(73, 127)
    assert stream == build_task(data, seed=1).train_problems(0, 200)
    assert stream[:40] != stream[40:80]  # reshuffled each epoch


def test_directory_layout_drops_train_rows_sharing_a_test_prompt(tmp_path: Path) -> None:
    write_parquet(tmp_path / "train.parquet", ROWS)
    write_jsonl(tmp_path / "test.jsonl", [{"question": "q3", "solution": "3000"}, {"question": "new", "solution": "1"}])
    task = build_task(file_config(tmp_path), seed=0)
    assert [p.prompt for p in task.eval_problems(5)] == ["q3", "new"]
    assert "q3" not in {p.prompt for p in task.train_problems(0, 100)}


@pytest.mark.parametrize(
    ("match", "answer", "completion", "expected"),
    [
        ("exact", "2000", " 2000 ", 1.0),
        ("exact", "2000", "2,000", 0.0),
        ("numeric", "2000", "2,000", 1.0),
        ("numeric", "2000", "2000.0", 1.0),
        ("numeric", "2000", "2001", 0.0),
        ("boxed", "2000", r"thus \boxed{2,000}", 1.0),
        ("boxed", "2000", r"\boxed{{2000}", 0.0),
    ],
)
def test_match_modes(tmp_path: Path, match: str, answer: str, completion: str, expected: float) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    task = build_task(file_config(path, match=match, eval_size=5), seed=0)
    assert task.reward(Problem("q", answer), completion) == expected
    assert task.is_correct(Problem("q", answer), completion) == (expected == 1.0)


def test_countdown_rows_use_countdown_reward(tmp_path: Path) -> None:
    rows = [{"prompt": f"{i} 1 -> {i + 1}:", "answer": f"{i}+1", "numbers": [i, 1], "target": i + 1,
             "ops": "plus"} for i in range(1, 20)]
    path = write_parquet(tmp_path / "c.parquet", rows)
    for match in ("exact", "countdown"):  # exact on countdown rows means countdown grading
        task = build_task(DataConfig(task="file", path=str(path), match=match, eval_size=3), seed=0)
        p = task.train_problems(0, 1)[0]
        n = p.meta["numbers"][0]
        assert task.reward(p, f"1+{n}") == 1.0  # a different valid expression
        assert task.reward(p, f"{n}-1") == 0.0  # '-' is outside the row's 'plus' group
        assert task.reward(p, "junk") == 0.0


def test_check_reports_problems_with_dotted_keys(tmp_path: Path) -> None:
    assert check_data_config(DataConfig(task="file")) == ["data.path: required when data.task = 'file'"]
    assert check_data_config(DataConfig(task="file", path="x.jsonl")) == ["data.path: no such file 'x.jsonl'"]
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    problems = check_data_config(DataConfig(task="file", path=str(path)))
    assert [p.split(":")[0] for p in problems] == ["data.prompt_field", "data.answer_field"]
    (tmp_path / "dir").mkdir()
    assert check_data_config(DataConfig(task="file", path=str(tmp_path / "dir")))[0].startswith("data.path:")
    assert check_data_config(file_config(path, match="countdown"))[0].startswith("data.match:")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a"}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        build_task(file_config(bad, eval_size=1), seed=0)


def test_too_large_eval_size(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match="data.eval_size"):
        build_task(file_config(path, eval_size=50), seed=0)
