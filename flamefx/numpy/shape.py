"""Shape manipulation: reshape, transpose, joining, splitting, tiling, flipping, padding.

>>> import flamefx.numpy as fnp
>>> fnp.reshape(fnp.arange(6), (2, -1)).shape
(2, 3)
"""

from __future__ import annotations

import itertools

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, abstract_shape_error, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_to, canonical_axes, canonical_axis,
                                     convert, promote_dtypes)


def shape(a) -> tuple:
    """The shape of ``a``.

    >>> shape([[1, 2, 3]])
    (1, 3)
    """
    return tuple(core.get_aval(a).shape) if not isinstance(a, list) else np.shape(a)


def ndim(a) -> int:
    """The number of dimensions of ``a``.

    >>> ndim(1.0)
    0
    """
    return len(shape(a))


def size(a, axis=None) -> int:
    """The number of elements of ``a`` (along ``axis`` if given).

    >>> size([[1, 2, 3]])
    3
    """
    dims = shape(a)
    return int(np.prod(dims, dtype=np.int64)) if axis is None else dims[axis]


class AxisError(FlamefxValueError, IndexError):
    """An axis out of range for an array (like NumPy's AxisError, both a ValueError and an
    IndexError, as the array API asks of ``expand_dims``)."""


def astype(x, dtype, copy: bool = False, device=None):
    """``x`` converted to ``dtype`` (floats to ints truncate toward zero), on ``device`` if
    given. ``copy`` is accepted for the array API: flamefx arrays are immutable, so a copy
    and the original cannot be told apart.

    >>> astype([1.7, -1.7], int).tolist()
    [1, -1]
    """
    del copy
    out = convert(as_operand(x), dtypes.canonicalize(dtype))
    if device is None:
        return out
    from flamefx.transfer import device_put
    return device_put(out, device)


def _resolve_shape(new_shape, total: int) -> tuple:
    if isinstance(new_shape, (int, np.integer)):
        new_shape = (new_shape,)
    dims = new_shape if isinstance(new_shape, (list, tuple)) else (new_shape,)
    if any(isinstance(d, core.Tracer) and d.to_concrete() is None for d in dims):
        raise abstract_shape_error(new_shape)
    new_shape = [int(d) for d in new_shape]
    unknown = [i for i, d in enumerate(new_shape) if d == -1]
    if len(unknown) > 1:
        raise FlamefxValueError(f"reshape: only one dimension can be -1, got {tuple(new_shape)}")
    if unknown:
        known = int(np.prod([d for d in new_shape if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise FlamefxValueError(f"cannot reshape an array of {total} elements into shape "
                                    f"{tuple(new_shape)}\n  at {user_frame()}")
        new_shape[unknown[0]] = total // known
    return tuple(new_shape)


def reshape(a, shape=None, order: str = "C", *, newshape=None, copy: bool | None = None):
    """``a`` with a new ``shape`` of the same size; one dimension may be -1.

    ``newshape=`` is NumPy's older name of ``shape`` (JAX accepts both); ``copy`` is
    accepted for the array API (flamefx arrays are immutable).

    >>> reshape([1, 2, 3, 4], (2, -1)).tolist()
    [[1, 2], [3, 4]]
    >>> reshape([1, 2], newshape=(2, 1)).shape
    (2, 1)
    """
    del copy
    if (shape is None) == (newshape is None):
        raise FlamefxTypeError(f"reshape takes the new shape as `shape` (or NumPy's "
                               f"`newshape`), exactly one of them\n  at {user_frame()}")
    a = as_operand(a)
    newshape = _resolve_shape(shape if shape is not None else newshape, a.size)
    if order == "F":
        flipped = lax.reshape(transpose(a), newshape[::-1])
        return transpose(flipped)
    if order != "C":
        raise FlamefxValueError(f"reshape order must be 'C' or 'F', got {order!r}")
    return a if newshape == a.shape else lax.reshape(a, newshape)


def ravel(a, order: str = "C"):
    """``a`` flattened to one dimension.

    >>> ravel([[1, 2], [3, 4]]).tolist()
    [1, 2, 3, 4]
    """
    return reshape(a, (-1,), order=order)


def transpose(a, axes=None):
    """``a`` with its axes permuted (reversed when ``axes`` is None).

    >>> transpose([[1, 2]]).shape
    (2, 1)
    """
    a = as_operand(a)
    if axes is None:
        axes = tuple(range(a.ndim))[::-1]
    axes = tuple(canonical_axis(ax, a.ndim) for ax in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise FlamefxValueError(f"transpose axes {axes} are not a permutation of "
                                f"{a.ndim} dimensions\n  at {user_frame()}")
    return a if axes == tuple(range(a.ndim)) else lax.transpose(a, axes)


def permute_dims(a, axes=None):
    """The array-API name of ``transpose``.

    >>> permute_dims([[1, 2]], (1, 0)).shape
    (2, 1)
    """
    return transpose(a, axes)


def swapaxes(a, axis1: int, axis2: int):
    """``a`` with two axes exchanged.

    >>> swapaxes([[1, 2]], 0, 1).shape
    (2, 1)
    """
    a = as_operand(a)
    perm = list(range(a.ndim))
    i, j = canonical_axis(axis1, a.ndim), canonical_axis(axis2, a.ndim)
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm)


def moveaxis(a, source, destination):
    """``a`` with axes moved from ``source`` to ``destination`` positions.

    >>> import flamefx.numpy as fnp
    >>> moveaxis(fnp.zeros((3, 4, 5)), 0, -1).shape
    (4, 5, 3)
    """
    a = as_operand(a)
    source = [source] if isinstance(source, (int, np.integer)) else list(source)
    destination = [destination] if isinstance(destination, (int, np.integer)) else list(destination)
    if len(source) != len(destination):
        raise FlamefxValueError("moveaxis: source and destination need the same length")
    source = [canonical_axis(s, a.ndim, "source") for s in source]
    destination = [canonical_axis(d, a.ndim, "destination") for d in destination]
    rest = [i for i in range(a.ndim) if i not in source]
    perm = [None] * a.ndim
    for s, d in zip(source, destination):
        perm[d] = s
    fill = iter(rest)
    perm = [next(fill) if p is None else p for p in perm]
    return transpose(a, perm)


def expand_dims(a, axis):
    """``a`` with new size-1 axes at the positions ``axis`` (of the result).

    >>> expand_dims([1, 2], 0).shape
    (1, 2)
    """
    a = as_operand(a)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out_ndim = a.ndim + len(axes)
    for ax in axes:
        if not -out_ndim <= ax < out_ndim:
            raise AxisError(f"expand_dims: axis {ax} is out of bounds for the result of "
                            f"{out_ndim} dimension(s) (input shape {a.shape})\n  at "
                            f"{user_frame()}")
    axes = canonical_axes(axes, out_ndim)
    dims = iter(a.shape)
    new_shape = tuple(1 if i in axes else next(dims) for i in range(out_ndim))
    return lax.reshape(a, new_shape)


def squeeze(a, axis=None):
    """``a`` without size-1 axes (all of them, or those in ``axis``).

    >>> squeeze([[1], [2]]).shape
    (2,)
    """
    a = as_operand(a)
    if axis is None:
        axes = tuple(i for i, d in enumerate(a.shape) if d == 1)
    else:
        axes = canonical_axes(axis, a.ndim)
        for i in axes:
            if a.shape[i] != 1:
                raise FlamefxValueError(f"cannot squeeze axis {i} of shape {a.shape}: its size "
                                        f"is not 1\n  at {user_frame()}")
    if not axes:
        return a
    return lax.reshape(a, tuple(d for i, d in enumerate(a.shape) if i not in axes))


def atleast_1d(*arys):
    """Each input with at least one dimension.

    >>> atleast_1d(1.0).shape
    (1,)
    """
    out = [as_operand(a) for a in arys]
    out = [a if a.ndim >= 1 else lax.reshape(a, (1,)) for a in out]
    return out[0] if len(out) == 1 else out


def atleast_2d(*arys):
    """Each input with at least two dimensions (new axes in front).

    >>> atleast_2d([1, 2]).shape
    (1, 2)
    """
    out = [as_operand(a) for a in arys]
    out = [a if a.ndim >= 2 else lax.reshape(a, (1,) * (2 - a.ndim) + a.shape) for a in out]
    return out[0] if len(out) == 1 else out


def atleast_3d(*arys):
    """Each input with at least three dimensions (NumPy's placement of new axes).

    >>> atleast_3d([1, 2]).shape
    (1, 2, 1)
    """
    out = []
    for a in map(as_operand, arys):
        if a.ndim == 0:
            a = lax.reshape(a, (1, 1, 1))
        elif a.ndim == 1:
            a = lax.reshape(a, (1, a.shape[0], 1))
        elif a.ndim == 2:
            a = lax.reshape(a, a.shape + (1,))
        out.append(a)
    return out[0] if len(out) == 1 else out


def concatenate(arrays, axis: int | None = 0):
    """The arrays joined along an existing ``axis`` (None: flattened first).

    >>> concatenate([[1, 2], [3]]).tolist()
    [1, 2, 3]
    """
    if not isinstance(arrays, (list, tuple)):
        raise FlamefxTypeError("concatenate takes a list or tuple of arrays")
    if not arrays:
        raise FlamefxValueError("concatenate needs at least one array")
    arrays = promote_dtypes(*arrays)
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    if any(a.ndim == 0 for a in arrays):
        raise FlamefxValueError("zero-dimensional arrays cannot be concatenated")
    axis = canonical_axis(axis, arrays[0].ndim)
    if len(arrays) == 1:
        return arrays[0]
    return lax.concatenate(arrays, axis)


concat = concatenate


def stack(arrays, axis: int = 0):
    """The arrays (all of one shape) joined along a new ``axis``.

    >>> stack([[1, 2], [3, 4]], axis=1).tolist()
    [[1, 3], [2, 4]]
    """
    arrays = [as_operand(a) for a in arrays]
    if not arrays:
        raise FlamefxValueError("stack needs at least one array")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise FlamefxValueError(f"stack needs arrays of one shape, got {sorted(shapes)}\n  at "
                                f"{user_frame()}")
    axis = canonical_axis(axis, arrays[0].ndim + 1)
    return concatenate([expand_dims(a, axis) for a in arrays], axis)


def hstack(tup):
    """The arrays joined column-wise (along axis 1; axis 0 for 1-D arrays).

    >>> hstack([[1], [2, 3]]).tolist()
    [1, 2, 3]
    """
    arrays = atleast_1d(*tup) if len(tup) > 1 else [atleast_1d(*tup)]
    return concatenate(arrays, 0 if arrays[0].ndim == 1 else 1)


def vstack(tup):
    """The arrays joined row-wise (1-D arrays become rows).

    >>> vstack([[1, 2], [3, 4]]).shape
    (2, 2)
    """
    arrays = atleast_2d(*tup) if len(tup) > 1 else [atleast_2d(*tup)]
    return concatenate(arrays, 0)


def column_stack(tup):
    """1-D arrays as the columns of a 2-D array.

    >>> column_stack([[1, 2], [3, 4]]).tolist()
    [[1, 3], [2, 4]]
    """
    arrays = [as_operand(a) for a in tup]
    arrays = [lax.reshape(a, (a.size, 1)) if a.ndim < 2 else a for a in arrays]
    return concatenate(arrays, 1)


def _split_points(n: int, indices_or_sections, even: bool) -> list:
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise FlamefxValueError("number of sections must be larger than 0")
        if even and n % sections:
            raise FlamefxValueError(f"array split does not result in an equal division: {n} "
                                    f"elements into {sections} sections (use array_split)")
        base, extra = divmod(n, sections)
        sizes = [base + 1] * extra + [base] * (sections - extra)
        return [0] + list(np.cumsum(sizes))
    points = [int(i) for i in indices_or_sections]
    return [0] + points + [n]


def _slice_axis(a, axis: int, start: int, stop: int):
    starts, limits = [0] * a.ndim, list(a.shape)
    starts[axis], limits[axis] = start, stop
    return lax.slice(a, tuple(starts), tuple(limits))


def _clamp_index(i: int, n: int) -> int:
    return min(max(i + n if i < 0 else i, 0), n)


def _split(a, indices_or_sections, axis, even: bool) -> list:
    a = as_operand(a)
    axis = canonical_axis(axis, a.ndim)
    n = a.shape[axis]
    points = _split_points(n, indices_or_sections, even)
    pieces = []
    for start, stop in itertools.pairwise(points):
        start = _clamp_index(int(start), n)
        stop = max(_clamp_index(int(stop), n), start)
        pieces.append(_slice_axis(a, axis, start, stop))
    return pieces


def split(a, indices_or_sections, axis: int = 0) -> list:
    """``a`` cut into equal sections, or at the given indices, along ``axis``.

    >>> [p.tolist() for p in split([1, 2, 3, 4], 2)]
    [[1, 2], [3, 4]]
    """
    return _split(a, indices_or_sections, axis, even=True)


def array_split(a, indices_or_sections, axis: int = 0) -> list:
    """Like ``split`` but sections may differ in size by one.

    >>> [p.tolist() for p in array_split([1, 2, 3], 2)]
    [[1, 2], [3]]
    """
    return _split(a, indices_or_sections, axis, even=False)


def tile(A, reps):
    """``A`` repeated ``reps`` times along each axis.

    >>> tile([1, 2], 2).tolist()
    [1, 2, 1, 2]
    """
    A = as_operand(A)
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    ndim = max(A.ndim, len(reps))
    reps = (1,) * (ndim - len(reps)) + reps
    A = lax.reshape(A, (1,) * (ndim - A.ndim) + A.shape)
    # Interleave a repetition axis before each axis, broadcast, and merge each pair.
    interleaved = tuple(d for pair in zip(reps, A.shape) for d in pair)
    expanded = lax.broadcast_in_dim(A, interleaved, tuple(range(1, 2 * ndim, 2)))
    return lax.reshape(expanded, tuple(r * d for r, d in zip(reps, A.shape)))


def repeat(a, repeats, axis: int | None = None):
    """Each element of ``a`` repeated ``repeats`` times along ``axis`` (None: flattened).

    >>> repeat([1, 2], 2).tolist()
    [1, 1, 2, 2]
    """
    a = as_operand(a)
    if axis is None:
        a, axis = ravel(a), 0
    axis = canonical_axis(axis, a.ndim)
    if isinstance(repeats, (int, np.integer)):
        r = int(repeats)
        expanded_shape = a.shape[:axis + 1] + (r,) + a.shape[axis + 1:]
        dims = tuple(i if i <= axis else i + 1 for i in range(a.ndim))
        expanded = lax.broadcast_in_dim(a, expanded_shape, dims)
        return lax.reshape(expanded, a.shape[:axis] + (a.shape[axis] * r,) + a.shape[axis + 1:])
    from flamefx.numpy.indexing import take
    counts = np.asarray(repeats)  # per-element repeat counts must be concrete
    positions = np.repeat(np.arange(a.shape[axis]), counts)
    return take(a, core.to_array(positions.astype(np.int32)), axis=axis)


def flip(m, axis=None):
    """``m`` with the order of elements reversed along ``axis`` (None: every axis).

    >>> flip([1, 2, 3]).tolist()
    [3, 2, 1]
    """
    m = as_operand(m)
    axes = canonical_axes(axis, m.ndim)
    return lax.rev(m, axes) if axes else m


def fliplr(m):
    """``m`` flipped left to right (axis 1).

    >>> fliplr([[1, 2]]).tolist()
    [[2, 1]]
    """
    return flip(m, 1)


def flipud(m):
    """``m`` flipped upside down (axis 0).

    >>> flipud([[1], [2]]).tolist()
    [[2], [1]]
    """
    return flip(m, 0)


def roll(a, shift, axis=None):
    """``a`` rolled by ``shift`` positions along ``axis`` (None: flattened, then reshaped).

    >>> roll([1, 2, 3], 1).tolist()
    [3, 1, 2]
    """
    a = as_operand(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), a.shape)
    shifts = (shift,) if isinstance(shift, (int, np.integer)) else tuple(shift)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    if len(shifts) != len(axes):
        raise FlamefxValueError("roll: shift and axis need the same length")
    for s, ax in zip(shifts, axes):
        ax = canonical_axis(ax, a.ndim)
        n = a.shape[ax]
        if n == 0:
            continue
        s = int(s) % n
        if s:
            head, tail = _slice_axis(a, ax, 0, n - s), _slice_axis(a, ax, n - s, n)
            a = lax.concatenate([tail, head], ax)
    return a


def _pad_pairs(pad_width, ndim: int) -> list:
    widths = np.asarray(pad_width, dtype=np.int64)
    if widths.ndim == 0:
        widths = np.broadcast_to(widths, (ndim, 2))
    elif widths.shape == (2,) or widths.shape == (1, 2):
        widths = np.broadcast_to(widths.reshape(1, 2), (ndim, 2))
    elif widths.shape == (1,):
        widths = np.broadcast_to(widths, (ndim, 2))
    if widths.shape != (ndim, 2) or (widths < 0).any():
        raise FlamefxValueError(f"pad_width {pad_width!r} does not fit an array of {ndim} "
                                f"dimension(s) (give non-negative (before, after) pairs)")
    return [(int(lo), int(hi)) for lo, hi in widths]


def _edge_slices(a, axis, lo, hi, mode):
    n = a.shape[axis]

    def part(start, stop):
        return _slice_axis(a, axis, start, stop)

    if mode == "edge":
        before = broadcast_to(part(0, 1), with_dim(a.shape, axis, lo)) if lo else None
        after = broadcast_to(part(n - 1, n), with_dim(a.shape, axis, hi)) if hi else None
    elif mode == "wrap":
        if lo > n or hi > n:
            raise FlamefxValueError("pad mode 'wrap' supports widths up to the axis length")
        before = part(n - lo, n) if lo else None
        after = part(0, hi) if hi else None
    else:  # reflect (edge value not repeated)
        if lo >= n or hi >= n:
            raise FlamefxValueError("pad mode 'reflect' supports widths below the axis length")
        before = flip(part(1, lo + 1), axis) if lo else None
        after = flip(part(n - 1 - hi, n - 1), axis) if hi else None
    pieces = [p for p in (before, a, after) if p is not None]
    return lax.concatenate(pieces, axis) if len(pieces) > 1 else a


def with_dim(shape, axis, value) -> tuple:
    """``shape`` with dimension ``axis`` set to ``value``.

    >>> with_dim((2, 3), -1, 5)
    (2, 5)
    """
    shape = list(shape)
    shape[axis] = value
    return tuple(shape)


def pad(array, pad_width, mode: str = "constant", constant_values=0):
    """``array`` padded with ``pad_width`` (int, (before, after) or one pair per axis).

    Modes: 'constant' (``constant_values``), 'edge', 'wrap' and 'reflect'.

    >>> pad([1, 2], 1).tolist()
    [0, 1, 2, 0]
    >>> pad([1, 2], (0, 2), mode="edge").tolist()
    [1, 2, 2, 2]
    """
    array = as_operand(array)
    pairs = _pad_pairs(pad_width, array.ndim)
    if mode == "constant":
        value = convert(as_operand(constant_values), array.dtype, array.weak_type)
        if value.ndim != 0:
            raise FlamefxValueError("pad: only a scalar constant_values is supported")
        return lax.pad(array, value, tuple((lo, hi, 0) for lo, hi in pairs))
    if mode not in ("edge", "wrap", "reflect"):
        raise FlamefxValueError(f"pad mode {mode!r} is not supported; use constant, edge, wrap "
                                f"or reflect")
    for axis, (lo, hi) in enumerate(pairs):
        if lo or hi:
            array = _edge_slices(array, axis, lo, hi, mode)
    return array


# --- rotations, stacking and splitting -----------------------------------------------------------


def rot90(m, k: int = 1, axes: tuple = (0, 1)):
    """``m`` rotated by 90 degrees ``k`` times in the plane of ``axes`` (first towards second).

    >>> rot90([[1, 2], [3, 4]]).tolist()
    [[2, 4], [1, 3]]
    """
    m = as_operand(m)
    if len(axes) != 2:
        raise FlamefxValueError(f"rot90 takes two axes, got {axes!r}\n  at {user_frame()}")
    ax1, ax2 = canonical_axis(axes[0], m.ndim), canonical_axis(axes[1], m.ndim)
    if ax1 == ax2:
        raise FlamefxValueError(f"rot90 needs two different axes, got {axes!r}\n  at "
                                f"{user_frame()}")
    k = int(k) % 4
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, ax1), ax2)
    perm = list(range(m.ndim))
    perm[ax1], perm[ax2] = ax2, ax1
    return transpose(flip(m, ax2), perm) if k == 1 else flip(transpose(m, perm), ax2)


def rollaxis(a, axis: int, start: int = 0):
    """``a`` with ``axis`` moved to lie before position ``start`` (prefer ``moveaxis``).

    >>> import flamefx.numpy as fnp
    >>> rollaxis(fnp.zeros((3, 4, 5)), 2).shape
    (5, 3, 4)
    """
    a = as_operand(a)
    axis = canonical_axis(axis, a.ndim)
    if not -a.ndim <= start <= a.ndim:
        raise AxisError(f"rollaxis: start {start} is out of bounds for {a.ndim} dimension(s)"
                        f"\n  at {user_frame()}")
    start = start + a.ndim if start < 0 else start
    return moveaxis(a, axis, start - 1 if start > axis else start)


def _block(parts) -> tuple:
    """(array, list depth) of a nested list of arrays, joined innermost-first."""
    if isinstance(parts, tuple):
        raise FlamefxValueError(f"block takes nested lists, not tuples, got {parts!r}")
    if not isinstance(parts, list):
        return as_operand(parts), 1
    if not parts:
        raise FlamefxValueError("block does not allow empty lists")
    blocks, depths = zip(*(_block(p) for p in parts))
    if len(set(depths)) != 1:
        raise FlamefxValueError(f"block: mismatched list depths {depths}\n  at {user_frame()}")
    rank = max(depths[0], *(b.ndim for b in blocks))
    blocks = [lax.reshape(b, (1,) * (rank - b.ndim) + b.shape) if b.ndim < rank else b
              for b in blocks]
    return concatenate(blocks, axis=-depths[0]), depths[0] + 1


def block(arrays):
    """An array assembled from nested lists of blocks (the innermost list joins the last axis).

    >>> import flamefx.numpy as fnp
    >>> block([[fnp.eye(2), fnp.zeros((2, 1))]]).shape
    (2, 3)
    """
    return _block(arrays)[0]


def dstack(tup, dtype=None):
    """The arrays joined depth-wise (along axis 2, after ``atleast_3d``).

    >>> dstack([[1, 2], [3, 4]]).shape
    (1, 2, 2)
    """
    arrays = [atleast_3d(a) for a in tup]
    out = concatenate(arrays, 2)
    return out if dtype is None else astype(out, dtype)


def row_stack(tup):
    """NumPy's older name of ``vstack``.

    >>> row_stack([[1], [2]]).shape
    (2, 1)
    """
    return vstack(tup)


def _split_at_least(name: str, ary, indices_or_sections, min_ndim: int, axis: int) -> list:
    ary = as_operand(ary)
    if ary.ndim < min_ndim:
        raise FlamefxValueError(f"{name} needs an array of at least {min_ndim} dimension(s), "
                                f"got shape {ary.shape}\n  at {user_frame()}")
    return _split(ary, indices_or_sections, axis, even=True)


def vsplit(ary, indices_or_sections) -> list:
    """``split`` along axis 0 (arrays of 2 or more dimensions).

    >>> [p.shape for p in vsplit([[1, 2], [3, 4]], 2)]
    [(1, 2), (1, 2)]
    """
    return _split_at_least("vsplit", ary, indices_or_sections, 2, 0)


def hsplit(ary, indices_or_sections) -> list:
    """``split`` along axis 1 (axis 0 for 1-D arrays).

    >>> [p.tolist() for p in hsplit([1, 2, 3, 4], 2)]
    [[1, 2], [3, 4]]
    """
    ary = as_operand(ary)
    return _split_at_least("hsplit", ary, indices_or_sections, 1, 1 if ary.ndim > 1 else 0)


def dsplit(ary, indices_or_sections) -> list:
    """``split`` along axis 2 (arrays of 3 or more dimensions).

    >>> import flamefx.numpy as fnp
    >>> [p.shape for p in dsplit(fnp.zeros((1, 1, 4)), 2)]
    [(1, 1, 2), (1, 1, 2)]
    """
    return _split_at_least("dsplit", ary, indices_or_sections, 3, 2)


def unstack(x, /, *, axis: int = 0) -> tuple:
    """The slices of ``x`` along ``axis``, as a tuple (the inverse of ``stack``).

    >>> [u.tolist() for u in unstack([[1, 2], [3, 4]], axis=1)]
    [[1, 3], [2, 4]]
    """
    x = as_operand(x)
    if x.ndim == 0:
        raise FlamefxValueError(f"unstack needs an array of at least one dimension\n  at "
                                f"{user_frame()}")
    x = moveaxis(x, canonical_axis(axis, x.ndim), 0)
    return tuple(lax.reshape(_slice_axis(x, 0, i, i + 1), x.shape[1:])
                 for i in range(x.shape[0]))


def matrix_transpose(x, /):
    """``x`` with its last two axes swapped (a batch of matrices transposed).

    >>> import flamefx.numpy as fnp
    >>> matrix_transpose(fnp.zeros((5, 2, 3))).shape
    (5, 3, 2)
    """
    x = as_operand(x)
    if x.ndim < 2:
        raise FlamefxValueError(f"matrix_transpose needs an array of at least 2 dimensions, "
                                f"got shape {x.shape}\n  at {user_frame()}")
    return swapaxes(x, -1, -2)
