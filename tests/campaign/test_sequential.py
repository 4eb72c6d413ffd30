"""Sequential seeds (`seeds_policy = "until_decided"`) in the campaign runner, without training:
a fake executor writes each run dir as the trainer would (summary.json with the initial and final
eval, metrics.jsonl) with a gain chosen per condition and seed, so every look's numbers are known.

The campaign: baseline grpo+none, maxrl+none clearly better (Δ gain ≈ +0.30 at every seed),
rloo+none equal to the baseline up to noise; seeds [1, 2] given, min_seeds 3, max_seeds 6,
seed_batch 1 → seeds 1..6 (3..6 derived), looks at 3, 4, 5, 6 seeds. Expected: maxrl+none is
decided at look 1 (its seeds 4..6 are skipped), rloo+none runs to 6 seeds ("no difference
found"), 15 of the 18 potential runs train.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrain.campaign import sequential
from retrain.campaign.campaign_dir import prepare
from retrain.campaign.grid import CampaignSpec, load_campaign
from retrain.campaign.runner import CampaignRunner
from retrain.cli.app import app
from retrain.errors import ResumeError
from retrain.executors.base import RunOutcome, RunTask

BASE_GAIN = {1: 0.10, 2: 0.12, 3: 0.08, 4: 0.11, 5: 0.09, 6: 0.10}
# Δ vs the baseline per seed: maxrl 0.30, 0.31, 0.29 at seeds 1..3 → mean 0.30, sd 0.01,
# t = 0.30 / (0.01 / √3) = 51.96 with 2 df: two-sided p = 3.70e-4, z = 3.56 >= 2.963 (the first
# boundary): decided.
MAXRL_DIFF = {1: 0.30, 2: 0.31, 3: 0.29, 4: 0.30, 5: 0.30, 6: 0.30}
# rloo: Δ 0.01, −0.02, 0.015, −0.005, 0.0, 0.01 → |z| < 1 at every look.
RLOO_DIFF = {1: 0.01, 2: -0.02, 3: 0.015, 4: -0.005, 5: 0.0, 6: 0.01}
CONDS = ("grpo+none", "maxrl+none", "rloo+none")
TRAINED = ([f"{c}_s{s}" for c in CONDS for s in (1, 2, 3)]
           + [f"{c}_s{s}" for s in (4, 5, 6) for c in ("grpo+none", "rloo+none")])


def gain(condition: str, seed: int) -> float:
    extra = {"maxrl+none": MAXRL_DIFF, "rloo+none": RLOO_DIFF}.get(condition, {})
    return BASE_GAIN[seed] + extra.get(seed, 0.0)


def write_file(path: Path, *, policy: dict[str, Any] | None = None) -> Path:
    keys = {"seeds_policy": '"until_decided"', "min_seeds": 3, "max_seeds": 6, "seed_batch": 1}
    keys.update(policy or {})
    lines = ["[training]", "max_steps = 3", "", "[campaign]", "seeds = [1, 2]",
             *[f"{k} = {v}" for k, v in keys.items()]]
    for adv in ("grpo", "maxrl", "rloo"):
        lines += ["", "[[campaign.conditions]]", f'advantage_mode = "{adv}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class FakeExecutor:
    """Writes each run dir at once. `stop_at`: request a stop when that many runs have started
    (the run then ends interrupted, as a real run that sees STOP does). `fail`: runs that fail."""

    def __init__(self, gains: Callable[[str, int], float] = gain, *, evals: bool = True,
                 stop_at: int | None = None, fail: tuple[str, ...] = (),
                 runner: CampaignRunner | None = None) -> None:
        self.gains, self.evals, self.stop_at, self.fail = gains, evals, stop_at, fail
        self.runner = runner
        self.ran: list[str] = []
        self.stopping = False

    def run(self, tasks: list[RunTask], on_event: Any) -> None:
        for task in tasks:
            if self.stopping:
                break
            on_event("started", task.name, None)
            self.ran.append(task.name)
            if self.stop_at is not None and len(self.ran) >= self.stop_at:
                assert self.runner is not None
                self.runner.request_stop()
                on_event("finished", task.name, RunOutcome(task.name, "interrupted", steps_done=1))
                continue
            if task.name in self.fail:
                on_event("finished", task.name, RunOutcome(task.name, "failed", error="boom"))
                continue
            seed = int(task.name.rsplit("_s", 1)[1])
            write_run(Path(task.run_dir), task.condition, seed, self.gains(task.condition, seed),
                      evals=self.evals)
            on_event("finished", task.name, RunOutcome(task.name, "done", steps_done=3,
                                                      wall_time_s=0.01))

    def request_stop(self) -> None:
        self.stopping = True

    def kill(self) -> None:
        return None


def write_run(run_dir: Path, condition: str, seed: int, g: float, *, evals: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    start = {"accuracy": 0.5, "accuracy_se": 0.02}
    end = {"accuracy": 0.5 + g, "accuracy_se": 0.02}
    rows: list[dict[str, Any]] = [{"step": 0, "condition": condition, "eval_accuracy": 0.5}] if evals else []
    rows += [{"step": s, "condition": condition, "loss": 1.0, "mean_reward": 0.1,
              "correct_rate": 0.2 + g * s / 3} for s in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary: dict[str, Any] = {"run": run_dir.name, "condition": condition, "seed": seed,
                               "status": "done", "steps_done": 3}
    if evals:
        summary |= {"initial_eval": start, "final_eval": end, "deltas": {"accuracy": g}}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def start(path: Path, out: Path, executor: FakeExecutor, *, force: bool = False,
          spec: CampaignSpec | None = None) -> tuple[int, CampaignRunner]:
    spec = spec or load_campaign(path)
    manifest, _ = prepare(spec, out, source_text=path.read_text(), sets=[], force=force)
    runner = CampaignRunner(spec, out, manifest, executor=executor, console_mode="none")
    executor.runner = runner
    return runner.run(), runner


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def without_time(looks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in look.items() if k != "time"} for look in looks]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("seq")
    path = write_file(tmp / "seq.toml")
    ex = FakeExecutor()
    code, _ = start(path, tmp / "out", ex)
    return {"path": path, "out": tmp / "out", "code": code, "ran": ex.ran}


def test_plan_lists_every_potential_run_and_the_design(finished: dict[str, Any]) -> None:
    plan = json.loads((finished["out"] / "plan.json").read_text())
    assert plan["seeds"] == [1, 2, 3, 4, 5, 6]  # 3..6 follow max(seeds) = 2
    assert len(plan["runs"]) == 18
    seq = plan["sequential"]
    assert seq["looks_planned"] == [3, 4, 5, 6] and seq["baseline"] == "grpo+none"
    assert seq["alpha"] == 0.05 and seq["conditions"] == list(CONDS)
    assert seq["boundaries"][0] == pytest.approx(2.9626, abs=1e-3)  # K=2-like first look, t=1/2
    assert all(a > b for a, b in zip(seq["boundaries"], seq["boundaries"][1:], strict=False))


def test_a_clear_difference_stops_adding_seeds_early(finished: dict[str, Any]) -> None:
    assert finished["code"] == 0
    assert finished["ran"] == TRAINED  # look by look, nothing twice
    m = manifest(finished["out"])
    assert m["status"] == "done"
    runs = m["runs"]
    for s in (4, 5, 6):
        rec = runs[f"maxrl+none_s{s}"]
        assert rec["status"] == "skipped", rec
        assert rec["reason"] == "decided at look 1 (3 seeds): higher than baseline"
        assert not (finished["out"] / "runs" / f"maxrl+none_s{s}").exists()
    assert {n for n, r in runs.items() if r["status"] == "done"} == set(TRAINED)
    seq = m["sequential"]
    assert seq["measure"]["name"] == "eval_gain"
    assert [look["n_seeds"] for look in seq["looks"]] == [3, 4, 5, 6]
    first = seq["looks"][0]["conditions"]
    assert set(first) == {"maxrl+none", "rloo+none"}
    assert first["maxrl+none"]["n"] == 3
    assert first["maxrl+none"]["mean_diff"] == pytest.approx(0.30)
    assert first["maxrl+none"]["t"] == pytest.approx(0.30 / (0.01 / math.sqrt(3)), rel=1e-6)
    assert first["maxrl+none"]["z"] == pytest.approx(3.5605, abs=1e-4)
    assert first["maxrl+none"]["decision"] == "higher than baseline"
    assert [set(look["conditions"]) for look in seq["looks"][1:]] == [{"rloo+none"}] * 3
    assert seq["decisions"]["maxrl+none"]["look"] == 1
    assert seq["decisions"]["rloo+none"] == {
        "decision": "no difference found at max_seeds", "look": 4, "n_seeds": 6,
        "mean_diff": pytest.approx(sum(RLOO_DIFF.values()) / 6),
        "z": seq["looks"][3]["conditions"]["rloo+none"]["z"]}


def test_summary_and_status_show_the_looks_and_the_skipped_runs(finished: dict[str, Any]) -> None:
    text = (finished["out"] / "summary.md").read_text()
    assert "## Sequential seeds" in text
    assert "| 1 | 3 | 2.96 | maxrl+none | 3 | +0.300 |" in text
    assert "| 4 | 6 | 2.11 | rloo+none | 6 |" in text
    assert "- **maxrl+none**: higher than baseline at look 1 (3 seeds), mean Δ +0.300" in text
    assert "- **rloo+none**: no difference found at max_seeds at look 4 (6 seeds)" in text
    assert "3 runs skipped" in text
    res = CliRunner().invoke(app, ["campaign", "status", str(finished["out"])],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "15/15 done" in res.output and "3 skipped" in res.output, res.output
    assert "decided at look 1" in res.output


def test_resume_of_a_finished_campaign_trains_nothing_and_keeps_recorded_looks(
        finished: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished["out"], out)
    before = manifest(out)["sequential"]["looks"]
    # a recorded look is never recomputed: change what it read
    write_run(out / "runs" / "maxrl+none_s1", "maxrl+none", 1, 0.10)
    ex = FakeExecutor()
    code, _ = start(finished["path"], out, ex)
    assert code == 0 and ex.ran == []
    assert manifest(out)["sequential"]["looks"] == before


def test_an_interrupt_mid_look_resumes_exactly(finished: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = FakeExecutor(stop_at=11)  # look 1 (9 runs) done, stopped in look 2's second run
    code, _ = start(finished["path"], out, first)
    assert code == 130
    m = manifest(out)
    assert m["status"] == "interrupted"
    assert len(m["sequential"]["looks"]) == 1
    assert m["runs"]["rloo+none_s4"]["status"] == "interrupted"
    assert m["runs"]["maxrl+none_s4"]["status"] == "skipped"  # look 1 decided it
    assert m["runs"]["grpo+none_s5"]["status"] == "pending"
    second = FakeExecutor()
    code, _ = start(finished["path"], out, second)
    assert code == 0
    assert second.ran[0] == "rloo+none_s4"  # the unfinished run of the current look first
    done_before = {n for n, r in m["runs"].items() if r["status"] == "done"}
    assert not done_before & set(second.ran)  # no finished run trains again
    assert sorted(done_before | set(second.ran)) == sorted(TRAINED)
    assert without_time(manifest(out)["sequential"]["looks"]) == without_time(
        manifest(finished["out"])["sequential"]["looks"])


def test_a_kill_between_the_last_run_and_the_look_takes_the_look_on_resume(
        finished: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished["out"], out)
    data = manifest(out)
    data["sequential"]["looks"] = data["sequential"]["looks"][:1]
    data["sequential"]["decisions"].pop("rloo+none")
    (out / "manifest.json").write_text(json.dumps(data))
    ex = FakeExecutor()
    assert start(finished["path"], out, ex)[0] == 0
    assert ex.ran == []  # every run the later looks need is done already
    assert without_time(manifest(out)["sequential"]["looks"]) == without_time(
        manifest(finished["out"])["sequential"]["looks"])


def test_a_failed_run_holds_the_look_until_resume(finished: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _ = start(finished["path"], out, FakeExecutor(fail=("rloo+none_s2",)))
    assert code == 1
    m = manifest(out)
    assert m["status"] == "failed" and m["sequential"]["looks"] == []
    assert m["runs"]["grpo+none_s4"]["status"] == "pending"
    assert "1 failed" in CliRunner().invoke(app, ["campaign", "status", str(out)]).output
    ex = FakeExecutor()
    assert start(finished["path"], out, ex)[0] == 0
    assert ex.ran[0] == "rloo+none_s2"
    assert len(manifest(out)["sequential"]["looks"]) == 4


def test_a_changed_design_is_refused_unless_forced(finished: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished["out"], out)
    changed = write_file(tmp_path / "changed.toml", policy={"sequential_alpha": 0.1})
    with pytest.raises(ResumeError, match=r"sequential alpha: 0.05 -> 0.1"):
        prepare(load_campaign(changed), out, source_text=changed.read_text(), sets=[], force=False)
    ex = FakeExecutor()
    assert start(changed, out, ex, force=True)[0] == 0
    seq = manifest(out)["sequential"]
    assert seq["alpha"] == 0.1 and len(seq["looks"]) >= 1  # looks taken again, new boundaries
    assert seq["boundaries"][0] < manifest(finished["out"])["sequential"]["boundaries"][0]
    assert (out / "campaign.toml").read_text() == changed.read_text()


def test_without_evals_the_looks_compare_the_last_n_mean_of_correct_rate(tmp_path: Path) -> None:
    path = write_file(tmp_path / "noeval.toml")
    out = tmp_path / "out"
    assert start(path, out, FakeExecutor(evals=False))[0] == 0
    seq = manifest(out)["sequential"]
    assert seq["measure"] == {"name": "last_n", "metric": "correct_rate", "last_n": 10,
                              "what": "mean correct_rate over the last 10 steps"}
    # correct_rate 0.2 + g·s/3 at steps 1..3: the mean is 0.2 + 2g/3, so Δ = 2/3 of the gain Δ
    assert seq["looks"][0]["conditions"]["maxrl+none"]["mean_diff"] == pytest.approx(0.2)


def test_scope_and_skip_rules() -> None:
    state: dict[str, Any] = {"conditions": ["b", "x", "y"], "baseline": "b", "seeds": [7, 8, 9, 10],
                             "looks_planned": [2, 3, 4], "looks": [], "decisions": {}}
    runs = {f"{c}_s{s}": {"condition": c, "seed": s, "status": "pending"}
            for c in ("b", "x", "y") for s in (7, 8, 9, 10)}
    assert sequential.scope(state, runs) == ["b_s7", "b_s8", "x_s7", "x_s8", "y_s7", "y_s8"]
    state["looks"].append({"look": 1, "n_seeds": 2})
    state["decisions"]["x"] = {"decision": "lower than baseline", "look": 1, "n_seeds": 2}
    assert sequential.mark_skipped(state, runs) == ["x_s9", "x_s10"]
    assert sequential.scope(state, runs) == ["b_s7", "b_s8", "b_s9", "y_s7", "y_s8", "y_s9"]
    state["looks"].append({"look": 2, "n_seeds": 3})
    state["decisions"]["y"] = {"decision": "higher than baseline", "look": 2, "n_seeds": 3}
    assert sequential.mark_skipped(state, runs) == ["b_s10", "y_s10"]
    assert runs["b_s10"]["reason"] == "every condition decided by look 2 (3 seeds)"
    assert sequential.scope(state, runs) == []


def test_plan_command_says_the_runs_are_sequential(finished: dict[str, Any]) -> None:
    res = CliRunner().invoke(app, ["campaign", "plan", str(finished["path"])], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "3 conditions × up to 6 seeds = up to 18 runs, sequential" in res.output
    assert "looks at 3, 4, 5, 6 seeds" in res.output and "maxrl+none_s6" in res.output


@pytest.mark.parametrize(("policy", "message"), [
    ({"min_seeds": 7}, "campaign.min_seeds: must be <= campaign.max_seeds (6), got 7"),
    ({"max_seeds": 1}, "campaign.max_seeds: must be >= 2, got 1"),
    ({"seed_batch": 0}, "campaign.seed_batch: must be >= 1, got 0"),
    ({"max_seeds": 3, "min_seeds": 2, "seeds": "[1, 2, 3, 4]"},
     "campaign.seeds: lists 4 seeds, more than campaign.max_seeds (3) can use"),
    ({"sequential_baseline": '"grpo+nne"'},
     "campaign.sequential_baseline: 'grpo+nne' is not a condition of this campaign (did you mean "
     "'grpo+none'?)"),
    ({"seeds_policy": '"fixed"', "min_seeds": 4},
     "campaign.min_seeds: only used with campaign.seeds_policy = 'until_decided'"),
    ({"seeds_policy": '"sometimes"'}, "campaign.seeds_policy: must be one of fixed, until_decided"),
])
def test_inconsistent_keys_are_refused_with_the_key(tmp_path: Path, policy: dict[str, Any],
                                                    message: str) -> None:
    path = write_file(tmp_path / "bad.toml", policy={k: v for k, v in policy.items() if k != "seeds"})
    if "seeds" in policy:
        path.write_text(path.read_text().replace("seeds = [1, 2]", f"seeds = {policy['seeds']}"))
    res = CliRunner().invoke(app, ["campaign", "plan", str(path)], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()), res.output


def test_one_condition_cannot_be_sequential(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text('[campaign]\nseeds = [1]\nseeds_policy = "until_decided"\n\n'
                    '[[campaign.conditions]]\nadvantage_mode = "grpo"\n')
    res = CliRunner().invoke(app, ["campaign", "plan", str(path)], env={"COLUMNS": "300"})
    assert res.exit_code == 2
    assert "campaign.seeds_policy: 'until_decided' tests each condition against a baseline" in \
        " ".join(res.output.split())


def test_a_damaged_manifest_takes_the_looks_again_with_the_same_result(
        finished: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished["out"], out)
    (out / "manifest.json").write_text("{not json")
    ex = FakeExecutor()
    assert start(finished["path"], out, ex)[0] == 0
    assert ex.ran == []
    m = manifest(out)
    assert without_time(m["sequential"]["looks"]) == without_time(
        manifest(finished["out"])["sequential"]["looks"])
    assert [n for n, r in m["runs"].items() if r["status"] == "skipped"] == [
        "maxrl+none_s4", "maxrl+none_s5", "maxrl+none_s6"]
