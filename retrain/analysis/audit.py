"""The intervention audit: for each condition of a campaign, plain sentences about what did not
happen — a condition identical to another, an intervention that never acted, runs without a
learning signal, an adapter that never moved.

Data flow: run dirs → `loading.collect_runs` → **audit_runs** → findings → `render_audit`.
Run at the end of a campaign (summary.md, manifest.json "audit") and by `retrain analyze audit`;
folded into `retrain analyze compare`. Reads run dirs only: metrics rows, config.toml and the
final adapter's safetensors (with `safetensors.numpy`, no torch).

Every check but two is exact (a metric that is 0 at every step of every seed, an equality of
every logged number); the two with thresholds (`[audit] no_signal_frac`, `max_token_hit_rate`)
are documented in docs/analysis.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from retrain.analysis.formats import OutputFormat, csv_text, json_text
from retrain.analysis.loading import AnalysisError, RunData, as_number, collect_runs, discover

# Fields that measure time (or are derived from it): they differ between identical runs.
_TIMING_SUFFIXES = ("_time_s",)
_TIMING_FIELDS = frozenset({"tokens_per_s", "condition"})
_TIMING_PREFIXES = ("bp_",)  # back-pressure fits measured throughput
# Config keys that name a run, not what it does.
_IDENTITY_KEYS = frozenset({"training.seed", "logging.run_name", "logging.wandb_group",
                            "logging.wandb_run_name", "logging.wandb_tags"})


@dataclass(frozen=True)
class AuditThresholds:
    """The two thresholds of the audit (the `[audit]` table; docs/analysis.md)."""

    no_signal_frac: float = 0.9
    max_token_hit_rate: float = 0.5


@dataclass(frozen=True)
class Finding:
    condition: str
    kind: str  # identical | never_acted | no_signal | truncated | unchanged
    sentence: str
    seeds: int  # seeds the finding holds on
    data: dict[str, Any] = field(default_factory=dict)


KINDS = ("identical", "never_acted", "no_signal", "truncated", "unchanged")


# --- reading -----------------------------------------------------------------------------------


def thresholds_for(path: Path, *, no_signal_frac: float | None = None,
                   max_token_hit_rate: float | None = None) -> AuditThresholds:
    """The campaign's `[audit]` thresholds (its campaign.toml), overridden by the given values."""
    values: dict[str, Any] = {f.name: f.default for f in fields(AuditThresholds)}
    source = Path(path) / "campaign.toml"
    if source.is_file():
        try:
            table = tomllib.loads(source.read_text()).get("audit", {})
        except (OSError, tomllib.TOMLDecodeError):
            table = {}
        if isinstance(table, dict):
            values.update({k: v for k, v in table.items() if k in values})
    given = {"no_signal_frac": no_signal_frac, "max_token_hit_rate": max_token_hit_rate}
    values.update({k: v for k, v in given.items() if v is not None})
    checked: dict[str, float] = {}
    for key, value in values.items():
        number = as_number(value)
        if number is None or not 0.0 <= number <= 1.0:
            raise AnalysisError(f"audit.{key} = {value!r}: give a share between 0 and 1 "
                                f"(--{key.replace('_', '-')} or [audit] {key} in campaign.toml)")
        checked[key] = number
    return AuditThresholds(**checked)


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items()
            if k not in _TIMING_FIELDS and not k.endswith(_TIMING_SUFFIXES)
            and not k.startswith(_TIMING_PREFIXES)}


def _by_condition(runs: Sequence[RunData]) -> dict[str, dict[int, RunData]]:
    """condition → seed → run, for runs that logged at least one training step."""
    out: dict[str, dict[int, RunData]] = {}
    for run in runs:
        out.setdefault(run.condition, {})
        if run.seed is not None and run.step > 0:
            out[run.condition][run.seed] = run
    return out


def _values(runs: Iterable[RunData], metric: str) -> list[float]:
    return [v for run in runs for v in run.series(metric)[1]]


def _training_rows(run: RunData) -> list[dict[str, Any]]:
    return [r for r in run.rows if r.get("step", 0) >= 1]


def lora_delta_is_zero(run_dir: Path) -> bool | None:
    """True when every LoRA B matrix of the run's final adapter is exactly 0 (so B @ A is 0: the
    adapter is what peft initialised, a no-op); None when there is no final adapter to read."""
    path = run_dir / "adapter" / "adapter_model.safetensors"
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, ValueError):
        return None
    b_mats = [t for name, t in tensors.items() if "lora_B" in name]
    if not b_mats:
        return None
    return all(not np.any(t) for t in b_mats)


# --- checks ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x == 0 or x >= 0.01 else f"{100 * x:.2g}%"


def _config_difference(a: RunData, b: RunData) -> str:
    fa, fb = _flat(a.config), _flat(b.config)
    keys = sorted(k for k in set(fa) & set(fb) if k not in _IDENTITY_KEYS and fa[k] != fb[k])
    if not keys:
        return "their configs differ only in settings of transforms that are off"
    shown = ", ".join(f"{k} ({fa[k]!r} vs {fb[k]!r})" for k in keys[:3])
    more = f" and {len(keys) - 3} more keys" if len(keys) > 3 else ""
    return f"the two differ in {shown}{more}"


def _same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Same steps, and equal values of every field both rows log (a transform's own diagnostics,
    such as hicra_changed_frac, exist on one side only)."""
    if [r.get("step") for r in a] != [r.get("step") for r in b]:
        return False
    for ra, rb in zip(a, b, strict=True):
        ca, cb = _comparable(ra), _comparable(rb)
        if any(ca[k] != cb[k] for k in ca.keys() & cb.keys()):
            return False
    return True


def _identical(order: Sequence[str], by_cond: dict[str, dict[int, RunData]],
               idle: set[str]) -> list[Finding]:
    """A condition whose runs equal another's at every shared seed. The finding goes to the one
    of the pair whose intervention never acted (`idle`), else to the later one in `order`."""
    out: list[Finding] = []
    flagged: set[str] = set()
    for j, later in enumerate(order):
        for earlier in order[:j]:
            shared = sorted(set(by_cond[later]) & set(by_cond[earlier]))
            if not shared or not all(_same_rows(by_cond[later][s].rows, by_cond[earlier][s].rows)
                                     for s in shared):
                continue
            target, other = ((earlier, later) if earlier in idle and later not in idle
                             else (later, earlier))
            if target in flagged:
                continue
            flagged.add(target)
            a, b = by_cond[target][shared[0]], by_cond[other][shared[0]]
            out.append(Finding(
                target, "identical",
                f"identical to {other}: every logged metric is equal at every step on "
                f"{len(shared)} of {len(shared)} shared seeds (timings aside); "
                f"{_config_difference(a, b)}.",
                len(shared), {"other": other, "seeds": shared}))
    return out


def _all_zero(runs: Sequence[RunData], metric: str) -> bool | None:
    """True when `metric` is 0 (or null) at every step of every run; None when never logged."""
    logged = [any(metric in r for r in _training_rows(run)) for run in runs]
    if not all(logged):
        return None
    return all(not as_number(r.get(metric)) for run in runs for r in _training_rows(run))


def _never_acted(cond: str, runs: Sequence[RunData]) -> list[Finding]:
    out: list[Finding] = []
    n = len(runs)
    cfg = _flat(runs[0].config)
    transform = str(cfg.get("algorithm.transform_mode", ""))
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    plan = _values(runs, "planning_token_frac")
    plan_mean = float(np.mean(plan)) if plan else None

    if "hicra" in transform and _all_zero(runs, "hicra_changed_frac"):
        why = ("no planning token occurred (planning_token_frac 0 at every step)"
               if plan_mean == 0 else
               f"planning tokens were {_pct(plan_mean or 0.0)} of completion tokens, but none was "
               "in an episode with a non-zero advantage")
        out.append(Finding(cond, "never_acted",
                           f"HICRA never acted on {seeds}: {why}, so it changed no token's advantage.",
                           n, {"intervention": "hicra", "planning_token_frac": plan_mean}))
    if "sepa" in transform:
        metric = "sepa_lambda_applied" if all(
            any("sepa_lambda_applied" in r for r in run.rows) for run in runs) else "sepa_lambda"
        if _all_zero(runs, metric):
            gate = [bool(r.get("sepa_gate_open")) for run in runs for r in _training_rows(run)]
            why = (" (its correct-rate gate never opened)" if gate and not any(gate) else "")
            out.append(Finding(cond, "never_acted",
                               f"SEPA never acted on {seeds}: its pooling strength stayed 0 at "
                               f"every step{why}.", n, {"intervention": "sepa", "gate_opened": any(gate)}))
    if "gtpo" in transform:
        lo, hi = _values(runs, "gtpo_weight_min"), _values(runs, "gtpo_weight_max")
        if lo and hi and min(lo) == max(hi) == 1.0:
            out.append(Finding(cond, "never_acted",
                               f"GTPO never acted on {seeds}: every token weight was 1 at every step.",
                               n, {"intervention": "gtpo"}))
    clip = as_number(cfg.get("training.clip_eps"))
    if clip is not None and _all_zero(runs, "clip_frac"):
        out.append(Finding(cond, "never_acted",
                           f"PPO clipping (training.clip_eps = {clip:g}) never clipped a token on "
                           f"{seeds} (clip_frac 0 at every step): each batch gets one update, so the "
                           "ratio stays 1 unless the sampler differs from the trainer.",
                           n, {"intervention": "clip"}))
    beta = as_number(cfg.get("training.kl_beta"))
    if beta and _all_zero(runs, "kl"):
        out.append(Finding(cond, "never_acted",
                           f"the KL penalty (training.kl_beta = {beta:g}) never acted on {seeds}: "
                           "the KL estimate was 0 at every step.", n, {"intervention": "kl"}))
    if _all_zero(runs, "is_truncated_frac"):
        diff = _values(runs, "logprob_diff_max")
        worst = f"; largest |log-prob difference| {max(diff):.2g}" if diff else ""
        out.append(Finding(cond, "never_acted",
                           f"truncated importance sampling (backend.is_cap) never truncated a weight "
                           f"on {seeds}{worst}: the sampler matched the trainer closely.",
                           n, {"intervention": "truncated_is"}))
    return out


def _signal(cond: str, runs: Sequence[RunData], t: AuditThresholds) -> list[Finding]:
    out: list[Finding] = []
    n = len(runs)
    groups = sum(_values(runs, "num_groups"))
    informative = sum(_values(runs, "num_informative_groups"))
    if groups > 0:
        share = 1.0 - informative / groups
        if share > t.no_signal_frac:
            right = sum(_values(runs, "num_all_correct_groups")) / groups
            wrong = sum(_values(runs, "num_all_wrong_groups")) / groups
            out.append(Finding(cond, "no_signal",
                               f"little learning signal on {n} seed{'s' if n != 1 else ''}: "
                               f"{_pct(share)} of groups had equal rewards, so zero advantage "
                               f"({_pct(right)} all correct, {_pct(wrong)} all wrong; above "
                               f"audit.no_signal_frac = {_pct(t.no_signal_frac)}).", n, {"zero_advantage_frac": share}))
    hits = _values(runs, "max_token_hit_rate")
    if hits and float(np.mean(hits)) > t.max_token_hit_rate:
        rate = float(np.mean(hits))
        out.append(Finding(cond, "truncated",
                           f"{_pct(rate)} of completions stopped at training.max_tokens (mean over "
                           f"steps; above audit.max_token_hit_rate = {_pct(t.max_token_hit_rate)}): rewards "
                           "mostly graded cut-off answers; raise training.max_tokens.",
                           n, {"max_token_hit_rate": rate}))
    return out


def _unchanged(cond: str, runs: Sequence[RunData]) -> list[Finding]:
    verdicts = [lora_delta_is_zero(run.run_dir) for run in runs]  # each adapter read once
    zero = [run for run, v in zip(runs, verdicts, strict=True) if v]
    if not zero:
        return []
    read = sum(v is not None for v in verdicts)
    lr = as_number(_flat(zero[0].config).get("optimizer.lr"))
    why = " (optimizer.lr is 0)" if lr == 0 else ""
    return [Finding(cond, "unchanged",
                    f"the trainable weights did not change on {len(zero)} of {read} seeds{why}: every "
                    "LoRA B matrix of the final adapter is 0, as at initialisation, so the trained "
                    "model is the base model.", len(zero), {"seeds": sorted(r.seed or 0 for r in zero)})]


def audit_runs(runs: Sequence[RunData], thresholds: AuditThresholds | None = None) -> list[Finding]:
    """Every finding, grouped by condition in the runs' order."""
    t = thresholds or AuditThresholds()
    by_cond = _by_condition(runs)
    order = list(by_cond)
    found: list[Finding] = []
    for cond in order:
        seeded = [by_cond[cond][s] for s in sorted(by_cond[cond])]
        if not seeded:
            continue
        found += _never_acted(cond, seeded) + _signal(cond, seeded, t) + _unchanged(cond, seeded)
    found += _identical(order, by_cond, {f.condition for f in found if f.kind == "never_acted"})
    rank = {c: i for i, c in enumerate(order)}
    return sorted(found, key=lambda f: (rank[f.condition], KINDS.index(f.kind)))


def audited_conditions(runs: Sequence[RunData]) -> list[str]:
    """Conditions with at least one run that logged a training step, in the runs' order."""
    return [c for c, seeds in _by_condition(runs).items() if seeds]


def audit_path(path: Path, thresholds: AuditThresholds | None = None) -> tuple[list[Finding], list[str]]:
    """Findings and the conditions audited (those with a logged step), for a campaign or tree."""
    runs = collect_runs(Path(path))
    if thresholds is None:
        campaigns, _ = discover(Path(path))
        thresholds = thresholds_for(campaigns[0].path) if len(campaigns) == 1 else AuditThresholds()
    audited = audited_conditions(runs)
    if not audited:
        raise AnalysisError(f"{path}: no run has logged a training step yet; nothing to audit")
    return audit_runs(runs, thresholds), audited


# --- rendering ---------------------------------------------------------------------------------


def _clean(conditions: Sequence[str], findings: Sequence[Finding]) -> list[str]:
    flagged = {f.condition for f in findings}
    return [c for c in conditions if c not in flagged]


def audit_md(findings: Sequence[Finding], conditions: Sequence[str]) -> str:
    """A markdown section body: one bullet per finding under its condition."""
    lines: list[str] = []
    for cond in conditions:
        mine = [f for f in findings if f.condition == cond]
        if mine:
            lines.append(f"- **{cond}**")
            lines += [f"  - {f.sentence}" for f in mine]
    clean = _clean(conditions, findings)
    if clean:
        lines.append(f"- No finding: {', '.join(clean)}.")
    return "\n".join(lines) + "\n"


class AuditView:
    """The findings as sentences under their condition: in a terminal each wraps with a hanging
    indent; elsewhere (a pipe, a file) one line per sentence, unbroken under `print_result`."""

    def __init__(self, findings: Sequence[Finding], conditions: Sequence[str]) -> None:
        self.findings, self.conditions = list(findings), list(conditions)

    def _groups(self) -> list[tuple[str, list[str]]]:
        return [(c, [f.sentence for f in self.findings if f.condition == c]) for c in self.conditions
                if any(f.condition == c for f in self.findings)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("intervention audit (docs/analysis.md)", style="bold")
        for cond, sentences in self._groups():
            yield Text(f"{cond}:", style="bold yellow")
            if console.is_terminal:
                bullets = Table.grid(padding=(0, 1))
                bullets.add_column(no_wrap=True)
                bullets.add_column()
                for sentence in sentences:
                    bullets.add_row("  -", Text(sentence))
                yield bullets
            else:  # Text: unbroken under print_result's soft wrap, wrapped (never cut) otherwise
                for sentence in sentences:
                    yield Text(f"  - {sentence}")
        clean = _clean(self.conditions, self.findings)
        if clean:
            yield Text(f"no finding: {', '.join(clean)}")


def audit_rich(findings: Sequence[Finding], conditions: Sequence[str]) -> AuditView:
    return AuditView(findings, conditions)


def render_audit(findings: Sequence[Finding], conditions: Sequence[str], fmt: OutputFormat | str,
                 thresholds: AuditThresholds | None = None) -> str | AuditView:
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.table:
        return audit_rich(findings, conditions)
    if fmt is OutputFormat.md:
        return "## Intervention audit\n\n" + audit_md(findings, conditions)
    records = [{"condition": f.condition, "kind": f.kind, "seeds": f.seeds, "finding": f.sentence}
               for f in findings]
    if fmt is OutputFormat.csv:
        return csv_text(records) if records else "condition,kind,seeds,finding\n"
    return json_text({"thresholds": asdict(thresholds or AuditThresholds()),
                      "conditions": list(conditions),
                      "findings": [asdict(f) for f in findings]})
