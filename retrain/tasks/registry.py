"""Task registry: `[data]` config → a Task. The trainer calls `build_task`; the config loader
calls `check_data_config` so that a bad path or plugin fails before training starts.

Built-in tasks are a plain dict of builders; any other `data.task` of the form 'module:function'
is a user factory called as function(data, seed) (or function() if it takes no arguments).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.plugins import check_arity, check_plugin, is_plugin_path, load_plugin
from retrain.tasks.base import Task
from retrain.tasks.plugins import CustomRewardTask

TaskBuilder = Callable[[DataConfig, int], Task]
TASK_ARITY = (0, 2)  # a task factory is called as factory() or factory(data, seed)
REWARD_ARITY = (3,)  # a reward as fn(prompt, completion, answer)
Checker = Callable[[DataConfig], list[str]]


def _arithmetic(data: DataConfig, seed: int) -> Task:
    from retrain.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(data, seed)


def _countdown(data: DataConfig, seed: int) -> Task:
    from retrain.tasks.countdown import CountdownTask

    return CountdownTask(data, seed)


def _file(data: DataConfig, seed: int) -> Task:
    from retrain.tasks.files import FileTask

    return FileTask(data, seed)


def _check_arithmetic(data: DataConfig) -> list[str]:
    from retrain.tasks.arithmetic import check_arithmetic

    return check_arithmetic(data)


def _check_countdown(data: DataConfig) -> list[str]:
    from retrain.tasks.countdown import check_countdown

    return check_countdown(data)


def _check_file(data: DataConfig) -> list[str]:
    from retrain.tasks.files import check_file

    return check_file(data)


TASKS: dict[str, TaskBuilder] = {"arithmetic": _arithmetic, "countdown": _countdown, "file": _file}
CHECKS: dict[str, Checker] = {
    "arithmetic": _check_arithmetic,
    "countdown": _check_countdown,
    "file": _check_file,
}


def build_task(data: DataConfig, seed: int) -> Task:
    """The task named by `data.task`, with `data.reward` (if set) replacing its reward."""
    if data.task in TASKS:
        task = TASKS[data.task](data, seed)
    elif is_plugin_path(data.task):
        task = _custom_task(data, seed)
    else:
        raise DataError(
            f"data.task: unknown task {data.task!r}; choose from {sorted(TASKS)} "
            "or give 'package.module:function'"
        )
    if data.reward:
        fn = load_plugin(data.reward, "data.reward")
        check_arity(fn, data.reward, "data.reward", REWARD_ARITY)
        task = CustomRewardTask(task, fn, data.reward)
    return task


def _custom_task(data: DataConfig, seed: int) -> Task:
    factory = load_plugin(data.task, "data.task")
    try:
        takes_nothing = not inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_nothing = False
    try:
        task = factory() if takes_nothing else factory(data, seed)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"data.task: {data.task!r} failed: {type(exc).__name__}: {exc}") from exc
    missing = [m for m in ("train_problems", "eval_problems", "reward", "is_correct")
               if not callable(getattr(task, m, None))]
    if not isinstance(getattr(task, "name", None), str):
        missing.append("name")
    if missing:
        raise DataError(
            f"data.task: {data.task!r} returned a {type(task).__name__} without {missing}; "
            "a task needs name, train_problems, eval_problems, reward, is_correct"
        )
    return task


def check_data_config(data: DataConfig, *, run_code: bool = True) -> list[str]:
    """Every problem of `[data]` found without building the task, each starting with its key.

    `run_code=False` checks plugin references without importing them (retrain.plugins)."""
    problems: list[str] = []
    if data.task in CHECKS:
        problems += CHECKS[data.task](data)
    elif is_plugin_path(data.task):
        problems += check_plugin(data.task, "data.task", arities=TASK_ARITY, run_code=run_code)
    else:
        problems.append(
            f"data.task: unknown task {data.task!r}; choose from {sorted(TASKS)} "
            "or give 'package.module:function'"
        )
    if data.reward:
        problems += check_plugin(data.reward, "data.reward", arities=REWARD_ARITY,
                                 run_code=run_code)
    return problems
