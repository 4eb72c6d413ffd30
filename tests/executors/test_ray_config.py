"""The Ray executor's optional-dependency checks and environment forwarding (no Ray needed)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from retrain.config.load import build_config
from retrain.errors import ConfigError, MissingExtraError
from retrain.executors.ray_executor import RayExecutor, forwarded_env


def test_config_asking_for_ray_fails_at_load_when_ray_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        build_config({"campaign": {"executor": "ray"}})
    assert "campaign.executor" in str(err.value) and "retrain[ray]" in str(err.value)
    build_config({"campaign": {"executor": "pool"}})  # other executors do not care


def test_executor_names_the_extra_when_ray_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(MissingExtraError, match=r"retrain\[ray\]"):
        RayExecutor()


def test_forwarded_env_keeps_settings_and_drops_credentials() -> None:
    env = {"RETRAIN_CACHE": "/nfs/cache", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_API_KEY": "x", "HF_TOKEN": "y", "PATH": "/bin"}
    assert forwarded_env(env) == {"RETRAIN_CACHE": "/nfs/cache", "HF_HUB_OFFLINE": "1",
                                  "WANDB_MODE": "offline"}
