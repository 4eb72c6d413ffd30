"""`retrain analyze export` (one flat row per run) and `retrain analyze diff` (two runs side by
side: config differences, environment differences from environment.json, and metric deltas).

Both read run dirs through `loading`; finished runs contribute their summary.json, runs in
progress what their metrics.jsonl holds so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Group
from rich.text import Text

from retrain.analysis.formats import (
    OutputFormat,
    csv_text,
    fmt_number,
    json_text,
    markdown_table,
    rich_table,
)
from retrain.analysis.loading import AnalysisError, RunData, collect_runs
from retrain.environment import environment_differences, read_environment

# Latest value of these metrics goes into every export row (when the run logged them).
LATEST_METRICS = ("correct_rate", "running_correct_rate", "mean_reward", "loss", "eval_accuracy")
_IDENTITY = ("run", "condition", "seed", "status")
# Columns of the terminal table (key → header); csv, json and md carry every key.
TABLE_COLUMNS = {
    "run": "run", "status": "status", "steps_done": "steps", "wall_time_s": "wall s",
    "initial_eval.accuracy": "eval acc 0", "final_eval.accuracy": "eval acc end",
    "deltas.accuracy": "Δ acc", "latest.correct_rate": "correct", "latest.mean_reward": "reward",
}


def flatten(obj: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Nested dicts to dotted keys: {"a": {"b": 1}} → {"a.b": 1}. Lists stay values."""
    out: dict[str, object] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_record(run: RunData) -> dict[str, object]:
    """Everything known about one run as one flat record."""
    rec: dict[str, object] = {
        "campaign": run.campaign, "run": run.name, "condition": run.condition, "seed": run.seed,
        "status": run.status, "steps_done": run.step, "max_steps": run.max_steps,
        "wall_time_s": run.wall_time_s, "attempts": run.attempts,
    }
    summary = flatten({k: v for k, v in (run.summary or {}).items() if k not in _IDENTITY})
    for key, value in summary.items():
        if value is not None or key not in rec:
            rec[key] = value
    if "initial_eval.accuracy" not in rec and run.rows and run.rows[0]["step"] == 0:
        rec["initial_eval.accuracy"] = run.rows[0].get("eval_accuracy")
    for metric in LATEST_METRICS:
        rec[f"latest.{metric}"] = run.latest(metric)
    rec["run_dir"] = str(run.run_dir)
    rec["error"] = run.error
    return rec


def export_records(path: Path) -> list[dict[str, object]]:
    """One record per run under `path` (campaign, run dir or tree), pending runs included."""
    return [run_record(run) for run in collect_runs(Path(path))]


def render_records(records: Sequence[dict[str, object]], fmt: OutputFormat | str,
                   *, title: str | None = None) -> str | Group:
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.csv:
        return csv_text(records)
    if fmt is OutputFormat.json:
        return json_text(list(records))
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in columns]
    if fmt is OutputFormat.table:
        # A terminal cannot show ~25 columns; the table keeps the ones read first.
        columns = [c for c in TABLE_COLUMNS if c in columns]
    cells = [[fmt_number(rec.get(c)) for c in columns] for rec in records]
    if fmt is OutputFormat.md:
        return markdown_table(columns, cells)
    header = [TABLE_COLUMNS.get(c, c) for c in columns]
    return Group(rich_table(header, cells, title=title, caption="all columns: --format csv|json|md"))


def single_run(path: Path) -> RunData:
    runs = [r for r in collect_runs(Path(path)) if r.run_dir.exists()]
    if len(runs) != 1:
        raise AnalysisError(f"{path}: expected one run dir, found {len(runs)} runs")
    return runs[0]


def _mean_last(run: RunData, metric: str, last_n: int) -> float | None:
    values = run.series(metric)[1][-last_n:]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class RunDiff:
    """Two runs compared: identity of each, differing config keys, metric rows, and the
    environment.json keys that differ (versions, device, git commit; not the time)."""

    run_a: dict[str, object]
    run_b: dict[str, object]
    last_n: int
    config: list[dict[str, object]]
    metrics: list[dict[str, object]]
    environment: list[dict[str, object]] = field(default_factory=list)
    environment_recorded: bool = False  # both runs have an environment.json

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _identity(run: RunData) -> dict[str, object]:
    return {"name": run.name, "condition": run.condition, "seed": run.seed, "status": run.status,
            "step": run.step, "run_dir": str(run.run_dir)}


def diff_runs(path_a: Path, path_b: Path, *, last_n: int = 10) -> RunDiff:
    """Config keys whose values differ, and per metric the final and last-N mean of both runs
    with the delta B − A (summary.json evals included as `final_eval.accuracy` etc.)."""
    if last_n < 1:
        raise AnalysisError(f"--last must be >= 1, got {last_n}")
    a, b = single_run(path_a), single_run(path_b)
    conf_a, conf_b = flatten(a.config), flatten(b.config)
    config = [{"key": k, "a": conf_a.get(k), "b": conf_b.get(k)}
              for k in sorted(set(conf_a) | set(conf_b)) if conf_a.get(k) != conf_b.get(k)]
    metrics: list[dict[str, object]] = []
    for name in sorted(a.metric_names() & b.metric_names()):
        fa, fb = a.latest(name), b.latest(name)
        ma, mb = _mean_last(a, name, last_n), _mean_last(b, name, last_n)
        metrics.append({"metric": name, "final_a": fa, "final_b": fb, "final_delta": _delta(fa, fb),
                        "last_n_a": ma, "last_n_b": mb, "last_n_delta": _delta(ma, mb)})
    sa, sb = flatten(a.summary or {}), flatten(b.summary or {})
    for key in sorted(set(sa) & set(sb)):
        va, vb = sa[key], sb[key]
        if isinstance(va, int | float) and isinstance(vb, int | float) and key not in ("seed",):
            metrics.append({"metric": f"summary.{key}", "final_a": va, "final_b": vb,
                            "final_delta": _delta(va, vb), "last_n_a": None, "last_n_b": None,
                            "last_n_delta": None})
    env_a, env_b = read_environment(a.run_dir), read_environment(b.run_dir)
    return RunDiff(_identity(a), _identity(b), last_n, config, metrics,
                   environment=environment_differences(env_a, env_b),
                   environment_recorded=env_a is not None and env_b is not None)


def _delta(a: object, b: object) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(b) - float(a)
    return None


def render_diff(diff: RunDiff, fmt: OutputFormat | str) -> str | Group:
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        return json_text(diff.to_dict())
    config, metrics = diff.config, diff.metrics
    if fmt is OutputFormat.csv:
        rows = [{"section": "config", **c} for c in config]
        rows += [{"section": "environment", **e} for e in diff.environment]
        rows += [{"section": "metric", **m} for m in metrics]
        return csv_text(rows)
    name_a, name_b = f"A = {diff.run_a['name']}", f"B = {diff.run_b['name']}"
    n = diff.last_n
    conf_cols = ["config key", name_a, name_b]
    conf_cells = [[str(c["key"]), fmt_number(c["a"]), fmt_number(c["b"])] for c in config]
    met_cols = ["metric", "final A", "final B", "Δ final (B−A)", f"last-{n} A", f"last-{n} B",
                f"Δ last-{n}"]
    met_cells = [[str(m["metric"])] + [fmt_number(m[k]) for k in
                 ("final_a", "final_b", "final_delta", "last_n_a", "last_n_b", "last_n_delta")]
                 for m in metrics]
    env_cols = ["environment key", name_a, name_b]
    env_cells = [[str(e["key"]), fmt_number(e["a"]), fmt_number(e["b"])] for e in diff.environment]
    env_same = ("environments identical" if diff.environment_recorded
                else "environment not recorded (no environment.json in either run)")
    if fmt is OutputFormat.md:
        conf = markdown_table(conf_cols, conf_cells) if conf_cells else "(configs identical)\n"
        env = markdown_table(env_cols, env_cells) if env_cells else f"({env_same})\n"
        return (f"## {name_a} vs {name_b}\n\n### config\n\n{conf}\n### environment\n\n{env}"
                f"\n### metrics\n\n" + markdown_table(met_cols, met_cells))
    conf_part = (rich_table(conf_cols, conf_cells, title="config differences") if conf_cells
                 else Text("configs identical"))
    env_part = (rich_table(env_cols, env_cells, title="environment differences") if env_cells
                else Text(env_same))
    return Group(conf_part, env_part, rich_table(met_cols, met_cells, title="metrics"))
