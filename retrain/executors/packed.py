"""Packed executor: the campaign's runs trained in packs, each pack one base model with one LoRA
adapter per run, in this process (backend/local/pack.py). `run_pack` trains one pack; the pool's
workers call it too (max_workers > 1: one pack per worker at a time).

Runs that share the model and the adapter's shape (`pack_key`) go to one pack, in plan order, at
most `pack_size` per pack (0: the compatible runs split evenly over the workers); the others (another model, LoRA rank or target modules, LoRA dropout,
a backend other than `local`, multi-phase runs) train alone, one after another, as the in-process
executor would. Each run of a pack has its own thread running the ordinary step loop; the
threads meet in the pack's rendezvous for every sample and train step, so a pack advances in
lockstep. A run that fails leaves the pack and the others go on.
"""

from __future__ import annotations

import json
import threading
import tomllib
from pathlib import Path
from typing import Any

from retrain.executors.base import EventFn, RunOutcome, RunTask, execute_run
from retrain.trainer.state import StopFlag


def pack_key(cfg: Any) -> str | None:
    """What runs of one pack must share; None: the run cannot be packed and trains alone."""
    if cfg.backend.name != "local" or cfg.phases or cfg.lora.dropout > 0:
        return None
    from retrain.config.render import config_to_dict

    model = config_to_dict(cfg, for_run=True).get("model", {})
    return json.dumps({"model": model, "rank": cfg.lora.rank,
                       "targets": list(cfg.lora.target_modules), "threads": cfg.backend.threads},
                      sort_keys=True)


def plan_packs(configs: list[tuple[str, Any]], pack_size: int = 0, workers: int = 1) -> list[list[str]]:
    """Run names grouped into packs (plan order kept within a pack); a run alone is a pack of 1.
    `pack_size` 0 splits each group of compatible runs evenly over `workers` packs (one pack per
    pool worker), so one worker's pack does not wait for another's."""
    groups: dict[str, list[str]] = {}
    alone: list[list[str]] = []
    for name, cfg in configs:
        key = pack_key(cfg)
        if key is None:
            alone.append([name])
        else:
            groups.setdefault(key, []).append(name)
    packs: list[list[str]] = []
    for names in groups.values():
        size = pack_size if pack_size > 0 else -(-len(names) // max(workers, 1))
        packs += [names[i:i + size] for i in range(0, len(names), size)]
    return packs + alone


class _StopLatch:
    """The stop decisions of one pack: the n-th look of every run gets the answer of the pack's
    first n-th look, so a stop request ends every run after the same number of steps and the
    pack's checkpoints stay aligned (a resume then forms the same batches as an uninterrupted
    pack would)."""

    def __init__(self) -> None:
        self.answers: dict[int, bool] = {}
        self.lock = threading.Lock()

    def answer(self, n: int, ask: Any) -> bool:
        with self.lock:
            if n not in self.answers:
                self.answers[n] = bool(ask())
            return self.answers[n]


class PackStopFlag(StopFlag):
    """A pack member's StopFlag (see _StopLatch)."""

    def __init__(self, latch: _StopLatch, *, stop_file: Path, parent_pid: int | None = None) -> None:
        super().__init__(stop_file=stop_file, parent_pid=parent_pid)
        self.latch = latch
        self.looks = 0

    @property
    def requested(self) -> bool:
        n, self.looks = self.looks, self.looks + 1
        return self.latch.answer(n, lambda: StopFlag.requested.fget(self))  # type: ignore[attr-defined]


def load_configs(tasks: list[RunTask]) -> list[tuple[str, Any]]:
    """(name, RetrainConfig or None) of every task; None: execute_run will report the problem."""
    from retrain.config.load import build_config
    from retrain.errors import RetrainError

    out: list[tuple[str, Any]] = []
    for t in tasks:
        try:
            cfg, _ = build_config(tomllib.loads(t.config_toml), source=f"{t.name}/config.toml")
        except (RetrainError, tomllib.TOMLDecodeError):
            cfg = None
        out.append((t.name, cfg))
    return out


def task_packs(tasks: list[RunTask], pack_size: int, workers: int = 1) -> list[tuple[list[RunTask], list[Any]]]:
    """The tasks grouped into packs, each with its runs' configs (a run alone: a pack of 1)."""
    configs = load_configs(tasks)
    by_name = {t.name: t for t in tasks}
    cfg_of = dict(configs)
    packs = plan_packs([(n, c) for n, c in configs if c is not None], pack_size, workers)
    packs += [[n] for n, c in configs if c is None]
    return [([by_name[n] for n in names], [cfg_of[n] for n in names]) for names in packs]


def run_pack(tasks: list[RunTask], cfgs: list[Any], emit: EventFn, *, stops: list[StopFlag],
             stopped: Any = None, parent_pid: int | None = None) -> None:
    """Train the runs of one pack to the end, one thread each, in this process; `emit` gets their
    started/finished events (from their threads). Used by PackedExecutor and by pool workers."""
    from retrain.backend.local.pack import Pack

    for t in tasks:
        emit("started", t.name, None)
    try:
        pack = Pack(cfgs)
    except Exception as exc:  # noqa: BLE001 - the pack's runs fail with the reason
        from retrain.executors.base import error_tail

        for t in tasks:
            emit("finished", t.name, RunOutcome(name=t.name, status="failed", error=error_tail(exc)))
        return

    def body(k: int, task: RunTask, stop: StopFlag) -> None:
        try:
            outcome = execute_run(task, console_mode="none", stop=stop,
                                  backend_factory=lambda cfg, run_dir: pack.member(k, cfg, run_dir))
        finally:
            pack.leave(k)  # also when the run failed before its backend existed
        emit("finished", task.name, outcome)

    threads = []
    latch = _StopLatch()
    for k, task in enumerate(tasks):
        stop = PackStopFlag(latch, stop_file=Path(task.stop_file), parent_pid=parent_pid)
        stops.append(stop)
        if stopped is not None and stopped():
            stop.set("campaign stop requested")
        th = threading.Thread(target=body, args=(k, task, stop), name=f"retrain-pack-{k}", daemon=True)
        threads.append(th)
        th.start()
    for th in threads:
        while th.is_alive():
            th.join(0.5)  # a bounded wait keeps Ctrl+C reaching this thread's handler
    pack.close()


class PackedExecutor:
    def __init__(self, *, pack_size: int = 0, console_mode: str = "none") -> None:
        self.pack_size = pack_size
        self.console_mode = console_mode
        self.stops: list[StopFlag] = []
        self._stop_requested = False
        self._event_lock = threading.Lock()

    def run(self, tasks: list[RunTask], on_event: EventFn) -> None:
        for pack_tasks, cfgs in task_packs(tasks, self.pack_size):
            if self._stop_requested:
                break
            if len(pack_tasks) == 1:
                self._run_alone(pack_tasks[0], on_event)
            else:
                self._run_pack(pack_tasks, cfgs, on_event)

    def _event(self, on_event: EventFn, event: str, name: str, outcome: RunOutcome | None) -> None:
        with self._event_lock:
            on_event(event, name, outcome)

    def _run_alone(self, task: RunTask, on_event: EventFn) -> None:
        stop = StopFlag(stop_file=Path(task.stop_file))
        self.stops.append(stop)
        self._event(on_event, "started", task.name, None)
        outcome = execute_run(task, console_mode=self.console_mode, stop=stop)
        self._event(on_event, "finished", task.name, outcome)

    def _run_pack(self, tasks: list[RunTask], cfgs: list[Any], on_event: EventFn) -> None:
        run_pack(tasks, cfgs, lambda ev, name, outcome: self._event(on_event, ev, name, outcome),
                 stops=self.stops, stopped=lambda: self._stop_requested)

    def request_stop(self) -> None:
        self._stop_requested = True
        for stop in self.stops:
            stop.set("campaign stop requested")

    def kill(self) -> None:
        # Threads cannot be killed: every run stops after its current step (its checkpoint
        # is written), which is what a second Ctrl+C can still ask of this process.
        self.request_stop()
