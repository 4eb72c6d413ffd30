"""SinkSet fan-out, build_sinks wiring, config-load checks."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from retrain.config.schema import LoggingConfig
from retrain.sinks import (
    HeartbeatSink,
    JsonlSink,
    NullSink,
    RunLogSink,
    Sink,
    SinkSet,
    SummarySink,
    build_sinks,
    check_logging_config,
)

from .fakes import fake_metrics, make_info


class Broken(NullSink):
    def log_step(self, metrics: Mapping[str, Any]) -> None:
        raise RuntimeError("disk full")


class Recorder(NullSink):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.started = 0

    def start(self, info: Any) -> None:
        self.started += 1

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        self.steps.append(metrics["step"])


def test_a_failing_sink_warns_once_and_others_continue(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    sinks = SinkSet([Broken(), rec], make_info(run_dir))
    sinks.start()
    sinks.start()  # ignored: build_sinks callers may start again
    with caplog.at_level(logging.WARNING, logger="retrain.sinks"):
        for step in (1, 2, 3):
            sinks.log_step(fake_metrics(step))
    assert rec.steps == [1, 2, 3] and rec.started == 1
    assert sinks.failures == {"Broken": 3}
    warnings = [r for r in caplog.records if "Broken" in r.getMessage()]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()


def test_a_sink_that_cannot_write_the_record_fails_the_call_after_the_others(
        run_dir: Path) -> None:
    from retrain.errors import RecordLostError

    class NoSpace(NullSink):
        essential = True

        def log_step(self, metrics: Mapping[str, Any]) -> None:
            raise OSError(28, "No space left on device", str(run_dir / "metrics.jsonl"))

    rec = Recorder()
    sinks = SinkSet([NoSpace(), rec], make_info(run_dir))
    with pytest.raises(RecordLostError) as err:
        sinks.log_step(fake_metrics(1))
    assert rec.steps == [1]  # the other sinks still got the step
    assert err.value.exit_code == 1
    message = str(err.value)
    assert "metrics.jsonl" in message and "No space left on device" in message
    assert "resume" in message
    # on the way out of a failed run the first error is the one reported: finish does not raise
    sinks.finish({"status": "failed"}, fatal=False)


def test_the_record_sinks_are_essential_and_the_others_are_not(run_dir: Path) -> None:
    from retrain.sinks.base import is_essential

    sinks = build_sinks(make_info(run_dir), LoggingConfig(), console_mode="progress")
    assert {type(s).__name__: is_essential(s) for s in sinks.sinks} == {
        "JsonlSink": True, "SummarySink": True, "RunLogSink": False, "HeartbeatSink": False,
        "ConsoleSink": False}


def test_keyboard_interrupt_is_not_swallowed(run_dir: Path) -> None:
    class Interrupt(NullSink):
        def log_step(self, metrics: Mapping[str, Any]) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SinkSet([Interrupt()]).log_step({"step": 1})


def test_build_sinks_default_set(run_dir: Path) -> None:
    sinks = build_sinks(make_info(run_dir), LoggingConfig(), console_mode="none")
    assert [type(s) for s in sinks.sinks] == [JsonlSink, SummarySink, RunLogSink, HeartbeatSink]
    assert all(isinstance(s, Sink) for s in sinks.sinks)


def test_build_sinks_with_wandb(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from retrain.sinks.wandb_sink import WandbSink

    cfg = LoggingConfig(wandb_project="p", wandb_mode="disabled")
    sinks = build_sinks(make_info(run_dir), cfg, console_mode="none", wandb_run_id="fixedid1")
    (wb,) = [s for s in sinks.sinks if isinstance(s, WandbSink)]
    assert wb.explicit_id == "fixedid1" and wb.quiet


def test_check_logging_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_logging_config(LoggingConfig()) == []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    assert check_logging_config(LoggingConfig(wandb_project="p")) == [
        "logging.wandb_project: wandb is not installed: pip install 'retrain[wandb]'"]
