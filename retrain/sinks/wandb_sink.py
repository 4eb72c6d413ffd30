"""Weights & Biases: the same records as metrics.jsonl under the keys docs/logging.md lists (optional extra).

Place in the data flow: a sink beside the files, added by `build_sinks` when
`logging.wandb_project` is set. `wandb` is imported in `start`, so this module imports without
it; `check_logging_config` reports a missing package at config-load time.

Keys: `contract.wandb_key` (train/…, train/rewards/…, train/entropy/…, train/surprisal/…,
train/backpressure/…, train/backend/…, eval/…). The history step is the training step; the
initial eval is logged at step 0. Run config: `contract.flat_run_config` (flat hyper-parameters
plus the nested config under `config`). A resumed run reuses the id kept in
`<run_dir>/wandb_run_id` with resume="allow".
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain.errors import MissingExtraError
from retrain.io import atomic_write_text, read_json_object
from retrain.sinks.base import NullSink, RunInfo, eval_key
from retrain.sinks.contract import NOT_IN_HISTORY, RUN_CONSTANTS, flat_run_config, wandb_key

RUN_ID_FILE = "wandb_run_id"


def history_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics dict as wandb history keys; nulls and run constants are left out."""
    row: dict[str, Any] = {}
    for name, value in metrics.items():
        if name in NOT_IN_HISTORY or value is None:
            continue
        row[wandb_key(name)] = value.item() if hasattr(value, "item") else value
    return row


def campaign_of(run_dir: Path) -> str | None:
    """The campaign a run dir belongs to (`<campaign>/runs/<run>` beside plan.json), else None."""
    run_dir = Path(run_dir)
    if run_dir.parent.name != "runs":
        return None
    plan = read_json_object(run_dir.parent.parent / "plan.json")
    name = plan.get("campaign") if plan else None
    return name if isinstance(name, str) and name else None


def run_id_for(run_dir: Path, explicit: str | None) -> str:
    """The wandb id of this run dir: explicit > persisted > new; persisted for the next resume."""
    path = run_dir / RUN_ID_FILE
    run_id = explicit or (path.read_text(encoding="utf-8").strip() if path.exists() else "")
    if not run_id:
        alphabet = string.ascii_lowercase + string.digits  # what wandb's own ids use
        run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    if not path.exists() or path.read_text(encoding="utf-8").strip() != run_id:
        atomic_write_text(path, run_id + "\n")
    return run_id


class WandbSink(NullSink):
    """One wandb run per retrain run."""

    def __init__(self, cfg: Any, *, run_id: str | None = None, quiet: bool = False) -> None:
        self.cfg = cfg  # LoggingConfig
        self.explicit_id = run_id
        self.quiet = quiet  # no wandb banner lines (console modes silent / none)
        self.run: Any = None
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise MissingExtraError("wandb", "wandb", "logging.wandb_project") from exc
        self.info = info
        cfg = self.cfg
        mode = cfg.wandb_mode or os.environ.get("WANDB_MODE") or None
        campaign = campaign_of(info.run_dir)
        config = flat_run_config(info.config, condition=info.condition, seed=info.seed,
                                 max_steps=info.max_steps)
        if campaign is not None:
            config["campaign"] = campaign
        # group = condition, so wandb aggregates a condition's seeds; the campaign tag and config
        # field keep one campaign's runs apart from another's with the same conditions.
        self.run = wandb.init(
            project=cfg.wandb_project,
            entity=cfg.wandb_entity or None,
            name=cfg.wandb_run_name or f"{info.condition}_s{info.seed}",
            group=cfg.wandb_group or info.condition,
            tags=[info.condition, f"seed{info.seed}",
                  *([f"campaign:{campaign}"] if campaign is not None else []), *cfg.wandb_tags],
            config=config,
            dir=str(info.run_dir),
            id=run_id_for(info.run_dir, self.explicit_id),
            resume="allow",
            mode=mode,  # type: ignore[arg-type]  # validated by the config schema
            reinit="create_new",  # campaigns run several in one process
            # console="off": wandb must not wrap stdout/stderr (tee_output and Rich own them)
            settings=wandb.Settings(console="off", silent=self.quiet),
        )

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("step")
        if self.run is not None and isinstance(step, int):
            self.run.log(history_row(metrics), step=step)
            for name in RUN_CONSTANTS:  # flags that never change: one summary value, no series
                if name in metrics and metrics[name] is not None:
                    self.run.summary[wandb_key(name)] = metrics[name]

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        # Logged at the same step as the train row: wandb merges both into one history row
        # as long as log_eval comes first (the loop's order); a late eval goes to step + 0 too.
        if self.run is not None:
            self.run.log(history_row({eval_key(k): v for k, v in metrics.items()}),
                         step=step, commit=False)

    def log_generations(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
        return None  # generations live in emergence/generations.jsonl

    def log_checkpoint(self, step: int, path: Path) -> None:
        if self.run is not None:
            self.run.summary["last_checkpoint_step"] = step

    def finish(self, summary: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        status = str(summary.get("status", "done"))
        self.run.summary["status"] = status
        for key in ("steps_done", "wall_time_s", "params_total", "params_trainable"):
            if summary.get(key) is not None:
                self.run.summary[key] = summary[key]
        self.run.finish(exit_code=0 if status == "done" else 1)
        self.run = None
