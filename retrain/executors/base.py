"""What every executor runs: one `RunTask` through the same single-run entry point.

`execute_run` never raises for a run's own failure: it returns a RunOutcome with status failed
and the error's last lines, so one failing run never stops the others.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

STOP_FILE = "STOP"


@dataclass(frozen=True)
class RunTask:
    name: str
    condition: str
    run_dir: str  # absolute path
    config_toml: str  # the run's resolved config (what `retrain run` would load)
    resume: bool  # continue from the newest checkpoint
    stop_file: str  # created by the campaign to ask runs to stop after their step


@dataclass
class RunOutcome:
    name: str
    status: str  # done | interrupted | failed
    steps_done: int = 0
    wall_time_s: float = 0.0
    error: str | None = None
    final_eval: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Called by executors as runs start and end: (event, run name, outcome or None)
EventFn = Callable[[str, str, RunOutcome | None], None]


class Executor(Protocol):
    def run(self, tasks: list[RunTask], on_event: EventFn) -> None: ...

    def request_stop(self) -> None: ...

    def kill(self) -> None: ...


def error_tail(exc: BaseException, lines: int = 12) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def execute_run(task: RunTask, *, console_mode: str = "none", parent_pid: int | None = None,
                stop: Any = None, backend_factory: Any = None) -> RunOutcome:
    """The single-run entry point of every executor (in-process, pool worker, Ray task, a
    pack's thread: `backend_factory` builds its pack member)."""
    from retrain.config.load import build_config
    from retrain.errors import RetrainError
    from retrain.trainer.loop import train_run
    from retrain.trainer.state import StopFlag

    run_dir = Path(task.run_dir)
    if stop is None:
        stop = StopFlag(stop_file=Path(task.stop_file), parent_pid=parent_pid)
    try:
        import tomllib

        cfg, _ = build_config(tomllib.loads(task.config_toml), source=f"{task.name}/config.toml")
        if not task.resume:
            _clear_partial_run(run_dir)
        result = train_run(cfg, run_dir, run_name=task.name, condition=task.condition,
                           resume=task.resume, console_mode=console_mode, stop=stop,
                           backend_factory=backend_factory)
        return RunOutcome(name=task.name, status=result.status, steps_done=result.steps_done,
                          wall_time_s=result.wall_time_s, final_eval=result.final_eval)
    except KeyboardInterrupt:
        return RunOutcome(name=task.name, status="interrupted", steps_done=_recorded_step(run_dir),
                          error="stopped at once (second Ctrl+C)")
    except RetrainError as exc:
        return RunOutcome(name=task.name, status="failed", steps_done=_recorded_step(run_dir),
                          error=str(exc))
    except Exception as exc:  # noqa: BLE001 - isolate the run; the traceback tail is kept
        tail = error_tail(exc)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "run.log", "a", encoding="utf-8") as fh:
                fh.write(f"\n[error] run failed:\n{tail}\n")
        except OSError:
            pass
        return RunOutcome(name=task.name, status="failed", steps_done=_recorded_step(run_dir),
                          error=tail)


def _recorded_step(run_dir: Path) -> int:
    """The last step in the run's metrics.jsonl: how far a run that stopped early got."""
    from retrain.io import last_jsonl

    try:
        row = last_jsonl(run_dir / "metrics.jsonl")
    except OSError:
        return 0
    step = row.get("step") if row else None
    return step if isinstance(step, int) else 0


def _clear_partial_run(run_dir: Path) -> None:
    """A run restarted from scratch (no checkpoint) must not keep rows of its earlier attempt."""
    import shutil

    for name in ("metrics.jsonl", "summary.json", "emergence", "checkpoints", "adapter", "explain"):
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
