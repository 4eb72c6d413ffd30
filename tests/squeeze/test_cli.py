"""`retrain squeeze` through CliRunner: table, JSON, compression, and clear errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from safetensors.numpy import save_file
from typer.testing import CliRunner

from retrain.cli import squeeze_cmd


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """An app holding only the squeeze command (a callback keeps it a command group)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    squeeze_cmd.register(app)
    return app


def run(app: typer.Typer, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["squeeze", *args])


def test_table_and_report(app: typer.Typer, planted: Path) -> None:
    res = run(app, str(planted), "--ranks", "1,2,3", "--min-variance", "0.85")
    assert res.exit_code == 0, res.output
    # mean k=3: (0.988235 + 0.75) / 2 = 86.91%  -> the recommended row
    assert "86.91%" in res.output and "<- recommended" in res.output
    assert "recommended rank 3" in res.output
    assert (planted / "squeeze.json").is_file() and (planted / "squeeze.png").is_file()


def test_json_output(app: typer.Typer, planted: Path, tmp_path: Path) -> None:
    res = run(app, str(planted), "--json", "--report-dir", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["recommended_rank"] == 4 and data["source_rank"] == 4
    assert (tmp_path / "rep" / "squeeze.json").is_file()


def test_run_dir_resolves_to_adapter(app: typer.Typer, make_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_adapter(tmp_path / "run" / "adapter", [[3, 1]], rank=2)
    res = run(app, str(tmp_path / "run"), "--no-report")
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run" / "adapter" / "squeeze.json").exists()


def test_compress_to(app: typer.Typer, planted: Path, tmp_path: Path) -> None:
    res = run(app, str(planted), "--compress-to", "2", "--out", str(tmp_path / "c"))
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "c" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (2, 8)  # alpha/r = 16/4 = 8/2


def _err(res) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return " ".join(res.output.split())  # Rich may wrap long paths


def test_missing_dir(app: typer.Typer, tmp_path: Path) -> None:
    assert "adapter directory not found" in _err(run(app, str(tmp_path / "nope")))


def test_not_an_adapter_dir(app: typer.Typer, tmp_path: Path) -> None:
    assert "no adapter_config.json" in _err(run(app, str(tmp_path)))


def test_no_lora_tensors(app: typer.Typer, tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    save_file({"model.embed_tokens.weight": np.zeros((4, 4), np.float32)}, str(d / "adapter_model.safetensors"))
    assert "no LoRA tensors found" in _err(run(app, str(d)))


def test_missing_weights_file(app: typer.Typer, tmp_path: Path) -> None:
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    assert "no adapter_model.safetensors or adapter_model.bin" in _err(run(app, str(d)))


def test_mismatched_shapes(app: typer.Typer, tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    save_file({
        "m.q_proj.lora_A.weight": np.ones((4, 10), np.float32),
        "m.q_proj.lora_B.weight": np.ones((12, 3), np.float32),
    }, str(d / "adapter_model.safetensors"))
    msg = _err(run(app, str(d)))
    assert "m.q_proj: mismatched shapes" in msg and "(4, 10)" in msg and "(12, 3)" in msg


def test_unpaired_factor(app: typer.Typer, tmp_path: Path) -> None:
    d = tmp_path / "half"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    save_file({"m.q_proj.lora_A.weight": np.ones((4, 10), np.float32)}, str(d / "adapter_model.safetensors"))
    assert "m.q_proj: has no lora_B.weight" in _err(run(app, str(d)))


def test_compress_larger_than_source(app: typer.Typer, planted: Path, tmp_path: Path) -> None:
    msg = _err(run(app, str(planted), "--compress-to", "8", "--out", str(tmp_path / "c")))
    assert "--compress-to 8" in msg and "source rank 4" in msg
    assert not (tmp_path / "c").exists()


def test_compress_needs_out(app: typer.Typer, planted: Path) -> None:
    assert "--compress-to needs --out" in _err(run(app, str(planted), "--compress-to", "2"))


def test_bad_ranks_and_threshold(app: typer.Typer, planted: Path) -> None:
    assert "--ranks: expected comma-separated integers" in _err(run(app, str(planted), "--ranks", "1,x"))
    assert "min_variance must be in (0, 1]" in _err(run(app, str(planted), "--min-variance", "1.5"))


def test_registered_on_main_app() -> None:
    from retrain.cli.app import app as main_app

    res = CliRunner().invoke(main_app, ["squeeze", "--help"])
    assert res.exit_code == 0 and "--compress-to" in res.output


def test_compress_to_recommended(app: typer.Typer, planted: Path, tmp_path: Path) -> None:
    # --min-variance 0.7 with ranks 1,2,4: mean k=2 = 0.7206 -> rank 2
    res = run(app, str(planted), "--min-variance", "0.7", "--compress-to", "-1", "--out", str(tmp_path / "c"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "adapter_config.json").read_text())["r"] == 2
