"""`retrain run` end to end on the tiny model: the files a user sees after a 3-step run, that the
resolved config reproduces the run exactly, the console modes, and bad configs."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import Result

from retrain.sinks.contract import (
    EMERGENCE_STEP_FIELDS,
    EVAL_FIELDS,
    FIELD_TYPES,
    GENERATION_FIELDS,
    METRICS_FIELDS,
    validate_row,
)

from .conftest import SMALL, assert_ok, metrics_without_timings, read_jsonl

pytestmark = pytest.mark.slow

RUN_LOG_HEADER = re.compile(r"^=== retrain run (\S+) started at step 0, \d{4}-\d\d-\d\dT[\d:]+\+00:00 ===$")


@pytest.fixture(scope="module")
def three_step_run(cli: Callable[..., Result], base_config: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """One 3-step run in the default console mode, shared by the tests of this module (read only)."""
    run_dir = tmp_path_factory.mktemp("e2e") / "run3"
    result = cli("run", base_config, *SMALL, "--out", run_dir)
    assert_ok(result)
    return result, run_dir


def _lora_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_three_step_run_writes_every_file(three_step_run: tuple[Result, Path]) -> None:
    from peft import PeftModel

    from retrain.backend.local.model import load_model_and_tokenizer

    _, run_dir = three_step_run
    assert (run_dir / "config.toml").is_file()

    # metrics.jsonl: the initial eval row, then one row per training step, each exactly once
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert validate_row(rows[0]) == []
    assert all(isinstance(rows[0][k], float) for k in EVAL_FIELDS)
    for row in rows[1:]:
        assert validate_row(row) == [], row["step"]
        missing = [k for k in METRICS_FIELDS if k not in row]
        assert missing == []
        for key in METRICS_FIELDS:  # the contract's types, checked independently of validate_row
            kind, value = FIELD_TYPES[key], row[key]
            if kind == "int":
                assert type(value) is int, key
            elif kind == "bool":
                assert type(value) is bool, key
            elif kind == "str":
                assert type(value) is str, key
            elif kind == "float":
                assert type(value) in (int, float), key
            else:
                assert value is None or type(value) in (int, float), key
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        assert row["grad_norm"] > 0
        assert row["skipped_step"] is False
        assert row["batch_size"] == 4 and row["group_size"] == 4 and row["num_datums"] == 16
        assert row["total_count"] == 16 and 0 <= row["correct_count"] <= 16
        assert row["bp_action"] == "off" and row["bp_regime"] == "off"
    assert rows[3]["eval_accuracy"] is not None  # the last step evaluates

    # emergence logs
    steps = read_jsonl(run_dir / "emergence" / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2, 3]
    for s, row in zip(steps, rows[1:], strict=True):
        assert set(s) == set(EMERGENCE_STEP_FIELDS)
        assert (s["mean_reward"], s["correct_count"], s["total_count"], s["condition"]) == (
            row["mean_reward"], row["correct_count"], row["total_count"], row["condition"])
    gens = read_jsonl(run_dir / "emergence" / "generations.jsonl")
    assert Counter(g["step"] for g in gens) == {1: 4, 2: 4, 3: 4}  # generations_per_prompt = 1
    for g in gens:
        assert set(g) == set(GENERATION_FIELDS)
        assert isinstance(g["prompt"], str) and g["prompt"].endswith("=")
        assert isinstance(g["completion"], str)
        assert g["reward"] in (0.0, 1.0) and isinstance(g["num_tokens"], int) and g["num_tokens"] >= 1

    # summary.json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == 3 and summary["max_steps"] == 3
    assert summary["params_total"] > summary["params_trainable"] > 0
    assert 0.0 <= summary["initial_eval"]["accuracy"] <= 1.0
    assert summary["initial_eval"]["accuracy"] == rows[0]["eval_accuracy"]
    assert summary["final_eval"]["accuracy"] == rows[3]["eval_accuracy"]
    assert summary["wall_time_s"] > 0

    # run.log: a header line, then the [train] lines
    log_lines = (run_dir / "run.log").read_text().splitlines()
    assert RUN_LOG_HEADER.match(log_lines[0]), log_lines[0]
    assert sum(line.startswith("[train] step=") for line in log_lines) == 3

    # checkpoint of the last step, and the final adapter
    ckpt = run_dir / "checkpoints" / "step_000003"
    assert (ckpt / "trainer_state.json").is_file() and (ckpt / "adapter_model.safetensors").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 3
    base, _, _ = load_model_and_tokenizer(summary["model"], dtype="float32", device="cpu",
                                          local_files_only=True, trust_remote_code=False)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    lora = _lora_tensors(model)
    assert lora, "no LoRA parameters in the saved adapter"
    lora_b = {n: t for n, t in lora.items() if "lora_B" in n}
    # peft initialises B to zero: after 3 optimizer steps every B has moved
    assert lora_b and all(float(t.abs().max()) > 0 for t in lora_b.values())
    assert all(torch.isfinite(t).all() for t in lora.values())
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.equal(tuned, plain)


def test_resolved_config_reproduces_the_run(three_step_run: tuple[Result, Path],
                                            cli: Callable[..., Result], tmp_path: Path) -> None:
    """`retrain run <run>/config.toml --out other`: same metrics (timings aside), same completions
    and bit-identical adapter weights. This is the determinism test as well."""
    from safetensors.torch import load_file

    _, first = three_step_run
    again = tmp_path / "again"
    result = cli("run", first / "config.toml", "--out", again, "--no-console-output")
    assert_ok(result)
    assert metrics_without_timings(again) == metrics_without_timings(first)
    assert read_jsonl(again / "emergence" / "generations.jsonl") == read_jsonl(
        first / "emergence" / "generations.jsonl")

    def body(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]

    assert body(again / "config.toml") == body(first / "config.toml")
    a = load_file(first / "adapter" / "adapter_model.safetensors")
    b = load_file(again / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_default_console_prints_train_lines(three_step_run: tuple[Result, Path]) -> None:
    result, _ = three_step_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("[train] step=")]
    assert len(lines) == 3
    assert lines[0].startswith("[train] step=1/3 loss=") and " reward=" in lines[0] and " bs=4" in lines[0]
    assert "run done: 3 steps" in result.stderr


def test_silent_console_has_no_train_lines(cli: Callable[..., Result], base_config: Path,
                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "silent"
    result = cli("run", base_config, *SMALL, "--out", run_dir, "--silent")
    assert_ok(result)
    # a bar is all --silent shows, and only on a terminal: in a pipe nothing, not even "run done"
    assert result.stdout == "" and result.stderr == "", (result.stdout, result.stderr)
    assert sum(line.startswith("[train] step=") for line in (run_dir / "run.log").read_text().splitlines()) == 3


def test_no_console_output_prints_nothing(cli: Callable[..., Result], base_config: Path,
                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "quiet"
    result = cli("run", base_config, *SMALL, "--out", run_dir, "--no-console-output")
    assert_ok(result)
    assert result.stdout == "" and result.stderr == ""
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2, 3]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    log = (run_dir / "run.log").read_text().splitlines()
    assert RUN_LOG_HEADER.match(log[0])
    assert sum(line.startswith("[train] step=") for line in log) == 3


@pytest.mark.parametrize("how", ["toml", "set"])
def test_unknown_key_is_refused_before_anything_is_written(
        how: str, cli: Callable[..., Result], base_config: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default run dir would be ./logs/...
    config = base_config
    extra: list[str] = []
    if how == "toml":
        config = tmp_path / "bad.toml"
        config.write_text(base_config.read_text().replace("seed = 7", "seed = 7\nsed = 3"))
    else:
        extra = ["--set", "lora.rnk=4"]
    key = "training.sed" if how == "toml" else "lora.rnk"
    for out in (["--out", str(tmp_path / "run")], []):
        result = cli("run", config, *SMALL, *extra, *out)
        assert result.exit_code == 2
        assert f"{key}: unknown key" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()


def test_copy_of_a_run_dir_is_not_overwritten(three_step_run: tuple[Result, Path],
                                              cli: Callable[..., Result], base_config: Path,
                                              tmp_path: Path) -> None:
    """`--out` pointing at an existing run is refused (exit 2) and leaves it as it was."""
    _, first = three_step_run
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    before = (copy / "metrics.jsonl").read_bytes()
    result = cli("run", base_config, *SMALL, "--out", copy)
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert (copy / "metrics.jsonl").read_bytes() == before


def test_live_console_runs_to_the_end(cli: Callable[..., Result], base_config: Path,
                                      tmp_path: Path) -> None:
    """--live off a terminal: the final layout is printed once; files as in any other mode."""
    run_dir = tmp_path / "live"
    result = cli("run", base_config, *SMALL, "--out", run_dir, "--live")
    assert_ok(result)
    assert "latest metrics" in result.stdout
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2, 3]
    assert sum(line.startswith("[train] step=") for line in (run_dir / "run.log").read_text().splitlines()) == 3
