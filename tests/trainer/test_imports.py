"""The trainer speaks to its engine only through the Backend protocol, with typed signatures:
no module of retrain/trainer imports retrain.backend.local, and no function of it takes or
returns `Any`. Importing the trainer loads no torch (the engine is loaded by the registry)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TRAINER = Path(__file__).resolve().parents[2] / "retrain" / "trainer"
MODULES = sorted(TRAINER.glob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_trainer_does_not_import_the_local_engine(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [m for m in _imports(tree) if m.startswith("retrain.backend.local")]
    assert not bad, f"{path.name} imports {bad}: go through retrain.backend.base.Backend"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_trainer_signatures_have_no_any(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                    *([node.args.vararg] if node.args.vararg else []),
                    *([node.args.kwarg] if node.args.kwarg else [])]
            annotations = [a.annotation for a in args if a.arg not in ("self", "cls")]
            for ann in [*annotations, node.returns]:
                if ann is None:
                    found.append(f"{node.name}: missing annotation")
                elif re.search(r"\bAny\b", ast.unparse(ann)):
                    found.append(f"{node.name}: {ast.unparse(ann)}")
    assert not found, f"{path.name}: {found}"


def test_importing_the_trainer_loads_no_torch() -> None:
    code = ("import json, sys\nimport retrain.trainer.loop, retrain.trainer.setup, retrain.trainer.stages\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
