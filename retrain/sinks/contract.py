"""The metrics contract: which fields every metrics.jsonl row carries, their types, wandb keys.

Place in the data flow: the trainer loop builds one flat dict per step with exactly these names;
the sinks write it unchanged (metrics.jsonl) or renamed (wandb). `retrain analyze` and users'
notebooks read these names for months after a campaign, so names never change; new fields may
be added. docs/logging.md describes each field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# One value of a metrics row: what JSON and wandb can hold for a scalar metric.
MetricValue = float | int | bool | str | None
Metrics = dict[str, MetricValue]

# Names of seed 003 (kept verbatim), then what users need beyond them.
CORE_FIELDS: tuple[str, ...] = (
    "step", "condition", "loss", "reported_loss", "loss_is_placeholder",
    "backend_reports_sync_loss", "backend_preserves_token_advantages",
    "mean_reward", "correct_rate", "running_correct_rate", "sepa_lambda", "sepa_gate_open",
    "num_datums", "max_token_hit_rate", "step_time_s", "batch_size", "group_size",
    "bp_action", "bp_regime", "uncertainty_kind",
    "exec_entropy_mean", "exec_entropy_var", "plan_entropy_mean", "plan_entropy_var",
    "exec_surprisal_mean", "exec_surprisal_var", "plan_surprisal_mean", "plan_surprisal_var",
)
EXTRA_FIELDS: tuple[str, ...] = (
    "correct_count", "total_count",  # completions with reward counted correct / all completions
    "sample_time_s", "reward_time_s", "advantage_time_s", "train_time_s",  # stage timings
    "tokens_per_s",  # completion tokens sampled per second of step time
    "grad_norm", "clip_frac", "kl", "lr",
    "skipped_groups", "skipped_groups_total",  # groups with no signal (equal rewards): step / run
    "bp_p_star", "bp_sigma", "bp_kappa", "bp_utilization", "bp_throughput", "bp_warmup",
)
METRICS_FIELDS: tuple[str, ...] = CORE_FIELDS + EXTRA_FIELDS

# Present when the step computed them, type-checked when present: the planning-token share
# (every transform mode) and the share of tokens whose advantage HICRA changed (hicra modes only).
OPTIONAL_FIELDS: tuple[str, ...] = ("planning_token_frac", "num_planning_tokens",
                                    "hicra_changed_frac")

# Eval fields appear on rows of steps that evaluated (and alone on the step-0 row). Every eval
# has EVAL_FIELDS; EVAL_EXTRA_FIELDS come with the eval's size and standard errors, the sampled
# (mean@k) ones only when eval.samples > 0. Older run dirs hold only EVAL_FIELDS.
EVAL_FIELDS: tuple[str, ...] = ("eval_accuracy", "eval_mean_length")
EVAL_EXTRA_FIELDS: tuple[str, ...] = (
    "eval_accuracy_se", "eval_size", "eval_sampled_accuracy", "eval_sampled_accuracy_se",
    "eval_samples", "eval_time_s")

EMERGENCE_STEP_FIELDS: tuple[str, ...] = (
    "step", "mean_reward", "correct_count", "total_count", "condition")
GENERATION_FIELDS: tuple[str, ...] = ("step", "prompt", "completion", "reward", "num_tokens")
PROMPT_CHARS = 200
COMPLETION_CHARS = 500

_INT, _FLOAT, _BOOL, _STR = "int", "float", "bool", "str"
_OPT_FLOAT = "float|null"

FIELD_TYPES: dict[str, str] = {
    "step": _INT, "condition": _STR, "loss": _FLOAT, "reported_loss": _FLOAT,
    "loss_is_placeholder": _BOOL, "backend_reports_sync_loss": _BOOL,
    "backend_preserves_token_advantages": _BOOL, "mean_reward": _FLOAT, "correct_rate": _FLOAT,
    "running_correct_rate": _FLOAT, "sepa_lambda": _FLOAT, "sepa_gate_open": _BOOL,
    "num_datums": _INT, "max_token_hit_rate": _FLOAT, "step_time_s": _FLOAT,
    "batch_size": _INT, "group_size": _INT, "bp_action": _STR, "bp_regime": _STR,
    "uncertainty_kind": _STR,
    # null when no token of that kind was sampled (e.g. no planning tokens this step)
    **{f"{kind}_{u}_{stat}": _OPT_FLOAT for kind in ("exec", "plan")
       for u in ("entropy", "surprisal") for stat in ("mean", "var")},
    "correct_count": _INT, "total_count": _INT,
    "sample_time_s": _FLOAT, "reward_time_s": _FLOAT, "advantage_time_s": _FLOAT,
    "train_time_s": _FLOAT, "tokens_per_s": _FLOAT, "grad_norm": _FLOAT, "clip_frac": _FLOAT,
    "kl": _OPT_FLOAT,  # null when kl_beta == 0 (no reference pass)
    "lr": _FLOAT, "skipped_groups": _INT, "skipped_groups_total": _INT,
    # null before the first USL fit or with back-pressure off
    "bp_p_star": _OPT_FLOAT, "bp_sigma": _OPT_FLOAT, "bp_kappa": _OPT_FLOAT,
    "bp_utilization": _OPT_FLOAT, "bp_throughput": _OPT_FLOAT, "bp_warmup": _BOOL,
    "planning_token_frac": _FLOAT, "num_planning_tokens": _INT, "hicra_changed_frac": _FLOAT,
    "eval_accuracy": _FLOAT, "eval_mean_length": _FLOAT,
    "eval_accuracy_se": _FLOAT,  # standard error over held-out problems (sample std / sqrt(n))
    "eval_size": _INT,  # held-out problems in the eval
    "eval_sampled_accuracy": _FLOAT,  # mean@k at the training temperature
    "eval_sampled_accuracy_se": _FLOAT,  # standard error over problems of the per-problem mean@k
    "eval_samples": _INT,  # k
    "eval_time_s": _FLOAT,
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if value is None:
        return kind == _OPT_FLOAT
    # ints are fine where floats are expected (a loss of exactly 0 serialises as 0.0 anyway)
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_row(row: Mapping[str, Any]) -> list[str]:
    """Problems with one metrics.jsonl row (empty list = valid).

    A training row (step >= 1) needs every METRICS_FIELDS entry with its type; the step-0 row
    is the initial eval and needs step, condition and the EVAL_FIELDS only. OPTIONAL_FIELDS and
    the other eval fields, when present, must have their type (unknown `eval_*` keys: numbers);
    other extra keys are allowed.
    """
    step = row.get("step")
    if not _type_ok(step, _INT):
        return [f"step: expected int, got {step!r}"]
    required = ("step", "condition", *EVAL_FIELDS) if step == 0 else METRICS_FIELDS
    problems: list[str] = []
    for name in required:
        if name not in row:
            problems.append(f"{name}: missing")
        elif not _type_ok(row[name], FIELD_TYPES[name]):
            problems.append(f"{name}: expected {FIELD_TYPES[name]}, got {row[name]!r}")
    for name, value in row.items():
        if name in required:
            continue
        kind = FIELD_TYPES.get(name) if name in OPTIONAL_FIELDS or name.startswith("eval_") else None
        if kind is None and name.startswith("eval_"):
            kind = _OPT_FLOAT
        if kind is not None and not _type_ok(value, kind):
            problems.append(f"{name}: expected {kind}, got {value!r}")
    return problems


def ordered_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The row with contract fields first, in contract order, then the rest as given."""
    row = {name: metrics[name] for name in METRICS_FIELDS if name in metrics}
    for name, value in metrics.items():
        if name not in row:
            row[name] = value
    return row


# ---- wandb keys (seed 003) -------------------------------------------------------------------

_UNCERTAINTY = re.compile(r"^(exec|plan)_(entropy|surprisal)_(mean|var)$")
_REWARDS = ("mean_reward", "correct_rate", "running_correct_rate", "correct_count", "total_count")
# Constant per run: recorded in the wandb run config, not in the history.
# Fields every row repeats with the same value for the whole run: wandb gets them once, in the
# run summary, instead of a flat history series per flag.
RUN_CONSTANTS = frozenset({"loss_is_placeholder", "backend_reports_sync_loss",
                           "backend_preserves_token_advantages"})
NOT_IN_HISTORY = frozenset({"step", "condition", "uncertainty_kind"}) | RUN_CONSTANTS


def wandb_key(name: str) -> str:
    """The wandb history key of a metrics.jsonl field.

    mean_reward -> train/rewards/mean_reward, exec_surprisal_mean -> train/surprisal/exec_mean,
    bp_p_star -> train/backpressure/p_star, backend_reports_sync_loss ->
    train/backend/reports_sync_loss, eval_accuracy -> eval/accuracy, anything else -> train/<name>.
    """
    if name.startswith("eval_"):
        return f"eval/{name[len('eval_'):]}"
    if name in _REWARDS:
        return f"train/rewards/{name}"
    m = _UNCERTAINTY.match(name)
    if m:
        return f"train/{m.group(2)}/{m.group(1)}_{m.group(3)}"
    if name.startswith("bp_"):
        return f"train/backpressure/{name[len('bp_'):]}"
    if name.startswith("backend_"):
        return f"train/backend/{name[len('backend_'):]}"
    return f"train/{name}"


# Flat wandb run-config key -> (config section, key) of the resolved config.
RUN_CONFIG_KEYS: dict[str, tuple[str, str]] = {
    "advantage_mode": ("algorithm", "advantage_mode"),
    "transform_mode": ("algorithm", "transform_mode"),
    "uncertainty_kind": ("algorithm", "uncertainty_kind"),
    "model": ("model", "name"),
    "lora_rank": ("lora", "rank"),
    "lr": ("optimizer", "lr"),
    "batch_size": ("training", "batch_size"),
    "group_size": ("training", "group_size"),
    "max_tokens": ("training", "max_tokens"),
    "temperature": ("training", "temperature"),
    "gtpo_beta": ("gtpo", "beta"),
    "hicra_alpha": ("hicra", "alpha"),
    "sepa_steps": ("sepa", "steps"),
    "sepa_delay_steps": ("sepa", "delay_steps"),
    "sepa_correct_rate_gate": ("sepa", "correct_rate_gate"),
    "max_steps": ("training", "max_steps"),
    "backend": ("backend", "name"),
    "seed": ("training", "seed"),
}


def flat_run_config(
    config: Mapping[str, Any], *, condition: str, seed: int, max_steps: int
) -> dict[str, Any]:
    """The hyper-parameters as one flat dict (seed 003 names) plus the full nested config.

    The nested config sits under the key `config` so that flat names (`model`, `backend`)
    never collide with section names. condition/seed/max_steps come from the run itself.
    """
    flat: dict[str, Any] = {}
    for key, (section, name) in RUN_CONFIG_KEYS.items():
        value = config.get(section, {}).get(name) if isinstance(config.get(section), Mapping) else None
        flat[key] = list(value) if isinstance(value, tuple) else value
    flat["condition"] = condition
    flat["seed"] = seed
    flat["max_steps"] = max_steps
    flat["config"] = _plain(config)
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
