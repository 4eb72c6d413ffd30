"""The metrics row is defined once (FIELDS in retrain/sinks/contract.py): a real run with every
transform, KL and back-pressure writes each declared field, and nothing undeclared."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.config import load_config
from retrain.sinks.contract import FIELDS, validate_row
from retrain.trainer.loop import train_run
from retrain.trainer.phases import PHASE_FIELDS
from retrain.trainer.stages import OFF_POLICY_KEYS

from .conftest import read_jsonl, small_sets


@pytest.mark.slow
def test_every_produced_metric_is_declared_and_every_declared_one_is_produced(
        base_config: Path, tiny_model: Path, tmp_path: Path) -> None:
    cfg = load_config(base_config, [
        *small_sets(), "algorithm.advantage_mode=maxrl", "algorithm.transform_mode=gtpo_sepa_hicra",
        "training.kl_beta=0.01", "backpressure.enabled=true", "backpressure.mode=concurrency",
        "backpressure.warmup_steps=2", "eval.samples=2"])
    train_run(cfg, tmp_path / "run", console_mode="none")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        assert validate_row(row) == [], (row["step"], validate_row(row))  # nothing undeclared
    written = set().union(*(set(r) for r in rows))
    declared = {f.name for f in FIELDS}
    # all declared fields but the sampler-mismatch ones, which only a vllm run writes
    # and the fields of multi-phase runs (tests/trainer/test_phases.py checks those)
    assert declared - written == set(OFF_POLICY_KEYS) | set(PHASE_FIELDS), "declared in FIELDS but never written"
    assert rows[2]["kl"] is not None and rows[2]["chunk_size"] is not None
