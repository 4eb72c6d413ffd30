"""Every file under invalid/ must be rejected with exit code 2, one readable message naming the
problem (the file's `# expect:` line), and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrain.cli.app import app

INVALID = sorted((Path(__file__).parent / "invalid").glob("*.toml"))
runner = CliRunner()


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} needs a '# expect: ...' first line"
    return first.removeprefix("# expect: ").strip()


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_file_is_rejected_clearly(path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert expected(path) in " ".join(result.stderr.split()), result.stderr


def test_three_mistakes_reported_together(tmp_path: Path) -> None:
    bad = tmp_path / "three.toml"
    bad.write_text("[training]\ngroup_size = 1\nbatch_sze = 4\n[lora]\nrank = 'x'\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    err = result.stderr
    assert "3 problems" in err
    assert "training.group_size: must be >= 2, got 1" in err
    assert "training.batch_sze: unknown key (did you mean 'batch_size'?)" in err
    assert "lora.rank: must be an integer, got 'x'" in err


def test_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_campaign_plan_of_invalid_campaign_exits_2() -> None:
    path = Path(__file__).parent / "invalid" / "campaign_zip_unequal.toml"
    result = runner.invoke(app, ["campaign", "plan", str(path)])
    assert result.exit_code == 2
    assert "equal lengths" in result.stderr
