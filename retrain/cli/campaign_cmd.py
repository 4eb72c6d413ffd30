"""`retrain campaign plan|run|resume|status`: the main job."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from retrain.cli._common import (
    LiveOpt,
    NoConsoleOpt,
    SetOpt,
    SilentOpt,
    console,
    console_mode,
    err_console,
    handles_errors,
)
from retrain.cli.analyze_cmd import IntervalOpt, WatchOpt

campaign_app = typer.Typer(help="Plan, run, resume and watch campaigns.", no_args_is_help=True)



@campaign_app.command("plan")
@handles_errors
def plan(
    file: Annotated[Path, typer.Argument(help="Campaign TOML file.")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Expand the grid and print every run (nothing is trained or written, no plugin code runs)."""
    from retrain.analysis.formats import Col, FitTable, print_result
    from retrain.campaign.grid import load_campaign
    from retrain.campaign.plan import packing_line, plan_dict, summary_line

    spec = load_campaign(file, set_ or [], plugins="locate")
    data = plan_dict(spec)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    # A narrow terminal hides seed, then condition (both are in the run name); overrides wrap
    # between `key=value` items, never inside one.
    table = FitTable([Col("#", justify="right"), Col("run", kind="name"),
                      Col("condition", kind="name", drop=2), Col("seed", justify="right", drop=1),
                      Col("steps", justify="right"), Col("pack", justify="right", drop=3),
                      Col("overrides")],
                     title=f"campaign '{spec.name}' — spec {data['spec_hash']}")
    pack_of = {n: (str(i) if len(p) > 1 else "alone")
               for i, p in enumerate(data["packs"] or [], 1) for n in p}
    for i, run in enumerate(spec.runs, 1):
        ov = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "—"
        table.add_row(str(i), run.name, Text(run.condition, style="cyan"), str(run.seed),
                      str(run.max_steps), pack_of.get(run.name, "—"), Text(ov, style="dim"))
    print_result(console, table)
    console.print(summary_line(spec, data))
    console.print(packing_line(data["packs"]))



ForceOpt = Annotated[bool, typer.Option("--force", help="Continue even though the spec changed (changed runs restart).")]


class ExecutorChoice(StrEnum):
    auto = "auto"
    inprocess = "inprocess"
    pool = "pool"
    ray = "ray"


ExecutorOpt = Annotated[ExecutorChoice | None, typer.Option("--executor", help="Override campaign.executor.")]


@campaign_app.command("run")
@handles_errors
def run(
    file: Annotated[Path, typer.Argument(help="Campaign TOML file.")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Campaign dir (default logs/<name>_<UTC time>); an existing one is resumed.")] = None,
    executor: ExecutorOpt = None,
    force: ForceOpt = False,
    live: LiveOpt = False, silent: SilentOpt = False, no_console_output: NoConsoleOpt = False,
) -> None:
    """Train every run of the campaign, then squeeze and compare. Exit 1 if a run failed, 130 if interrupted."""
    from retrain.campaign.campaign_dir import default_out_dir
    from retrain.campaign.grid import load_campaign

    spec = load_campaign(file, set_ or [])
    out_dir = out or default_out_dir(spec)
    _execute(spec, out_dir, source_text=file.read_text(encoding="utf-8"), sets=set_ or [],
             force=force, executor=executor.value if executor else None,
             mode=console_mode(live, silent, no_console_output))


@campaign_app.command("resume")
@handles_errors
def resume(
    campaign_dir: Annotated[Path, typer.Argument(help="A campaign directory (holds plan.json).")],
    force: ForceOpt = False,
    executor: ExecutorOpt = None,
    live: LiveOpt = False, silent: SilentOpt = False, no_console_output: NoConsoleOpt = False,
) -> None:
    """Continue a campaign: done runs are skipped, interrupted ones resume from their checkpoint,
    failed ones are retried."""
    from retrain.campaign.grid import campaign_from_raw
    from retrain.config.load import apply_dotted, parse_sets, read_toml
    from retrain.errors import ResumeError
    from retrain.io import read_json_object

    plan_path = campaign_dir / "plan.json"
    if not plan_path.exists() or not (campaign_dir / "campaign.toml").is_file():
        raise ResumeError(f"{campaign_dir}: not a campaign directory (needs plan.json and campaign.toml)")
    old_plan = read_json_object(plan_path)
    if old_plan is None:
        err_console.print(f"warning: {plan_path} is damaged; resuming with campaign.toml as it is "
                          "(if the campaign was started with --set, run `retrain campaign run "
                          f"{campaign_dir / 'campaign.toml'} --out {campaign_dir} --set ...` with "
                          "the same overrides instead)", highlight=False, soft_wrap=True)
    sets = [str(v) for v in (old_plan or {}).get("sets", []) if isinstance(v, str)]
    raw = apply_dotted(read_toml(campaign_dir / "campaign.toml"), parse_sets(sets))
    old_name = (old_plan or {}).get("campaign")
    old_name = old_name if isinstance(old_name, str) else campaign_dir.name
    spec = campaign_from_raw(raw, source=str(campaign_dir / "campaign.toml"), default_name=old_name)
    _execute(spec, campaign_dir, source_text=(campaign_dir / "campaign.toml").read_text(encoding="utf-8"),
             sets=sets, force=force, executor=executor.value if executor else None,
             mode=console_mode(live, silent, no_console_output))


@campaign_app.command("status")
@handles_errors
def status(
    campaign_dir: Annotated[Path, typer.Argument(help="A campaign directory (holds plan.json and manifest.json).")],
    watch: WatchOpt = False,
    interval: IntervalOpt = 5.0,
) -> None:
    """Per-run status, step/total, latest reward and eval, age, ETA (works while the campaign runs)."""
    from retrain.analysis.formats import print_result
    from retrain.analysis.status import campaign_status_table, watch_status

    table = campaign_status_table(campaign_dir)  # refuses a dir that is not a campaign's
    if watch:
        watch_status(campaign_dir, interval=interval, console=console,
                     render=lambda: campaign_status_table(campaign_dir))
    else:
        print_result(console, table)


def _execute(spec, out_dir: Path, *, source_text: str, sets: list[str], force: bool,  # noqa: ANN001
             executor: str | None, mode: str) -> None:
    from retrain.backend.local.cache import PRESETS, cache_root
    from retrain.campaign.campaign_dir import prepare
    from retrain.campaign.runner import CampaignRunner, build_executor
    from retrain.trainer.signals import graceful_stop
    from retrain.trainer.state import StopFlag

    if any(r.config.model.name in PRESETS for r in spec.runs):
        cache_root()  # RETRAIN_CACHE naming a file is refused before the campaign dir is written

    def warn(text: str) -> None:
        if mode != "none":
            err_console.print(f"warning: {text}", highlight=False, soft_wrap=True)

    manifest, resumed = prepare(spec, out_dir, source_text=source_text, sets=sets, force=force,
                                say=warn)
    runner = CampaignRunner(spec, out_dir, manifest, executor=build_executor(spec, executor=executor),
                            console_mode=mode)
    if mode != "none":
        counts = manifest.counts()
        what = "resuming" if resumed else "starting"
        upto = "up to " if manifest.data.get("sequential") else ""  # sequential seeds
        err_console.print(f"{what} campaign '{spec.name}' → {out_dir}: {upto}{len(spec.runs)} runs "
                          f"({counts['done']} done already)")
    code = 0
    try:
        with graceful_stop(StopFlag(), on_first=runner.request_stop, quiet=mode == "none"):
            code = runner.run()
    except KeyboardInterrupt:
        runner.executor.kill()
        runner.stop_requested = True
        code = runner.finish()
    if mode != "none":
        err_console.print(f"campaign {manifest.data['status']}: {out_dir}")
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.add_typer(campaign_app, name="campaign")
