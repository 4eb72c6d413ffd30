"""algorithm.transform_mode = 'file.py:function': checked like the other plugins (validate imports
and tries it, show/plan only read it), the built-in transforms' tables become unused, and the
condition label keeps the mode string."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from retrain.cli.app import app
from retrain.config import load_config
from retrain.errors import ConfigError

SOURCE = '''\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("yes")


def double(adv_T, batch):
    return 2.0 * adv_T


def one_arg(adv_T):
    return adv_T


def wrong_length(adv_T, batch):
    return adv_T[:-1]


def boom(adv_T, batch):
    raise KeyError("planning")
'''


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tr.py").write_text(SOURCE)
    (tmp_path / "run.toml").write_text('[model]\nname = "tiny"\n[algorithm]\n'
                                       'transform_mode = "tr.py:double"\n')
    return tmp_path


def test_a_plugin_transform_uses_no_built_in_transform(plugin_dir: Path) -> None:
    cfg = load_config("run.toml")
    assert cfg.transforms == frozenset()
    assert not (cfg.uses_gtpo or cfg.uses_hicra or cfg.uses_sepa)
    assert cfg.condition == "grpo+tr.py:double"


def test_validate_imports_and_tries_it_show_does_not(plugin_dir: Path) -> None:
    shown = _cli("config", "show", "run.toml")
    assert shown.exit_code == 0 and 'transform_mode = "tr.py:double"' in shown.stdout
    assert not (plugin_dir / "IMPORTED").exists()
    checked = _cli("config", "validate", "run.toml")
    assert checked.exit_code == 0, checked.output
    assert "algorithm.transform_mode plugin 'tr.py:double'" in checked.stdout
    assert (plugin_dir / "IMPORTED").exists()


@pytest.mark.parametrize("fn,words", [
    ("one_arg", "must accept 2 positional arguments"),
    ("wrong_length", "must return one finite float per token"),
    ("boom", "failed on a sample batch"),
    ("missing", "defines no 'missing'"),
])
def test_a_broken_transform_is_one_clear_error(plugin_dir: Path, fn: str, words: str) -> None:
    res = _cli("config", "validate", "run.toml", "--set", f"algorithm.transform_mode=tr.py:{fn}")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.count("error:") == 1
    assert "algorithm.transform_mode:" in res.stderr and words in res.stderr


def test_arity_is_checked_without_running_code_by_show(plugin_dir: Path) -> None:
    res = _cli("config", "show", "run.toml", "--set", "algorithm.transform_mode=tr.py:one_arg")
    assert res.exit_code == 2 and "defined as one_arg(adv_T)" in res.stderr
    assert not (plugin_dir / "IMPORTED").exists()


def test_tables_of_built_in_transforms_are_refused_or_dropped(plugin_dir: Path) -> None:
    (plugin_dir / "gtpo.toml").write_text('[algorithm]\ntransform_mode = "tr.py:double"\n'
                                          "[gtpo]\nbeta = 0.3\n")
    with pytest.raises(ConfigError, match=r"gtpo\.beta: \[gtpo\] settings are only used"):
        load_config("gtpo.toml")
    # switching to the plugin with --set drops the file's [sepa] table, as for built-in modes
    (plugin_dir / "sepa.toml").write_text('[algorithm]\ntransform_mode = "gtpo_sepa"\n'
                                          "[sepa]\nsteps = 5\n")
    cfg = load_config("sepa.toml", ["algorithm.transform_mode=tr.py:double"])
    assert cfg.sepa.steps == 20 and not cfg.uses_sepa
