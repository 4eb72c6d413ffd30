"""Hook names, groups and sinks: the plain dicts the config is checked against, and resolution
of a run's `[hooks]` table (plus the CLI flags) into hook objects.

Place in the data flow: config load (`config_problems`, called by retrain/config/load.py) and
run setup (`resolve`, called by trainer/setup.py). A name is a built-in hook or a plugin
'package.module:factory' (or 'file.py:factory'): a callable taking no argument, or the run's
RetrainConfig, that returns a Hook (base.py). Torch-free: `retrain run --hooks-list` is fast.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retrain.errors import ConfigError
from retrain.hooks import builtin
from retrain.hooks.base import POINTS, Hook

if TYPE_CHECKING:
    from retrain.config.schema import HooksConfig, RetrainConfig

HOOKS: dict[str, type[builtin.Builtin]] = {
    "norms": builtin.Norms, "grad": builtin.Grad, "entropy": builtin.Entropy,
    "adv": builtin.Adv, "lengths": builtin.Lengths, "rank": builtin.Rank,
    "groups": builtin.Groups, "timing": builtin.Timing,
}
# minimal: a few scalars per step, no per-module work; < 5% of a tiny-model step (bench/hooks.py)
GROUPS: dict[str, tuple[str, ...]] = {
    "minimal": ("timing", "lengths", "groups"),
    "full": tuple(HOOKS),
}
SINKS = ("csv", "jsonl", "wandb")
COST_FILE = Path(__file__).with_name("measured_cost.json")


def _known() -> str:
    return f"built-in hooks are {', '.join(HOOKS)}; groups are {', '.join(GROUPS)}"


def name_problems(groups: Sequence[str], names: Sequence[str], sinks: Sequence[str], *,
                  where: tuple[str, str, str] = ("hooks.groups", "hooks.names", "hooks.sinks")) -> list[str]:
    """One message per bad group, name or sink, naming where it came from and the valid values."""
    from retrain.config.load import suggest
    from retrain.plugins import is_plugin_path

    p: list[str] = []
    for g in groups:
        if g not in GROUPS:
            hint = " (that is a hook: give it as a name)" if g in HOOKS else suggest(g, GROUPS)
            p.append(f"{where[0]}: unknown hook group {g!r}{hint}; groups are {', '.join(GROUPS)}")
    for n in names:
        if n not in HOOKS and not is_plugin_path(n):
            hint = " (that is a group)" if n in GROUPS else suggest(n, HOOKS)
            p.append(f"{where[1]}: unknown hook {n!r}{hint}; {_known()}, or give a plugin as "
                     f"'package.module:factory'")
    for s in sinks:
        if s not in SINKS:
            p.append(f"{where[2]}: unknown hook sink {s!r}{suggest(s, SINKS)}; sinks are {', '.join(SINKS)}")
    return p


def config_problems(cfg: RetrainConfig) -> list[str]:
    """Problems of the [hooks] table, each with its dotted path (config load)."""
    h = cfg.hooks
    p = name_problems(h.groups, h.names, h.sinks)
    if "wandb" in h.sinks:
        if not (h.wandb_project or cfg.logging.wandb_project):
            p.append("hooks.sinks: the wandb sink needs a project: set hooks.wandb_project "
                     "(or logging.wandb_project)")
        elif h.wandb_project and cfg.logging.wandb_project and h.wandb_project != cfg.logging.wandb_project:
            p.append(f"hooks.wandb_project: this run already logs to wandb project "
                     f"{cfg.logging.wandb_project!r} (logging.wandb_project) and hook metrics go "
                     f"to that run; remove hooks.wandb_project or make it equal")
        else:
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                p.append("hooks.sinks: the wandb sink needs wandb: pip install 'retrain[wandb]'")
    return p


def plugin_problems(cfg: RetrainConfig) -> list[str]:
    """Hook plugins that cannot be imported or called (config validate, and every run)."""
    p: list[str] = []
    for n in cfg.hooks.names:
        if n not in HOOKS:
            try:
                load_factory(n)
            except ConfigError as exc:
                p.extend(exc.problems)
    return p


def active_names(h: HooksConfig) -> list[str]:
    """The hooks a [hooks] table turns on: its groups' members, then its names, each once."""
    out: list[str] = []
    for name in [*(n for g in h.groups for n in GROUPS.get(g, ())), *h.names]:
        if name not in out:
            out.append(name)
    return out


def load_factory(spec: str) -> Callable[..., object]:
    from retrain.errors import DataError
    from retrain.plugins import check_arity, load_plugin

    try:
        fn = load_plugin(spec, "hooks.names")
        check_arity(fn, spec, "hooks.names", (0, 1))
    except DataError as exc:
        raise ConfigError([str(exc)]) from None
    return fn


def build(name: str, cfg: RetrainConfig) -> Hook:
    """One hook object: a built-in with its settings from [hooks], or a plugin's factory result."""
    if name in HOOKS:
        cls = HOOKS[name]
        return cls(every=cfg.hooks.rank_every) if name == "rank" else cls()
    factory = load_factory(name)
    try:
        hook = factory(cfg) if _takes_arg(factory) else factory()
    except Exception as exc:  # user code: its failure is the user's to fix
        raise ConfigError([f"hooks.names: {name!r} raised {type(exc).__name__}: {exc}"]) from exc
    missing = [a for a in ("name", "points", "every", "observe") if not hasattr(hook, a)]
    bad_points = [p for p in getattr(hook, "points", ()) if p not in POINTS]
    if missing or bad_points:
        what = f"lacks {', '.join(missing)}" if missing else f"observes unknown points {bad_points}"
        raise ConfigError([f"hooks.names: {name!r} returned a hook that {what}; a hook has name, "
                           f"points (from {', '.join(POINTS)}), every and observe(payload) "
                           f"(docs/hooks.md)"])
    return hook  # type: ignore[return-value]


def _takes_arg(fn: Callable[..., object]) -> bool:
    try:
        inspect.signature(fn).bind(None)
        return True
    except (TypeError, ValueError):
        return False


def resolve(cfg: RetrainConfig) -> list[Hook]:
    return [build(n, cfg) for n in active_names(cfg.hooks)]


# --- what --hooks-list / --hooks-describe print -------------------------------------------------

@dataclass(frozen=True)
class Cost:
    ms_per_step: float  # median extra wall time per step with the hook alone
    share: float  # that over the median step time without hooks
    where: str  # machine, preset and date of the measurement


def measured_costs() -> dict[str, Cost]:
    """The costs bench/hooks.py measured (hooks and groups), or {} when it was not run."""
    try:
        data = json.loads(COST_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    where = f"{data.get('machine', '?')}, preset {data.get('preset', '?')}, {data.get('date', '?')}"
    return {k: Cost(float(v["ms_per_step"]), float(v["share"]), where)
            for k, v in data.get("costs", {}).items()}


def _cost_text(name: str, costs: dict[str, Cost]) -> str:
    c = costs.get(name)
    return f"{c.ms_per_step:.2f} ms/step ({c.share:+.1%})" if c else "not measured"


def list_text() -> str:
    costs = measured_costs()
    rows = [("name", "points", "groups", "cost", "description")]
    for name, cls in HOOKS.items():
        groups = ",".join(g for g, members in GROUPS.items() if name in members)
        rows.append((name, ",".join(cls.points), groups, _cost_text(name, costs), cls.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]) for r in rows]
    lines.append("")
    for g, members in GROUPS.items():
        lines.append(f"group {g}: {', '.join(members)} (cost {_cost_text(g, costs)})")
    where = next(iter(costs.values())).where if costs else "run bench/hooks.py to measure"
    lines.append(f"cost: extra time per training step, measured on {where}")
    return "\n".join(lines)


def describe_text(name: str) -> str:
    if name not in HOOKS:
        problems = name_problems([], [name], [], where=("", "--hooks-describe", ""))
        raise ConfigError(problems)
    cls = HOOKS[name]
    costs = measured_costs()
    groups = [g for g, members in GROUPS.items() if name in members]
    every = "every hooks.rank_every steps (default 10)" if name == "rank" else "every step"
    lines = [f"{name}: {cls.description}", "",
             f"points:   {', '.join(cls.points)}", f"runs:     {every}",
             f"groups:   {', '.join(groups)}", f"cost:     {_cost_text(name, costs)}"]
    if costs.get(name):
        lines.append(f"          measured on {costs[name].where}")
    if getattr(cls, "wants_grads", False):
        lines.append("needs:    per-module grad norms from the backend (computed only when on)")
    if getattr(cls, "wants_trace", False):
        lines.append("needs:    the advantage trace (each stage's output, copied per step)")
    lines += ["", "metrics (rows of hooks.csv / hooks.jsonl, wandb hooks/<hook>/<metric>):"]
    width = max(len(m) for m in cls.metrics)
    lines += [f"  {m:<{width}}  {unit}" for m, unit in cls.metrics.items()]
    lines += ["", "{module}: each LoRA module (model.layers.0.self_attn.q_proj, ...); "
              "{stage}: each advantage stage that ran; {hook}: each other active hook"]
    return "\n".join(lines)
