"""Campaign spec → conditions → runs. Pure functions, no torch.

A campaign file is a base run config plus a `[campaign]` table holding `seeds` and any mix of
`[[campaign.conditions]]`, `[campaign.grid]`, `[[campaign.zip]]`, `[[campaign.exclude]]`,
`[[campaign.include]]` (semantics: docs/campaigns.md). Expansion is deterministic: conditions in
file order (explicit conditions × grid axes × zip groups, the last axis varying fastest), then
includes; every condition runs once per seed, condition-major. Under
`seeds_policy = "until_decided"` the runs are those of every potential seed
(`CampaignConfig.run_seeds`); which of them run is decided look by look (campaign/sequential.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from retrain.config.load import (
    CAMPAIGN_STRUCTURE_KEYS,
    apply_dotted,
    build_config,
    parse_sets,
    read_toml,
    suggest,
)
from retrain.config.render import config_hash
from retrain.config.schema import SECTIONS, TRANSFORM_SECTIONS, RetrainConfig
from retrain.errors import ConfigError

DEFAULT_ABLATION: tuple[dict[str, Any], ...] = (
    {"algorithm.advantage_mode": "grpo", "algorithm.transform_mode": "none"},
    {"algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "none"},
    {"algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "gtpo"},
    {"algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "gtpo_hicra"},
    {"algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "gtpo_sepa"},
)
_CORE_KEYS = ("algorithm.advantage_mode", "algorithm.transform_mode")
_SAFE = re.compile(r"[^A-Za-z0-9._+=,~-]")


@dataclasses.dataclass(frozen=True)
class Condition:
    label: str
    overrides: Mapping[str, Any]  # dotted key -> value, in file order


@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str  # f"{condition}_s{seed}"
    condition: str
    seed: int
    overrides: Mapping[str, Any]
    run_dir: str  # relative to the campaign dir
    config: RetrainConfig
    config_hash: str

    @property
    def max_steps(self) -> int:
        return self.config.training.max_steps


@dataclasses.dataclass(frozen=True)
class CampaignSpec:
    name: str
    source: str
    base: RetrainConfig
    conditions: tuple[Condition, ...]
    runs: tuple[RunSpec, ...]


# --- keys --------------------------------------------------------------------------------------

def _all_keys() -> dict[str, list[str]]:
    """bare key -> dotted keys that have it."""
    out: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        if section == "campaign":
            continue
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, []).append(f"{section}.{f.name}")
    return out


def resolve_key(key: str, where: str) -> tuple[str | None, str | None]:
    """A dotted key as is, or a bare key where unambiguous. Returns (dotted, problem)."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in SECTIONS or section == "campaign":
            return None, f"{where}: unknown table '{section}' in key '{key}'{suggest(section, SECTIONS)}"
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if name not in names:
            return None, f"{where}: unknown key '{key}'{suggest(name, names)}"
        return key, None
    candidates = _all_keys().get(key)
    if not candidates:
        flat = [d for v in _all_keys().values() for d in v]
        return None, f"{where}: unknown key '{key}'{suggest(key, list(_all_keys()) + flat)}"
    if len(candidates) > 1:
        return None, f"{where}: key '{key}' is ambiguous; write one of {', '.join(candidates)}"
    return candidates[0], None


def flatten_keys(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'lora': {'rank': 8}} (TOML bare dotted keys) -> {'lora.rank': 8}."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(flatten_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resolve_table(table: Any, where: str, problems: list[str], *, lists: bool = False) -> dict[str, Any]:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table of key = value, got {type(table).__name__}")
        return {}
    out: dict[str, Any] = {}
    for key, value in flatten_keys(table).items():
        dotted, err = resolve_key(key, f"{where}.{key!r}" if "." in key else f"{where}.{key}")
        if err:
            problems.append(err)
            continue
        assert dotted is not None
        if dotted == "training.seed":
            problems.append(f"{where}.{key}: seeds are set by campaign.seeds, not per condition")
            continue
        if lists:
            if not isinstance(value, list):
                problems.append(f"{where}.\"{key}\": an axis must be a list of values, got {value!r}")
                continue
            if not value:
                problems.append(f"{where}.\"{key}\": empty axis; give at least one value")
                continue
        if dotted in out:
            problems.append(f"{where}: '{key}' given twice")
        out[dotted] = value
    return out


# --- labels ------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_fmt(v) for v in value)
    return str(value)


def make_label(overrides: Mapping[str, Any], base: RetrainConfig) -> str:
    """'maxrl+gtpo_sepa' then '~key=value' for every other override; filesystem-safe."""
    adv = overrides.get("algorithm.advantage_mode", base.algorithm.advantage_mode)
    tr = overrides.get("algorithm.transform_mode", base.algorithm.transform_mode)
    parts = [f"{_fmt(adv)}+{_fmt(tr)}"]
    parts += [f"{k}={_fmt(v)}" for k, v in overrides.items() if k not in _CORE_KEYS]
    return _SAFE.sub("-", "~".join(parts).replace(":", "."))


# --- expansion ---------------------------------------------------------------------------------

def _combos(camp: Mapping[str, Any], problems: list[str]) -> list[dict[str, Any]] | None:
    """Explicit conditions x grid x zips; None when none of them is given."""
    factors: list[list[dict[str, Any]]] = []
    given = False
    conds = camp.get("conditions")
    if conds is not None:
        given = True
        if not isinstance(conds, list) or not conds:
            problems.append("campaign.conditions: must be a non-empty array of tables ([[campaign.conditions]])")
        else:
            rows = []
            for i, c in enumerate(conds):
                c = dict(c) if isinstance(c, dict) else c
                label = c.pop("label", None) if isinstance(c, dict) else None
                n_problems = len(problems)
                row = _resolve_table(c, f"campaign.conditions[{i}]", problems)
                if len(problems) > n_problems:
                    continue  # reported; what is left of it could pose as another condition
                if label is not None:
                    row["__label__"] = str(label)
                    row["__label_keys__"] = tuple(k for k in row if not k.startswith("__"))
                rows.append(row)
            factors.append(rows)
    grid = camp.get("grid")
    if grid is not None:
        given = True
        axes = _resolve_table(grid, "campaign.grid", problems, lists=True)
        if not axes and not problems:
            problems.append("campaign.grid: empty grid; give at least one axis like \"lora.rank\" = [8, 32]")
        for key, values in axes.items():
            factors.append([{key: v} for v in values])
    zips = camp.get("zip")
    if zips is not None:
        given = True
        if not isinstance(zips, list):
            problems.append("campaign.zip: must be an array of tables ([[campaign.zip]])")
            zips = []
        for i, z in enumerate(zips):
            n_problems = len(problems)
            axes = _resolve_table(z, f"campaign.zip[{i}]", problems, lists=True)
            if not axes and len(problems) == n_problems:
                problems.append(f"campaign.zip[{i}]: empty zip; give axes that vary together like "
                                "\"lora.rank\" = [8, 32] and \"lora.alpha\" = [16, 64]")
                continue
            lengths = {k: len(v) for k, v in axes.items()}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
                problems.append(f"campaign.zip[{i}]: axes vary together and need equal lengths; {shown}")
                continue
            if axes:
                n = next(iter(lengths.values()))
                factors.append([{k: v[j] for k, v in axes.items()} for j in range(n)])
    if not given:
        return None
    out = []
    for parts in itertools.product(*factors):
        merged: dict[str, Any] = {}
        for part in parts:
            for k, v in part.items():
                if k in merged and not k.startswith("__") and merged[k] != v:
                    problems.append(f"campaign: key '{k}' is set by two grid parts ({merged[k]!r} and {v!r})")
                merged[k] = v
        out.append(merged)
    return out


def _matches(cond: Mapping[str, Any], pattern: Mapping[str, Any], base_flat: Mapping[str, Any]) -> bool:
    return all(cond.get(k, base_flat.get(k)) == v for k, v in pattern.items())


def expand_conditions(camp: Mapping[str, Any], base: RetrainConfig, base_flat: Mapping[str, Any],
                      problems: list[str]) -> list[Condition]:
    combos = _combos(camp, problems)
    if combos is None:
        combos = [dict(c) for c in DEFAULT_ABLATION]
    for i, ex in enumerate(_as_list(camp.get("exclude"), "campaign.exclude", problems)):
        pattern = _resolve_table(ex, f"campaign.exclude[{i}]", problems)
        before = len(combos)
        combos = [c for c in combos if not _matches(c, pattern, base_flat)]
        if pattern and len(combos) == before:
            problems.append(f"campaign.exclude[{i}]: matches no condition ({_fmt_pattern(pattern)}); check the values")
    for i, inc in enumerate(_as_list(camp.get("include"), "campaign.include", problems)):
        n_problems = len(problems)
        row = _resolve_table(inc, f"campaign.include[{i}]", problems)
        if len(problems) == n_problems:  # else reported; the rest could pose as a duplicate
            combos.append(row)
    conditions: list[Condition] = []
    seen: dict[str, int] = {}
    for c in combos:
        label = c.pop("__label__", None)
        own = set(c.pop("__label_keys__", ()))
        if label:
            # a custom label names the condition's own overrides; grid/zip axes are still appended
            extra = [f"{k}={_fmt(v)}" for k, v in c.items() if k not in own]
            label = _SAFE.sub("-", "~".join([label, *extra]).replace(":", "."))
        else:
            label = make_label(c, base)
        if label in seen:
            problems.append(f"campaign: duplicate condition '{label}' (conditions must differ)")
            continue
        seen[label] = 1
        conditions.append(Condition(label=label, overrides=c))
    if not conditions and not problems:
        problems.append("campaign: every condition was excluded; nothing to run")
    return conditions


def _as_list(value: Any, where: str, problems: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where}: must be an array of tables ([[{where}]])")
        return []
    return value


def _fmt_pattern(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in p.items())


def load_campaign(path: str | Path, sets: Iterable[str] = (), *, plugins: str = "import") -> CampaignSpec:
    """Load, validate and expand a campaign file; every problem is reported at once."""
    raw = read_toml(path)
    overrides = parse_sets(sets)
    if "campaign" not in raw and not any(k.startswith("campaign.") for k in overrides):
        # Without this a run file silently became the default ablation (5 conditions x seeds).
        raise ConfigError([f"no [campaign] table: this is a single run's config; train it with "
                           f"`retrain run {path}`, or add a [campaign] table with seeds and "
                           f"conditions (docs/campaigns.md)"], source=str(path))
    raw = apply_dotted(raw, overrides)
    return campaign_from_raw(raw, source=str(path), default_name=Path(path).stem, plugins=plugins)


def campaign_from_raw(raw: Mapping[str, Any], *, source: str, default_name: str,
                      plugins: str = "import") -> CampaignSpec:
    camp = raw.get("campaign", {})
    if not isinstance(camp, dict):
        raise ConfigError(["campaign: must be a table ([campaign])"], source=source)
    base_raw = dict(raw)
    base_raw["campaign"] = {k: v for k, v in camp.items() if k not in CAMPAIGN_STRUCTURE_KEYS}
    base, explicit = build_config(base_raw, source=source, strict_sections=False, plugins=plugins)
    problems: list[str] = []
    from retrain.config.render import flat_dict

    base_flat = flat_dict(base, for_run=False)
    conditions = expand_conditions(camp, base, base_flat, problems)
    runs: list[RunSpec] = []
    used_sections: set[str] = set()
    if not problems:
        for cond in conditions:
            cond_raw = apply_dotted(base_raw, cond.overrides)
            try:
                cfg, _ = build_config(cond_raw, strict_sections=False, plugins=plugins,
                                      prefix=f"condition '{cond.label}': ")
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            used_sections |= cfg.transforms
            for seed in base.campaign.run_seeds:  # under until_decided: every potential seed
                run_cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, seed=seed))
                name = f"{cond.label}_s{seed}"
                runs.append(RunSpec(name=name, condition=cond.label, seed=seed,
                                    overrides=dict(cond.overrides), run_dir=f"runs/{name}",
                                    config=run_cfg, config_hash=config_hash(run_cfg)))
    for run in runs:
        if len(run.name.encode()) > MAX_RUN_NAME_BYTES:
            problems.append(f"condition '{run.condition[:40]}…': its run name is "
                            f"{len(run.name.encode())} bytes; run names become directory names "
                            f"(at most {MAX_RUN_NAME_BYTES} bytes): give the condition a shorter "
                            "`label`")
            break
    first_label: dict[str, str] = {}
    for run in runs:  # e.g. "lora.rank" = [8, 8.0]: two labels, one resolved config
        other = first_label.setdefault(f"{run.seed}/{run.config_hash}", run.condition)
        if other != run.condition:
            problems.append(f"campaign: conditions '{other}' and '{run.condition}' resolve to the "
                            "same config; remove one of them")
            break
    for section in TRANSFORM_SECTIONS:
        keys = sorted(k for k in explicit if k.startswith(section + "."))
        if keys and not problems and section not in used_sections:
            problems.append(f"{keys[0]}: [{section}] settings are given but no condition uses a {section} transform")
    if base.campaign.seeds_policy == "until_decided" and not problems:
        problems.extend(_sequential_problems(base, [c.label for c in conditions]))
    if not base.campaign.seeds:
        problems.append("campaign.seeds: give at least one seed, e.g. seeds = [42, 101]")
    elif len(set(base.campaign.seeds)) != len(base.campaign.seeds):
        problems.append(f"campaign.seeds: duplicate seeds in {list(base.campaign.seeds)}")
    if base.campaign.name and not _SAFE_NAME.fullmatch(base.campaign.name):
        problems.append(f"campaign.name: {base.campaign.name!r} must be a plain directory name "
                        "(letters, digits, . _ + = ~ -, not starting with '.'), e.g. 'lr_sweep'")
    if problems:
        raise ConfigError(problems, source=source)
    name = base.campaign.name or default_name
    return CampaignSpec(name=name, source=source, base=base, conditions=tuple(conditions), runs=tuple(runs))


def _sequential_problems(base: RetrainConfig, labels: list[str]) -> list[str]:
    """until_decided tests every condition against a baseline: it needs two conditions, and a
    sequential_baseline that names one of them."""
    wanted = base.campaign.sequential_baseline
    if len(labels) < 2:
        return ["campaign.seeds_policy: 'until_decided' tests each condition against a baseline "
                f"condition, but the campaign has one condition ({labels[0] if labels else '-'}); "
                "add a condition or use seeds_policy = 'fixed'"]
    if wanted and wanted not in labels:
        return [f"campaign.sequential_baseline: {wanted!r} is not a condition of this campaign"
                f"{suggest(wanted, labels)}; conditions: {', '.join(labels)}"]
    return []


# A run name is a directory name (file systems allow 255 bytes); room is left for the suffixes
# retrain and tools add (wandb, `superseded/`).
MAX_RUN_NAME_BYTES = 200

# A campaign name becomes a directory under logs/: no separators, no '..', nothing absolute.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+=~-][A-Za-z0-9._+=~-]{0,99}")
