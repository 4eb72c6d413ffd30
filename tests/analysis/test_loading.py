"""Loading campaigns, lone run dirs and trees; torn lines; runs in progress; load_runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from retrain.analysis import AnalysisError, collect_runs, discover, load_runs
from retrain.analysis.loading import check_metric, read_metrics

from .fakes import STEPS, FakeRun, write_run


def test_campaign_runs_in_plan_order_with_identity(done_campaign: Path) -> None:
    campaigns, loose = discover(done_campaign)
    assert loose == [] and len(campaigns) == 1
    camp = campaigns[0]
    assert camp.name == "ablation" and camp.status == "done"
    assert [r.name for r in camp.runs][:2] == ["grpo+none_s42", "grpo+none_s101"]
    run = camp.runs[0]
    assert (run.condition, run.seed, run.status, run.step, run.max_steps) == ("grpo+none", 42, "done", 4, 4)
    assert run.series("correct_rate") == ([1, 2, 3, 4], pytest.approx([0.05, 0.1, 0.15, 0.2]))
    # The step-0 row holds only the initial eval; it counts for eval_accuracy, not for training.
    assert run.series("eval_accuracy")[0] == [0, 4]
    assert run.summary is not None and run.config["training"]["seed"] == 42


def test_running_campaign(running_campaign: Path) -> None:
    runs = {r.name: r for r in collect_runs(running_campaign)}
    live = runs["maxrl+gtpo_s42"]
    assert live.status == "running" and live.step == 2  # the torn step-99 line is skipped
    assert runs["maxrl+gtpo_s101"].status == "failed"
    assert runs["maxrl+gtpo_s101"].error == "RuntimeError: boom"
    pending = runs["maxrl+gtpo_s202"]
    assert pending.status == "pending" and pending.rows == [] and not pending.run_dir.exists()
    assert pending.seed == 202 and pending.condition == "maxrl+gtpo"


def test_summary_done_beats_lagging_manifest(running_campaign: Path) -> None:
    man_path = running_campaign / "manifest.json"
    manifest = json.loads(man_path.read_text())
    manifest["runs"]["grpo+none_s42"]["status"] = "running"  # manifest not yet rewritten
    man_path.write_text(json.dumps(manifest))
    runs = {r.name: r for r in collect_runs(running_campaign)}
    assert runs["grpo+none_s42"].status == "done"


def test_torn_and_duplicate_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 1.0}\n'
        "garbage\n"
        '{"step": 2, "loss": 0.5}\n'
        '{"step": 2, "loss": 0.4, "eval_accuracy": 0.3}\n'  # resumed: the later row wins
        '{"step": "x"}\n'
        '{"step": 3, "loss": 0.'
    )
    rows = read_metrics(path)
    assert rows == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.4, "eval_accuracy": 0.3}]


def test_lone_run_dir_condition_and_seed_from_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "some-run"
    write_run(run_dir, FakeRun("maxrl+gtpo_sepa", 7, 0.5, status="running"), condition_in_rows=False)
    (run_dir / "metrics.jsonl").write_text(
        (run_dir / "metrics.jsonl").read_text().replace('"condition": "maxrl+gtpo_sepa", ', "")
    )
    campaigns, loose = discover(run_dir)
    assert campaigns == [] and len(loose) == 1
    run = loose[0]
    # No manifest, no summary, no condition in rows: condition and seed come from config.toml.
    assert (run.name, run.condition, run.seed, run.status) == ("some-run", "maxrl+gtpo_sepa", 7, "running")
    assert run.max_steps == STEPS


def test_tree_of_campaigns_and_runs(tmp_path: Path, done_campaign: Path) -> None:
    write_run(tmp_path / "solo" / "a_s1", FakeRun("grpo+none", 1, 0.4))
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    campaigns, loose = discover(tmp_path)
    assert [c.name for c in campaigns] == ["ablation"]
    assert [r.name for r in loose] == ["grpo+none_s1"]  # summary.json names the run
    # a file path means its directory
    assert len(collect_runs(done_campaign / "manifest.json")) == 6


def test_errors_name_the_problem(tmp_path: Path, done_campaign: Path) -> None:
    with pytest.raises(AnalysisError, match="no such file"):
        collect_runs(tmp_path / "missing")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(AnalysisError, match="no runs found"):
        collect_runs(tmp_path / "nothing")
    with pytest.raises(AnalysisError, match="available: .*correct_rate.*mean_reward"):
        check_metric(collect_runs(done_campaign), "reward")


def test_load_runs_dataframe(done_campaign: Path) -> None:
    df = load_runs(done_campaign)
    assert len(df) == 6 * (STEPS + 1)
    assert {"campaign", "run", "condition", "seed", "status", "step", "correct_rate"} <= set(df.columns)
    finals = df[df.step == STEPS].groupby("condition")["correct_rate"].mean()
    assert finals["grpo+none"] == pytest.approx(0.3) and finals["maxrl+gtpo"] == pytest.approx(0.6)


def test_load_runs_without_pandas(done_campaign: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    records = load_runs(done_campaign)
    assert isinstance(records, list) and len(records) == 30
    assert records[1]["run"] == "grpo+none_s42" and records[1]["step"] == 1


def test_a_stray_file_is_not_read_as_its_parent_tree(tmp_path: Path) -> None:
    # Regression: `analyze compare notes.txt` compared every run under the file's directory.
    run = tmp_path / "logs" / "grpo+none_s1"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    with pytest.raises(AnalysisError, match="is a file, not a run or campaign directory"):
        discover(stray)
    assert discover(run / "config.toml")[1][0].run_dir == run  # a run's own file names its dir
