"""Episode advantages: hand-worked examples and hypothesis properties."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.algo.advantages import episode_advantages, load_custom_advantage

EPS = 1e-6


def test_grpo_group_scale_hand_worked() -> None:
    # rewards [1, 0, 0, 1]: mean 0.5, centred [.5, -.5, -.5, .5]
    # sample std = sqrt((4 * 0.25) / 3) = sqrt(1/3) = 0.57735; A = ±0.5 / (0.57735 + 1e-6)
    adv, m = episode_advantages(np.array([1.0, 0, 0, 1]), np.zeros(4, int), mode="grpo",
                                scale="group", eps=EPS)
    expected = 0.5 / (math.sqrt(1 / 3) + EPS)
    np.testing.assert_allclose(adv, [expected, -expected, -expected, expected], rtol=1e-12)
    assert m["num_groups"] == 1 and m["num_informative_groups"] == 1


def test_grpo_scale_none_and_batch() -> None:
    # groups [1, 0] and [1, 0.5]: means 0.5 and 0.75 -> centred [.5, -.5, .25, -.25]
    r = np.array([1.0, 0.0, 1.0, 0.5])
    g = np.array([7, 7, 3, 3])
    adv, _ = episode_advantages(r, g, mode="grpo", scale="none", eps=EPS)
    np.testing.assert_allclose(adv, [0.5, -0.5, 0.25, -0.25])
    # batch std (ddof=1) of [1, 0, 1, .5]: mean .625, squares .140625+.390625+.140625+.015625
    # = .6875, /3 = .229167, sqrt = .478714
    adv, _ = episode_advantages(r, g, mode="grpo", scale="batch", eps=EPS)
    std = math.sqrt(0.6875 / 3)
    np.testing.assert_allclose(adv, np.array([0.5, -0.5, 0.25, -0.25]) / (std + EPS))


def test_maxrl_hand_worked() -> None:
    # group A [1, 0, 0, 0]: mean .25 -> (1 - .25)/(.25 + eps) = 3, (0 - .25)/.25 = -1
    # group B [0, 0, 0, 0]: uninformative -> 0 (and mean <= eps anyway)
    r = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    g = np.repeat([0, 1], 4)
    adv, m = episode_advantages(r, g, mode="maxrl", eps=EPS)
    np.testing.assert_allclose(adv, [0.75 / (0.25 + EPS)] + [-0.25 / (0.25 + EPS)] * 3 + [0] * 4)
    assert m["num_all_wrong_groups"] == 1 and m["num_informative_groups"] == 1


def test_maxrl_zero_mean_below_eps() -> None:
    # rewards [1e-7, 0]: spread 1e-7 <= 1e-6 is uninformative anyway; use a wide eps instead:
    # eps = 0.1, rewards [0.15, 0.0]: mean .075 <= eps -> zeros although the group is informative
    adv, m = episode_advantages(np.array([0.15, 0.0]), np.zeros(2, int), mode="maxrl", eps=0.1)
    np.testing.assert_array_equal(adv, [0.0, 0.0])
    assert m["num_informative_groups"] == 1


def test_rloo_hand_worked() -> None:
    # [1, 0, 0, 0]: A_0 = 1 - mean(0,0,0) = 1; A_1 = 0 - mean(1,0,0) = -1/3
    adv, _ = episode_advantages(np.array([1.0, 0, 0, 0]), np.zeros(4, int), mode="rloo")
    np.testing.assert_allclose(adv, [1.0, -1 / 3, -1 / 3, -1 / 3])


def test_uninformative_counts() -> None:
    # [1,1] all-correct; [0,0] all-wrong; [1,0] informative; [.5, .5 + 1e-7] flat, mean >= .5
    r = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5 + 1e-7])
    g = np.repeat([0, 1, 2, 3], 2)
    for mode in ("grpo", "maxrl", "rloo"):
        adv, m = episode_advantages(r, g, mode=mode)
        assert (m["num_groups"], m["num_informative_groups"], m["num_all_correct_groups"],
                m["num_all_wrong_groups"]) == (4, 1, 2, 1)
        assert np.all(adv[[0, 1, 2, 3, 6, 7]] == 0.0)
        assert isinstance(m["num_groups"], int)


def test_non_contiguous_group_ids() -> None:
    r = np.array([1.0, 0.0, 0.0, 1.0])
    a, _ = episode_advantages(r, np.array([5, 9, 5, 9]), mode="grpo", scale="none")
    np.testing.assert_allclose(a, [0.5, -0.5, -0.5, 0.5])


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="unknown advantage_mode"):
        episode_advantages(np.zeros(2), np.zeros(2, int), mode="nope")
    with pytest.raises(ValueError, match="scale"):
        episode_advantages(np.zeros(2), np.zeros(2, int), mode="grpo", scale="std")
    with pytest.raises(ValueError, match="finite"):
        episode_advantages(np.array([np.nan, 1.0]), np.zeros(2, int), mode="grpo")
    with pytest.raises(ValueError, match="built in"):
        episode_advantages(np.zeros(2), np.zeros(2, int), mode="grpo", custom_fn=lambda r: r)


# ---------------------------------------------------------------- custom functions

@pytest.fixture()
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_adv_mod.py").write_text(textwrap.dedent("""
        import numpy as np
        def centred(r):
            return r - r.mean()
        def too_short(r):
            return r[:-1]
        def nan(r):
            return r * np.nan
        def boom(r):
            raise RuntimeError("bad")
        not_callable = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_adv_mod"
    sys.modules.pop("my_adv_mod", None)


def test_custom_advantage_loads_and_runs(custom_module: str) -> None:
    fn = load_custom_advantage(f"{custom_module}:centred")
    # groups [1, 0] -> [.5, -.5]; [1, 1] is flat -> zeros
    adv, _ = episode_advantages(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]),
                                mode=f"{custom_module}:centred", custom_fn=fn)
    np.testing.assert_allclose(adv, [0.5, -0.5, 0.0, 0.0])


@pytest.mark.parametrize(("attr", "message"), [
    ("too_short", "returned 3 values for 4"), ("nan", "non-finite"), ("boom", "RuntimeError"),
    ("missing", "defines no 'missing'"), ("not_callable", "is not callable"),
])
def test_custom_advantage_rejected(custom_module: str, attr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_custom_advantage(f"{custom_module}:{attr}")


def test_custom_advantage_bad_paths() -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        load_custom_advantage("no_colon_here")
    with pytest.raises(ValueError, match="cannot find module 'surely_not_a_module_xyz'"):
        load_custom_advantage("surely_not_a_module_xyz:fn")


def test_custom_output_checked_per_group() -> None:
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        episode_advantages(np.array([1.0, 0.0]), np.zeros(2, int), mode="m:f",
                           custom_fn=lambda r: r[:1])


# ---------------------------------------------------------------- properties

rewards_groups = st.integers(1, 6).flatmap(lambda g: st.tuples(
    st.lists(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1), min_size=g,
                      max_size=g), min_size=1, max_size=5),
    st.just(g)))


def _flatten(groups: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([x for grp in groups for x in grp], dtype=np.float64)
    g = np.repeat(np.arange(len(groups)), [len(grp) for grp in groups])
    return r, g


@settings(max_examples=60, deadline=None)
@given(rewards_groups, st.sampled_from(["none", "group", "batch"]))
def test_grpo_sums_to_zero_per_group(data: tuple[list[list[float]], int], scale: str) -> None:
    r, g = _flatten(data[0])
    adv, _ = episode_advantages(r, g, mode="grpo", scale=scale)
    sums = np.bincount(g, weights=adv)
    np.testing.assert_allclose(sums, 0.0, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=5), st.integers(1, 6),
       st.sampled_from(["grpo", "maxrl", "rloo"]))
def test_constant_groups_give_zero(values: list[float], size: int, mode: str) -> None:
    r = np.repeat(values, size)
    g = np.repeat(np.arange(len(values)), size)
    adv, m = episode_advantages(r, g, mode=mode)
    assert np.all(adv == 0.0)
    assert m["num_informative_groups"] == 0
    assert m["num_all_correct_groups"] + m["num_all_wrong_groups"] == len(values)


@settings(max_examples=60, deadline=None)
@given(rewards_groups)
def test_maxrl_exact_formula_and_signs(data: tuple[list[list[float]], int]) -> None:
    r, g = _flatten(data[0])
    adv, _ = episode_advantages(r, g, mode="maxrl", eps=EPS)
    for k in range(g.max() + 1):
        rk = r[g == k]
        mean = rk.mean()
        if rk.max() - rk.min() <= 1e-6 or mean <= EPS:
            expected = np.zeros_like(rk)
        else:
            expected = (rk - mean) / (mean + EPS)
            assert np.all(np.sign(adv[g == k]) == np.sign(rk - mean))
        np.testing.assert_allclose(adv[g == k], expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(rewards_groups)
def test_rloo_is_leave_one_out(data: tuple[list[list[float]], int]) -> None:
    r, g = _flatten(data[0])
    adv, _ = episode_advantages(r, g, mode="rloo")
    for i in range(r.shape[0]):
        others = r[(g == g[i]) & (np.arange(r.shape[0]) != i)]
        grp = r[g == g[i]]
        flat = grp.max() - grp.min() <= 1e-6
        expected = 0.0 if flat or others.size == 0 else r[i] - others.mean()
        assert adv[i] == pytest.approx(expected, abs=1e-9)
