"""Fixtures of the sink tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs" / "maxrl+gtpo_sepa_s7"
    d.mkdir(parents=True)
    return d
