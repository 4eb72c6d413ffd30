"""`--over-time` on a fake run dir: every checkpoint and the final adapter, in step order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retrain.cli import squeeze_cmd
from retrain.squeeze import SqueezeError, analyze_over_time


@pytest.fixture
def run_dir(make_adapter, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Rank grows during training: 1 direction at step 10, 2 at step 20, 4 at step 30 and final."""
    root = tmp_path / "run"
    make_adapter(root / "checkpoints" / "step_000010", [[1, 0, 0, 0]] * 2, rank=4)
    make_adapter(root / "checkpoints" / "step_000020" / "adapter", [[1, 1, 0, 0]] * 2, rank=4)
    make_adapter(root / "checkpoints" / "step_000030", [[1, 1, 1, 1]] * 2, rank=4)
    make_adapter(root / "adapter", [[1, 1, 1, 1]] * 2, rank=4)
    (root / "checkpoints" / "step_000040").mkdir()  # a checkpoint without adapter: skipped
    return root


def test_trajectory(run_dir: Path) -> None:
    result = analyze_over_time(run_dir)
    assert [p.label for p in result.points] == ["step_000010", "step_000020", "step_000030", "final"]
    assert [p.step for p in result.points] == [10, 20, 30, None]
    # equal singular values: effective rank = number of directions; 95% needs all of them
    assert [p.result.mean_effective_rank for p in result.points] == pytest.approx([1, 2, 4, 4], rel=1e-4)
    assert [p.result.recommended_rank for p in result.points] == [1, 2, 4, 4]


def test_cli_over_time(run_dir: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    squeeze_cmd.register(app)
    res = CliRunner().invoke(app, ["squeeze", str(run_dir), "--over-time"])
    assert res.exit_code == 0, res.output
    assert "step_000020" in res.output and "final" in res.output
    data = json.loads((run_dir / "squeeze_over_time.json").read_text())
    assert [p["recommended_rank"] for p in data["points"]] == [1, 2, 4, 4]
    assert (run_dir / "squeeze_over_time.png").read_bytes()[:4] == b"\x89PNG"

    res = CliRunner().invoke(app, ["squeeze", str(run_dir / "checkpoints" / "step_000040"), "--over-time"])
    assert res.exit_code == 2 and "no adapters to analyse over time" in " ".join(res.output.split())


def test_empty_run_dir(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="no adapters"):
        analyze_over_time(tmp_path)
