"""Sorting and searching: sort, argsort, lexsort, partition, argpartition, searchsorted.

Everything here is built on the ``sort`` and ``top_k`` primitives (flamefx/primitives/
sorting.py), so it differentiates, batches and jits. The order is JAX's: NaNs last,
-0.0 equal to 0.0, and sorts are stable unless asked otherwise.

>>> import flamefx.numpy as fnp
>>> fnp.sort(fnp.array([3.0, 1.0, 2.0])).tolist()
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.promotion import (as_operand, canonical_axis, promote_dtypes,
                                     to_inexact_dtype)
from flamefx.primitives import sorting as sorting_primitives

SEARCHSORTED_METHODS = ("scan", "scan_unrolled", "sort", "compare_all")


def _check_no_order(order, what: str):
    if order is not None:
        raise FlamefxTypeError(f"{what}: the 'order' argument (structured fields) is not "
                               f"supported\n  at {user_frame()}")


def _flattened_or(a, axis):
    """``a`` and the axis to work on: ``axis=None`` means the flattened array."""
    a = as_operand(a)
    if axis is None:
        return lax.reshape(a, (a.size,)), 0
    return a, canonical_axis(axis, a.ndim)


def sort(a, axis: int | None = -1, *, kind=None, order=None, stable: bool = True,
         descending: bool = False):
    """A sorted copy of ``a`` along ``axis`` (None: of the flattened array).

    NaNs sort last, -0.0 and 0.0 are equal (their order kept). ``kind`` ('quicksort',
    'stable', ...) is accepted for NumPy code and ignored: flamefx's sorts are stable (JAX
    0.10 rejects ``kind``). ``descending`` reverses the ascending result, as JAX does.

    >>> sort([[3, 1], [0, 2]], axis=None).tolist()
    [0, 1, 2, 3]
    """
    del kind
    _check_no_order(order, "sort")
    a, dimension = _flattened_or(a, axis)
    out = sorting_primitives.sort(a, dimension=dimension, is_stable=stable)
    return lax.rev(out, (dimension,)) if descending else out


def _index_dtype(dtype):
    return dtypes.default_int() if dtype is None else dtypes.canonicalize(dtype)


def argsort(a, axis: int | None = -1, *, kind=None, order=None, stable: bool = True,
            descending: bool = False, dtype=None):
    """The indices that sort ``a`` along ``axis`` (None: of the flattened array).

    Stable: equal elements keep their order, also when ``descending`` (as in JAX, the
    descending order is not the ascending one reversed). ``kind`` is accepted and ignored.

    >>> argsort([3, 1, 2]).tolist()
    [1, 2, 0]
    >>> argsort([1, 2, 1], descending=True).tolist()
    [1, 0, 2]
    """
    del kind
    _check_no_order(order, "argsort")
    a, dimension = _flattened_or(a, axis)
    iota = lax.iota(_index_dtype(dtype), a.shape, dimension)
    if descending:
        # Sorting the reversed array and reading the result backwards keeps ties in order.
        a, iota = lax.rev(a, (dimension,)), lax.rev(iota, (dimension,))
    _, indices = sorting_primitives.sort_key_val(a, iota, dimension=dimension, is_stable=stable)
    return lax.rev(indices, (dimension,)) if descending else indices


def sort_complex(a):
    """``a`` sorted along its last axis by real part, then imaginary part, as a complex array
    (complex128 for 64-bit input, else complex64, as in JAX).

    >>> sort_complex([3, 1, 2]).tolist()
    [(1+0j), (2+0j), (3+0j)]
    """
    a = as_operand(a)
    out = sort(a, axis=-1)
    wide = to_inexact_dtype(a.dtype) in (dtypes.float64, dtypes.complex128)
    complex_dtype = dtypes.complex128 if wide else dtypes.complex64
    return out if out.dtype == complex_dtype else lax.convert_element_type(out, complex_dtype)


def lexsort(keys, axis: int = -1):
    """Indices that sort by several keys: the LAST key is the primary one (NumPy's rule).

    >>> lexsort([[1, 0, 2], [0, 1, 0]]).tolist()
    [0, 2, 1]
    """
    keys = [as_operand(k) for k in keys]
    if not keys:
        raise FlamefxTypeError(f"lexsort needs at least one key\n  at {user_frame()}")
    shapes = {k.shape for k in keys}
    if len(shapes) > 1:
        raise FlamefxValueError(f"lexsort keys must have one shape, got {sorted(shapes)}\n  at "
                                f"{user_frame()}")
    if keys[0].ndim == 0:
        return core.to_array(np.zeros((), dtypes.default_int()))
    dimension = canonical_axis(axis, keys[0].ndim)
    iota = lax.iota(dtypes.default_int(), keys[0].shape, dimension)
    outs = sorting_primitives.sort((*keys[::-1], iota), dimension=dimension,
                                   num_keys=len(keys))
    return outs[-1]


# --- partition: JAX builds it from top_k, not from a selection --------------------------------


def _reversed_order(x):
    """A value that orders ``x`` backwards: -x for floats, ~x for integers (no overflow)."""
    return lax.neg(x) if dtypes.is_float(x.dtype) else lax.bitwise_not(x)


def _partition_operand(a, kth, axis, what):
    a = as_operand(a)
    if a.ndim == 0:
        raise FlamefxValueError(f"{what} needs an array of at least one axis\n  at "
                                f"{user_frame()}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise FlamefxTypeError(f"{what} of complex arrays is not implemented (nor is it in "
                               f"JAX)\n  at {user_frame()}")
    axis = canonical_axis(axis, a.ndim)
    n = a.shape[axis]
    if not -n <= kth < n:
        raise FlamefxValueError(f"{what}: kth {kth} is out of bounds for an axis of size {n}"
                                f"\n  at {user_frame()}")
    kth = int(kth) % n
    if a.dtype == dtypes.bool_:
        a = lax.convert_element_type(a, dtypes.uint8)
    return lax.transpose(a, _swap(a.ndim, axis)), kth, axis


def _swap(ndim, axis):
    perm = list(range(ndim))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return tuple(perm)


def partition(a, kth: int, axis: int = -1):
    """``a`` with its ``kth`` smallest element (along ``axis``) in place ``kth``, the smaller
    ones before it and the larger ones after it.

    As in JAX, built from ``top_k``: the first ``kth + 1`` come out ascending and the rest
    descending (NumPy leaves both sides in no particular order); NaNs are not placed as
    NumPy places them.

    >>> partition([5, 1, 4, 2, 3, 0], 2).tolist()
    [0, 1, 2, 5, 4, 3]
    """
    dtype = as_operand(a).dtype
    arr, kth, axis = _partition_operand(a, kth, axis, "partition")
    bottom = _reversed_order(sorting_primitives.top_k(_reversed_order(arr), kth + 1)[0])
    top = sorting_primitives.top_k(arr, arr.shape[-1] - kth - 1)[0]
    out = lax.transpose(lax.concatenate([bottom, top], arr.ndim - 1), _swap(arr.ndim, axis))
    return lax.convert_element_type(out, dtype) if out.dtype != dtype else out


def argpartition(a, kth: int, axis: int = -1):
    """Indices that would partition ``a`` (see ``partition``): the ``kth + 1`` smallest in
    ascending order, then the other indices in increasing order (as JAX computes them).

    >>> argpartition([5, 1, 4, 2, 3, 0], 2).tolist()
    [5, 1, 3, 0, 2, 4]
    """
    arr, kth, axis = _partition_operand(a, kth, axis, "argpartition")
    bottom = sorting_primitives.top_k(_reversed_order(arr), kth + 1)[1]
    # The rest, by a proxy that is 1 everywhere except at the chosen ones: top_k of it lists
    # the others in index order whatever their values (ties go to the lower index).
    ones = lax.full_like(lax.convert_element_type(arr, dtypes.float32), 1.0)
    vectors = sorting_primitives.last_axis_index_vectors(bottom, ones)
    proxy = lax.scatter(ones, vectors, lax.full_like(lax.convert_element_type(
        bottom, dtypes.float32), 0.0), tuple(range(arr.ndim)), "set")
    top = sorting_primitives.top_k(proxy, arr.shape[-1] - kth - 1)[1]
    out = lax.concatenate([bottom, top], arr.ndim - 1)
    out = lax.transpose(out, _swap(arr.ndim, axis))
    return lax.convert_element_type(out, dtypes.default_int())


# --- searchsorted ----------------------------------------------------------------------------


def _less(x, y):
    """``x < y`` in the sort order: NaN above everything, equal to other NaNs."""
    lt = lax.lt(x, y)
    if not dtypes.is_float(x.dtype):
        return lt
    x_nan, y_nan = lax.ne(x, x), lax.ne(y, y)
    return lax.bitwise_or(lt, lax.bitwise_and(y_nan, lax.bitwise_not(x_nan)))


def _before(side):
    """The test "a[i] comes before v": the insertion point counts the a[i] that do."""
    if side == "left":
        return _less
    return lambda x, y: lax.bitwise_not(_less(y, x))


def _zeros(shape, dtype):
    return lax.broadcast_in_dim(core.to_array(np.zeros((), dtype)), shape, ())


def _searchsorted_scan(a, v, side, index_dtype):
    """Binary search, one gather a step, unrolled over the ``n.bit_length()`` steps."""
    n = a.shape[0]
    before = _before(side)
    lo = _zeros(v.shape, index_dtype)
    hi = lax.full_like(lo, n)
    one, last = lax.full_like(lo, 1), lax.full_like(lo, max(n - 1, 0))
    for _ in range(n.bit_length()):
        mid = lax.shift_right_logical(lax.add(lo, hi), one)
        a_mid = lax.gather(a, lax.reshape(lax.min(mid, last), mid.shape + (1,)), (0,))
        active = lax.lt(lo, hi)
        go_right = before(a_mid, v)
        lo = lax.select_n(lax.bitwise_and(active, go_right), lo, lax.add(mid, one))
        hi = lax.select_n(lax.bitwise_and(active, lax.bitwise_not(go_right)), hi, mid)
    return lo


def _searchsorted_compare_all(a, v, side, index_dtype):
    """Counts the entries of ``a`` before each query: O(len(a) * v.size) work, no loop."""
    n = a.shape[0]
    a_b = lax.broadcast_in_dim(a, v.shape + (n,), (v.ndim,))
    v_b = lax.broadcast_in_dim(v, v.shape + (n,), tuple(range(v.ndim)))
    hits = lax.convert_element_type(_before(side)(a_b, v_b), index_dtype)
    return lax.reduce_sum(hits, (v.ndim,))


def _rank(x, index_dtype):
    """The position of each element of 1-d ``x`` in its stable sort."""
    iota = lax.iota(index_dtype, x.shape, 0)
    perm = sorting_primitives.sort((x, iota))[1]
    return sorting_primitives.sort((perm, iota))[1]


def _searchsorted_sort(a, v, side, index_dtype):
    """Ranks in one sort of queries and sorted entries together: a stable sort puts each
    query before equal entries (queries first, side='left') or after them (entries first)."""
    query = lax.reshape(v, (v.size,))
    if side == "left":
        index = lax.slice(_rank(lax.concatenate([query, a], 0), index_dtype), (0,), (v.size,))
    else:
        index = lax.slice(_rank(lax.concatenate([a, query], 0), index_dtype), (a.shape[0],),
                          (a.shape[0] + v.size,))
    return lax.reshape(lax.sub(index, _rank(query, index_dtype)), v.shape)


_SEARCHES = {"scan": _searchsorted_scan, "scan_unrolled": _searchsorted_scan,
             "sort": _searchsorted_sort, "compare_all": _searchsorted_compare_all}


def searchsorted(a, v, side: str = "left", sorter=None, *, method: str = "scan"):
    """Where to insert ``v`` into the sorted 1-d ``a`` to keep it sorted.

    ``side='left'``: the first such place, 'right': the last. ``sorter``: indices that sort
    ``a``. ``method`` ('scan', 'scan_unrolled', 'sort', 'compare_all') picks the algorithm
    as in JAX; all give the same result (NaN sorts last). Returns the default int dtype.

    >>> searchsorted([1, 2, 2, 3], [2, 5]).tolist()
    [1, 4]
    >>> searchsorted([1, 2, 2, 3], 2, side="right").item()
    3
    """
    if side not in ("left", "right"):
        raise FlamefxValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}"
                                f"\n  at {user_frame()}")
    if method not in SEARCHSORTED_METHODS:
        raise FlamefxValueError(f"searchsorted: method must be one of {SEARCHSORTED_METHODS}, "
                                f"got {method!r}\n  at {user_frame()}")
    a = as_operand(a)
    if a.ndim != 1:
        raise FlamefxValueError(f"searchsorted: a must be 1-d, got shape {a.shape}\n  at "
                                f"{user_frame()}")
    if sorter is not None:
        from flamefx.numpy.indexing import take
        a = take(a, sorter)
    a, v = promote_dtypes(a, v)
    if a.dtype == dtypes.bool_:
        a, v = (lax.convert_element_type(x, dtypes.int32) for x in (a, v))
    index_dtype = dtypes.default_int()
    if v.size == 0 or a.shape[0] == 0:
        return _zeros(v.shape, index_dtype)
    return _SEARCHES[method](a, v, side, index_dtype)
