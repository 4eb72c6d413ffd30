"""`retrain analyze compare|plot|export|diff|audit` and `retrain status`: thin shells over
`retrain.analysis`, which reads run dirs only (no torch, no trainer).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType

from retrain.analysis.loading import DEFAULT_METRIC
from retrain.cli._common import console, handles_errors

PathArg = Annotated[Path, typer.Argument(help="A campaign dir, a run dir, or a directory tree holding them.")]
# `retrain status` and `retrain campaign status` share these.
WatchOpt = Annotated[bool, typer.Option(
    "--watch", "-w", help="Redraw every --interval seconds until Ctrl+C (piped: print each snapshot).")]
IntervalOpt = Annotated[float, typer.Option(min=0.1, help="Seconds between redraws with --watch.")]


class Fmt(StrEnum):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"


class Stat(StrEnum):
    last_n = "last_n"
    final = "final"
    best = "best"
    auc = "auc"
    steps_to_threshold = "steps_to_threshold"
    eval_accuracy = "eval_accuracy"
    eval_gain = "eval_gain"
    eval_sampled_gain = "eval_sampled_gain"


class CiMethod(StrEnum):
    t = "t"
    bootstrap = "bootstrap"


class TestKind(StrEnum):
    t = "t"
    wilcoxon = "wilcoxon"


class Style(StrEnum):
    paper = "paper"
    dark = "dark"


class PlotFormat(StrEnum):
    png = "png"
    svg = "svg"
    pdf = "pdf"


class Band(StrEnum):
    minmax = "minmax"
    ci = "ci"
    bootstrap = "bootstrap"
    se = "se"


analyze_app = typer.Typer(
    help="Compare conditions across seeds, plot curves, export and diff runs (reads run dirs only).",
    no_args_is_help=True,
)


def _emit(result: RenderableType, out: Path | None) -> None:
    """Print a Rich renderable or text; text goes to `out` instead when given."""
    if isinstance(result, str):
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(result, encoding="utf-8")
            console.print(f"wrote {out}", highlight=False)
        else:
            typer.echo(result, nl=False)
        return
    if out is not None:
        from retrain.analysis import AnalysisError

        raise AnalysisError("--out needs --format md, csv or json (a table is for the terminal)")
    from retrain.analysis.formats import print_result

    print_result(console, result)


@analyze_app.command("compare")
@handles_errors
def compare(
    path: PathArg,
    metric: Annotated[str, typer.Option(help="metrics.jsonl key to compare.")] = DEFAULT_METRIC,
    baseline: Annotated[str | None, typer.Option(help="Condition to test against (default grpo+none if present, else the first).")] = None,
    last: Annotated[int, typer.Option("--last", help="N for the mean over each run's last N logged steps.")] = 10,
    stat: Annotated[Stat, typer.Option(help="Per-run statistic that the baseline test uses.")] = Stat.last_n,
    ci: Annotated[CiMethod, typer.Option(help="Interval over seeds: t (Student t) or bootstrap (percentile).")] = CiMethod.t,
    test: Annotated[TestKind, typer.Option(help="Paired test over matching seeds: t (paired t) or wilcoxon (signed-rank).")] = TestKind.t,
    threshold: Annotated[float | None, typer.Option(help="Value for 'steps to threshold' (default 0.5 for metrics in [0, 1]).")] = None,
    level: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    out: Annotated[Path | None, typer.Option(help="Write md/csv/json to this file instead of stdout.")] = None,
) -> None:
    """Per condition across seeds: final, best, last-N mean, AUC, steps to threshold, eval accuracy,
    each mean with a 95% interval; and against the baseline a paired test with a verdict."""
    from retrain.analysis.compare import comparison_rows, render_comparison

    rows = comparison_rows(path, metric=metric, last_n=last, baseline=baseline, stat=stat.value,
                           ci=ci.value, test=test.value, threshold=threshold, level=level)
    _emit(_with_audit(render_comparison(rows, fmt.value), path, fmt), out)


def _with_audit(result: RenderableType, path: Path, fmt: Fmt) -> RenderableType:
    """`analyze compare` in table or md form ends with the intervention audit of the same runs
    (csv and json stay one table; `analyze audit` gives the audit alone)."""
    if fmt not in (Fmt.table, Fmt.md):
        return result
    from rich.console import Group

    from retrain.analysis.audit import audit_path, render_audit

    findings, conditions = audit_path(path)
    audit = render_audit(findings, conditions, fmt.value)
    if isinstance(result, str) and isinstance(audit, str):
        return result.rstrip("\n") + "\n\n" + audit
    return Group(result, "", audit)


@analyze_app.command("plot")
@handles_errors
def plot(
    path: PathArg,
    more_metrics: Annotated[list[str] | None, typer.Argument(metavar="[METRICS]...", help="More metrics, so that '--metrics a b' works.")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", "-m", help="Metrics to plot, one panel each (also comma-separated).")] = None,
    smooth: Annotated[float, typer.Option(help="EMA smoothing weight in [0, 1); 0 plots raw values.")] = 0.0,
    style: Annotated[Style, typer.Option(help="paper: light, colour-blind safe (Okabe-Ito); dark: dark background.")] = Style.paper,
    band: Annotated[Band, typer.Option(help="Band around each mean: min-max over seeds, 95% t-interval (ci) or bootstrap interval of the mean, or ±1 standard error (se); clipped to the metric's range.")] = Band.minmax,
    fmt: Annotated[PlotFormat | None, typer.Option("--format", "-f", help="png, svg or pdf (default: from --out, else png).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output file; its extension, .png, .svg or .pdf, sets the format (default: in DIR/analysis/).")] = None,
    dpi: Annotated[int, typer.Option(help="Dots per inch; each panel is 5 x 3.5 inches.")] = 150,
) -> None:
    """One panel per metric, one line per condition (mean over seeds) with a band."""
    from retrain.analysis.loading import collect_runs
    from retrain.analysis.plots import plot_format, plot_metrics, save_figure

    names = [m for item in [*(metrics or []), *(more_metrics or [])] for m in item.split(",") if m]
    names = names or ["correct_rate", "mean_reward"]
    kind = plot_format(out, fmt.value if fmt is not None else None)  # before any work or write
    runs = collect_runs(path)
    fig = plot_metrics(runs, names, smooth=smooth, style=style.value, band=band.value, dpi=dpi)
    base = path if path.is_dir() else path.parent
    target = out if out is not None else base / "analysis" / f"{'-'.join(names)}.{kind}"
    save_figure(fig, target, kind)
    console.print(f"wrote {target}", highlight=False)


@analyze_app.command("export")
@handles_errors
def export(
    path: PathArg,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.csv,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """A flat table of every run: identity, status, summary.json (flattened) and latest metrics."""
    from retrain.analysis.export import export_records, render_records

    _emit(render_records(export_records(path), fmt.value, title="runs"), out)


@analyze_app.command("diff")
@handles_errors
def diff(
    run_a: Annotated[Path, typer.Argument(help="First run dir (A).")],
    run_b: Annotated[Path, typer.Argument(help="Second run dir (B).")],
    last: Annotated[int, typer.Option("--last", help="N for the last-N means.")] = 10,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    out: Annotated[Path | None, typer.Option(help="Write md/csv/json to this file instead of stdout.")] = None,
) -> None:
    """Config keys and environment.json entries (package versions, device, git commit) that
    differ between two runs, and metric deltas (B - A)."""
    from retrain.analysis.export import diff_runs, render_diff

    _emit(render_diff(diff_runs(run_a, run_b, last_n=last), fmt.value), out)


@analyze_app.command("weight-change")
@handles_errors
def weight_change(
    adapter_a: Annotated[Path, typer.Argument(help="First adapter dir (A), or a run dir (its adapter/).")],
    adapter_b: Annotated[Path, typer.Argument(help="Second adapter dir (B), or a run dir (its adapter/).")],
    base: Annotated[Path | None, typer.Option(help="Base model dir, for changes relative to its weights (default: adapter_config.json's base_model_name_or_path if it is a local model dir).")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="One row per LoRA module as well as the total.")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    out: Annotated[Path | None, typer.Option(help="Write md/csv/json to this file instead of stdout.")] = None,
) -> None:
    """How far adapter B moved the weights from adapter A: ||dW_B - dW_A||_F per LoRA module and
    in total, relative to the base weights' norm when the base model is found."""
    from retrain.analysis.weight_change import render_weight_change
    from retrain.analysis.weight_change import weight_change as compute

    _emit(render_weight_change(compute(adapter_a, adapter_b, base=base), fmt.value,
                               per_layer=per_layer), out)


@analyze_app.command("audit")
@handles_errors
def audit(
    path: PathArg,
    no_signal_frac: Annotated[float | None, typer.Option(help="Flag a condition when more than this share of its groups had equal rewards (default: the campaign's [audit] no_signal_frac, else 0.9).")] = None,
    max_token_hit_rate: Annotated[float | None, typer.Option(help="Flag a condition whose completions hit training.max_tokens more often than this (default: [audit] max_token_hit_rate, else 0.5).")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    out: Annotated[Path | None, typer.Option(help="Write md/csv/json to this file instead of stdout.")] = None,
) -> None:
    """What did not happen, per condition: identical conditions, interventions that never acted,
    runs without learning signal, adapters that never moved. Reads run dirs only."""
    from retrain.analysis.audit import audit_path, render_audit, thresholds_for

    thresholds = thresholds_for(path if path.is_dir() else path.parent, no_signal_frac=no_signal_frac,
                                max_token_hit_rate=max_token_hit_rate)
    findings, conditions = audit_path(path, thresholds)
    _emit(render_audit(findings, conditions, fmt.value, thresholds), out)


@analyze_app.command("power")
@handles_errors
def power(
    path: PathArg,
    metric: Annotated[str | None, typer.Option(help="metrics.jsonl key, summarised per run by --stat as in 'analyze compare' (default: each run's eval gain over its own initial eval).")] = None,
    stat: Annotated[Stat | None, typer.Option(help="Per-run statistic of --metric (default last_n; alone it applies to correct_rate).")] = None,
    last: Annotated[int, typer.Option("--last", help="N for the mean over each run's last N logged steps.")] = 10,
    baseline: Annotated[str | None, typer.Option(help="Condition to pair with (default grpo+none if present, else the first).")] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level of the paired t-test.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Chance of detecting the effect that the seeds-needed figures ask for.")] = 0.8,
    effect: Annotated[float | None, typer.Option(help="Also give the seeds needed for this difference, in the metric's units (> 0).")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    out: Annotated[Path | None, typer.Option(help="Write md/csv/json to this file instead of stdout.")] = None,
) -> None:
    """Per condition against the baseline, from its per-seed differences: the smallest difference
    the seeds so far can detect (MDE) and the seeds a paired t-test needs for the observed
    difference and for --effect, also at the Holm worst case alpha/m."""
    from retrain.analysis.loading import collect_runs
    from retrain.analysis.power import power_rows, render_power

    rows = power_rows(collect_runs(path), metric=metric, stat=stat.value if stat else None,
                      last_n=last, baseline=baseline, alpha=alpha, power=power, effect=effect)
    _emit(render_power(rows, fmt.value), out)


@handles_errors
def status(
    path: Annotated[Path, typer.Argument(help="Where to look for campaigns and runs.")] = Path("."),
    watch: WatchOpt = False,
    interval: IntervalOpt = 5.0,
) -> None:
    """Every campaign and run under PATH: status, progress, latest metrics, age and ETA."""
    from retrain.analysis.formats import print_result
    from retrain.analysis.status import status_renderable, watch_status

    if watch:
        watch_status(path, interval=interval, console=console)
    else:
        print_result(console, status_renderable(path))


def register(app: typer.Typer) -> None:
    app.add_typer(analyze_app, name="analyze")
    app.command("status")(status)
