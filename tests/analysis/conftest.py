"""Fixtures: a finished campaign and one still running (see fakes.py for the numbers)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import typer

from .fakes import BASE_FINALS, FakeRun, done_runs, write_campaign


@pytest.fixture
def done_campaign(tmp_path: Path) -> Path:
    return write_campaign(tmp_path / "camp", done_runs())


@pytest.fixture
def running_campaign(tmp_path: Path) -> Path:
    """Baseline done; maxrl+gtpo s42 half way with a torn last line, s101 failed, s202 pending."""
    runs = [FakeRun("grpo+none", s, f) for s, f in BASE_FINALS.items()] + [
        FakeRun("maxrl+gtpo", 42, 0.5, status="running", steps_logged=2, torn=True),
        FakeRun("maxrl+gtpo", 101, 0.5, status="failed", steps_logged=3),
        FakeRun("maxrl+gtpo", 202, 0.8, status="pending", steps_logged=0),
    ]
    return write_campaign(tmp_path / "live", runs, status="running")


def command_app(*groups: ModuleType) -> typer.Typer:
    """A Typer app with only these command modules, so a test does not depend on the others."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    for group in groups:
        group.register(app)
    return app
