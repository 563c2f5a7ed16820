"""Set operations on sorted data: unique (and the array API's unique_*), isin, union1d,
intersect1d, setdiff1d.

Their results have data-dependent sizes. As in JAX, a static ``size=`` (with an optional
``fill_value=``) fixes the size, which makes them work under jit and vmap; without it they
need concrete input and raise a ConcretizationError, naming ``size=``, when traced.
Everything is built on the sort primitive, so the values they return are differentiable.

>>> import flamefx.numpy as fnp
>>> fnp.unique(fnp.array([3, 1, 3, 2])).tolist()
[1, 2, 3]
>>> fnp.unique(fnp.array([3, 1, 3]), size=4, fill_value=0).tolist()
[1, 3, 0, 0]
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import ConcretizationError, FlamefxValueError, user_frame
from flamefx.numpy.concrete import concrete_value
from flamefx.numpy.creation import arange, full
from flamefx.numpy.indexing import take
from flamefx.numpy.math import where
from flamefx.numpy.promotion import as_operand, canonical_axis, promote_dtypes
from flamefx.numpy.reductions import any as any_, cumsum, max as max_, min as min_, sum as sum_
from flamefx.numpy.shape import concatenate, moveaxis, ravel, reshape
from flamefx.numpy.sorting import searchsorted
from flamefx.primitives import sorting as sorting_primitives

ISIN_METHODS = ("auto", "compare_all", "binary_search", "sort")


# --- shared pieces ---------------------------------------------------------------------------


def _require_concrete(x, what: str):
    concrete_value(x, lambda aval: ConcretizationError(
        f"{what} without size= returns an array whose size depends on the values of a "
        f"traced array ({aval}), which are unknown while tracing (under jit or vmap).\n  at "
        f"{user_frame()}\nPass a static size= (and fill_value=) to make {what} traceable."))


def _static_size(size, what: str) -> int:
    try:
        return operator.index(size)
    except TypeError:
        raise ConcretizationError(f"{what}: size must be a static Python int, got "
                                  f"{size!r}\n  at {user_frame()}") from None


def _index_iota(n):
    return lax.iota(dtypes.default_int(), (n,), 0)


def _true_positions(mask, size: int):
    """The positions of the True entries of 1-d ``mask`` in order, the first ``size`` of
    them, padded with 0 (JAX's ``nonzero(mask, size=size)``)."""
    n = mask.shape[0]
    iota = _index_iota(n)
    # A stable sort on "not mask" brings the True positions to the front, in order.
    order = sorting_primitives.sort((lax.bitwise_not(mask), iota))[1]
    if size <= n:
        order = lax.slice(order, (0,), (size,))
    else:
        order = concatenate([order, lax.full_like(_index_iota(size - n), 0)])
    return where(arange(size) < sum_(mask), order, 0)


def _compress(x, mask, size: int, fill_value):
    """The entries of 1-d ``x`` where ``mask`` holds, padded to ``size`` with fill_value."""
    picked = take(x, _true_positions(mask, size)) if x.shape[0] else full(size, 0, x.dtype)
    return where(arange(size) < sum_(mask), picked, lax.convert_element_type(
        as_operand(fill_value), x.dtype))


def _not_equal(x, y, equal_nan: bool):
    ne = lax.ne(x, y)
    if equal_nan and dtypes.is_float(x.dtype):
        both_nan = lax.bitwise_and(lax.ne(x, x), lax.ne(y, y))
        ne = lax.bitwise_and(ne, lax.bitwise_not(both_nan))
    return ne


# --- unique ----------------------------------------------------------------------------------


def _sorted_rows(aux, equal_nan: bool):
    """``aux`` (rows along axis 0) sorted lexicographically, a mask of the first row of each
    run of equal rows, and the sorting permutation."""
    n = aux.shape[0]
    width = int(np.prod(aux.shape[1:], dtype=np.int64))
    rows = reshape(aux, (n, width))
    iota = _index_iota(n)
    if n == 0 or width == 0:
        perm = iota
    else:
        columns = [lax.reshape(lax.slice(rows, (0, j), (n, j + 1)), (n,)) for j in range(width)]
        perm = sorting_primitives.sort((*columns, iota), dimension=0, num_keys=width)[-1]
    aux = take(aux, perm, axis=0)
    if n == 0:
        return aux, lax.full_like(lax.convert_element_type(iota, dtypes.bool_), False), perm
    flat = reshape(aux, (n, width))
    changed = _not_equal(lax.slice(flat, (1, 0), (n, width)),
                         lax.slice(flat, (0, 0), (n - 1, width)), equal_nan)
    first = any_(changed, axis=1)
    mask = concatenate([core.to_array(np.ones(1, np.bool_)), first])
    return aux, mask, perm


def _unique_along_zero(aux, return_index, return_inverse, return_counts, equal_nan, size,
                       fill_value, what):
    """unique over axis 0 of ``aux``; ``size=None`` needs concrete values."""
    n = aux.shape[0]
    aux, mask, perm = _sorted_rows(aux, equal_nan)
    count = sum_(mask)
    if size is None:  # the caller checked that the input is concrete
        size = int(count)
    if n == 0 and size and fill_value is None:
        raise FlamefxValueError(f"{what}: an empty input with a nonzero size needs a "
                                f"fill_value\n  at {user_frame()}")
    ind = _true_positions(mask, size)
    if n:
        values = take(aux, ind, axis=0)
    else:
        values = full((size,) + aux.shape[1:], 0, aux.dtype)
    if fill_value is not None:
        valid = lax.broadcast_in_dim(arange(size) < count, values.shape, (0,))
        values = where(valid, values, lax.convert_element_type(as_operand(fill_value),
                                                               values.dtype))
    extras = []
    if return_index:
        extras.append(take(perm, ind) if n else full(size, 0, perm.dtype))
    if return_inverse:
        # Run numbers in sorted order, sorted back by the permutation: each row's run.
        runs = cumsum(mask, dtype=dtypes.default_int()) - 1
        extras.append(sorting_primitives.sort((perm, runs))[1])
    if return_counts:
        extras.append(_run_lengths(mask, size))
    return values, extras


def _run_lengths(mask, size: int):
    n = mask.shape[0]
    if n == 0:
        return full(size, 0, dtypes.default_int())
    starts = _true_positions(mask, size + 1)
    # Padding (0 after the first start) becomes n, so that the missing runs count 0.
    ends = lax.slice(starts, (1,), (size + 1,))
    ends = where(ends == 0, n, ends)
    return ends - lax.slice(concatenate([starts[:1], ends]), (0,), (size,))


def unique(ar, return_index: bool = False, return_inverse: bool = False,
           return_counts: bool = False, axis: int | None = None, *, equal_nan: bool = True,
           size: int | None = None, fill_value=None, sorted: bool = True):
    """The sorted unique elements of ``ar`` (of its flattening, or its slices along
    ``axis``), with optionally the first index of each, the inverse (each element's place
    among the unique ones, shaped like ``ar`` when ``axis`` is None) and the counts.

    ``size``: the static number of results (JAX's extension): the first ``size`` uniques,
    padded with ``fill_value`` (default: the smallest unique value), which makes unique work
    under jit. Without ``size`` the input must be concrete. ``equal_nan``: NaNs are one value.

    >>> values, counts = unique([2, 1, 2, 2], return_counts=True)
    >>> values.tolist(), counts.tolist()
    ([1, 2], [1, 3])
    """
    del sorted  # always sorted, as in JAX
    ar = as_operand(ar)
    if size is None:
        _require_concrete(ar, "unique")
    else:
        size = _static_size(size, "unique")
    if axis is None:
        aux, axis_int = ravel(ar), 0
    else:
        axis_int = canonical_axis(axis, ar.ndim)
        aux = moveaxis(ar, axis_int, 0)
    values, extras = _unique_along_zero(aux, return_index, return_inverse, return_counts,
                                        equal_nan, size, fill_value, "unique")
    values = moveaxis(values, 0, axis_int) if axis is not None else values
    if return_inverse and axis is None:
        at = 1 if return_index else 0
        extras[at] = reshape(extras[at], ar.shape)
    return values if not extras else (values, *extras)


class UniqueAllResult(NamedTuple):
    values: object
    indices: object
    inverse_indices: object
    counts: object


class UniqueCountsResult(NamedTuple):
    values: object
    counts: object


class UniqueInverseResult(NamedTuple):
    values: object
    inverse_indices: object


def unique_all(x, /, *, size: int | None = None, fill_value=None) -> UniqueAllResult:
    """The array API's unique_all: values, first indices, inverse and counts (NaNs are
    distinct, as the standard asks).

    >>> unique_all([3, 3, 1]).counts.tolist()
    [1, 2]
    """
    return UniqueAllResult(*unique(x, return_index=True, return_inverse=True,
                                   return_counts=True, equal_nan=False, size=size,
                                   fill_value=fill_value))


def unique_counts(x, /, *, size: int | None = None, fill_value=None) -> UniqueCountsResult:
    """The array API's unique_counts: values and how often each occurs.

    >>> unique_counts([3, 3, 1]).values.tolist()
    [1, 3]
    """
    return UniqueCountsResult(*unique(x, return_counts=True, equal_nan=False, size=size,
                                      fill_value=fill_value))


def unique_inverse(x, /, *, size: int | None = None, fill_value=None) -> UniqueInverseResult:
    """The array API's unique_inverse: values and each element's index among them.

    >>> unique_inverse([[3, 1], [1, 3]]).inverse_indices.tolist()
    [[1, 0], [0, 1]]
    """
    return UniqueInverseResult(*unique(x, return_inverse=True, equal_nan=False, size=size,
                                       fill_value=fill_value))


def unique_values(x, /, *, size: int | None = None, fill_value=None):
    """The array API's unique_values: the sorted unique values (NaNs distinct).

    >>> unique_values([2.0, 1.0, 2.0]).tolist()
    [1.0, 2.0]
    """
    return unique(x, equal_nan=False, size=size, fill_value=fill_value)


# --- membership ------------------------------------------------------------------------------


def _in1d(element, test_elements, invert: bool, method: str):
    if method not in ISIN_METHODS:
        raise FlamefxValueError(f"isin: method must be one of {ISIN_METHODS}, got {method!r}"
                                f"\n  at {user_frame()}")
    element, test_elements = promote_dtypes(ravel(element), ravel(test_elements))
    if element.size == 0 or test_elements.size == 0:
        return full(element.shape, invert, dtypes.bool_)
    if method in ("auto", "compare_all"):
        pairs = lax.eq(lax.broadcast_in_dim(element, element.shape + test_elements.shape, (0,)),
                       lax.broadcast_in_dim(test_elements, element.shape + test_elements.shape,
                                            (1,)))
        found = any_(pairs, axis=1)
    else:  # 'binary_search' and 'sort': look each element up in the sorted test elements
        ordered = sorting_primitives.sort(test_elements)
        found = lax.eq(element, take(ordered, searchsorted(ordered, element)))
    return lax.bitwise_not(found) if invert else found


def isin(element, test_elements, assume_unique: bool = False, invert: bool = False, *,
         method: str = "auto"):
    """Whether each element of ``element`` occurs in ``test_elements`` (shaped like
    ``element``). ``method``: 'auto'/'compare_all' compare every pair; 'binary_search' and
    'sort' search the sorted test elements (same results; NaN is never found).

    >>> isin([1, 2, 3], [3, 1]).tolist()
    [True, False, True]
    """
    del assume_unique  # no shortcut taken: the result is the same
    element = as_operand(element)
    return reshape(_in1d(element, test_elements, invert, method), element.shape)


# --- union, intersection, difference ---------------------------------------------------------


def union1d(ar1, ar2, *, size: int | None = None, fill_value=None):
    """The sorted unique values in either array (flattened).

    >>> union1d([3, 1], [2, 1]).tolist()
    [1, 2, 3]
    """
    return unique(concatenate([ravel(as_operand(ar1)), ravel(as_operand(ar2))]), size=size,
                  fill_value=fill_value)


def setdiff1d(ar1, ar2, assume_unique: bool = False, *, size: int | None = None,
              fill_value=None):
    """The sorted unique values of ``ar1`` that are not in ``ar2``; ``size`` pads with
    ``fill_value`` (default 0) and makes it traceable.

    >>> setdiff1d([5, 1, 3, 1], [3]).tolist()
    [1, 5]
    """
    arr1, arr2 = ravel(as_operand(ar1)), ravel(as_operand(ar2))
    if size is None:
        _require_concrete(arr1, "setdiff1d")
    else:
        size = _static_size(size, "setdiff1d")
    fill_value = 0 if fill_value is None else fill_value
    if arr1.size == 0:
        return full(size or 0, fill_value, arr1.dtype)
    if assume_unique:
        candidates, valid = arr1, None
    else:
        candidates, counts = unique(arr1, size=arr1.size, return_counts=True)
        valid = counts > 0  # unique's padding is no candidate
    keep = _in1d(candidates, arr2, invert=True, method="auto")
    if valid is not None:
        keep = lax.bitwise_and(keep, valid)
    if size is None:
        size = int(sum_(keep))
    return _compress(candidates, keep, size, fill_value)


def _unique_with_index(arr, assume_unique: bool):
    """Unique values of 1-d ``arr`` padded to its length, their first indices and a mask of
    the real ones (all of ``arr`` when it is known to be unique)."""
    n = arr.shape[0]
    if assume_unique:
        return arr, _index_iota(n), full(n, True, dtypes.bool_)
    values, index, counts = unique(arr, size=n, return_index=True, return_counts=True,
                                   fill_value=0)
    return values, index, counts > 0


def _merged(arr1, arr2, assume_unique: bool):
    """The unique values of both arrays sorted together, padding last (a stable sort puts
    each ar1 value before its ar2 twin), with which are real, where each came from in the
    concatenation, and each array's first indices."""
    values1, index1, valid1 = _unique_with_index(arr1, assume_unique)
    values2, index2, valid2 = _unique_with_index(arr2, assume_unique)
    valid = concatenate([valid1, valid2])
    _, aux, source, valid = sorting_primitives.sort(
        (lax.bitwise_not(valid), concatenate([values1, values2]),
         _index_iota(valid.shape[0]), valid), num_keys=2)
    return aux, valid, source, index1, index2


def _picked(aux, keep, size: int, fill_value):
    """The entries of ``aux`` where ``keep`` holds, padded to ``size`` as JAX pads: with
    ``fill_value``, or else the smallest result (0 when there is none)."""
    count = sum_(keep)
    in_range = arange(size) < count
    positions = _true_positions(keep, size)
    values = take(aux, positions) if aux.shape[0] else full(size, 0, aux.dtype)
    values = where(in_range, values, lax.full_like(values, 0))
    if fill_value is None:
        padding = min_(where(in_range, values, max_(values))) if size else values
    else:
        padding = lax.convert_element_type(as_operand(fill_value), values.dtype)
    return where(in_range, values, padding), positions, in_range


def _flat_pair(ar1, ar2, size, what):
    arr1, arr2 = promote_dtypes(ravel(as_operand(ar1)), ravel(as_operand(ar2)))
    if size is None:
        _require_concrete(arr1, what)
        _require_concrete(arr2, what)
        return arr1, arr2, None
    return arr1, arr2, _static_size(size, what)


def intersect1d(ar1, ar2, assume_unique: bool = False, return_indices: bool = False, *,
                size: int | None = None, fill_value=None):
    """The sorted unique values in both arrays (flattened); with ``return_indices`` also
    the first index of each in ``ar1`` and in ``ar2``. ``size`` pads the values with
    ``fill_value`` (default: the smallest result) and the indices with each array's length.

    >>> intersect1d([1, 3, 4, 3], [3, 1, 2, 1]).tolist()
    [1, 3]
    """
    arr1, arr2, size = _flat_pair(ar1, ar2, size, "intersect1d")
    n1, n2 = arr1.shape[0], arr2.shape[0]
    if n1 == 0 or n2 == 0:  # nothing in common
        size = size or 0
        values = full(size, 0 if fill_value is None else fill_value, arr1.dtype)
        if not return_indices:
            return values
        return values, full(size, n1, dtypes.default_int()), full(size, n2, dtypes.default_int())
    aux, valid, source, index1, index2 = _merged(arr1, arr2, assume_unique)
    # A value in both arrays is a real entry equal to the one before it.
    twin = lax.bitwise_and(lax.eq(aux[1:], aux[:-1]), valid[1:])
    if size is None:
        size = int(sum_(twin))
    values, positions, in_range = _picked(aux, twin, size, fill_value)
    if not return_indices:
        return values
    first = take(index1, take(source, positions))
    second = take(index2, take(source, positions + 1) - n1)
    return values, where(in_range, first, n1), where(in_range, second, n2)


def setxor1d(ar1, ar2, assume_unique: bool = False, *, size: int | None = None,
             fill_value=None):
    """The sorted unique values in exactly one of the arrays (flattened); ``size`` pads
    with ``fill_value`` (default: the smallest result) and makes it traceable.

    >>> setxor1d([1, 2, 3], [2, 3, 4]).tolist()
    [1, 4]
    """
    arr1, arr2, size = _flat_pair(ar1, ar2, size, "setxor1d")
    aux, valid, _, _, _ = _merged(arr1, arr2, assume_unique)
    if aux.shape[0]:
        new = lax.ne(aux[1:], aux[:-1])
        true = core.to_array(np.ones(1, np.bool_))
        # Alone: differs from the entry before it and from a real entry after it.
        after = lax.bitwise_or(new, lax.bitwise_not(valid[1:]))
        alone = lax.bitwise_and(concatenate([true, new]), concatenate([after, true]))
        alone = lax.bitwise_and(alone, valid)
    else:
        alone = valid
    if size is None:
        size = int(sum_(alone))
    return _picked(aux, alone, size, fill_value)[0]
