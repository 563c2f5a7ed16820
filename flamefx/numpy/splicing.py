"""Arrays with entries added or removed along an axis: append, insert, delete.

The positions are concrete (as NumPy's; JAX's too, unless ``assume_unique_indices``), so
each result is one ``take`` of fixed indices, differentiable in the arrays' values.

>>> import flamefx.numpy as fnp
>>> fnp.delete(fnp.insert(fnp.arange(3), 1, 9), 0).tolist()
[9, 1, 2]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.concrete import concrete_value
from flamefx.numpy.promotion import as_operand, broadcast_to, canonical_axis, convert
from flamefx.numpy.shape import concatenate, moveaxis, ravel, with_dim


def append(arr, values, axis: int | None = None):
    """``values`` appended to ``arr`` along ``axis`` (None: both flattened first).

    >>> append([1, 2], [[3], [4]]).tolist()
    [1, 2, 3, 4]
    """
    if axis is None:
        return concatenate([ravel(arr), ravel(values)], 0)
    return concatenate([arr, values], axis)


def _concrete_positions(name: str, obj, n: int) -> np.ndarray:
    """``obj`` (a slice, int, or integer/boolean array-like) as concrete integer positions."""
    if isinstance(obj, slice):
        return np.arange(n)[obj]
    positions = np.asarray(concrete_value(obj, lambda aval: FlamefxValueError(
        f"{name}: the positions must be concrete (static), got a traced array {aval}; pass "
        f"them as a NumPy array or mark the argument static (jit's static_argnums)\n  at "
        f"{user_frame()}")))
    if positions.dtype == np.bool_ and positions.shape == (n,):
        return np.flatnonzero(positions)
    if positions.size == 0:
        return positions.astype(np.int64)
    if not np.issubdtype(positions.dtype, np.integer) or positions.ndim > 1:
        raise FlamefxValueError(f"{name}: positions must be a slice, an int or a 1-D integer "
                                f"array, got {positions.dtype} of shape {positions.shape}\n  at "
                                f"{user_frame()}")
    if ((positions < -n) | (positions > n)).any():
        raise IndexError(f"{name}: positions {positions.tolist()} are out of bounds for an "
                         f"axis of size {n}")
    return positions.astype(np.int64)


def _take_positions(a, sources: np.ndarray, axis: int):
    from flamefx.numpy.indexing import take
    return take(a, core.to_array(sources.astype(np.int32)), axis=axis)


def delete(arr, obj, axis: int | None = None, *, assume_unique_indices: bool = False):
    """``arr`` without the entries at ``obj`` (a slice, int, int array or boolean mask) along
    ``axis`` (None: of the flattened array). ``obj`` must be concrete, so JAX's
    ``assume_unique_indices`` (its way to trace ``obj``) is accepted and has nothing to do.

    >>> delete([1, 2, 3, 4], [0, 2]).tolist()
    [2, 4]
    """
    del assume_unique_indices
    arr = as_operand(arr)
    if axis is None:
        arr, axis = ravel(arr), 0
    axis = canonical_axis(axis, arr.ndim)
    n = arr.shape[axis]
    positions = _concrete_positions("delete", obj, n)
    if positions.ndim == 0 and not -n <= positions < n:
        raise IndexError(f"delete: index {int(positions)} is out of bounds for an axis of size "
                         f"{n}")
    keep = np.ones(n, bool)
    keep[positions % n if n else positions] = False
    return _take_positions(arr, np.flatnonzero(keep), axis)


def insert(arr, obj, values, axis: int | None = None):
    """``arr`` with ``values`` inserted before the positions ``obj`` along ``axis`` (None: of
    the flattened array); ``obj`` must be concrete. Differentiable in ``arr`` and ``values``.

    >>> insert([1, 2, 3], 1, 9).tolist()
    [1, 9, 2, 3]
    >>> insert([1, 2, 3], [0, 3], [7, 8]).tolist()
    [7, 1, 2, 3, 8]
    """
    arr = as_operand(arr)
    values = convert(as_operand(values), arr.dtype, arr.weak_type)
    if axis is None:
        arr, axis = ravel(arr), 0
    axis = canonical_axis(axis, arr.ndim)
    n = arr.shape[axis]
    positions = _concrete_positions("insert", obj, n)
    if positions.ndim == 0:
        # NumPy's rule for one position: values' leading axis runs along ``axis``.
        values = lax.reshape(values, (1,) * (arr.ndim - values.ndim) + values.shape)
        values = moveaxis(values, 0, axis) if values.ndim == arr.ndim else values
        count = values.shape[axis] if values.ndim == arr.ndim else 1
        position = int(positions)
        positions = np.full(count, position + n if position < 0 else position)
    else:
        positions = np.where(positions < 0, positions + n, positions)
        count = positions.size
    values = broadcast_to(values, with_dim(arr.shape, axis, count))
    # Each inserted value lands before its position, after the values inserted before it.
    order = np.argsort(positions, kind="stable")
    new_at = np.empty(count, np.int64)
    new_at[order] = positions[order] + np.arange(count)
    sources = np.empty(n + count, np.int64)
    is_new = np.zeros(n + count, bool)
    is_new[new_at] = True
    sources[new_at] = n + np.arange(count)
    sources[~is_new] = np.arange(n)
    return _take_positions(concatenate([arr, values], axis), sources, axis)
