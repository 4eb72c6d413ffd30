"""A transform plugin is what the trainer applies: one that zeroes every token advantage leaves
adv_abs_mean at 0 on every step although the episode advantages are not all 0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from .conftest import SMALL, assert_ok, read_jsonl

pytestmark = pytest.mark.slow


def test_the_run_applies_the_configured_transform(cli: Callable[..., Result], base_config: Path,
                                                  tmp_path: Path) -> None:
    plugin = tmp_path / "zero.py"
    plugin.write_text("def zero(adv_T, batch):\n    return 0.0 * adv_T\n")
    run_dir = tmp_path / "run"
    assert_ok(cli("run", base_config, *SMALL, "--set", f"algorithm.transform_mode={plugin}:zero",
                  "--out", run_dir, "--no-console-output"))
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["condition"] == f"grpo+{plugin}:zero" for r in rows)
    assert any(r["episode_adv_abs_mean"] > 0 for r in rows)
    assert all(r["adv_abs_mean"] == 0.0 and r["sepa_lambda"] == 0.0 for r in rows)
