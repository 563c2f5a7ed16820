"""Pooling and upsampling over the spatial dims of NC[D]HW arrays.

Max pooling pads once and combines one strided slice per window offset (a handful of
slices for a 2x2 or 3x3 window), so it batches, differentiates and fuses like any
elementwise chain; nothing loops over the batch (on the CPU its fused backward beats the
``reduce_window_max`` primitive's). Average pooling is one ``reduce_window_sum`` (several
times faster than the slices, forward and backward).

>>> import flamefx.numpy as fnp
>>> x = fnp.arange(16.0).reshape(1, 1, 4, 4)
>>> max_pool(x, 2).tolist()
[[[[5.0, 7.0], [13.0, 15.0]]]]
"""

from __future__ import annotations

import itertools

import numpy as np

import flamefx.numpy as fnp
from flamefx import core, dtypes
from flamefx.errors import FlamefxValueError
from flamefx.nn.conv import conv_padding, per_dim
from flamefx.primitives import structural, windowed


def _windows(x, window, strides, padding, pad_value):
    """Pads ``x`` and yields, per window offset, the strided slice the offset sees."""
    n = x.ndim - 2
    window = per_dim(window, n, "window")
    strides = per_dim(window if strides is None else strides, n, "strides")
    pads = conv_padding(padding, x.shape[2:], window, strides)
    config = ((0, 0, 0), (0, 0, 0)) + tuple((lo, hi, 0) for lo, hi in pads)
    padded = structural.pad(x, core.to_array(np.asarray(pad_value, x.dtype)), config)
    out_sizes = [(size - k) // s + 1 for size, k, s in zip(padded.shape[2:], window, strides)]
    if min(out_sizes) < 1:
        raise FlamefxValueError(f"pooling window {window} is larger than the padded input "
                                f"{tuple(padded.shape[2:])}")
    for offsets in itertools.product(*(range(k) for k in window)):
        start = (0, 0) + offsets
        limit = padded.shape[:2] + tuple(o + (m - 1) * s + 1
                                         for o, m, s in zip(offsets, out_sizes, strides))
        yield structural.slice(padded, start, limit, (1, 1) + strides)


def max_pool(x, window, strides=None, padding="VALID"):
    """The max over each window (``strides`` default to the window; padding never wins).

    >>> max_pool(fnp.ones((1, 1, 4, 4)), 3, strides=1, padding="SAME").shape
    (1, 1, 4, 4)
    """
    lowest = -np.inf if dtypes.is_float(x.dtype) else np.iinfo(x.dtype).min
    out = None
    for part in _windows(x, window, strides, padding, lowest):
        out = part if out is None else fnp.maximum(out, part)
    return out


def avg_pool(x, window, strides=None, padding="VALID", count_include_pad: bool = True):
    """The mean over each window; with ``count_include_pad=False`` padding does not count.

    A windowed sum (``reduce_window_sum``, one primitive) divided by the window size or
    by the count of real elements per window.

    >>> avg_pool(fnp.ones((1, 1, 4, 4)), 2).tolist()
    [[[[1.0, 1.0], [1.0, 1.0]]]]
    """
    n = x.ndim - 2
    window = per_dim(window, n, "window")
    strides = per_dim(window if strides is None else strides, n, "strides")
    pads = conv_padding(padding, x.shape[2:], window, strides)
    padded = [size + lo + hi for size, (lo, hi) in zip(x.shape[2:], pads)]
    if any(p < k for p, k in zip(padded, window)):
        raise FlamefxValueError(f"pooling window {window} is larger than the padded input "
                                f"{tuple(padded)}")
    args = ((1, 1) + window, (1, 1) + strides, ((0, 0), (0, 0)) + pads)
    total = windowed.reduce_window_sum(x, *args)
    if count_include_pad:
        return total / float(np.prod(window))
    ones = fnp.ones((1, 1) + tuple(x.shape[2:]), x.dtype)
    return total / windowed.reduce_window_sum(ones, *args)


def upsample_nearest(x, scale):
    """Repeats each spatial element ``scale`` times per spatial dim (int or tuple).

    >>> upsample_nearest(fnp.array([[[1.0, 2.0]]]), 2).tolist()
    [[[1.0, 1.0, 2.0, 2.0]]]
    """
    n = x.ndim - 2
    scales = per_dim(scale, n, "scale")
    spread = x.shape[:2] + tuple(d for size, s in zip(x.shape[2:], scales) for d in (size, 1))
    tiled = x.shape[:2] + tuple(d for size, s in zip(x.shape[2:], scales) for d in (size, s))
    out_shape = x.shape[:2] + tuple(size * s for size, s in zip(x.shape[2:], scales))
    return fnp.reshape(fnp.broadcast_to(fnp.reshape(x, spread), tiled), out_shape)


def _linear_taps(in_size: int, out_size: int):
    """Source indices and weights of linear resampling, half-pixel centres (PyTorch's
    align_corners=False, jax.image.resize's 'linear' when upsampling)."""
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, in_size - 1)
    low = np.floor(source).astype(np.int32)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, source - low


def upsample_bilinear(x, size=None, scale=None):
    """Linear interpolation over every spatial dim to ``size`` (or ``in * scale``).

    >>> upsample_bilinear(fnp.array([[[0.0, 1.0]]]), scale=2).tolist()
    [[[0.0, 0.25, 0.75, 1.0]]]
    """
    n = x.ndim - 2
    if (size is None) == (scale is None):
        raise FlamefxValueError("upsample_bilinear: give exactly one of size and scale")
    if size is None:
        size = tuple(int(d * s) for d, s in zip(x.shape[2:], _scales(scale, n)))
    size = per_dim(size, n, "size")
    for axis, out_size in zip(range(2, x.ndim), size):
        low, high, frac = _linear_taps(x.shape[axis], out_size)
        weight_shape = tuple(out_size if a == axis else 1 for a in range(x.ndim))
        frac = fnp.asarray(frac.reshape(weight_shape).astype(x.dtype))
        x = (fnp.take(x, fnp.asarray(low), axis=axis) * (1 - frac)
             + fnp.take(x, fnp.asarray(high), axis=axis) * frac)
    return x


def _scales(scale, n: int) -> tuple:
    return (scale,) * n if isinstance(scale, (int, float)) else tuple(scale)
