"""`retrain run`: train one run, fresh from a config or `--resume` from a run dir."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import (
    LiveOpt,
    NoConsoleOpt,
    SetOpt,
    SilentOpt,
    console_mode,
    err_console,
    handles_errors,
)
from retrain.errors import ResumeError

# Keys that may change on --resume: they do not change what the experiment means.
RESUME_SAFE_PREFIXES = ("logging.",)
RESUME_SAFE_KEYS = ("training.max_steps", "training.save_every", "training.keep_checkpoints",
                    "training.micro_batch_size", "eval.every", "backend.threads", "model.device")


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handles_errors
    def run(
        config: Annotated[Path | None, typer.Argument(help="Run config TOML (omit with --resume).")] = None,
        set_: SetOpt = None,
        out: Annotated[Path | None, typer.Option("--out", help="Run directory (default logs/<condition>_s<seed>_<UTC time>).")] = None,
        resume: Annotated[Path | None, typer.Option("--resume", help="Continue this run dir from its newest checkpoint.")] = None,
        live: LiveOpt = False, silent: SilentOpt = False, no_console_output: NoConsoleOpt = False,
    ) -> None:
        """Train one run with LoRA: sample, reward, advantages, update, log, checkpoint."""
        mode = console_mode(live, silent, no_console_output)
        if resume is not None:
            if config is not None:
                raise ResumeError("give either CONFIG or --resume RUN_DIR, not both")
            cfg, run_dir = _resume_config(resume, set_ or [])
            is_resume = True
            rewrite = bool(set_)
        else:
            if config is None:
                raise ResumeError("missing CONFIG: `retrain run CONFIG` or `retrain run --resume RUN_DIR`")
            from retrain.config import load_config
            from retrain.config.load import read_toml

            if isinstance(read_toml(config).get("campaign"), dict):
                raise ResumeError(f"{config} is a campaign file (it has a [campaign] table); run it with "
                                  f"`retrain campaign run {config}`, or one of its runs with "
                                  f"`retrain run <campaign>/runs/<run>/config.toml`")
            cfg = load_config(config, set_ or [])
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            run_dir = out or Path("logs") / f"{cfg.condition}_s{cfg.training.seed}_{stamp}"
            if run_dir.exists() and not run_dir.is_dir():
                raise ResumeError(f"--out {run_dir} is a file; give a directory for the run")
            if (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists():
                raise ResumeError(f"{run_dir} already holds a run; continue it with "
                                  f"`retrain run --resume {run_dir}` or pick another --out")
            is_resume = False
            rewrite = True
        _train(cfg, run_dir, resume=is_resume, mode=mode, write_config=rewrite)


def _resume_config(run_dir: Path, sets: list[str]):  # -> tuple[RetrainConfig, Path]
    from retrain.config import load_config, parse_sets

    if not run_dir.is_dir():
        raise ResumeError(f"--resume {run_dir}: no such run directory")
    cfg_path = run_dir / "config.toml"
    if not cfg_path.is_file():
        raise ResumeError(f"--resume {run_dir}: no config.toml there; is it a retrain run directory?")
    ckpts = run_dir / "checkpoints"
    if not ckpts.is_dir() or not any(p.name.startswith("step_") for p in ckpts.iterdir()):
        raise ResumeError(f"--resume {run_dir}: nothing to resume from (no checkpoints/step_*); "
                          f"start it fresh with `retrain run {cfg_path} --out DIR`")
    refused = [k for k in parse_sets(sets) if not (k.startswith(RESUME_SAFE_PREFIXES) or k in RESUME_SAFE_KEYS)]
    if refused:
        allowed = ", ".join(RESUME_SAFE_KEYS) + ", logging.*"
        raise ResumeError(f"--set {refused[0]}: changes the experiment, so it cannot change on resume; "
                          f"start a new run instead (keys that may change on resume: {allowed})")
    cfg = load_config(cfg_path, sets)
    done = _checkpoint_step(run_dir)
    if cfg.training.max_steps < done:
        raise ResumeError(f"--set training.max_steps={cfg.training.max_steps}: the run already has "
                          f"{done} steps; give at least {done}")
    return cfg, run_dir


def _checkpoint_step(run_dir: Path) -> int:
    """Step of the newest checkpoint (read from its trainer_state.json, no torch import)."""
    import json

    steps = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    try:
        return int(json.loads((steps[-1] / "trainer_state.json").read_text())["step"])
    except (OSError, KeyError, ValueError, IndexError):
        return int(steps[-1].name.removeprefix("step_")) if steps else 0


def _train(cfg, run_dir: Path, *, resume: bool, mode: str, write_config: bool) -> None:  # noqa: ANN001
    from retrain.trainer.loop import train_run
    from retrain.trainer.signals import graceful_stop
    from retrain.trainer.state import StopFlag

    stop = StopFlag()
    with graceful_stop(stop, quiet=mode == "none"):
        result = train_run(cfg, run_dir, resume=resume, console_mode=mode, stop=stop,
                           write_config=write_config)
    if mode == "progress" or mode == "live" or (mode == "silent" and result.status != "done"):
        err_console.print(f"run {result.status}: {result.steps_done} steps, {result.wall_time_s:.1f}s → {run_dir}")
    if result.status == "interrupted":
        raise typer.Exit(code=130)
