"""retrain.analysis.phase_report on a hand-made consolidated_metrics.json: 2 rounds x 2 groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.analysis.loading import AnalysisError
from retrain.analysis.phase_report import (
    forgetting_matrix,
    forgetting_summary,
    load_consolidated,
    plot_training_metrics,
    render_phase_report_md,
)

from .test_plots import png_size


def phase(index: int, rnd: int, name: str, evals: dict[str, tuple[float, float]],
          weight_change: float | None = 0.01) -> dict[str, object]:
    return {"index": index, "round": rnd, "name": name, "phase_index": ["plus", "minus"].index(name),
            "start_step": 1 + 10 * index, "end_step": 10 + 10 * index,
            "success_rate": 0.5 + 0.1 * rnd - 0.2 * (name == "minus"),
            "mean_response_length": 12.0 + index, "max_response_length": 30 + index,
            "loss": 0.1, "grad_norm": 1.0, "weight_change": weight_change,
            "eval": {g: {"accuracy": acc, "accuracy_se": se} for g, (acc, se) in evals.items()}}


# Accuracy after each phase:   plus  minus
#   r1:plus                    0.80  0.10
#   r1:minus                   0.40  0.50
#   r2:plus                    0.70  0.30
#   r2:minus (final)           0.55  0.65
DOC = {"run": "continual_s42", "rounds": 2, "groups": ["plus", "minus"], "phases": [
    phase(0, 1, "plus", {"plus": (0.80, 0.04), "minus": (0.10, 0.03)}, weight_change=None),
    phase(1, 1, "minus", {"plus": (0.40, 0.05), "minus": (0.50, 0.05)}),
    phase(2, 2, "plus", {"plus": (0.70, 0.05), "minus": (0.30, 0.05)}),
    phase(3, 2, "minus", {"plus": (0.55, 0.05), "minus": (0.65, 0.05)}),
]}


def test_forgetting_matrix() -> None:
    rows, cols, matrix = forgetting_matrix(DOC)
    assert rows == ["r1:plus", "r1:minus", "r2:plus", "r2:minus"]
    assert cols == ["plus", "minus"]
    assert matrix == [[0.80, 0.10], [0.40, 0.50], [0.70, 0.30], [0.55, 0.65]]


def test_forgetting_by_hand() -> None:
    summary = forgetting_summary(DOC)
    assert summary.final_phase == "r2:minus" and summary.last_trained == "minus"
    plus, minus = summary.groups
    # plus: last trained in r2:plus (0.70), final 0.55: drop 0.70 − 0.55 = 0.15;
    #       best earlier max(0.80, 0.40, 0.70) = 0.80 (r1:plus): forgetting 0.80 − 0.55 = 0.25
    assert (plus.trained_in, plus.after_training, plus.final) == ("r2:plus", 0.70, 0.55)
    assert plus.drop == pytest.approx(0.15) and plus.forgetting == pytest.approx(0.25)
    assert plus.best_earlier_in == "r1:plus"
    # minus: trained by the final phase, drop 0; best earlier max(0.10, 0.50, 0.30) = 0.50,
    #        forgetting 0.50 − 0.65 = −0.15 (it improved)
    assert minus.drop == 0.0 and minus.forgetting == pytest.approx(-0.15)
    # mean over the groups except the last trained (minus): plus alone
    assert summary.mean_forgetting == pytest.approx(0.25)


def test_missing_eval_and_single_phase() -> None:
    doc = {**DOC, "phases": [DOC["phases"][0], {**DOC["phases"][1], "eval": {"plus": {"accuracy": 0.4}}}]}
    rows, cols, matrix = forgetting_matrix(doc)
    assert matrix == [[0.80, 0.10], [0.40, None]]
    summary = forgetting_summary(doc)
    assert summary.groups[1].final is None and summary.groups[1].forgetting is None
    assert summary.mean_forgetting == pytest.approx(0.80 - 0.40)
    one = forgetting_summary({**DOC, "phases": DOC["phases"][:1]})
    assert one.mean_forgetting is None and one.groups[0].forgetting is None  # no earlier phase


def test_markdown() -> None:
    md = render_phase_report_md(DOC)
    assert md.startswith("## Phase report\n")
    assert "| after phase | plus | minus |" in md
    assert "| r1:plus | 0.800 ± 0.040 | 0.100 ± 0.030 |" in md
    assert "| r2:minus | 0.550 ± 0.050 | 0.650 ± 0.050 |" in md
    assert "| plus | r2:plus | 0.700 | 0.550 | +0.150 | 0.800 (r1:plus) | +0.250 |" in md
    assert "| minus | r2:minus | 0.650 | 0.650 | +0.000 | 0.500 (r1:minus) | -0.150 |" in md
    assert "except minus (trained last): +0.250." in md
    assert "No phase has completed" in render_phase_report_md({**DOC, "phases": []})


def test_png_is_written(tmp_path: Path) -> None:
    target = plot_training_metrics(DOC, tmp_path, dpi=50)
    assert target == tmp_path / "plots" / "training_metrics.png"
    width, height = png_size(target)  # 11 x 8 inches at 50 dpi
    assert (width, height) == (550, 400) and target.stat().st_size > 10_000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    explicit = plot_training_metrics({**DOC, "phases": [{**p, "weight_change": None} for p in DOC["phases"]]},
                                     tmp_path / "x.png", dpi=50)
    assert explicit == tmp_path / "x.png" and png_size(explicit) == (550, 400)


def test_load_and_schema_errors(tmp_path: Path) -> None:
    (tmp_path / "consolidated_metrics.json").write_text(json.dumps(DOC))
    assert load_consolidated(tmp_path).phases[3].label == "r2:minus"
    bad = {**DOC, "phases": [{**DOC["phases"][0], "round": "one", "eval": []}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(AnalysisError, match=r"phases\[0\]\.round: expected an integer") as info:
        load_consolidated(tmp_path / "bad.json")
    assert "phases[0].eval: expected an object" in str(info.value)
    with pytest.raises(AnalysisError, match="no such file"):
        load_consolidated(tmp_path / "missing")
    with pytest.raises(AnalysisError, match="no completed phase"):
        plot_training_metrics({**DOC, "phases": []}, tmp_path)
