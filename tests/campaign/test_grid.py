"""Grid expansion: counts, names, order, zip, include/exclude, default ablation, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrain.campaign.grid import campaign_from_raw, load_campaign
from retrain.campaign.plan import diff_plans, plan_dict, spec_hash
from retrain.cli.app import app
from retrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def expand(raw: dict) -> list[str]:
    spec = campaign_from_raw(raw, source="t", default_name="t")
    return [r.name for r in spec.runs]


def test_default_ablation_five_conditions_times_seeds() -> None:
    names = expand({"campaign": {"seeds": [1, 2]}})
    assert names == [
        "grpo+none_s1", "grpo+none_s2", "maxrl+none_s1", "maxrl+none_s2",
        "maxrl+gtpo_s1", "maxrl+gtpo_s2", "maxrl+gtpo_hicra_s1", "maxrl+gtpo_hicra_s2",
        "maxrl+gtpo_sepa_s1", "maxrl+gtpo_sepa_s2",
    ]


def test_grid_is_crossed_last_axis_fastest() -> None:
    names = expand({"campaign": {"seeds": [7], "grid": {
        "algorithm.advantage_mode": ["grpo", "maxrl"], "lora.rank": [8, 32]}}})
    assert names == ["grpo+none~lora.rank=8_s7", "grpo+none~lora.rank=32_s7",
                     "maxrl+none~lora.rank=8_s7", "maxrl+none~lora.rank=32_s7"]


def test_set_none_on_a_campaign(tmp_path: Path) -> None:
    # --set goes through the same loader as a run's: "none" names the choice of a string key
    # and unsets an optional one; a condition's "none" is a TOML string
    f = tmp_path / "c.toml"
    f.write_text('[algorithm]\nscale = "batch"\n[training]\nclip_eps = 0.2\n[campaign]\nseeds = [1]\n'
                 '[[campaign.conditions]]\nadvantage_mode = "grpo"\ntransform_mode = "none"\n'
                 '[[campaign.conditions]]\nadvantage_mode = "grpo"\ntransform_mode = "gtpo"\n')
    spec = load_campaign(f, ["algorithm.scale=none", "training.clip_eps=none"])
    assert [r.name for r in spec.runs] == ["grpo+none_s1", "grpo+gtpo_s1"]
    assert {(r.config.algorithm.scale, r.config.training.clip_eps) for r in spec.runs} == {("none", None)}
    # on a grid key none removes it, as before: the default ablation runs
    assert len(load_campaign(f, ["campaign.conditions=none", "algorithm.scale=group"]).conditions) == 5


def test_zip_varies_together() -> None:
    spec = campaign_from_raw({"campaign": {"seeds": [1], "zip": [{"lora.rank": [8, 32], "lora.alpha": [16, 64]}]}},
                             source="t", default_name="t")
    assert [(r.config.lora.rank, r.config.lora.alpha) for r in spec.runs] == [(8, 16.0), (32, 64.0)]


def test_architecture_example_gives_33_runs() -> None:
    # (2 x 3 grid - 1 excluded) x 2 zip + 1 include = 11 conditions x 3 seeds
    spec = load_campaign(REPO / "campaigns" / "grid_example.toml")
    assert len(spec.conditions) == 11
    assert len(spec.runs) == 33
    labels = [c.label for c in spec.conditions]
    assert not any(lab.startswith("grpo+gtpo_sepa") for lab in labels)
    assert labels[-1] == "rloo+none"


def test_explicit_conditions_with_bare_keys_and_label() -> None:
    spec = campaign_from_raw({"campaign": {"seeds": [3], "conditions": [
        {"advantage_mode": "maxrl", "rank": 4},
        {"label": "my baseline", "advantage_mode": "grpo"},
    ]}}, source="t", default_name="t")
    assert [r.name for r in spec.runs] == ["maxrl+none~lora.rank=4_s3", "my-baseline_s3"]
    assert spec.runs[0].config.lora.rank == 4
    assert spec.runs[0].overrides == {"algorithm.advantage_mode": "maxrl", "lora.rank": 4}


def test_nested_toml_dotted_keys_in_condition() -> None:
    # `lora.rank = 8` (unquoted) is a nested table in TOML; it means the same as "lora.rank"
    spec = campaign_from_raw({"campaign": {"seeds": [1], "conditions": [{"lora": {"rank": 8}}]}},
                             source="t", default_name="t")
    assert spec.runs[0].config.lora.rank == 8


def test_seed_is_set_per_run_and_hash_differs() -> None:
    spec = campaign_from_raw({"campaign": {"seeds": [1, 2], "conditions": [{"advantage_mode": "grpo"}]}},
                             source="t", default_name="t")
    assert [r.config.training.seed for r in spec.runs] == [1, 2]
    assert spec.runs[0].config_hash != spec.runs[1].config_hash


def test_labels_are_filesystem_safe() -> None:
    spec = campaign_from_raw({"campaign": {"seeds": [1], "conditions": [
        {"lora.target_modules": ["q_proj", "v_proj"], "data.path": "a/b c.jsonl", "data.task": "file"}]}},
        source="t", default_name="t", plugins="skip")
    name = spec.runs[0].name
    assert "/" not in name and " " not in name
    assert name.startswith("grpo+none~lora.target_modules=q_proj,v_proj")


def test_expansion_is_deterministic_and_hash_stable() -> None:
    a = load_campaign(REPO / "campaigns" / "grid_example.toml")
    b = load_campaign(REPO / "campaigns" / "grid_example.toml")
    assert [r.name for r in a.runs] == [r.name for r in b.runs]
    assert spec_hash(a.runs) == spec_hash(b.runs)
    c = load_campaign(REPO / "campaigns" / "grid_example.toml", ["training.max_steps=31"])
    assert spec_hash(c.runs) != spec_hash(a.runs)
    diff = diff_plans(plan_dict(a), plan_dict(c))
    assert diff == ["training.max_steps: 30 -> 31"]


def test_include_adds_to_default_ablation() -> None:
    names = expand({"campaign": {"seeds": [1], "include": [{"advantage_mode": "rloo"}]}})
    assert len(names) == 6 and names[-1] == "rloo+none_s1"


@pytest.mark.parametrize("where", ["include", "conditions"])
def test_a_bad_key_is_reported_once_not_as_a_duplicate(where: str) -> None:
    """Issue 13.9: the bad key is dropped from the condition, which then looked like the default
    grpo+none condition; only the key's own problem is reported."""
    camp: dict[str, Any] = {"seeds": [1], "conditions": [{"advantage_mode": "grpo"}]}
    camp.setdefault(where, []).append({"advantage_mode": "grpo", "lora.rnak": 8})
    with pytest.raises(ConfigError) as err:
        campaign_from_raw({"campaign": camp}, source="t", default_name="t")
    assert len(err.value.problems) == 1, err.value.problems
    assert "lora.rnak" in err.value.problems[0] and "duplicate" not in str(err.value)


def test_plan_cli_table_and_json() -> None:
    result = runner.invoke(app, ["campaign", "plan", str(REPO / "campaigns" / "demo.toml")])
    assert result.exit_code == 0, result.output
    assert "15 runs" in result.stdout
    result = runner.invoke(app, ["campaign", "plan", str(REPO / "campaigns" / "demo.toml"), "--json"])
    data = json.loads(result.stdout)
    assert len(data["runs"]) == 15
    assert data["runs"][3]["name"] == "maxrl+none_s42"
    assert data["runs"][3]["overrides"] == {"algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "none"}
    assert data["total_steps"] == sum(r["max_steps"] for r in data["runs"])


def test_help_and_plan_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from retrain.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['campaign', 'plan', {str(REPO / 'campaigns' / 'demo.toml')!r}]); assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_custom_label_crossed_with_grid_keeps_axes() -> None:
    names = expand({"campaign": {"seeds": [1], "conditions": [
        {"label": "A", "advantage_mode": "maxrl"}, {"label": "B"}], "grid": {"lora.rank": [4, 8]}}})
    assert names == ["A~lora.rank=4_s1", "A~lora.rank=8_s1", "B~lora.rank=4_s1", "B~lora.rank=8_s1"]


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_run_file_is_not_a_campaign(tmp_path: Path, command: str) -> None:
    # Regression: `campaign run configs/single.toml` silently trained the default ablation.
    out = tmp_path / "out"
    args = ["campaign", command, str(REPO / "configs" / "single.toml")]
    result = runner.invoke(app, args + (["--out", str(out)] if command == "run" else []))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "no [campaign] table" in result.stderr
    assert f"retrain run {REPO / 'configs' / 'single.toml'}" in " ".join(result.stderr.split())
    assert not out.exists()


def test_a_campaign_table_from_set_makes_a_campaign(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[model]\nname = "tiny"\n')
    spec = load_campaign(f, ["campaign.seeds=[1]"])
    assert len(spec.runs) == 5  # the default ablation, asked for explicitly
