"""The `retrain` command. Sub-command groups live in one module each and register here.

torch/transformers/peft are imported only inside command bodies, so `retrain --help`,
`campaign plan`, `status` and `analyze` stay fast.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperGroup

from retrain import __version__


class RetrainGroup(TyperGroup):
    """The root group; it tidies the help of every command it hands out (see `tidy_help`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _hide_flag_types(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            tidy_help(cmd, ctx)
        return cmd


def tidy_help(cmd: Any, ctx: Any) -> None:
    """Help as users expect it, for `cmd` and every command under it: a flag shows no `<bool>`
    type (it takes no value), and docstrings wrapped at 100 columns in the source reflow to the
    terminal instead of breaking mid-sentence."""
    cmd.help = _reflow(cmd.help)
    help_option = cmd.get_help_option(ctx)
    _hide_flag_types([*cmd.params, *([help_option] if help_option is not None else [])])
    for sub in getattr(cmd, "commands", {}).values():
        tidy_help(sub, ctx)


def _hide_flag_types(params: list[Any]) -> None:
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""


def _reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph (a blank line separates paragraphs)."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


app = typer.Typer(
    name="retrain",
    help="Run and compare RLVR experiments on causal LMs with LoRA.",
    cls=RetrainGroup,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"retrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Run and compare RLVR experiments on causal LMs with LoRA."""


def _register() -> None:
    # One line per command group; each module defines `register(app)`.
    from retrain.cli import analyze_cmd, campaign_cmd, config_cmd, data_cmd, run_cmd, squeeze_cmd

    run_cmd.register(app)
    campaign_cmd.register(app)
    config_cmd.register(app)
    data_cmd.register(app)
    squeeze_cmd.register(app)
    analyze_cmd.register(app)
    from retrain.cli import model_cmd

    model_cmd.register(app)
    from retrain.cli import init_cmd

    init_cmd.register(app)
    from retrain.cli import explain_cmd

    explain_cmd.register(app)


_register()


def main() -> None:
    app()
