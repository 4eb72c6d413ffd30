"""Ray executor: each run of a campaign is one Ray task, on a local instance or an existing cluster.

Sits where the pool executor sits (campaign runner → executor → `execute_run`): the campaign
process submits at most `max_in_flight` tasks, each asking Ray for `num_cpus` / `num_gpus`, and
each task calls the same single-run entry point as every other executor. Runs write their own run
dir and the campaign reads it (progress, comparison), so on a cluster the campaign dir must be on
storage every node sees (see docs/campaigns-execution.md).

Stopping works as for the pool: the campaign creates the stop file, runs checkpoint after their
step and return interrupted; `kill()` (second Ctrl+C) cancels every task in flight at once.
A task that raises or whose worker dies is a failed run with the reason; Ray's own task retries
are off, so `campaign.max_retries` is the one retry policy.
"""

from __future__ import annotations

import os
import signal
from types import ModuleType
from typing import Any

from retrain.executors.base import EventFn, RunOutcome, RunTask, error_tail

# Environment a run needs on a cluster node (a local instance inherits the whole environment).
# Credentials are not forwarded: set them on the nodes.
_FORWARD_PREFIXES = ("RETRAIN_", "HF_", "TRANSFORMERS_", "WANDB_", "TOKENIZERS_")
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        from retrain.errors import MissingExtraError

        raise MissingExtraError("ray", "ray", "campaign.executor = 'ray'") from exc
    return ray


def _run_in_ray(task: RunTask, threads: int) -> dict[str, Any]:
    """Body of the Ray task (runs in a Ray worker process). Returns RunOutcome.to_dict()."""
    # Ray sets OMP_NUM_THREADS from num_cpus only when the driver's environment has none;
    # the torch thread budget must follow the task's CPUs either way.
    import torch

    torch.set_num_threads(threads)
    from retrain.executors.base import execute_run

    return execute_run(task, console_mode="none").to_dict()


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables passed to runs on a cluster: model cache, offline flags, wandb settings."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if k.startswith(_FORWARD_PREFIXES) and not any(m in k for m in _SECRET_MARKERS)}


class RayExecutor:
    def __init__(self, *, address: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 max_in_flight: int = 1) -> None:
        self._ray = _import_ray()
        # RAY_ADDRESS is how `ray job submit` (and Ray users) point a driver at a cluster
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_in_flight = max(1, max_in_flight)
        self._in_flight: dict[Any, str] = {}  # ObjectRef -> run name
        self._stopping = False
        self._local = False

    # --- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        """Reuse an initialised Ray, else connect to `address`, else start a local instance."""
        ray = self._ray
        if ray.is_initialized():
            return
        # ray.init installs its own SIGTERM handler (sys.exit); the campaign's graceful-stop
        # handlers must stay in charge, so they are put back afterwards.
        saved = _save_signal_handlers()
        try:
            if self.address:
                self._connect_cluster()
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                self._local = True
        finally:
            _restore_signal_handlers(saved)
        if self._local:
            self._check_feasible(ray.cluster_resources())

    def _connect_cluster(self) -> None:
        try:
            self._ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            from retrain.errors import ConfigError

            raise ConfigError([f"campaign.ray_address: cannot connect to the Ray cluster at "
                               f"{self.address!r}: {exc}"]) from exc

    def _check_feasible(self, resources: dict[str, float]) -> None:
        """A task asking for more than the local instance has would wait forever: say so now."""
        from retrain.errors import ConfigError

        problems = []
        for key, want, field in (("CPU", self.num_cpus, "num_cpus"), ("GPU", self.num_gpus, "num_gpus")):
            have = resources.get(key, 0.0)
            if want > have:
                problems.append(f"campaign.{field}: each run asks for {want:g} {key}s but the local "
                                f"Ray instance has {have:g}; lower it or set campaign.ray_address")
        if problems:
            raise ConfigError(problems)

    # --- the Executor protocol -------------------------------------------------------------
    def run(self, tasks: list[RunTask], on_event: EventFn) -> None:
        if not tasks:
            return
        ray = self._ray
        self._connect()
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0,
                            retry_exceptions=False)(_run_in_ray)
        # On a cluster the runs get the model cache and offline settings as env vars of the task
        # (a task's runtime_env merges into a submitted job's; ray.init's would conflict with it).
        # A local instance already inherits this process's environment.
        opts: dict[str, Any] = {} if self._local else {"runtime_env": {"env_vars": forwarded_env()}}
        threads = max(1, int(self.num_cpus))
        pending = list(tasks)
        try:
            while pending or self._in_flight:
                while pending and not self._stopping and len(self._in_flight) < self.max_in_flight:
                    task = pending.pop(0)
                    ref = remote.options(name=f"retrain:{task.name}", **opts).remote(task, threads)
                    self._in_flight[ref] = task.name
                    on_event("started", task.name, None)
                if not self._in_flight:
                    break  # stopping: pending runs stay pending
                # a short timeout keeps the loop responsive to Ctrl+C and request_stop()
                ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    name = self._in_flight.pop(ref)
                    on_event("finished", name, self._outcome(ref, name))
        except BaseException:
            self.kill()  # a second Ctrl+C (or a crash of the campaign process): stop at once
            raise

    def _outcome(self, ref: Any, name: str) -> RunOutcome:
        ray = self._ray
        try:
            return RunOutcome(**ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            # the task body raised past execute_run (it catches ordinary exceptions itself)
            return RunOutcome(name=name, status="failed", error=_tail(str(exc)))
        except ray.exceptions.RayError as exc:  # worker died, task cancelled, node lost, ...
            return RunOutcome(name=name, status="failed",
                              error=f"Ray task failed ({type(exc).__name__}): {_tail(str(exc))}")
        except Exception as exc:  # noqa: BLE001 - e.g. the outcome could not be deserialised
            return RunOutcome(name=name, status="failed", error=error_tail(exc))

    def request_stop(self) -> None:
        # runs see the campaign's stop file and return interrupted; nothing new is submitted
        self._stopping = True

    def kill(self) -> None:
        self._stopping = True
        for ref in list(self._in_flight):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or the cluster is gone
                pass
        self._in_flight.clear()


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _save_signal_handlers() -> dict[int, Any]:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
