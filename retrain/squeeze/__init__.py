"""LoRA-Squeeze: rank analysis and compression of trained LoRA adapters (arXiv 2602.10993).

Runs after training (campaign end, or `retrain squeeze`) and depends only on the on-disk PEFT
adapter format. `analysis` is the pure math, `adapter` reads files, `compress` writes a
lower-rank adapter, `report` renders the table / JSON / plot / wandb run, `over_time` follows a
run's checkpoints. No torch import at package import time.
"""

from __future__ import annotations

from retrain.squeeze.adapter import SqueezeError, load_adapter
from retrain.squeeze.analysis import LayerSqueeze, SqueezeResult, analyze_adapter, default_ranks
from retrain.squeeze.compress import compress_adapter
from retrain.squeeze.over_time import (
    OverTimeResult,
    analyze_over_time,
    render_over_time_table,
    write_over_time_report,
)
from retrain.squeeze.report import log_squeeze_to_wandb, render_table, write_report

__all__ = [
    "LayerSqueeze",
    "OverTimeResult",
    "SqueezeError",
    "SqueezeResult",
    "analyze_adapter",
    "analyze_over_time",
    "compress_adapter",
    "default_ranks",
    "load_adapter",
    "log_squeeze_to_wandb",
    "render_over_time_table",
    "render_table",
    "write_over_time_report",
    "write_report",
]
