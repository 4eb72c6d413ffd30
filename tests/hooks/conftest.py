"""The hook tests reuse the trainer's tiny-model fixtures (one cached model, CliRunner)."""

from tests.trainer.conftest import base_config, cli, tiny_model  # noqa: F401
