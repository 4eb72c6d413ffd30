"""`retrain init` and `retrain plugins` through the real CLI: every scaffold passes `config
validate` and trains 2 steps as written (only sizes are shrunk with --set), existing files are
not overwritten without --force, and `plugins` lists plugin files without importing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from retrain.cli.app import app

# 2 steps of 2 prompts x 2 completions, 5 greedy eval problems: a run takes a few seconds.
TINY = ["--set", "training.max_steps=2", "--set", "training.batch_size=2",
        "--set", "training.group_size=2", "--set", "eval.size=5", "--set", "eval.samples=0",
        "--set", "backend.threads=1"]


def retrain(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.stdout


def steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reward", "advantage", "transform", "task"])
def test_plugin_scaffold_validates_and_runs_two_steps(kind: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"my_{kind}"
    out = ok(retrain("init", "plugin", name, "--kind", kind))
    assert f"wrote {name}.py" in out and f"wrote {name}.toml" in out
    assert f"retrain config validate {name}.toml" in out and f"retrain run {name}.toml" in out
    assert f'RETRAIN_PLUGIN_KIND = "{kind}"' in (tmp_path / f"{name}.py").read_text()

    validated = ok(retrain("config", "validate", f"{name}.toml"))
    assert f"plugin '{name}.py:" in validated  # the plugin was imported and checked
    ok(retrain("run", f"{name}.toml", *TINY, "--out", "run", "--no-console-output"))
    run = tmp_path / "run"
    assert steps(run) == [0, 1, 2]
    config = (run / "config.toml").read_text()
    assert f"{name}.py:" in config  # the run used the plugin, not a default
    assert (run / "environment.json").is_file()


@pytest.mark.slow
def test_campaign_scaffold_validates_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = ok(retrain("init", "campaign", "first"))
    assert "wrote first.toml" in out and "retrain campaign run first.toml" in out
    assert "ok: campaign 'first', 2 conditions, 4 runs" in ok(retrain("config", "validate", "first.toml"))
    ok(retrain("campaign", "run", "first.toml", *TINY, "--out", "camp", "--no-console-output"))
    manifest = json.loads((tmp_path / "camp" / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert sorted(manifest["runs"]) == ["grpo+none_s1", "grpo+none_s2", "maxrl+none_s1", "maxrl+none_s2"]
    for run in sorted((tmp_path / "camp" / "runs").iterdir()):
        assert steps(run) == [0, 1, 2] and (run / "environment.json").is_file()


def test_existing_files_are_kept_without_force(tmp_path: Path) -> None:
    ok(retrain("init", "plugin", "mine", "--kind", "reward", "--dir", tmp_path / "p"))
    (tmp_path / "p" / "mine.py").write_text("# edited\n")
    again = retrain("init", "plugin", "mine", "--kind", "advantage", "--dir", tmp_path / "p")
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert "mine.py" in again.stderr and "already exist" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "p" / "mine.py").read_text() == "# edited\n"
    ok(retrain("init", "plugin", "mine", "--kind", "advantage", "--dir", tmp_path / "p", "--force"))
    assert 'RETRAIN_PLUGIN_KIND = "advantage"' in (tmp_path / "p" / "mine.py").read_text()
    # written elsewhere: the next steps start with cd
    assert f"cd {tmp_path / 'c'}" in ok(retrain("init", "campaign", "c1", "--dir", tmp_path / "c"))


def test_bad_kind_and_names_give_one_clear_error(tmp_path: Path) -> None:
    bad = retrain("init", "plugin", "x", "--kind", "hook", "--dir", tmp_path)
    assert bad.exit_code == 2
    assert all(k in bad.output for k in ("reward", "advantage", "transform", "task"))
    for args, words in ((("plugin", "1x", "--kind", "reward"), "identifier"),
                        (("campaign", "a/b"), "plain directory name")):
        res = retrain("init", *args, "--dir", tmp_path)
        assert res.exit_code == 2 and words in res.stderr and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_plugins_lists_builtins_and_files_without_importing_them(tmp_path: Path) -> None:
    for kind in ("reward", "advantage", "transform", "task"):
        ok(retrain("init", "plugin", f"p_{kind}", "--kind", kind, "--dir", tmp_path))
    # a plugin file whose import would leave a marker; one with a bad kind; one with no function
    # that takes a reward's 3 arguments; and a file that is no plugin at all
    (tmp_path / "side.py").write_text('import pathlib\npathlib.Path(__file__).with_name("IMPORTED")'
                                      '.write_text("x")\nRETRAIN_PLUGIN_KIND = "advantage"\n'
                                      "def adv(rewards_G):\n    return rewards_G\n")
    (tmp_path / "odd.py").write_text('RETRAIN_PLUGIN_KIND = "loss"\n')
    (tmp_path / "short.py").write_text('RETRAIN_PLUGIN_KIND = "reward"\ndef r(a):\n    return 0.0\n')
    (tmp_path / "helper.py").write_text("def reward(p, c, a):\n    return 0.0\n")
    (tmp_path / "watch.py").write_text('RETRAIN_PLUGIN_KIND = "hook"\ndef make(cfg):\n    return None\n')

    data = json.loads(ok(retrain("plugins", "--dir", tmp_path, "--format", "json")))
    assert not (tmp_path / "IMPORTED").exists()
    uses = {f["use"].split(" = ")[1].strip('[]"').rsplit("/", 1)[-1]: f["kind"] for f in data["files"]}
    assert uses == {"p_reward.py:reward": "reward", "p_advantage.py:advantage": "advantage",
                    "p_transform.py:transform": "transform", "p_task.py:make": "task",
                    "side.py:adv": "advantage", "watch.py:make": "hook"}
    lines = {f["use"].split(" = ")[0] for f in data["files"]}
    assert lines == {"data.reward", "algorithm.advantage_mode", "algorithm.transform_mode",
                     "data.task", "hooks.names"}
    # outside the cwd a file is named by its full path, which works from anywhere
    assert f'hooks.names = ["{tmp_path}/watch.py:make"]' in {f["use"] for f in data["files"]}
    assert len(data["problems"]) == 2
    assert any("odd.py" in p and "'loss'" in p for p in data["problems"])
    assert any("short.py" in p and "3 positional arguments" in p for p in data["problems"])
    builtin = {(r["kind"], r["name"]) for r in data["builtin"]}
    assert {("task", "arithmetic"), ("advantage", "maxrl"), ("transform", "gtpo_sepa"),
            ("backend", "local"), ("hook", "norms"), ("hook group", "minimal")} <= builtin

    table = ok(retrain("plugins", "--dir", tmp_path))
    assert "built in" in table and "gtpo_sepa_hicra" in table
    assert 'data.reward = "' in table and "p_reward.py:reward" in table
    assert "skipped" in table and "odd.py" in table
    missing = retrain("plugins", "--dir", tmp_path / "nope")
    assert missing.exit_code == 2 and "no such directory" in missing.stderr
