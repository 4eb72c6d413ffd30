"""Every output of a run except checkpoints: metrics.jsonl, emergence logs, run.log,
summary.json, heartbeat.json, wandb and the console. The loop hands one flat metrics dict per
step to a `SinkSet` built by `build_sinks`; see docs/logging.md for files, fields and keys.
"""

from retrain.sinks.base import (
    CONSOLE_MODES,
    NullSink,
    RunInfo,
    Sink,
    SinkSet,
    build_sinks,
    check_logging_config,
)
from retrain.sinks.console import CampaignDisplay, ConsoleSink
from retrain.sinks.contract import METRICS_FIELDS, validate_row, wandb_key
from retrain.sinks.heartbeat import HeartbeatSink
from retrain.sinks.metrics import JsonlSink
from retrain.sinks.runlog import RunLogSink, tee_output
from retrain.sinks.summary import SummarySink

__all__ = [
    "CONSOLE_MODES", "CampaignDisplay", "ConsoleSink", "HeartbeatSink", "JsonlSink",
    "METRICS_FIELDS", "NullSink", "RunInfo", "RunLogSink", "Sink", "SinkSet", "SummarySink", "build_sinks",
    "check_logging_config", "tee_output", "validate_row", "wandb_key",
]
