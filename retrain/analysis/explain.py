"""`retrain explain`: one recorded step, token by token — which token got which advantage, and why.

Data flow: the step loop wrote `<run>/explain/step_NNNNNN.npz` (retrain/trainer/explain_record.py,
format in docs/logging.md) ─▶ **load_record** ─▶ **recompute**: the advantage pipeline run again
on the recorded inputs with an `AdvantageTrace` ─▶ the recomputed adv_T must equal the recorded
one bit for bit (a difference means the record or the trainer is wrong) ─▶ **explain_step**:
per-token rows and the group header ─▶ explain_render.py (terminal table, JSON, CSV, HTML).

Reads only the run directory (and imports a custom advantage or transform plugin the step named);
never imports torch or the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain.algo.pipeline import AdvantageTrace, TokenBatch, TransformFn, compute_advantages
from retrain.analysis.loading import AnalysisError
from retrain.io import iter_jsonl

EXPLAIN_DIR = "explain"  # as retrain/trainer/explain_record.py writes it
FORMAT_VERSION = 1
STAGES = ("episode", "gtpo", "hicra", "custom")  # AdvantageTrace stage names, in pipeline order


@dataclass(frozen=True)
class StepRecord:
    """One recorded step, as the trainer gave it to the advantage pipeline."""

    path: Path
    step: int
    sepa_lambda: float  # λ the sepa scheduler gave this step (ignored when the mode has no sepa)
    settings: dict[str, Any]  # compute_advantages keyword arguments (advantage_mode, gtpo_beta, …)
    group_size: int
    phase: str | None  # multi-phase runs: the phase of this step
    prompts: list[str]  # one per group
    completions: list[str]  # one per sequence
    logprob_T: np.ndarray
    entropy_T: np.ndarray | None
    planning_T: np.ndarray  # bool
    offsets: np.ndarray  # int64 [N+1]
    spans_T: np.ndarray | None  # int64 [T, 2] char span of each token in its completion
    reward_N: np.ndarray
    group_N: np.ndarray  # int64
    truncated_N: np.ndarray  # bool
    adv_T: np.ndarray  # float64, what the trainer trained on

    @property
    def num_sequences(self) -> int:
        return len(self.completions)


@dataclass(frozen=True)
class Recomputed:
    adv_T: np.ndarray  # float64 [T]
    trace: AdvantageTrace
    matches: bool  # np.array_equal(recomputed, recorded)
    max_abs_diff: float  # 0.0 when it matches


@dataclass(frozen=True)
class TokenRow:
    index: int  # position in the completion
    text: str  # the token's text, whitespace made visible
    logprob: float
    entropy: float | None
    surprisal: float  # -logprob
    planning: bool
    uncertainty: float  # h before sepa
    pooled: float  # h after sepa (what gtpo weighed)
    gtpo_weight: float | None
    stages: dict[str, float]  # adv after each stage that ran, in order
    adv: float  # final advantage (what the trainer used)


@dataclass(frozen=True)
class Completion:
    sequence: int  # index in the step's batch
    group: int
    reward: float
    episode_adv: float
    truncated: bool
    text: str
    rows: list[TokenRow]


@dataclass(frozen=True)
class GroupHeader:
    group: int
    prompt: str
    rewards: list[float]  # one per member
    episode_adv: list[float]
    sequences: list[int]  # the members' batch indices
    shown: list[int]  # members shown below (batch indices)


@dataclass(frozen=True)
class Explanation:
    record: StepRecord
    recomputed: Recomputed
    headers: list[GroupHeader]
    completions: list[Completion]
    max_abs_adv: float  # over the whole step: the colour scale of the HTML view


# --- reading ----------------------------------------------------------------------------------

def explain_files(run_dir: Path) -> dict[int, Path]:
    """Recorded steps -> file, without steps past the last one in metrics.jsonl: after a crash and
    a resume (or a restart from scratch) such a file belongs to a step the run has not (re)done."""
    files: dict[int, Path] = {}
    for path in sorted((run_dir / EXPLAIN_DIR).glob("step_*.npz")):
        try:
            files[int(path.stem.removeprefix("step_"))] = path
        except ValueError:
            continue
    last = _last_logged_step(run_dir)  # None: no step logged (a run restarted from scratch)
    return {s: p for s, p in files.items() if last is not None and s <= last}


def _last_logged_step(run_dir: Path) -> int | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    steps = [row["step"] for row in iter_jsonl(path) if isinstance(row.get("step"), int)]
    return max(steps) if steps else None


def resolve_step(run_dir: Path, step: int | None) -> Path:
    if not run_dir.is_dir():
        raise AnalysisError(f"{run_dir}: no such run directory")
    if not (run_dir / "metrics.jsonl").is_file():
        raise AnalysisError(f"{run_dir}: no metrics.jsonl: not a run directory, or its run has "
                            f"not finished a step yet")
    files = explain_files(run_dir)
    if not files:
        raise AnalysisError(
            f"{run_dir}: no recorded steps in {EXPLAIN_DIR}/; the trainer records every "
            f"logging.explain_every-th step (and the last), so run with logging.explain_every >= 1 "
            f"(e.g. --set logging.explain_every=1)")
    if step is None:
        return files[max(files)]
    if step not in files:
        raise AnalysisError(
            f"step {step} is not recorded in {run_dir / EXPLAIN_DIR}; recorded steps: "
            f"{_step_list(sorted(files))} (logging.explain_every sets which steps are recorded)")
    return files[step]


def _step_list(steps: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, steps[:limit]))
    return shown + (f", … ({len(steps)} in all)" if len(steps) > limit else "")


def load_record(path: Path) -> StepRecord:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise AnalysisError(f"{path}: not a readable explain record ({exc}); it is rewritten "
                            f"when the step runs again") from None
    if meta.get("format") != FORMAT_VERSION:
        raise AnalysisError(f"{path}: explain record format {meta.get('format')!r}, this "
                            f"retrain reads format {FORMAT_VERSION}; use the retrain that wrote it")
    spans = arrays.get("spans_T")
    return StepRecord(
        path=path, step=int(meta["step"]), sepa_lambda=float(meta["sepa_lambda"]),
        settings=dict(meta["algorithm"]), group_size=int(meta["group_size"]), phase=meta.get("phase"),
        prompts=list(meta["prompts"]), completions=list(meta["completions"]),
        logprob_T=arrays["logprob_T"], entropy_T=arrays.get("entropy_T"),
        planning_T=arrays["planning_T"].astype(np.bool_),
        offsets=arrays["offsets"].astype(np.int64),
        spans_T=None if spans is None else spans.astype(np.int64),
        reward_N=arrays["reward_N"], group_N=arrays["group_N"].astype(np.int64),
        truncated_N=arrays["truncated_N"], adv_T=arrays["adv_T"])


# --- recomputing --------------------------------------------------------------------------------

def load_plugins(settings: dict[str, Any]) -> tuple[Callable[[np.ndarray], np.ndarray] | None,
                                                     TransformFn | None]:
    """The custom advantage and transform functions the step's settings name (None: built-in)."""
    from retrain.plugins import is_plugin_path

    custom_fn = custom_transform = None
    mode, transform = str(settings["advantage_mode"]), str(settings["transform_mode"])
    try:
        if is_plugin_path(mode):
            from retrain.algo.advantages import load_custom_advantage

            custom_fn = load_custom_advantage(mode)
        if is_plugin_path(transform):
            from retrain.plugins import load_custom_transform

            custom_transform = load_custom_transform(transform)
    except Exception as exc:  # the plugin's own error: say which plugin, and from where
        raise AnalysisError(f"cannot load the plugin the recorded step used ({exc}); run "
                            f"`retrain explain` from the directory the run was started in") from None
    return custom_fn, custom_transform


def recompute(record: StepRecord, *, custom_fn: Callable[[np.ndarray], np.ndarray] | None = None,
              custom_transform: TransformFn | None = None) -> Recomputed:
    """The advantage pipeline again on the recorded inputs, every stage traced."""
    batch = TokenBatch(logprob_T=record.logprob_T, entropy_T=record.entropy_T,
                       planning_T=record.planning_T, offsets=record.offsets,
                       reward_N=record.reward_N, group_N=record.group_N)
    trace = AdvantageTrace()
    s = record.settings
    adv_T, _ = compute_advantages(
        batch, advantage_mode=s["advantage_mode"], scale=s["scale"], eps=s["eps"],
        transform_mode=s["transform_mode"], uncertainty_kind=s["uncertainty_kind"],
        gtpo_beta=s["gtpo_beta"], gtpo_max_weight=s["gtpo_max_weight"],
        hicra_alpha=s["hicra_alpha"], sepa_lambda=record.sepa_lambda, custom_fn=custom_fn,
        custom_transform=custom_transform, trace=trace)
    if adv_T.shape != record.adv_T.shape:
        return Recomputed(adv_T, trace, False, float("inf"))
    same = bool(np.array_equal(adv_T, record.adv_T))
    diff = 0.0 if same else float(np.max(np.abs(adv_T - record.adv_T)))
    return Recomputed(adv_T, trace, same, diff)


# --- rows -----------------------------------------------------------------------------------------

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """A token's text with whitespace shown; a token without text (a special token) is '∅'."""
    return "".join(VISIBLE.get(ch, ch) for ch in text) if text else "∅"


def token_texts(record: StepRecord, seq: int) -> list[str]:
    lo, hi = int(record.offsets[seq]), int(record.offsets[seq + 1])
    if record.spans_T is None:
        return ["?"] * (hi - lo)
    text = record.completions[seq]
    return [text[a:b] for a, b in record.spans_T[lo:hi].tolist()]


def completion_rows(record: StepRecord, rec: Recomputed, seq: int) -> list[TokenRow]:
    """One row per token of sequence `seq`; stage columns only for the stages that ran."""
    lo, hi = int(record.offsets[seq]), int(record.offsets[seq + 1])
    tr = rec.trace
    assert tr.uncertainty_T is not None and tr.pooled_T is not None
    texts = token_texts(record, seq)
    rows = []
    for k, t in enumerate(range(lo, hi)):
        lp = float(record.logprob_T[t])
        rows.append(TokenRow(
            index=k, text=visible(texts[k]), logprob=lp,
            entropy=None if record.entropy_T is None else float(record.entropy_T[t]),
            surprisal=-lp, planning=bool(record.planning_T[t]),
            uncertainty=float(tr.uncertainty_T[t]), pooled=float(tr.pooled_T[t]),
            gtpo_weight=None if tr.gtpo_weight_T is None else float(tr.gtpo_weight_T[t]),
            stages={name: float(adv[t]) for name, adv in tr.stages.items()},
            adv=float(record.adv_T[t])))
    return rows


def informative_groups(record: StepRecord) -> list[int]:
    """Groups whose rewards differ (the ones with a learning signal), in order."""
    out = []
    for g in np.unique(record.group_N).tolist():
        r = record.reward_N[record.group_N == g]
        if r.size and np.any(r != r[0]):
            out.append(int(g))
    return out


def select(record: StepRecord, samples: Sequence[int], group: int | None) -> list[int]:
    """The sequences to show: --sample indices, all of --group, or by default the first member
    of the first informative group (the first sequence when no group has a signal)."""
    n = record.num_sequences
    groups = sorted(set(record.group_N.tolist()))
    if group is not None:
        if group not in groups:
            raise AnalysisError(f"--group {group}: step {record.step} has groups 0-{len(groups) - 1}")
        chosen = np.flatnonzero(record.group_N == group).tolist()
    else:
        chosen = []
    for i in samples:
        if not 0 <= i < n:
            raise AnalysisError(f"--sample {i}: step {record.step} has completions 0-{n - 1}")
        if i not in chosen:
            chosen.append(i)
    if chosen:
        return [int(i) for i in chosen]
    informative = informative_groups(record)
    if informative:
        return [int(np.flatnonzero(record.group_N == informative[0])[0])]
    return [0] if n else []


def explain_step(run_dir: Path, *, step: int | None = None, samples: Sequence[int] = (),
                 group: int | None = None, max_tokens: int | None = None) -> Explanation:
    """Load, recompute, check and tabulate one step of a run."""
    record = load_record(resolve_step(run_dir, step))
    custom_fn, custom_transform = load_plugins(record.settings)
    rec = recompute(record, custom_fn=custom_fn, custom_transform=custom_transform)
    assert rec.trace.adv_N is not None
    adv_N = rec.trace.adv_N
    chosen = select(record, samples, group)
    completions = []
    for seq in chosen:
        rows = completion_rows(record, rec, seq)
        completions.append(Completion(
            sequence=seq, group=int(record.group_N[seq]), reward=float(record.reward_N[seq]),
            episode_adv=float(adv_N[seq]), truncated=bool(record.truncated_N[seq]),
            text=record.completions[seq], rows=rows[:max_tokens] if max_tokens else rows))
    headers = []
    for g in dict.fromkeys(int(record.group_N[s]) for s in chosen):
        members = np.flatnonzero(record.group_N == g).tolist()
        headers.append(GroupHeader(
            group=g, prompt=record.prompts[g] if g < len(record.prompts) else "",
            rewards=[float(record.reward_N[i]) for i in members],
            episode_adv=[float(adv_N[i]) for i in members], sequences=members,
            shown=[s for s in chosen if record.group_N[s] == g]))
    max_abs = float(np.max(np.abs(record.adv_T), initial=0.0))
    return Explanation(record, rec, headers, completions, max_abs)
