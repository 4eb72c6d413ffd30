"""Hooks end to end through the real CLI on the tiny model: the rows a run with every built-in
hook writes (one per step per declared metric, in hooks.csv and hooks.jsonl alike), the listing
commands, interventions by plugin hooks, bad names, resume, wandb, and a campaign's [hooks]."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from retrain.hooks.registry import GROUPS, HOOKS
from tests.trainer.conftest import SMALL, assert_ok, read_jsonl

pytestmark = pytest.mark.slow

# The tiny preset: 2 layers, LoRA on its 7 projections
MODULES = [f"model.layers.{i}.{part}" for i in range(2) for part in
           ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def expected_metrics(hook: str, step: int, *, active: list[str], stages: list[str],
                     rank_every: int) -> set[str]:
    """The metric names `hook` declares, expanded for this run (transform_mode none)."""
    if hook == "rank" and step % rank_every:
        return set()
    out: set[str] = set()
    for name in HOOKS[hook].metrics:
        if "{module}" in name:
            out |= {name.format(module=m) for m in MODULES}
        elif "{hook}" in name:
            out |= {name.format(hook=h) for h in active if h != hook}
        elif "{stage}" in name:
            out |= {name.format(stage=s) for s in stages
                    if not (name.endswith("changed_frac") and s == "episode")}
        elif not name.startswith("sepa."):  # sepa.changed_frac: sepa runs only
            out.add(name)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def full_run(cli: Callable[..., Result], base_config: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("hooks") / "full"
    assert_ok(cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output",
                  "--with-hooks", "full", "--hook-csv", "--hook-jsonl", "--set", "hooks.rank_every=2"))
    return run_dir


def test_full_group_writes_one_row_per_step_per_declared_metric(full_run: Path) -> None:
    rows = read_jsonl(full_run / "hooks.jsonl")
    keys = [(r["step"], r["hook"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "a metric appeared twice in one step"
    active = list(GROUPS["full"])
    for step in (1, 2, 3):
        for hook in HOOKS:
            got = {m for s, h, m in keys if s == step and h == hook}
            assert got == expected_metrics(hook, step, active=active, stages=["episode"],
                                           rank_every=2), (step, hook)
    assert {r["step"] for r in rows} == {1, 2, 3}
    assert {r["point"] for r in rows if r["hook"] == "entropy"} == {"post_sample"}
    assert {r["point"] for r in rows if r["hook"] == "norms"} == {"post_step"}
    # the CSV holds the same rows as the JSONL, values written exactly
    table = read_csv(full_run / "hooks.csv")
    assert list(table[0]) == ["step", "point", "hook", "metric", "value"]
    assert [(int(r["step"]), r["point"], r["hook"], r["metric"], float(r["value"])) for r in table] == \
        [(r["step"], r["point"], r["hook"], r["metric"], float(r["value"])) for r in rows]


def test_full_run_values_agree_with_the_run(full_run: Path) -> None:
    rows = read_jsonl(full_run / "hooks.jsonl")
    metrics = {r["step"]: r for r in read_jsonl(full_run / "metrics.jsonl") if r["step"] > 0}
    value = {(r["step"], r["hook"], r["metric"]): r["value"] for r in rows}
    for step, m in metrics.items():
        assert value[(step, "lengths", "mean")] == pytest.approx(m["mean_completion_length"])
        assert value[(step, "lengths", "truncated_frac")] == pytest.approx(m["max_token_hit_rate"])
        informative = value[(step, "groups", "informative")]
        assert informative == m["batch_size"] - m["skipped_groups"]
        assert value[(step, "timing", "step_s")] == pytest.approx(m["step_time_s"])
        # per-module grad norms combine to the step's global norm (before clipping)
        total = sum(value[(step, "grad", f"{mod}.grad_norm")] ** 2 for mod in MODULES) ** 0.5
        assert total == pytest.approx(m["grad_norm"], rel=1e-4)
        assert not any("/" in k for k in m), "per-module data leaked into metrics.jsonl"
    # LoRA B starts at zero, so after step 1 the update's size is its first step's size
    for mod in MODULES:
        assert value[(1, "norms", f"{mod}.step_norm")] == 0.0
        assert value[(2, "norms", f"{mod}.step_norm")] > 0.0
        assert 1.0 <= value[(2, "rank", f"{mod}.effective_rank")] <= 16.0


def test_hooks_list_and_describe_print_every_builtin_hook(cli: Callable[..., Result]) -> None:
    listing = cli("run", "--hooks-list")
    assert_ok(listing)
    for name, cls in HOOKS.items():
        line = next(ln for ln in listing.stdout.splitlines() if ln.startswith(name + " "))
        assert cls.description in line and ",".join(cls.points) in line
        described = cli("run", "--hooks-describe", name)
        assert_ok(described)
        for metric in cls.metrics:
            assert metric in described.stdout, (name, metric)
    assert "group minimal: " + ", ".join(GROUPS["minimal"]) in listing.stdout


def test_no_hooks_writes_no_hook_files(cli: Callable[..., Result], base_config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "plain"
    assert_ok(cli("run", base_config, *SMALL, "--set", "training.max_steps=1", "--out", run_dir,
                  "--no-console-output"))
    assert not list(run_dir.glob("hooks.*"))
    assert "[hooks]" not in (run_dir / "run.log").read_text()


def test_a_plugin_hook_stops_the_run_and_says_so(cli: Callable[..., Result], base_config: Path,
                                                 tmp_path: Path) -> None:
    run_dir = tmp_path / "stop"
    assert_ok(cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output",
                  "--hooks", "tests.hooks.plugin_hooks:stop_at_2", "--hook-jsonl"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == 2
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2]
    assert "[hooks] stop_at stopped the run after step 2: enough at step 2" in \
        (run_dir / "run.log").read_text()
    assert [r["step"] for r in read_jsonl(run_dir / "hooks.jsonl")] == [1, 2]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_plugin_hook_sets_the_learning_rate(cli: Callable[..., Result], base_config: Path,
                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "lr"
    assert_ok(cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output",
                  "--set", 'hooks.names=["tests/hooks/plugin_hooks.py:halve_lr"]'))
    lrs = [r["lr"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > 0]
    assert lrs == [pytest.approx(1e-4), pytest.approx(5e-5), pytest.approx(5e-5)]
    assert "[hooks] halve_lr set the learning rate to 5e-05 after step 1: halve it" in \
        (run_dir / "run.log").read_text()


@pytest.mark.parametrize("args,message", [
    (("--with-hooks", "fulll"), "error: --with-hooks: unknown hook group 'fulll' (did you mean 'full'?); groups are minimal, full"),
    (("--hooks", "nrms"), "error: --hooks: unknown hook 'nrms' (did you mean 'norms'?); built-in hooks are "),
    (("--set", 'hooks.sinks=["cvs"]'), "hooks.sinks: unknown hook sink 'cvs' (did you mean 'csv'?); sinks are csv, jsonl, wandb"),
    (("--set", 'hooks.groups=["norms"]'), "hooks.groups: unknown hook group 'norms' (that is a hook: give it as a name)"),
    (("--hooks", "tests.hooks.plugin_hooks:nope"), "hooks.names: 'tests.hooks.plugin_hooks' defines no 'nope'"),
    (("--hook-wandb", "p", "--set", "logging.wandb_project=q"), "hooks.wandb_project: this run already logs to wandb project 'q'"),
])
def test_bad_hook_input_is_one_clear_error(cli: Callable[..., Result], base_config: Path, tmp_path: Path,
                                           args: tuple[str, ...], message: str) -> None:
    result = cli("run", base_config, *SMALL, "--out", tmp_path / "bad", *args)
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


def test_resume_keeps_each_steps_rows_once(cli: Callable[..., Result], base_config: Path,
                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    four = (*SMALL, "--set", "training.max_steps=4", "--set", "training.save_every=2")
    assert_ok(cli("run", base_config, *four, "--out", run_dir, "--no-console-output",
                  "--with-hooks", "minimal", "--hook-csv", "--hook-jsonl"))
    before = Counter((r["step"], r["hook"], r["metric"]) for r in read_jsonl(run_dir / "hooks.jsonl"))
    # as if the run died after step 4's rows were written but before its checkpoint
    shutil.rmtree(run_dir / "checkpoints" / "step_000004")
    (run_dir / "summary.json").unlink()
    assert_ok(cli("run", "--resume", run_dir, "--no-console-output"))
    after = Counter((r["step"], r["hook"], r["metric"]) for r in read_jsonl(run_dir / "hooks.jsonl"))
    assert after == before and set(after.values()) == {1}
    assert {s for s, _, _ in after} == {1, 2, 3, 4}
    assert len(read_csv(run_dir / "hooks.csv")) == sum(after.values())


def test_wandb_sink_logs_hook_metrics_offline(cli: Callable[..., Result], base_config: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sinks.wandb_reader import summarize

    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "wb"
    assert_ok(cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output",
                  "--hooks", "lengths", "--hook-wandb", "retrain-hooks-test",
                  "--set", "logging.wandb_mode=offline"))
    history = summarize(run_dir)["history"]
    assert {1, 2, 3} <= set(history)
    for step in (1, 2, 3):
        assert {f"hooks/lengths/{m}" for m in HOOKS["lengths"].metrics} <= set(history[step])


def test_a_campaign_with_a_hooks_table_expands(tmp_path: Path) -> None:
    from retrain.campaign.grid import load_campaign

    path = tmp_path / "camp.toml"
    path.write_text('model = "tiny"\n\n[hooks]\ngroups = ["minimal"]\nnames = ["rank"]\n'
                    'sinks = ["csv"]\n\n[campaign]\nseeds = [1, 2]\n\n[campaign.grid]\n'
                    '"algorithm.advantage_mode" = ["grpo", "maxrl"]\n', encoding="utf-8")
    spec = load_campaign(path)
    assert len(spec.runs) == 4
    for run in spec.runs:
        assert run.config.hooks.groups == ("minimal",) and run.config.hooks.names == ("rank",)
        assert run.config.hooks.sinks == ("csv",)
