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
from flamefx.errors import (ConcretizationError, FlamefxTypeError, FlamefxValueError,
                            user_frame)
from flamefx.numpy.concrete import concrete_value
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
    if axis is None:
        arr, axis = lax.reshape(arr, (arr.size,)), 0
    full = _along_axis_index(arr, indices, axis, "take_along_axis")
    arr_shape = list(full.shape[:-1])
    arr_shape[canonical_axis(axis, arr.ndim)] = arr.shape[canonical_axis(axis, arr.ndim)]
    arr = broadcast_to(arr, arr_shape)
    return lax.gather(arr, full, tuple(range(arr.ndim)))


def _along_axis_index(arr, indices, axis: int, name: str):
    """The index (shape: broadcast shape + (arr.ndim,)) of ``indices`` along ``axis``,
    with the positions of the other axes running one to one."""
    _require_integer(indices, f"{name} indices")
    if indices.ndim != arr.ndim:
        raise FlamefxTypeError(f"{name}: indices ({indices.ndim}-d) and arr ({arr.ndim}-d) "
                               f"need the same number of dimensions\n  at {user_frame()}")
    axis = canonical_axis(axis, arr.ndim)
    arr_shape = list(arr.shape)
    arr_shape[axis] = 1
    out_shape = broadcast_shapes(arr_shape, indices.shape)
    indices = _wrap_negative(broadcast_to(indices, out_shape), arr.shape[axis])
    columns = [indices if d == axis else lax.iota(_INDEX_DTYPE, out_shape, d)
               for d in range(arr.ndim)]
    return lax.concatenate([lax.reshape(c, out_shape + (1,)) for c in columns], len(out_shape))


def put_along_axis(arr, indices, values, axis: int | None, inplace: bool = True, mode=None):
    """A copy of ``arr`` with ``values`` put at ``indices`` along ``axis`` (the inverse of
    ``take_along_axis``). As in JAX, arrays are immutable: pass ``inplace=False``.

    >>> put_along_axis([[1, 2], [3, 4]], [[1], [0]], 0, axis=1, inplace=False).tolist()
    [[1, 0], [0, 4]]
    """
    del mode  # out-of-range indices are clamped, as in every flamefx scatter
    if inplace:
        raise FlamefxValueError("put_along_axis: flamefx arrays are immutable, so it cannot "
                                "work in place; pass inplace=False and use the result")
    arr, indices = as_operand(arr), as_operand(indices)
    shape = arr.shape
    if axis is None:
        arr, axis = lax.reshape(arr, (arr.size,)), 0
        indices = lax.reshape(indices, (indices.size,))
    index = _along_axis_index(arr, indices, axis, "put_along_axis")
    values = broadcast_to(convert(as_operand(values), arr.dtype, arr.weak_type), index.shape[:-1])
    out = lax.scatter(arr, index, values, tuple(range(arr.ndim)), "set")
    return lax.reshape(out, shape) if out.shape != shape else out


def unravel_index(indices, shape) -> tuple:
    """The coordinates in an array of ``shape`` of flat ``indices``, one array per axis.

    Out-of-range indices are clamped into the array and negative ones count from the end
    (JAX's rule; NumPy raises instead).

    >>> [c.tolist() for c in unravel_index([5, 1], (2, 3))]
    [[1, 0], [2, 1]]
    """
    from flamefx.numpy.creation import shape_tuple
    from flamefx.numpy.math import clip
    indices = as_operand(indices)
    _require_integer(indices, "unravel_index indices")
    shape = shape_tuple(shape)
    total = int(np.prod(shape, dtype=np.int64))
    flat = _wrap_negative(clip(indices, -total, max(total - 1, 0)), total)
    coords, stride = [], total
    for dim in shape:
        stride //= max(dim, 1)
        coord = lax.div(flat, constant_like(flat, max(stride, 1)))
        coords.append(lax.rem(coord, constant_like(coord, max(dim, 1))))
    return tuple(coords)


def ravel_multi_index(multi_index, dims, mode: str = "raise", order: str = "C"):
    """The flat indices into an array of shape ``dims`` of the coordinate arrays
    ``multi_index``. ``mode``: 'raise' (concrete indices only), 'wrap' or 'clip'.

    >>> ravel_multi_index(([1, 0], [2, 1]), (2, 3)).tolist()
    [5, 1]
    """
    from flamefx.numpy.creation import shape_tuple
    from flamefx.numpy.math import clip, remainder
    dims = shape_tuple(dims)
    if len(multi_index) != len(dims):
        raise FlamefxValueError(f"ravel_multi_index: {len(multi_index)} index arrays for "
                                f"{len(dims)} dimensions {dims}\n  at {user_frame()}")
    if order not in ("C", "F"):
        raise FlamefxValueError(f"ravel_multi_index order must be 'C' or 'F', got {order!r}")
    coords = broadcast_arrays(*[as_operand(c) for c in multi_index])
    for c in coords:
        _require_integer(c, "ravel_multi_index indices")
    coords = [convert(c, dtypes.default_int()) for c in coords]
    if mode == "raise":
        for c, d in zip(coords, dims):
            values = _concrete_values(c, "ravel_multi_index with mode='raise'")
            if values.size and (values.min() < 0 or values.max() >= d):
                raise FlamefxValueError(f"ravel_multi_index: an index is out of bounds for a "
                                        f"dimension of size {d} (use mode='clip' or 'wrap')")
    elif mode == "wrap":
        coords = [remainder(c, d) for c, d in zip(coords, dims)]
    elif mode == "clip":
        coords = [clip(c, 0, d - 1) for c, d in zip(coords, dims)]
    else:
        raise FlamefxValueError(f"ravel_multi_index mode must be 'raise', 'wrap' or 'clip', "
                                f"got {mode!r}")
    strides = np.cumprod((1,) + (dims[::-1] if order == "C" else dims)[:-1])
    strides = strides[::-1] if order == "C" else strides
    out = None
    for c, stride in zip(coords, strides):
        term = lax.mul(c, constant_like(c, int(stride)))
        out = term if out is None else lax.add(out, term)
    return out


def select(condlist, choicelist, default=0):
    """The element of the first ``choicelist`` entry whose condition holds, else ``default``.

    >>> select([[True, False], [True, True]], [[1, 2], [3, 4]], default=0).tolist()
    [1, 4]
    """
    from flamefx.numpy.math import where
    if len(condlist) != len(choicelist):
        raise FlamefxValueError(f"select: condlist ({len(condlist)}) and choicelist "
                                f"({len(choicelist)}) need the same length")
    if not condlist:
        raise FlamefxValueError("select: condlist must not be empty")
    out = default
    for condition, choice in reversed(list(zip(condlist, choicelist))):
        condition = as_operand(condition)
        if condition.dtype != dtypes.bool_:
            raise FlamefxTypeError(f"select: conditions must be boolean, got "
                                   f"{condition.dtype}\n  at {user_frame()}")
        out = where(condition, choice, out)
    return as_operand(out)


def nonzero(a, *, size: int | None = None, fill_value=None) -> tuple:
    """The indices of the nonzero elements, one array per axis.

    Without ``size`` the result's length depends on the values, so ``a`` must be concrete.
    With a static ``size`` (JAX's way to jit it) the first ``size`` indices are returned,
    padded with ``fill_value`` (default 0; a scalar or one value per axis).

    >>> [i.tolist() for i in nonzero([0, 3, 0, 4])]
    [[1, 3]]
    >>> [i.tolist() for i in nonzero([0, 3, 0, 4], size=3, fill_value=-1)]
    [[1, 3, -1]]
    """
    if size is None:
        values = _concrete_values(a, "nonzero")
        if values.ndim == 0:
            raise FlamefxValueError("nonzero of a 0-d array is not allowed (NumPy 2 and JAX "
                                    "agree); use fnp.atleast_1d(a) first")
        return tuple(core.to_array(i.astype(dtypes.default_int())) for i in np.nonzero(values))
    return _nonzero_sized(as_operand(a), size, fill_value)


def _nonzero_sized(a, size, fill_value) -> tuple:
    from flamefx.numpy.creation import shape_tuple, zeros
    from flamefx.numpy.math import where
    from flamefx.numpy.reductions import cumsum
    (size,) = shape_tuple((size,))
    if a.ndim == 0:
        raise FlamefxValueError("nonzero of a 0-d array is not allowed; use fnp.atleast_1d")
    index_dtype = dtypes.default_int()
    n = a.size
    mask = convert(lax.ne(a, constant_like(a, 0)) if a.dtype != dtypes.bool_ else a, index_dtype)
    seen = cumsum(lax.reshape(mask, (n,)))  # how many nonzeros up to and including each entry
    # found[k] = how many entries have seen <= k = the flat index of the (k+1)-th nonzero
    # (a bincount of ``seen``, then its running sum; the extra bucket catches seen > size).
    counts = lax.scatter(zeros(size + 1, index_dtype),
                         lax.reshape(lax.min(seen, constant_like(seen, size)), (n, 1)),
                         constant_like(seen, 1), (0,), "add")
    found = cumsum(lax.slice(counts, (0,), (size,)))
    out, stride = [], n
    for dim in a.shape:
        stride //= max(dim, 1)
        coord = lax.div(found, constant_like(found, max(stride, 1)))
        out.append(lax.rem(coord, constant_like(coord, max(dim, 1))))
    if fill_value is not None:
        fills = fill_value if isinstance(fill_value, tuple) else (fill_value,) * a.ndim
        if len(fills) != a.ndim:
            raise FlamefxValueError(f"nonzero: fill_value needs one value per axis ({a.ndim}),"
                                    f" got {fill_value!r}")
        total = lax.slice(seen, (n - 1,), (n,)) if n else zeros(1, index_dtype)
        padding = lax.ge(lax.iota(index_dtype, (size,), 0), broadcast_to(total, (size,)))
        out = [where(padding, fill, entry) for fill, entry in zip(fills, out)]
    return tuple(out)


def flatnonzero(a, *, size: int | None = None, fill_value=None):
    """The indices of the nonzero elements of the flattened array (``size``: see nonzero).

    >>> flatnonzero([[0, 1], [1, 0]]).tolist()
    [1, 2]
    """
    a = as_operand(a)
    return nonzero(lax.reshape(a, (a.size,)), size=size, fill_value=fill_value)[0]


def argwhere(a, *, size: int | None = None, fill_value=None):
    """The indices of the nonzero elements as rows (``size``: see nonzero).

    >>> argwhere([0, 5]).tolist()
    [[1]]
    """
    a = as_operand(a)
    if a.ndim == 0:
        count = 1 if size is None else size  # NumPy: a 0-d array has one "row" of no columns
        picked = int(_concrete_values(a, "argwhere") != 0) if size is None else count
        return lax.broadcast_in_dim(core.to_array(np.zeros((), dtypes.default_int())),
                                    (picked, 0), ())
    columns = nonzero(a, size=size, fill_value=fill_value)
    return lax.concatenate([lax.reshape(c, (c.shape[0], 1)) for c in columns], 1)


def _concrete_values(a, what: str) -> np.ndarray:
    return np.asarray(concrete_value(a, lambda aval: ConcretizationError(
        f"{what} has a result whose shape depends on the values of a traced array ({aval}), "
        f"which are unknown while tracing.\n  at {user_frame()}\nUse fnp.where(mask, x, "
        f"other) to select values with a fixed shape.")))


# --- x[idx] ------------------------------------------------------------------------------------


class _Advanced:
    """An integer-array entry of an index (after boolean masks became integer arrays)."""

    __slots__ = ("indices", "mask_shape")

    def __init__(self, indices, mask_shape=None):
        # mask_shape: on the first entry of a boolean mask, the dims the mask must match
        self.indices, self.mask_shape = indices, mask_shape


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
        entries = [_Advanced(core.to_array(i.astype(_INDEX_DTYPE))) for i in np.nonzero(values)]
        entries[0].mask_shape = values.shape
        return entries
    if not dtypes.is_int(entry.dtype):
        raise IndexError(f"arrays used as indices must be of integer or boolean type, got "
                         f"{entry.dtype}")
    return [_Advanced(entry)]


def _is_scalar_mask(index) -> bool:
    return (isinstance(index, (Array, Tracer, np.ndarray)) and index.shape == ()
            and index.dtype == dtypes.bool_)


def _scalar_mask(x, mask):
    """``x[mask]`` for a 0-d boolean mask (``x[x > 0]`` with 0-d ``x``): NumPy adds an axis
    of length 1 (True) or 0 (False). The mask must be concrete, as any boolean mask."""
    keep = bool(_concrete_values(mask, "boolean mask indexing"))
    y = lax.reshape(x, (1,) + x.shape)
    return y if keep else lax.slice(y, (0,) * y.ndim, (0,) + x.shape)


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
    if _is_scalar_mask(index):
        return _scalar_mask(x, index)
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
        if isinstance(e, _Advanced) and e.mask_shape is not None:
            covered = x.shape[dim:dim + len(e.mask_shape)]
            if covered != e.mask_shape:
                raise IndexError(f"boolean mask of shape {e.mask_shape} does not match the "
                                 f"indexed dims {covered} of an array of shape {x.shape}")
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
