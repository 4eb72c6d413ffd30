"""Planted-spectrum adapters give the planted retention figures and recommendation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrain.squeeze import SqueezeError, analyze_adapter, default_ranks, write_report
from retrain.squeeze.analysis import effective_rank, lora_svd, retention_curve

# Layer 0: s = [8, 4, 2, 1], s² = [64, 16, 4, 1], Σ = 85
#   retention k=1: 64/85 = 0.752941   k=2: 80/85 = 0.941176   k=3: 84/85 = 0.988235   k=4: 1
# Layer 1: s = [1, 1, 1, 1], s² all 1, Σ = 4
#   retention k=1: 0.25   k=2: 0.5   k=3: 0.75   k=4: 1
L0 = [64 / 85, 80 / 85, 84 / 85, 1.0]
L1 = [0.25, 0.5, 0.75, 1.0]


def test_default_ranks() -> None:
    assert default_ranks(1) == [1]
    assert default_ranks(4) == [1, 2, 4]
    assert default_ranks(12) == [1, 2, 4, 8, 12]  # powers of two up to r, plus r
    assert default_ranks(128) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_qr_core_svd_matches_full_svd() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 40)), rng.standard_normal((30, 6))
    full = np.linalg.svd(b @ a, compute_uv=False)[:6]
    svd = lora_svd(a, b)
    np.testing.assert_allclose(svd.s, full, rtol=1e-10)
    np.testing.assert_allclose(svd.left @ np.diag(svd.s) @ svd.right, b @ a, atol=1e-10)


def test_single_layer_figures(make_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = make_adapter(tmp_path / "a", [[8, 4, 2, 1]], rank=4)
    result = analyze_adapter(path, ranks=[1, 2, 3, 4])
    np.testing.assert_allclose(result.mean_retention, L0, rtol=1e-5)
    np.testing.assert_allclose([la.singular_values for la in result.layers][0], [8, 4, 2, 1], rtol=1e-5)
    # 0.941 < 0.95 <= 0.988: rank 3
    assert result.recommended_rank == 3
    # with the default ranks [1, 2, 4] there is no row 3, so the recommendation is 4
    assert analyze_adapter(path).recommended_rank == 4
    # 64/85 = 0.7529 >= 0.75: rank 1
    assert analyze_adapter(path, min_variance=0.75).recommended_rank == 1


def test_two_layers_mean_min_max(planted: Path) -> None:
    result = analyze_adapter(planted, ranks=[1, 2, 3, 4])
    assert (result.source_rank, result.num_layers, result.ranks) == (4, 2, [1, 2, 3, 4])
    # mean k=1: (0.752941 + 0.25) / 2 = 0.501471; k=2: (0.941176 + 0.5) / 2 = 0.720588
    #      k=3: (0.988235 + 0.75) / 2 = 0.869118; k=4: 1
    np.testing.assert_allclose(result.mean_retention, [(x + y) / 2 for x, y in zip(L0, L1, strict=True)], rtol=1e-5)
    np.testing.assert_allclose(result.min_retention, L1, rtol=1e-5)
    np.testing.assert_allclose(result.max_retention, L0, rtol=1e-5)
    assert result.recommended_rank == 4  # mean only reaches 0.95 at k = 4
    assert analyze_adapter(planted, ranks=[1, 2, 3, 4], min_variance=0.85).recommended_rank == 3
    # layer floor: mean 0.7206 >= 0.7 at k=2 but the worst layer has 0.5 < 0.6; k=3 has 0.75
    assert analyze_adapter(planted, ranks=[1, 2, 3], min_variance=0.7).recommended_rank == 2
    assert analyze_adapter(planted, ranks=[1, 2, 3], min_variance=0.7, min_layer=0.6).recommended_rank == 3
    # layer 0 reaches 0.95 at k=3, layer 1 at k=4
    assert [la.rank_at_threshold for la in result.layers] == [3, 4]


def test_effective_rank() -> None:
    assert effective_rank(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4.0)
    assert effective_rank(np.array([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.zeros(3)) == 0.0
    # p = [2/3, 1/3]: exp(-(2/3 ln 2/3 + 1/3 ln 1/3)) = 1.8899
    assert effective_rank(np.array([2.0, 1.0])) == pytest.approx(1.889882, rel=1e-5)


def test_zero_update_counts_as_retained() -> None:
    np.testing.assert_array_equal(retention_curve(np.zeros(4), 4), np.ones(4))


def test_summary_and_report(planted: Path, tmp_path: Path) -> None:
    result = analyze_adapter(planted, min_variance=0.9)
    assert result.summary() == {
        "squeeze/recommended_rank": 4,
        "squeeze/source_rank": 4,
        "squeeze/min_variance_retention": 0.9,
        "squeeze/num_layers": 2,
    }
    write_report(result, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "squeeze.json").read_text())
    assert [row["rank"] for row in data["table"]] == [1, 2, 4]
    assert [row["recommended"] for row in data["table"]] == [False, False, True]
    assert data["recommended_rank"] == 4 and len(data["layers"]) == 2
    assert len(data["curve"]["mean"]) == 4
    assert (tmp_path / "report" / "squeeze.png").read_bytes()[:4] == b"\x89PNG"


def test_ranks_above_source_are_dropped_and_source_added(planted: Path) -> None:
    assert analyze_adapter(planted, ranks=[2, 64]).ranks == [2, 4]
    with pytest.raises(SqueezeError, match="ranks must be >= 1"):
        analyze_adapter(planted, ranks=[0, 2])


@pytest.mark.parametrize(("out", "inp"), [(3, 40), (30, 2)])
def test_factor_wider_than_layer(out: int, inp: int) -> None:
    # rank 6 on a layer with out or in < 6: at most min(out, in) singular values
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, inp)), rng.standard_normal((out, 6))
    full = np.linalg.svd(b @ a, compute_uv=False)
    np.testing.assert_allclose(lora_svd(a, b, vectors=False).s, full, rtol=1e-10)
    np.testing.assert_allclose(lora_svd(a, b).s, full, rtol=1e-10)


def test_bf16_and_bin_adapters_match_fp32(planted: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    state = load_file(str(planted / "adapter_model.safetensors"))
    config = (planted / "adapter_config.json").read_text()
    want = analyze_adapter(planted)
    for name, write in {
        "bf16": lambda d: save_file({k: v.bfloat16() for k, v in state.items()}, str(d / "adapter_model.safetensors")),
        "bin": lambda d: torch.save(state, str(d / "adapter_model.bin")),
    }.items():
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(config)
        write(d)
        got = analyze_adapter(d)
        tol = 2e-2 if name == "bf16" else 1e-6  # bf16 keeps ~3 significant digits
        np.testing.assert_allclose(got.mean_retention, want.mean_retention, rtol=tol)


def test_import_does_not_pull_torch() -> None:
    import subprocess
    import sys

    code = "import sys, retrain.squeeze, retrain.cli.squeeze_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
