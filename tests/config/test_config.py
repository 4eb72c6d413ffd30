"""Loading, overrides, cross-field rules and the TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrain.campaign.grid import load_campaign
from retrain.cli.app import app
from retrain.config import load_config, render_toml
from retrain.config.load import build_config, parse_sets, parse_value
from retrain.config.schema import RetrainConfig
from retrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RUNS = sorted((REPO / "configs").glob("*.toml"))
SHIPPED_CAMPAIGNS = sorted((REPO / "campaigns").glob("*.toml"))
runner = CliRunner()


def test_defaults_are_valid() -> None:
    cfg, explicit = build_config({})
    assert cfg == RetrainConfig()
    assert explicit == set()


@pytest.mark.parametrize("text,value", [
    ("8", 8), ("1e-3", 1e-3), ("true", True), ("[8, 16]", [8, 16]), ("grpo", "grpo"),
    ('"quoted"', "quoted"), ("none", "none"), ("pkg.mod:fn", "pkg.mod:fn"),
])
def test_set_values_parse_by_toml_rules(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_set_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[training]\nmax_steps = 3\nclip_eps = 0.2\n")
    cfg = load_config(f, ["training.max_steps=7", "optimizer.lr=5e-4", "lora.target_modules=[\"q_proj\"]",
                          "training.clip_eps=none"])
    assert cfg.training.max_steps == 7
    assert cfg.optimizer.lr == 5e-4
    assert cfg.lora.target_modules == ("q_proj",)
    assert cfg.training.clip_eps is None


def test_set_none_is_a_choice_of_a_string_key_and_unsets_an_optional_one(tmp_path: Path) -> None:
    # docs/cli.md and getting-started.md show `--set algorithm.transform_mode=none`: "none" is
    # one of its choices (as for scale), not "unset"; only `X | None` keys are unset by
    # none/null/unset.
    f = tmp_path / "c.toml"
    f.write_text('[algorithm]\ntransform_mode = "gtpo"\nscale = "batch"\n'
                 "[training]\nclip_eps = 0.2\nclip_eps_high = 0.3\n")
    cfg = load_config(f, ["algorithm.transform_mode=none", "algorithm.scale=None",
                          "training.clip_eps=null", "training.clip_eps_high=unset"])
    assert (cfg.algorithm.transform_mode, cfg.algorithm.scale) == ("none", "none")
    assert isinstance(cfg.algorithm.scale, str) and type(cfg.algorithm.scale) is str
    assert (cfg.training.clip_eps, cfg.training.clip_eps_high) == (None, None)


@pytest.mark.parametrize("item,error", [
    # "unset" is no choice of scale: it must not silently pick scale "none" (Dr. GRPO)
    ("algorithm.scale=unset", "algorithm.scale: has no unset state"),
    ("algorithm.advantage_mode=none", "algorithm.advantage_mode: has no unset state"),
    ("logging.wandb_project=none", "logging.wandb_project: has no unset state"),
    ("training.max_steps=none", "training.max_steps: has no unset state"),
])
def test_set_none_on_a_key_without_unset_state_or_such_choice_is_refused(
        tmp_path: Path, item: str, error: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text("")
    with pytest.raises(ConfigError, match=error):
        load_config(f, [item])


def test_none_in_a_toml_file_is_a_string() -> None:
    cfg, _ = build_config({"algorithm": {"transform_mode": "none", "scale": "none"}})
    assert (cfg.algorithm.transform_mode, cfg.algorithm.scale) == ("none", "none")
    with pytest.raises(ConfigError, match="training.clip_eps: must be a number, got 'none'"):
        build_config({"training": {"clip_eps": "none"}})


def test_cli_validate_with_transform_mode_none(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[algorithm]\ntransform_mode = "gtpo"\n')
    result = runner.invoke(app, ["config", "validate", str(f), "--set", "algorithm.transform_mode=none",
                                 "--set", "algorithm.scale=none"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["config", "show", str(f), "--set", "algorithm.transform_mode=none"])
    assert shown.exit_code == 0, shown.output
    assert 'transform_mode = "none"' in shown.stdout


def test_set_wrong_type_names_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("")
    with pytest.raises(ConfigError, match=r"training.max_steps: must be an integer, got 'lots'"):
        load_config(f, ["training.max_steps=lots"])


def test_malformed_set_item() -> None:
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_sets(["max_steps"])


def test_float_field_accepts_int_and_int_rejects_bool() -> None:
    cfg, _ = build_config({"optimizer": {"lr": 1}})
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    with pytest.raises(ConfigError, match="training.max_steps: must be an integer, got true"):
        build_config({"training": {"max_steps": True}})


def test_top_level_model_shorthand() -> None:
    cfg, _ = build_config({"model": "tiny"})
    assert cfg.model.name == "tiny"


def test_squeeze_table_alone_enables_it() -> None:
    assert build_config({"squeeze": {}})[0].squeeze.enabled
    assert not build_config({})[0].squeeze.enabled
    assert not build_config({"squeeze": {"enabled": False}})[0].squeeze.enabled


def test_inactive_transform_sections_are_canonical() -> None:
    # In a campaign base, [sepa] may be set while this condition does not use sepa: the run's
    # config resets it, so two runs that differ only in unused settings are the same run.
    cfg, _ = build_config({"sepa": {"steps": 99}}, strict_sections=False)
    assert cfg.sepa.steps != 99
    cfg2, _ = build_config({"sepa": {"steps": 99}, "algorithm": {"transform_mode": "gtpo_sepa"}})
    assert cfg2.sepa.steps == 99


@pytest.mark.parametrize("path", SHIPPED_RUNS, ids=[p.name for p in SHIPPED_RUNS])
def test_shipped_run_config_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    again = tmp_path / "again.toml"
    again.write_text(render_toml(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize("path", SHIPPED_CAMPAIGNS, ids=[p.name for p in SHIPPED_CAMPAIGNS])
def test_shipped_campaign_runs_round_trip(path: Path, tmp_path: Path) -> None:
    spec = load_campaign(path)
    assert spec.runs
    for run in spec.runs:
        f = tmp_path / f"{run.config_hash}.toml"
        f.write_text(render_toml(run.config))
        assert load_config(f) == run.config
        # the run dir's config.toml (campaign tables left out) reproduces the run too
        f.write_text(render_toml(run.config, for_run=True))
        loaded = load_config(f)
        assert (loaded.training, loaded.algorithm, loaded.lora) == (run.config.training, run.config.algorithm, run.config.lora)


def test_config_show_prints_resolved_toml() -> None:
    result = runner.invoke(app, ["config", "show", str(REPO / "configs" / "single.toml"), "--set", "lora.rank=4"])
    assert result.exit_code == 0, result.output
    assert "[lora]\nrank = 4" in result.stdout
    assert "[sepa]" in result.stdout  # single.toml uses gtpo_sepa
    assert "[hicra]" not in result.stdout  # unused transform tables are not rendered


def test_config_validate_ok() -> None:
    result = runner.invoke(app, ["config", "validate", str(REPO / "campaigns" / "demo.toml")])
    assert result.exit_code == 0, result.output
    assert "15 runs" in result.stdout


def test_key_in_another_table_is_suggested() -> None:
    with pytest.raises(ConfigError, match=r"training.lr: unknown key \(did you mean 'optimizer.lr'\?\)"):
        build_config({"training": {"lr": 1e-3}})


def test_run_on_a_campaign_file_points_to_campaign_run() -> None:
    result = runner.invoke(app, ["run", str(REPO / "campaigns" / "demo.toml")])
    assert result.exit_code == 2
    assert "retrain campaign run" in result.stderr


def test_config_show_of_a_campaign_prints_its_base() -> None:
    result = runner.invoke(app, ["config", "show", str(REPO / "campaigns" / "demo.toml")])
    assert result.exit_code == 0, result.output
    assert "base config of campaign 'demo'" in result.stdout


@pytest.mark.parametrize("text,value", [
    ("[q_proj,v_proj,k_proj]", ["q_proj", "v_proj", "k_proj"]),
    ("[q_proj, v_proj]", ["q_proj", "v_proj"]),
    ("[8,16]", [8, 16]),
    ("[]", []),
])
def test_set_accepts_hydra_style_lists(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_set_hydra_list_reaches_the_config_whole(tmp_path: Path) -> None:
    # Regression: [q_proj,v_proj,k_proj] was split on commas into "[q_proj", "v_proj", "k_proj]"
    # and the run trained v_proj only.
    f = tmp_path / "c.toml"
    f.write_text("")
    cfg = load_config(f, ["lora.target_modules=[q_proj,v_proj,k_proj]"])
    assert cfg.lora.target_modules == ("q_proj", "v_proj", "k_proj")


@pytest.mark.parametrize("text", ["[q_proj,v_proj", "[a,,b]", '["a",b]', "[[a],b]"])
def test_set_malformed_list_is_refused_not_guessed(tmp_path: Path, text: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text("")
    with pytest.raises(ConfigError, match=r"--set lora.target_modules: .*"):
        load_config(f, [f"lora.target_modules={text}"])


def test_list_written_as_a_string_in_a_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"lora.target_modules: .* is a string, not a list"):
        build_config({"lora": {"target_modules": "[q_proj,v_proj]"}})


def test_huge_float_is_not_an_integer() -> None:
    cfg, _ = build_config({"training": {"max_steps": 1e3}})
    assert cfg.training.max_steps == 1000
    with pytest.raises(ConfigError, match="training.max_steps: must be an integer"):
        build_config({"training": {"max_steps": 1e100}})
    with pytest.raises(ConfigError, match="training.max_steps: must be a 64-bit integer"):
        build_config({"training": {"max_steps": 10**23}})


def test_set_transform_mode_none_on_a_file_with_transform_tables() -> None:
    # getting-started's example: the shipped single.toml has [gtpo] and [sepa]; the override
    # switches them off on purpose, so they are dropped instead of refused.
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "single.toml", ["algorithm.transform_mode=none"])
    assert cfg.algorithm.transform_mode == "none" and cfg.transforms == frozenset()
    with pytest.raises(ConfigError, match=r"sepa.steps: \[sepa\] settings are only used"):
        load_config(repo / "configs" / "single.toml", ["algorithm.transform_mode=none", "sepa.steps=3"])


def test_bad_transform_mode_is_one_problem_not_two() -> None:
    # Regression: a misspelt mode also reported [sepa] as unused "with transform_mode = 'none'".
    with pytest.raises(ConfigError) as err:
        build_config({"algorithm": {"transform_mode": "gtpo_hicra_sepa"}, "sepa": {"steps": 4}})
    assert len(err.value.problems) == 1 and "did you mean" in err.value.problems[0]
