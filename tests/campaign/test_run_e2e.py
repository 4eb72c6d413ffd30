"""Campaigns end to end through the real CLI, on the cached tiny model, asserting on the files.

Every test writes a small campaign TOML into tmp_path (3 conditions x 1 seed, a few steps of
B=4 x G=4) and runs `python -m retrain campaign ...` in a subprocess (kill -9 and Ctrl+C need a
real process), or through CliRunner when nothing is trained. Covered: a full campaign and its
files, a failing run (reward plugin that raises) with retries, kill -9 then resume, one SIGINT
then resume, spec-change refusal and --force, auto-squeeze, and in-process vs pool giving the
same metrics.

Runs that must be stopped mid-way have 20 steps; the test polls metrics.jsonl and acts once a
run has logged step 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrain.cli.app import app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONDITIONS: tuple[dict[str, Any], ...] = (
    {"advantage_mode": "grpo"},
    {"advantage_mode": "maxrl"},
    {"advantage_mode": "rloo"},
)
RUNS = ("grpo+none_s1", "maxrl+none_s1", "rloo+none_s1")
# Keys that measure time, not what was computed: dropped before comparing executors.
TIMING_KEYS = ("step_time_s", "tokens_per_s", "bp_throughput")
# Steps of the runs that get killed or interrupted at step >= 2: a step takes ~0.2 s on a busy
# core, so the signal lands well before the run ends.
KILL_STEPS = 20

PLUGIN = Path(__file__).resolve().parent / "e2e_plugin.py"  # reward plugins (boom)


# --- helpers -----------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for plain ASCII
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def write_campaign(path: Path, *, max_steps: int = 3, save_every: int = 10,
                   conditions: Iterable[dict[str, Any]] = CONDITIONS, data: dict[str, Any] | None = None,
                   campaign: dict[str, Any] | None = None, squeeze: dict[str, Any] | None = None) -> Path:
    """A tiny campaign: default [model] (the cached tiny model), 1 thread per run, seed 1."""
    lines = ["[backend]", "threads = 1", "",
             "[training]", f"max_steps = {max_steps}", "batch_size = 4", "group_size = 4",
             f"save_every = {save_every}", "",
             "[eval]", "size = 10", "every = 0", "",
             "[data]", "eval_size = 50"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (data or {}).items()]
    if squeeze is not None:
        lines += ["", "[squeeze]", *[f"{k} = {_toml_value(v)}" for k, v in squeeze.items()]]
    lines += ["", "[campaign]", "seeds = [1]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (campaign or {}).items()]
    for cond in conditions:
        lines += ["", "[[campaign.conditions]]"]
        lines += [f"{json.dumps(k) if '.' in k else k} = {_toml_value(v)}" for k, v in cond.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)  # conftest set RETRAIN_CACHE (shared tiny model) and HF_HUB_OFFLINE
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="200",
               PYTHONUNBUFFERED="1")
    return env


def _cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "retrain", *map(str, args)]


def cli(*args: str | Path, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(*args), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def popen(*args: str | Path, log: Path, new_session: bool = False) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")  # noqa: SIM115 - closed by the OS when the test process ends
    return subprocess.Popen(_cmd(*args), cwd=REPO, env=_env(), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=new_session)


def show(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in rows(run_dir / "metrics.jsonl")]


def _safe_rows(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows of a run being written right now (a torn last line is skipped)."""
    out = []
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def last_trained_step(run_dir: Path) -> int:
    return max((int(r.get("step", 0)) for r in _safe_rows(run_dir)), default=0)


def wait_for(cond: Any, *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"campaign exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (Linux /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _kill_all(pids: Iterable[int]) -> None:
    for p in pids:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_all_done(out: Path, names: Iterable[str], max_steps: int) -> dict[str, Any]:
    m = manifest(out)
    assert m["status"] == "done", m
    for name in names:
        rec = m["runs"][name]
        assert rec["status"] == "done", (name, rec)
        run_dir = out / "runs" / name
        # each step exactly once: the initial eval row (step 0), then one row per trained step
        assert steps(run_dir) == list(range(max_steps + 1)), name
        assert [r["step"] for r in rows(run_dir / "emergence" / "steps.jsonl")] == list(range(1, max_steps + 1)), name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "done" and summary["steps_done"] == max_steps, summary
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file(), name
    return m


def strip_timing(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not (k.endswith("_time_s") or k in TIMING_KEYS)}


# --- the campaign most tests share -------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3 conditions x 1 seed x 3 steps, in-process executor, with auto-squeeze; run once."""
    tmp = tmp_path_factory.mktemp("base")
    toml = write_campaign(tmp / "tiny.toml", squeeze={"min_variance_retention": 0.9})
    out = tmp / "out"
    res = cli("campaign", "run", toml, "--out", out, "--executor", "inprocess")
    return {"toml": toml, "out": out, "res": res}


def test_three_run_campaign_end_to_end(base: dict[str, Any]) -> None:
    from safetensors.numpy import load_file

    from retrain.sinks.contract import validate_row

    out, res = base["out"], base["res"]
    assert res.returncode == 0, show(res)
    # no library warning reaches the user's console (it once printed one per step and eval)
    assert not re.findall(r"\w+Warning\b.*", res.stderr + res.stdout), show(res)
    for name in ("campaign.toml", "plan.json", "manifest.json", "summary.md"):
        assert (out / name).is_file(), name
    assert (out / "campaign.toml").read_text() == base["toml"].read_text()
    plan = json.loads((out / "plan.json").read_text())
    assert [r["name"] for r in plan["runs"]] == list(RUNS)

    m = assert_all_done(out, RUNS, max_steps=3)
    assert m["spec_hash"] == plan["spec_hash"]
    assert list(m["runs"]) == list(RUNS)
    for name, rec in m["runs"].items():
        assert rec["attempts"] == 1, (name, rec)
        assert rec["started"] and rec["ended"] and rec["started"] <= rec["ended"], rec
        assert isinstance(rec["wall_time_s"], float) and rec["wall_time_s"] > 0, rec
        assert rec["error"] is None and rec["step"] == rec["max_steps"] == 3, rec
        assert "eval_accuracy" in (rec["final_eval"] or {}), rec

        run_dir = out / "runs" / name
        trained = [r for r in rows(run_dir / "metrics.jsonl") if r["step"] > 0]
        for r in trained:
            assert validate_row(r) == [], (name, r["step"], validate_row(r))
            assert r["condition"] == rec["condition"]
        assert "eval_accuracy" in trained[-1]  # the final eval is merged into the last step's row
        # LoRA B starts at zero: a trained adapter has non-zero B matrices
        weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
        b = [w for k, w in weights.items() if "lora_B" in k]
        assert b and all(abs(w).max() > 0 for w in b), name

    summary = (out / "summary.md").read_text()
    for cond in ("grpo+none", "maxrl+none", "rloo+none"):
        assert f"| {cond} |" in summary, summary
    assert m["comparison"] and [r["condition"] for r in m["comparison"]] == ["grpo+none", "maxrl+none", "rloo+none"]

    runner = CliRunner()
    st = runner.invoke(app, ["campaign", "status", str(out)], env={"COLUMNS": "200"})
    assert st.exit_code == 0, st.output
    for name in RUNS:
        assert name in st.output, st.output
    cmp = runner.invoke(app, ["analyze", "compare", str(out), "--format", "json"])
    assert cmp.exit_code == 0, cmp.output
    table = json.loads(cmp.stdout)
    assert [r["condition"] for r in table] == ["grpo+none", "maxrl+none", "rloo+none"]
    assert all(r["n"] == 1 and r["runs_done"] == 1 for r in table), table


@pytest.mark.parametrize("flag", ["", "--silent", "--no-console-output"])
def test_console_modes_of_a_finished_campaign(base: dict[str, Any], tmp_path: Path, flag: str) -> None:
    # Re-running a finished campaign trains nothing but reports again: the comparison table is
    # shown by default, not with --silent, and nothing at all is printed with --no-console-output.
    out = tmp_path / "copy"
    shutil.copytree(base["out"], out)
    res = cli("campaign", "resume", out, *([flag] if flag else []))
    assert res.returncode == 0, show(res)
    if flag == "--no-console-output":
        assert res.stdout == "" and res.stderr == "", show(res)
    elif flag == "--silent":
        assert "conditions:" not in res.stdout, show(res)
    else:
        assert "conditions:" in res.stdout, show(res)
    assert (out / "summary.md").read_text().startswith("# Campaign")


def test_auto_squeeze_recorded(base: dict[str, Any]) -> None:
    out, res = base["out"], base["res"]
    assert res.returncode == 0, show(res)
    # no library warning reaches the user's console (it once printed one per step and eval)
    assert not re.findall(r"\w+Warning\b.*", res.stderr + res.stdout), show(res)
    sq = manifest(out)["squeeze"]
    assert sq is not None and "error" not in sq, sq
    assert sq["run"] == RUNS[0]  # the first finished run
    assert sq["report"] == "squeeze/squeeze.json"
    for key in ("squeeze/recommended_rank", "squeeze/source_rank", "squeeze/num_layers",
                "squeeze/min_variance_retention"):
        assert key in sq, (key, sq)
    assert sq["squeeze/source_rank"] == 16  # the default LoRA rank
    assert 1 <= sq["squeeze/recommended_rank"] <= 16
    assert sq["squeeze/min_variance_retention"] == pytest.approx(0.9)
    assert (out / "squeeze" / "squeeze.json").is_file()
    assert "LoRA-Squeeze" in (out / "summary.md").read_text()


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A campaign whose first run's reward plugin raises; max_retries = 1."""
    tmp = tmp_path_factory.mktemp("failing")
    toml = write_campaign(tmp / "fail.toml", campaign={"max_retries": 1}, conditions=(
        {"label": "boom", "advantage_mode": "grpo", "data.reward": f"{PLUGIN}:boom"},  # fails first
        {"advantage_mode": "maxrl"},
        {"advantage_mode": "rloo"},
    ))
    out = tmp / "out"
    return {"out": out, "res": cli("campaign", "run", toml, "--out", out)}


def test_failing_run_is_isolated_retried_and_reported(failing: dict[str, Any]) -> None:
    out, res = failing["out"], failing["res"]
    assert res.returncode == 1, show(res)

    m = manifest(out)
    assert m["status"] == "failed"
    bad = m["runs"]["boom_s1"]
    assert bad["status"] == "failed", bad
    assert "boom" in bad["error"] and "RuntimeError" in bad["error"], bad
    assert bad["attempts"] == 2, bad  # max_retries = 1: one retry
    assert bad["ended"] is not None
    for name in ("maxrl+none_s1", "rloo+none_s1"):
        rec = m["runs"][name]
        assert rec["status"] == "done" and rec["attempts"] == 1, (name, rec)
        assert steps(out / "runs" / name) == [0, 1, 2, 3]
    assert json.loads((out / "runs" / "boom_s1" / "summary.json").read_text())["status"] == "failed"
    summary = (out / "summary.md").read_text()
    assert "## Failed runs" in summary and "`boom_s1` (attempts 2)" in summary, summary
    assert "boom" in summary.split("## Failed runs", 1)[1]
    assert "boom_s1" in res.stderr + res.stdout  # said on the console too


def test_reward_plugin_reuses_the_cached_tiny_model(failing: dict[str, Any]) -> None:
    """A custom reward does not change the warm-up data, so the run should load the same cached
    tiny model as its sibling runs instead of building (~40 s on 2 cores) another one."""
    runs = failing["out"] / "runs"
    model = {n: json.loads((runs / n / "summary.json").read_text())["model"]
             for n in ("boom_s1", "maxrl+none_s1")}
    assert model["boom_s1"] == model["maxrl+none_s1"], model


@pytest.mark.parametrize("victims", ["campaign", "process_group"])
def test_kill9_then_resume_each_step_once(tmp_path: Path, victims: str) -> None:
    """kill -9 mid-run (pool executor, 2 workers, checkpoint every step), then resume.

    victims=campaign: only the campaign process dies; its workers notice and stop after their
    step. victims=process_group: workers die too, possibly mid-step (after metrics, before the
    checkpoint), so resume must drop rows newer than the checkpoint.
    """
    toml = write_campaign(tmp_path / "kill.toml", max_steps=KILL_STEPS, save_every=1)
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    proc = subprocess.Popen(_cmd("campaign", "run", toml, "--out", out, "--executor", "pool",
                                 "--set", "campaign.max_workers=2"),
                            cwd=REPO, env=_env(), stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    kids: list[int] = []
    try:
        wait_for(lambda: any(last_trained_step(out / "runs" / n) >= 2 for n in RUNS), timeout=240,
                 what="a run reaching step 2", proc=proc, log=log)
        kids = _children(proc.pid)
        assert kids, "the pool executor should have worker processes"
        if victims == "campaign":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        # workers do not outlive the campaign process for long: they stop after their step
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in kids if _alive(p)], "worker processes outlived the killed campaign"
    finally:
        _kill_all([proc.pid, *kids])

    before = manifest(out)
    assert before["status"] == "running"
    assert any(rec["status"] != "done" for rec in before["runs"].values()), "kill landed after the end"
    assert (out / "STOP").exists() is False

    res = cli("campaign", "resume", out)
    assert res.returncode == 0, show(res)
    m = assert_all_done(out, RUNS, max_steps=KILL_STEPS)
    for name, rec in m["runs"].items():
        assert rec["step"] == KILL_STEPS and rec["error"] is None, (name, rec)
        if before["runs"][name]["status"] == "done":
            assert rec["attempts"] == 1, (name, rec)
    interrupted = [n for n, r in before["runs"].items() if r["status"] == "running"]
    assert interrupted, before
    for name in interrupted:
        assert m["runs"][name]["attempts"] == before["runs"][name]["attempts"] + 1


def signal_at_step_2(args: list[str | Path], run_dir: Path, log: Path, send: Any,
                     new_session: bool = False) -> int:
    """Start `retrain ARGS`, call send(proc) once run_dir has logged step 2; the exit code."""
    proc = popen(*args, log=log, new_session=new_session)
    try:
        wait_for(lambda: last_trained_step(run_dir) >= 2, timeout=240, what="step 2 of the first run",
                 proc=proc, log=log)
        send(proc)
        return proc.wait(timeout=120)
    finally:
        _kill_all([proc.pid])


def test_sigint_interrupts_then_resume_completes(tmp_path: Path) -> None:
    """One Ctrl+C: the running run checkpoints after its step, the campaign exits 130."""
    # save_every = 0: the only checkpoint of the interrupted run is the one the stop writes
    toml = write_campaign(tmp_path / "int.toml", max_steps=KILL_STEPS, save_every=0)
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    first = out / "runs" / RUNS[0]
    code = signal_at_step_2(["campaign", "run", toml, "--out", out, "--executor", "inprocess"],
                            first, log, lambda proc: os.kill(proc.pid, signal.SIGINT))
    assert code == 130, log.read_text(errors="replace")[-3000:]

    m = manifest(out)
    assert m["status"] == "interrupted", m
    rec = m["runs"][RUNS[0]]
    assert rec["status"] == "interrupted", rec
    k = json.loads((first / "summary.json").read_text())["steps_done"]
    assert 2 <= k < KILL_STEPS
    assert steps(first) == list(range(k + 1))
    ckpts = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert ckpts == [f"step_{k:06d}"], ckpts
    assert [m["runs"][n]["status"] for n in RUNS[1:]] == ["pending", "pending"]
    assert not (out / "STOP").exists()
    rows_before = rows(first / "metrics.jsonl")

    res = cli("campaign", "resume", out)
    assert res.returncode == 0, show(res)
    m = assert_all_done(out, RUNS, max_steps=KILL_STEPS)
    assert m["runs"][RUNS[0]]["attempts"] == 2
    assert rows(first / "metrics.jsonl")[: k + 1] == rows_before  # resumed, not restarted


def _mark_rows(run_dir: Path) -> None:
    """Tag every metrics row, to tell a restart (rows rewritten) from a resume (rows kept)."""
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps({**r, "old_row": True}) + "\n" for r in rows(path)))


def test_spec_change_refused_then_forced(base: dict[str, Any], tmp_path: Path) -> None:
    assert base["res"].returncode == 0, show(base["res"])
    out = tmp_path / "out"
    shutil.copytree(base["out"], out)
    for name in RUNS:
        _mark_rows(out / "runs" / name)
    plan_before = (out / "plan.json").read_text()

    refused = CliRunner().invoke(app, ["campaign", "run", str(base["toml"]), "--set", "training.max_steps=4",
                                       "--out", str(out), "--no-console-output"])
    assert refused.exit_code == 2, refused.output
    assert "training.max_steps: 3 -> 4" in refused.output, refused.output
    assert "--force" in refused.output
    assert (out / "plan.json").read_text() == plan_before  # nothing touched

    res = cli("campaign", "run", base["toml"], "--set", "training.max_steps=4", "--out", out, "--force")
    assert res.returncode == 0, show(res)
    m = assert_all_done(out, RUNS, max_steps=4)
    for name in RUNS:
        assert m["runs"][name]["attempts"] == 1  # a fresh record for a changed run
        assert not any(r.get("old_row") for r in rows(out / "runs" / name / "metrics.jsonl")), \
            f"{name} resumed from the old spec's checkpoint instead of restarting"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["sets"] == ["training.max_steps=4"] and plan["spec_hash"] == m["spec_hash"]

    # later resumes accept the forced spec (and have nothing left to do)
    again = cli("campaign", "resume", out)
    assert again.returncode == 0, show(again)
    assert manifest(out)["runs"] == m["runs"]


def test_inprocess_and_pool_give_identical_metrics(base: dict[str, Any], tmp_path: Path) -> None:
    """Runs trained alone give the same bits whichever process trains them (the base campaign
    itself trained packed: campaign.pack_runs, tests/executors/test_packed.py)."""
    assert base["res"].returncode == 0, show(base["res"])
    outs = {}
    for executor in ("inprocess", "pool"):
        outs[executor] = out = tmp_path / executor
        res = cli("campaign", "run", base["toml"], "--out", out, "--executor", executor,
                  "--set", "campaign.max_workers=2", "--no-console-output")
        assert res.returncode == 0, show(res)
        assert_all_done(out, RUNS, max_steps=3)
    for name in RUNS:
        a = [strip_timing(r) for r in rows(outs["inprocess"] / "runs" / name / "metrics.jsonl")]
        b = [strip_timing(r) for r in rows(outs["pool"] / "runs" / name / "metrics.jsonl")]
        assert a == b, name


@pytest.fixture(scope="module")
def edited(base: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The base campaign, then its file edited (rloo gets lora.rank = 8) and re-run with --force."""
    assert base["res"].returncode == 0, show(base["res"])
    tmp = tmp_path_factory.mktemp("edited")
    out = tmp / "out"
    shutil.copytree(base["out"], out)
    for name in RUNS:
        _mark_rows(out / "runs" / name)
    toml = write_campaign(tmp / "tiny.toml", squeeze={"min_variance_retention": 0.9},
                          conditions=(*CONDITIONS[:2], {"advantage_mode": "rloo", "lora.rank": 8}))
    res = cli("campaign", "run", toml, "--out", out, "--force")
    return {"out": out, "res": res, "runs": (*RUNS[:2], "rloo+none~lora.rank=8_s1")}


def test_force_with_edited_condition_keeps_unchanged_runs(edited: dict[str, Any]) -> None:
    out, res = edited["out"], edited["res"]
    assert res.returncode == 0, show(res)
    m = assert_all_done(out, edited["runs"], max_steps=3)
    assert list(m["runs"]) == list(edited["runs"])
    for name in RUNS[:2]:  # unchanged: not retrained
        assert m["runs"][name]["attempts"] == 1
        assert all(r.get("old_row") for r in rows(out / "runs" / name / "metrics.jsonl")), name
    new = edited["runs"][2]
    assert not any(r.get("old_row") for r in rows(out / "runs" / new / "metrics.jsonl"))
    # a later resume rebuilds the spec from the stored campaign.toml: it must be the new one
    again = cli("campaign", "resume", out)
    assert again.returncode == 0, show(again)


def test_force_removed_run_is_not_compared(edited: dict[str, Any]) -> None:
    out = edited["out"]
    assert edited["res"].returncode == 0, show(edited["res"])
    conditions = [r["condition"] for r in manifest(out)["comparison"]]
    assert conditions == ["grpo+none", "maxrl+none", "rloo+none~lora.rank=8"], conditions
    assert "| rloo+none |" not in (out / "summary.md").read_text()


def test_force_then_kill_still_restarts_changed_runs(base: dict[str, Any], tmp_path: Path) -> None:
    """--force with a changed max_steps, kill -9 while the first changed run trains, resume:
    the runs that had not started yet must still restart from scratch, not from the checkpoint
    their old spec left (step 3 of 3)."""
    assert base["res"].returncode == 0, show(base["res"])
    out = tmp_path / "out"
    shutil.copytree(base["out"], out)
    for name in RUNS:
        _mark_rows(out / "runs" / name)
    log = tmp_path / "run.log"
    proc = popen("campaign", "run", base["toml"], "--out", out, "--force", "--executor", "inprocess",
                 "--set", f"training.max_steps={KILL_STEPS}", log=log)
    first = out / "runs" / RUNS[0]
    try:
        wait_for(lambda: any(r["step"] >= 2 and not r.get("old_row") for r in _safe_rows(first)),
                 timeout=240, what="step 2 of the restarted first run", proc=proc, log=log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_all([proc.pid])
    assert manifest(out)["runs"][RUNS[1]]["status"] == "pending"

    res = cli("campaign", "resume", out)
    assert res.returncode == 0, show(res)
    assert_all_done(out, RUNS, max_steps=KILL_STEPS)
    for name in RUNS:
        assert not any(r.get("old_row") for r in rows(out / "runs" / name / "metrics.jsonl")), \
            f"{name} continued from the checkpoint of the old spec"



def test_tampered_manifest_run_dir_never_touches_data_outside_the_campaign(tmp_path: Path) -> None:
    """Issue 13.1: run dirs come from the plan; a manifest pointing a run at ../victim is ignored."""
    spec = write_campaign(tmp_path / "c.toml", max_steps=2, conditions=CONDITIONS[:1])
    out = tmp_path / "camp"
    res = cli("campaign", "run", spec, "--out", out, "--no-console-output")
    assert res.returncode == 0, show(res)
    victim = tmp_path / "victim"
    for sub in ("checkpoints/step_000001", "adapter"):
        (victim / sub).mkdir(parents=True)
        (victim / sub / "keep.txt").write_text("precious")
    (victim / "metrics.jsonl").write_text("precious\n")
    data = manifest(out)
    data["runs"][RUNS[0]].update(run_dir="../../victim", status="pending")
    (out / "manifest.json").write_text(json.dumps(data))
    res = cli("campaign", "resume", out, "--no-console-output")
    assert res.returncode == 0, show(res)
    assert (victim / "checkpoints" / "step_000001" / "keep.txt").read_text() == "precious"
    assert (victim / "adapter" / "keep.txt").read_text() == "precious"
    assert (victim / "metrics.jsonl").read_text() == "precious\n"
    assert manifest(out)["runs"][RUNS[0]]["run_dir"] == f"runs/{RUNS[0]}"
    assert (out / "runs" / RUNS[0] / "adapter").is_dir()


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "..", ".hidden", "a/b"])
def test_campaign_name_must_stay_a_plain_directory_name(tmp_path: Path, name: str) -> None:
    spec = write_campaign(tmp_path / "c.toml", conditions=CONDITIONS[:1], campaign={"name": name})
    result = CliRunner().invoke(app, ["campaign", "plan", str(spec)])
    assert result.exit_code == 2
    assert "campaign.name" in result.output and "Traceback" not in result.output


def test_sigterm_to_the_process_group_interrupts_runs_not_fails_them(tmp_path: Path) -> None:
    """Issue 13.6: `kill -TERM -<pgid>` (a scheduler stopping a job) reaches the pool workers too;
    their runs must end `interrupted` with a summary, and resume must finish them."""
    toml = write_campaign(tmp_path / "term.toml", max_steps=KILL_STEPS, save_every=0,
                          campaign={"max_workers": 2, "executor": "pool"})
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    first = out / "runs" / RUNS[0]
    code = signal_at_step_2(["campaign", "run", toml, "--out", out], first, log,
                            lambda proc: os.killpg(proc.pid, signal.SIGTERM), new_session=True)
    assert code != 0, log.read_text(errors="replace")[-3000:]
    m = manifest(out)
    statuses = {n: r["status"] for n, r in m["runs"].items()}
    assert "failed" not in statuses.values(), (statuses, log.read_text(errors="replace")[-3000:])
    assert statuses[RUNS[0]] == "interrupted", statuses
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["steps_done"] < KILL_STEPS
    res = cli("campaign", "resume", out)
    assert res.returncode == 0, show(res)
    assert_all_done(out, RUNS, max_steps=KILL_STEPS)


AUDIT_CONDITIONS: tuple[dict[str, Any], ...] = (
    {"advantage_mode": "maxrl", "transform_mode": "gtpo"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo_hicra"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo_sepa"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo", "optimizer.lr": 0.0},
)


def test_audit_flags_what_did_not_happen_and_nothing_else(tmp_path: Path) -> None:
    """The demo's situation in small: on arithmetic no planning token occurs, so HICRA's runs equal
    GTPO's; an lr = 0 control keeps a zero LoRA delta; GTPO and SEPA act and get no finding."""
    toml = write_campaign(tmp_path / "audit.toml", conditions=AUDIT_CONDITIONS)
    toml.write_text(toml.read_text().replace("seeds = [1]", "seeds = [1, 2]"))
    out = tmp_path / "out"
    res = cli("campaign", "run", toml, "--out", out, "--executor", "inprocess")
    assert res.returncode == 0, show(res)
    control = "maxrl+gtpo~optimizer.lr=0.0"
    summary = (out / "summary.md").read_text()
    section = summary.split("## Intervention audit", 1)[1].split("\n## ", 1)[0]
    assert "identical to maxrl+gtpo: every logged metric is equal at every step on 2 of 2" in section
    assert "HICRA never acted on 2 seeds: no planning token occurred" in section
    assert "the trainable weights did not change on 2 of 2 seeds (optimizer.lr is 0)" in section
    assert "No finding: maxrl+gtpo, maxrl+gtpo_sepa." in section
    kinds = {(f["condition"], f["kind"]) for f in manifest(out)["audit"]}
    assert kinds == {("maxrl+gtpo_hicra", "identical"), ("maxrl+gtpo_hicra", "never_acted"),
                     (control, "unchanged")}
    assert "intervention audit" in res.stdout and "HICRA never acted" in res.stdout
    res = CliRunner().invoke(app, ["analyze", "audit", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert {(f["condition"], f["kind"]) for f in json.loads(res.output)["findings"]} == kinds
