"""Ray executor end to end: a real local Ray instance runs a 2-run tiny campaign through the CLI.

The campaign uses the default [model] and [data] settings so the session's cached tiny model
(RETRAIN_CACHE, tests/conftest.py) is reused: any change there changes the model's cache key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrain.cli.app import app

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CAMPAIGN = """
[training]
max_steps = 2
batch_size = 2
group_size = 2

[eval]
size = 5

[[campaign.conditions]]
"algorithm.advantage_mode" = "grpo"
"algorithm.transform_mode" = "none"

[campaign]
seeds = [1, 2]
max_workers = 2
"""


@pytest.fixture
def no_ray_left() -> Iterator[None]:
    """Whatever the test does, the local instance the executor started is shut down."""
    assert not ray.is_initialized()
    try:
        yield
    finally:
        ray.shutdown()


def test_local_ray_runs_a_two_run_campaign(tmp_path: Path, no_ray_left: None) -> None:
    spec = tmp_path / "ray_tiny.toml"
    spec.write_text(CAMPAIGN, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(spec), "--out", str(out),
                                      "--executor", "ray", "--no-console-output"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # the executor started a local instance in this process (nothing was initialised before)
    assert ray.is_initialized()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert {n: r["status"] for n, r in manifest["runs"].items()} == {
        "grpo+none_s1": "done", "grpo+none_s2": "done"}
    for name, rec in manifest["runs"].items():
        assert rec["attempts"] == 1
        rows = [json.loads(line) for line in (out / rec["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows if "loss" in r]
        assert steps == [1, 2], name
        assert all(r["condition"] == "grpo+none" for r in rows if "loss" in r)
        assert (out / rec["run_dir"] / "adapter").is_dir()
