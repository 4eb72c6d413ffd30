"""run.log: a header per invocation, the [train]/[eval]/[ckpt] lines, and tee_output."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from retrain.sinks.runlog import RunLogSink, tee_output, terminal_stream

from .fakes import fake_metrics, generations, make_info

HEADER = re.compile(r"^=== retrain run maxrl\+gtpo_sepa_s7 (started|resumed) at step (\d+), "
                    r"\d{4}-\d\d-\d\dT\S+ ===$")


def _invocation(run_dir: Path, steps: range, start_step: int) -> None:
    sink = RunLogSink(log_every=2, sample_completions=2)
    sink.start(make_info(run_dir, start_step=start_step, max_steps=8))
    if start_step == 0:
        sink.log_eval(0, {"eval_accuracy": 0.1, "eval_mean_length": 6.0})
    for step in steps:
        sink.log_generations(step, generations(step))
        sink.log_step(fake_metrics(step))
        if step % 4 == 0:
            sink.log_checkpoint(step, run_dir / f"checkpoints/step_{step:06d}")
    sink.finish({"status": "done" if steps.stop > 8 else "interrupted", "steps_done": steps[-1]})


def test_headers_appended_per_invocation(run_dir: Path) -> None:
    _invocation(run_dir, range(1, 6), start_step=0)
    _invocation(run_dir, range(5, 9), start_step=4)
    lines = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
    headers = [HEADER.match(line) for line in lines if line.startswith("===")]
    assert [(m.group(1), m.group(2)) for m in headers if m] == [("started", "0"), ("resumed", "4")]
    train = [line for line in lines if line.startswith("[train]")]
    # log_every=2: steps 2, 4 then 6, 8 (8 is also the last step)
    assert [line.split()[1] for line in train] == ["step=2/8", "step=4/8", "step=6/8", "step=8/8"]
    assert train[0] == ("[train] step=2/8 loss=0.5 reward=0.200 correct=0.200 kl=- "
                        "lambda=0.100 bs=4")
    assert "[eval] initial accuracy=0.100 mean_length=6" in lines
    assert sum(line.startswith("[sample] reward=") for line in lines) == 4  # 2 per invocation


def test_loss_change_at_checkpoints_survives_resume(run_dir: Path) -> None:
    from retrain.sinks.metrics import JsonlSink

    jsonl = JsonlSink()
    jsonl.start(make_info(run_dir))
    for step in range(1, 5):
        jsonl.log_step(fake_metrics(step))
    _invocation(run_dir, range(5, 9), start_step=4)
    text = (run_dir / "run.log").read_text(encoding="utf-8")
    # loss = 1/step: at step 8 it is 0.125; at step 1 it was 1.0, at the checkpoint (4) 0.25
    assert "[ckpt] loss change since start (step 1): -0.875 (1 -> 0.125)" in text
    assert "[ckpt] loss change since last checkpoint (step 4): -0.125 (0.25 -> 0.125)" in text


def test_final_eval_compared_with_the_initial_one_after_resume(run_dir: Path) -> None:
    from retrain.sinks.metrics import JsonlSink

    jsonl = JsonlSink()
    jsonl.start(make_info(run_dir))
    jsonl.log_eval(0, {"eval_accuracy": 0.25, "eval_mean_length": 6.0})
    jsonl.log_step(fake_metrics(1))
    sink = RunLogSink()
    sink.start(make_info(run_dir, start_step=1, max_steps=2))
    sink.log_eval(2, {"eval_accuracy": 0.5})
    sink.finish({"status": "done", "steps_done": 2})
    text = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "[done] eval accuracy 0.500 (initial 0.250, gain +0.250)" in text


def test_tee_output_copies_stdout_and_stderr(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("before\n", encoding="utf-8")
    original = sys.stdout
    with tee_output(log):
        print("hello from the run")
        print("a warning", file=sys.stderr)
        assert terminal_stream() is original
    assert sys.stdout is original
    print("not captured")
    assert log.read_text(encoding="utf-8") == "before\nhello from the run\na warning\n"


def test_eval_and_done_lines_show_standard_errors_and_sampled_accuracy(run_dir: Path) -> None:
    sink = RunLogSink()
    sink.start(make_info(run_dir, max_steps=2))
    ev = {"eval_accuracy": 0.552, "eval_accuracy_se": 0.0222, "eval_size": 500,
          "eval_mean_length": 5.25, "eval_sampled_accuracy": 0.4, "eval_sampled_accuracy_se": 0.015,
          "eval_samples": 4, "eval_time_s": 7.06}
    sink.log_eval(0, ev)
    sink.log_eval(2, {**ev, "eval_accuracy": 0.61, "eval_sampled_accuracy": 0.45})
    sink.finish({"status": "done", "steps_done": 2})
    lines = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
    assert ("[eval] initial accuracy=0.552±0.022 sampled@4=0.400±0.015 n=500 mean_length=5.25 7.1s"
            in lines)
    # gains: 0.61 - 0.552 = +0.058 ; 0.45 - 0.40 = +0.050
    assert ("[done] eval accuracy 0.610±0.022 (initial 0.552±0.022, gain +0.058);"
            " sampled@4 0.450±0.015 (initial 0.400±0.015, gain +0.050)") in lines
