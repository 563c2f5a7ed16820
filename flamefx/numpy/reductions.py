"""Reductions over axes (int, tuple, None, negative) with keepdims, cumulative sums, logsumexp.

Integer and bool sums follow JAX: small integers accumulate in the default integer
(``sum`` of bool is int32 without x64); float16/bfloat16 accumulate in float32.

>>> import flamefx.numpy as fnp
>>> fnp.sum(fnp.ones((2, 3)), axis=-1).tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_to, canonical_axes, canonical_axis,
                                     constant_like, convert, to_inexact_dtype)

_HALF_FLOATS = (dtypes.float16, dtypes.bfloat16)


def _keep_dims(out, shape, axes):
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(shape))
    return lax.reshape(out, kept_shape)


def _sum_dtype(dtype) -> np.dtype:
    """The accumulation dtype NumPy-style sums use: small ints widen to the default int."""
    dtype = np.dtype(dtype)
    if dtype == dtypes.bool_:
        return dtypes.default_int()
    widest = dtypes.default_int()
    if dtypes.is_int(dtype) and dtype.itemsize < widest.itemsize:
        return widest if dtype.kind == "i" else np.dtype(f"uint{8 * widest.itemsize}")
    return dtype


def _reduce(lax_reduce, x, axis, keepdims):
    axes = canonical_axes(axis, x.ndim)
    out = lax_reduce(x, axes) if axes else x
    return _keep_dims(out, x.shape, axes) if keepdims else out


def sum(a, axis=None, dtype=None, keepdims: bool = False):
    """The sum of ``a`` over ``axis`` (None: every axis).

    >>> sum([[1, 2], [3, 4]], axis=0).tolist()
    [4, 6]
    """
    a = as_operand(a)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else _sum_dtype(a.dtype)
    compute_dtype = dtypes.float32 if out_dtype in _HALF_FLOATS else out_dtype
    out = _reduce(lax.reduce_sum, convert(a, compute_dtype, a.weak_type), axis, keepdims)
    return convert(out, out_dtype, a.weak_type)


def prod(a, axis=None, dtype=None, keepdims: bool = False):
    """The product of ``a`` over ``axis``.

    >>> prod([1, 2, 3]).item()
    6
    """
    a = as_operand(a)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else _sum_dtype(a.dtype)
    compute_dtype = dtypes.float32 if out_dtype in _HALF_FLOATS else out_dtype
    out = _reduce(lax.reduce_prod, convert(a, compute_dtype, a.weak_type), axis, keepdims)
    return convert(out, out_dtype, a.weak_type)


def element_count(shape, axes) -> int:
    """How many elements a reduction of ``shape`` over ``axes`` combines into each result.

    >>> element_count((2, 3, 4), (0, 2))
    8
    """
    return int(np.prod([shape[i] for i in axes], dtype=np.int64))


def mean(a, axis=None, dtype=None, keepdims: bool = False):
    """The arithmetic mean over ``axis`` (integers average as floats).

    >>> mean([1, 2, 3, 4]).item()
    2.5
    """
    a = as_operand(a)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else to_inexact_dtype(a.dtype)
    compute_dtype = dtypes.float32 if out_dtype in _HALF_FLOATS else out_dtype
    total = sum(a, axis=axis, dtype=compute_dtype, keepdims=keepdims)
    count = element_count(a.shape, canonical_axes(axis, a.ndim))
    out = lax.div(total, constant_like(total, count if count else np.nan))
    return convert(out, out_dtype, a.weak_type)


def _correction(ddof, correction):
    """The array API's ``correction`` is NumPy's ``ddof`` under another name."""
    if correction is None:
        return ddof
    if ddof != 0:
        raise FlamefxValueError(f"pass ddof or correction, not both (got ddof={ddof}, "
                                f"correction={correction})\n  at {user_frame()}")
    return correction


def var(a, axis=None, dtype=None, ddof: int = 0, keepdims: bool = False, *,
        correction=None):
    """The variance over ``axis``, dividing by ``N - ddof`` (``correction``: the array API's
    name of ``ddof``).

    >>> var([1.0, 2.0, 3.0, 4.0]).item()
    1.25
    >>> var([1.0, 2.0, 3.0, 4.0], correction=1).item()
    1.6666666269302368
    """
    ddof = _correction(ddof, correction)
    a = as_operand(a)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else to_inexact_dtype(a.dtype)
    compute_dtype = dtypes.float32 if out_dtype in _HALF_FLOATS else out_dtype
    a = convert(a, compute_dtype, a.weak_type)
    centered = lax.sub(a, broadcast_to(mean(a, axis=axis, keepdims=True), a.shape))
    if dtypes.is_complex(centered.dtype):  # |x - mean|^2, real (as NumPy and JAX)
        squared = lax.real(lax.mul(centered, lax.conj(centered)))
    else:
        squared = lax.mul(centered, centered)
    squares = sum(squared, axis=axis, keepdims=keepdims)
    divisor = element_count(a.shape, canonical_axes(axis, a.ndim)) - ddof
    out = lax.div(squares, constant_like(squares, divisor if divisor > 0 else np.nan))
    return convert(out, dtypes.real_dtype(out_dtype), a.weak_type)


def std(a, axis=None, dtype=None, ddof: int = 0, keepdims: bool = False, *,
        correction=None):
    """The standard deviation over ``axis`` (the square root of ``var``).

    >>> std([1.0, 3.0]).item()
    1.0
    >>> std([1.0, 3.0], correction=1).item()
    1.4142135381698608
    """
    return lax.sqrt(var(a, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims,
                        correction=correction))


def _check_nonempty(name, a, axis):
    axes = canonical_axes(axis, a.ndim)
    if element_count(a.shape, axes) == 0 and a.size == 0:
        raise FlamefxValueError(f"{name} of a zero-size array (shape {a.shape}) has no "
                                f"identity; pass an axis that is not empty\n  at {user_frame()}")


def _extremum(name, reduce, bool_reduce, a, axis, keepdims):
    """max or min: zero-size reductions have no identity, and on bools max is any, min all."""
    a = as_operand(a)
    _check_nonempty(name, a, axis)
    return _reduce(bool_reduce if a.dtype == dtypes.bool_ else reduce, a, axis, keepdims)


def max(a, axis=None, keepdims: bool = False):
    """The maximum over ``axis`` (NaN propagates).

    >>> max([1, 5, 3]).item()
    5
    """
    return _extremum("max", lax.reduce_max, lax.reduce_or, a, axis, keepdims)


def min(a, axis=None, keepdims: bool = False):
    """The minimum over ``axis`` (NaN propagates).

    >>> min([4, 2, 3]).item()
    2
    """
    return _extremum("min", lax.reduce_min, lax.reduce_and, a, axis, keepdims)


amax = max
amin = min


def _truth(a):
    a = as_operand(a)
    return a if a.dtype == dtypes.bool_ else lax.ne(a, constant_like(a, 0))


def all(a, axis=None, keepdims: bool = False):
    """True where every element over ``axis`` is nonzero.

    >>> all([1, 0]).item()
    False
    """
    return _reduce(lax.reduce_and, _truth(a), axis, keepdims)


def any(a, axis=None, keepdims: bool = False):
    """True where some element over ``axis`` is nonzero.

    >>> any([1, 0]).item()
    True
    """
    return _reduce(lax.reduce_or, _truth(a), axis, keepdims)


def _arg_reduce(lax_arg, name, a, axis, keepdims):
    a = as_operand(a)
    if axis is None:
        flat = lax.reshape(a, (a.size,))
        _check_nonempty(name, flat, 0)
        out = lax_arg(flat, 0, dtypes.default_int())
        return lax.reshape(out, (1,) * a.ndim) if keepdims else out
    axis = canonical_axis(axis, a.ndim)
    if a.shape[axis] == 0:
        raise FlamefxValueError(f"{name} of an empty axis (shape {a.shape}, axis {axis})\n  at "
                                f"{user_frame()}")
    out = lax_arg(a, axis, dtypes.default_int())
    return _keep_dims(out, a.shape, (axis,)) if keepdims else out


def argmax(a, axis=None, keepdims: bool = False):
    """The index of the maximum along ``axis`` (None: of the flattened array).

    >>> argmax([1, 5, 3]).item()
    1
    """
    return _arg_reduce(lax.argmax, "argmax", a, axis, keepdims)


def argmin(a, axis=None, keepdims: bool = False):
    """The index of the minimum along ``axis`` (None: of the flattened array).

    >>> argmin([4, 2, 3]).item()
    1
    """
    return _arg_reduce(lax.argmin, "argmin", a, axis, keepdims)


def _cumulative(lax_cumulative, a, axis, dtype):
    a = as_operand(a)
    if axis is None:
        a, axis = lax.reshape(a, (a.size,)), 0
    axis = canonical_axis(axis, a.ndim)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else _sum_dtype(a.dtype)
    compute_dtype = dtypes.float32 if out_dtype in _HALF_FLOATS else out_dtype
    out = lax_cumulative(convert(a, compute_dtype, a.weak_type), axis)
    return convert(out, out_dtype, a.weak_type)


def cumsum(a, axis=None, dtype=None):
    """Running sums along ``axis`` (None: of the flattened array).

    >>> cumsum([1, 2, 3]).tolist()
    [1, 3, 6]
    """
    return _cumulative(lax.cumsum, a, axis, dtype)


def cumprod(a, axis=None, dtype=None):
    """Running products along ``axis`` (None: of the flattened array).

    >>> cumprod([1, 2, 3]).tolist()
    [1, 2, 6]
    """
    return _cumulative(_running_product, a, axis, dtype)


def _running_product(x, axis: int):
    """Inclusive running product by doubling strides (log2(n) multiplies; no cumprod
    primitive needed, and its gradient follows from mul, slice and pad, zeros included)."""
    n = x.shape[axis]
    one = core.to_array(1, dtype=x.dtype, weak=x.weak_type)
    stride = 1
    while stride < n:
        starts, limits = [0] * x.ndim, list(x.shape)
        limits[axis] = n - stride
        head = lax.slice(x, tuple(starts), tuple(limits))
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (stride, 0, 0)
        x = lax.mul(x, lax.pad(head, one, tuple(config)))
        stride *= 2
    return x


def logsumexp(a, axis=None, b=None, keepdims: bool = False):
    """``log(sum(b * exp(a)))`` over ``axis``, computed without overflow.

    >>> round(logsumexp([0.0, 0.0]).item(), 5)
    0.69315
    """
    from flamefx.numpy.logic import isfinite
    a = as_operand(a)
    if not dtypes.is_float(a.dtype):
        a = convert(a, to_inexact_dtype(a.dtype), a.weak_type)
    axes = canonical_axes(axis, a.ndim)
    if not axes:
        return a if b is None else lax.add(a, lax.log(broadcast_to(as_operand(b), a.shape)))
    shift = lax.reduce_max(a, axes)
    # An infinite maximum (all -inf, or some +inf) must not turn a - shift into NaN.
    shift = lax.select_n(isfinite(shift), constant_like(shift, 0), shift)
    # The shift cancels out of the value, so its gradient is not needed (and not wanted:
    # max's gradient is a mask). stop_gradient keeps the derivative a clean softmax.
    shift = lax.stop_gradient(shift)
    shift_kept = broadcast_to(_keep_dims(shift, a.shape, axes), a.shape)
    terms = lax.exp(lax.sub(a, shift_kept))
    if b is not None:
        terms = lax.mul(terms, convert(broadcast_to(as_operand(b), a.shape), a.dtype))
    out = lax.add(lax.log(lax.reduce_sum(terms, axes)), shift)
    return _keep_dims(out, a.shape, axes) if keepdims else out
