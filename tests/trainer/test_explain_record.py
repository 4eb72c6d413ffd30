"""A real tiny run records explain/ files, and `retrain explain` recomputes from them exactly the
token advantages the trainer passed to train_step (gtpo + sepa with 0 < λ < 1 + hicra, with
planning tokens present)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import Result

from retrain.analysis.explain import explain_files, explain_step, load_record
from retrain.config import load_config
from retrain.trainer import stages
from retrain.trainer.loop import train_run

from .conftest import assert_ok, small_sets

pytestmark = pytest.mark.slow

# The tiny model answers 2-digit additions with bare numbers; naming the 3-digit sums as planning
# grams gives hicra (and sepa, which leaves planning tokens unpooled) tokens to act on.
GRAMS = "[" + ",".join(f"'{n}'" for n in range(100, 200)) + "]"
SETS = [*small_sets(), "algorithm.advantage_mode=maxrl", "algorithm.transform_mode=gtpo_sepa_hicra",
        "sepa.steps=4", "logging.explain_every=1", f"algorithm.planning_grams={GRAMS}"]


@pytest.fixture(scope="module")
def recorded_run(base_config: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> tuple[Path, list[np.ndarray]]:
    """A 3-step run, and a copy of the adv_T the trainer passed to train_step at each step."""
    passed: list[np.ndarray] = []
    original = stages.train_stage

    def spy(backend: Any, rollouts: Any, adv_T: np.ndarray, **kw: Any) -> Any:
        passed.append(np.array(adv_T, copy=True))
        return original(backend, rollouts, adv_T, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(stages, "train_stage", spy)
    try:
        run_dir = tmp_path_factory.mktemp("explain") / "run"
        train_run(load_config(base_config, SETS), run_dir, console_mode="none")
    finally:
        mp.undo()
    return run_dir, passed


def test_explain_reproduces_what_the_trainer_trained_on(recorded_run: tuple[Path, list[np.ndarray]]) -> None:
    run_dir, passed = recorded_run
    assert sorted(explain_files(run_dir)) == [1, 2, 3] and len(passed) == 3
    lambdas, planning = [], 0
    for step in (1, 2, 3):
        ex = explain_step(run_dir, step=step)
        assert ex.recomputed.matches, step
        assert np.array_equal(ex.recomputed.adv_T, passed[step - 1])  # what train_step received
        assert np.array_equal(load_record(ex.record.path).adv_T, passed[step - 1])
        assert list(ex.recomputed.trace.stages) == ["episode", "gtpo", "hicra"]
        lambdas.append(ex.record.sepa_lambda)
        planning += int(ex.record.planning_T.sum())
    assert all(0.0 < lam < 1.0 for lam in lambdas), lambdas  # sepa pooled, not the identity
    assert planning > 0  # hicra had planning tokens to change
    size = max(p.stat().st_size for p in explain_files(run_dir).values())
    assert size < 8_000, size  # 16 completions of a few tokens


def test_explain_cli_on_the_run(recorded_run: tuple[Path, list[np.ndarray]],
                                cli: Callable[..., Result], tmp_path: Path) -> None:
    run_dir, _ = recorded_run
    ex = explain_step(run_dir, step=2, samples=[0])
    first = ex.completions[0]
    res = cli("explain", run_dir, "--step", "2", "--sample", "0", "--html", tmp_path / "x.html")
    assert_ok(res)
    assert ex.headers[0].prompt in res.stdout and "recomputed advantages equal" in res.stdout
    for row in first.rows:
        assert row.text in res.stdout
    html = (tmp_path / "x.html").read_text(encoding="utf-8")
    assert html.count('<span class="tok') == len(first.rows)
    res = cli("explain", run_dir, "--step", "9")
    assert res.exit_code == 2 and "recorded steps: 1, 2, 3" in res.stderr
