"""metrics.jsonl / emergence files: contract fields, exactly-once on resume, torn lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.io import read_jsonl
from retrain.sinks.contract import (
    EMERGENCE_STEP_FIELDS,
    GENERATION_FIELDS,
    METRICS_FIELDS,
    validate_row,
)
from retrain.sinks.metrics import JsonlSink

from .fakes import fake_metrics, generations, make_info


def _run(run_dir: Path, steps: range, *, start_step: int = 0, eval_every: int = 0,
         initial_eval: bool = True) -> JsonlSink:
    sink = JsonlSink(generations_every=1, generations_per_prompt=2)
    sink.start(make_info(run_dir, start_step=start_step))
    if initial_eval and start_step == 0:
        sink.log_eval(0, {"eval_accuracy": 0.1, "eval_mean_length": 6.0})
    for step in steps:
        sink.log_generations(step, generations(step))
        if eval_every and step % eval_every == 0:
            sink.log_eval(step, {"accuracy": 0.1 + step / 100, "mean_length": 5.0})
        sink.log_step(fake_metrics(step))
    return sink


def test_every_contract_field_with_its_type(run_dir: Path) -> None:
    _run(run_dir, range(1, 5), eval_every=2)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0] == {"step": 0, "condition": "maxrl+gtpo_sepa", "eval_accuracy": 0.1,
                       "eval_mean_length": 6.0}
    for row in rows:
        assert validate_row(row) == [], row["step"]
    for row in rows[1:]:
        assert list(row)[: len(METRICS_FIELDS)] == list(METRICS_FIELDS)  # contract order first
    # eval merged into the row of the step that evaluated, and only there
    assert rows[2]["eval_accuracy"] == pytest.approx(0.12) and rows[4]["eval_mean_length"] == 5.0
    assert "eval_accuracy" not in rows[1] and "eval_accuracy" not in rows[3]


def test_validate_row_reports_missing_and_wrong_types() -> None:
    row = fake_metrics(3)
    del row["kl"]
    row["loss_is_placeholder"] = 0  # bool expected
    row["batch_size"] = 4.0  # int expected
    row["eval_accuracy"] = "high"
    problems = validate_row(row)
    assert "kl: missing" in problems
    assert any(p.startswith("loss_is_placeholder: expected bool") for p in problems)
    assert any(p.startswith("batch_size: expected int") for p in problems)
    assert any(p.startswith("eval_accuracy: expected float") for p in problems)
    assert validate_row({"step": 0, "condition": "c"}) == [
        "eval_accuracy: missing", "eval_mean_length: missing"]


def test_validate_row_accepts_new_eval_and_planning_fields() -> None:
    evals = {"eval_accuracy": 0.5, "eval_accuracy_se": 0.02, "eval_size": 500,
             "eval_mean_length": 5.0, "eval_sampled_accuracy": 0.4,
             "eval_sampled_accuracy_se": 0.015, "eval_samples": 4, "eval_time_s": 3.2}
    row = {**fake_metrics(3), **evals, "planning_token_frac": 0.07, "num_planning_tokens": 12,
           "hicra_changed_frac": 0.03}
    assert validate_row(row) == []
    assert validate_row({"step": 0, "condition": "c", **evals}) == []
    # optional fields are type-checked when present
    bad = {**row, "num_planning_tokens": 1.5, "eval_size": "500", "planning_token_frac": None}
    problems = validate_row(bad)
    assert any(p.startswith("num_planning_tokens: expected int") for p in problems)
    assert any(p.startswith("eval_size: expected int") for p in problems)
    assert any(p.startswith("planning_token_frac: expected float") for p in problems)
    assert len(problems) == 3


def test_eval_after_its_step_rewrites_the_last_row(run_dir: Path) -> None:
    sink = _run(run_dir, range(1, 4))
    sink.log_eval(3, {"eval_accuracy": 0.5, "eval_mean_length": 4.0})
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["eval_accuracy"] == 0.5 and rows[-1]["loss"] == 1 / 3


def test_emergence_files(run_dir: Path) -> None:
    _run(run_dir, range(1, 3))
    steps = read_jsonl(run_dir / "emergence" / "steps.jsonl")
    assert steps == [{"step": s, "mean_reward": 0.1 * s, "correct_count": s, "total_count": 16,
                      "condition": "maxrl+gtpo_sepa"} for s in (1, 2)]
    assert all(tuple(r) == EMERGENCE_STEP_FIELDS for r in steps)
    gens = read_jsonl(run_dir / "emergence" / "generations.jsonl")
    # 2 prompts x 3 completions, at most 2 per prompt kept, for 2 steps
    assert len(gens) == 2 * 2 * 2
    assert all(tuple(r) == GENERATION_FIELDS for r in gens)
    assert all(len(r["prompt"]) == 200 and len(r["completion"]) == 500 for r in gens)


def test_generations_every(run_dir: Path) -> None:
    sink = JsonlSink(generations_every=2, generations_per_prompt=1)
    sink.start(make_info(run_dir))
    for step in range(1, 5):
        sink.log_generations(step, generations(step))
    assert [r["step"] for r in read_jsonl(run_dir / "emergence/generations.jsonl")] == [2, 2, 4, 4]
    never = JsonlSink(generations_every=0)
    never.start(make_info(run_dir / "x"))
    never.log_generations(1, generations(1))
    assert not (run_dir / "x/emergence/generations.jsonl").exists()


def test_exactly_once_after_resume(run_dir: Path) -> None:
    # first invocation: steps 1..7, then killed; the last checkpoint was step 5
    _run(run_dir, range(1, 8), eval_every=5)
    # second invocation resumes after step 5, evaluates again at start (ignored), runs 6..8
    sink = _run(run_dir, range(6, 9), start_step=5)
    sink.log_eval(0, {"eval_accuracy": 0.9, "eval_mean_length": 1.0})
    for name in ("metrics.jsonl", "emergence/steps.jsonl"):
        steps = [r["step"] for r in read_jsonl(run_dir / name)]
        expected = list(range(1, 9))
        assert steps == ([0] + expected if name == "metrics.jsonl" else expected), name
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[0]["eval_accuracy"] == 0.1  # the first initial eval is kept
    assert rows[5]["eval_accuracy"] == pytest.approx(0.15)  # step 5's eval survives the resume
    gen_steps = [r["step"] for r in read_jsonl(run_dir / "emergence/generations.jsonl")]
    assert gen_steps == sorted(gen_steps) and set(gen_steps) == set(range(1, 9))
    assert all(gen_steps.count(s) == 4 for s in range(1, 9))


def test_torn_last_line_is_skipped_and_dropped_on_resume(run_dir: Path) -> None:
    _run(run_dir, range(1, 4))
    path = run_dir / "metrics.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fake_metrics(4))[:57])  # killed mid-write
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 3]
    _run(run_dir, range(4, 6), start_step=3)
    text = path.read_text(encoding="utf-8")
    assert all(json.loads(line) for line in text.splitlines())  # torn line gone
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4, 5]


def test_numpy_values_are_written_as_numbers(run_dir: Path) -> None:
    import numpy as np

    sink = JsonlSink()
    sink.start(make_info(run_dir))
    row = fake_metrics(1)
    row["loss"] = np.float32(0.5)
    row["num_datums"] = np.int64(16)
    sink.log_step(row)
    (written,) = read_jsonl(run_dir / "metrics.jsonl")
    assert written["loss"] == 0.5 and written["num_datums"] == 16
    assert validate_row(written) == []
