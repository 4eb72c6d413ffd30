"""build_task dispatch, custom task/reward plugins, config checks, no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retrain.config.schema import DataConfig
from retrain.errors import DataError
from retrain.tasks import Task, build_task, check_data_config
from retrain.tasks.base import Problem

PLUGIN = '''
from retrain.tasks.base import Problem

def length_reward(prompt, completion, answer):
    return 1.0 if len(completion) == len(answer) else 0.0

def broken_reward(prompt, completion, answer):
    raise RuntimeError("boom")

class Echo:
    name = "echo"
    def train_problems(self, cursor, n):
        return [Problem(f"say {i}:", str(i)) for i in range(cursor, cursor + n)]
    def eval_problems(self, n):
        return [Problem(f"say -{i}:", str(-i)) for i in range(1, n + 1)]
    def reward(self, problem, completion):
        return float(completion.strip() == problem.answer)
    def is_correct(self, problem, completion):
        return self.reward(problem, completion) == 1.0

def make_echo(data, seed):
    return Echo()

def make_echo_no_args():
    return Echo()

def not_a_task(data, seed):
    return 42
'''


@pytest.fixture()
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_plugin"


def test_builtin_tasks_satisfy_protocol() -> None:
    for name in ("arithmetic", "countdown"):
        task = build_task(DataConfig(task=name), seed=0)
        assert isinstance(task, Task) and task.name == name


def test_custom_task_by_dotted_path(plugin: str) -> None:
    for factory in ("make_echo", "make_echo_no_args"):
        data = DataConfig(task=f"{plugin}:{factory}")
        assert check_data_config(data) == []
        task = build_task(data, seed=0)
        assert task.train_problems(2, 1) == [Problem("say 2:", "2")]
        assert task.reward(Problem("say 2:", "2"), "2") == 1.0


def test_custom_task_from_file_path(tmp_path: Path) -> None:
    (tmp_path / "plug.py").write_text(PLUGIN)
    task = build_task(DataConfig(task=f"{tmp_path / 'plug.py'}:make_echo"), seed=0)
    assert task.name == "echo"


def test_custom_reward_overrides_task_reward(plugin: str) -> None:
    task = build_task(DataConfig(reward=f"{plugin}:length_reward"), seed=0)
    p = Problem("12+34=", "46")
    assert task.reward(p, "99") == 1.0 and task.is_correct(p, "99")
    assert task.reward(p, "460") == 0.0
    assert task.train_problems(0, 3) == build_task(DataConfig(), seed=0).train_problems(0, 3)


def test_broken_plugins_are_data_errors(plugin: str) -> None:
    task = build_task(DataConfig(reward=f"{plugin}:broken_reward"), seed=0)
    with pytest.raises(DataError, match="data.reward.*boom"):
        task.reward(Problem("1+1=", "2"), "2")
    with pytest.raises(DataError, match="data.task"):
        build_task(DataConfig(task=f"{plugin}:not_a_task"), seed=0)


def test_check_reports_unimportable_paths() -> None:
    problems = check_data_config(DataConfig(task="no_such_mod:f", reward="json:no_such_fn"))
    assert [p.split(":")[0] for p in problems] == ["data.task", "data.reward"]
    assert check_data_config(DataConfig(task="bogus"))[0].startswith("data.task: unknown task")
    with pytest.raises(DataError):
        build_task(DataConfig(task="bogus"), seed=0)


def test_tasks_package_does_not_import_torch() -> None:
    code = (
        "import sys; import retrain.tasks, retrain.tasks.files, retrain.tasks.countdown, "
        "retrain.cli.data_cmd; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_reward_plugin_is_called_once_per_completion(tmp_path) -> None:
    # The trainer scores each completion with tasks.base.score: a user's reward function (maybe
    # slow, maybe stateful) must run once per completion, not once for reward and once more for
    # correctness.
    from retrain.config.schema import DataConfig
    from retrain.tasks import build_task
    from retrain.tasks.base import score

    plugin = tmp_path / "counting_reward.py"
    plugin.write_text("CALLS = []\n"
                      "def reward(prompt, completion, answer):\n"
                      "    CALLS.append(completion)\n"
                      "    return 1.0 if completion.strip() == answer else 0.0\n")
    task = build_task(DataConfig(reward=f"{plugin}:reward"), seed=0)
    problem = task.train_problems(0, 1)[0]
    import sys

    calls = next(m for m in list(sys.modules.values())
                 if getattr(m, "__file__", None) == str(plugin)).CALLS
    assert score(task, problem, problem.answer) == (1.0, True)
    assert score(task, problem, "nope") == (0.0, False)
    assert calls == [problem.answer, "nope"]
