"""Campaign orchestration: executor, retries, resume, squeeze, comparison (the campaign dir
itself is prepared by campaign_dir.py).

The campaign process is the only writer of manifest.json. Runs write only inside their own run
dir. Interrupts: the first Ctrl+C/SIGTERM creates `<out>/STOP` (every run checkpoints after its
current step and is marked interrupted), the second stops at once; exit code 130.
Under `seeds_policy = "until_decided"` runs are trained look by look (campaign/sequential.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from rich.markup import escape

from retrain.campaign import sequential
from retrain.campaign.grid import CampaignSpec
from retrain.campaign.manifest import Manifest, now
from retrain.config.render import render_toml
from retrain.errors import ResumeError
from retrain.executors.base import STOP_FILE, RunOutcome, RunTask
from retrain.io import last_jsonl

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def build_executor(spec: CampaignSpec, *, executor: str | None = None) -> Any:
    c = spec.base.campaign
    kind = executor or c.executor
    if kind == "auto" and c.pack_runs and c.max_workers == 1:
        from retrain.executors.packed import PackedExecutor

        return PackedExecutor(pack_size=c.pack_size)
    if kind == "auto":
        kind = "inprocess" if c.max_workers == 1 else "pool"
    if kind == "inprocess":
        from retrain.executors.inprocess import InProcessExecutor

        return InProcessExecutor()
    if kind == "pool":
        from retrain.executors.pool import PoolExecutor

        return PoolExecutor(max_workers=c.max_workers, threads_per_worker=c.threads_per_worker,
                            stagger_seconds=c.stagger_seconds,
                            pack=(executor or c.executor) == "auto" and c.pack_runs, pack_size=c.pack_size)
    from retrain.executors.ray_executor import RayExecutor

    return RayExecutor(address=c.ray_address or None, num_cpus=c.num_cpus, num_gpus=c.num_gpus,
                       max_in_flight=c.max_workers)


def _import_report_libraries() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
        import scipy.stats  # noqa: F401
        import statsmodels.stats.multitest  # noqa: F401
        import statsmodels.stats.power  # noqa: F401
    except ImportError:
        pass  # the report says what is missing when it runs


def contained_run_dir(out: Path, run_dir: str) -> Path:
    """`out / run_dir`, resolved, after checking that it lies inside `out/runs/`.

    Run dirs come from the plan (`runs/<name>`), never from what a file on disk says; the check
    guards against a label or a future change that would step outside the campaign.
    """
    root = (out / "runs").resolve()
    path = (out / run_dir).resolve()
    if path == root or not path.is_relative_to(root):
        raise ResumeError(f"{out}: run dir {run_dir!r} is outside {root}; refusing to touch it")
    return path


def _task(spec: CampaignSpec, out: Path, name: str, rec: dict[str, Any]) -> RunTask:
    run = next(r for r in spec.runs if r.name == name)
    run_dir = contained_run_dir(out, run.run_dir)  # the plan's, not the manifest's
    rec["run_dir"] = run.run_dir
    has_ckpt = (run_dir / "checkpoints").is_dir() and any(
        p.name.startswith("step_") for p in (run_dir / "checkpoints").iterdir())
    resume = has_ckpt
    return RunTask(name=name, condition=run.condition, run_dir=str(run_dir),
                   config_toml=render_toml(run.config, for_run=True), resume=resume,
                   stop_file=str((out / STOP_FILE).resolve()))


class CampaignRunner:
    def __init__(self, spec: CampaignSpec, out: Path, manifest: Manifest, *, executor: Any,
                 console_mode: str = "progress") -> None:
        self.spec, self.out, self.manifest = spec, out, manifest
        self.executor = executor
        self.console_mode = console_mode
        # report text and tables (squeeze, comparison, failures) only in the talkative modes;
        # --silent keeps just the progress display, --no-console-output nothing
        self.verbose = console_mode in ("progress", "live")
        self.lock = threading.Lock()
        self.display: Any = None
        self.stop_requested = False
        self.watcher: _ProgressWatcher | None = None

    # --- events from the executor (called in the campaign process) -------------------------
    def on_event(self, event: str, name: str, outcome: RunOutcome | None) -> None:
        with self.lock:
            rec = self.manifest.runs[name]
            if event == "started":
                rec["attempts"] = rec.get("attempts", 0) + 1
                self.manifest.mark(name, "running", started=now(), ended=None, error=None)
                return
            assert outcome is not None
            status = outcome.status
            self.manifest.mark(name, status, ended=now(), wall_time_s=round(outcome.wall_time_s, 3),
                               error=outcome.error, step=outcome.steps_done or rec.get("step", 0),
                               final_eval=outcome.final_eval)
        if status == "failed":
            last = (outcome.error or "").strip().splitlines()[-1:] or [""]
            self._say(f"[red]run {name} failed[/]: {escape(last[0])}")
        if status == "done":
            self._maybe_squeeze(name)

    def _say(self, text: str) -> None:
        """A status message (stderr)."""
        if self.verbose:
            from retrain.ui import err_console

            err_console.print(text)

    def _show(self, renderable: Any) -> None:
        """A result: table or verdict (stdout)."""
        if self.verbose:
            from retrain.ui import console

            console.print(renderable, highlight=False)

    # --- the main job ------------------------------------------------------------------------
    def prepare_models(self) -> None:
        """Build missing tiny-model cache entries here, with progress shown, before workers start
        (a worker would build it silently; concurrent builders would wait on the cache lock)."""
        from retrain.backend.local.presets import TINY_PRESETS, resolve_model_path, warmup_task
        from retrain.config.render import config_to_dict

        seen: set[str] = set()
        for run in self.spec.runs:
            if run.config.model.name not in TINY_PRESETS:
                continue
            d = config_to_dict(run.config)
            key = json.dumps([d["model"], d["data"]], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            resolve_model_path(run.config, warmup_task(run.config), progress=self.console_mode != "none")

    def run(self) -> int:
        (self.out / STOP_FILE).unlink(missing_ok=True)
        # The end-of-campaign report needs scipy, statsmodels and matplotlib (~1.2 s of imports);
        # this process mostly waits for its runs, so it imports them meanwhile.
        threading.Thread(target=_import_report_libraries, name="retrain-report-imports", daemon=True).start()
        if any(r["status"] not in ("done", sequential.SKIPPED) for r in self.manifest.runs.values()):
            self.prepare_models()
        self.watcher = _ProgressWatcher(self)
        self.watcher.start()
        try:
            if self.manifest.data.get("sequential"):
                self._run_sequential()
            else:
                self._rounds(None)
        finally:
            self.watcher.stop()
        return self.finish()

    def _rounds(self, scope: list[str] | None) -> None:
        """Train the runs of `scope` (None: all) that are not done, then retry the failed ones
        up to campaign.max_retries times."""
        retries = self.spec.base.campaign.max_retries
        first_round = True
        while not self.stop_requested:
            todo = self._todo(retrying=not first_round, max_retries=retries, scope=scope)
            if not todo:
                break
            tasks = [_task(self.spec, self.out, n, self.manifest.runs[n]) for n in todo]
            self.manifest.save()
            self.executor.run(tasks, self.on_event)
            first_round = False

    def _run_sequential(self) -> None:
        """Look by look: train the runs the next look needs, take the look once all of them are
        done, skip what the decisions made unnecessary; stop when every look is taken, every
        condition is decided, a run of the look did not finish, or a stop was requested."""
        state = self.manifest.data["sequential"]
        self._skip(state)
        while not self.stop_requested:
            names = sequential.scope(state, self.manifest.runs)
            if not names:
                break
            self._rounds(names)
            if any(self.manifest.runs[n]["status"] != "done" for n in names):
                break  # failed after its retries, or interrupted: resume continues this look
            self._look(state, names)

    def _look(self, state: dict[str, Any], names: list[str]) -> None:
        planned = {r.name: r.run_dir for r in self.spec.runs}
        dirs = {n: contained_run_dir(self.out, planned[n]) for n in names}
        with self.lock:
            look = sequential.take_look(state, self.manifest.runs, dirs, time=now(),
                                        last_n=self.spec.base.campaign.compare_last_n)
        self._skip(state)
        for line in sequential.look_lines(look, len(state["looks_planned"])):
            self._say(escape(line))

    def _skip(self, state: dict[str, Any]) -> None:
        """Mark the runs no look needs any more as skipped (and save), and size the display."""
        with self.lock:
            sequential.mark_skipped(state, self.manifest.runs)
            self.manifest.save()
        if self.watcher is not None:
            self.watcher.set_total(sum(r["status"] != sequential.SKIPPED
                                       for r in self.manifest.runs.values()))

    def _todo(self, *, retrying: bool, max_retries: int, scope: list[str] | None = None) -> list[str]:
        out = []
        allowed = set(scope) if scope is not None else None
        for name, rec in self.manifest.runs.items():
            if allowed is not None and name not in allowed:
                continue
            st = rec["status"]
            if st in ("pending", "interrupted", "running"):
                if not retrying:
                    out.append(name)
            elif st == "failed":
                if not retrying or rec.get("attempts", 0) <= max_retries:
                    out.append(name)
        return out

    def request_stop(self) -> None:
        self.stop_requested = True
        (self.out / STOP_FILE).touch()
        self.executor.request_stop()

    def finish(self) -> int:
        (self.out / STOP_FILE).unlink(missing_ok=True)
        counts = self.manifest.counts()
        if counts["interrupted"] or counts["running"] or (self.stop_requested and counts["pending"]):
            status = "interrupted"
        elif counts["failed"]:
            status = "failed"
        else:
            status = "done"
        for _name, rec in self.manifest.runs.items():
            if rec["status"] == "running":  # a second Ctrl+C left it mid-step
                rec["status"] = "interrupted"
        self.manifest.data["status"] = status
        self._compare()
        self.manifest.save()
        return {"done": EXIT_OK, "failed": EXIT_FAILED}.get(status, EXIT_INTERRUPTED)

    # --- squeeze and comparison ----------------------------------------------------------------
    def _maybe_squeeze(self, name: str) -> None:
        sq = self.spec.base.squeeze
        if not sq.enabled or self.manifest.data.get("squeeze"):
            return
        from retrain.campaign.report import run_squeeze

        result = run_squeeze(self.spec, self.out, name, say=self._say, show=self._show)
        with self.lock:
            self.manifest.data["squeeze"] = result
            self.manifest.save()

    def _compare(self) -> None:
        from retrain.campaign.report import write_comparison

        self.manifest.data["comparison"] = write_comparison(self.spec, self.out, self.manifest,
                                                           say=self._say, show=self._show)


class _ProgressWatcher:
    """Polls each running run's metrics.jsonl for its latest step (works for every executor)
    and feeds the manifest and the console display."""

    def __init__(self, runner: CampaignRunner, every: float = 1.0) -> None:
        self.runner = runner
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="campaign-progress", daemon=True)
        self.display: Any = None
        self._shown: dict[str, str] = {}  # run -> finished status already shown

    def start(self) -> None:
        if self.runner.console_mode != "none":
            from retrain.sinks.console import CampaignDisplay

            runs = self.runner.manifest.runs
            active = sum(r["status"] != sequential.SKIPPED for r in runs.values())
            self.display = CampaignDisplay(active, title=self.runner.spec.name,
                                           mode=self.runner.console_mode)
            self.display.start()
            for n, r in runs.items():
                if r["status"] == "done":
                    self.display.update(n, r["max_steps"], r["max_steps"], {}, status="done")
        self._thread.start()

    def set_total(self, total: int) -> None:
        """Runs the display counts: skipped runs (sequential seeds) never finish."""
        if self.display is not None:
            self.display.total_runs = total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()
        if self.display is not None:
            self.display.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        """Read the newest training row of each running run (a finished run once more, to show
        its end state); pending runs and runs already shown as finished cost nothing."""
        r = self.runner
        changed = False
        for name, rec in list(r.manifest.runs.items()):
            status = rec["status"]
            if status in ("pending", sequential.SKIPPED) or self._shown.get(name) == status:
                continue
            last = last_jsonl(r.out / "runs" / name / "metrics.jsonl", accept=_is_training_row)
            step = int(last.get("step", 0)) if last else 0
            if step != rec.get("step") and status == "running":
                with r.lock:
                    rec["step"] = step
                changed = True
            if status != "running":
                self._shown[name] = status
            if self.display is not None:
                self.display.update(name, step, rec["max_steps"], last or {}, status=status)
        if changed:
            with r.lock:
                r.manifest.save()


def _is_training_row(row: dict[str, Any]) -> bool:
    return "loss" in row

