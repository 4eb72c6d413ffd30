"""Issue 13.8: `config show` and `campaign plan` never run user code; `config validate` does, and
says so. Issue 13.5: a reward or advantage plugin that cannot take the arguments retrain passes
(e.g. data.reward = "os:getcwd") is refused by validate and plan, not at run time."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from retrain.cli.app import app
from retrain.errors import DataError
from retrain.plugins import locate_plugin

# Writes a marker file when imported: proof that user code ran.
PLUGIN = '''\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("yes")


def reward(prompt, completion, answer):
    return float(answer in completion)


def two_args(prompt, completion):
    return 0.0


def centred(rewards):
    return rewards - rewards.mean()


def factory(data, seed):
    raise RuntimeError("not called by validate")
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        'import pathlib\npathlib.Path(__file__).with_name("INIT_RAN").write_text("yes")\n')
    (pkg / "rewards.py").write_text(PLUGIN)
    (tmp_path / "flat_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m == "userpkg" or m.startswith("userpkg.")]:
        del sys.modules[name]  # the next test's package lives in another tmp dir


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _write(path: Path, data_lines: str, campaign: bool = False) -> Path:
    text = f'[model]\nname = "tiny"\n\n[data]\n{data_lines}\n'
    if campaign:
        text += '\n[campaign]\nseeds = [1]\n\n[[campaign.conditions]]\nadvantage_mode = "grpo"\n'
    path.write_text(text)
    return path


REFERENCES = {
    "dotted": ('reward = "userpkg.rewards:reward"', "userpkg"),
    "file": ('reward = "flat_plugin.py:reward"', "."),
}


@pytest.mark.parametrize("kind", list(REFERENCES))
@pytest.mark.parametrize("campaign", [False, True])
def test_show_and_plan_run_no_user_code_and_validate_says_it_does(
        plugin_dir: Path, kind: str, campaign: bool) -> None:
    line, where = REFERENCES[kind]
    cfg = _write(plugin_dir / "c.toml", line, campaign=campaign)
    marker = plugin_dir / where / "IMPORTED"
    commands = [["config", "show", str(cfg)]]
    if campaign:
        commands.append(["campaign", "plan", str(cfg)])
    for cmd in commands:
        res = _cli(*cmd)
        assert res.exit_code == 0, res.output
        assert not marker.exists(), f"{cmd} imported the plugin"
        assert not (plugin_dir / "userpkg" / "INIT_RAN").exists(), f"{cmd} ran the package __init__"
    res = _cli("config", "validate", str(cfg))
    assert res.exit_code == 0, res.output
    assert marker.exists()  # validate imports it to check it, and says so:
    assert "imported data.reward plugin" in res.stdout and ("userpkg.rewards" in res.stdout
                                                           or "flat_plugin.py" in res.stdout)


@pytest.mark.parametrize(("line", "needle"), [
    ('reward = "os:getcwd"', "must accept 3 positional arguments"),
    ('reward = "userpkg.rewards:two_args"', "must accept 3 positional arguments"),
    ('reward = "userpkg.rewards:missing"', "defines no 'missing'"),
    ('reward = "userpkg.nope:reward"', "cannot find module 'userpkg.nope'"),
    ('reward = "nosuchpackage_xyz.mod:reward"', "cannot find module 'nosuchpackage_xyz'"),
    ('reward = "flat_plugin.py:two_args"', "must accept 3 positional arguments"),
    ('reward = "missing_file.py:reward"', "no such file"),
    ('task = "userpkg.rewards:reward"', "must accept 0 positional arguments or 2"),
])
@pytest.mark.parametrize("command", ["plan", "validate"])
def test_a_plugin_that_cannot_work_is_refused_by_plan_and_validate(
        plugin_dir: Path, line: str, needle: str, command: str) -> None:
    cfg = _write(plugin_dir / "c.toml", line, campaign=True)
    args = ["campaign", "plan", str(cfg)] if command == "plan" else ["config", "validate", str(cfg)]
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    key = line.partition(" ")[0]
    assert f"data.{key}" in lines[0] and needle in lines[0], lines[0]
    if command == "plan":
        assert not (plugin_dir / "userpkg" / "IMPORTED").exists()
        assert not (plugin_dir / "userpkg" / "INIT_RAN").exists()


def test_advantage_plugin_is_located_statically(plugin_dir: Path) -> None:
    locate_plugin("userpkg.rewards:centred", "algorithm.advantage_mode", arities=(1,))
    with pytest.raises(DataError, match="must accept 1 positional argument"):
        locate_plugin("userpkg.rewards:reward", "algorithm.advantage_mode", arities=(1,))
    assert not (plugin_dir / "userpkg" / "IMPORTED").exists()


def test_names_bound_dynamically_are_left_to_the_run(plugin_dir: Path) -> None:
    (plugin_dir / "star.py").write_text("from math import *\n")
    locate_plugin("star.py:whatever", "data.reward", arities=(3,))  # only importing can tell
    (plugin_dir / "lazy.py").write_text("def __getattr__(name):\n    return print\n")
    locate_plugin("lazy.py:anything", "data.reward", arities=(3,))
