"""Every file under invalid/ must be rejected with exit code 2, one readable message naming the
problem (the file's `# expect:` line), and no traceback: by `config validate`, and by the command
that would run it (`retrain run` or `campaign run`), which must write nothing. Paths in the files
are relative to the repository root."""

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


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _is_campaign(path: Path) -> bool:
    import tomllib

    try:
        return isinstance(tomllib.loads(path.read_text()).get("campaign"), dict)
    except tomllib.TOMLDecodeError:
        return False


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_file_is_rejected_clearly(path: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert expected(path) in " ".join(result.stderr.split()), result.stderr

    out = tmp_path / "out"
    run = ["campaign", "run"] if _is_campaign(path) else ["run"]
    result = runner.invoke(app, [*run, str(path), "--out", str(out), "--no-console-output"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.startswith("error: "), result.output
    assert expected(path) in " ".join(result.stderr.split()), result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [], "a rejected run wrote files"
    if _is_campaign(path):
        result = runner.invoke(app, ["campaign", "plan", str(path)])
        assert result.exit_code == 2 and expected(path) in " ".join(result.stderr.split()), \
            result.output


def test_an_uncached_hub_model_is_refused_without_touching_the_network(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13.7: with HF_HUB_OFFLINE unset and model.local_files_only = true, a Hub id that is
    not in the cache fails at once, in validate and at load time, with no DNS lookup."""
    import socket

    calls: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("network use in a test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = Path(__file__).parent / "invalid" / "model_not_in_cache.toml"
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2 and "is not in the Hugging Face cache" in result.stderr
    from retrain.backend.local.model import ModelLoadError, load_model_and_tokenizer

    with pytest.raises(ModelLoadError, match="is not in the Hugging Face cache"):
        load_model_and_tokenizer("someorg/not-a-cached-model", dtype="float32", device="cpu",
                                 local_files_only=True, trust_remote_code=False)
    assert calls == []


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
