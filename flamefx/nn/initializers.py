"""Parameter initializers, as Flax's: each factory returns ``init(key, shape, dtype)``.

Fans follow Flax: ``fan_in = shape[in_axis] * receptive_field`` and ``fan_out =
shape[out_axis] * receptive_field``, the receptive field being the product of the other
dims. Dense kernels are (in, out): the defaults ``in_axis=-2, out_axis=-1``. flamefx's
conv kernels are OIHW: pass ``in_axis=1, out_axis=0`` (the conv layers do).

>>> import flamefx.random as frandom
>>> w = glorot_uniform()(frandom.key(0), (64, 32))
>>> w.shape
(64, 32)
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx import random as frandom
from flamefx.errors import FlamefxValueError

# stddev of a standard normal truncated to (-2, 2): dividing by it restores unit variance.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def compute_fans(shape, in_axis: int = -2, out_axis: int = -1) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a kernel shape.

    >>> compute_fans((16, 3, 3, 3), in_axis=1, out_axis=0)
    (27.0, 144.0)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        size = float(shape[0]) if shape else 1.0
        return size, size
    receptive_field = math.prod(shape) / (shape[in_axis] * shape[out_axis])
    return shape[in_axis] * receptive_field, shape[out_axis] * receptive_field


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2,
                     out_axis: int = -1):
    """Samples with variance ``scale / fan`` (fan per ``mode``: fan_in, fan_out, fan_avg).

    ``distribution``: 'truncated_normal', 'normal' or 'uniform'.

    >>> init = variance_scaling(2.0, "fan_in", "normal")
    >>> init(frandom.key(0), (3, 4)).shape
    (3, 4)
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise FlamefxValueError(f"mode must be fan_in, fan_out or fan_avg, got {mode!r}")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise FlamefxValueError(f"distribution must be truncated_normal, normal or uniform, "
                                f"got {distribution!r}")

    def init(key, shape, dtype=dtypes.float32):
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(fan, 1.0)
        if distribution == "truncated_normal":
            stddev = math.sqrt(variance) / _TRUNCATED_NORMAL_STDDEV
            return frandom.truncated_normal(key, -2.0, 2.0, shape, dtype) * stddev
        if distribution == "normal":
            return frandom.normal(key, shape, dtype) * math.sqrt(variance)
        limit = math.sqrt(3.0 * variance)
        return frandom.uniform(key, shape, dtype, -limit, limit)

    return init


def lecun_normal(in_axis: int = -2, out_axis: int = -1):
    """Truncated normal with variance ``1 / fan_in`` (Flax's default kernel init)."""
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis)


def lecun_uniform(in_axis: int = -2, out_axis: int = -1):
    """Uniform with variance ``1 / fan_in``."""
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis)


def glorot_normal(in_axis: int = -2, out_axis: int = -1):
    """Truncated normal with variance ``2 / (fan_in + fan_out)`` (Xavier)."""
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis, out_axis)


def glorot_uniform(in_axis: int = -2, out_axis: int = -1):
    """Uniform with variance ``2 / (fan_in + fan_out)`` (Xavier)."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis)


def he_normal(in_axis: int = -2, out_axis: int = -1):
    """Truncated normal with variance ``2 / fan_in`` (Kaiming, for ReLU nets)."""
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis)


def he_uniform(in_axis: int = -2, out_axis: int = -1):
    """Uniform with variance ``2 / fan_in`` (Kaiming)."""
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis)


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


def normal(stddev: float = 1e-2):
    """Normal with standard deviation ``stddev``.

    >>> normal(0.02)(frandom.key(0), (2,)).shape
    (2,)
    """
    def init(key, shape, dtype=dtypes.float32):
        return frandom.normal(key, shape, dtype) * stddev
    return init


def uniform(scale: float = 1e-2):
    """Uniform on ``[0, scale)`` (as Flax's)."""
    def init(key, shape, dtype=dtypes.float32):
        return frandom.uniform(key, shape, dtype, 0.0, scale)
    return init


def constant(value):
    """Every entry ``value``; the key is ignored."""
    def init(key, shape, dtype=dtypes.float32):
        return fnp.full(shape, value, dtype)
    return init


def zeros(key, shape, dtype=dtypes.float32):
    """All zeros (an initializer itself, as Flax's ``zeros``)."""
    return fnp.zeros(shape, dtype)


def ones(key, shape, dtype=dtypes.float32):
    """All ones (an initializer itself, as Flax's ``ones``)."""
    return fnp.ones(shape, dtype)
