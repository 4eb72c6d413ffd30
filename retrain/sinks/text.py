"""The human-readable lines of a run, shared by the console and run.log.

Place in the data flow: ConsoleSink and RunLogSink each own a `TextReport` and print/append the
lines it returns, so the terminal and run.log say the same thing. Pure apart from reading
metrics.jsonl once on resume (to know the loss at step 1 and at the resumed checkpoint).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain.io import read_jsonl
from retrain.sinks.base import RunInfo, eval_key


def _num(value: Any, fmt: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, fmt)


def _signed(value: float) -> str:
    # 4 significant digits: RL losses are often ~1e-5, where fixed decimals show only zeros
    return f"{value:+.4g}"


def train_line(metrics: Mapping[str, Any], max_steps: int) -> str:
    """`[train] step=… loss=… reward=… correct=… kl=… lambda=… bs=…`; a step of a multi-phase
    run with replay shows `loss=… new=… old=… kl=…` instead, `kl` then being the teacher KL on
    the replayed sequences (the form of seed 000's progress lines)."""
    replay = "loss_old" in metrics
    kl = (f" new={_num(metrics.get('loss_new'), '.4g')} old={_num(metrics.get('loss_old'), '.4g')}"
          f" kl={_num(metrics.get('teacher_kl'), '.4f')}" if replay
          else f" kl={_num(metrics.get('kl'), '.4f')}")
    return (
        f"[train] step={metrics.get('step')}/{max_steps}"
        f" loss={_num(metrics.get('loss'), '.4g')}"
        f"{kl if replay else ''}"
        f" reward={_num(metrics.get('mean_reward'), '.3f')}"
        f" correct={_num(metrics.get('correct_rate'), '.3f')}"
        f"{'' if replay else kl}"
        f" lambda={_num(metrics.get('sepa_lambda'), '.3f')}"
        f" bs={_num(metrics.get('batch_size'), 'd')}"
    )


def _with_se(value: Any, se: Any) -> str:
    """`0.552±0.022`: an eval figure with its standard error over held-out problems."""
    text = _num(value, ".3f") if isinstance(value, float) else _num(value, ".4g")
    return text + (f"±{se:.3f}" if isinstance(se, float) else "")


def _sampled_name(values: Mapping[str, Any]) -> str:
    k = values.get("eval_samples")
    return f"sampled@{k}" if isinstance(k, int) and not isinstance(k, bool) else "sampled"


# Shown by eval_line in their own form; every other eval key follows as name=value.
_EVAL_SHOWN = frozenset({"eval_accuracy", "eval_accuracy_se", "eval_sampled_accuracy",
                         "eval_sampled_accuracy_se", "eval_samples", "eval_size",
                         "eval_time_s"})


def eval_line(step: int, metrics: Mapping[str, Any]) -> str:
    """`[eval] step=20 accuracy=0.552±0.022 sampled@4=0.401±0.015 n=500 mean_length=5.3 7.1s`."""
    m = {eval_key(k): v for k, v in metrics.items()}
    parts = []
    if "eval_accuracy" in m:
        parts.append(f"accuracy={_with_se(m['eval_accuracy'], m.get('eval_accuracy_se'))}")
    if "eval_sampled_accuracy" in m:
        parts.append(f"{_sampled_name(m)}="
                     f"{_with_se(m['eval_sampled_accuracy'], m.get('eval_sampled_accuracy_se'))}")
    if "eval_size" in m:
        parts.append(f"n={_num(m['eval_size'], 'd')}")
    parts += [f"{k[len('eval_'):]}={_num(v, '.4g')}" for k, v in m.items()
              if k not in _EVAL_SHOWN and not isinstance(v, str)]
    if "eval_time_s" in m:
        parts.append(f"{_num(m['eval_time_s'], '.1f')}s")
    label = "initial" if step == 0 else f"step={step}"
    return f"[eval] {label} {' '.join(parts)}"


def done_eval_line(status: str, initial: Mapping[str, Any] | None,
                   final: Mapping[str, Any]) -> str:
    """`[done] eval accuracy 0.610±0.022 (initial 0.552±0.022, gain +0.058); sampled@4 …`."""
    text = f"[{status}] eval"
    for name, key in (("accuracy", "eval_accuracy"), (_sampled_name(final), "eval_sampled_accuracy")):
        value = final.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        text += ("" if text.endswith("eval") else ";") + f" {name} {_with_se(value, final.get(key + '_se'))}"
        start = (initial or {}).get(key)
        if isinstance(start, int | float) and not isinstance(start, bool):
            text += (f" (initial {_with_se(start, (initial or {}).get(key + '_se'))},"
                     f" gain {value - start:+.3f})")
    return text


def one_line(text: str, limit: int) -> str:
    flat = text.replace("\r", "").replace("\n", " ⏎ ")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LossTracker:
    """Loss (and reward) at step 1, at the last checkpoint and now: the [ckpt] change lines (docs/logging.md)."""

    def __init__(self) -> None:
        self.first: tuple[int, float, float | None] | None = None  # step, loss, reward
        self.last_ckpt: tuple[int, float, float | None] | None = None
        self.latest: tuple[int, float, float | None] | None = None

    def resume_from(self, metrics_path: Path, start_step: int) -> None:
        """Recover step 1 and the resumed checkpoint (= start_step) from metrics.jsonl."""
        for row in read_jsonl(metrics_path):
            step, loss = row.get("step"), row.get("loss")
            if not isinstance(step, int) or not 1 <= step <= start_step:
                continue
            if not isinstance(loss, int | float):
                continue
            point = (step, float(loss), _reward(row))
            if self.first is None or step < self.first[0]:
                self.first = point
            if step == start_step:
                self.last_ckpt = point

    def observe(self, metrics: Mapping[str, Any]) -> None:
        step, loss = metrics.get("step"), metrics.get("loss")
        if not isinstance(step, int) or not isinstance(loss, int | float):
            return
        self.latest = (step, float(loss), _reward(metrics))
        if self.first is None:
            self.first = self.latest

    def checkpoint_lines(self, step: int) -> list[str]:
        """Lines printed at a checkpoint; then this checkpoint becomes the reference."""
        if self.latest is None or self.first is None:
            return []
        _, loss, reward = self.latest
        lines = [_change("since start", self.first, loss, reward)]
        if self.last_ckpt is not None:
            lines.append(_change("since last checkpoint", self.last_ckpt, loss, reward))
        self.last_ckpt = self.latest
        return lines


def _reward(row: Mapping[str, Any]) -> float | None:
    value = row.get("mean_reward")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _change(label: str, ref: tuple[int, float, float | None], loss: float,
            reward: float | None) -> str:
    ref_step, ref_loss, ref_reward = ref
    text = f"[ckpt] loss change {label} (step {ref_step}): {_signed(loss - ref_loss)}"
    text += f" ({ref_loss:.4g} -> {loss:.4g})"
    if reward is not None and ref_reward is not None:
        text += f", reward {_signed(reward - ref_reward)}"
    return text


class TextReport:
    """Turns sink calls into lines: [train] every `log_every` steps, [eval], [ckpt], samples."""

    def __init__(self, *, log_every: int = 1, sample_completions: int = 3) -> None:
        self.log_every = max(1, log_every)
        self.sample_completions = sample_completions
        self.info: RunInfo | None = None
        self.loss = LossTracker()
        self.last_generations: list[Mapping[str, Any]] = []
        self.initial_eval: dict[str, Any] | None = None  # eval_* values of step 0
        self.final_eval: dict[str, Any] | None = None  # of the latest eval

    def start(self, info: RunInfo) -> None:
        self.info = info
        if info.resumed:
            metrics_path = info.run_dir / "metrics.jsonl"
            self.loss.resume_from(metrics_path, info.start_step)
            for row in read_jsonl(metrics_path):  # the initial eval, for the final comparison
                if row.get("step") == 0 and isinstance(row.get("eval_accuracy"), int | float):
                    self.initial_eval = {k: v for k, v in row.items() if k.startswith("eval_")}

    def step(self, metrics: Mapping[str, Any]) -> list[str]:
        self.loss.observe(metrics)
        step = metrics.get("step")
        max_steps = self.info.max_steps if self.info else 0
        if isinstance(step, int) and (step % self.log_every == 0 or step == max_steps):
            return [train_line(metrics, max_steps)]
        return []

    def eval(self, step: int, metrics: Mapping[str, Any]) -> list[str]:
        values = {eval_key(k): v for k, v in metrics.items()}
        if isinstance(values.get("eval_accuracy"), int | float):
            if step == 0 and self.initial_eval is None:
                self.initial_eval = values
            self.final_eval = values
        return [eval_line(step, metrics)]

    def generations(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self.last_generations = list(records)

    def checkpoint(self, step: int, path: Path) -> list[str]:
        return [f"[ckpt] step={step} saved {path}", *self.loss.checkpoint_lines(step)]

    def finish(self, summary: Mapping[str, Any]) -> list[str]:
        status = summary.get("status", "done")
        lines = [f"[{status}] steps={summary.get('steps_done', '-')}"
                 f"/{self.info.max_steps if self.info else '-'}"]
        if self.final_eval is not None:
            lines.append(done_eval_line(str(status), self.initial_eval, self.final_eval))
        return lines + self.sample_lines()

    def sample_lines(self) -> list[str]:
        """A few completions of the last generations, picked reproducibly by the run's seed."""
        k = min(self.sample_completions, len(self.last_generations))
        if k <= 0:
            return []
        rng = random.Random(self.info.seed if self.info else 0)
        picked = rng.sample(self.last_generations, k)
        lines = [f"[sample] {k} of {len(self.last_generations)} completions of the last step:"]
        for rec in picked:
            lines.append(
                f"[sample] reward={_num(rec.get('reward'), '.2f')}"
                f" tokens={_num(rec.get('num_tokens'), 'd')}"
                f" | {one_line(str(rec.get('prompt', '')), 80)}"
                f" => {one_line(str(rec.get('completion', '')), 200)}"
            )
        return lines
