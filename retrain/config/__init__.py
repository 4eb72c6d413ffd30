"""Configuration: one frozen dataclass per TOML table, loading, overrides, validation, rendering."""

from retrain.config.load import build_config, load_config, parse_sets, read_toml
from retrain.config.render import config_hash, config_to_dict, flat_dict, render_toml
from retrain.config.schema import SECTIONS, RetrainConfig

__all__ = [
    "SECTIONS", "RetrainConfig", "build_config", "config_hash", "config_to_dict", "flat_dict",
    "load_config", "parse_sets", "read_toml", "render_toml",
]
