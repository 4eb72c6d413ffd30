"""`retrain model …`: build the embedded tiny/small models ahead of time, inspect model dirs.

`retrain model build tiny` goes through the same path as `retrain run` (backend/local/presets.py's
resolve_model_path), so the entry it caches is exactly the one a run with the same [model] and
[data] settings will load.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from retrain.cli._common import console, handles_errors
from retrain.errors import RetrainError

model_app = typer.Typer(help="Build the offline tiny/small models; inspect model directories.",
                        no_args_is_help=True)


class Preset(StrEnum):
    tiny = "tiny"
    small = "small"


class TaskChoice(StrEnum):
    arithmetic = "arithmetic"
    countdown = "countdown"


@model_app.command("build")
@handles_errors
def build(
    preset: Annotated[Preset, typer.Argument(help="Model preset.")],
    steps: Annotated[int | None, typer.Option(min=0, help="Supervised warm-up steps (default: model.warmup_steps).")] = None,
    task: Annotated[TaskChoice, typer.Option(help="Task the warm-up trains on.")] = TaskChoice.arithmetic,
    seed: Annotated[int | None, typer.Option(min=0, help="Warm-up seed (default: model.warmup_seed).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the model path.")] = False,
) -> None:
    """Build (or find) the cached, warmed-up model and print its path and warm-up accuracy."""
    from dataclasses import replace

    from retrain.backend.local.presets import resolve_model_path, warmup_task
    from retrain.backend.local.tiny import read_model_meta
    from retrain.config.schema import DataConfig, ModelConfig, RetrainConfig

    model = ModelConfig(name=preset.value)
    if steps is not None:
        model = replace(model, warmup_steps=steps)
    if seed is not None:
        model = replace(model, warmup_seed=seed)
    cfg = RetrainConfig(model=model, data=DataConfig(task=task.value))
    path = Path(resolve_model_path(cfg, warmup_task(cfg), progress=not quiet))
    if quiet:
        typer.echo(str(path))
        return
    meta = read_model_meta(path) or {}
    acc = meta.get("warmup_accuracy")
    console.print(f"model: {path}")
    console.print(f"warm-up: {meta.get('warmup_steps_done', meta.get('warmup_steps'))} steps in "
                  f"{meta.get('build_time_s', float('nan')):.1f}s, greedy accuracy "
                  f"{'n/a' if acc is None else f'{acc:.1%}'} on {meta.get('eval_size', 0)} held-out problems")


@model_app.command("info")
@handles_errors
def info(
    path: Annotated[Path, typer.Argument(help="A model directory (built preset or any HF model dir).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Architecture, parameter count, tokenizer and (for built presets) warm-up record."""
    from retrain.backend.local.tiny import read_model_meta

    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise RetrainError(f"{path}: not a model directory (no config.json)")
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with __import__("torch").device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    record = {
        "path": str(path.resolve()),
        "architecture": (config.architectures or [type(config).__name__])[0],
        "model_type": config.model_type,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "parameters": n_params,
        "retrain": read_model_meta(path),
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    for key, value in record.items():
        if key != "retrain":
            console.print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    meta = record["retrain"]
    if meta:
        acc = meta.get("warmup_accuracy")
        console.print(f"preset: {meta['preset']} (key {meta['key']}), warm-up "
                      f"{meta.get('warmup_steps_done', meta['warmup_steps'])} steps, accuracy "
                      f"{'n/a' if acc is None else f'{acc:.1%}'}, built in {meta['build_time_s']}s")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
