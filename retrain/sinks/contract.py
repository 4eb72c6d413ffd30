"""The metrics contract: which fields every metrics.jsonl row carries, their types, wandb keys.

Place in the data flow: the trainer loop builds one flat dict per step with exactly these names;
the sinks write it unchanged (metrics.jsonl) or renamed (wandb). `retrain analyze` and users'
notebooks read these names for months after a campaign, so names never change; new fields may
be added. `FIELDS` is the one definition of the row: the field lists, types, `validate_row` and
docs/logging.md's table (`render_fields_md`) all come from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# One value of a metrics row: what JSON and wandb can hold for a scalar metric.
MetricValue = float | int | bool | str | None
Metrics = dict[str, MetricValue]

_INT, _FLOAT, _BOOL, _STR = "int", "float", "bool", "str"
_OPT_FLOAT, _OPT_INT = "float|null", "int|null"


@dataclass(frozen=True)
class Field:
    """One field of a metrics.jsonl row.

    group: "core" — the original tool's logging contract, names kept verbatim, on every training
    row; "extra" — on every training row too; "more" — diagnostics written by this version on
    every training row, type-checked when present (older run dirs lack them); "when" — present
    only when the step computed them (a transform's own statistics), type-checked when present;
    "eval" — on rows of steps that evaluated (and the step-0 row): eval_accuracy and
    eval_mean_length always, the others with the eval's size and sampled accuracy.
    """

    name: str
    kind: str  # int | float | float|null | int|null | bool | str
    group: str
    doc: str


def _fields() -> tuple[Field, ...]:
    core, extra, more, when, ev = "core", "extra", "more", "when", "eval"
    unc = [Field(f"{part}_{u}_{stat}", _OPT_FLOAT, core,
                 f"{'execution' if part == 'exec' else 'planning'}-token {u} {stat}"
                 + (" (mirrors the surprisal field: kept for old tooling)" if u == "entropy" else
                    "; null when the step had no such token"))
           for u in ("entropy", "surprisal") for part in ("exec", "plan") for stat in ("mean", "var")]
    return (
        Field("step", _INT, core, "training step, 1-based (0 = initial eval row)"),
        Field("condition", _STR, core, "condition label, e.g. `maxrl+gtpo_sepa`"),
        Field("loss", _FLOAT, core, "training loss of the step"),
        Field("reported_loss", _FLOAT, core, "the loss exactly as the backend reported it (same as `loss` for the local backend)"),
        Field("loss_is_placeholder", _BOOL, core, "true when a backend reports a placeholder instead of a real loss"),
        Field("backend_reports_sync_loss", _BOOL, core, "the reported loss is the loss of this optimizer step"),
        Field("backend_preserves_token_advantages", _BOOL, core, "the backend consumes per-token advantages as given"),
        Field("mean_reward", _FLOAT, core, "mean reward over the step's completions"),
        Field("correct_rate", _FLOAT, core, "fraction of the step's completions counted correct"),
        Field("running_correct_rate", _FLOAT, core, "correct completions / all completions since step 1"),
        Field("sepa_lambda", _FLOAT, core, "SEPA pooling strength scheduled for this step (0 without SEPA)"),
        Field("sepa_gate_open", _BOOL, core, "SEPA's correct-rate gate has opened"),
        Field("num_datums", _INT, core, "sequences submitted for training"),
        Field("max_token_hit_rate", _FLOAT, core, "fraction of completions that stopped at `max_tokens`"),
        Field("step_time_s", _FLOAT, core, "wall time of the step"),
        Field("batch_size", _INT, core, "prompts this step (back-pressure may change it)"),
        Field("group_size", _INT, core, "completions per prompt"),
        Field("bp_action", _STR, core, "back-pressure decision (`off` when disabled)"),
        Field("bp_regime", _STR, core, "back-pressure regime (`off`, `warmup`, …)"),
        Field("uncertainty_kind", _STR, core, "token uncertainty in use (`surprisal`, …)"),
        *unc,
        Field("correct_count", _INT, extra, "completions of the step counted correct"),
        Field("total_count", _INT, extra, "all completions of the step"),
        Field("sample_time_s", _FLOAT, extra, "time spent sampling"),
        Field("reward_time_s", _FLOAT, extra, "time spent scoring"),
        Field("advantage_time_s", _FLOAT, extra, "time spent on advantages and token transforms"),
        Field("train_time_s", _FLOAT, extra, "time of the optimizer step (forward, backward, update)"),
        Field("tokens_per_s", _FLOAT, extra, "completion tokens generated per second of step time"),
        Field("grad_norm", _FLOAT, extra, "global gradient norm before clipping"),
        Field("clip_frac", _FLOAT, extra, "fraction of tokens whose PPO ratio was clipped (0 without clipping)"),
        Field("kl", _OPT_FLOAT, extra, "k3 KL estimate to the base model; null when `training.kl_beta = 0`"),
        Field("lr", _FLOAT, extra, "learning rate used this step"),
        Field("skipped_groups", _INT, extra, "groups without learning signal this step (all rewards equal)"),
        Field("skipped_groups_total", _INT, extra, "the same, summed since step 1"),
        Field("bp_p_star", _OPT_FLOAT, extra, "back-pressure: fitted throughput knee p* (null before a fit)"),
        Field("bp_sigma", _OPT_FLOAT, extra, "fitted USL contention coefficient"),
        Field("bp_kappa", _OPT_FLOAT, extra, "fitted USL coherency coefficient"),
        Field("bp_utilization", _OPT_FLOAT, extra, "current size / p*"),
        Field("bp_throughput", _OPT_FLOAT, extra, "measured tokens per second"),
        Field("bp_warmup", _BOOL, extra, "the controller is still exploring sizes"),
        Field("skipped_step", _BOOL, more, "the step made no update (non-finite loss or gradient, or an update rolled back)"),
        Field("rolled_back", _BOOL, more, "the update made a weight non-finite and was undone"),
        Field("chunk_size", _OPT_INT, more, "sequences decoded at once (back-pressure in concurrency mode); null: all"),
        Field("mean_completion_length", _FLOAT, more, "mean completion length in tokens"),
        Field("max_completion_length", _INT, more, "longest completion of the step, in tokens"),
        Field("num_tokens", _INT, more, "completion tokens of the step"),
        Field("trained_tokens", _INT, more, "completion tokens the loss covered"),
        Field("pg_loss", _FLOAT, more, "policy-gradient part of the loss (the loss without the KL term)"),
        Field("policy_entropy", _FLOAT, more, "mean token entropy of the policy in the training forward"),
        Field("ratio_max_dev", _FLOAT, more, "largest |importance ratio - 1| over tokens (0 on-policy)"),
        Field("forward_backward_time_s", _FLOAT, more, "time of the forward and backward passes"),
        Field("optimizer_time_s", _FLOAT, more, "time of clipping, the AdamW update and the LR step"),
        Field("num_groups", _INT, more, "groups (prompts) of the step"),
        Field("num_informative_groups", _INT, more, "groups whose rewards differ (they carry a learning signal)"),
        Field("num_all_correct_groups", _INT, more, "groups where every completion was correct"),
        Field("num_all_wrong_groups", _INT, more, "groups where no completion was correct"),
        Field("episode_adv_mean", _FLOAT, more, "mean episode advantage (before token transforms)"),
        Field("episode_adv_abs_mean", _FLOAT, more, "mean |episode advantage|"),
        Field("adv_mean", _FLOAT, more, "mean final token advantage"),
        Field("adv_abs_mean", _FLOAT, more, "mean |final token advantage|"),
        Field("planning_token_frac", _FLOAT, more, "share of the step's completion tokens that are planning tokens (what HICRA and SEPA act on)"),
        Field("num_planning_tokens", _INT, more, "planning tokens among the step's completion tokens"),
        *(Field(f"{part}_uncertainty_{stat}", _OPT_FLOAT, more,
                f"{'execution' if part == 'exec' else 'planning'}-token {stat} of the configured uncertainty (`uncertainty_kind`), before SEPA pooling")
          for part in ("exec", "plan") for stat in ("mean", "var")),
        Field("exec_uncertainty_pooled_mean", _OPT_FLOAT, more, "execution-token uncertainty mean after SEPA pooling (what GTPO weights use)"),
        Field("exec_uncertainty_pooled_var", _OPT_FLOAT, more, "its variance after pooling"),
        Field("sepa_lambda_applied", _FLOAT, more, "SEPA pooling strength actually applied (0 unless the transform has sepa)"),
        Field("gtpo_weight_mean", _FLOAT, when, "mean GTPO token weight (gtpo transforms only)"),
        Field("gtpo_weight_min", _FLOAT, when, "smallest GTPO token weight"),
        Field("gtpo_weight_max", _FLOAT, when, "largest GTPO token weight"),
        Field("gtpo_weight_zero_frac", _FLOAT, when, "share of tokens whose GTPO weight is floored at 0"),
        Field("hicra_changed_frac", _FLOAT, when, "share of completion tokens whose advantage HICRA changed (planning tokens of episodes with a non-zero advantage); hicra transforms only"),
        Field("logprob_diff_mean", _FLOAT, when, "mean |log-prob of the sampler - log-prob of the trainer| over the step's tokens; a backend whose sampler is not the trained model (vllm) only"),
        Field("logprob_diff_max", _FLOAT, when, "its largest value"),
        Field("is_weight_mean", _FLOAT, when, "mean truncated importance weight min(pi_train / pi_sampler, backend.is_cap) (vllm only)"),
        Field("is_truncated_frac", _FLOAT, when, "share of tokens whose importance weight hit backend.is_cap (vllm only)"),
        Field("phase", _STR, when, "multi-phase runs: name of the phase this step trained ([[phases]] name)"),
        Field("round", _INT, when, "multi-phase runs: curriculum round, 1-based"),
        Field("phase_index", _INT, when, "multi-phase runs: position of the phase in the [[phases]] list, 0-based"),
        Field("phase_step", _INT, when, "multi-phase runs: step within the current phase, 1-based (`step` keeps counting over the run)"),
        Field("probe_worst_drop", _OPT_FLOAT, when, "multi-phase runs, steps that probed: largest accuracy drop of an earlier phase below its value at that phase's commit (null: no earlier phase)"),
        Field("probe_rolled_back", _BOOL, when, "multi-phase runs, steps that probed: the drop exceeded probe.max_drop and the adapter was restored to the last good ledger entry"),
        Field("replay_prompts", _INT, when, "multi-phase runs with replay.fraction > 0: prompts of the step replayed from earlier phases"),
        Field("loss_new", _FLOAT, when, "multi-phase replay: the policy-gradient loss on the current phase's sequences (`new=` on the console)"),
        Field("loss_old", _FLOAT, when, "multi-phase replay: the policy-gradient loss on the replayed sequences (`old=`); loss_new + loss_old = pg_loss"),
        Field("teacher_kl", _FLOAT, when, "multi-phase replay: mean k3 KL to the teacher (the previous phase's committed adapter) over the replayed tokens (`kl=`); computed when replay.kl_beta > 0, else 0"),
        Field("eval_accuracy", _FLOAT, ev, "greedy held-out accuracy"),
        Field("eval_mean_length", _FLOAT, ev, "mean completion length in the (greedy) eval"),
        Field("eval_accuracy_se", _FLOAT, ev, "its standard error over held-out problems: sample std of the per-problem 0/1 scores / √`eval_size`"),
        Field("eval_size", _INT, ev, "held-out problems in the eval (`eval.size`)"),
        Field("eval_sampled_accuracy", _FLOAT, ev, "mean@k: mean correctness of `eval_samples` completions per problem at `training.temperature` (absent when `eval.samples = 0`)"),
        Field("eval_sampled_accuracy_se", _FLOAT, ev, "its standard error over problems (std of the per-problem means / √`eval_size`)"),
        Field("eval_samples", _INT, ev, "k of mean@k (`eval.samples`)"),
        Field("eval_time_s", _FLOAT, ev, "wall time of the eval"),
    )


FIELDS: tuple[Field, ...] = _fields()
_BY_GROUP = {g: tuple(f.name for f in FIELDS if f.group == g) for g in ("core", "extra", "more", "when", "eval")}
CORE_FIELDS: tuple[str, ...] = _BY_GROUP["core"]
EXTRA_FIELDS: tuple[str, ...] = _BY_GROUP["extra"]
METRICS_FIELDS: tuple[str, ...] = CORE_FIELDS + EXTRA_FIELDS  # required on every training row
# Type-checked when present: this version's diagnostics and a transform's own statistics.
OPTIONAL_FIELDS: tuple[str, ...] = _BY_GROUP["more"] + _BY_GROUP["when"]
EVAL_FIELDS: tuple[str, ...] = ("eval_accuracy", "eval_mean_length")
EVAL_EXTRA_FIELDS: tuple[str, ...] = tuple(n for n in _BY_GROUP["eval"] if n not in EVAL_FIELDS)
FIELD_TYPES: dict[str, str] = {f.name: f.kind for f in FIELDS}

EMERGENCE_STEP_FIELDS: tuple[str, ...] = (
    "step", "mean_reward", "correct_count", "total_count", "condition")
GENERATION_FIELDS: tuple[str, ...] = ("step", "prompt", "completion", "reward", "num_tokens")
PROMPT_CHARS = 200
COMPLETION_CHARS = 500


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind in (_INT, _OPT_INT):
        return (value is None and kind == _OPT_INT) or (isinstance(value, int) and not isinstance(value, bool))
    if value is None:
        return kind == _OPT_FLOAT
    # ints are fine where floats are expected (a loss of exactly 0 serialises as 0.0 anyway)
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_row(row: Mapping[str, Any]) -> list[str]:
    """Problems with one metrics.jsonl row (empty list = valid).

    A training row (step >= 1) needs every METRICS_FIELDS entry with its type; the step-0 row
    is the initial eval and needs step, condition and the EVAL_FIELDS only. Every other field
    must be declared in FIELDS and have its type: a metric the trainer computes but the contract
    does not name is a problem, so FIELDS stays the one definition of the row.
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
        kind = FIELD_TYPES.get(name)
        if kind is None:
            problems.append(f"{name}: not a field of the metrics contract (retrain/sinks/contract.py)")
        elif not _type_ok(value, kind):
            problems.append(f"{name}: expected {kind}, got {value!r}")
    return problems


def render_fields_md() -> str:
    """docs/logging.md's table of metrics.jsonl fields, generated from FIELDS."""
    titles = {"core": "Fields of the original logging contract (names kept verbatim), on every training row",
              "extra": "Fields beyond it, on every training row",
              "more": "Diagnostics on every training row written by this version (older run dirs lack them)",
              "when": "Present only when the step computed them (a transform's own statistics)",
              "eval": "Eval fields, on rows of steps that evaluated and on the step-0 row"}
    out: list[str] = []
    for group, title in titles.items():
        out += [f"{title}:", "", "| Field | Type | wandb key | Meaning |", "|---|---|---|---|"]
        for f in FIELDS:
            if f.group == group:
                key = "(not in the history)" if f.name in NOT_IN_HISTORY else f"`{wandb_key(f.name)}`"
                out.append(f"| `{f.name}` | {f.kind.replace('|', chr(92) + '|')} | {key} | {f.doc} |")
        out.append("")
    return "\n".join(out)


def ordered_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The row with contract fields first, in contract order, then the rest as given."""
    row = {name: metrics[name] for name in METRICS_FIELDS if name in metrics}
    for name, value in metrics.items():
        if name not in row:
            row[name] = value
    return row


# ---- wandb keys (docs/logging.md, "wandb") -------------------------------------------------------------------

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
    """The hyper-parameters as one flat dict (names in docs/logging.md) plus the full nested config.

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


FIELDS_BEGIN, FIELDS_END = "<!-- metrics fields: generated from retrain/sinks/contract.py -->", "<!-- end of metrics fields -->"


def with_fields_md(doc: str) -> str:
    """`doc` (docs/logging.md) with the generated table between its two markers replaced."""
    head, _, rest = doc.partition(FIELDS_BEGIN)
    _, _, tail = rest.partition(FIELDS_END)
    return f"{head}{FIELDS_BEGIN}\n{render_fields_md()}{FIELDS_END}{tail}"
