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
from typing import Callable

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx import random as frandom
from flamefx.errors import FlamefxValueError

# stddev of a standard normal truncated to (-2, 2): dividing by it restores unit variance.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


Initializer = Callable  # init(key, shape, dtype) -> Array, as JAX's type name


def _size(shape, axes) -> float:
    return float(shape[axes]) if isinstance(axes, int) else float(
        math.prod(shape[a] for a in axes))


def compute_fans(shape, in_axis=-2, out_axis=-1, batch_axis=()) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a kernel shape; each axis argument may be a sequence.

    A 0-d or 1-d shape gives its size for both (JAX raises there; biases are 1-d).

    >>> compute_fans((16, 3, 3, 3), in_axis=1, out_axis=0)
    (27.0, 144.0)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        size = float(shape[0]) if shape else 1.0
        return size, size
    in_size, out_size = _size(shape, in_axis), _size(shape, out_axis)
    receptive_field = math.prod(shape) / (in_size * out_size * _size(shape, batch_axis))
    return in_size * receptive_field, out_size * receptive_field


_FANS = {"fan_in": lambda fi, fo: fi, "fan_out": lambda fi, fo: fo,
         "fan_avg": lambda fi, fo: (fi + fo) / 2, "fan_geo_avg": lambda fi, fo: math.sqrt(fi * fo)}


def variance_scaling(scale: float, mode: str, distribution: str, in_axis=-2, out_axis=-1,
                     batch_axis=(), dtype=dtypes.float32):
    """Samples with variance ``scale / fan`` (fan per ``mode``: fan_in, fan_out, fan_avg,
    fan_geo_avg). ``distribution``: 'truncated_normal', 'normal' or 'uniform'.

    >>> init = variance_scaling(2.0, "fan_in", "normal")
    >>> init(frandom.key(0), (3, 4)).shape
    (3, 4)
    """
    if mode not in _FANS:
        raise FlamefxValueError(f"mode must be one of {sorted(_FANS)}, got {mode!r}")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise FlamefxValueError(f"distribution must be truncated_normal, normal or uniform, "
                                f"got {distribution!r}")
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        shape = (int(shape),) if isinstance(shape, int) else tuple(shape)
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
        variance = scale / max(_FANS[mode](fan_in, fan_out), 1.0)
        if distribution == "truncated_normal":
            stddev = math.sqrt(variance) / _TRUNCATED_NORMAL_STDDEV
            return frandom.truncated_normal(key, -2.0, 2.0, shape, dtype) * stddev
        if distribution == "normal":
            return frandom.normal(key, shape, dtype) * math.sqrt(variance)
        limit = math.sqrt(3.0 * variance)
        return frandom.uniform(key, shape, dtype, -limit, limit)

    return init


def lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Truncated normal with variance ``1 / fan_in`` (Flax's default kernel init)."""
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def lecun_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Uniform with variance ``1 / fan_in``."""
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def glorot_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Truncated normal with variance ``2 / (fan_in + fan_out)`` (Xavier)."""
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Uniform with variance ``2 / (fan_in + fan_out)`` (Xavier)."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype)


def he_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Truncated normal with variance ``2 / fan_in`` (Kaiming, for ReLU nets)."""
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def he_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=dtypes.float32):
    """Uniform with variance ``2 / fan_in`` (Kaiming)."""
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


def normal(stddev: float = 1e-2, dtype=dtypes.float32):
    """Normal with standard deviation ``stddev``.

    >>> normal(0.02)(frandom.key(0), (2,)).shape
    (2,)
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        return frandom.normal(key, shape, dtype) * stddev
    return init


def truncated_normal(stddev: float = 1e-2, dtype=dtypes.float32, lower: float = -2.0,
                     upper: float = 2.0):
    """A standard normal truncated to ``[lower, upper]``, times ``stddev`` (as JAX: the
    result's standard deviation is below ``stddev``).

    >>> float(fnp.max(fnp.abs(truncated_normal(1.0)(frandom.key(0), (100,))))) <= 2.0
    True
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        return frandom.truncated_normal(key, lower, upper, shape, dtype) * stddev
    return init


def uniform(scale: float = 1e-2, dtype=dtypes.float32):
    """Uniform on ``[0, scale)`` (as JAX's and Flax's).

    >>> float(fnp.min(uniform(1.0)(frandom.key(0), (10,)))) >= 0.0
    True
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        return frandom.uniform(key, shape, dtype, 0.0, scale)
    return init


def constant(value, dtype=dtypes.float32):
    """Every entry ``value``; the key is ignored.

    >>> constant(2.0)(None, (2,)).tolist()
    [2.0, 2.0]
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        return fnp.full(shape, value, dtype)
    return init


def zeros(key, shape, dtype=dtypes.float32, out_sharding=None):
    """All zeros (an initializer itself, as JAX's ``zeros``; ``out_sharding`` is ignored)."""
    return fnp.zeros(shape, dtype)


def ones(key, shape, dtype=dtypes.float32, out_sharding=None):
    """All ones (an initializer itself, as JAX's ``ones``; ``out_sharding`` is ignored)."""
    return fnp.ones(shape, dtype)


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=dtypes.float32):
    """A (semi-)orthogonal matrix per the flattened other axes, times ``scale``: the Q of a
    normal matrix's QR, its signs fixed by R's diagonal so Q is uniform (Haar), as JAX.

    >>> w = orthogonal()(frandom.key(0), (4, 3))
    >>> bool(fnp.allclose(w.T @ w, fnp.eye(3), atol=1e-5))
    True
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        shape = tuple(shape)
        if len(shape) < 2:
            raise FlamefxValueError(f"orthogonal initializer requires at least a 2-D shape, "
                                    f"got {shape}")
        n_cols = shape[column_axis]
        n_rows = math.prod(shape) // n_cols
        matrix_shape = (n_cols, n_rows) if n_rows < n_cols else (n_rows, n_cols)
        q, r = fnp.linalg.qr(frandom.normal(key, matrix_shape, dtype))
        q = q * fnp.sign(fnp.diagonal(r))
        if n_rows < n_cols:
            q = q.T
        rest = tuple(d for i, d in enumerate(shape) if i != column_axis % len(shape))
        q = fnp.moveaxis(fnp.reshape(q, rest + (n_cols,)), -1, column_axis)
        return scale * q

    return init


def delta_orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=dtypes.float32):
    """A conv kernel (3-D to 5-D, channels last two) that is zero but for an orthogonal
    matrix at its spatial centre (Xiao et al. 2018, as JAX's).

    >>> w = delta_orthogonal()(frandom.key(0), (3, 2, 2))
    >>> float(fnp.abs(w[0]).sum()), w.shape
    (0.0, (3, 2, 2))
    """
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        shape = tuple(shape)
        if len(shape) not in (3, 4, 5):
            raise FlamefxValueError(f"delta_orthogonal initializer requires a 3-D, 4-D or 5-D "
                                    f"shape, got {shape}")
        if shape[-1] < shape[-2]:
            raise FlamefxValueError(f"delta_orthogonal: fan_in ({shape[-2]}) must be at most "
                                    f"fan_out ({shape[-1]})")
        matrix = orthogonal(scale, column_axis, dtype)(key, shape[-2:])
        centre = tuple((k - 1) // 2 for k in shape[:-2])
        return fnp.zeros(shape, dtype).at[centre].set(matrix)

    return init
