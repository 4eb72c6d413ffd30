"""environment.json: what one snapshot holds, how resumes keep the earlier ones, git without a
repo or without git, and the differences `analyze diff` shows."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from retrain import environment as env
from retrain.environment import (
    environment_differences,
    git_state,
    host_hash,
    read_environment,
    with_history,
    write_environment,
)

KEYS = {"retrain", "python", "torch", "transformers", "peft", "vllm", "device", "gpu_name",
        "cpu_count", "torch_threads", "platform", "git_commit", "git_dirty", "host_hash",
        "utc_time", "invocation", "start_step", "history"}


def test_fresh_snapshot_has_every_key_and_no_host_name(tmp_path: Path) -> None:
    snap = write_environment(tmp_path, device="cpu", resume=False, start_step=0)
    on_disk = json.loads((tmp_path / "environment.json").read_text())
    assert on_disk == snap and set(snap) == KEYS
    assert snap["torch"] == metadata.version("torch") and snap["python"].count(".") == 2
    assert snap["device"] == "cpu" and snap["gpu_name"] is None
    assert snap["invocation"] == "fresh" and snap["history"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(snap["utc_time"]))
    assert isinstance(snap["cpu_count"], int) and isinstance(snap["torch_threads"], int)
    assert socket.gethostname() not in json.dumps(on_disk)
    assert snap["host_hash"] == hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def test_vllm_version_is_read_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    assert env.package_version("surely-not-installed-retrain-pkg") is None
    monkeypatch.setattr(env.metadata, "version", lambda name: {"vllm": "0.32.0"}.get(name, "1.0"))
    # other tests of the session may have imported vllm: hide it, then check nothing imports it
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    snap = env.collect_environment(device="cpu")
    assert snap["vllm"] == "0.32.0" and "vllm" not in sys.modules


def test_resume_keeps_earlier_snapshots_oldest_first(tmp_path: Path) -> None:
    write_environment(tmp_path, device="cpu", resume=False, start_step=0)
    write_environment(tmp_path, device="cpu", resume=True, start_step=10)
    third = write_environment(tmp_path, device="cpu", resume=True, start_step=20)
    assert third["invocation"] == "resume" and third["start_step"] == 20
    assert [h["start_step"] for h in third["history"]] == [0, 10]
    assert [h["invocation"] for h in third["history"]] == ["fresh", "resume"]
    assert all("history" not in h for h in third["history"])
    # a fresh run in the same dir starts a new history
    assert write_environment(tmp_path, device="cpu", resume=False, start_step=0)["history"] == []


def test_with_history_is_pure_and_tolerates_a_damaged_previous_file() -> None:
    prev = {"torch": "2.12.0", "history": [{"torch": "2.11.0"}]}
    assert with_history({"torch": "2.13.0"}, prev, resume=True) == {
        "torch": "2.13.0", "history": [{"torch": "2.11.0"}, {"torch": "2.12.0"}]}
    assert prev == {"torch": "2.12.0", "history": [{"torch": "2.11.0"}]}  # not modified
    assert with_history({"a": 1}, {"a": 0, "history": "junk"}, resume=True)["history"] == [{"a": 0}]
    assert with_history({"a": 1}, None, resume=True)["history"] == []
    assert with_history({"a": 1}, prev, resume=False)["history"] == []


def test_git_state_in_a_repo_outside_one_and_without_git(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_state(tmp_path) == (None, None)  # tmp is not in a work tree
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run(["git", "add", "a.txt"], cwd=repo, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", "one"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    (repo / "untracked.log").write_text("x")  # untracked files do not make a tree dirty
    assert git_state(repo) == (head, False)
    (repo / "a.txt").write_text("2")
    assert git_state(repo) == (head, True)
    monkeypatch.setattr(env.shutil, "which", lambda name: None)
    assert git_state(repo) == (None, None)


def test_differences_leave_out_time_and_history() -> None:
    a = {"torch": "2.13.0", "python": "3.11.7", "utc_time": "x", "start_step": 0, "device": "cpu"}
    b = {"torch": "2.12.0", "python": "3.11.7", "utc_time": "y", "start_step": 5, "gpu_name": "A100",
         "device": "cpu"}
    assert environment_differences(a, b) == [{"key": "torch", "a": "2.13.0", "b": "2.12.0"},
                                             {"key": "gpu_name", "a": None, "b": "A100"}]
    assert environment_differences(a, dict(a)) == []
    assert environment_differences(None, None) == []
    assert environment_differences(a, None) == [
        {"key": "environment.json", "a": "present", "b": "missing"}]


def test_read_environment_drops_history_and_survives_junk(tmp_path: Path) -> None:
    assert read_environment(tmp_path) is None
    (tmp_path / "environment.json").write_text('{"torch": "1", "history": [{"torch": "0"}]}')
    assert read_environment(tmp_path) == {"torch": "1"}
    (tmp_path / "environment.json").write_text("{torn")
    assert read_environment(tmp_path) is None
    assert host_hash("a") != host_hash("b") and len(host_hash("a")) == 12
