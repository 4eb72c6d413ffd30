"""Packed runs (executors/packed.py, backend/local/pack.py): which runs share a pack, and, through
the real CLI on the cached tiny model, that a pack is reproducible, isolates a failing run and
resumes after kill -9 with every step trained exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from retrain.config.load import build_config
from retrain.executors.packed import pack_key, plan_packs

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "campaign" / "e2e_plugin.py"  # boom: a reward that raises
RUNS = ("grpo+none_s1", "maxrl+gtpo_s1", "rloo+none_s1")
TIMING = ("step_time_s", "tokens_per_s", "bp_throughput")


def cfg(**sections: Any) -> Any:
    return build_config(dict(sections), source="test")[0]


# --- which runs share a pack ------------------------------------------------------------------

def test_runs_differing_in_adapter_shape_or_model_go_to_separate_packs() -> None:
    base = cfg()
    configs = [
        ("a", base),
        ("b", cfg(algorithm={"advantage_mode": "maxrl"}, training={"seed": 7})),  # same shape
        ("c", cfg(lora={"rank": 8})),  # another rank: another pack
        ("d", cfg(lora={"alpha": 64.0})),  # alpha is per adapter: packs with a and b
        ("e", cfg(lora={"dropout": 0.1})),  # dropout is not applied in a pack: alone
        ("f", cfg(lora={"rank": 8}, optimizer={"lr": 1e-3})),
        ("g", cfg(model={"name": "small"})),  # another model
    ]
    assert pack_key(configs[4][1]) is None
    assert plan_packs(configs) == [["a", "b", "d"], ["c", "f"], ["g"], ["e"]]
    assert plan_packs(configs, pack_size=2) == [["a", "b"], ["d"], ["c", "f"], ["g"], ["e"]]


def test_multi_phase_runs_and_other_backends_train_alone() -> None:
    phased = cfg(training={"max_steps": 4},
                 phases=[{"name": "p1", "steps": 2}, {"name": "p2", "steps": 2}])
    assert pack_key(phased) is None
    assert pack_key(cfg(backend={"name": "vllm"})) is None


# --- end to end through the CLI -----------------------------------------------------------------

def write_campaign(path: Path, *, max_steps: int = 3, save_every: int = 10,
                   reward: str | None = None, workers: int = 1) -> Path:
    """3 runs in one pack (workers = 1: in the campaign process; 2: the pool's workers train
    packs of 2 and 1 runs)."""
    lines = ["[backend]", "threads = 1", "",
             "[training]", f"max_steps = {max_steps}", "batch_size = 4", "group_size = 4",
             f"save_every = {save_every}", "", "[eval]", "size = 10", "every = 0", "",
             "[data]", "eval_size = 50", "", "[campaign]", "seeds = [1]", "pack_runs = true",
             f"max_workers = {workers}", "threads_per_worker = 1"]
    conds = [{"advantage_mode": "grpo"}, {"advantage_mode": "maxrl", "transform_mode": "gtpo"},
             {"advantage_mode": "rloo"}]
    if reward:
        conds[0] = {"label": "boom", "advantage_mode": "grpo", "data.reward": reward}
    for c in conds:
        lines += ["", "[[campaign.conditions]]", *[f"{json.dumps(k) if '.' in k else k} = {json.dumps(v)}"
                                                   for k, v in c.items()]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1"}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "retrain", *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=420, check=False)


def rows(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return out


def untimed(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not (k.endswith("_time_s") or k in TIMING)}
            for r in rows(run_dir / "metrics.jsonl")]


def start_until_step(toml: Path, out: Path, run: str, step: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`retrain campaign run` in a subprocess, returned once `run` has logged `step`."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the test process ends
    proc = subprocess.Popen([sys.executable, "-m", "retrain", "campaign", "run", str(toml), "--out",
                             str(out)], cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while max((r.get("step", 0) for r in rows(out / "runs" / run / "metrics.jsonl")), default=0) < step:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < 240, f"{run} did not reach step {step}"
        time.sleep(0.02)
    return proc


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def packed_twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("packed")
    toml = write_campaign(tmp / "pack.toml")
    outs = [tmp / "first", tmp / "second"]
    return {"toml": toml, "outs": outs, "res": [cli("campaign", "run", toml, "--out", o) for o in outs]}


def test_a_pack_trained_twice_gives_every_run_the_same_metrics(packed_twice: dict[str, Any]) -> None:
    for res in packed_twice["res"]:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    first, second = packed_twice["outs"]
    plan = json.loads((first / "plan.json").read_text())
    assert plan["packs"] == [list(RUNS)]
    for name in RUNS:
        a, b = untimed(first / "runs" / name), untimed(second / "runs" / name)
        assert [r["step"] for r in a] == [0, 1, 2, 3]
        assert a == b, name
        assert (first / "runs" / name / "adapter" / "adapter_model.safetensors").read_bytes() == \
            (second / "runs" / name / "adapter" / "adapter_model.safetensors").read_bytes()
    # three runs, three different learning signals: the pack did not mix up adapters
    finals = {n: untimed(first / "runs" / n)[-1]["loss"] for n in RUNS}
    assert len(set(finals.values())) == 3, finals


def test_a_failing_run_leaves_the_pack_and_the_others_finish(tmp_path: Path) -> None:
    toml = write_campaign(tmp_path / "boom.toml", reward=f"{PLUGIN}:boom")
    out = tmp_path / "out"
    res = cli("campaign", "run", toml, "--out", out)
    assert res.returncode == 1, res.stdout[-2000:]
    runs = manifest(out)["runs"]
    assert runs["boom_s1"]["status"] == "failed" and "boom" in runs["boom_s1"]["error"]
    for name in RUNS[1:]:
        assert runs[name]["status"] == "done", runs[name]
        assert [r["step"] for r in rows(out / "runs" / name / "metrics.jsonl")] == [0, 1, 2, 3]


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_mid_pack_then_resume_trains_each_step_once(tmp_path: Path, workers: int) -> None:
    """kill -9 of the campaign process: with workers = 2 the pool's workers (each training a
    pack) notice their parent died and stop after their step."""
    steps = 20
    toml = write_campaign(tmp_path / "kill.toml", max_steps=steps, save_every=1, workers=workers)
    out = tmp_path / "out"
    proc = start_until_step(toml, out, RUNS[0], 3, tmp_path / "log")
    kids = children(proc.pid)
    assert len(kids) >= (2 if workers > 1 else 0), kids  # pool workers (and a resource tracker)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t_kill = time.monotonic()
    while any(alive(k) for k in kids):
        assert time.monotonic() - t_kill < 60, "orphaned workers did not stop"
        time.sleep(0.1)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["packs"] == ([list(RUNS)] if workers == 1 else [list(RUNS[:2]), [RUNS[2]]])
    killed_at = {n: max((r["step"] for r in rows(out / "runs" / n / "metrics.jsonl")), default=0)
                 for n in RUNS}
    assert all(s < steps for s in killed_at.values()), killed_at
    res = cli("campaign", "resume", out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in RUNS:
        assert [r["step"] for r in rows(out / "runs" / name / "metrics.jsonl")] == list(range(steps + 1)), name
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["status"] == "done" and summary["steps_done"] == steps
        assert manifest(out)["runs"][name]["status"] == "done"


def test_ctrl_c_mid_pack_then_resume_equals_the_uninterrupted_pack(tmp_path: Path) -> None:
    """A stop request ends every run of the pack after the same step (PackStopFlag), so the
    resumed pack forms the same batches as an uninterrupted one: the same bits."""
    steps = 12
    toml = write_campaign(tmp_path / "int.toml", max_steps=steps, save_every=0)
    whole = tmp_path / "whole"
    assert cli("campaign", "run", toml, "--out", whole).returncode == 0
    out = tmp_path / "out"
    proc = start_until_step(toml, out, RUNS[1], 2, tmp_path / "log")
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) != 0
    stopped = {n: json.loads((out / "runs" / n / "summary.json").read_text())["steps_done"] for n in RUNS}
    assert len(set(stopped.values())) == 1 and 2 <= stopped[RUNS[0]] < steps, stopped
    res = cli("campaign", "resume", out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in RUNS:
        assert untimed(out / "runs" / name) == untimed(whole / "runs" / name), name
