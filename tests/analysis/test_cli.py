"""`retrain analyze ...` and `retrain status` through Typer's CliRunner, every --format; and a
subprocess check that none of them imports torch."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retrain.cli import analyze_cmd

from .conftest import command_app
from .test_plots import png_size

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd)


def invoke(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_compare_every_format(app: typer.Typer, done_campaign: Path) -> None:
    code, out, _ = invoke(app, "analyze", "compare", done_campaign, "--last", "2")
    assert code == 0 and "maxrl+gtpo" in out and "better than grpo+none" in out
    code, out, _ = invoke(app, "analyze", "compare", done_campaign, "--format", "md")
    assert code == 0 and out.startswith("| condition |") and "paired t" in out
    code, out, _ = invoke(app, "analyze", "compare", done_campaign, "-f", "csv", "--stat", "final")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["condition"] for r in rows] == ["grpo+none", "maxrl+gtpo"]
    assert float(rows[1]["p_value"]) == pytest.approx(0.035099, abs=1e-6)
    assert rows[0]["seeds"] == "42 101 202"
    code, out, _ = invoke(app, "analyze", "compare", done_campaign, "-f", "json", "--test", "wilcoxon",
                          "--ci", "bootstrap")
    data = json.loads(out)
    assert code == 0 and data[1]["test"] == "Wilcoxon signed-rank" and data[1]["ci"] == "bootstrap"


def test_compare_to_file_and_errors(app: typer.Typer, done_campaign: Path, tmp_path: Path) -> None:
    target = tmp_path / "cmp.md"
    code, _, _ = invoke(app, "analyze", "compare", done_campaign, "-f", "md", "--out", target)
    assert code == 0 and target.read_text().startswith("| condition |")
    code, _, err = invoke(app, "analyze", "compare", done_campaign, "--metric", "acc")
    assert code == 2 and "unknown metric 'acc'; available:" in err and "correct_rate" in err
    assert "Traceback" not in err
    code, _, err = invoke(app, "analyze", "compare", tmp_path / "missing")
    assert code == 2 and "no such file" in err
    code, _, err = invoke(app, "analyze", "compare", done_campaign, "--out", target)
    assert code == 2 and "--out needs" in err


def test_export_every_format(app: typer.Typer, running_campaign: Path) -> None:
    code, out, _ = invoke(app, "analyze", "export", running_campaign)  # csv by default
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 6 and rows[0]["final_eval.accuracy"] == "0.30000000000000004"
    code, out, _ = invoke(app, "analyze", "export", running_campaign, "-f", "json")
    assert code == 0 and [r["status"] for r in json.loads(out)][3:] == ["running", "failed", "pending"]
    code, out, _ = invoke(app, "analyze", "export", running_campaign, "-f", "md")
    assert code == 0 and out.count("\n") == 8
    code, out, _ = invoke(app, "analyze", "export", running_campaign, "-f", "table")
    assert code == 0 and "grpo+none_s42" in out


def test_diff_every_format(app: typer.Typer, done_campaign: Path) -> None:
    a, b = done_campaign / "runs/grpo+none_s42", done_campaign / "runs/maxrl+gtpo_s42"
    code, out, _ = invoke(app, "analyze", "diff", a, b)
    assert code == 0 and "algorithm.advantage_mode" in out and "maxrl" in out
    code, out, _ = invoke(app, "analyze", "diff", a, b, "-f", "json")
    assert code == 0 and json.loads(out)["run_b"]["name"] == "maxrl+gtpo_s42"
    code, out, _ = invoke(app, "analyze", "diff", a, b, "-f", "md")
    assert code == 0 and "| lora.rank | 16 | 8 |" in out
    code, out, _ = invoke(app, "analyze", "diff", a, b, "-f", "csv")
    assert code == 0 and out.startswith("section,key,a,b")


def test_plot_command(app: typer.Typer, done_campaign: Path, tmp_path: Path) -> None:
    code, out, err = invoke(app, "analyze", "plot", done_campaign, "--metrics", "correct_rate",
                            "mean_reward", "--dpi", "40", "--smooth", "0.5")
    target = done_campaign / "analysis" / "correct_rate-mean_reward.png"
    assert code == 0, err
    assert "wrote" in out and png_size(target) == (400, 140)
    svg = tmp_path / "fig.svg"
    code, _, err = invoke(app, "analyze", "plot", done_campaign, "-m", "loss,correct_rate",
                          "--style", "dark", "--out", svg)
    assert code == 0, err
    assert svg.read_text().rstrip().endswith("</svg>")
    code, _, err = invoke(app, "analyze", "plot", done_campaign, "-m", "nope")
    assert code == 2 and "unknown metric 'nope'" in err


def test_status_command(app: typer.Typer, running_campaign: Path) -> None:
    code, out, _ = invoke(app, "status", running_campaign.parent)
    assert code == 0 and "campaign ablation" in out and "maxrl+gtpo_s42" in out and "pending" in out
    code, _, err = invoke(app, "status", running_campaign / "nowhere")
    assert code == 2 and "no such file" in err


def test_no_torch_import(done_campaign: Path, tmp_path: Path) -> None:
    # A fresh interpreter runs the commands (the real `retrain` app when it imports, else ours)
    # and then checks that torch was never imported.
    script = textwrap.dedent(f"""
        import sys
        import typer
        try:
            from retrain.cli.app import app
        except ImportError:
            from retrain.cli import analyze_cmd
            app = typer.Typer()
            app.callback()(lambda: None)
            analyze_cmd.register(app)
        camp = {str(done_campaign)!r}
        for args in (["analyze", "compare", camp, "-f", "json"], ["status", camp],
                     ["analyze", "export", camp], ["analyze", "plot", camp, "--dpi", "10"],
                     ["analyze", "diff", camp + "/runs/grpo+none_s42", camp + "/runs/maxrl+gtpo_s42"]):
            try:
                app(args, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, (args, exc.code)
        heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
        print("HEAVY=" + ",".join(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout
