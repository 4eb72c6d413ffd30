"""Back-pressure in concurrency mode keeps the logical batch: the same prompts, completions and
trained tokens per optimizer step as with back-pressure off; only the chunking changes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from .conftest import SMALL, assert_ok, read_jsonl

pytestmark = pytest.mark.slow

FOUR_STEPS = (*SMALL, "--set", "training.max_steps=4", "--set", "logging.generations_per_prompt=4")
BACKPRESSURE = ("--set", "backpressure.enabled=true", "--set", "backpressure.warmup_steps=2",
                "--set", "backpressure.min_size=2", "--set", "backpressure.max_size=16")
BP_FIELDS = ("bp_action", "bp_regime", "bp_p_star", "bp_sigma", "bp_kappa", "bp_utilization",
             "bp_throughput", "bp_warmup")


def test_concurrency_mode_keeps_the_logical_batch(cli: Callable[..., Result], base_config: Path,
                                                  tmp_path: Path) -> None:
    off, on = tmp_path / "off", tmp_path / "on"
    assert_ok(cli("run", base_config, *FOUR_STEPS, "--out", off, "--no-console-output"))
    assert_ok(cli("run", base_config, *FOUR_STEPS, *BACKPRESSURE, "--out", on, "--no-console-output"))

    rows_off = [r for r in read_jsonl(off / "metrics.jsonl") if r["step"] > 0]
    rows_on = [r for r in read_jsonl(on / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in rows_on] == [r["step"] for r in rows_off] == [1, 2, 3, 4]
    for a, b in zip(rows_off, rows_on, strict=True):
        for key in ("batch_size", "group_size", "num_datums", "total_count"):
            assert a[key] == b[key], (a["step"], key)
        assert a["chunk_size"] is None and a["bp_action"] == "off"
        assert isinstance(b["chunk_size"], int) and 2 <= b["chunk_size"] <= 16, b["chunk_size"]
        assert all(k in b for k in BP_FIELDS) and b["bp_action"] != "off"
        assert b["bp_throughput"] > 0
    assert [r["bp_warmup"] for r in rows_on][:2] == [True, True]
    assert len({r["chunk_size"] for r in rows_on}) > 1  # the controller really moved the chunking

    def by_step(run: Path) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for g in read_jsonl(run / "emergence" / "generations.jsonl"):
            out[g["step"]].append(g)
        return out

    gen_off, gen_on = by_step(off), by_step(on)
    assert sorted(gen_off) == sorted(gen_on) == [1, 2, 3, 4]
    same = total = 0
    for step in gen_off:
        g_off, g_on = gen_off[step], gen_on[step]
        assert len(g_off) == len(g_on) == 16  # every completion of the step is written
        assert [g["prompt"] for g in g_off] == [g["prompt"] for g in g_on]  # the same prompts
        # trained tokens of the optimizer step = completion tokens of all its sequences
        assert sum(g["num_tokens"] for g in g_off) == sum(g["num_tokens"] for g in g_on), step
        same += sum(x["completion"] == y["completion"] for x, y in zip(g_off, g_on, strict=True))
        total += len(g_off)
    assert same >= 0.95 * total, f"{same}/{total} completions identical"
