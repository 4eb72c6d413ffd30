"""SEPA scheduler: linear ramp, sticky gate (ramp starts at the opening), auto, state."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.algo.sepa import SepaScheduler


def make(**kw: object) -> SepaScheduler:
    args: dict[str, object] = dict(schedule="linear", steps=4, delay_steps=0, correct_rate_gate=0.0,
                                   ema_decay=0.5, auto_warmup_steps=2, auto_threshold=0.5)
    args.update(kw)
    return SepaScheduler(**args)  # type: ignore[arg-type]


def test_linear_ramp_with_delay() -> None:
    # delay 2, steps 4: lambda(t) = clip((t - 2)/4, 0, 1) -> 0, 0, 0, .25, .5, .75, 1, 1
    s = make(delay_steps=2)
    assert s.gate_open
    assert [s.lambda_for_step(t) for t in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_gate_is_sticky_and_ramp_starts_at_opening() -> None:
    s = make(correct_rate_gate=0.5)
    assert not s.gate_open and s.lambda_for_step(10) == 0.0
    s.update(0, correct_rate=0.2, exec_var=1.0)
    assert not s.gate_open
    s.update(1, correct_rate=0.6, exec_var=1.0)  # opens: step 2 is SEPA's step zero
    assert s.gate_open and s.open_step == 2
    # ramp from the opening: lambda(t) = clip((t - 2)/4): 0 at 2, .25 at 3, ... 1 at 6
    assert [s.lambda_for_step(t) for t in (2, 3, 4, 6, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    s.update(2, correct_rate=0.0, exec_var=1.0)  # a bad step does not close it
    assert s.gate_open and s.lambda_for_step(4) == 0.5


def test_auto_baseline_ema_and_linear_floor() -> None:
    # warm-up 2 steps: vars 4, 2 -> baseline 3, ema starts at 3
    # step 2: ema = .5*3 + .5*1 = 2 -> (1 - 2/3)/(1 - .5) = .6667
    # step 3: ema = .5*2 + .5*3 = 2.5 -> .3333, but lambda_auto ratchets: stays .6667
    s = make(schedule="auto", steps=100)
    s.update(0, correct_rate=1.0, exec_var=4.0)
    s.update(1, correct_rate=1.0, exec_var=2.0)
    assert s.lambda_for_step(2) == pytest.approx(0.02)  # linear floor only: 2/100
    s.update(2, correct_rate=1.0, exec_var=1.0)
    assert s.lambda_for_step(3) == pytest.approx(2 / 3)
    s.update(3, correct_rate=1.0, exec_var=3.0)
    assert s.lambda_for_step(4) == pytest.approx(2 / 3)
    s.update(4, correct_rate=1.0, exec_var=float("nan"))  # skipped
    assert s.state_dict()["ema"] == pytest.approx(2.5)
    s.update(5, correct_rate=1.0, exec_var=0.0)  # ema 1.25 -> (1 - 1.25/3)/.5 = 1.1667 -> 1
    assert s.lambda_for_step(6) == 1.0


def test_auto_waits_for_gate() -> None:
    s = make(schedule="auto", correct_rate_gate=0.5)
    s.update(0, correct_rate=0.0, exec_var=100.0)  # gate closed: not part of the baseline
    s.update(1, correct_rate=0.9, exec_var=100.0)  # opens the gate; step 2 is step zero
    s.update(2, correct_rate=0.9, exec_var=2.0)
    s.update(3, correct_rate=0.9, exec_var=2.0)
    assert s.state_dict()["baseline"] == 2.0


def test_state_round_trips_through_json() -> None:
    s = make(schedule="auto", correct_rate_gate=0.3)
    for t, (cr, v) in enumerate([(0.1, 5.0), (0.4, 4.0), (0.4, 3.0), (0.5, 2.0), (0.5, 1.0)]):
        s.update(t, correct_rate=cr, exec_var=v)
    blob = json.dumps(s.state_dict())
    t2 = make(schedule="auto", correct_rate_gate=0.3)
    t2.load_state_dict(json.loads(blob))
    assert t2.state_dict() == s.state_dict()
    assert [t2.lambda_for_step(t) for t in range(12)] == [s.lambda_for_step(t) for t in range(12)]
    with pytest.raises(ValueError, match="schedule"):
        make(schedule="linear").load_state_dict(json.loads(blob))


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        make(schedule="cosine")
    with pytest.raises(ValueError):
        make(steps=0)
    with pytest.raises(ValueError):
        make(auto_threshold=1.0)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["linear", "auto"]), st.integers(1, 10), st.integers(0, 5),
       st.floats(0, 1), st.lists(st.tuples(st.floats(0, 1), st.floats(0, 10)), max_size=25))
def test_lambda_in_unit_interval_monotone_gate_sticky(schedule: str, steps: int, delay: int,
                                                      gate: float,
                                                      history: list[tuple[float, float]]) -> None:
    s = make(schedule=schedule, steps=steps, delay_steps=delay, correct_rate_gate=gate)
    previous = 0.0
    was_open = s.gate_open
    for t, (cr, v) in enumerate(history):
        lam = s.lambda_for_step(t)
        assert 0.0 <= lam <= 1.0
        assert lam >= previous  # never decreases (linear by construction, auto ratchets)
        previous = lam
        s.update(t, correct_rate=cr, exec_var=v)
        assert s.gate_open or not was_open
        was_open = s.gate_open
