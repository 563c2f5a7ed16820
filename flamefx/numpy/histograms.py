"""Counting and binning: bincount, histogram, histogram2d, histogramdd, their bin edges, and
digitize.

Bin indices come from ``searchsorted`` on the edges; counts are one scatter-add into the
bins plus one slot below and one above, which are then cut off (flamefx's scatter clamps
indices, so the spare slots are how out-of-range values get dropped). Counts are
differentiable in the weights.

>>> import flamefx.numpy as fnp
>>> fnp.bincount(fnp.array([0, 2, 2])).tolist()
[1, 0, 2]
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import ConcretizationError, FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.concrete import concrete_value
from flamefx.numpy import reductions
from flamefx.numpy.promotion import (as_operand, broadcast_to, constant_like, convert,
                                     promote_dtypes_inexact, to_inexact_dtype)


# --- counting --------------------------------------------------------------------------------


def _concrete_values(x, what: str, fix: str):
    return np.asarray(concrete_value(x, lambda aval: ConcretizationError(
        f"{what} depends on the values of a traced array ({aval}), which are unknown while "
        f"tracing. {fix}\n  at {user_frame()}")))


def bincount(x, weights=None, minlength: int = 0, *, length: int | None = None):
    """How many times each value ``0, 1, ...`` occurs in the non-negative integers ``x``
    (or the sum of their ``weights``). The result has ``length`` bins (JAX's keyword:
    required under jit, where the values of ``x`` are unknown), else
    ``max(minlength, max(x) + 1)``; as in JAX, negative values count in bin 0 and values
    past the last bin are dropped.

    >>> bincount([0, 1, 1, 3]).tolist()
    [1, 2, 0, 1]
    """
    x = as_operand(x)
    if not dtypes.is_int(x.dtype):
        raise FlamefxTypeError(f"bincount: x must be integers, got {x.dtype}\n  at "
                               f"{user_frame()}")
    if x.ndim != 1:
        raise FlamefxValueError(f"bincount: x must be 1-D, got shape {x.shape}\n  at "
                                f"{user_frame()}")
    minlength = int(minlength)
    if length is None:
        values = _concrete_values(x, "bincount's number of bins",
                                  "Pass length= (a static int) to bincount under jit.")
        length = max(minlength, int(values.max()) + 1 if values.size else 0)
    length = int(length)
    if weights is None:
        weights = lax.full_like(convert(x, dtypes.default_int()), 1)
    else:
        weights = as_operand(weights)
        if weights.shape != x.shape:
            raise FlamefxValueError(f"bincount: weights (shape {weights.shape}) must have x's "
                                    f"shape {x.shape}\n  at {user_frame()}")
    # One spare bin past the end collects the out-of-range values, then is dropped (the
    # scatter clamps indices into range, so it cannot drop them by itself).
    index = convert(x, dtypes.int32)
    index = lax.min(lax.max(index, constant_like(index, 0)), constant_like(index, length))
    zero = core.to_array(0, dtype=weights.dtype, weak=weights.weak_type)
    bins = lax.broadcast_in_dim(zero, (length + 1,), ())
    counts = lax.scatter(bins, lax.reshape(index, (x.shape[0], 1)), weights, (0,), "add")
    return lax.slice(counts, (0,), (length,))



# --- histograms and bins ---------------------------------------------------------------------


def _static_bin_count(bins, name: str) -> int:
    if isinstance(bins, core.Tracer) or not float(bins).is_integer() or int(bins) < 1:
        raise FlamefxValueError(f"{name}: bins must be a positive static int or 1-D edges, got "
                                f"{bins!r}\n  at {user_frame()}")
    return int(bins)


def histogram_bin_edges(a, bins=10, range=None, weights=None):
    """The edges of ``histogram``'s bins: ``bins`` given as edges, or that many equal bins
    spanning ``range`` (default: a's minimum to maximum; an empty range widens by 0.5 on
    each side). String ``bins`` rules are not supported (as in JAX).

    >>> histogram_bin_edges([0.0, 4.0], bins=4).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    from flamefx.numpy.math import where
    del weights  # only the string rules use them
    a = as_operand(a)
    dtype = to_inexact_dtype(a.dtype)
    if isinstance(bins, str):
        raise FlamefxValueError(f"histogram: string bins ({bins!r}) are not supported; give a "
                                f"number of bins or the edges\n  at {user_frame()}")
    if np.ndim(bins) == 1 or (hasattr(bins, "ndim") and bins.ndim == 1):
        return convert(as_operand(bins), dtype)
    count = _static_bin_count(bins, "histogram")
    if range is None:
        a = convert(a, dtype)
        low, high = reductions.min(a), reductions.max(a)
    else:
        if len(range) != 2:
            raise FlamefxValueError(f"histogram: range must be None or (low, high), got "
                                    f"{range!r}\n  at {user_frame()}")
        low, high = (convert(as_operand(r), dtype) for r in range)
    empty = lax.eq(low, high)
    low = where(empty, lax.sub(low, constant_like(low, 0.5)), low)
    high = where(empty, lax.add(high, constant_like(high, 0.5)), high)
    # JAX's linspace: low (1 - t) + high t for t = i / bins, the last edge exactly high.
    steps = lax.iota(dtype, (count,))
    t = lax.div(steps, lax.full_like(steps, count))
    inner = lax.add(lax.mul(broadcast_to(low, (count,)), lax.sub(lax.full_like(t, 1), t)),
                    lax.mul(broadcast_to(high, (count,)), t))
    return lax.concatenate([inner, lax.reshape(high, (1,))], 0)


def _bin_indices(values, edges):
    """The slot of each value: 0 below the first edge, i for [edges[i-1], edges[i]), the
    last bin closed on the right, and len(edges) above it (or NaN)."""
    from flamefx.numpy.math import where
    from flamefx.numpy.sorting import searchsorted
    n_edges = edges.shape[0]
    index = searchsorted(edges, values, side="right")
    last_edge = lax.reshape(lax.slice(edges, (n_edges - 1,), (n_edges,)), ())
    on_last_edge = lax.eq(values, broadcast_to(convert(last_edge, values.dtype), values.shape))
    return convert(where(on_last_edge, n_edges - 1, index), dtypes.int32)


def _scatter_into_slots(flat_index, weights, n_slots: int):
    zero = core.to_array(0, dtype=weights.dtype, weak=weights.weak_type)
    slots = lax.broadcast_in_dim(zero, (n_slots,), ())
    return lax.scatter(slots, lax.reshape(flat_index, (flat_index.shape[0], 1)), weights, (0,),
                       "add")


def histogram(a, bins=10, range=None, weights=None, density=None):
    """Counts (or summed ``weights``) of the flattened ``a`` in ``bins`` (a number of equal
    bins over ``range``, or the edges). Bins are half-open except the last, which holds its
    right edge; values outside the edges (and NaNs) are not counted. ``density`` divides by
    the total and the bin widths. Returns ``(counts, edges)``; counts are floats, as in JAX.

    >>> [x.tolist() for x in histogram([0.0, 1.0, 1.0, 3.0], bins=3, range=(0, 3))]
    [[1.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]]
    """
    from flamefx.numpy.signal import diff
    a = as_operand(a)
    if weights is None:
        weights = lax.full_like(a, 1)
    else:
        weights = as_operand(weights)
        if weights.shape != a.shape:
            raise FlamefxValueError(f"histogram: weights (shape {weights.shape}) must have a's "
                                    f"shape {a.shape}\n  at {user_frame()}")
    (a,) = promote_dtypes_inexact(a)
    (weights,) = promote_dtypes_inexact(weights)
    edges = histogram_bin_edges(a, bins, range)
    a, weights = lax.reshape(a, (a.size,)), lax.reshape(weights, (weights.size,))
    n_edges = edges.shape[0]
    slots = _scatter_into_slots(_bin_indices(a, edges), weights, n_edges + 1)
    counts = lax.slice(slots, (1,), (n_edges,))
    if density:
        total = reductions.sum(counts)
        counts = lax.div(lax.div(counts, convert(diff(edges), counts.dtype)),
                         broadcast_to(total, counts.shape))
    return counts, edges


def histogramdd(sample, bins=10, range=None, weights=None, density=None):
    """The ``D``-dimensional histogram of the ``N`` points in the rows of ``sample`` (N, D):
    ``bins`` is one spec (a count or edges) for every dimension or one per dimension,
    ``range`` None or one ``(low, high)`` or None per dimension. Returns ``(counts,
    [edges per dimension])``; without weights the counts are integers, as in JAX.

    >>> counts, edges = histogramdd([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]], bins=2)
    >>> counts.tolist()
    [[1, 0], [1, 1]]
    """
    from flamefx.numpy.signal import diff
    sample = as_operand(sample)
    if sample.ndim != 2:
        raise FlamefxValueError(f"histogramdd: sample must be 2-D (points, dimensions), got "
                                f"shape {sample.shape}\n  at {user_frame()}")
    n_points, n_dims = sample.shape
    if weights is not None:
        weights = as_operand(weights)
        if weights.shape != (n_points,):
            raise FlamefxValueError(f"histogramdd: one weight per point ({n_points}) is "
                                    f"needed, got weights of shape {weights.shape}\n  at "
                                    f"{user_frame()}")
    if range is not None and len(range) != n_dims:
        raise FlamefxValueError(f"histogramdd: range must hold one (low, high) or None per "
                                f"dimension ({n_dims}), got {range!r}\n  at {user_frame()}")
    per_dim = _bins_per_dimension(bins, n_dims)
    (sample,) = promote_dtypes_inexact(sample)
    edges, index, n_slots = [], None, []
    for d in builtins.range(n_dims):  # the argument range shadows the builtin
        column = lax.reshape(lax.slice(sample, (0, d), (n_points, d + 1)), (n_points,))
        edges_d = histogram_bin_edges(column, per_dim[d], None if range is None else range[d])
        slot = _bin_indices(column, edges_d)
        n = edges_d.shape[0] + 1
        index = slot if index is None else lax.add(lax.mul(index, constant_like(index, n)), slot)
        edges.append(edges_d)
        n_slots.append(n)
    if weights is None:
        weights = lax.full_like(lax.convert_element_type(index, dtypes.default_int()), 1)
    slots = _scatter_into_slots(index, weights, math.prod(n_slots))
    slots = lax.reshape(slots, tuple(n_slots))
    counts = lax.slice(slots, (1,) * n_dims, tuple(n - 1 for n in n_slots))
    if density:
        counts = convert(counts, sample.dtype)
        counts = lax.div(counts, broadcast_to(reductions.sum(counts), counts.shape))
        for d, edges_d in enumerate(edges):
            widths = convert(diff(edges_d), counts.dtype)
            counts = lax.div(counts, lax.broadcast_in_dim(widths, counts.shape, (d,)))
    return counts, edges


def _bins_per_dimension(bins, n_dims: int) -> list:
    if isinstance(bins, (list, tuple)):
        if len(bins) != n_dims:
            raise FlamefxValueError(f"histogramdd: bins must be one spec or one per dimension "
                                    f"({n_dims}), got {len(bins)}\n  at {user_frame()}")
        return list(bins)
    if np.ndim(bins) == 1 or getattr(bins, "ndim", 0) == 1:
        raise FlamefxValueError(f"histogramdd: give edges as a list with one array per "
                                f"dimension\n  at {user_frame()}")
    return [bins] * n_dims


def histogram2d(x, y, bins=10, range=None, weights=None, density=None):
    """The 2-D histogram of the points (``x``, ``y``): ``histogramdd`` of their columns;
    ``bins`` is a count, one array of edges for both axes, or a pair. Returns
    ``(counts, x_edges, y_edges)``.

    >>> counts, xe, ye = histogram2d([0.0, 1.0, 1.0], [0.0, 1.0, 0.0], bins=2)
    >>> counts.tolist()
    [[1, 0], [1, 1]]
    """
    x, y = as_operand(x), as_operand(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise FlamefxValueError(f"histogram2d: x and y must be 1-D of one length, got shapes "
                                f"{x.shape} and {y.shape}\n  at {user_frame()}")
    is_pair = isinstance(bins, (list, tuple)) and len(bins) == 2
    if not is_pair and (np.ndim(bins) == 1 or getattr(bins, "ndim", 0) == 1):
        bins = [bins, bins]  # one array of edges for both axes
    x, y = promote_dtypes_inexact(x, y)
    sample = lax.concatenate([lax.reshape(x, x.shape + (1,)), lax.reshape(y, y.shape + (1,))], 1)
    counts, (x_edges, y_edges) = histogramdd(sample, bins, range, weights, density)
    return counts, x_edges, y_edges


def digitize(x, bins, right: bool = False, *, method: str | None = None):
    """The index of the bin of ``bins`` (1-D, increasing or decreasing edges) that each
    ``x`` falls in: ``bins[i-1] <= x < bins[i]`` (``right``: ``bins[i-1] < x <= bins[i]``).
    ``method`` is searchsorted's.

    >>> digitize([0.5, 1.5, 3.0], [0.0, 1.0, 2.0]).tolist()
    [1, 2, 3]
    """
    from flamefx.numpy.math import where
    from flamefx.numpy.sorting import searchsorted
    x, bins = as_operand(x), as_operand(bins)
    if bins.ndim != 1:
        raise FlamefxValueError(f"digitize: bins must be 1-D, got shape {bins.shape}\n  at "
                                f"{user_frame()}")
    n = bins.shape[0]
    if n == 0:
        return lax.broadcast_in_dim(core.to_array(0, dtype=dtypes.int32), x.shape, ())
    side = "left" if right else "right"
    kwargs = {} if method is None else {"method": method}
    ascending = searchsorted(bins, x, side=side, **kwargs)
    descending = lax.sub(lax.full_like(ascending, n),
                         searchsorted(lax.rev(bins, (0,)), x, side=side, **kwargs))
    first, last = lax.slice(bins, (0,), (1,)), lax.slice(bins, (n - 1,), (n,))
    increasing = lax.reshape(lax.ge(last, first), ())
    return where(increasing, ascending, descending)
