"""Learning-rate schedules: functions of the step count, written in array ops.

A schedule takes the count (a Python int, or an int32 array that may be traced under jit)
and returns a scalar. No Python branching on the count: branches are ``fnp.where``, so a
jitted training step traces once and is correct at every step.

>>> schedule = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
>>> round(float(schedule(10)), 6), round(float(schedule(110)), 6)
(1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx.errors import FlamefxValueError, where
from flamefx.optim.base import Schedule


def _float_count(count):
    return fnp.asarray(count).astype(dtypes.default_float())


def constant_schedule(value: float) -> Schedule:
    """Always ``value``.

    >>> float(constant_schedule(0.1)(5))  # doctest: +SKIP
    0.1
    """
    return lambda count: fnp.full((), value, dtype=dtypes.default_float())


def linear_schedule(init_value: float, end_value: float, transition_steps: int,
                    transition_begin: int = 0) -> Schedule:
    """Goes linearly from ``init_value`` to ``end_value`` over ``transition_steps`` steps
    starting at ``transition_begin``; constant before and after.

    >>> float(linear_schedule(1.0, 0.0, 10)(5))
    0.5
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        done = fnp.clip(_float_count(count) - transition_begin, 0, transition_steps)
        return init_value + (end_value - init_value) * (done / transition_steps)

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0,
                          exponent: float = 1.0) -> Schedule:
    """Half a cosine from ``init_value`` down to ``alpha * init_value`` over ``decay_steps``.

    >>> float(cosine_decay_schedule(1.0, 10)(10))
    0.0
    """
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay_schedule: decay_steps must be positive, got "
                         f"{decay_steps}")

    def schedule(count):
        fraction = fnp.minimum(_float_count(count), decay_steps) / decay_steps
        cosine = 0.5 * (1 + fnp.cos(math.pi * fraction))
        return init_value * ((1 - alpha) * cosine ** exponent + alpha)

    return schedule


def warmup_cosine_decay_schedule(init_value: float, peak_value: float, warmup_steps: int,
                                 decay_steps: int, end_value: float = 0.0,
                                 exponent: float = 1.0) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to
    ``end_value``; ``decay_steps`` counts the whole schedule, warmup included.

    >>> schedule = warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000)
    """
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         cosine_decay_schedule(peak_value, max(decay_steps - warmup_steps, 1), alpha, exponent)],
        [warmup_steps])


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value: float | None = None) -> Schedule:
    """``init_value * decay_rate ** ((count - transition_begin) / transition_steps)``,
    floored to whole transitions if ``staircase``, bounded by ``end_value`` if given.

    >>> float(exponential_decay(1.0, 10, 0.5)(20))
    0.25
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        steps = _float_count(count) - transition_begin
        exponent = fnp.maximum(steps, 0) / transition_steps
        if staircase:
            exponent = fnp.floor(exponent)
        value = init_value * decay_rate ** exponent
        if end_value is not None:
            bound = fnp.maximum if decay_rate < 1 else fnp.minimum
            value = bound(value, end_value)
        return value

    return schedule


def piecewise_constant_schedule(init_value: float,
                                boundaries_and_scales: dict[int, float] | None = None
                                ) -> Schedule:
    """``init_value`` times every scale whose boundary the count has reached.

    >>> float(piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.1})(15))  # doctest: +SKIP
    0.1
    """
    items = sorted((boundaries_and_scales or {}).items())

    def schedule(count):
        count = fnp.asarray(count)
        value = fnp.full((), init_value, dtype=dtypes.default_float())
        for boundary, factor in items:
            value = value * fnp.where(count >= boundary, factor, 1.0)
        return value

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules[i]`` from ``boundaries[i - 1]`` on; each restarts its count at 0.

    >>> schedule = join_schedules([constant_schedule(1.0), linear_schedule(1.0, 0.0, 10)], [5])
    """
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(f"join_schedules: {len(schedules)} schedules need "
                         f"{len(schedules) - 1} boundaries, got {len(boundaries)}")

    def schedule(count):
        count = fnp.asarray(count)
        value = schedules[0](count)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = fnp.where(count >= boundary, later(count - boundary), value)
        return value

    return schedule


def polynomial_schedule(init_value: float, end_value: float, power: float,
                        transition_steps: int, transition_begin: int = 0) -> Schedule:
    """``(init_value - end_value) * (1 - t / transition_steps) ** power + end_value`` with
    ``t`` the steps since ``transition_begin``, clipped to ``[0, transition_steps]``.

    >>> float(polynomial_schedule(1.0, 0.0, 2, 10)(5))
    0.25
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)  # optax falls back to 0 too

    def schedule(count):
        done = fnp.clip(_float_count(count) - transition_begin, 0, transition_steps)
        return (init_value - end_value) * (1 - done / transition_steps) ** power + end_value

    return schedule


def _linear_interpolate(start, end, fraction):
    return (end - start) * fraction + start


def _cosine_interpolate(start, end, fraction):
    return end + (start - end) / 2.0 * (fnp.cos(math.pi * fraction) + 1)


def piecewise_interpolate_schedule(interpolate_type: str, init_value: float,
                                   boundaries_and_scales: dict[int, float] | None = None
                                   ) -> Schedule:
    """Interpolates (``"linear"`` or ``"cosine"``) between values that change at each
    boundary by the boundary's scale: from boundary ``b[i]`` to ``b[i + 1]`` the value goes
    from ``init_value * prod(scales[:i + 1])`` to ``init_value * prod(scales[:i + 2])``.

    >>> float(piecewise_interpolate_schedule("linear", 1.0, {10: 0.5})(5))
    0.75
    """
    interpolate = {"linear": _linear_interpolate, "cosine": _cosine_interpolate}.get(
        interpolate_type)
    if interpolate is None:
        raise FlamefxValueError(f"piecewise_interpolate_schedule: interpolate_type must be "
                                f"'linear' or 'cosine', got {interpolate_type!r}" + where())
    items = sorted((boundaries_and_scales or {}).items())
    if any(factor < 0 for _, factor in items):
        raise FlamefxValueError(f"piecewise_interpolate_schedule: scales must be non-negative, "
                                f"got {[factor for _, factor in items]}" + where())
    bounds = [0] + [boundary for boundary, _ in items]
    values = [init_value]
    for _, factor in items:
        values.append(values[-1] * factor)

    def schedule(count):
        count = _float_count(count)
        value = fnp.where(count >= bounds[-1], values[-1], 0.0)
        for i in range(len(bounds) - 1):
            fraction = (count - bounds[i]) / max(bounds[i + 1] - bounds[i], 1)
            inside = (count >= bounds[i]) & (count < bounds[i + 1])
            value = value + fnp.where(inside, interpolate(values[i], values[i + 1], fraction),
                                      0.0)
        return value

    return schedule


def linear_onecycle_schedule(transition_steps: int, peak_value: float, pct_start: float = 0.3,
                             pct_final: float = 0.85, div_factor: float = 25.0,
                             final_div_factor: float = 1e4) -> Schedule:
    """The one-cycle policy, linearly: up from ``peak_value / div_factor`` to ``peak_value``
    by ``pct_start`` of the steps, back down by ``pct_final``, then down to
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``.

    >>> float(linear_onecycle_schedule(100, 1.0)(30))
    1.0
    """
    if transition_steps <= 0:
        raise FlamefxValueError(f"linear_onecycle_schedule: transition_steps must be positive, "
                                f"got {transition_steps}" + where())
    return piecewise_interpolate_schedule(
        "linear", peak_value / div_factor,
        {int(pct_start * transition_steps): div_factor,
         int(pct_final * transition_steps): 1.0 / div_factor,
         transition_steps: 1.0 / final_div_factor})


def cosine_onecycle_schedule(transition_steps: int, peak_value: float, pct_start: float = 0.3,
                             div_factor: float = 25.0,
                             final_div_factor: float = 1e4) -> Schedule:
    """The one-cycle policy with cosine ramps: up from ``peak_value / div_factor`` to
    ``peak_value`` by ``pct_start`` of the steps, then down to
    ``peak_value / (div_factor * final_div_factor)``.

    >>> float(cosine_onecycle_schedule(100, 1.0)(30))
    1.0
    """
    if transition_steps <= 0:
        raise FlamefxValueError(f"cosine_onecycle_schedule: transition_steps must be positive, "
                                f"got {transition_steps}" + where())
    return piecewise_interpolate_schedule(
        "cosine", peak_value / div_factor,
        {int(pct_start * transition_steps): div_factor,
         int(transition_steps): 1.0 / (div_factor * final_div_factor)})


def warmup_exponential_decay_schedule(init_value: float, peak_value: float, warmup_steps: int,
                                      transition_steps: int, decay_rate: float,
                                      transition_begin: int = 0, staircase: bool = False,
                                      end_value: float | None = None) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
    ``exponential_decay`` from ``peak_value`` (its count restarting at the warmup's end).

    >>> float(warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5)(20))
    0.5
    """
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         exponential_decay(peak_value, transition_steps, decay_rate, transition_begin,
                           staircase, end_value)],
        [warmup_steps])


def sgdr_schedule(cosine_kwargs: Sequence[dict]) -> Schedule:
    """SGDR (warm restarts): ``warmup_cosine_decay_schedule(**kwargs)`` for each entry, one
    after another, each lasting its ``decay_steps``.

    >>> schedule = sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=2,
    ...                                decay_steps=10)] * 3)
    >>> float(schedule(12))
    1.0
    """
    schedules, boundaries, step = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        step += kwargs["decay_steps"]
        boundaries.append(step)
    return join_schedules(schedules, boundaries[:-1])
