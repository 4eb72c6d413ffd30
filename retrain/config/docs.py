"""docs/configuration.md, generated from the schema's field metadata.

Sits beside the loader: the same `metadata` (help, ranges, choices) that `load.py` validates
against is rendered here, so the reference cannot drift from the code. Regenerate with
`python -m retrain.config.docs > docs/configuration.md`; tests/config/test_docs.py checks that
the committed file is current. No torch import.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from retrain.config.schema import SECTIONS

# One line per table: what it is for and where the longer story lives.
SECTION_INTRO: dict[str, str] = {
    "model": "The policy model. `tiny`/`small` are built offline and cached (see "
             "[getting started](getting-started.md#the-built-in-tiny-model)); anything else is loaded "
             "with `AutoModelForCausalLM.from_pretrained`.",
    "lora": "The LoRA adapter that is trained (peft). The base weights stay frozen.",
    "backend": "Where training happens. Only the local torch backend exists today.",
    "algorithm": "Episode advantages and token transforms; formulas and papers in "
                 "[algorithms](algorithms.md).",
    "training": "The RL loop: batch shape, sampling, loss, checkpoints.",
    "optimizer": "AdamW over the LoRA parameters.",
    "gtpo": "Uncertainty weighting of token advantages ([algorithms](algorithms.md#gtpo-arxiv-250804349-simplified-multiplicative-form)). "
            "Only with a `transform_mode` that contains `gtpo`.",
    "hicra": "Planning-token credit ([algorithms](algorithms.md#hicra-arxiv-250903646)). "
             "Only with a `transform_mode` that contains `hicra`.",
    "sepa": "Selective entropy pooling and its schedule "
            "([algorithms](algorithms.md#sepa-selective-entropy-pooling-with-annealing)). "
            "Only with a `transform_mode` that contains `sepa`.",
    "backpressure": "Adaptive operating point at the throughput knee ([back-pressure](backpressure.md)).",
    "data": "The task and its reward ([tasks](tasks.md)).",
    "eval": "Greedy evaluation on the held-out split.",
    "logging": "Console lines, emergence logs and wandb ([logging](logging.md)).",
    "squeeze": "LoRA rank analysis of the first finished run of a campaign ([squeeze](squeeze.md)). "
               "Campaign-level: not part of a run's identity.",
    "curriculum": "Multi-phase runs: how often the `[[phases]]` list repeats ([phases](phases.md)). "
                  "Only with `[[phases]]`.",
    "probe": "Multi-phase runs: probes of the earlier phases and rollback of the adapter "
             "([phases](phases.md#probes-and-rollback)). Only with `[[phases]]`.",
    "replay": "Multi-phase runs: replay of earlier phases with a KL penalty to the previous "
              "phase's adapter as teacher ([phases](phases.md#replay-and-the-teacher)). Only with "
              "`[[phases]]`.",
    "audit": "Thresholds of the intervention audit run at the end of a campaign and by "
             "`retrain analyze audit` ([analysis](analysis.md#retrain-analyze-audit-dir)). "
             "Campaign-level: not part of a run's identity.",
    "campaign": "Seeds and execution of a campaign. The grid keys (`conditions`, `grid`, `zip`, "
                "`exclude`, `include`) are described in [campaigns](campaigns.md); executors in "
                "[campaign execution](campaigns-execution.md). Campaign-level: not part of a run's "
                "identity, ignored by `retrain run`.",
}

# Rules that involve several keys (load.py `cross_field_problems`), listed under their table.
SECTION_RULES: dict[str, tuple[str, ...]] = {
    "algorithm": ("`scale` set to anything but `group` is an error unless `advantage_mode = \"grpo\"`.",),
    "training": ("`clip_eps_high` needs `clip_eps`.",
                 "`batch_size` × `group_size` must be at most 1,048,576 sequences per step."),
    "eval": ("`size` must be <= `data.eval_size`.",),
    "backpressure": ("`min_size` must be <= `max_size`.",
                     "`increase_margin` must be <= `throttle_margin`."),
    "squeeze": ("`compress_to` must be <= `lora.rank`.",),
    "campaign": ("`min_seeds`, `max_seeds`, `seed_batch`, `sequential_alpha` and "
                 "`sequential_baseline` set to anything but their defaults need "
                 "`seeds_policy = \"until_decided\"` ([sequential seeds](campaigns.md#sequential-seeds)).",
                 "With `until_decided`: `min_seeds` must be <= `max_seeds`; `seeds` may list at "
                 "most `max_seeds` seeds; `sequential_baseline` must be a condition's label; the "
                 "campaign needs at least two conditions.",),
    "gtpo": ("Setting any key here while `algorithm.transform_mode` has no `gtpo` is an error "
             "in a run file (see above).",),
    "hicra": ("Setting any key here while `algorithm.transform_mode` has no `hicra` is an error "
              "in a run file (see above).",),
    "sepa": ("Setting any key here while `algorithm.transform_mode` has no `sepa` is an error "
             "in a run file (see above).",),
}

INTRO = """\
# Configuration reference

<!-- Generated by `python -m retrain.config.docs > docs/configuration.md` from
     retrain/config/schema.py. Do not edit by hand: change the schema and regenerate. -->

A run is configured by one TOML file with the tables below. A campaign file is the same file
plus a `[campaign]` table that describes the grid ([campaigns](campaigns.md)). Every table and
every key is optional; `retrain config show FILE` prints the fully resolved config and
`retrain config validate FILE` checks a file without running anything.

## How values are resolved

- **Precedence:** dataclass defaults < the TOML file < `--set section.key=value` on the command
  line (repeatable; later `--set` of the same key wins).
- **`--set` values** are read as TOML values when they parse: `--set training.max_steps=50`,
  `--set optimizer.lr=5e-4`, `--set eval.at_start=false`, `--set lora.target_modules='["q_proj","v_proj"]'`.
  A value that is not valid TOML is taken as a plain string, so
  `--set algorithm.advantage_mode=maxrl` works without quotes. Quote a string that would parse as
  a number or boolean: `--set logging.wandb_project='"2024"'`. String lists also accept
  comma-separated text: `--set logging.wandb_tags=a,b`.
- **Unsetting:** keys whose type says *or unset* have no value by default. 
  `--set training.clip_eps=none` (also `null`, `unset`) removes a value set in the file. Keys without
  *or unset* cannot be unset: on a key that allows `none` (`transform_mode`, `scale`),
  `--set algorithm.scale=none` selects that value; other keys refuse the word. In a TOML file,
  `"none"` is always a string.
- **Integers** accept whole floats (`8.0`); floats accept integers (`32`).
- **Errors:** an unknown table or key is an error with a "did you mean" suggestion and the list
  of valid names. Type, range and cross-key problems are collected and reported together, one
  line each with its dotted path (`training.batch_size: must be >= 1, got 0`); the exit code is 2.
- **Unused transform tables:** `[gtpo]`, `[hicra]` and `[sepa]` only mean something when
  `algorithm.transform_mode` contains that name. In a single-run file, setting a key of an unused
  transform's table is an error. They are not rendered by `config show` nor written to a run's
  `config.toml`, so two runs that do the same experiment have the same config. In a campaign file
  they may be set when at least one condition uses the transform.
- **`[squeeze]`:** an empty `[squeeze]` table alone turns the analysis on (`enabled = true`
  is implied unless `enabled` is given).
- **Shorthand:** a top-level `model = "tiny"` means `[model] name = "tiny"`.
- **Run identity:** `[campaign]`, `[squeeze]` and `[audit]` describe the campaign, not the run.
  They are left out of a run's `config.toml` and of its config hash.
- **`[[phases]]`:** an array of tables, one per phase of a multi-phase run: `name`, `steps`, and
  the keys the phase changes (`data.*`, `optimizer.lr`, a few `training.*` and `eval.*` keys).
  `[curriculum]` and `[probe]` only go with it, and `training.max_steps` becomes rounds × the
  phases' steps. Every key and rule: [multi-phase runs](phases.md#configuration).
- **Plugins:** keys that accept `package.module:function` import that function when the config is
  validated, so a missing module is reported before training starts. So are a missing data file
  and, with `logging.wandb_project` set, a missing `wandb` package.

"""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or unset"
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}s"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(tp, str(tp))


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _allowed(meta: Mapping[str, Any]) -> str:
    parts: list[str] = []
    choices = meta.get("choices")
    if choices is not None:
        shown = ", ".join(f"`{c}`" if c else '`""`' for c in choices)
        if meta.get("open_choices"):
            shown += ", or `package.module:function`"
        parts.append(shown)
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        bound = meta.get(key)
        if bound is not None:
            parts.append(f"{word} {_num(bound)}")
    return ", ".join(parts) if parts else "any"


def _cell(text: str) -> str:
    """Markdown-safe table cell: escape pipes and emphasis characters outside code spans."""
    out = []
    for i, chunk in enumerate(text.split("`")):
        out.append(chunk if i % 2 else chunk.replace("|", "\\|").replace("*", "\\*"))
    return "`".join(out)


MAX_DEFAULT_CHARS = 48  # longer defaults are listed under the table


def render_section(name: str, cls: type) -> str:
    hints = typing.get_type_hints(cls)
    lines = [f"## `[{name}]`", "", SECTION_INTRO.get(name, ""), "",
             "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    long_defaults: list[str] = []
    for f in dataclasses.fields(cls):
        default = _toml_value(f.default)
        if len(default) > MAX_DEFAULT_CHARS:
            long_defaults.append(f"Default of `{f.name}`: `{default}`")
            default_cell = "see below"
        else:
            default_cell = f"`{default}`"
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {default_cell} | "
                     f"{_allowed(f.metadata)} | {_cell(f.metadata.get('help', ''))} |")
    lines.append("")
    for text in long_defaults:
        lines += [text, ""]
    rules = SECTION_RULES.get(name, ())
    if rules:
        lines += ["Rules:", ""] + [f"- {r}" for r in rules] + [""]
    return "\n".join(lines)


def render_configuration_md() -> str:
    """The whole docs/configuration.md."""
    toc = "Tables: " + " · ".join(f"[`[{n}]`](#{n})" for n in SECTIONS) + "\n\n"
    return INTRO + toc + "\n".join(render_section(n, cls) for n, cls in SECTIONS.items()).rstrip() + "\n"


if __name__ == "__main__":
    print(render_configuration_md(), end="")
