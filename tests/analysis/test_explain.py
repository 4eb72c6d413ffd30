"""`retrain explain` without a model: a hand-worked two-completion step written by the trainer's
recorder and read back (rows, stages, header, selection), the HTML/CSV/JSON views, the checks
that a wrong record is caught, and that stale or missing steps give one clear error."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrain.algo.pipeline import TokenBatch, compute_advantages
from retrain.analysis.explain import explain_files, explain_step, load_record, recompute, visible
from retrain.analysis.explain_render import colour, to_csv, to_html, to_json
from retrain.analysis.loading import AnalysisError
from retrain.backend.base import Rollouts
from retrain.trainer.explain_record import encode_record, explain_due, explain_path

SETTINGS = {"advantage_mode": "grpo", "scale": "none", "eps": 1e-6, "transform_mode": "gtpo_hicra",
            "uncertainty_kind": "surprisal", "gtpo_beta": 0.5, "gtpo_max_weight": None,
            "hicra_alpha": 0.2}


def _rollouts() -> Rollouts:
    # completion 0 "ab c": tokens "ab" | " c", the first a planning token; completion 1 "x\n"
    return Rollouts(
        prompt_ids=[[1], [1]], completion_ids=[[5, 6], [7, 8]], completion_text=["ab c", "x\n"],
        truncated=np.array([False, True]),
        logprob_T=np.array([-1.0, -3.0, -2.0, -2.0], dtype=np.float32),
        entropy_T=np.array([0.5, 1.5, 1.0, 1.0], dtype=np.float32),
        offsets=np.array([0, 2, 4], dtype=np.int64),
        token_spans=[np.array([[0, 2], [2, 4]]), np.array([[0, 1], [1, 2]])],
        n_per_prompt=2, temperature=1.0, top_p=1.0, num_generated_tokens=4)


def write_step(run_dir: Path, step: int = 4, *, tamper: float = 0.0) -> np.ndarray:
    """Record one step as the trainer does: the pipeline's adv_T (plus `tamper` on token 0)."""
    ro = _rollouts()
    planning_T = np.array([True, False, False, False])
    reward_N = np.array([1.0, 0.0])
    batch = TokenBatch(logprob_T=ro.logprob_T, entropy_T=ro.entropy_T, planning_T=planning_T,
                       offsets=ro.offsets, reward_N=reward_N, group_N=np.array([0, 0]))
    adv_T, _ = compute_advantages(batch, sepa_lambda=0.0, **SETTINGS)  # type: ignore[arg-type]
    adv_T[0] += tamper
    data = encode_record(step, settings=SETTINGS, group_size=2, prompts=["1+1="], rollouts=ro,
                         reward_N=reward_N, planning_T=planning_T, adv_T=adv_T, sepa_lambda=0.0)
    path = explain_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    log_steps(run_dir, step)
    return adv_T


def log_steps(run_dir: Path, last: int) -> None:
    """metrics.jsonl of a run that has logged steps 0..last."""
    rows = "".join(f'{{"step": {s}}}\n' for s in range(last + 1))
    (run_dir / "metrics.jsonl").write_text(rows, encoding="utf-8")


def test_hand_worked_step_rows_and_header(tmp_path: Path) -> None:
    write_step(tmp_path)
    ex = explain_step(tmp_path, group=0)
    assert ex.recomputed.matches and ex.record.step == 4
    # scale none: A = r - mean = +0.5 / -0.5.
    # gtpo (beta 0.5), w = 1 + 0.5 (h / mean_h - 1) per completion, h = surprisal:
    #   completion 0: h = [1, 3], mean 2 -> w = [0.75, 1.25] -> A = [0.375, 0.625]
    #   completion 1: h = [2, 2]        -> w = [1, 1]       -> A = [-0.5, -0.5]
    # hicra (alpha 0.2) on the planning token 0: 0.375 + 0.2 * 0.375 = 0.45
    (h,) = ex.headers
    assert (h.prompt, h.rewards, h.episode_adv, h.shown) == ("1+1=", [1.0, 0.0], [0.5, -0.5], [0, 1])
    c0, c1 = ex.completions
    assert [r.text for r in c0.rows] == ["ab", "␣c"] and [r.text for r in c1.rows] == ["x", "⏎"]
    assert [r.planning for r in c0.rows] == [True, False]
    assert [r.surprisal for r in c0.rows] == [1.0, 3.0]
    assert [r.entropy for r in c0.rows] == [0.5, 1.5]
    assert [r.gtpo_weight for r in c0.rows] == pytest.approx([0.75, 1.25])
    assert [list(r.stages) for r in c0.rows] == [["episode", "gtpo", "hicra"]] * 2
    assert [r.stages["episode"] for r in c0.rows] == [0.5, 0.5]
    assert [r.stages["gtpo"] for r in c0.rows] == pytest.approx([0.375, 0.625])
    assert [r.adv for r in c0.rows] == pytest.approx([0.45, 0.625])
    assert [r.adv for r in c1.rows] == pytest.approx([-0.5, -0.5])
    assert [r.uncertainty for r in c1.rows] == [r.pooled for r in c1.rows] == [2.0, 2.0]  # no sepa
    assert (c1.truncated, c1.reward, c1.episode_adv) == (True, 0.0, -0.5)
    assert ex.max_abs_adv == pytest.approx(0.625)


def test_record_keeps_the_trainers_dtypes_and_is_small(tmp_path: Path) -> None:
    write_step(tmp_path)
    rec = load_record(explain_path(tmp_path, 4))
    assert rec.logprob_T.dtype == np.float32 and rec.entropy_T is not None
    assert rec.entropy_T.dtype == np.float32 and rec.adv_T.dtype == np.float64
    with np.load(explain_path(tmp_path, 4)) as z:
        assert z["offsets"].dtype == np.int32 and z["spans_T"].dtype == np.int32
        assert not any(z[k].dtype == object for k in z.files)


def test_default_selection_is_the_first_member_of_the_first_informative_group(tmp_path: Path) -> None:
    write_step(tmp_path)
    assert [c.sequence for c in explain_step(tmp_path).completions] == [0]
    assert [c.sequence for c in explain_step(tmp_path, samples=[1, 1]).completions] == [1]
    with pytest.raises(AnalysisError, match="--sample 5: step 4 has completions 0-1"):
        explain_step(tmp_path, samples=[5])
    with pytest.raises(AnalysisError, match="--group 3"):
        explain_step(tmp_path, group=3)


def test_a_record_that_disagrees_with_the_pipeline_is_reported(tmp_path: Path) -> None:
    write_step(tmp_path, tamper=1e-12)
    rec = recompute(load_record(explain_path(tmp_path, 4)))
    assert not rec.matches and rec.max_abs_diff == pytest.approx(1e-12, rel=0.1)


def test_steps_past_the_last_logged_one_are_not_shown(tmp_path: Path) -> None:
    # a run that recorded step 3, crashed, and was resumed from an earlier checkpoint
    for step in (1, 2, 3):
        write_step(tmp_path, step)
    log_steps(tmp_path, 2)
    assert sorted(explain_files(tmp_path)) == [1, 2]
    assert explain_step(tmp_path).record.step == 2
    with pytest.raises(AnalysisError, match=r"step 3 is not recorded .*recorded steps: 1, 2 "
                                            r"\(logging.explain_every"):
        explain_step(tmp_path, step=3)


def test_no_records_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="no metrics.jsonl"):
        explain_step(tmp_path)
    log_steps(tmp_path, 3)
    with pytest.raises(AnalysisError, match="logging.explain_every"):
        explain_step(tmp_path)
    write_step(tmp_path, 3)  # a restart from scratch removes metrics.jsonl, not explain/
    (tmp_path / "metrics.jsonl").unlink()
    assert explain_files(tmp_path) == {}


def test_explain_due() -> None:
    assert [s for s in range(1, 26) if explain_due(s, every=10, last_step=25)] == [10, 20, 25]
    assert not any(explain_due(s, every=0, last_step=5) for s in range(1, 6))


def test_visible_whitespace() -> None:
    assert visible(" a\tb\n") == "␣a⇥b⏎" and visible("") == "∅"


def test_colour_scale() -> None:
    assert colour(0.0, 2.0) == ("rgb(255,255,255)", "#111")
    assert colour(2.0, 2.0)[0] == "rgb(214,39,40)" and colour(-2.0, 2.0)[0] == "rgb(31,119,180)"
    assert colour(5.0, 2.0) == colour(2.0, 2.0)  # clipped to the step's max |A|
    assert colour(1.0, 0.0)[0] == "rgb(255,255,255)"


def test_views_carry_every_value(tmp_path: Path) -> None:
    write_step(tmp_path)
    ex = explain_step(tmp_path, group=0)
    doc = json.loads(to_json(ex))
    assert doc["matches_recorded"] is True and doc["groups"][0]["rewards"] == [1.0, 0.0]
    assert doc["completions"][0]["tokens"][0]["adv_hicra"] == pytest.approx(0.45)
    rows = list(csv.DictReader(io.StringIO(to_csv(ex))))
    assert [r["token"] for r in rows] == ["ab", "␣c", "x", "⏎"]
    assert float(rows[0]["adv"]) == pytest.approx(0.45) and rows[0]["planning"] == "True"
    page = to_html(ex)
    assert page.count('class="tok plan"') == 1 and page.count('class="tok"') == 3
    assert ">ab</span>" in page and "http" not in page  # self-contained
    assert "A final 0.45" in page  # the tooltip of token 0


def test_cli_table_and_errors(tmp_path: Path) -> None:
    from retrain.cli.app import app

    write_step(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["explain", str(tmp_path), "--group", "0"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "1+1=" in res.stdout and "␣c" in res.stdout and "0.45" in res.stdout
    assert "equal the recorded ones exactly (4 tokens)" in res.stdout
    res = runner.invoke(app, ["explain", str(tmp_path), "--step", "7"])
    assert res.exit_code == 2 and "step 7 is not recorded" in res.stderr and "Traceback" not in res.stderr
    write_step(tmp_path, tamper=0.25)
    res = runner.invoke(app, ["explain", str(tmp_path)])
    assert res.exit_code == 1 and "MISMATCH" in res.stderr


PLUGIN = '''
import numpy as np

def rank_adv(rewards):  # centred ranks
    return np.argsort(np.argsort(rewards)).astype(float) - (len(rewards) - 1) / 2

def halve_planning(adv_T, batch):
    return np.where(batch.planning_T, adv_T / 2, adv_T)
'''


def test_custom_advantage_and_transform_plugins_are_loaded(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A step that named file plugins: explain imports them from the directory it runs in.
    (tmp_path / "myplug.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = {**SETTINGS, "advantage_mode": "myplug.py:rank_adv",
                "transform_mode": "myplug.py:halve_planning"}
    ro = _rollouts()
    planning_T = np.array([True, False, False, False])
    # ranks of rewards [1, 0]: [1, 0] - 0.5 = [0.5, -0.5]; the planning token halved: 0.25
    adv_T = np.array([0.25, 0.5, -0.5, -0.5])
    data = encode_record(2, settings=settings, group_size=2, prompts=["1+1="], rollouts=ro,
                         reward_N=np.array([1.0, 0.0]), planning_T=planning_T, adv_T=adv_T,
                         sepa_lambda=0.0)
    explain_path(tmp_path, 2).parent.mkdir()
    explain_path(tmp_path, 2).write_bytes(data)
    log_steps(tmp_path, 2)
    ex = explain_step(tmp_path, samples=[0])
    assert ex.recomputed.matches
    assert list(ex.recomputed.trace.stages) == ["episode", "custom"]
    assert [r.stages["custom"] for r in ex.completions[0].rows] == [0.25, 0.5]
    monkeypatch.chdir(tmp_path.parent)  # elsewhere the plugin file is not found: one clear error
    with pytest.raises(AnalysisError, match="run `retrain explain` from the directory"):
        explain_step(tmp_path)
