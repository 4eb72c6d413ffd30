"""summary.json: one atomic file per run, written when the run finishes (done, interrupted, failed).

Place in the data flow: the end of a run; campaign manifests and `retrain analyze` read it.
Evals come from what `log_eval` saw in this invocation plus, on resume, the eval fields of the
metrics.jsonl rows already on disk (step <= start_step).

Wall time is summed across resumes. If the loop's summary dict holds `wall_time_s`, that value
is taken as the run's total (the loop keeps it in trainer_state.json, which survives a kill).
Otherwise this sink adds the time since `start()` to the `wall_time_s` of the summary.json left by
the previous invocation (time of an invocation that was killed without writing one is lost).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from retrain.io import atomic_write_json, iter_jsonl, read_json_object
from retrain.sinks.base import NullSink, RunInfo, eval_key

SUMMARY_FILE = "summary.json"

# Keys the sink computes; the loop's summary dict may add others (error, reason, ...).
_COMPUTED = ("run", "condition", "seed", "status", "wall_time_s", "steps_done", "max_steps",
             "params_total", "params_trainable", "initial_eval", "final_eval", "deltas",
             "best_eval")


# summary.json eval key -> metrics.jsonl field; None where the eval did not report it (older
# trainers report only accuracy and mean_length; the sampled keys need eval.samples > 0).
EVAL_VIEW: dict[str, str] = {
    "accuracy": "eval_accuracy", "accuracy_se": "eval_accuracy_se",
    "sampled_accuracy": "eval_sampled_accuracy", "sampled_accuracy_se": "eval_sampled_accuracy_se",
    "size": "eval_size", "samples": "eval_samples", "mean_length": "eval_mean_length",
}
DELTA_KEYS = ("accuracy", "sampled_accuracy", "mean_length")


def _eval_view(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: values.get(field) for key, field in EVAL_VIEW.items()}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_summary(
    info: RunInfo,
    evals: Mapping[int, Mapping[str, Any]],
    *,
    status: str,
    wall_time_s: float,
    steps_done: int,
    params_total: int | None,
    params_trainable: int | None,
) -> dict[str, Any]:
    """The summary.json document; pure. `evals`: step -> {eval_accuracy, eval_accuracy_se, ...}.

    initial_eval / final_eval hold every EVAL_VIEW key (None where the eval lacked it); deltas
    are final - initial for DELTA_KEYS (None unless both are numbers).
    """
    initial = _eval_view(evals[0]) if 0 in evals else None
    trained = {s: v for s, v in evals.items() if s > 0}
    final = _eval_view(trained[max(trained)]) if trained else None
    deltas: dict[str, float | None] | None = None
    if initial is not None and final is not None:
        deltas = {k: (final[k] - initial[k] if _number(final[k]) and _number(initial[k]) else None)
                  for k in DELTA_KEYS}
    best: dict[str, Any] | None = None
    for step in sorted(trained):  # earliest step wins a tie; the step-0 eval is the baseline,
        acc = trained[step].get("eval_accuracy")  # not a result of training
        if isinstance(acc, int | float) and (best is None or acc > best["accuracy"]):
            best = {"accuracy": acc, "step": step}
    return {
        "run": info.run_name,
        "condition": info.condition,
        "seed": info.seed,
        "status": status,
        "wall_time_s": round(wall_time_s, 3),
        "steps_done": steps_done,
        "max_steps": info.max_steps,
        "params_total": params_total,
        "params_trainable": params_trainable,
        "initial_eval": initial,
        "final_eval": final,
        "deltas": deltas,
        "best_eval": best,
    }


class SummarySink(NullSink):
    """Collects evals and the last step; writes `<run_dir>/summary.json` in `finish`."""

    essential = True  # the run's record: a write that fails fails the run

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.evals: dict[int, dict[str, Any]] = {}
        self.steps_done = 0
        self.prior_wall_time_s = 0.0
        self._t0 = time.monotonic()

    def start(self, info: RunInfo) -> None:
        self.info = info
        self._t0 = time.monotonic()
        self.steps_done = info.start_step
        if not info.resumed:
            return
        for row in iter_jsonl(info.run_dir / "metrics.jsonl"):
            step = row.get("step")
            if not isinstance(step, int) or step > info.start_step:
                continue
            values = {k: v for k, v in row.items() if k.startswith("eval_")}
            if values:
                self.evals.setdefault(step, {}).update(values)
        previous = read_json_object(info.run_dir / SUMMARY_FILE) or {}
        prior = previous.get("wall_time_s")
        if isinstance(prior, int | float):
            self.prior_wall_time_s = float(prior)

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        if step == 0 and 0 in self.evals:
            return  # keep the run's first initial eval, as metrics.jsonl does
        self.evals.setdefault(step, {}).update({eval_key(k): v for k, v in metrics.items()})

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("step")
        if isinstance(step, int):
            self.steps_done = max(self.steps_done, step)

    def finish(self, summary: Mapping[str, Any]) -> None:
        assert self.info is not None, "start() first"
        wall = summary.get("wall_time_s")
        if not isinstance(wall, int | float):
            wall = self.prior_wall_time_s + (time.monotonic() - self._t0)
        steps_done = summary.get("steps_done")
        doc = build_summary(
            self.info,
            self.evals,
            status=str(summary.get("status", "done")),
            wall_time_s=float(wall),
            steps_done=steps_done if isinstance(steps_done, int) else self.steps_done,
            params_total=_opt_int(summary.get("params_total")),
            params_trainable=_opt_int(summary.get("params_trainable")),
        )
        for key, value in summary.items():
            if key not in _COMPUTED:
                doc[key] = value
        doc.setdefault("finished_at", datetime.now(UTC).isoformat(timespec="seconds"))
        atomic_write_json(self.info.run_dir / SUMMARY_FILE, doc)


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

