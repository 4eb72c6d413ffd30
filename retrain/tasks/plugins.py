"""User plugins named by dotted path: a custom task factory or a custom reward function.

`'package.module:function'` is imported with importlib; `'path/to/file.py:function'` is loaded
from that file, so a plugin need not be installed. Errors name the config key they came from.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.errors import DataError
from retrain.tasks.base import Problem, Task

RewardFn = Callable[[str, str, str], float]


def is_plugin_path(spec: str) -> bool:
    """Whether `spec` has the 'module:attribute' shape of a plugin reference."""
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr)


def load_plugin(spec: str, key: str) -> Callable[..., Any]:
    """Import 'module:attr' (or 'file.py:attr') and return the callable; DataError otherwise."""
    if not is_plugin_path(spec):
        raise DataError(f"{key}: expected 'package.module:function', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name), key)
        else:
            module = importlib.import_module(module_name)
    except DataError:
        raise
    except Exception as exc:  # any import-time failure of user code is the user's to fix
        raise DataError(f"{key}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"{key}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"{key}: {spec!r} is not callable")
    return obj


def _module_from_file(path: Path, key: str) -> Any:
    if not path.is_file():
        raise DataError(f"{key}: no such file {str(path)!r}")
    name = f"retrain_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"{key}: cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_plugin(spec: str, key: str) -> list[str]:
    """The problem with a plugin reference, if any, as a list for config-load reporting."""
    try:
        load_plugin(spec, key)
    except DataError as exc:
        return [str(exc)]
    return []


class CustomRewardTask:
    """A task whose problems come from `base` and whose reward is a user function.

    The function is called as fn(prompt, completion, answer) and must return a finite number.
    Exceptions from it surface as DataError: silently scoring a broken plugin as 0 would let a
    whole run train on nothing.
    """

    def __init__(self, base: Task, fn: RewardFn, spec: str) -> None:
        self.base = base
        self.name = base.name
        self._fn = fn
        self._spec = spec

    def train_problems(self, cursor: int, n: int) -> list[Problem]:
        return self.base.train_problems(cursor, n)

    def eval_problems(self, n: int) -> list[Problem]:
        return self.base.eval_problems(n)

    def reward(self, problem: Problem, completion: str) -> float:
        try:
            value = float(self._fn(problem.prompt, completion, problem.answer))
        except Exception as exc:
            raise DataError(
                f"data.reward: {self._spec!r} failed on prompt {problem.prompt[:80]!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not math.isfinite(value):
            raise DataError(f"data.reward: {self._spec!r} returned {value} (must be finite)")
        return value

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self.reward(problem, completion) >= 1.0

    def score(self, problem: Problem, completion: str) -> tuple[float, bool]:
        """Reward and correctness from one reward call (see tasks.base.score)."""
        value = self.reward(problem, completion)
        return value, value >= 1.0
