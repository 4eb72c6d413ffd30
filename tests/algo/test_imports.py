"""retrain.algo stays pure numpy; its name tuples match the config schema."""

from __future__ import annotations

import json
import subprocess
import sys

from retrain.algo import advantages, pipeline, uncertainty
from retrain.config import schema

ALGO_MODULES = ("retrain.algo", "retrain.algo.ragged", "retrain.algo.advantages",
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


def test_names_match_config_schema() -> None:
    assert advantages.ADVANTAGE_MODES == schema.ADVANTAGE_MODES
    assert pipeline.TRANSFORM_MODES == schema.TRANSFORM_MODES
    assert uncertainty.UNCERTAINTY_KINDS == schema.UNCERTAINTY_KINDS
