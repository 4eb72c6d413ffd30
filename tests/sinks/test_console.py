"""Console modes through a captured Rich Console: what each mode shows and hides."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from retrain.config.schema import LoggingConfig
from retrain.sinks.base import build_sinks
from retrain.sinks.console import CampaignDisplay, ConsoleSink, StepClock

from .fakes import fake_metrics, generations, make_info


def _console(terminal: bool = True) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, color_system=None, width=140,
                   height=40), buf


def _drive(sink: ConsoleSink, run_dir: Path, max_steps: int = 4) -> None:
    sink.start(make_info(run_dir, max_steps=max_steps))
    sink.log_eval(0, {"eval_accuracy": 0.1, "eval_accuracy_se": 0.03, "eval_size": 100,
                      "eval_mean_length": 6.0})
    for step in range(1, max_steps + 1):
        sink.log_generations(step, generations(step))
        if step == max_steps:
            sink.log_eval(step, {"eval_accuracy": 0.4, "eval_accuracy_se": 0.049,
                                 "eval_size": 100, "eval_mean_length": 5.0})
        sink.log_step(fake_metrics(step))
        if step % 2 == 0:
            sink.log_checkpoint(step, run_dir / f"checkpoints/step_{step:06d}")
    sink.finish({"status": "done", "steps_done": max_steps})


def test_progress_mode(run_dir: Path) -> None:
    console, buf = _console()
    _drive(ConsoleSink("progress", log_every=2, sample_completions=2, console=console), run_dir)
    out = buf.getvalue()
    assert "[train] step=2/4 loss=0.5 " in out and "[train] step=4/4" in out
    assert "[train] step=1/4" not in out and "[train] step=3/4" not in out
    assert "[ckpt] loss change since start (step 1)" in out
    assert "[ckpt] loss change since last checkpoint (step 2)" in out
    assert "4/4" in out and "s/step" in out and "ETA" in out  # the progress bar
    # each eval figure with its standard error; 0.4 - 0.1 = +0.300
    assert "[eval] step=4 accuracy=0.400±0.049 n=100 mean_length=5" in out
    assert "eval accuracy 0.400±0.049 (initial 0.100±0.030, gain +0.300)" in out
    assert "eval 0.400±0.049" in out  # the progress bar's eval field
    assert out.count("[sample] reward=") == 2


def test_silent_mode_shows_only_the_bar(run_dir: Path) -> None:
    console, buf = _console()
    _drive(ConsoleSink("silent", console=console), run_dir)
    out = buf.getvalue()
    assert "4/4" in out and "maxrl+gtpo_sepa_s7" in out
    for marker in ("[train]", "[eval]", "[ckpt]", "[sample]", "[done]"):
        assert marker not in out


def test_silent_mode_in_a_pipe_prints_nothing(run_dir: Path) -> None:
    # Regression: --silent wrote the bar's last frame into pipes and log files.
    console, buf = _console(terminal=False)
    _drive(ConsoleSink("silent", console=console), run_dir)
    assert buf.getvalue() == ""


def test_live_layout_is_as_tall_as_its_content(run_dir: Path) -> None:
    # Regression: the full-screen layout filled the terminal, ~25 of 50 rows empty.
    sink = ConsoleSink("live", log_every=1, console=_console()[0])
    sink.info = make_info(run_dir, max_steps=4)
    sink.latest.update(fake_metrics(2))
    sink.recent.extend(["[train] step=1/4", "[train] step=2/4"])
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system=None, width=100, height=50).print(sink._layout())
    lines = buf.getvalue().splitlines()
    assert 10 < len(lines) < 30, buf.getvalue()
    assert sum(not line.strip() for line in lines) <= 2, buf.getvalue()


def test_eta_counts_wall_time_and_rounds_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: ETA read 0:00:00 mid-run: it counted only step_time_s (no eval, no
    # checkpoint) and rounded down.
    now = [100.0]
    monkeypatch.setattr("retrain.sinks.console.time.monotonic", lambda: now[0])
    clock = StepClock()
    now[0] = 105.0
    clock.tick(0.2)  # the first step: its own step time (the gap holds model loading)
    for _ in range(3):
        now[0] += 1.5  # 0.2 s of step, 1.3 s of eval and checkpoint
        clock.tick(0.2)
    assert clock.s_per_step == pytest.approx((0.2 + 4.5) / 4)
    assert clock.eta(2) == "0:00:03"  # 2.35 s rounds up
    assert StepClock().eta(5) == "-"
    clock2 = StepClock()
    clock2.tick(0.3)
    assert clock2.eta(1) == "0:00:01" and clock2.eta(0) == "0:00:00"


def test_live_mode_renders_layout(run_dir: Path) -> None:
    console, buf = _console(terminal=False)  # not a TTY: the final layout is printed once
    _drive(ConsoleSink("live", log_every=1, console=console), run_dir)
    out = buf.getvalue()
    assert "latest metrics" in out and "recent" in out and "maxrl+gtpo_sepa_s7" in out
    assert "mean_reward" in out and "step 4/4" in out
    assert "[done] steps=4/4" in out  # printed after the layout closes


def test_none_mode_prints_nothing(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sinks = build_sinks(make_info(run_dir, max_steps=3), LoggingConfig(), console_mode="none")
    assert not any(isinstance(s, ConsoleSink) for s in sinks.sinks)
    sinks.start()
    for step in range(1, 4):
        sinks.log_step(fake_metrics(step))
    sinks.finish({"status": "done"})
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / "summary.json").exists()
    assert "[train] step=3/3" in (run_dir / "run.log").read_text(encoding="utf-8")
    assert sinks.failures == {}


def test_unknown_mode_is_rejected(run_dir: Path) -> None:
    with pytest.raises(ValueError):
        build_sinks(make_info(run_dir), LoggingConfig(), console_mode="loud")


def test_campaign_display_plain_lines_when_not_a_tty() -> None:
    console, buf = _console(terminal=False)
    with CampaignDisplay(2, title="abl", console=console) as display:
        display.update("a_s1", 0, 4)
        for step in range(1, 5):
            display.update("a_s1", step, 4, {"mean_reward": 0.5, "accuracy": 0.3})
        display.finish_run("a_s1", "done")
        display.update("b_s1", 1, 4)
        display.finish_run("b_s1", "failed")
    lines = buf.getvalue().splitlines()
    assert lines == [
        "[abl] a_s1: running step 0/4 (0/2 runs finished)",
        "[abl] a_s1: done step 4/4 (1/2 runs finished)",
        "[abl] b_s1: running step 1/4 (1/2 runs finished)",
        "[abl] b_s1: failed step 1/4 (2/2 runs finished)",
    ]
    assert display.rows["a_s1"]["metrics"]["eval_accuracy"] == 0.3


def test_campaign_display_live_table() -> None:
    console, buf = _console(terminal=True)
    with CampaignDisplay(1, title="abl", console=console) as display:
        display.update("a_s1", 2, 4, {"mean_reward": 0.25, "loss": 0.5})
    out = buf.getvalue()
    assert "abl: 0/1 runs finished" in out and "a_s1" in out and "2/4" in out
