"""Fixtures of the end-to-end trainer tests: one tiny-model config, the cached tiny model built once,
helpers to run `retrain run` in-process (CliRunner) or as a subprocess, and to read run files.

Every run uses SMALL (3 steps of 4 prompts x 4 completions, 10 eval problems) so a run takes about a
second after start-up. The [model] warm-up settings stay at their defaults: the tiny model is built
once per checkout into $RETRAIN_CACHE (tests/conftest.py) and reused by every later session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[2]

BASE_TOML = """\
# the config users write for a first run; the tests shrink it with SMALL
[model]
name = "tiny"

[training]
seed = 7
"""

SMALL: tuple[str, ...] = (
    "--set", "training.max_steps=3", "--set", "training.batch_size=4",
    "--set", "training.group_size=4", "--set", "eval.size=10", "--set", "data.eval_size=50",
    "--set", "backend.threads=1",
)

# Keys whose values are wall-clock measurements: never compared between runs.
TIMING_KEYS = frozenset({"step_time_s", "tokens_per_s", "bp_throughput"})


def small_sets() -> list[str]:
    """SMALL as the `--set` values alone (for load_config)."""
    return [v for v in SMALL if v != "--set"]


def drop_timings(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not (k.endswith("_time_s") or k in TIMING_KEYS)}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics_without_timings(run_dir: Path) -> list[dict[str, Any]]:
    return [drop_timings(r) for r in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="session")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "run.toml"
    path.write_text(BASE_TOML, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(base_config: Path) -> Path:
    """The warmed-up tiny model of BASE_TOML + SMALL: built on first use, then loaded from the cache."""
    import torch

    from retrain.backend.local.presets import resolve_model_path, warmup_task
    from retrain.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(base_config, small_sets())
    path = Path(resolve_model_path(cfg, warmup_task(cfg), progress=False))
    assert (path / "config.json").is_file()
    return path


@pytest.fixture(scope="session")
def cli(tiny_model: Path) -> Callable[..., Result]:
    """`retrain <args>` in-process through Typer's CliRunner (stdout and stderr kept apart)."""
    from retrain.cli.app import app

    def invoke(*args: str | os.PathLike[str]) -> Result:
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


def assert_ok(result: Result) -> None:
    """Exit 0, with the output and any exception in the failure message."""
    if result.exit_code != 0 or (result.exception and not isinstance(result.exception, SystemExit)):
        import traceback

        tb = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        raise AssertionError(f"exit {result.exit_code}\nstdout:\n{result.stdout[-3000:]}\n"
                             f"stderr:\n{result.stderr[-3000:]}\n{tb[-3000:]}")


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
            "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def start_run(args: Sequence[str | os.PathLike[str]], log: Path) -> subprocess.Popen[bytes]:
    """`python -m retrain <args>` in the background, stdout+stderr into `log`."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "retrain", *map(str, args)], stdout=fh,
                                stderr=subprocess.STDOUT, env=subprocess_env(), cwd=REPO,
                                start_new_session=True)


def wait_for_step(proc: subprocess.Popen[bytes], run_dir: Path, step: int, log: Path,
                  timeout_s: float = 120.0) -> None:
    """Poll metrics.jsonl until a row of `step` is there (fails if the process ends first)."""
    path = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.endswith("}") and json.loads(line).get("step") == step:
                    return
        if proc.poll() is not None:
            raise AssertionError(f"run ended (exit {proc.returncode}) before step {step}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"no metrics row of step {step} after {timeout_s} s")


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still alive at the end are killed (by pid)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
