"""summary.json: hand-checked deltas and best eval, wall time summed across resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.sinks.metrics import JsonlSink
from retrain.sinks.summary import SummarySink, build_summary

from .fakes import fake_metrics, make_info

NULL_EVAL = dict.fromkeys(("accuracy", "accuracy_se", "sampled_accuracy", "sampled_accuracy_se",
                           "size", "samples", "mean_length"))


def _read(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def test_build_summary_by_hand(run_dir: Path) -> None:
    evals = {
        0: {"eval_accuracy": 0.20, "eval_mean_length": 7.0},
        5: {"eval_accuracy": 0.55, "eval_mean_length": 5.5},
        10: {"eval_accuracy": 0.45, "eval_mean_length": 4.0},
    }
    doc = build_summary(make_info(run_dir, max_steps=10), evals, status="done",
                        wall_time_s=12.3456, steps_done=10, params_total=1000,
                        params_trainable=40)
    # old-style evals (accuracy and length only): the new keys are present and null
    assert doc["initial_eval"] == {**NULL_EVAL, "accuracy": 0.20, "mean_length": 7.0}
    assert doc["final_eval"] == {**NULL_EVAL, "accuracy": 0.45, "mean_length": 4.0}
    assert doc["deltas"]["sampled_accuracy"] is None
    # final - initial: 0.45 - 0.20 = 0.25 ; 4.0 - 7.0 = -3.0
    assert doc["deltas"]["accuracy"] == pytest.approx(0.25)
    assert doc["deltas"]["mean_length"] == pytest.approx(-3.0)
    assert doc["best_eval"] == {"accuracy": 0.55, "step": 5}
    assert doc["wall_time_s"] == 12.346
    assert (doc["run"], doc["condition"], doc["seed"]) == ("maxrl+gtpo_sepa_s7",
                                                           "maxrl+gtpo_sepa", 7)


def test_no_evals_gives_nulls(run_dir: Path) -> None:
    doc = build_summary(make_info(run_dir), {}, status="failed", wall_time_s=1.0, steps_done=2,
                        params_total=None, params_trainable=None)
    assert doc["initial_eval"] is None and doc["final_eval"] is None
    assert doc["deltas"] is None and doc["best_eval"] is None


def test_sink_writes_summary_and_keeps_extra_keys(run_dir: Path) -> None:
    sink = SummarySink()
    sink.start(make_info(run_dir, max_steps=4))
    sink.log_eval(0, {"accuracy": 0.25, "mean_length": 6.0})
    for step in range(1, 5):
        sink.log_step(fake_metrics(step))
    sink.log_eval(4, {"eval_accuracy": 0.5, "eval_mean_length": 5.0})
    sink.finish({"status": "done", "params_total": 5000, "params_trainable": 120,
                 "error": None})
    doc = _read(run_dir)
    assert doc["status"] == "done" and doc["steps_done"] == 4 and doc["max_steps"] == 4
    assert doc["params_total"] == 5000 and doc["params_trainable"] == 120
    assert doc["deltas"] == {"accuracy": 0.25, "sampled_accuracy": None, "mean_length": -1.0}
    assert doc["best_eval"] == {"accuracy": 0.5, "step": 4}
    assert "error" in doc and "finished_at" in doc
    assert 0 <= doc["wall_time_s"] < 5


def test_resume_reads_evals_from_disk_and_sums_wall_time(run_dir: Path) -> None:
    jsonl = JsonlSink()
    first = SummarySink()
    info = make_info(run_dir, max_steps=8)
    jsonl.start(info)
    first.start(info)
    for sink in (jsonl, first):
        sink.log_eval(0, {"eval_accuracy": 0.1, "eval_mean_length": 8.0})
    for step in range(1, 7):
        if step in (3, 6):
            for sink in (jsonl, first):
                sink.log_eval(step, {"eval_accuracy": 0.1 * step, "eval_mean_length": 6.0})
        for sink in (jsonl, first):
            sink.log_step(fake_metrics(step))
    first.finish({"status": "interrupted", "wall_time_s": 100.0})
    assert _read(run_dir)["status"] == "interrupted"

    # resume after the checkpoint at step 5: step 6's eval on disk is past it and must go
    resumed = SummarySink()
    resumed.start(make_info(run_dir, start_step=5, max_steps=8))
    for step in (6, 7, 8):
        resumed.log_step(fake_metrics(step))
    resumed.log_eval(8, {"eval_accuracy": 0.9, "eval_mean_length": 3.0})
    resumed.finish({"status": "done"})
    doc = _read(run_dir)
    assert doc["initial_eval"] == {**NULL_EVAL, "accuracy": 0.1, "mean_length": 8.0}
    assert doc["best_eval"] == {"accuracy": 0.9, "step": 8}
    assert doc["deltas"]["accuracy"] == pytest.approx(0.8)  # 0.9 - 0.1
    assert doc["steps_done"] == 8
    assert 100.0 <= doc["wall_time_s"] < 105.0  # previous invocation's 100 s + this one


def test_summary_carries_standard_errors_and_sampled_gain(run_dir: Path) -> None:
    sink = SummarySink()
    sink.start(make_info(run_dir, max_steps=4))
    sink.log_eval(0, {"eval_accuracy": 0.552, "eval_accuracy_se": 0.0222, "eval_size": 500,
                      "eval_mean_length": 6.0, "eval_sampled_accuracy": 0.40,
                      "eval_sampled_accuracy_se": 0.015, "eval_samples": 4, "eval_time_s": 2.0})
    for step in range(1, 5):
        sink.log_step(fake_metrics(step))
    sink.log_eval(4, {"accuracy": 0.75, "accuracy_se": 0.0194, "size": 500, "mean_length": 5.5,
                      "sampled_accuracy": 0.62, "sampled_accuracy_se": 0.018, "samples": 4})
    sink.finish({"status": "done"})
    doc = _read(run_dir)
    assert doc["initial_eval"] == {"accuracy": 0.552, "accuracy_se": 0.0222,
                                   "sampled_accuracy": 0.40, "sampled_accuracy_se": 0.015,
                                   "size": 500, "samples": 4, "mean_length": 6.0}
    assert doc["final_eval"]["accuracy_se"] == 0.0194 and doc["final_eval"]["samples"] == 4
    # 0.75 - 0.552 = 0.198 ; 0.62 - 0.40 = 0.22 ; 5.5 - 6.0 = -0.5
    assert doc["deltas"] == pytest.approx({"accuracy": 0.198, "sampled_accuracy": 0.22,
                                           "mean_length": -0.5})


def test_best_eval_never_is_the_pre_training_eval(run_dir: Path) -> None:
    # Regression: a run whose training made eval worse reported its step-0 eval as "best".
    info = make_info(run_dir, max_steps=4)
    evals = {0: {"eval_accuracy": 0.8}, 2: {"eval_accuracy": 0.5}, 4: {"eval_accuracy": 0.6}}
    doc = build_summary(info, evals, status="done", wall_time_s=1.0, steps_done=4,
                           params_total=None, params_trainable=None)
    assert doc["best_eval"] == {"accuracy": 0.6, "step": 4}
