"""`retrain analyze weight-change` and retrain.analysis.weight_change: hand-worked adapters built
with numpy, the error paths of the CLI, and one real peft adapter checked against peft's merge."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from safetensors.numpy import save_file
from typer.testing import CliRunner

from retrain.analysis.loading import AnalysisError
from retrain.analysis.weight_change import (
    module_scale,
    product_norm,
    render_weight_change,
    weight_change,
)
from retrain.cli import analyze_cmd

from .conftest import command_app

runner = CliRunner()
Q = "model.layers.0.self_attn.q_proj"
K = "model.layers.0.self_attn.k_proj"


def write_adapter(path: Path, modules: dict[str, tuple[list, list]], **config: object) -> Path:
    """An adapter dir as peft saves it: `base_model.model.<module>.lora_{A,B}.weight` + config."""
    path.mkdir(parents=True)
    tensors = {}
    for module, (a, b) in modules.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.array(a, dtype=np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.array(b, dtype=np.float32)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def write_base(path: Path, weights: dict[str, np.ndarray]) -> Path:
    path.mkdir(parents=True)
    save_file({f"{m}.weight": w.astype(np.float32) for m, w in weights.items()},
              str(path / "model.safetensors"))
    return path


# r = 1, alpha = 2: scale 2.
#   A: q_proj ΔW = 2·[[1],[0]]@[[1,0]] = [[2,0],[0,0]]              ‖ΔW‖ = 2
#   B: q_proj ΔW = 2·[[1],[0]]@[[0,1]] = [[0,2],[0,0]]              ‖ΔW‖ = 2
#   change = ‖[[-2,2],[0,0]]‖ = √8 = 2.828; W0 = I, ‖W0‖ = √2, relative = √8/√2 = 2
#   k_proj is the same in both: ΔW = 2·[[0],[1]]@[[1,1]] = [[0,0],[2,2]], ‖ΔW‖ = √8, change 0;
#   W0 = 2·I, ‖W0‖ = √8.
#   total: change √(8 + 0) = √8; ‖ΔW_A‖ = √(4 + 8) = √12; relative √8 / √(2 + 8) = √0.8 = 0.894
K_FACTORS = ([[1, 1]], [[0], [1]])


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    a = write_adapter(tmp_path / "a", {Q: ([[1, 0]], [[1], [0]]), K: K_FACTORS})
    b = write_adapter(tmp_path / "b", {Q: ([[0, 1]], [[1], [0]]), K: K_FACTORS})
    base = write_base(tmp_path / "base", {Q: np.eye(2), K: 2 * np.eye(2)})
    return a, b, base


def test_hand_worked_change(pair: tuple[Path, Path, Path]) -> None:
    a, b, base = pair
    result = weight_change(a, b, base=base)
    by = {m.module: m for m in result.modules}
    assert by[Q].norm_a == pytest.approx(2.0) and by[Q].norm_b == pytest.approx(2.0)
    assert by[Q].change == pytest.approx(math.sqrt(8))
    assert by[Q].base_norm == pytest.approx(math.sqrt(2)) and by[Q].relative == pytest.approx(2.0)
    assert by[K].change == 0.0 and by[K].norm_a == pytest.approx(math.sqrt(8))
    assert by[K].relative == 0.0
    assert result.change == pytest.approx(math.sqrt(8))
    assert result.norm_a == pytest.approx(math.sqrt(12))
    assert result.base_norm == pytest.approx(math.sqrt(10))
    assert result.relative == pytest.approx(math.sqrt(0.8))


def test_identical_adapters_change_exactly_zero(pair: tuple[Path, Path, Path]) -> None:
    a, _, base = pair
    result = weight_change(a, a, base=base)
    assert result.change == 0.0 and result.relative == 0.0
    assert result.norm_a == result.norm_b == pytest.approx(math.sqrt(12))


def test_no_base_gives_absolute_norms_and_says_so(pair: tuple[Path, Path, Path]) -> None:
    a, b, _ = pair
    result = weight_change(a, b)  # the configs name no base_model_name_or_path
    assert result.base is None and result.relative is None and result.base_norm is None
    assert result.change == pytest.approx(math.sqrt(8))
    assert all(m.relative is None for m in result.modules)
    assert "no base model" in result.base_source and "--base DIR" in result.base_source
    md = render_weight_change(result, "md", per_layer=True)
    assert isinstance(md, str) and "no base model" in md and "‖W0‖_F" not in md
    data = json.loads(str(render_weight_change(result, "json")))
    assert data["total"]["relative"] is None and "modules" not in data


def test_base_from_adapter_config_and_sharded(tmp_path: Path) -> None:
    # A base saved in two shards with an index, named by base_model_name_or_path.
    base = tmp_path / "base"
    base.mkdir()
    save_file({f"{Q}.weight": np.eye(2, dtype=np.float32)}, str(base / "model-00001-of-00002.safetensors"))
    save_file({f"{K}.weight": 2 * np.eye(2, dtype=np.float32)}, str(base / "model-00002-of-00002.safetensors"))
    (base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        f"{Q}.weight": "model-00001-of-00002.safetensors",
        f"{K}.weight": "model-00002-of-00002.safetensors"}}))
    a = write_adapter(tmp_path / "a", {Q: ([[1, 0]], [[1], [0]]), K: K_FACTORS},
                      base_model_name_or_path=str(base))
    b = write_adapter(tmp_path / "b", {Q: ([[0, 1]], [[1], [0]]), K: K_FACTORS},
                      base_model_name_or_path=str(base))
    result = weight_change(a, b)
    assert result.base == base and "base_model_name_or_path" in result.base_source
    assert result.relative == pytest.approx(math.sqrt(0.8))


def test_rslora_and_patterns_scale_like_peft(tmp_path: Path) -> None:
    # r = 4, alpha = 8: B@A = [[1,0],[0,0]]; rslora scale 8/√4 = 4 (plain LoRA: 8/4 = 2)
    a4 = [[1, 0], [0, 0], [0, 0], [0, 0]]
    b4 = [[1, 0, 0, 0], [0, 0, 0, 0]]
    rs = write_adapter(tmp_path / "rs", {Q: (a4, b4)}, r=4, lora_alpha=8, use_rslora=True)
    plain = write_adapter(tmp_path / "plain", {Q: (a4, b4)}, r=4, lora_alpha=8)
    result = weight_change(plain, rs)
    assert result.norm_a == pytest.approx(2.0) and result.norm_b == pytest.approx(4.0)
    assert result.change == pytest.approx(2.0)  # ‖(4 − 2)·[[1,0],[0,0]]‖; ranks may differ too
    # alpha_pattern "k_proj": 6 → k_proj scale 6/1; rank_pattern must agree with the tensors
    assert module_scale({"r": 1, "lora_alpha": 2, "alpha_pattern": {"k_proj": 6}}, K, 1) == 6.0
    assert module_scale({"r": 1, "lora_alpha": 2, "alpha_pattern": {"k_proj": 6}}, Q, 1) == 2.0
    assert module_scale({"r": 1, "lora_alpha": 2, "rank_pattern": {"q_proj": 2}}, Q, 2) == 1.0
    with pytest.raises(AnalysisError, match="rank 2 but its lora_A has 1 rows"):
        module_scale({"r": 1, "lora_alpha": 2, "rank_pattern": {"q_proj": 2}}, Q, 1)


def test_bfloat16_adapter_is_read_without_torch(tmp_path: Path, pair: tuple[Path, Path, Path]) -> None:
    # The same q_proj/k_proj factors as adapter A, stored as bfloat16 (the high 16 bits of fp32).
    src = pair[0]
    path = tmp_path / "bf16"
    path.mkdir()
    (path / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    header, blobs, offset = {}, b"", 0
    for key, (a, b) in {Q: ([[1, 0]], [[1], [0]]), K: K_FACTORS}.items():
        for which, value in (("A", a), ("B", b)):
            raw = (np.array(value, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            header[f"base_model.model.{key}.lora_{which}.weight"] = {
                "dtype": "BF16", "shape": list(np.array(value).shape), "data_offsets": [offset, offset + len(raw)]}
            blobs, offset = blobs + raw, offset + len(raw)
    text = json.dumps(header).encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + blobs)
    result = weight_change(src, path)  # 1, 0 and 2 are exact in bfloat16: the same adapter
    assert result.change == 0.0 and result.norm_b == pytest.approx(math.sqrt(12))


def test_product_norm_matches_dense() -> None:
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(50, 3)), rng.normal(size=(3, 40))
    assert product_norm(left, right) == pytest.approx(np.linalg.norm(left @ right), rel=1e-12)


def test_errors_name_the_problem(tmp_path: Path, pair: tuple[Path, Path, Path]) -> None:
    a, b, _ = pair
    with pytest.raises(AnalysisError, match="is not a PEFT adapter dir"):
        weight_change(tmp_path, b)
    other = write_adapter(tmp_path / "other", {Q: ([[1, 0]], [[1], [0]]),
                                               "model.layers.0.self_attn.v_proj": K_FACTORS})
    # sorted module names: k_proj (only in A) comes before v_proj (only in other)
    with pytest.raises(AnalysisError, match=rf"{K} is in A .* but not in B \(1 more differ\)"):
        weight_change(a, other)
    wide = write_adapter(tmp_path / "wide", {Q: ([[1, 0, 0]], [[1], [0]]), K: K_FACTORS})
    with pytest.raises(AnalysisError, match=rf"module {Q} has shape \(2, 2\) in A but \(2, 3\) in B"):
        weight_change(a, wide)
    with pytest.raises(AnalysisError, match="--base .*: not a model dir"):
        weight_change(a, b, base=tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"garbage!garbage")  # a header length past the end
    with pytest.raises(AnalysisError, match="not a safetensors file"):
        weight_change(a, b, base=bad)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return command_app(analyze_cmd)


def test_cli_formats_and_run_dir(app: typer.Typer, pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, b, base = pair
    run = tmp_path / "run"
    run.mkdir()
    b.rename(run / "adapter")  # a run dir stands for its adapter/
    result = runner.invoke(app, ["analyze", "weight-change", str(a), str(run), "--base", str(base)])
    assert result.exit_code == 0, result.output
    assert "total (2 modules)" in result.stdout and "2.828" in result.stdout and Q not in result.stdout
    result = runner.invoke(app, ["analyze", "weight-change", str(a), str(run), "--base", str(base),
                                 "--per-layer", "-f", "csv"])
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 4 and lines[1].startswith("total,")
    assert lines[0] == "module,shape,rank_a,rank_b,norm_a,norm_b,change,base_norm,relative"
    out = tmp_path / "wc.json"
    result = runner.invoke(app, ["analyze", "weight-change", str(a), str(run), "--base", str(base),
                                 "--per-layer", "-f", "json", "--out", str(out)])
    data = json.loads(out.read_text())
    assert result.exit_code == 0 and data["total"]["relative"] == pytest.approx(math.sqrt(0.8))
    assert [m["module"] for m in data["modules"]] == [K, Q]


def test_cli_errors_exit_2(app: typer.Typer, pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, _, _ = pair
    other = write_adapter(tmp_path / "other", {Q: ([[1, 0]], [[1], [0]])})
    for args, message in (([str(tmp_path / "missing"), str(a)], "adapter directory not found"),
                          ([str(tmp_path), str(a)], "is not a PEFT adapter directory"),
                          ([str(a), str(other)], f"{K} is in A")):
        result = runner.invoke(app, ["analyze", "weight-change", *args])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_module_does_not_import_torch(pair: tuple[Path, Path, Path]) -> None:
    a, b, base = pair
    code = (f"import sys; from retrain.analysis.weight_change import weight_change, render_weight_change\n"
            f"r = weight_change({str(a)!r}, {str(b)!r}, base={str(base)!r}); "
            f"render_weight_change(r, 'table', per_layer=True)\n"
            f"print(round(r.relative, 6), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(round(math.sqrt(0.8), 6)), "False"]


def test_real_peft_adapter_matches_merged_weights(tmp_path: Path) -> None:
    """Two adapters saved by peft (rank 4, and rank 8 with rslora) on a random tiny Llama: the
    change equals ‖merged_B − merged_A‖_F of peft's own merge_and_unload, module by module."""
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from retrain.backend.local.lora import apply_lora
    from retrain.backend.local.tiny import build_char_tokenizer, build_random_model
    from retrain.config.schema import LoraConfig

    torch.set_num_threads(1)
    base_dir = tmp_path / "base"
    build_random_model("tiny", build_char_tokenizer(), seed=0).save_pretrained(base_dir)

    def load_base() -> LlamaForCausalLM:
        return LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)

    for name, seed, cfg in (("a", 1, LoraConfig(rank=4, alpha=8.0)),
                            ("b", 2, LoraConfig(rank=8, alpha=8.0, use_rslora=True))):
        torch.manual_seed(seed)
        model = apply_lora(load_base(), cfg)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname:  # peft starts B at 0; the adapter must move the weights
                    p.normal_(0.0, 0.05)
        model.save_pretrained(str(tmp_path / name))

    def merged(name: str) -> dict:
        peft_model = PeftModel.from_pretrained(load_base(), str(tmp_path / name))
        return {k: v.double() for k, v in peft_model.merge_and_unload().state_dict().items()}

    w0 = {k: v.double() for k, v in load_base().state_dict().items()}
    ma, mb = merged("a"), merged("b")
    result = weight_change(tmp_path / "a", tmp_path / "b")  # base from base_model_name_or_path
    assert result.base is not None and len(result.modules) == 2 * 7  # 2 layers x 7 projections
    for m in result.modules:
        key = f"{m.module}.weight"
        assert m.change == pytest.approx(float((mb[key] - ma[key]).norm()), rel=1e-4)
        assert m.norm_a == pytest.approx(float((ma[key] - w0[key]).norm()), rel=1e-4)
        assert m.norm_b == pytest.approx(float((mb[key] - w0[key]).norm()), rel=1e-4)
        assert m.base_norm == pytest.approx(float(w0[key].norm()), rel=1e-9)
        assert (m.rank_a, m.rank_b) == (4, 8)
    keys = [f"{m.module}.weight" for m in result.modules]
    total = math.sqrt(sum(float((mb[k] - ma[k]).norm()) ** 2 for k in keys))
    assert result.change == pytest.approx(total, rel=1e-4)
    assert result.relative == pytest.approx(
        total / math.sqrt(sum(float(w0[k].norm()) ** 2 for k in keys)), rel=1e-4)
