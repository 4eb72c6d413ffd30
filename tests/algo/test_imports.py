"""retrain.algo stays pure numpy; the config schema takes its choices from retrain.algo.modes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from retrain.algo import advantages, modes, uncertainty
from retrain.config import load, schema

ALGO_MODULES = ("retrain.algo", "retrain.algo.modes", "retrain.algo.ragged", "retrain.algo.advantages",
                "retrain.algo.uncertainty", "retrain.algo.gtpo", "retrain.algo.hicra",
                "retrain.algo.sepa", "retrain.algo.planning", "retrain.algo.pipeline")


def test_importing_algo_loads_no_heavy_packages() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import retrain.algo\n"
        f"for name in {ALGO_MODULES!r}: importlib.import_module(name)\n"
        "for info in pkgutil.iter_modules(retrain.algo.__path__):\n"
        "    importlib.import_module('retrain.algo.' + info.name)\n"
        "heavy = ('torch', 'transformers', 'peft', 'wandb')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_names_are_spelled_once() -> None:
    # the schema's choices and the algorithm modules' checks are the same objects, not copies
    meta = {f.name: f.metadata for f in dataclasses.fields(schema.AlgorithmConfig)}
    assert meta["advantage_mode"]["choices"] is modes.ADVANTAGE_MODES is advantages.ADVANTAGE_MODES
    assert meta["transform_mode"]["choices"] is modes.TRANSFORM_MODES
    assert meta["scale"]["choices"] is modes.SCALES is advantages.SCALES
    assert meta["uncertainty_kind"]["choices"] is modes.UNCERTAINTY_KINDS is uncertainty.UNCERTAINTY_KINDS
    assert schema.TRANSFORM_SECTIONS == modes.TRANSFORMS


@pytest.mark.parametrize("mode", modes.TRANSFORM_MODES)
def test_transform_parts_match_the_substring_rule_it_replaced(mode: str) -> None:
    # behaviour kept: a mode applies exactly the transforms whose names it contains
    assert modes.transform_parts(mode) == {t for t in modes.TRANSFORMS if t in mode}
    cfg, _ = load.build_config({"algorithm": {"transform_mode": mode}})
    assert (cfg.uses_gtpo, cfg.uses_hicra, cfg.uses_sepa) == tuple(t in mode for t in ("gtpo", "hicra", "sepa"))


def test_transform_parts_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="transform_mode must be one of"):
        modes.transform_parts("sepa")
