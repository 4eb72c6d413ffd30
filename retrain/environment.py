"""The software and machine a run ran on: `<run>/environment.json`.

Sits at the start of a run: `trainer.loop.train_run` calls `write_environment` once per
invocation (fresh or resume), after the backend is built (so torch's thread count is the one the
run uses) and before the first step. `retrain analyze diff` reads the files of two runs and shows
the keys that differ (`analysis/export.py`).

The file is one snapshot of the latest invocation at the top level, plus `history`: the snapshots
of earlier invocations of the same run dir, oldest first (each without its own `history`). A
fresh run starts with an empty history; a resume moves the previous top level into it.

Package versions come from `importlib.metadata`, so nothing heavy is imported to read them (vllm
in particular is never imported). The host name is not recorded, only a short hash of it, so a
run dir can be shared without naming the machine; equal hashes mean the same host.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from retrain.io import atomic_write_json, read_json_object

ENVIRONMENT_FILE = "environment.json"
# Distributions whose versions matter to a run; null when not installed.
PACKAGES = ("torch", "transformers", "peft", "vllm")
HOST_HASH_CHARS = 12  # a prefix of sha256(hostname): enough to tell hosts apart
GIT_TIMEOUT_S = 5.0  # a hung git (network file system) must not hold up the run
# Keys that differ between any two invocations, so `analyze diff` does not report them.
VOLATILE_KEYS = ("utc_time", "history", "invocation", "start_step")

Snapshot = dict[str, object]


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def host_hash(hostname: str) -> str:
    return hashlib.sha256(hostname.encode("utf-8")).hexdigest()[:HOST_HASH_CHARS]


def git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git work tree holding `cwd`; (None, None) without git or a repo."""
    git = shutil.which("git")
    if git is None:
        return None, None

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return None, None
    # Untracked files are left out: logs/ and caches in the tree would make every run dirty.
    status = run("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def device_info(requested: str) -> tuple[str, str | None]:
    """(device type, GPU name or None) for `model.device`; 'auto' resolves as the backend does."""
    import torch  # the run has imported it already; only called from the trainer

    if requested == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = requested
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return device, gpu


def collect_environment(*, device: str, cwd: Path | None = None) -> Snapshot:
    """One snapshot of this process's environment (see the module docstring for the keys)."""
    import torch

    from retrain import __version__

    commit, dirty = git_state(cwd or Path.cwd())
    dev, gpu = device_info(device)
    return {
        "retrain": __version__,
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
        "device": dev,
        "gpu_name": gpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "host_hash": host_hash(socket.gethostname()),
        "utc_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def with_history(current: Snapshot, previous: dict[str, object] | None, *, resume: bool) -> Snapshot:
    """The file's new content: `current` on top; on resume, the previous file's top level is
    appended to its history (a fresh run starts a new history)."""
    history: list[object] = []
    if resume and previous is not None:
        earlier = previous.get("history")
        history = list(earlier) if isinstance(earlier, list) else []
        history.append({k: v for k, v in previous.items() if k != "history"})
    return {**current, "history": history}


def write_environment(run_dir: Path, *, device: str, resume: bool, start_step: int) -> Snapshot:
    """Write `<run_dir>/environment.json` atomically for this invocation and return it."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    current: Snapshot = {**collect_environment(device=device),
                         "invocation": "resume" if resume else "fresh", "start_step": start_step}
    snapshot = with_history(current, read_json_object(path) if resume else None, resume=resume)
    atomic_write_json(path, snapshot)
    return snapshot


def read_environment(run_dir: Path) -> dict[str, object] | None:
    """The latest snapshot of a run dir (without history), or None when it has no (readable) file."""
    obj = read_json_object(Path(run_dir) / ENVIRONMENT_FILE)
    return None if obj is None else {k: v for k, v in obj.items() if k != "history"}


def environment_differences(a: dict[str, object] | None,
                            b: dict[str, object] | None) -> list[dict[str, object]]:
    """Rows {key, a, b} of the snapshot keys whose values differ (time and history left out).
    A run without the file (written before it existed) gives one row `environment.json`."""
    if a is None or b is None:
        if a is None and b is None:
            return []
        return [{"key": ENVIRONMENT_FILE, "a": "present" if a is not None else "missing",
                 "b": "present" if b is not None else "missing"}]
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in VOLATILE_KEYS]
    return [{"key": k, "a": a.get(k), "b": b.get(k)} for k in keys if a.get(k) != b.get(k)]
