"""The polynomial, one-cycle, piecewise-interpolated, warmup-exponential and SGDR schedules
against their closed forms written in plain Python, at every count of a range that covers
each phase, eagerly and under jit (where the count is a traced int32)."""

import math

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, optim


def _polynomial(count):
    done = min(max(count - 5, 0), 30)
    return 0.9 * (1 - done / 30) ** 2.5 + 0.1


def _linear_onecycle(count):
    # 40 steps, peak 2: 0.08 -> 2 over [0, 12), 2 -> 0.08 over [12, 34), 0.08 -> 8e-6 to 40.
    points = [(0, 0.08), (12, 2.0), (34, 0.08), (40, 0.08 / 1e4)]
    for (b0, v0), (b1, v1) in zip(points, points[1:]):
        if b0 <= count < b1:
            return v0 + (v1 - v0) * (count - b0) / (b1 - b0)
    return points[-1][1]


def _cosine_onecycle(count):
    # 40 steps, peak 2, pct_start 0.25: 0.08 -> 2 over [0, 10), 2 -> 2 / 25e4 over [10, 40).
    points = [(0, 0.08), (10, 2.0), (40, 2.0 / 25e4)]
    for (b0, v0), (b1, v1) in zip(points, points[1:]):
        if b0 <= count < b1:
            return v1 + (v0 - v1) / 2 * (math.cos(math.pi * (count - b0) / (b1 - b0)) + 1)
    return points[-1][1]


def _warmup_exponential(count):
    # warmup 5 steps 0.1 -> 1, then 1 * 0.6 ** floor((t - 3) / 7) for t >= 3, at least 0.2.
    if count < 5:
        return 0.1 + 0.9 * count / 5
    t = count - 5
    return max(0.6 ** math.floor(max(t - 3, 0) / 7), 0.2)


def _warmup_cosine(count, init, peak, warmup, decay_steps, end):
    if count < warmup:
        return init + (peak - init) * count / warmup
    fraction = min(count - warmup, decay_steps - warmup) / (decay_steps - warmup)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * fraction))


def _sgdr(count):
    if count < 12:
        return _warmup_cosine(count, 0.0, 1.0, 3, 12, 0.1)
    return _warmup_cosine(count - 12, 0.5, 0.8, 2, 9, 0.0)


def _piecewise_linear(count):
    # 2.0, x0.5 at 4, x3 at 10, x0.1 at 15: linear between 2, 1, 3, 0.3; then 0.3.
    points = [(0, 2.0), (4, 1.0), (10, 3.0), (15, 0.3)]
    for (b0, v0), (b1, v1) in zip(points, points[1:]):
        if b0 <= count < b1:
            return v0 + (v1 - v0) * (count - b0) / (b1 - b0)
    return 0.3


CASES = {
    "polynomial": (lambda: optim.polynomial_schedule(1.0, 0.1, 2.5, 30, 5), _polynomial),
    "linear_onecycle": (lambda: optim.linear_onecycle_schedule(40, 2.0), _linear_onecycle),
    "cosine_onecycle": (lambda: optim.cosine_onecycle_schedule(40, 2.0, pct_start=0.25),
                        _cosine_onecycle),
    "warmup_exponential_decay": (
        lambda: optim.warmup_exponential_decay_schedule(0.1, 1.0, 5, 7, 0.6, transition_begin=3,
                                                        staircase=True, end_value=0.2),
        _warmup_exponential),
    "sgdr": (lambda: optim.sgdr_schedule([
        dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=12, end_value=0.1),
        dict(init_value=0.5, peak_value=0.8, warmup_steps=2, decay_steps=9)]), _sgdr),
    "piecewise_interpolate_linear": (
        lambda: optim.piecewise_interpolate_schedule("linear", 2.0, {4: 0.5, 10: 3.0, 15: 0.1}),
        _piecewise_linear),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_matches_closed_form(name):
    make_schedule, closed_form = CASES[name]
    counts = range(50)
    want = [closed_form(c) for c in counts]
    with config.override("enable_x64", True):
        schedule = make_schedule()
        eager = [float(schedule(c)) for c in counts]
        np.testing.assert_allclose(eager, want, rtol=1e-12, atol=1e-15)
    jitted = flamefx.jit(make_schedule())
    traced = [float(jitted(fnp.asarray(c, dtype=fnp.int32))) for c in counts]
    np.testing.assert_allclose(traced, want, rtol=2e-6, atol=1e-7)


def test_polynomial_schedule_without_steps_is_constant():
    assert float(optim.polynomial_schedule(0.5, 0.0, 2, 0)(7)) == 0.5


@pytest.mark.parametrize("make", [
    lambda: optim.linear_onecycle_schedule(0, 1.0),
    lambda: optim.cosine_onecycle_schedule(-1, 1.0),
    lambda: optim.piecewise_interpolate_schedule("cubic", 1.0),
    lambda: optim.piecewise_interpolate_schedule("linear", 1.0, {3: -1.0}),
])
def test_bad_schedule_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
