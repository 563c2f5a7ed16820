"""Indexing: ``x[idx]`` with NumPy's rules, ``x.at[idx].set/add/...``, take, nonzero.

Basic indices (ints, slices with any step, None, Ellipsis) become static slices, ``rev``
and reshapes; integer arrays (advanced indexing) become one ``gather``, with the broadcast
index dimensions placed where NumPy puts them. Boolean masks are turned into integer
arrays, which needs their values: they work on concrete arrays only.

>>> import flamefx.numpy as fnp
>>> x = fnp.arange(12).reshape(3, 4)
>>> x[1:, ::-2].tolist()
[[7, 5], [11, 9]]
>>> x.at[0, 0].set(100)[0].tolist()
[100, 1, 2, 3]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.core import Array, Tracer
from flamefx.errors import ConcretizationError, FlamefxTypeError, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_arrays, broadcast_shapes, broadcast_to,
                                     canonical_axis, constant_like, convert)

_INDEX_DTYPE = dtypes.int32


def _wrap_negative(indices, n: int):
    """Negative indices count from the end (out-of-range ones are clamped by gather)."""
    indices = convert(indices, _INDEX_DTYPE)
    return lax.select_n(lax.lt(indices, constant_like(indices, 0)), indices,
                        lax.add(indices, constant_like(indices, n)))


def _gather_along(a, indices, axis: int):
    """``a`` indexed by integer array ``indices`` along ``axis``: NumPy's ``take``."""
    idx = _wrap_negative(indices, a.shape[axis])
    out = lax.gather(a, lax.reshape(idx, idx.shape + (1,)), (axis,))
    k = idx.ndim
    perm = list(range(k, k + axis)) + list(range(k)) + list(range(k + axis, out.ndim))
    return out if perm == list(range(out.ndim)) else lax.transpose(out, tuple(perm))


def _require_integer(indices, what: str):
    if not dtypes.is_int(indices.dtype):
        raise FlamefxTypeError(f"{what} must be integers, got {indices.dtype}\n  at "
                               f"{user_frame()}")


def take(a, indices, axis: int | None = None, mode=None):
    """Elements of ``a`` at ``indices`` along ``axis`` (None: of the flattened array).

    Out-of-range indices are clamped (as JAX does), negative ones count from the end.

    >>> take([10, 20, 30], [2, 0]).tolist()
    [30, 10]
    """
    del mode
    a, indices = as_operand(a), as_operand(indices)
    _require_integer(indices, "take indices")
    if axis is None:
        a, axis = lax.reshape(a, (a.size,)), 0
    return _gather_along(a, indices, canonical_axis(axis, a.ndim))


def take_along_axis(arr, indices, axis: int | None):
    """``arr`` picked at ``indices`` along ``axis``, matching the other axes one to one.

    >>> take_along_axis([[10, 20], [30, 40]], [[1], [0]], axis=1).tolist()
    [[20], [30]]
    """
    arr, indices = as_operand(arr), as_operand(indices)
    _require_integer(indices, "take_along_axis indices")
    if axis is None:
        arr, axis = lax.reshape(arr, (arr.size,)), 0
    if indices.ndim != arr.ndim:
        raise FlamefxTypeError(f"take_along_axis: indices ({indices.ndim}-d) and arr "
                               f"({arr.ndim}-d) need the same number of dimensions")
    axis = canonical_axis(axis, arr.ndim)
    arr_shape = list(arr.shape)
    arr_shape[axis] = 1
    out_shape = broadcast_shapes(arr_shape, indices.shape)
    arr_target = list(out_shape)
    arr_target[axis] = arr.shape[axis]
    arr = broadcast_to(arr, arr_target)
    indices = _wrap_negative(broadcast_to(indices, out_shape), arr.shape[axis])
    columns = [indices if d == axis else lax.iota(_INDEX_DTYPE, out_shape, d)
               for d in range(arr.ndim)]
    full = lax.concatenate([lax.reshape(c, out_shape + (1,)) for c in columns], len(out_shape))
    return lax.gather(arr, full, tuple(range(arr.ndim)))


def nonzero(a) -> tuple:
    """The indices of the nonzero elements, one array per axis (concrete arrays only).

    >>> [i.tolist() for i in nonzero([0, 3, 0, 4])]
    [[1, 3]]
    """
    values = _concrete_values(a, "nonzero")
    return tuple(core.to_array(i.astype(dtypes.default_int())) for i in np.nonzero(values))


def flatnonzero(a):
    """The indices of the nonzero elements of the flattened array (concrete arrays only).

    >>> flatnonzero([[0, 1], [1, 0]]).tolist()
    [1, 2]
    """
    values = _concrete_values(a, "flatnonzero")
    return core.to_array(np.flatnonzero(values).astype(dtypes.default_int()))


def argwhere(a):
    """The indices of the nonzero elements as rows (concrete arrays only).

    >>> argwhere([0, 5]).tolist()
    [[1]]
    """
    values = _concrete_values(a, "argwhere")
    return core.to_array(np.argwhere(values).astype(dtypes.default_int()))


def _concrete_values(a, what: str) -> np.ndarray:
    if isinstance(a, Tracer):
        concrete = a.to_concrete()
        if concrete is None:
            raise ConcretizationError(
                f"{what} has a result whose shape depends on the values of a traced array "
                f"({a.aval.str_short()}), which are unknown while tracing.\n  at {user_frame()}"
                f"\nUse fnp.where(mask, x, other) to select values with a fixed shape.")
        a = concrete
    return np.asarray(a)


# --- x[idx] ------------------------------------------------------------------------------------


class _Advanced:
    """An integer-array entry of an index (after boolean masks became integer arrays)."""

    __slots__ = ("indices",)

    def __init__(self, indices):
        self.indices = indices


def _index_entries(index, ndim: int) -> list:
    """The index as a list of int | slice | None | _Advanced, with Ellipsis expanded."""
    if not isinstance(index, tuple):
        index = (index,)
    entries = []
    ellipsis_at = None
    for entry in index:
        if entry is None or isinstance(entry, slice):
            entries.append(entry)
        elif entry is Ellipsis:
            if ellipsis_at is not None:
                raise IndexError("an index can only have a single ellipsis ('...')")
            ellipsis_at = len(entries)
        elif isinstance(entry, (bool, np.bool_)):
            raise IndexError("a Python bool as an index is not supported; use a boolean array "
                             "mask or fnp.where")
        elif isinstance(entry, (int, np.integer)):
            entries.append(int(entry))
        else:
            entries.extend(_array_entries(entry))
    consumed = sum(1 for e in entries if e is not None)
    if consumed > ndim:
        raise IndexError(f"too many indices for an array of {ndim} dimension(s): the index "
                         f"uses {consumed}")
    filler = [slice(None)] * (ndim - consumed)
    if ellipsis_at is None:
        return entries + filler
    return entries[:ellipsis_at] + filler + entries[ellipsis_at:]


def _array_entries(entry) -> list:
    if isinstance(entry, (list, tuple)):
        entry = np.asarray(entry)
        if entry.size == 0:
            entry = entry.astype(_INDEX_DTYPE)
    if isinstance(entry, (np.ndarray, np.generic)):
        entry = core.to_array(entry)
    if not isinstance(entry, (Array, Tracer)):
        raise IndexError(f"{type(entry).__name__} {entry!r} is not a valid index: use ints, "
                         f"slices, None, ..., or integer/boolean arrays")
    if entry.dtype == dtypes.bool_:
        values = _concrete_values(entry, "boolean mask indexing")
        return [_Advanced(core.to_array(i.astype(_INDEX_DTYPE))) for i in np.nonzero(values)]
    if not dtypes.is_int(entry.dtype):
        raise IndexError(f"arrays used as indices must be of integer or boolean type, got "
                         f"{entry.dtype}")
    return [_Advanced(entry)]


def _static_slice(s: slice, n: int):
    """(reversed?, start, limit, stride) of a slice, in the coordinates after an optional rev."""
    start, stop, step = s.indices(n)
    length = len(range(start, stop, step))
    if length == 0:
        return False, 0, 0, 1
    if step > 0:
        return False, start, start + (length - 1) * step + 1, step
    start = n - 1 - start
    return True, start, start + (length - 1) * (-step) + 1, -step


def _getitem(x, index):
    """``x[index]`` with NumPy's indexing rules (the engine behind ``Array.__getitem__``)."""
    x = as_operand(x)
    entries = _index_entries(index, x.ndim)
    has_advanced = any(isinstance(e, _Advanced) for e in entries)
    if has_advanced:  # with arrays present, ints are advanced indices too (NumPy's rule)
        entries = [_Advanced(core.to_array(np.asarray(e, _INDEX_DTYPE)))
                   if isinstance(e, int) else e for e in entries]

    windows, reversed_dims = [], []  # (start, limit, stride) per dim of x
    dim = 0
    for e in entries:
        if e is None:
            continue
        n = x.shape[dim]
        if isinstance(e, int):
            if not -n <= e < n:
                raise IndexError(f"index {e} is out of bounds for axis {dim} with size {n}")
            windows.append((e % n, e % n + 1, 1))
        elif isinstance(e, slice):
            flipped, start, limit, stride = _static_slice(e, n)
            if flipped:
                reversed_dims.append(dim)
            windows.append((start, limit, stride))
        else:
            windows.append((0, n, 1))
        dim += 1

    y = lax.rev(x, tuple(reversed_dims)) if reversed_dims else x
    if windows != [(0, n, 1) for n in x.shape]:
        starts, limits, strides = zip(*windows)
        y = lax.slice(y, starts, limits, strides)

    if not has_advanced:
        out_shape, dim = [], 0
        for e in entries:
            if e is None:
                out_shape.append(1)
                continue
            if isinstance(e, slice):
                out_shape.append(y.shape[dim])
            dim += 1
        return y if tuple(out_shape) == y.shape else lax.reshape(y, tuple(out_shape))
    return _advanced_index(y, entries)


def _advanced_index(y, entries):
    """One gather for the integer-array entries; the other dims are already sliced."""
    adv_dims, adv_arrays, adv_positions = [], [], []
    dim = 0
    for position, e in enumerate(entries):
        if e is None:
            continue
        if isinstance(e, _Advanced):
            adv_dims.append(dim)
            adv_arrays.append(_wrap_negative(e.indices, y.shape[dim]))
            adv_positions.append(position)
        dim += 1
    adv_arrays = broadcast_arrays(*adv_arrays)
    batch_shape = adv_arrays[0].shape
    stacked = lax.concatenate([lax.reshape(a, batch_shape + (1,)) for a in adv_arrays],
                              len(batch_shape))
    gathered = lax.gather(y, stacked, tuple(adv_dims))  # batch dims, then the sliced dims

    # NumPy puts the broadcast dims where the advanced entries are if they are adjacent in
    # the index, else in front of everything.
    adjacent = adv_positions[-1] - adv_positions[0] == len(adv_positions) - 1
    n_batch = len(batch_shape)
    order, new_axes, sliced = [], [], iter(range(n_batch, gathered.ndim))
    if not adjacent:
        order.extend(range(n_batch))
    for position, e in enumerate(entries):
        if e is None:
            new_axes.append(len(order) + len(new_axes))
        elif isinstance(e, slice):
            order.append(next(sliced))
        elif adjacent and position == adv_positions[0]:
            order.extend(range(n_batch))
    if order != list(range(gathered.ndim)):
        gathered = lax.transpose(gathered, tuple(order))
    if not new_axes:
        return gathered
    dims = iter(gathered.shape)
    out_ndim = gathered.ndim + len(new_axes)
    return lax.reshape(gathered, tuple(1 if i in new_axes else next(dims) for i in range(out_ndim)))


# --- x.at[idx] -----------------------------------------------------------------------------


def _scatter(x, index, values, mode: str):
    """A new array: ``x`` with ``values`` combined (by ``mode``) into ``x[index]``."""
    x = as_operand(x)
    # Index a grid of flat positions the same way: every index form (slices, arrays, masks,
    # duplicates) then becomes one scatter on the flattened array.
    positions = _getitem(lax.reshape(lax.iota(_INDEX_DTYPE, (x.size,), 0), x.shape), index)
    values = convert(as_operand(values), x.dtype, x.weak_type)
    while values.ndim > positions.ndim and values.shape[0] == 1:
        values = lax.reshape(values, values.shape[1:])  # NumPy drops leading size-1 dims here
    values = broadcast_to(values, positions.shape)
    count = positions.size
    flat = lax.scatter(lax.reshape(x, (x.size,)), lax.reshape(positions, (count, 1)),
                       lax.reshape(values, (count,)), (0,), mode)
    return lax.reshape(flat, x.shape)


class _IndexUpdateRef:
    """``x.at[index]``: functional updates of the elements ``x[index]`` (x is not changed)."""

    __slots__ = ("array", "index")

    def __init__(self, array, index):
        self.array, self.index = array, index

    def __repr__(self):
        return f"_IndexUpdateRef({self.array!r}, {self.index!r})"

    def get(self, **_unused):
        """``x[index]``."""
        return _getitem(self.array, self.index)

    def set(self, values, **_unused):
        """A copy of x with ``x[index] = values`` (duplicate indices: one of them wins)."""
        return _scatter(self.array, self.index, values, "set")

    def add(self, values, **_unused):
        """A copy of x with ``x[index] += values`` (duplicate indices accumulate)."""
        return _scatter(self.array, self.index, values, "add")

    def multiply(self, values, **_unused):
        """A copy of x with ``x[index] *= values`` (duplicate indices accumulate)."""
        return _scatter(self.array, self.index, values, "mul")

    mul = multiply

    def divide(self, values, **_unused):
        """A copy of x with ``x[index] /= values`` (float arrays)."""
        from flamefx.numpy.math import reciprocal
        return _scatter(self.array, self.index, reciprocal(values), "mul")

    def min(self, values, **_unused):
        """A copy of x with ``x[index] = minimum(x[index], values)``."""
        return _scatter(self.array, self.index, values, "min")

    def max(self, values, **_unused):
        """A copy of x with ``x[index] = maximum(x[index], values)``."""
        return _scatter(self.array, self.index, values, "max")


class _IndexUpdateHelper:
    """The ``x.at`` property: ``x.at[idx].set(v)`` returns an updated copy of ``x``.

    >>> import flamefx.numpy as fnp
    >>> fnp.zeros(3).at[1].add(5.0).tolist()
    [0.0, 5.0, 0.0]
    """

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, index) -> _IndexUpdateRef:
        return _IndexUpdateRef(self.array, index)

    def __repr__(self):
        return f"_IndexUpdateHelper({self.array!r})"
