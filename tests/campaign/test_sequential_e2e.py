"""Sequential seeds end to end through the real CLI on the cached tiny model.

Three conditions whose gains are known without luck: `control` (lr = 0, the baseline) and
`control2` (another lr = 0 control) never change the adapter, so their gain is exactly 0 at
every seed; `hot` (lr = 0.5) wrecks the model within 4 steps, so its final greedy accuracy is 0
at every seed and its gain is minus the (seed-independent) initial accuracy. min_seeds 2,
max_seeds 4, seed_batch 1: looks at 2, 3, 4 seeds. `hot` differs by the same amount at both
seeds of the first look (z = -inf) and is decided there; `control2` equals the baseline and runs
to 4 seeds. 10 of the 12 potential runs train.

One campaign runs uninterrupted; another is stopped with Ctrl+C right after its first look and
resumed: it ends with the same looks, and no run that was done trains again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from test_run_e2e import _kill_all, cli, manifest, popen, show, steps, wait_for

pytestmark = pytest.mark.slow

STEPS = 4
CAMPAIGN = f"""\
[backend]
threads = 1

[training]
max_steps = {STEPS}
batch_size = 4
group_size = 4
save_every = 10

[eval]
size = 10
every = 0
samples = 0

[data]
eval_size = 50

[campaign]
seeds = [1]
seeds_policy = "until_decided"
min_seeds = 2
max_seeds = 4
seed_batch = 1

[[campaign.conditions]]
label = "control"
advantage_mode = "grpo"
"optimizer.lr" = 0.0

[[campaign.conditions]]
label = "control2"
advantage_mode = "maxrl"
"optimizer.lr" = 0.0

[[campaign.conditions]]
label = "hot"
advantage_mode = "grpo"
"optimizer.lr" = 0.5
"""
TRAINED = [f"{c}_s{s}" for c in ("control", "control2") for s in (1, 2, 3, 4)] + ["hot_s1", "hot_s2"]


def without_time(looks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in look.items() if k != "time"} for look in looks]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("seq_e2e")
    toml = tmp / "seq.toml"
    toml.write_text(CAMPAIGN)
    out = tmp / "out"
    res = cli("campaign", "run", toml, "--out", out, "--executor", "inprocess")
    return {"toml": toml, "out": out, "res": res}


def test_a_clearly_different_condition_stops_getting_seeds(uninterrupted: dict[str, Any]) -> None:
    out, res = uninterrupted["out"], uninterrupted["res"]
    assert res.returncode == 0, show(res)
    m = manifest(out)
    assert m["status"] == "done"
    assert sorted(n for n, r in m["runs"].items() if r["status"] == "done") == sorted(TRAINED)
    for name in ("hot_s3", "hot_s4"):
        assert m["runs"][name]["status"] == "skipped"
        assert m["runs"][name]["reason"] == "decided at look 1 (2 seeds): lower than baseline"
        assert not (out / "runs" / name).exists()
    for name in TRAINED:
        assert steps(out / "runs" / name) == list(range(STEPS + 1)), name
    seq = m["sequential"]
    assert seq["baseline"] == "control" and seq["looks_planned"] == [2, 3, 4]
    assert seq["measure"]["name"] == "eval_gain"
    looks = seq["looks"]
    assert [set(look["conditions"]) for look in looks] == [{"control2", "hot"}, {"control2"},
                                                           {"control2"}]
    hot = looks[0]["conditions"]["hot"]
    assert hot["decision"] == "lower than baseline" and hot["z"] == "-inf" and hot["mean_diff"] < 0
    assert looks[2]["conditions"]["control2"]["decision"] == "no difference found at max_seeds"
    assert looks[2]["conditions"]["control2"]["mean_diff"] == 0.0
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) == 12 and plan["seeds"] == [1, 2, 3, 4]
    assert plan["sequential"]["boundaries"] == seq["boundaries"]
    summary = (out / "summary.md").read_text()
    assert "## Sequential seeds" in summary
    assert "| 1 | 2 | 2.96 | hot | 2 |" in summary and "lower than baseline" in summary
    assert "look 1/3 at 2 seeds" in res.stderr  # each look is reported as it is taken


def test_ctrl_c_after_the_first_look_then_resume_continues_the_sequence(
        uninterrupted: dict[str, Any], tmp_path: Path) -> None:
    toml = tmp_path / "seq.toml"
    toml.write_text(CAMPAIGN)
    out = tmp_path / "out"
    log = tmp_path / "run.log"

    def first_look_taken() -> bool:
        try:
            return len(json.loads((out / "manifest.json").read_text())["sequential"]["looks"]) >= 1
        except (OSError, ValueError, KeyError, TypeError):
            return False

    proc = popen("campaign", "run", toml, "--out", out, "--executor", "inprocess", log=log)
    try:
        wait_for(first_look_taken, timeout=300, what="the first look", proc=proc, log=log)
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        _kill_all([proc.pid])
    assert code == 130, log.read_text(errors="replace")[-3000:]
    before = manifest(out)
    assert before["status"] == "interrupted"
    assert 1 <= len(before["sequential"]["looks"]) < 3
    assert before["runs"]["hot_s3"]["status"] == "skipped"
    assert any(r["status"] in ("pending", "interrupted") for r in before["runs"].values())

    res = cli("campaign", "resume", out)
    assert res.returncode == 0, show(res)
    after = manifest(out)
    assert after["status"] == "done"
    assert sorted(n for n, r in after["runs"].items() if r["status"] == "done") == sorted(TRAINED)
    for name, rec in before["runs"].items():
        if rec["status"] == "done":  # finished before the interrupt: never trained again
            assert after["runs"][name]["attempts"] == 1, (name, after["runs"][name])
    for name in TRAINED:
        assert steps(out / "runs" / name) == list(range(STEPS + 1)), name  # each step once
    assert without_time(after["sequential"]["looks"]) == without_time(
        manifest(uninterrupted["out"])["sequential"]["looks"])
