"""Verifiable tasks and rewards: arithmetic, countdown, dataset files, user plugins.

The trainer needs only `build_task(data, seed)` and the `Task` protocol; the config loader calls
`check_data_config(data)`. Nothing here imports torch.
"""

from __future__ import annotations

from retrain.tasks.base import Problem, Task
from retrain.tasks.registry import TASKS, build_task, check_data_config

__all__ = ["TASKS", "Problem", "Task", "build_task", "check_data_config"]
