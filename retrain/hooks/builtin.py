"""The built-in hooks: pure numpy functions over the payloads (base.py), and the small classes
that call them at their points. Registered by name in registry.py; docs/hooks.md lists each
hook's metrics.

The LoRA math never forms a d_out x d_in matrix: with ΔW = s·B@A (B [d_out, r], A [r, d_in]),

    ‖ΔW‖_F² = s² · tr((BᵀB)(AAᵀ))                                         (r x r products)
    ‖ΔW₁ - ΔW₀‖_F² = ‖ΔW₁‖² + ‖ΔW₀‖² - 2 s₀s₁ · tr((B₀ᵀB₁)(A₁A₀ᵀ))
    σ(B@A) = σ(R_B R_Aᵀ)   with B = Q_B R_B and Aᵀ = Q_A R_A (QR; Q's have orthonormal columns)

so a step of `norms` or `rank` costs O(r²·d) per module, like reading the weights once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from retrain.backend.base import LoraArrays
from retrain.hooks.base import (
    Observation,
    Payload,
    PostAdvantages,
    PostSample,
    PostStep,
)

# --- the math, pure ----------------------------------------------------------------------------


def delta_norm(x: LoraArrays) -> float:
    """‖s·B@A‖_F through r x r products."""
    a, b = x.a.astype(np.float64), x.b.astype(np.float64)
    sq = float(np.trace((b.T @ b) @ (a @ a.T)))
    return abs(x.scale) * math.sqrt(max(sq, 0.0))


def update_norm(prev: LoraArrays, cur: LoraArrays) -> float:
    """‖s₁·B₁A₁ - s₀·B₀A₀‖_F: how far the module's update moved since `prev`."""
    a0, b0 = prev.a.astype(np.float64), prev.b.astype(np.float64)
    a1, b1 = cur.a.astype(np.float64), cur.b.astype(np.float64)
    cross = prev.scale * cur.scale * float(np.trace((b0.T @ b1) @ (a1 @ a0.T)))
    sq = delta_norm(cur) ** 2 + delta_norm(prev) ** 2 - 2.0 * cross
    return math.sqrt(max(sq, 0.0))  # rounding can leave a tiny negative for equal updates


def singular_values(x: LoraArrays) -> np.ndarray:
    """Singular values of s·B@A, descending (r of them)."""
    _, r_b = np.linalg.qr(x.b.astype(np.float64))  # [r, r]
    _, r_a = np.linalg.qr(x.a.astype(np.float64).T)  # [r, r]
    return abs(x.scale) * np.linalg.svd(r_b @ r_a.T, compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """exp(entropy of σ/Σσ) (Roy & Vetterli 2007): 1 for one direction, k for k equal ones,
    0 for a zero update."""
    total = float(np.sum(sv))
    if total <= 0.0:
        return 0.0
    p = sv[sv > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def group_counts(reward_N: np.ndarray, group_N: np.ndarray) -> dict[str, float]:
    """Groups whose rewards all agree (no learning signal): all correct (reward > 0) or all
    wrong (reward <= 0); the rest are informative."""
    groups = np.unique(group_N)
    all_correct = all_wrong = 0
    for g in groups:
        r = reward_N[group_N == g]
        if np.all(r == r[0]):
            if r[0] > 0:
                all_correct += 1
            else:
                all_wrong += 1
    n = len(groups)
    informative = n - all_correct - all_wrong
    return {"all_correct": float(all_correct), "all_wrong": float(all_wrong),
            "informative": float(informative), "informative_frac": informative / n if n else 0.0}


def distribution(x: np.ndarray) -> dict[str, float]:
    """mean, std, abs_mean, min, max of a [T] array (zeros when empty)."""
    if x.size == 0:
        return dict.fromkeys(("mean", "std", "abs_mean", "min", "max"), 0.0)
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "abs_mean": float(np.mean(np.abs(x))),
            "min": float(np.min(x)), "max": float(np.max(x))}


def changed_frac(before: np.ndarray, after: np.ndarray) -> float:
    """Share of tokens a stage changed (beyond float64 rounding)."""
    if before.size == 0:
        return 0.0
    return float(np.mean(~np.isclose(after, before, rtol=1e-12, atol=0.0)))


ENTROPY_EDGES = (0.25, 0.5, 1.0, 2.0)  # nats; bins [0, .25), [.25, .5), [.5, 1), [1, 2), [2, inf)


def entropy_histogram(entropy_T: np.ndarray) -> dict[str, float]:
    """Share of tokens per entropy bin, and quantiles."""
    labels = ["lt_0.25", "0.25_0.5", "0.5_1", "1_2", "ge_2"]
    if entropy_T.size == 0:
        return {**{f"frac_{k}": 0.0 for k in labels}, "mean": 0.0, "p50": 0.0, "p90": 0.0}
    counts = np.bincount(np.searchsorted(ENTROPY_EDGES, entropy_T, side="right"), minlength=5)
    out = {f"frac_{k}": float(c) / entropy_T.size for k, c in zip(labels, counts, strict=True)}
    p50, p90 = np.quantile(entropy_T, [0.5, 0.9])
    return {**out, "mean": float(np.mean(entropy_T)), "p50": float(p50), "p90": float(p90)}


# --- the hooks ---------------------------------------------------------------------------------


class Builtin:
    """What every built-in hook declares (the Hook protocol of base.py); `every` is per instance."""

    name: str
    points: tuple[str, ...]
    description: str
    metrics: Mapping[str, str]
    every: int = 1

    def __init__(self, every: int = 1) -> None:
        self.every = every

    def observe(self, payload: Payload) -> Observation:
        raise NotImplementedError


class Norms(Builtin):
    name = "norms"
    points = ("post_step",)
    description = "LoRA A/B Frobenius norms, the update's norm and how far it moved this step, per module"
    metrics = {"{module}.a_norm": "‖A‖_F", "{module}.b_norm": "‖B‖_F",
               "{module}.delta_norm": "‖s·B@A‖_F, the module's weight change so far",
               "{module}.step_norm": "‖ΔW_now - ΔW_previous‖_F since the hook's previous call (0 at the first)"}

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self._prev: Mapping[str, LoraArrays] | None = None

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostStep)
        cur = payload.adapter()
        out: dict[str, float] = {}
        for mod, x in cur.items():
            prev = self._prev.get(mod) if self._prev is not None else None
            out[f"{mod}.a_norm"] = float(np.linalg.norm(x.a))
            out[f"{mod}.b_norm"] = float(np.linalg.norm(x.b))
            out[f"{mod}.delta_norm"] = delta_norm(x)
            out[f"{mod}.step_norm"] = update_norm(prev, x) if prev is not None else 0.0
        self._prev = cur
        return out


class Grad(Builtin):
    name = "grad"
    points = ("post_step",)
    description = "grad norm of each LoRA module (A and B together) before clipping"
    metrics = {"{module}.grad_norm": "‖∇A‖² + ‖∇B‖², square root; 0 when the step was skipped"}
    wants_grads = True  # the runner turns on Backend.collect_grad_norms

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostStep)
        return {f"{mod}.grad_norm": v for mod, v in payload.grad_norms.items()}


class Rank(Builtin):
    name = "rank"
    points = ("post_step",)
    description = "effective rank (Roy & Vetterli) and top singular value share of each LoRA update s·B@A"
    metrics = {"{module}.effective_rank": "exp(entropy of σ/Σσ); 0 for a zero update",
               "{module}.top_sv_share": "σ₁/Σσ (0 for a zero update)"}

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostStep)
        out: dict[str, float] = {}
        for mod, x in payload.adapter().items():
            sv = singular_values(x)
            total = float(np.sum(sv))
            out[f"{mod}.effective_rank"] = effective_rank(sv)
            out[f"{mod}.top_sv_share"] = float(sv[0]) / total if total > 0 else 0.0
        return out


class Entropy(Builtin):
    name = "entropy"
    points = ("post_sample",)
    description = "token entropy of the sampling distribution: histogram shares and quantiles"
    metrics = {"frac_lt_0.25": "share of tokens with entropy < 0.25 nats",
               "frac_0.25_0.5": "share in [0.25, 0.5)", "frac_0.5_1": "share in [0.5, 1)",
               "frac_1_2": "share in [1, 2)", "frac_ge_2": "share >= 2 nats",
               "mean": "nats", "p50": "nats", "p90": "nats"}

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostSample)
        return entropy_histogram(np.asarray(payload.rollouts.entropy_T, dtype=np.float64))


class Lengths(Builtin):
    name = "lengths"
    points = ("post_sample",)
    description = "completion length distribution (tokens) and truncation"
    metrics = {"mean": "tokens", "min": "tokens", "p50": "tokens", "max": "tokens",
               "truncated_frac": "share of completions that hit training.max_tokens without EOS",
               "empty_frac": "share of completions with no token"}

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostSample)
        n_N = np.diff(payload.rollouts.offsets)
        if n_N.size == 0:
            return dict.fromkeys(self.metrics, 0.0)
        return {"mean": float(np.mean(n_N)), "min": float(np.min(n_N)),
                "p50": float(np.median(n_N)), "max": float(np.max(n_N)),
                "truncated_frac": float(np.mean(payload.rollouts.truncated)),
                "empty_frac": float(np.mean(n_N == 0))}


class Groups(Builtin):
    name = "groups"
    points = ("post_advantages",)
    description = "groups with all completions correct, all wrong (no learning signal), or informative"
    metrics = {"all_correct": "groups whose rewards are equal and > 0",
               "all_wrong": "groups whose rewards are equal and <= 0",
               "informative": "groups with differing rewards", "informative_frac": "share of groups"}

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostAdvantages)
        return group_counts(payload.reward_N, payload.group_N)


class Adv(Builtin):
    name = "adv"
    points = ("post_advantages",)
    description = ("advantage distribution after each stage (episode, gtpo, hicra, custom) and the "
                   "share of tokens each transform changed")
    metrics = {"{stage}.mean": "mean token advantage after the stage",
               "{stage}.std": "std over tokens", "{stage}.abs_mean": "mean |A|",
               "{stage}.min": "", "{stage}.max": "",
               "{stage}.changed_frac": "share of tokens the stage changed (not for episode)",
               "sepa.changed_frac": "share of tokens whose uncertainty SEPA pooling changed (sepa runs)"}
    wants_trace = True  # the runner asks advantage_stage for the AdvantageTrace

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostAdvantages)
        tr = payload.trace
        if tr is None:
            return None
        out: dict[str, float] = {}
        prev: np.ndarray | None = None
        for stage, adv_T in tr.stages.items():
            out.update({f"{stage}.{k}": v for k, v in distribution(adv_T).items()})
            if prev is not None:
                out[f"{stage}.changed_frac"] = changed_frac(prev, adv_T)
            prev = adv_T
        if tr.uncertainty_T is not None and tr.pooled_T is not None and tr.pooled_T is not tr.uncertainty_T \
                and not np.array_equal(tr.pooled_T, tr.uncertainty_T):
            out["sepa.changed_frac"] = changed_frac(tr.uncertainty_T, tr.pooled_T)
        return out


class Timing(Builtin):
    name = "timing"
    points = ("post_step",)
    description = "where the step's time went (sample, reward, advantages, train) and each hook's cost"
    metrics = {"step_s": "seconds, the whole step", "sample_s": "seconds", "reward_s": "seconds",
               "advantage_s": "seconds", "train_s": "seconds",
               "hooks_ms": "milliseconds all hooks took this step (up to post_step)",
               "{hook}_ms": "milliseconds this hook took this step"}

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.costs_ms: Mapping[str, float] = {}  # the runner fills it before post_step

    def observe(self, payload: Payload) -> Observation:
        assert isinstance(payload, PostStep)
        m = payload.metrics
        out = {k: _num(m.get(src)) for k, src in (("step_s", "step_time_s"), ("sample_s", "sample_time_s"),
                                                  ("reward_s", "reward_time_s"),
                                                  ("advantage_s", "advantage_time_s"),
                                                  ("train_s", "train_time_s"))}
        out["hooks_ms"] = float(sum(self.costs_ms.values()))
        out.update({f"{h}_ms": v for h, v in self.costs_ms.items()})
        return out


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) else math.nan
