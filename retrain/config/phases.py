"""`[[phases]]`: one run trained through a sequence of phases (a curriculum), each a table of
overrides of the run's own config, the list repeated `curriculum.rounds` times.

Data flow: raw TOML → **parse_phases** (shape, names, allowed keys) → `build_config` validates
each phase's overrides by building the phase's whole config, and sets `training.max_steps` to
rounds × Σ steps → `phase_config(cfg, phase)` gives the trainer a phase's effective config.
docs/phases.md describes the keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# What a phase may change: the task and its data, the learning rate, and how a step samples and
# evaluates. Everything else (model, adapter shape, backend, seed, logging, campaign) belongs to
# the run as a whole.
PHASE_KEYS = frozenset({
    "optimizer.lr", "training.batch_size", "training.group_size", "training.max_tokens",
    "training.temperature", "training.top_p", "training.kl_beta", "eval.size", "eval.samples",
    "eval.every",
})
PHASE_PREFIXES = ("data.",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


@dataclass(frozen=True)
class PhaseConfig:
    """One `[[phases]]` table: its name, its length in steps, and its overrides (dotted keys,
    values as the phase's validated config holds them)."""

    name: str
    steps: int
    overrides: tuple[tuple[str, Any], ...] = ()

    def as_table(self) -> dict[str, Any]:
        """The TOML table that loads back to this phase (dotted keys quoted)."""
        return {"name": self.name, "steps": self.steps,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides}}


def allowed(dotted: str) -> bool:
    return dotted in PHASE_KEYS or dotted.startswith(PHASE_PREFIXES)


def parse_phases(value: Any) -> tuple[tuple[PhaseConfig, ...], list[str]]:
    """The phases of a raw `phases` value, and every problem with their shape and keys (values
    are checked later, by building each phase's config)."""
    from retrain.campaign.grid import flatten_keys, resolve_key

    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        return (), ["phases: must be an array of tables, one [[phases]] table per phase "
                    "(name = \"...\", steps = N, and the keys the phase changes)"]
    if not value:
        return (), ["phases: the phase list is empty; give at least one [[phases]] table with a "
                    "name and steps, or remove `phases`"]
    problems: list[str] = []
    phases: list[PhaseConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(value):
        where = f"phases[{i}]"
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"{where}.name: give each phase a plain name (letters, digits, _ . + = -), "
                            f"e.g. name = \"plus\"; got {name!r}")
            name = f"phase{i}"
        elif name in seen:
            problems.append(f"{where}.name: '{name}' is the name of an earlier phase; names must differ")
        seen.add(name)
        where = f"phases[{i}] ({name})"
        steps = table.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            problems.append(f"{where}.steps: give the phase's length in steps, an integer >= 1; got {steps!r}")
            steps = 1
        overrides: list[tuple[str, Any]] = []
        for key, v in flatten_keys({k: v for k, v in table.items() if k not in ("name", "steps")}).items():
            dotted, err = resolve_key(key, f"{where}.{key}")
            if err:
                problems.append(err)
                continue
            assert dotted is not None
            if not allowed(dotted):
                problems.append(f"{where}.{key}: a phase cannot change {dotted}; a phase may set "
                                f"data.*, {', '.join(sorted(PHASE_KEYS))}; set it for the whole run "
                                "outside [[phases]]")
                continue
            overrides.append((dotted, v))
        phases.append(PhaseConfig(name=name, steps=steps, overrides=tuple(overrides)))
    return tuple(phases), problems


def total_steps(phases: tuple[PhaseConfig, ...], rounds: int) -> int:
    return rounds * sum(p.steps for p in phases)
