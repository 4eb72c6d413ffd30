"""RetrainConfig → nested dict / TOML, and the config's identity hash.

Rendering omits unset optional keys and the tables of transforms the run does not use, so that
`load(render(cfg)) == cfg` for every canonical config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import tomli_w

from retrain.config.schema import CAMPAIGN_ONLY_SECTIONS, SECTIONS, RetrainConfig, inactive_sections


def config_to_dict(cfg: RetrainConfig, *, for_run: bool = False) -> dict[str, Any]:
    """Nested plain dict. `for_run`: leave out campaign-level tables ([campaign], [squeeze]).
    A multi-phase run's `phases` is a list of tables (dotted keys), the TOML `[[phases]]`; the
    [curriculum] and [probe] tables appear only with it."""
    skip = set(inactive_sections(cfg))
    if for_run:
        skip |= set(CAMPAIGN_ONLY_SECTIONS)
    if not cfg.phases:
        skip |= {"curriculum", "probe", "replay"}
    out: dict[str, Any] = {}
    for name in SECTIONS:
        if name in skip:
            continue
        section = getattr(cfg, name)
        table: dict[str, Any] = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is None:
                continue
            table[f.name] = list(value) if isinstance(value, tuple) else value
        out[name] = table
    if cfg.phases:
        out["phases"] = [p.as_table() for p in cfg.phases]
    return out


def render_toml(cfg: RetrainConfig, *, for_run: bool = False, header: str = "") -> str:
    body = tomli_w.dumps(config_to_dict(cfg, for_run=for_run))
    return (header.rstrip() + "\n\n" if header else "") + body


def config_hash(cfg: RetrainConfig) -> str:
    """Stable short hash of what defines a run (campaign-level tables excluded)."""
    blob = json.dumps(config_to_dict(cfg, for_run=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def flat_dict(cfg: RetrainConfig, *, for_run: bool = True) -> dict[str, Any]:
    """{'section.key': value} — for diffs and for wandb run config."""
    return {f"{s}.{k}": v for s, t in config_to_dict(cfg, for_run=for_run).items()
            if isinstance(t, dict) for k, v in t.items()}
