"""Worker-pool executor: `max_workers` long-lived processes, each running many runs in turn, or
(`pack`) a pack of runs at a time (executors/packed.py: one base model, one adapter per run).

torch/transformers are imported once per worker, not once per run. Each worker gets a thread
budget (`threads_per_worker`). A worker that dies is replaced and its run is marked failed with
the reason. Workers ignore SIGINT and SIGTERM: the campaign process decides, and asks runs to stop
through the stop file (first Ctrl+C or SIGTERM) or kills the workers (second one).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Any

from retrain.executors.base import EventFn, RunOutcome, RunTask


def _worker(task_q: Any, result_q: Any, threads: int, parent_pid: int, worker_id: int) -> None:
    # A Ctrl+C or a SIGTERM to the process group reaches the workers too; the campaign process
    # decides (stop file, then SIGKILL on a second signal), so a run is interrupted, not failed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from retrain.executors.base import execute_run
    from retrain.trainer import loop  # noqa: F401  # pay transformers/peft imports at start-up, not in the first run

    while True:
        try:
            item = task_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return  # the campaign process is gone
            continue
        if item is None:
            return
        if len(item) > 1:
            from retrain.executors.packed import load_configs, run_pack

            run_pack(item, [cfg for _, cfg in load_configs(item)],
                     lambda ev, name, outcome: result_q.put((ev, worker_id, name, outcome)),
                     stops=[], parent_pid=parent_pid)
            continue
        task = item[0]
        result_q.put(("started", worker_id, task.name, None))
        outcome = execute_run(task, console_mode="none", parent_pid=parent_pid)
        result_q.put(("finished", worker_id, task.name, outcome))


class PoolExecutor:
    def __init__(self, *, max_workers: int, threads_per_worker: int = 0, stagger_seconds: float = 0.0,
                 pack: bool = False, pack_size: int = 0) -> None:
        self.max_workers = max_workers
        self.pack = pack  # hand workers packs of compatible runs instead of single runs
        self.pack_size = pack_size
        cores = os.cpu_count() or 1
        self.threads = threads_per_worker or max(1, cores // max_workers)
        self.stagger = stagger_seconds
        self.ctx = mp.get_context("spawn")
        self.workers: dict[int, Any] = {}
        self._stopping = False

    def _start_worker(self, wid: int, task_q: Any, result_q: Any) -> None:
        p = self.ctx.Process(target=_worker, args=(task_q, result_q, self.threads, os.getpid(), wid),
                             name=f"retrain-worker-{wid}", daemon=True)
        p.start()
        self.workers[wid] = p

    def run(self, tasks: list[RunTask], on_event: EventFn) -> None:
        if not tasks:
            return
        if self.pack:
            from retrain.executors.packed import task_packs

            pending = [ts for ts, _ in task_packs(tasks, self.pack_size, self.max_workers)]
        else:
            pending = [[t] for t in tasks]
        # one queue per worker: a dead worker's runs are known exactly
        task_qs = {wid: self.ctx.Queue() for wid in range(min(self.max_workers, len(pending)))}
        result_q = self.ctx.Queue()
        busy: dict[int, list[str]] = {}
        for i, wid in enumerate(task_qs):
            if i and self.stagger:
                time.sleep(self.stagger)
            self._start_worker(wid, task_qs[wid], result_q)
            busy[wid] = []
        remaining = len(tasks)
        try:
            while remaining:
                for wid, current in busy.items():
                    if not current and pending and not self._stopping:
                        item = pending.pop(0)
                        busy[wid] = [t.name for t in item]
                        task_qs[wid].put(item)
                if self._stopping and not any(busy.values()):
                    break
                try:
                    event, wid, name, outcome = result_q.get(timeout=0.5)
                except queue.Empty:
                    remaining -= self._reap_dead(busy, task_qs, result_q, on_event)
                    continue
                if event == "started":
                    on_event("started", name, None)
                else:
                    if name in busy.get(wid, []):
                        busy[wid].remove(name)
                    remaining -= 1
                    on_event("finished", name, outcome)
        except BaseException:
            self.kill()  # a second Ctrl+C (or a crash of the campaign process): stop at once
            raise
        finally:
            for q in task_qs.values():
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
            for p in self.workers.values():
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()  # workers ignore SIGTERM

    def _reap_dead(self, busy: dict[int, list[str]], task_qs: dict[int, Any], result_q: Any,
                   on_event: EventFn) -> int:
        """Replace dead workers; their runs are failed with the reason. Returns runs lost."""
        lost = 0
        for wid, p in list(self.workers.items()):
            if p.is_alive():
                continue
            for name in busy.get(wid, []):
                reason = f"worker process died (exit code {p.exitcode}; a negative code is the signal number)"
                on_event("finished", name, RunOutcome(name=name, status="failed", error=reason))
                lost += 1
            busy[wid] = []
            if not self._stopping:
                task_qs[wid] = self.ctx.Queue()
                self._start_worker(wid, task_qs[wid], result_q)
        return lost

    def request_stop(self) -> None:
        self._stopping = True

    def kill(self) -> None:
        for p in self.workers.values():
            if p.is_alive():
                p.kill()
