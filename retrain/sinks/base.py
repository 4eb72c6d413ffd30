"""The sink protocol and the fan-out the step loop talks to.

Place in the data flow: the trainer loop builds one flat metrics dict per step and hands it to a
`SinkSet`; every output of a run except checkpoints (metrics.jsonl, emergence logs, run.log,
summary.json, wandb, console) is a `Sink` behind it. A sink marked `essential` (metrics.jsonl,
emergence/, summary.json: the run's record) that fails stops the run: `SinkSet` raises
`RecordLostError` once every sink has had the call, and the run ends failed with the reason.
Any other failing sink (wandb, run.log, console) never stops training: the `SinkSet` logs one
warning per sink and keeps going.

Call order the loop follows (each method is optional work for a sink, never required):

    start(info)
    log_eval(0, ...)                       # initial eval, fresh runs only
    for step in start_step+1 .. max_steps:
        log_eval(step, ...)                # only on steps that evaluated, before log_step
        log_step(metrics)                  # metrics["step"] == step
        log_generations(step, records)     # every record of the step; sinks filter
        log_checkpoint(step, path)         # after log_step, on checkpoint steps
    finish(summary)                        # also on failure / Ctrl+C

`log_eval` after `log_step` of the same step is tolerated (the JSONL sink rewrites that last row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from retrain.config.schema import LoggingConfig

log = logging.getLogger("retrain.sinks")

CONSOLE_MODES = ("progress", "live", "silent", "none")


@dataclass(frozen=True)
class RunInfo:
    """What every sink knows about the run it records."""

    run_name: str
    condition: str
    seed: int
    run_dir: Path
    max_steps: int
    start_step: int  # 0 fresh, k when resuming after step k
    config: dict[str, Any] = field(default_factory=dict)  # resolved config: section -> key -> value
    resumed: bool = False


@runtime_checkable
class Sink(Protocol):
    """One destination of a run's records. Steps are 1-based; step 0 is the initial eval."""

    def start(self, info: RunInfo) -> None: ...

    def log_step(self, metrics: Mapping[str, Any]) -> None: ...

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None: ...

    def log_checkpoint(self, step: int, path: Path) -> None: ...

    def finish(self, summary: Mapping[str, Any]) -> None: ...


def is_essential(sink: object) -> bool:
    """Whether a sink writes the run's record, so that its failure fails the run."""
    return bool(getattr(sink, "essential", False))


class SinkSet:
    """Fans every call out to several sinks.

    A non-essential sink that raises is reported once (later errors are only counted); an
    essential one makes the call raise `RecordLostError` after the other sinks have had it.
    KeyboardInterrupt and SystemExit are not caught: they are the loop's business.
    """

    def __init__(self, sinks: Sequence[Sink], info: RunInfo | None = None) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.info = info
        self.started = False
        self.failures: dict[str, int] = {}  # sink class name -> number of failed calls

    def _each(self, method: str, call: Callable[[Sink], None], *, fatal: bool = True) -> None:
        lost: BaseException | None = None
        for sink in self.sinks:
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001 - only the run's record may stop the run
                name = type(sink).__name__
                if fatal and is_essential(sink) and lost is None:
                    lost = exc
                elif name not in self.failures:
                    log.warning("sink %s failed in %s (further errors hidden): %s: %s",
                                name, method, type(exc).__name__, exc)
                self.failures[name] = self.failures.get(name, 0) + 1
        if lost is not None:
            from retrain.errors import RecordLostError

            what = getattr(lost, "filename", None) or "the run's record"
            raise RecordLostError(
                f"run failed: could not write {what} ({type(lost).__name__}: "
                f"{getattr(lost, 'strerror', None) or lost}); fix the file system (space, "
                f"permissions), then resume: the run restarts from its newest checkpoint and "
                f"rewrites the later steps") from lost

    def start(self, info: RunInfo | None = None) -> None:
        """Start every sink once; `info` defaults to the one given to `build_sinks`."""
        run_info = info or self.info
        if run_info is None:
            raise ValueError("SinkSet.start needs a RunInfo")
        if self.started:
            return
        self.started = True
        self.info = run_info
        self._each("start", lambda s: s.start(run_info))

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        self._each("log_step", lambda s: s.log_step(metrics))

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._each("log_eval", lambda s: s.log_eval(step, metrics))

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        self._each("log_generations", lambda s: s.log_generations(step, records))

    def log_checkpoint(self, step: int, path: Path) -> None:
        self._each("log_checkpoint", lambda s: s.log_checkpoint(step, path))

    def note(self, line: str) -> None:
        """A line of text for the people watching (sinks with a `note` method print it)."""
        self._each("note", lambda s: getattr(s, "note", _ignore)(line), fatal=False)

    def finish(self, summary: Mapping[str, Any], *, fatal: bool = True) -> None:
        """`fatal=False` on the way out of a failed run: the first error is the one to report."""
        self._each("finish", lambda s: s.finish(summary), fatal=fatal)


def _ignore(line: str) -> None:
    return None


class NullSink:
    """Does nothing; a base for sinks that care about a few calls only."""

    def start(self, info: RunInfo) -> None:
        return None

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        return None

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        return None

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        return None

    def log_checkpoint(self, step: int, path: Path) -> None:
        return None

    def finish(self, summary: Mapping[str, Any]) -> None:
        return None


def eval_key(name: str) -> str:
    """Eval metrics are stored as `eval_<name>`; accept both spellings from the loop."""
    return name if name.startswith("eval_") else f"eval_{name}"


def build_sinks(
    info: RunInfo,
    logging_cfg: LoggingConfig,
    *,
    console_mode: str = "progress",
    wandb_run_id: str | None = None,
) -> SinkSet:
    """The standard sinks of one run: files always, wandb if configured, console per mode.

    Files: metrics.jsonl + emergence/ (JsonlSink), run.log (RunLogSink), summary.json
    (SummarySink), heartbeat.json (HeartbeatSink). `console_mode` is one of progress | live | silent | none. The caller then
    calls `sinks.start()` (a second start is ignored). `wandb_run_id` overrides the id
    persisted in `<run_dir>/wandb_run_id`.
    """
    # Imported here: the sink modules import this one.
    from retrain.sinks.console import ConsoleSink
    from retrain.sinks.heartbeat import HeartbeatSink
    from retrain.sinks.metrics import JsonlSink
    from retrain.sinks.runlog import RunLogSink
    from retrain.sinks.summary import SummarySink

    if console_mode not in CONSOLE_MODES:
        raise ValueError(f"console_mode must be one of {CONSOLE_MODES}, got {console_mode!r}")
    sinks: list[Sink] = [
        JsonlSink(generations_every=logging_cfg.generations_every,
                  generations_per_prompt=logging_cfg.generations_per_prompt),
        SummarySink(),
        RunLogSink(log_every=logging_cfg.log_every,
                   sample_completions=logging_cfg.sample_completions),
        HeartbeatSink(),  # after SummarySink: at finish, the heartbeat is the newer file
    ]
    if logging_cfg.wandb_project:
        from retrain.sinks.wandb_sink import WandbSink

        sinks.append(WandbSink(logging_cfg, run_id=wandb_run_id,
                               quiet=console_mode in ("silent", "none")))
    if console_mode != "none":
        sinks.append(ConsoleSink(console_mode, log_every=logging_cfg.log_every,
                                 sample_completions=logging_cfg.sample_completions))
    return SinkSet(sinks, info)


def check_logging_config(cfg: LoggingConfig) -> list[str]:
    """Problems to report at config-load time, each with its dotted path."""
    import importlib.util

    problems: list[str] = []
    if cfg.wandb_project and importlib.util.find_spec("wandb") is None:
        problems.append(
            "logging.wandb_project: wandb is not installed: pip install 'retrain[wandb]'")
    return problems
