"""Multi-phase runs end to end on the cached tiny model: the metrics stream, the ledger, rollback,
replay with the teacher KL, exact resume, and the config errors. Phases switch arithmetic
operators (+ then -), so they use the tiny model the other trainer tests build; half of each
batch replays earlier phases from the second phase on."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import load_file
from typer.testing import Result

from .conftest import (
    BASE_TOML,
    assert_ok,
    drop_timings,
    metrics_without_timings,
    read_jsonl,
    start_run,
    wait_for_step,
)

PHASES = """
[training]
batch_size = 4
group_size = 4

[eval]
size = 10
every = 0
samples = 0

[data]
eval_size = 50

[backend]
threads = 1

[curriculum]
rounds = 2

[replay]
fraction = 0.5
kl_beta = 0.1

[[phases]]
name = "add"
steps = 2
data.operators = ["+"]

[[phases]]
name = "sub"
steps = 3
"data.operators" = ["-"]
"optimizer.lr" = 5e-4
"""


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(BASE_TOML.replace("[training]\nseed = 7\n", "") + PHASES + extra, encoding="utf-8")
    return path


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / "ledger" / "index.jsonl")


def adapter(path: Path) -> dict[str, Any]:
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def phased(cli: Callable[..., Result], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("phased")
    run_dir = tmp / "run"
    assert_ok(cli("run", write_config(tmp / "run.toml"), "--out", run_dir, "--no-console-output"))
    return run_dir


def test_one_metrics_stream_with_phase_fields(phased: Path) -> None:
    rows = [r for r in read_jsonl(phased / "metrics.jsonl") if r["step"] >= 1]
    assert [r["step"] for r in rows] == list(range(1, 11))  # 2 rounds x (2 + 3) steps
    assert [(r["round"], r["phase"], r["phase_step"]) for r in rows] == [
        (1, "add", 1), (1, "add", 2), (1, "sub", 1), (1, "sub", 2), (1, "sub", 3),
        (2, "add", 1), (2, "add", 2), (2, "sub", 1), (2, "sub", 2), (2, "sub", 3)]
    assert [r["lr"] > 2e-4 for r in rows] == [False, False, True, True, True] * 2  # sub's lr 5e-4


def test_ledger_entries_and_index(phased: Path) -> None:
    entries = ledger(phased)
    assert [(e["entry"], e["kind"], e["global_step"]) for e in entries] == [
        ("000_add_start", "start", 0), ("000_add_commit", "commit", 2),
        ("001_sub_start", "start", 2), ("001_sub_commit", "commit", 5),
        ("002_add_start", "start", 5), ("002_add_commit", "commit", 7),
        ("003_sub_start", "start", 7), ("003_sub_commit", "commit", 10)]
    for e in entries:
        d = phased / "ledger" / e["path"]
        assert sorted(p.name for p in d.iterdir()) == ["README.md", "adapter_config.json",
                                                       "adapter_model.safetensors", "ledger_entry.json"]
        assert json.loads((d / "ledger_entry.json").read_text())["global_step"] == e["global_step"]
    # adapter-only: a start entry equals the previous phase's commit, bit for bit
    a, b = adapter(phased / "ledger" / "000_add_commit"), adapter(phased / "ledger" / "001_sub_start")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # the final adapter of the run is the last commit
    c = adapter(phased / "adapter")
    last = adapter(phased / "ledger" / "003_sub_commit")
    assert all((c[k] == last[k]).all() for k in last)


def test_per_phase_files_and_consolidated(phased: Path) -> None:
    names = sorted(p.name for p in (phased / "phases").iterdir())
    assert names == ["final_1_add", "final_1_sub", "final_2_add", "final_2_sub", "initial_1_add",
                     "initial_1_sub", "initial_2_add", "initial_2_sub", "metrics_1_add.json",
                     "metrics_1_sub.json", "metrics_2_add.json", "metrics_2_sub.json"]
    doc = json.loads((phased / "consolidated_metrics.json").read_text())
    assert doc["groups"] == ["add", "sub"] and doc["rounds"] == 2
    assert [(p["round"], p["name"], p["start_step"], p["end_step"]) for p in doc["phases"]] == [
        (1, "add", 1, 2), (1, "sub", 3, 5), (2, "add", 6, 7), (2, "sub", 8, 10)]
    rows = {r["step"]: r for r in read_jsonl(phased / "metrics.jsonl")}
    first = doc["phases"][0]
    assert first["success_rate"] == pytest.approx((rows[1]["correct_rate"] + rows[2]["correct_rate"]) / 2)
    assert first["max_response_length"] == max(rows[1]["max_completion_length"], rows[2]["max_completion_length"])
    assert set(first["eval"]) == {"add", "sub"} and first["weight_change"] > 0
    assert (phased / "plots" / "training_metrics.png").stat().st_size > 10_000


def test_forced_regression_triggers_a_rollback(cli: Callable[..., Result], tmp_path: Path) -> None:
    # phase "sub" trains with lr 0.5: its first probe finds phase "add" far below its commit
    toml = write_config(tmp_path / "run.toml", "\n[probe]\nevery = 1\nmax_drop = 0.05\nsize = 10\n"
                                               "lr_decay_on_rollback = 0.5\n")
    toml.write_text(toml.read_text().replace('"optimizer.lr" = 5e-4', '"optimizer.lr" = 0.5'))
    run_dir = tmp_path / "run"
    assert_ok(cli("run", toml, "--out", run_dir, "--no-console-output"))
    rows = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl")}
    entries = ledger(run_dir)
    rollbacks = [e for e in entries if e["kind"] == "rollback"]
    assert rollbacks, [e["entry"] for e in entries]
    first = rollbacks[0]
    step = first["global_step"]
    assert (first["round"], first["phase"]) == (1, "sub")
    assert first["metrics"]["drops"]["add"] > 0.05
    assert rows[step]["probe_rolled_back"] is True and rows[step]["probe_worst_drop"] > 0.05
    assert rows[1].get("probe_rolled_back") is not True  # phase "add" of round 1: nothing earlier
    # the rollback entry holds the regressed patch, not the good one it went back to
    good = [e for e in entries if e["kind"] in ("start", "good") and e["global_step"] < step][-1]
    regressed, restored = adapter(run_dir / "ledger" / first["path"]), adapter(run_dir / "ledger" / good["path"])
    assert any((regressed[k] != restored[k]).any() for k in restored)
    if rows[step + 1]["phase"] == "sub":  # the next step of the phase runs at half the lr
        assert rows[step + 1]["lr"] < 0.6 * rows[step]["lr"]


def test_rollback_restores_the_last_good_entry_exactly(tmp_path: Path, tiny_model: Path) -> None:
    """The backend call a rollback makes: after more training, loading the good entry gives back
    its tensors exactly."""
    from retrain.backend.local.engine import LocalBackend
    from retrain.config import load_config

    toml = write_config(tmp_path / "run.toml")
    cfg = load_config(toml)
    backend = LocalBackend(cfg, tmp_path / "run", progress=False)
    good = backend.save_adapter_to(tmp_path / "good")
    import torch

    with torch.no_grad():
        for name, p in backend.model.named_parameters():
            if "lora_" in name:
                p.add_(0.25)
    assert not all((adapter(good)[k] == v).all() for k, v in adapter(backend.save_adapter_to(tmp_path / "moved")).items())
    backend.load_adapter_from(good)
    now = adapter(backend.save_adapter_to(tmp_path / "now"))
    saved = adapter(good)
    assert now.keys() == saved.keys() and all((now[k] == saved[k]).all() for k in saved)


def test_kill_mid_phase_then_resume_equals_uninterrupted(phased: Path, cli: Callable[..., Result],
                                                         tmp_path: Path) -> None:
    toml = write_config(tmp_path / "run.toml")
    toml.write_text(toml.read_text().replace("group_size = 4\n", "group_size = 4\nsave_every = 1\n", 1))
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_run(["run", toml, "--out", run_dir, "--no-console-output"], log)
    wait_for_step(proc, run_dir, 4, log)  # in phase "sub" of round 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert_ok(cli("run", "--resume", run_dir, "--no-console-output"))
    assert metrics_without_timings(run_dir) == metrics_without_timings(phased)
    assert [drop_timings(e) for e in ledger(run_dir)] == [drop_timings(e) for e in ledger(phased)]
    for e in ledger(phased):
        a, b = adapter(phased / "ledger" / e["path"]), adapter(run_dir / "ledger" / e["path"])
        assert all((a[k] == b[k]).all() for k in a), e["entry"]


@pytest.mark.parametrize(("extra", "message"), [
    ('\n[[phases]]\nname = "mul"\nsteps = 2\n"lora.rank" = 4\n',
     "phases[2] (mul).lora.rank: a phase cannot change lora.rank"),
    ('\n[[phases]]\nname = "mul"\nsteps = 2\n"data.operatorz" = ["*"]\n',
     "phases[2] (mul).data.operatorz: unknown key 'data.operatorz'"),
    ('\n[[phases]]\nname = "add"\nsteps = 2\n', "phases[2].name: 'add' is the name of an earlier phase"),
    ('\n[[phases]]\nname = "mul"\nsteps = 0\n', "phases[2] (mul).steps: give the phase's length in steps"),
    ('\n[[phases]]\nname = "mul"\nsteps = 1\n"data.digits" = 0\n', "phases[2] (mul): data.digits: must be >= 1"),
])
def test_bad_phase_configs_give_one_clear_error_each(cli: Callable[..., Result], tmp_path: Path,
                                                     extra: str, message: str) -> None:
    result = cli("config", "validate", write_config(tmp_path / "run.toml", extra))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_empty_phase_list_and_keys_without_phases(cli: Callable[..., Result], tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('phases = []\n[model]\nname = "tiny"\n')
    result = cli("config", "validate", empty)
    assert result.exit_code == 2 and "phases: the phase list is empty" in result.output
    lone = tmp_path / "lone.toml"
    lone.write_text('[model]\nname = "tiny"\n[curriculum]\nrounds = 2\n')
    result = cli("config", "validate", lone)
    assert result.exit_code == 2 and "curriculum.rounds: only for multi-phase runs" in result.output
    steps = write_config(tmp_path / "steps.toml")
    steps.write_text(steps.read_text().replace("batch_size = 4\n", "batch_size = 4\nmax_steps = 3\n", 1))
    result = cli("config", "validate", steps)
    assert result.exit_code == 2 and "curriculum.rounds × the phases' steps = 10 steps" in result.output


def test_config_toml_of_a_phased_run_reloads_to_the_same_config(phased: Path) -> None:
    from retrain.config import load_config
    from retrain.config.render import config_hash

    cfg = load_config(phased / "config.toml")
    assert [p.name for p in cfg.phases] == ["add", "sub"] and cfg.training.max_steps == 10
    assert dict(cfg.phases[1].overrides) == {"data.operators": ("-",), "optimizer.lr": 5e-4}
    assert config_hash(load_config(phased / "config.toml")) == config_hash(cfg)


def test_replay_mixes_earlier_prompts_and_the_teacher_kl_starts_at_zero(phased: Path) -> None:
    rows = {r["step"]: r for r in read_jsonl(phased / "metrics.jsonl") if r["step"] >= 1}
    assert "replay_prompts" not in rows[1] and "replay_prompts" not in rows[2]  # nothing earlier yet
    for step in range(3, 11):
        row = rows[step]
        assert row["replay_prompts"] == 2  # round(0.5 x 4)
        assert row["loss_new"] + row["loss_old"] == pytest.approx(row["pg_loss"], abs=1e-6)
    # at a phase's first step the student is the teacher (the previous commit): KL exactly 0
    for first in (3, 6, 8):
        assert rows[first]["teacher_kl"] == 0.0, first
    assert any(rows[s]["teacher_kl"] > 0 for s in (4, 5, 7, 9, 10))
    # the replayed prompts are the earlier phase's: '+' problems during "sub", '-' during round 2's "add"
    gens = read_jsonl(phased / "emergence" / "generations.jsonl")
    prompts = {(g["step"], g["prompt"]) for g in gens}
    assert any("+" in p for s, p in prompts if s == 3) and any("-" in p for s, p in prompts if s == 3)
    assert any("-" in p for s, p in prompts if s == 6)


def test_train_line_of_a_replay_step_shows_new_old_and_teacher_kl() -> None:
    from retrain.sinks.text import train_line

    line = train_line({"step": 3, "loss": 0.5, "loss_new": 0.25, "loss_old": 0.25, "teacher_kl": 0.01,
                       "kl": None, "mean_reward": 0.5, "correct_rate": 0.5, "sepa_lambda": 0.0,
                       "batch_size": 4}, 10)
    assert line == ("[train] step=3/10 loss=0.5 new=0.25 old=0.25 kl=0.0100 reward=0.500 "
                    "correct=0.500 lambda=0.000 bs=4")


def test_replay_config_errors(cli: Callable[..., Result], tmp_path: Path) -> None:
    one = tmp_path / "one.toml"
    one.write_text('[model]\nname = "tiny"\n[replay]\nfraction = 0.5\n'
                   '[[phases]]\nname = "add"\nsteps = 2\n')
    result = cli("config", "validate", one)
    assert result.exit_code == 2 and "replay.fraction: replay draws from earlier phases" in result.output
    beta = write_config(tmp_path / "beta.toml")
    beta.write_text(beta.read_text().replace("fraction = 0.5\n", ""))
    result = cli("config", "validate", beta)
    assert result.exit_code == 2 and "replay.kl_beta: the teacher KL acts on replayed sequences" in result.output
