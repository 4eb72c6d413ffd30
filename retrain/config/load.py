"""TOML → RetrainConfig: parsing, type/range validation, cross-field rules, `--set` overrides.

Precedence: dataclass defaults < TOML file < `--set section.key=value`. Every problem of a file
is collected with its dotted path and raised once as a ConfigError.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain.config.phases import PhaseConfig
from retrain.config.schema import (
    MAX_SEQUENCES,
    SECTIONS,
    RetrainConfig,
    inactive_sections,
)
from retrain.errors import ConfigError

try:  # stdlib on Python >= 3.11; tomli is the same parser for older interpreters
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"no such file: {p} (pass the path of a .toml config)"])
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], source=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError(["not a UTF-8 text file"], source=str(p)) from None


def suggest(name: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or ''."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- field types -------------------------------------------------------------------------------

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _describe(inner[0]) + " (or unset)"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


class Unset(str):
    """A bare `none`, `null` or `unset` given to `--set`: the word, lowercased.

    It unsets an optional key (type `X | None`). A string key whose choices include the word
    takes it as that choice (`--set algorithm.transform_mode=none`); any other key has no unset
    state. A TOML file has no such word: there, "none" is always a string.
    """

    __slots__ = ()


UNSET_WORDS = ("none", "null", "unset")


def coerce(value: Any, tp: Any, choices: Sequence[str] = ()) -> tuple[Any, str | None]:
    """Check `value` against the field type; returns (converted value, error or None).
    `choices`: the field's allowed strings, which an `Unset` word may name."""
    if isinstance(value, Unset):
        value = str(value) if value in choices else None
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if value is None:
            return None, None
        return coerce(value, inner)
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        if isinstance(value, str) and elem is str and value.lstrip().startswith("["):
            return value, f"must be {_describe(tp)}: {_show(value)} is a string, not a list; write a TOML list (['a', 'b'])"
        if isinstance(value, str) and elem is str:
            # "a,b,c" is accepted for string lists (wandb_tags in the original tool was comma-separated)
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            return value, f"must be {_describe(tp)}, got {_show(value)}"
        out = []
        for v in value:
            cv, err = coerce(v, elem)
            if err:
                return value, f"must be {_describe(tp)}, got {_show(value)}"
            out.append(cv)
        return tuple(out), None
    if value is None:
        return value, "has no unset state (only optional keys accept none); give a value"
    if tp is bool:
        return (value, None) if isinstance(value, bool) else (value, f"must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        # 1e3 means 1000; a float beyond 2**53 is no longer an exact integer (1e100 steps is a typo)
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            return int(value), None
        return value, f"must be an integer, got {_show(value)}"
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # inf/nan pass every range check and poison training
                return value, f"must be a finite number, got {_show(value)}"
            return float(value), None
        return value, f"must be a number, got {_show(value)}"
    if tp is str:
        return (value, None) if isinstance(value, str) else (value, f"must be a string, got {_show(value)}")
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in schema.py, not user input


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value) if not isinstance(value, list | tuple) else "[" + ", ".join(_show(v) for v in value) + "]"


def check_range(value: Any, meta: Mapping[str, Any]) -> str | None:
    """Range and choice rules from the field's metadata."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and isinstance(value, str):
        if value not in choices and not (meta.get("open_choices") and ":" in value):
            extra = " (or 'package.module:function')" if meta.get("open_choices") else ""
            shown = ", ".join(c if c else '""' for c in choices)
            return f"must be one of {shown}{extra}, got {value!r}{suggest(value, choices)}"
    if meta.get("nonempty") and (value == "" or value == ()):
        return f"must not be empty{meta.get('nonempty_hint', '')}"
    nums = value if isinstance(value, tuple) else (value,)
    for v in nums:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        for key, op, word in (("ge", float.__ge__, ">="), ("gt", float.__gt__, ">"),
                              ("le", float.__le__, "<="), ("lt", float.__lt__, "<")):
            bound = meta.get(key)
            if bound is not None and not op(float(v), float(bound)):
                b = int(bound) if float(bound).is_integer() else bound
                return f"must be {word} {b}, got {_show(value)}"
        if isinstance(v, int) and not -(2**63) <= v < 2**63:  # TOML integers are 64-bit; Python's are not
            return f"must be a 64-bit integer, got {_show(value)}"
    return None


# --- parsing -----------------------------------------------------------------------------------

def parse_sections(raw: Mapping[str, Any], *, prefix: str = "") -> tuple[dict[str, Any], list[str], set[str]]:
    """Validate every table and key of `raw` (campaign structure keys excluded by the caller).

    Returns (section name -> dataclass instance, problems, explicit dotted keys).
    """
    problems: list[str] = []
    explicit: set[str] = set()
    built: dict[str, Any] = {}
    raw = dict(raw)
    # `model = "tiny"` at the top level is shorthand for [model] name = "tiny".
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    for name, value in raw.items():
        if name not in SECTIONS:
            problems.append(f"{prefix}{name}: unknown table{suggest(name, SECTIONS)}; "
                            f"tables are {', '.join(SECTIONS)}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{prefix}{name}: must be a table ([{name}]), got {_show(value)}")
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            built[name] = cls()
            continue
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            path = f"{prefix}{name}.{key}"
            if key not in fields:
                hint = suggest(key, fields) or _other_table(key, name)
                problems.append(f"{path}: unknown key{hint}; [{name}] keys are {', '.join(fields)}")
                continue
            cv, err = coerce(value, hints[key], fields[key].metadata.get("choices") or ())
            if err is None:
                err = check_range(cv, fields[key].metadata)
            if err:
                problems.append(f"{path}: {err}")
                continue
            kwargs[key] = cv
            explicit.add(f"{name}.{key}")
        if name == "squeeze" and "squeeze" in raw and "enabled" not in table:
            kwargs["enabled"] = True  # a [squeeze] table alone turns it on (docs/configuration.md)
        built[name] = cls(**kwargs)
    return built, problems, explicit


def _other_table(key: str, table: str) -> str:
    """' (did you mean 'optimizer.lr'?)' when the key lives in another table."""
    homes = [s for s, cls in SECTIONS.items() if s != table
             and key in {f.name for f in dataclasses.fields(cls)}]
    return f" (did you mean '{homes[0]}.{key}'?)" if len(homes) == 1 else ""


def cross_field_problems(cfg: RetrainConfig, explicit: set[str], *, strict_sections: bool,
                         prefix: str = "") -> list[str]:
    """Rules that involve several keys. `strict_sections`: settings of an unused transform are errors."""
    p: list[str] = []
    t = cfg.training
    if t.clip_eps_high is not None and t.clip_eps is None:
        p.append(f"{prefix}training.clip_eps_high: needs training.clip_eps (the lower clip bound) to be set")
    if t.batch_size * t.group_size > MAX_SEQUENCES:
        p.append(f"{prefix}training.group_size: batch_size × group_size = "
                 f"{t.batch_size * t.group_size:,} sequences per step, more than any machine "
                 f"samples ({MAX_SEQUENCES:,} at most); check training.batch_size and group_size")
    if cfg.eval.size > cfg.data.eval_size:
        p.append(f"{prefix}eval.size: must be <= data.eval_size ({cfg.data.eval_size}), got {cfg.eval.size}")
    bp = cfg.backpressure
    if bp.min_size > bp.max_size:
        p.append(f"{prefix}backpressure.min_size: must be <= backpressure.max_size ({bp.max_size}), got {bp.min_size}")
    if bp.increase_margin > bp.throttle_margin:
        p.append(f"{prefix}backpressure.increase_margin: must be <= backpressure.throttle_margin "
                 f"({bp.throttle_margin}), got {bp.increase_margin}")
    if cfg.algorithm.scale != "group" and "algorithm.scale" in explicit and cfg.algorithm.advantage_mode != "grpo":
        p.append(f"{prefix}algorithm.scale: only used with advantage_mode = 'grpo', "
                 f"got advantage_mode {cfg.algorithm.advantage_mode!r}")
    if strict_sections:
        for section in inactive_sections(cfg):
            keys = sorted(k for k in explicit if k.startswith(section + "."))
            if keys:
                p.append(f"{prefix}{keys[0]}: [{section}] settings are only used with a {section} "
                         f"transform, but algorithm.transform_mode = {cfg.algorithm.transform_mode!r}; "
                         f"remove them or pick a transform_mode that contains '{section}'")
    from retrain.backend.local.cache import PRESET_LINEAR_LAYERS, PRESETS

    if cfg.model.name in PRESETS:
        unknown = [m for m in cfg.lora.target_modules if m not in PRESET_LINEAR_LAYERS]
        if unknown:
            p.append(f"{prefix}lora.target_modules: {unknown} are not layers of the "
                     f"'{cfg.model.name}' model; choose from {list(PRESET_LINEAR_LAYERS)}")
        hidden = PRESETS[cfg.model.name]["hidden_size"]  # the smallest side of its linear layers
        if cfg.lora.rank > hidden:
            p.append(f"{prefix}lora.rank: a LoRA update cannot have a higher rank than its layer; "
                     f"the '{cfg.model.name}' model's layers are {hidden} wide, got {cfg.lora.rank}")
    if cfg.squeeze.compress_to > 0 and cfg.squeeze.compress_to > cfg.lora.rank:
        p.append(f"{prefix}squeeze.compress_to: must be <= lora.rank ({cfg.lora.rank}), got {cfg.squeeze.compress_to}")
    p.extend(prefix + m for m in _seeds_policy_problems(cfg, explicit))
    from retrain.hooks.registry import config_problems as hook_problems

    p.extend(prefix + m for m in hook_problems(cfg))
    return p


SEQUENTIAL_KEYS = ("min_seeds", "max_seeds", "seed_batch", "sequential_alpha", "sequential_baseline")


def _seeds_policy_problems(cfg: RetrainConfig, explicit: set[str]) -> list[str]:
    """[campaign] seeds_policy and its keys (docs/campaigns.md#sequential-seeds)."""
    from retrain.config.schema import MAX_SEED

    c = cfg.campaign
    if c.seeds_policy != "until_decided":
        # a rendered config (config show, a run's config.toml) writes every key at its default
        defaults = type(c)()
        given = [k for k in SEQUENTIAL_KEYS if f"campaign.{k}" in explicit
                 and getattr(c, k) != getattr(defaults, k)]
        return [f"campaign.{given[0]}: only used with campaign.seeds_policy = 'until_decided'; "
                f"set that, or remove the key"] if given else []
    p: list[str] = []
    if c.min_seeds > c.max_seeds:
        p.append(f"campaign.min_seeds: must be <= campaign.max_seeds ({c.max_seeds}), got {c.min_seeds}")
    if len(c.seeds) > c.max_seeds:
        p.append(f"campaign.seeds: lists {len(c.seeds)} seeds, more than campaign.max_seeds "
                 f"({c.max_seeds}) can use; raise max_seeds or drop seeds")
    elif c.seeds and max(c.seeds) + c.max_seeds - len(c.seeds) > MAX_SEED:
        p.append(f"campaign.seeds: the seeds added after max(seeds) = {max(c.seeds)} would pass "
                 f"{MAX_SEED}; list all {c.max_seeds} seeds or use smaller ones")
    return p


PLUGIN_MODES = ("import", "locate", "skip")


def plugin_problems(cfg: RetrainConfig, *, prefix: str = "", plugins: str = "import") -> list[str]:
    """Checks that look outside the config: user code, data files, the model, optional packages.

    `plugins`: "import" runs the plugins' modules to check them (validate, run); "locate" checks
    them without running user code (show, plan; see retrain.plugins); "skip" not at all.
    """
    p: list[str] = []
    mode = cfg.algorithm.advantage_mode
    if ":" in mode and plugins == "import":
        from retrain.algo.advantages import load_custom_advantage

        try:
            load_custom_advantage(mode)
        except (ValueError, ImportError, AttributeError) as exc:
            p.append(f"{prefix}algorithm.advantage_mode: {exc}")
    elif ":" in mode and plugins == "locate":
        from retrain.plugins import ADVANTAGE_ARITY, check_plugin

        p.extend(prefix + m for m in check_plugin(mode, "algorithm.advantage_mode",
                                                  arities=ADVANTAGE_ARITY, run_code=False))
    from retrain.plugins import transform_problems

    p.extend(prefix + m for m in transform_problems(cfg.algorithm.transform_mode, plugins=plugins))
    if plugins == "import":  # hook plugins named in [hooks] names
        from retrain.hooks.registry import plugin_problems as hook_plugin_problems

        p.extend(prefix + m for m in hook_plugin_problems(cfg))
    from retrain.tasks import check_data_config

    p.extend(prefix + m for m in check_data_config(cfg.data, run_code=plugins == "import"))
    from retrain.backend.local.hub import model_source_problem

    model_problem = model_source_problem(cfg.model.name, local_files_only=cfg.model.local_files_only)
    if model_problem:
        p.append(prefix + model_problem)
    from retrain.sinks import check_logging_config

    p.extend(prefix + m for m in check_logging_config(cfg.logging))
    from retrain.backend.registry import backend_problems

    p.extend(prefix + m for m in backend_problems(cfg))
    if cfg.campaign.executor == "ray":
        from importlib.util import find_spec  # not `import ray`: plan and load stay fast
        if find_spec("ray") is None:
            p.append(f"{prefix}campaign.executor: 'ray' needs the 'ray' package: pip install 'retrain[ray]'")
    return p


def canonical(cfg: RetrainConfig) -> RetrainConfig:
    """Reset settings of unused transforms to defaults, so equal experiments have equal configs."""
    resets = {name: SECTIONS[name]() for name in inactive_sections(cfg)}
    return dataclasses.replace(cfg, **resets) if resets else cfg


def build_config(raw: Mapping[str, Any], *, source: str | None = None, strict_sections: bool = True,
                 plugins: str = "import", prefix: str = "") -> tuple[RetrainConfig, set[str]]:
    """Validate a raw TOML dict into a canonical RetrainConfig; raises ConfigError with every
    problem. `plugins`: how user code is checked (see plugin_problems)."""
    raw = dict(raw)
    phases_raw = raw.pop("phases", None)
    built, problems, explicit = parse_sections(raw, prefix=prefix)
    cfg = RetrainConfig(**built)
    if phases_raw is not None:
        cfg, phase_problems = _with_phases(cfg, raw, phases_raw, explicit, prefix=prefix)
        problems += phase_problems
    else:
        problems += [f"{prefix}{k}: only for multi-phase runs; add [[phases]] tables or remove it"
                     for k in sorted(explicit) if k.split(".")[0] in ("curriculum", "probe", "replay")]
    # With a bad transform_mode the check of unused transform tables would judge them against
    # the default mode: a second, wrong message
    bad_mode = any(q.startswith(f"{prefix}algorithm.transform_mode:") for q in problems)
    problems += cross_field_problems(cfg, explicit, strict_sections=strict_sections and not bad_mode,
                                     prefix=prefix)
    if plugins != "skip" and not problems:
        problems += plugin_problems(cfg, prefix=prefix, plugins=plugins)
    if problems:
        raise ConfigError(problems, source=source)
    return canonical(cfg), explicit


def _with_phases(cfg: RetrainConfig, raw: Mapping[str, Any], phases_raw: Any, explicit: set[str],
                 *, prefix: str) -> tuple[RetrainConfig, list[str]]:
    """The config with its [[phases]] (each phase's overrides validated by building the phase's
    whole config) and training.max_steps = rounds × Σ steps."""
    from retrain.config.phases import parse_phases, total_steps

    phases, problems = parse_phases(phases_raw)
    problems = [f"{prefix}{p}" for p in problems]
    if problems:
        return cfg, problems
    total = total_steps(phases, cfg.curriculum.rounds)
    if "training.max_steps" in explicit and cfg.training.max_steps != total:
        problems.append(f"{prefix}training.max_steps: a multi-phase run lasts curriculum.rounds × "
                        f"the phases' steps = {total} steps; remove training.max_steps "
                        f"(it is {cfg.training.max_steps})")
    checked: list[PhaseConfig] = []
    for i, phase in enumerate(phases):
        try:
            base = {k: v for k, v in raw.items() if k not in ("curriculum", "probe", "replay")}
            pcfg, _ = build_config(apply_dotted(base, dict(phase.overrides)), strict_sections=False,
                                   plugins="skip", prefix=f"{prefix}phases[{i}] ({phase.name}): ")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        flat = {f"{s}.{k}": getattr(getattr(pcfg, s), k) for s, k in
                (key.split(".", 1) for key, _ in phase.overrides)}
        checked.append(dataclasses.replace(phase, overrides=tuple((k, flat[k]) for k, _ in phase.overrides)))
    if cfg.replay.fraction > 0 and len(phases) == 1 and cfg.curriculum.rounds == 1:
        problems.append(f"{prefix}replay.fraction: replay draws from earlier phases, and a run "
                        "of one phase and one round has none; add phases or rounds, or remove it")
    if cfg.replay.kl_beta > 0 and cfg.replay.fraction == 0:
        problems.append(f"{prefix}replay.kl_beta: the teacher KL acts on replayed sequences; "
                        "set replay.fraction > 0 too")
    training = dataclasses.replace(cfg.training, max_steps=total)
    return dataclasses.replace(cfg, training=training, phases=tuple(checked)), problems


# --- overrides ---------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (8, 1e-3, true, [8, 16], "x"); a list of bare
    words as Hydra writes it ([q_proj,v_proj]); else the raw string. A value that opens a list
    and is neither raises ValueError: splitting it on commas would guess. `none`, `null` and
    `unset` are an `Unset` word (see there)."""
    if text.strip().lower() in UNSET_WORDS:
        return Unset(text.strip().lower())
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    stripped = text.strip()
    if not stripped.startswith("["):
        return text
    inner = stripped[1:-1] if stripped.endswith("]") else None
    if inner is None or any(c in inner for c in "[]{}\"'="):
        raise ValueError(f"{text!r} is not a list: write it as TOML (['q_proj', 'v_proj']) or as "
                         f"bare words ([q_proj,v_proj])")
    items = [item.strip() for item in inner.split(",")]
    if inner.strip() and "" in items:
        raise ValueError(f"{text!r} has an empty item between commas")
    return [parse_value(item) for item in items if item]


def parse_sets(sets: Iterable[str]) -> dict[str, Any]:
    """['optimizer.lr=1e-3', ...] -> {'optimizer.lr': 0.001}; a malformed item is a ConfigError."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or "." not in key:
            problems.append(f"--set {item!r}: expected section.key=value, e.g. optimizer.lr=1e-3")
            continue
        try:
            out[key] = parse_value(value.strip())
        except ValueError as exc:
            problems.append(f"--set {key}: {exc}")
    if problems:
        raise ConfigError(problems)
    return out


def apply_dotted(raw: dict[str, Any], dotted: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-copy `raw` and set each 'section.key'. An `Unset` value is resolved against the
    key's type when the config is built; on a campaign structure key it removes the key."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if isinstance(out.get("model"), str):
        out["model"] = {"name": out["model"]}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            table = out[section] = {}
        if isinstance(value, Unset) and section == "campaign" and name in CAMPAIGN_STRUCTURE_KEYS:
            table.pop(name, None)  # `--set campaign.grid=none`: no grid
            continue
        table[name] = value
    return out


def load_config(path: str | Path, sets: Iterable[str] = (), *, plugins: str = "import") -> RetrainConfig:
    """Load a single-run config file with `--set` overrides applied."""
    overrides = parse_sets(sets)
    raw = _without_switched_off_transforms(read_toml(path), overrides)
    raw = apply_dotted(raw, overrides)
    raw = _strip_campaign_structure(raw)
    cfg, _ = build_config(raw, source=str(path), plugins=plugins)
    return cfg


def _without_switched_off_transforms(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`--set algorithm.transform_mode=X` switches transforms off on purpose: the file's tables
    of transforms X does not use are then dropped rather than refused as settings without
    effect (a table set by --set itself is still refused)."""
    from retrain.algo.modes import transform_parts
    from retrain.config.schema import TRANSFORM_SECTIONS

    mode = overrides.get("algorithm.transform_mode")
    if not isinstance(mode, str):
        return raw
    try:
        active = frozenset() if ":" in mode else transform_parts(mode)  # a plugin uses none
    except ValueError:
        return raw  # validation names the bad mode
    return {k: v for k, v in raw.items() if k not in TRANSFORM_SECTIONS or k in active}


CAMPAIGN_STRUCTURE_KEYS = ("conditions", "grid", "zip", "exclude", "include")


def _strip_campaign_structure(raw: dict[str, Any]) -> dict[str, Any]:
    """A single run ignores the campaign's grid keys (a campaign file is also a valid base config)."""
    camp = raw.get("campaign")
    if isinstance(camp, dict):
        raw = dict(raw)
        raw["campaign"] = {k: v for k, v in camp.items() if k not in CAMPAIGN_STRUCTURE_KEYS}
    return raw
