"""The multi-phase section of a campaign's summary.md, on hand-made consolidated_metrics.json
files: per condition, forgetting and final accuracy over seeds, and the mean forgetting matrix."""

from __future__ import annotations

import json
from pathlib import Path

from retrain.analysis.loading import RunData
from retrain.analysis.phase_compare import phase_comparison_md


def _doc(plus: list[float], minus: list[float]) -> dict[str, object]:
    """Two rounds of plus, minus; accuracies of each group after each of the 4 phases."""
    names = ["plus", "minus", "plus", "minus"]
    return {"run": "r", "rounds": 2, "groups": ["plus", "minus"], "phases": [
        {"index": i, "round": 1 + i // 2, "name": n, "phase_index": i % 2, "start_step": 2 * i + 1,
         "end_step": 2 * i + 2, "success_rate": 0.5, "mean_response_length": 5.0,
         "max_response_length": 8, "loss": 0.1, "grad_norm": 1.0, "weight_change": 0.01,
         "eval": {"plus": {"accuracy": plus[i], "accuracy_se": 0.01},
                  "minus": {"accuracy": minus[i], "accuracy_se": 0.01}}}
        for i, n in enumerate(names)]}


def _run(root: Path, cond: str, seed: int, doc: dict[str, object] | None) -> RunData:
    d = root / f"{cond}_s{seed}"
    d.mkdir(parents=True)
    if doc is not None:
        (d / "consolidated_metrics.json").write_text(json.dumps(doc))
    return RunData(name=d.name, run_dir=d, condition=cond, seed=seed, status="done")


def test_forgetting_and_final_accuracy_over_seeds(tmp_path: Path) -> None:
    # seed 1: plus 0.8 0.4 0.7 0.5 -> forgetting of plus = 0.8 - 0.5 = 0.3 (minus is trained last)
    # seed 2: plus 0.6 0.4 0.6 0.5 -> 0.6 - 0.5 = 0.1; mean 0.2, t-interval 0.2 ± 12.706 * 0.1/√2
    runs = [_run(tmp_path, "a", 1, _doc([0.8, 0.4, 0.7, 0.5], [0.1, 0.5, 0.3, 0.7])),
            _run(tmp_path, "a", 2, _doc([0.6, 0.4, 0.6, 0.5], [0.1, 0.5, 0.3, 0.5])),
            _run(tmp_path, "b", 1, None)]  # not a multi-phase run: left out
    md = phase_comparison_md(runs)
    assert md is not None
    # final accuracy over groups: (0.5 + 0.7)/2 = 0.6 and (0.5 + 0.5)/2 = 0.5 -> 0.55 ± 12.706 * 0.0707
    assert "| a | 2 | 0.55 ±0.64 | 0.2 ±1.3 |" in md
    assert "| r1:plus | 0.7 ±1.3 | 0.1 ±0 |" in md  # (0.8 + 0.6)/2 ± 12.706 * 0.1414/√2
    assert "Forgetting matrix: b" not in md


def test_no_section_without_multi_phase_runs(tmp_path: Path) -> None:
    assert phase_comparison_md([_run(tmp_path, "a", 1, None)]) is None
