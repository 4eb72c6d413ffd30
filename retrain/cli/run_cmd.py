"""`retrain run`: train one run, fresh from a config or `--resume` from a run dir; the hook
options add to the config's [hooks] table (retrain/hooks/, docs/hooks.md)."""

from __future__ import annotations

from dataclasses import dataclass
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
RESUME_SAFE_PREFIXES = ("logging.", "hooks.")
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
        with_hooks: Annotated[list[str] | None, typer.Option(
            "--with-hooks", metavar="GROUP", help="Turn on a hook group: minimal or full (repeatable; added to [hooks] groups).")] = None,
        hooks: Annotated[list[str] | None, typer.Option(
            "--hooks", metavar="NAME", help="Turn on hooks by name or 'module:factory' (repeatable or comma-separated; added to the groups and [hooks] names).")] = None,
        hooks_list: Annotated[bool, typer.Option("--hooks-list", help="Print every built-in hook (points, groups, measured cost) and exit.")] = False,
        hooks_describe: Annotated[str | None, typer.Option(
            "--hooks-describe", metavar="NAME", help="Print one hook in detail (metrics, units, settings, cost) and exit.")] = None,
        hook_csv: Annotated[bool, typer.Option("--hook-csv", help="Write hook metrics to <run>/hooks.csv.")] = False,
        hook_jsonl: Annotated[bool, typer.Option("--hook-jsonl", help="Write hook metrics to <run>/hooks.jsonl.")] = False,
        hook_wandb: Annotated[str | None, typer.Option(
            "--hook-wandb", metavar="PROJECT", help="Log hook metrics to this wandb project (hooks/<hook>/<metric>).")] = None,
    ) -> None:
        """Train one run with LoRA: sample, reward, advantages, update, log, checkpoint."""
        if hooks_list or hooks_describe is not None:  # no config needed, no torch imported
            from retrain.hooks.registry import describe_text, list_text

            typer.echo(list_text() if hooks_list else describe_text(hooks_describe or ""))
            return
        flags = HookFlags(groups=_split(with_hooks), names=_split(hooks),
                          sinks=[s for s, on in (("csv", hook_csv), ("jsonl", hook_jsonl),
                                                 ("wandb", hook_wandb is not None)) if on],
                          wandb_project=hook_wandb or "")
        mode = console_mode(live, silent, no_console_output)
        if resume is not None:
            if config is not None:
                raise ResumeError("give either CONFIG or --resume RUN_DIR, not both")
            cfg, run_dir = _resume_config(resume, set_ or [])
            is_resume = True
            rewrite = bool(set_) or bool(flags)
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
        cfg = with_hook_flags(cfg, flags)
        _train(cfg, run_dir, resume=is_resume, mode=mode, write_config=rewrite)


@dataclass(frozen=True)
class HookFlags:
    """The hook options of `retrain run`; they add to the config's [hooks] table."""

    groups: list[str]
    names: list[str]
    sinks: list[str]
    wandb_project: str

    def __bool__(self) -> bool:
        return bool(self.groups or self.names or self.sinks)


def _split(values: list[str] | None) -> list[str]:
    """Repeated options, each possibly comma-separated: ['norms,grad', 'adv'] -> 3 names."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def with_hook_flags(cfg, flags: HookFlags):  # noqa: ANN001, ANN201 - RetrainConfig; torch-free import
    """`cfg` with the flags' groups, names and sinks added to [hooks], checked like the TOML."""
    if not flags:
        return cfg
    import dataclasses

    from retrain.errors import ConfigError
    from retrain.hooks.registry import config_problems, name_problems, plugin_problems

    problems = name_problems(flags.groups, flags.names, [],
                             where=("--with-hooks", "--hooks", "--hook-*"))
    if problems:
        raise ConfigError(problems)
    h = cfg.hooks

    def merged(old: tuple[str, ...], new: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*old, *new]))

    hooks = dataclasses.replace(h, groups=merged(h.groups, flags.groups),
                                names=merged(h.names, flags.names),
                                sinks=merged(h.sinks, flags.sinks),
                                wandb_project=flags.wandb_project or h.wandb_project)
    cfg = dataclasses.replace(cfg, hooks=hooks)
    problems = config_problems(cfg)
    if not problems:
        problems = plugin_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


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
