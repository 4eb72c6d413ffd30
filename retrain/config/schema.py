"""One frozen dataclass per TOML table: the whole run configuration.

Sits at the start of the data flow: TOML → `load_config` → `RetrainConfig` → trainer / campaign.
Each field carries its help text and allowed range in `metadata`; the loader validates from it
and docs/configuration.md is generated from it (`python -m retrain.config.docs`).
Lists are tuples so that configs are hashable and immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retrain.algo.modes import (  # algorithm names are spelled there, once
    ADVANTAGE_MODES,
    SCALES,
    TRANSFORM_MODES,
    TRANSFORMS,
    UNCERTAINTY_KINDS,
    transform_parts,
)
from retrain.backend.registry import BACKENDS
from retrain.config.phases import PhaseConfig

DEFAULT_PLANNING_GRAMS = (
    "wait let me", "let me think", "on second thought", "let me check", "let me verify",
    "is this right", "double check", "try another approach", "go back and", "start over",
    "that's not right", "that doesn't work", "another way to", "or we could", "what if we",
    "notice that", "the key is", "the key insight",
)


MAX_SEED = 2**32 - 1  # numpy's legacy seeding (np.random.seed) takes nothing larger
MAX_TOKENS = 2**20  # far above any model's context; a larger cap is a typo
MAX_SEQUENCES = 2**20  # batch_size × group_size per step; a larger product is a typo (it would hang)


def _f(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    open_choices: bool = False,
    nonempty: bool = False,
    nonempty_hint: str = "",
) -> Any:
    """A dataclass field with its help text and range. `open_choices`: a dotted path is also
    allowed; `nonempty`: "" or [] is an error (`nonempty_hint` is appended to it)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "nonempty": nonempty, "nonempty_hint": nonempty_hint,
            "open_choices": open_choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = _f("tiny", "'tiny' or 'small' (built offline and cached), a local HF model dir, or a hub id already in the HF cache", nonempty=True, nonempty_hint="; give 'tiny', 'small', a local model dir or a Hub id")
    dtype: str = _f("float32", "weights dtype", choices=("auto", "float32", "bfloat16", "float16"))
    device: str = _f("auto", "'auto' picks cuda when present, else cpu", choices=("auto", "cpu", "cuda", "mps"))
    local_files_only: bool = _f(True, "never reach the hub when loading a named model")
    trust_remote_code: bool = _f(False, "allow custom model code from the model dir")
    warmup_steps: int = _f(2500, "supervised warm-up steps when building a tiny/small preset (one cosine cycle, long enough to converge on the demonstrations)", ge=0)
    warmup_lr: float = _f(3e-3, "learning rate of the supervised warm-up", gt=0)
    warmup_batch_size: int = _f(64, "examples per supervised warm-up step", ge=1)
    warmup_seed: int = _f(0, "seed of the supervised warm-up (part of the cache key)", ge=0, le=MAX_SEED)
    warmup_flaw_rate: float = _f(0.6, "share of warm-up demonstrations that show the task's typical mistake instead of the answer (arithmetic: the carry into the next digit is dropped), so the warmed-up policy has a real flaw RL can fix; 0 = clean demonstrations", ge=0, le=1)


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    rank: int = _f(16, "LoRA rank r", ge=1)
    alpha: float = _f(32.0, "LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rslora)", gt=0)
    dropout: float = _f(0.0, "dropout on the LoRA input", ge=0, lt=1)
    target_modules: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that get adapters (attention and MLP projections); the default list is filtered to the layers the model has, a list you give must exist in full", nonempty=True, nonempty_hint="; name at least one layer, e.g. ['q_proj', 'v_proj']")
    use_rslora: bool = _f(False, "rank-stabilised LoRA scaling alpha/sqrt(r)")


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    name: str = _f("local", "training backend (retrain/backend/registry.py)", choices=tuple(BACKENDS))
    threads: int = _f(0, "torch intra-op threads for this run (0 = leave torch's default)", ge=0)
    is_cap: float = _f(2.0, "vllm: cap C of the truncated importance weight min(pi_train / pi_engine, C) on each token's policy-gradient term (docs/algorithms.md)", ge=1)
    max_model_len: int = _f(0, "vllm: longest prompt + completion in tokens (0 = the model's own limit)", ge=0)
    enforce_eager: bool = _f(True, "vllm: run without CUDA graphs / compilation (faster start-up; on CPU always)")
    gpu_memory_utilization: float = _f(0.5, "vllm on a GPU: share of GPU memory the engine may take", gt=0, le=1)
    kv_cache_space_gb: float = _f(1.0, "vllm on CPU: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE)", gt=0)


@dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    advantage_mode: str = _f("grpo", "episode advantage: grpo, maxrl, rloo, or 'package.module:function' (rewards_G -> advantages_G)", choices=ADVANTAGE_MODES, open_choices=True)
    transform_mode: str = _f("none", "token transforms applied after the episode advantage, or 'package.module:function' (adv_T, batch -> adv_T; docs/algorithms.md) applied instead of them", choices=TRANSFORM_MODES, open_choices=True)
    scale: str = _f("group", "grpo only: divide r - mean by the group std, the batch std, or nothing (Dr. GRPO)", choices=SCALES)
    eps: float = _f(1e-6, "stabiliser in std and maxrl denominators", gt=0)
    uncertainty_kind: str = _f("surprisal", "token uncertainty used by gtpo/sepa", choices=UNCERTAINTY_KINDS)
    planning_grams: tuple[str, ...] = _f(DEFAULT_PLANNING_GRAMS, "phrases that mark planning tokens (matched case-insensitively on word boundaries)")


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    seed: int = _f(42, "seed of everything in the run (prompts, sampling, init); campaigns set it per run", ge=0, le=MAX_SEED)
    max_steps: int = _f(30, "optimizer steps", ge=1)
    batch_size: int = _f(8, "prompts per step (B)", ge=1)
    group_size: int = _f(8, "completions per prompt (G)", ge=2)
    max_tokens: int = _f(8, "completion length cap in tokens", ge=1, le=MAX_TOKENS)
    temperature: float = _f(1.0, "sampling temperature (logprobs for the loss use the same one)", gt=0)
    top_p: float = _f(1.0, "nucleus sampling mass (logprobs for the loss use the same one)", gt=0, le=1)
    loss_agg: str = _f("token_mean", "loss aggregation: mean over all tokens, mean of per-sequence means, or sum / (B*G*max_tokens) (Dr. GRPO)", choices=("token_mean", "sequence_mean", "constant"))
    clip_eps: float | None = _f(None, "PPO ratio clip epsilon (lower side); unset = no clipping", gt=0, lt=1)
    clip_eps_high: float | None = _f(None, "upper clip epsilon (DAPO clip-higher); needs clip_eps", gt=0)
    kl_beta: float = _f(0.0, "weight of the k3 KL estimate to the base model (adapter disabled)", ge=0)
    micro_batch_size: int = _f(0, "sequences per forward/backward chunk (0 = all at once)", ge=0)
    save_every: int = _f(10, "checkpoint every N steps (0 = only at the end)", ge=0)
    keep_checkpoints: int = _f(2, "how many checkpoints to keep", ge=1)
    max_skipped_steps: int = _f(5, "fail the run after this many consecutive skipped steps (non-finite loss or gradient, or an update rolled back because it made a weight non-finite); 0 = never fail", ge=0)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    name: str = _f("adamw", "optimizer", choices=("adamw",))
    lr: float = _f(1e-4, "peak learning rate; 0 = an untrained control (samples, scores and evaluates like any run, never changes the adapter)", ge=0)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    beta1: float = _f(0.9, "AdamW beta1", ge=0, lt=1)
    beta2: float = _f(0.999, "AdamW beta2", ge=0, lt=1)
    adam_eps: float = _f(1e-8, "AdamW epsilon", gt=0)
    max_grad_norm: float = _f(1.0, "clip the global grad norm to this (0 = no clipping)", ge=0)
    warmup_steps: int = _f(0, "linear LR warm-up steps (as transformers: lr * s / warmup_steps at step s, so 0 at the first step)", ge=0)
    schedule: str = _f("constant", "LR after warm-up", choices=("constant", "cosine"))
    min_lr_ratio: float = _f(0.0, "cosine floor as a fraction of lr", ge=0, le=1)


@dataclass(frozen=True, kw_only=True)
class GtpoConfig:
    beta: float = _f(0.1, "strength of uncertainty weighting: w = max(0, 1 + beta*(h/mean_h - 1))", ge=0)
    max_weight: float | None = _f(None, "cap on a token's weight; unset = no cap", gt=0)


@dataclass(frozen=True, kw_only=True)
class HicraConfig:
    alpha: float = _f(0.2, "planning-token amplification: A + alpha*|A|", ge=0)


@dataclass(frozen=True, kw_only=True)
class SepaConfig:
    schedule: str = _f("linear", "how lambda grows: linear ramp, or auto (variance EMA, linear as the floor)", choices=("linear", "auto"))
    steps: int = _f(20, "linear ramp length in steps (lambda reaches 1)", ge=1)
    delay_steps: int = _f(0, "steps before the ramp starts", ge=0)
    correct_rate_gate: float = _f(0.0, "lambda stays 0 until a step's correct rate reaches this (sticky; 0 = no gate)", ge=0, le=1)
    ema_decay: float = _f(0.9, "auto: EMA decay of the execution-uncertainty variance", ge=0, lt=1)
    auto_warmup_steps: int = _f(5, "auto: steps that measure the variance baseline", ge=1)
    auto_threshold: float = _f(0.5, "auto: lambda = 1 once the variance EMA falls to this fraction of the baseline", gt=0, lt=1)


@dataclass(frozen=True, kw_only=True)
class BackpressureConfig:
    enabled: bool = _f(False, "adapt the operating point to the throughput knee (USL fit)")
    mode: str = _f("concurrency", "concurrency: fixed logical batch, adapt sequences in flight; batch: adapt prompts per step", choices=("concurrency", "batch"))
    warmup_steps: int = _f(10, "steps that explore sizes geometrically before fitting", ge=1)
    ema_decay: float = _f(0.9, "EMA decay of measured throughput", ge=0, lt=1)
    throttle_margin: float = _f(0.85, "target = margin * p*; above it the controller throttles", gt=0, le=1)
    increase_margin: float = _f(0.5, "below increase_margin * p* the controller grows the size", gt=0, le=1)
    min_size: int = _f(1, "smallest size the controller may choose", ge=1)
    max_size: int = _f(256, "largest size the controller may choose", ge=1)
    window: int = _f(32, "observations kept for the USL fit", ge=3)
    hysteresis: int = _f(3, "consecutive agreeing decisions needed before a change", ge=1)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    task: str = _f("arithmetic", "arithmetic, countdown, file, or 'package.module:function' returning a Task", choices=("arithmetic", "countdown", "file"), open_choices=True)
    digits: int = _f(2, "arithmetic: digits per operand", ge=1, le=9)
    operators: tuple[str, ...] = _f(("+",), "arithmetic: operators to draw from (+ - *)")
    countdown_ops: str = _f("plus_minus", "countdown: operator group", choices=("plus", "plus_minus", "plus_minus_mul", "plus_minus_mul_div"))
    countdown_numbers: int = _f(3, "countdown: how many numbers per problem", ge=2, le=6)
    countdown_max_number: int = _f(20, "countdown: largest number drawn", ge=2)
    countdown_use_all: bool = _f(False, "countdown: every number must be used exactly once (else at most once)")
    path: str = _f("", "file task: a .jsonl or .parquet file (or a directory with train/test files)")
    prompt_field: str = _f("prompt", "file task: field holding the prompt")
    answer_field: str = _f("answer", "file task: field holding the answer")
    match: str = _f("exact", "file task: answer matching", choices=("exact", "numeric", "boxed", "countdown"))
    reward: str = _f("", "custom reward 'package.module:function(prompt, completion, answer) -> float'; empty = the task's own")
    countdown_reasoning: bool = _f(False, "countdown: completions reason before answering ('let me think: 3+5=8, 8+7=15. <answer>3+5+7</answer>'); the expression inside the last <answer> tags is graded and warm-up demonstrations are such traces")
    eval_size: int = _f(500, "held-out problems, disjoint from training prompts (and from the tiny model's warm-up)", ge=1)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    every: int = _f(10, "held-out evaluation every N steps, plus at start and end (0 = start and end only)", ge=0)
    size: int = _f(500, "held-out problems per evaluation (at most data.eval_size)", ge=1)
    samples: int = _f(4, "completions sampled per held-out problem at training.temperature/top_p for eval_sampled_accuracy (mean@k); 0 = greedy only", ge=0)
    at_start: bool = _f(True, "evaluate before the first step")


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    log_every: int = _f(1, "print a [train] line every N steps", ge=1)
    generations_every: int = _f(1, "write emergence/generations.jsonl every N steps (0 = never)", ge=0)
    generations_per_prompt: int = _f(1, "completions per prompt written to generations.jsonl", ge=0)
    wandb_project: str = _f("", "enable wandb logging to this project")
    wandb_entity: str = _f("", "wandb team or user")
    wandb_group: str = _f("", "wandb group (default: the condition label)")
    wandb_run_name: str = _f("", "wandb run name (default: {condition}_s{seed})")
    wandb_tags: tuple[str, ...] = _f((), "extra wandb tags (condition and seed{seed} are always added)")
    wandb_mode: str = _f("", "wandb mode: online, offline, disabled (empty = WANDB_MODE or online)", choices=("", "online", "offline", "disabled"))
    sample_completions: int = _f(3, "completions printed at the end of a run", ge=0)
    explain_every: int = _f(10, "record every N-th step (and the last) in explain/step_NNNNNN.npz for `retrain explain` (0 = never)", ge=0)


@dataclass(frozen=True, kw_only=True)
class SqueezeConfig:
    enabled: bool = _f(False, "analyse the first finished run's adapter (a [squeeze] table alone turns this on)")
    min_variance_retention: float = _f(0.95, "recommend the smallest rank whose mean retained variance reaches this", gt=0, le=1)
    min_layer_retention: float | None = _f(None, "also require the worst layer to reach this; unset = no layer floor", gt=0, le=1)
    ranks: tuple[int, ...] = _f((), "ranks to evaluate (empty = powers of two up to the source rank, plus the source rank)")
    compress_to: int = _f(0, "also write a compressed adapter at this rank (0 = no; -1 = the recommended rank)", ge=-1)


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    rounds: int = _f(1, "multi-phase runs: times the [[phases]] list is trained in order (docs/phases.md)", ge=1, le=1000)


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    every: int = _f(0, "multi-phase runs: probe the earlier phases' held-out sets every N steps of a phase (0 = never)", ge=0)
    max_drop: float = _f(0.05, "roll the adapter back to the last good ledger entry when an earlier phase's probe accuracy falls more than this below its value at that phase's commit", ge=0, le=1)
    lr_decay_on_rollback: float = _f(1.0, "multiply the learning rate by this at each rollback (1 = keep it)", gt=0, le=1)
    size: int = _f(100, "held-out problems per phase in a probe (at most the phase's eval.size)", ge=1)


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    fraction: float = _f(0.0, "multi-phase runs: share of each batch's prompts drawn from the earlier phases' training data (0 = no replay)", ge=0, lt=1)
    kl_beta: float = _f(0.0, "weight of the k3 KL to the teacher (the previous phase's committed adapter) on the replayed sequences; needs fraction > 0", ge=0)


@dataclass(frozen=True, kw_only=True)
class HooksConfig:
    groups: tuple[str, ...] = _f((), "hook groups to turn on: minimal, full (docs/hooks.md; `retrain run --hooks-list`)")
    names: tuple[str, ...] = _f((), "hooks to turn on by name, added to the groups': norms, grad, entropy, adv, lengths, rank, groups, timing, or a plugin 'package.module:factory'")
    sinks: tuple[str, ...] = _f((), "where hook metrics go: csv (<run>/hooks.csv), jsonl (<run>/hooks.jsonl), wandb; none: hooks only act (interventions)")
    wandb_project: str = _f("", "wandb project of the wandb sink (empty: the run's logging.wandb_project)")
    rank_every: int = _f(10, "the rank hook runs every N steps (an r x r SVD per LoRA module)", ge=1)


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    enabled: bool = _f(True, "run the intervention audit at the end of a campaign (also `retrain analyze audit DIR`)")
    no_signal_frac: float = _f(0.9, "flag a run when more than this share of its groups had equal rewards (zero advantage, no learning signal)", ge=0, le=1)
    max_token_hit_rate: float = _f(0.5, "flag a run whose completions stopped at `training.max_tokens` more often than this, averaged over steps", ge=0, le=1)


@dataclass(frozen=True, kw_only=True)
class CampaignConfig:
    name: str = _f("", "campaign name (default: the file's stem); a plain directory name: letters, digits, . _ + = ~ -, not starting with '.'")
    seeds: tuple[int, ...] = _f((42,), "seeds; every condition runs once per seed (until_decided: the seeds to use first, in order)", ge=0, le=MAX_SEED)
    executor: str = _f("auto", "auto (packs when pack_runs, else inprocess for 1 worker, else pool), inprocess, pool, or ray", choices=("auto", "inprocess", "pool", "ray"))
    pack_runs: bool = _f(True, "executor auto: train runs that share the model and LoRA shape together, one adapter per run on one base model, batched (docs/campaigns-execution.md)")
    pack_size: int = _f(0, "most runs per pack (0 = every compatible run in one pack)", ge=0)
    max_workers: int = _f(1, "runs at once (pool workers or Ray tasks in flight)", ge=1)
    threads_per_worker: int = _f(0, "torch threads per worker (0 = cores / workers)", ge=0)
    stagger_seconds: float = _f(0.0, "delay between starting workers", ge=0)
    max_retries: int = _f(0, "retries of a failed run", ge=0)
    ray_address: str = _f("", "Ray cluster address (empty = start a local instance)")
    num_cpus: float = _f(1.0, "Ray: CPUs per run", gt=0)
    num_gpus: float = _f(0.0, "Ray: GPUs per run", ge=0)
    compare_last_n: int = _f(10, "the comparison averages the last N steps", ge=1)
    seeds_policy: str = _f("fixed", "fixed: every condition runs every seed; until_decided: seeds are added in batches until a sequential test against the baseline decides each condition", choices=("fixed", "until_decided"))
    min_seeds: int = _f(3, "until_decided: seeds every condition runs before the first look", ge=2)
    max_seeds: int = _f(12, "until_decided: the most seeds a condition runs (the last look); seeds beyond `seeds` are max(seeds)+1, +2, …", ge=2, le=100)
    seed_batch: int = _f(3, "until_decided: seeds added after each look to the conditions not yet decided (and the baseline)", ge=1)
    sequential_alpha: float = _f(0.05, "until_decided: two-sided false-positive rate of each condition's test, over all its looks together", gt=0, le=0.5)
    sequential_baseline: str = _f("", "until_decided: the condition label every other condition is tested against (empty: grpo+none when the campaign has it, else the first condition)")

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds runs are planned for: `seeds`; under until_decided, max_seeds of them:
        `seeds` in order, then max(seeds)+1, max(seeds)+2, … (runs are scheduled look by look)."""
        if self.seeds_policy != "until_decided" or not self.seeds:
            return self.seeds
        extra = self.max_seeds - len(self.seeds)
        return self.seeds[: self.max_seeds] + tuple(max(self.seeds) + 1 + i for i in range(extra))


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gtpo: GtpoConfig = field(default_factory=GtpoConfig)
    hicra: HicraConfig = field(default_factory=HicraConfig)
    sepa: SepaConfig = field(default_factory=SepaConfig)
    backpressure: BackpressureConfig = field(default_factory=BackpressureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    squeeze: SqueezeConfig = field(default_factory=SqueezeConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    # [[phases]]: a multi-phase run (retrain/config/phases.py); () for an ordinary run
    phases: tuple[PhaseConfig, ...] = ()

    # Derived values are properties, never written back.
    @property
    def condition(self) -> str:
        """The condition label's core, e.g. 'maxrl+gtpo_sepa'."""
        return f"{self.algorithm.advantage_mode}+{self.algorithm.transform_mode}"

    @property
    def transforms(self) -> frozenset[str]:
        """The built-in token transforms transform_mode applies, e.g. {'gtpo', 'sepa'}; none
        for a user's transform ('package.module:function')."""
        if ":" in self.algorithm.transform_mode:
            return frozenset()
        return transform_parts(self.algorithm.transform_mode)

    @property
    def uses_gtpo(self) -> bool:
        return "gtpo" in self.transforms

    @property
    def uses_hicra(self) -> bool:
        return "hicra" in self.transforms

    @property
    def uses_sepa(self) -> bool:
        return "sepa" in self.transforms


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "lora": LoraConfig, "backend": BackendConfig,
    "algorithm": AlgorithmConfig, "training": TrainingConfig, "optimizer": OptimizerConfig,
    "gtpo": GtpoConfig, "hicra": HicraConfig, "sepa": SepaConfig,
    "backpressure": BackpressureConfig, "data": DataConfig, "eval": EvalConfig,
    "logging": LoggingConfig, "squeeze": SqueezeConfig,
    "curriculum": CurriculumConfig, "probe": ProbeConfig, "replay": ReplayConfig,
    "audit": AuditConfig, "hooks": HooksConfig, "campaign": CampaignConfig,
}

# Sections whose settings only mean something with a given transform; see `inactive_sections`.
TRANSFORM_SECTIONS = TRANSFORMS  # each transform has a table of its own
# Sections that describe the campaign, not the run: excluded from a run's identity hash.
CAMPAIGN_ONLY_SECTIONS = ("campaign", "squeeze", "audit")


def inactive_sections(cfg: RetrainConfig) -> tuple[str, ...]:
    """Transform sections the config's transform_mode does not use."""
    return tuple(name for name in TRANSFORM_SECTIONS if name not in cfg.transforms)
