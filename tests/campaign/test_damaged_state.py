"""Issue 13.4: a campaign dir with damaged or misplaced files resumes, or refuses with one clear
line, never a traceback: damaged manifest.json / plan.json are rebuilt from the plan and the run
dirs, a damaged newest checkpoint falls back to the older intact one (and the resumed run equals
an uninterrupted one), a file where a directory belongs (or the reverse) is refused before
anything is written, RETRAIN_CACHE naming a file is refused, a read-only campaign dir gives one
line.

One campaign (2 runs, 6 steps, checkpoints at 2, 4, 6) is trained once; every test works on a
copy. Resumes run in-process (CliRunner): nothing is left to train, or a few steps on the
in-process executor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_run_e2e import (
    CONDITIONS,
    REPO,
    _env,
    cli,
    manifest,
    rows,
    show,
    strip_timing,
    write_campaign,
)
from typer.testing import CliRunner, Result

from retrain.cli.app import app

pytestmark = pytest.mark.slow

RUNS = ("grpo+none_s1", "maxrl+none_s1")
STEPS = 6


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("damaged")
    spec = write_campaign(tmp / "c.toml", max_steps=STEPS, save_every=2, conditions=CONDITIONS[:2],
                          squeeze={"enabled": False})
    text = spec.read_text().replace("save_every = 2", "save_every = 2\nkeep_checkpoints = 3")
    spec.write_text(text)
    out = tmp / "camp"
    res = cli("campaign", "run", spec, "--out", out, "--no-console-output")
    assert res.returncode == 0, show(res)
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "camp"
    shutil.copytree(finished, out)
    return out


def resume(out: Path, *extra: str) -> Result:
    return CliRunner().invoke(app, ["campaign", "resume", str(out), *extra])


def metrics(out: Path, run: str) -> list[dict[str, Any]]:
    return [strip_timing(r) for r in rows(out / "runs" / run / "metrics.jsonl")]


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("content", ["", "{", "[]", '{"runs": 3}', '{"runs": {"x": {"status": "odd"}}}'])
def test_a_damaged_manifest_is_rebuilt_from_the_plan_and_the_run_dirs(
        finished: Path, tmp_path: Path, content: str) -> None:
    out = copy_of(finished, tmp_path)
    before = {run: metrics(out, run) for run in RUNS}
    (out / "manifest.json").write_text(content)
    result = resume(out)
    assert result.exit_code == 0, result.output
    assert "manifest.json was damaged; rebuilt it" in result.stderr
    m = manifest(out)
    assert m["status"] == "done"
    for run in RUNS:
        assert m["runs"][run]["status"] == "done" and m["runs"][run]["step"] == STEPS
        assert metrics(out, run) == before[run]  # nothing was trained again


@pytest.mark.parametrize("content", ["", "not json", "[1]"])
def test_a_damaged_plan_is_rebuilt_from_the_run_dirs(finished: Path, tmp_path: Path,
                                                      content: str) -> None:
    out = copy_of(finished, tmp_path)
    good_plan = json.loads((out / "plan.json").read_text())
    (out / "plan.json").write_text(content)
    result = resume(out)
    assert result.exit_code == 0, result.output
    assert "plan.json is damaged" in result.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert plan["spec_hash"] == good_plan["spec_hash"]
    assert [r["name"] for r in plan["runs"]] == [r["name"] for r in good_plan["runs"]]
    assert all(manifest(out)["runs"][run]["status"] == "done" for run in RUNS)


def test_a_damaged_newest_checkpoint_resumes_from_the_older_one_bit_identically(
        finished: Path, tmp_path: Path) -> None:
    """Rewind run 1 to "killed after step 5" (checkpoints 2 and 4), damage checkpoint 4: resume
    goes back to step 2 and the finished run equals the uninterrupted one, row for row."""
    out = copy_of(finished, tmp_path)
    run = out / "runs" / RUNS[0]
    reference = metrics(out, RUNS[0])
    shutil.rmtree(run / "checkpoints" / "step_000006")
    shutil.rmtree(run / "adapter")
    (run / "summary.json").unlink()
    kept = [line for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["step"] <= 5]
    (run / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    (run / "checkpoints" / "step_000004" / "optimizer.pt").write_bytes(b"torn")
    (run / "checkpoints" / ".step_000006.tmp-zz").mkdir()  # a kill mid-checkpoint
    data = manifest(out)
    data["runs"][RUNS[0]].update(status="running", step=5)
    (out / "manifest.json").write_text(json.dumps(data))

    result = resume(out)
    assert result.exit_code == 0, result.output
    assert metrics(out, RUNS[0]) == reference
    assert manifest(out)["runs"][RUNS[0]]["status"] == "done"
    assert (run / "checkpoints" / ".damaged-step_000004").is_dir()
    assert not (run / "checkpoints" / ".step_000006.tmp-zz").exists()


@pytest.mark.parametrize(("where", "kind", "needle"), [
    ("runs", "file", "is a file where retrain needs a directory"),
    (f"runs/{RUNS[1]}", "file", "is a file where retrain needs a directory"),
    (f"runs/{RUNS[1]}/checkpoints", "file", "is a file where retrain needs a directory"),
    ("manifest.json", "dir", "is a directory where retrain writes a file"),
    (f"runs/{RUNS[1]}/metrics.jsonl", "dir", "is a directory where retrain writes a file"),
])
def test_something_in_the_way_is_refused_before_anything_is_written(
        finished: Path, tmp_path: Path, where: str, kind: str, needle: str) -> None:
    out = copy_of(finished, tmp_path)
    target = out / where
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    if kind == "file":
        target.write_text("in the way")
    else:
        target.mkdir()
    before = snapshot(out)
    one_line_error(resume(out), str(target), needle)
    assert snapshot(out) == before


def test_campaign_run_out_naming_a_file_is_refused(finished: Path, tmp_path: Path) -> None:
    spec = write_campaign(tmp_path / "c.toml", conditions=CONDITIONS[:1])
    target = tmp_path / "a_file"
    target.write_text("keep me")
    one_line_error(CliRunner().invoke(app, ["campaign", "run", str(spec), "--out", str(target)]),
                   str(target), "is a file")
    assert target.read_text() == "keep me"


def test_retrain_cache_naming_a_file_is_refused_before_writing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_campaign(tmp_path / "c.toml", conditions=CONDITIONS[:1])
    cache = tmp_path / "cache_file"
    cache.write_text("")
    monkeypatch.setenv("RETRAIN_CACHE", str(cache))
    out = tmp_path / "camp"
    one_line_error(CliRunner().invoke(app, ["campaign", "run", str(spec), "--out", str(out)]),
                   "RETRAIN_CACHE", "is a file")
    assert not out.exists()


def _as_other_user(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m retrain ARGS` as a user who may not write the campaign dir (root ignores
    permissions, so root drops to nobody)."""
    cmd = [sys.executable, "-m", "retrain", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot lose write permission")
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if subprocess.run([*drop, sys.executable, "-c", "pass"], check=False).returncode != 0:
            pytest.skip("this Python cannot be run as nobody: cannot lose write permission")
        cmd = [*drop, *cmd]
    env = {**_env(), "HOME": "/tmp", "RETRAIN_CACHE": os.environ.get("RETRAIN_CACHE", "")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_a_read_only_campaign_dir_gives_one_line_not_a_traceback(finished: Path) -> None:
    import tempfile

    # pytest's tmp dirs are private to their owner; this one must be readable by the other user
    parent = Path(tempfile.mkdtemp(prefix="retrain-ro-"))
    parent.chmod(0o755)
    out = copy_of(finished, parent)
    for path in [out, *out.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        before = snapshot(out)
        for args in (["campaign", "resume", out], ["analyze", "plot", out]):
            res = _as_other_user(*args)
            assert res.returncode == 2, show(res)
            assert "Traceback" not in res.stderr, show(res)
            err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
            assert len(err) == 1 and "Permission denied" in err[0], show(res)
            assert "use --out" in err[0] and str(out) in err[0], show(res)
        assert snapshot(out) == before
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(parent, ignore_errors=True)
