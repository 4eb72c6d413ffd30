"""The `retrain` command. Sub-command groups live in one module each and register here.

torch/transformers/peft are imported only inside command bodies, so `retrain --help`,
`campaign plan`, `status` and `analyze` stay fast.
"""

from __future__ import annotations

import typer

from retrain import __version__

app = typer.Typer(
    name="retrain",
    help="Run and compare RLVR experiments on causal LMs with LoRA.",
    no_args_is_help=True,
    add_completion=False,
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


_register()


def main() -> None:
    app()
