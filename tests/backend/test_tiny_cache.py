"""ensure_tiny_model: two processes building one entry at once yield one valid entry; model CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from retrain.backend.local.model import load_model_and_tokenizer
from retrain.backend.local.tiny import META_FILE

REPO = Path(__file__).resolve().parents[2]

BUILD = """
import sys
from pathlib import Path
from retrain.backend.local.tiny import ensure_tiny_model
from retrain.config.schema import DataConfig
from retrain.tasks import build_task
task = build_task(DataConfig(), 0)
pairs = lambda c, n: [(p.prompt, p.answer) for p in task.train_problems(c, n)]
ev = [(p.prompt, p.answer) for p in task.eval_problems(20)]
path = ensure_tiny_model("tiny", pairs_fn=pairs, task_key={"task": "arithmetic"}, steps=40,
                         lr=3e-3, batch_size=16, seed=0, cache_dir=Path(sys.argv[1]),
                         eval_pairs=ev, progress=False)
print(path)
"""


def test_concurrent_builds_give_one_entry(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    entries = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 1 and entries[0].startswith("tiny-")  # no temp dirs left behind
    entry = tmp_path / "models" / entries[0]
    meta = json.loads((entry / META_FILE).read_text())
    assert meta["preset"] == "tiny" and meta["key"] == entry.name.split("-")[1]
    assert 0.0 <= meta["warmup_accuracy"] <= 1.0 and meta["build_time_s"] > 0
    model, tok, _ = load_model_and_tokenizer(str(entry), dtype="float32", device="cpu",
                                             local_files_only=True, trust_remote_code=False)
    assert tok.decode(tok("1 + 2 =")["input_ids"], skip_special_tokens=True) == "1 + 2 ="

    from retrain.cli.app import app

    result = CliRunner().invoke(app, ["model", "info", str(entry), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["retrain"]["key"] == meta["key"]
    bad = CliRunner().invoke(app, ["model", "info", str(tmp_path / "nope")])
    assert bad.exit_code == 2
