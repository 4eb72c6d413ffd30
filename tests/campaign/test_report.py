"""The end-of-campaign report: summary.md and the console lead with each condition's gain over
its own initial eval (hand-worked numbers as in tests/analysis/test_gain.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from retrain.campaign.manifest import Manifest
from retrain.campaign.report import write_comparison
from retrain.config.schema import AuditConfig

# Per-seed gains; baseline grpo+none. maxrl+none: mean 0.35, s = 0.05,
# 95% t half width 4.302653 · 0.05 / sqrt 3 = 0.124207 → [0.226, 0.474].
GAINS = {"grpo+none": (0.10, 0.20, 0.30), "maxrl+none": (0.30, 0.35, 0.40)}


def _campaign(out: Path) -> Manifest:
    runs: dict[str, Any] = {}
    for cond, gains in GAINS.items():
        for seed, gain in zip((1, 2, 3), gains, strict=True):
            name = f"{cond}_s{seed}"
            run_dir = out / "runs" / name
            run_dir.mkdir(parents=True)
            start = {"accuracy": 0.5, "accuracy_se": 0.022, "size": 500, "mean_length": 6.0}
            end = {**start, "accuracy": 0.5 + gain, "accuracy_se": 0.021}
            rows = [{"step": 0, "condition": cond, **{f"eval_{k}": v for k, v in start.items()}}]
            rows += [{"step": s, "condition": cond, "loss": 1.0 / s, "mean_reward": 0.1 * s,
                      "correct_rate": 0.1 * s} for s in (1, 2, 3)]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (run_dir / "summary.json").write_text(json.dumps({
                "run": name, "condition": cond, "seed": seed, "status": "done",
                "initial_eval": start, "final_eval": end,
                "deltas": {"accuracy": gain, "sampled_accuracy": None, "mean_length": 0.0}}))
            runs[name] = {"status": "done", "condition": cond, "seed": seed,
                          "run_dir": f"runs/{name}"}
    return Manifest(out / "manifest.json", {"campaign": "t", "spec_hash": "abc", "runs": runs})


def test_summary_md_and_console_lead_with_the_gain_table(tmp_path: Path) -> None:
    manifest = _campaign(tmp_path)
    spec = SimpleNamespace(name="t", base=SimpleNamespace(campaign=SimpleNamespace(compare_last_n=10), audit=AuditConfig()))
    shown: list[Any] = []
    rows = write_comparison(spec, tmp_path, manifest, say=lambda _: None,  # type: ignore[arg-type]
                            show=shown.append)
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("# Campaign t")
    assert text.index("## Gain over each condition's own initial eval") < text.index("## Training curves")
    assert "| maxrl+none | 3 | 0.500 ± 0.022 | 0.850 ± 0.021 | +0.350 [0.226, 0.474] | +0.150 |" in text
    assert "- **maxrl+none**: learned: gain +0.350 [0.226, 0.474]" in text
    # baseline gains 0.1, 0.2, 0.3: half width 0.248414 → [-0.048, 0.448] includes 0
    assert "- **grpo+none (baseline)**: no detectable change: gain +0.200 [-0.048, 0.448]" in text
    # the manifest's comparison rows carry the gain row
    assert rows is not None and rows[1]["condition"] == "maxrl+none"
    assert abs(rows[1]["gain"]["gain_mean"] - 0.35) < 1e-12
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    for item in shown:
        console.print(item)
    out = buf.getvalue()
    assert out.index("conditions: held-out greedy accuracy, gain over own initial eval") < \
        out.index("training correct_rate")
    row = next(line for line in out.splitlines() if line.startswith("maxrl+none "))
    assert row.split() == ["maxrl+none", "0.500±0.022", "0.850±0.021", "+0.350", "[0.226,0.474]",
                           "+0.150", "0.035"]
    assert "3 seeds" in out and "summary.md" in out
    # the console table fits an 80-column terminal
    narrow = io.StringIO()
    Console(file=narrow, width=80, color_system=None).print(shown[0])
    assert "…" not in narrow.getvalue()
