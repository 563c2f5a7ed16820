"""Statistics: NaN-ignoring reductions, averages, spreads, covariance and the order
statistics (median, quantile, percentile). Counting and binning are in ``histograms``.

Everything is composed of existing primitives: NaNs are replaced by the reduction's
identity with a select (whose gradient sends nothing to the replaced elements), order
statistics sort along the axis and gather the selected elements, so their gradients flow
to those elements as in JAX.

>>> import flamefx.numpy as fnp
>>> fnp.nanmean(fnp.array([1.0, fnp.nan, 3.0])).item()
2.0
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy import reductions
from flamefx.numpy.promotion import (as_operand, broadcast_to, canonical_axes, canonical_axis,
                                     constant_like, convert, promote_dtypes_inexact)
from flamefx.primitives.reductions import highest, lowest


def _check_out(out, name: str):
    if out is not None:
        raise FlamefxValueError(f"{name}: the out argument is not supported (flamefx arrays are "
                                f"immutable; use the returned array)\n  at {user_frame()}")


def _isnan(a):
    return lax.ne(a, a)


def _inexact_dtype(dtype) -> np.dtype:
    """Floats and complex stay; bool and integers become the default float."""
    return np.dtype(dtype) if dtypes.is_inexact(dtype) else dtypes.default_float()


def _nan_replaced(a, value, where=None):
    """``a`` with NaNs (and elements outside ``where``) set to ``value``."""
    drop = _isnan(a)
    if where is not None:
        keep = broadcast_to(convert(as_operand(where), dtypes.bool_), a.shape)
        drop = lax.bitwise_or(drop, lax.bitwise_not(keep))
    return lax.select_n(drop, a, constant_like(a, value))


# --- NaN-ignoring reductions ----------------------------------------------------------------


def _with_initial(result, initial, combine):
    if initial is None:
        return result
    initial = convert(broadcast_to(as_operand(initial), result.shape), result.dtype,
                      result.weak_type)
    return combine(result, initial)


def _nans_as(name, a, value, out, where=None):
    """``a`` with its NaNs (and the elements outside ``where``) replaced by ``value``, the
    identity of the sum or product ``name`` takes next."""
    _check_out(out, name)
    a = as_operand(a)
    if dtypes.is_inexact(a.dtype) or where is not None:
        a = _nan_replaced(a, value, where)
    return a


def nansum(a, axis=None, dtype=None, out=None, keepdims: bool = False, initial=None,
           where=None):
    """The sum over ``axis`` with NaNs counted as zero (plus ``initial``; only the
    elements where ``where`` is true).

    >>> nansum([1.0, float("nan"), 2.0]).item()
    3.0
    """
    a = _nans_as("nansum", a, 0, out, where)
    return _with_initial(reductions.sum(a, axis=axis, dtype=dtype, keepdims=keepdims), initial,
                         lax.add)


def nanprod(a, axis=None, dtype=None, out=None, keepdims: bool = False, initial=None,
            where=None):
    """The product over ``axis`` with NaNs counted as one (times ``initial``; only the
    elements where ``where`` is true).

    >>> nanprod([2.0, float("nan"), 3.0]).item()
    6.0
    """
    a = _nans_as("nanprod", a, 1, out, where)
    return _with_initial(reductions.prod(a, axis=axis, dtype=dtype, keepdims=keepdims), initial,
                         lax.mul)


def _valid_count(a, axis, keepdims, dtype, where=None):
    """How many elements over ``axis`` are not NaN (and inside ``where``)."""
    valid = lax.bitwise_not(_isnan(a))
    if where is not None:
        valid = lax.bitwise_and(valid, broadcast_to(convert(as_operand(where), dtypes.bool_),
                                                    a.shape))
    return reductions.sum(valid, axis=axis, dtype=dtype, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims: bool = False, where=None):
    """The mean over ``axis`` of the elements that are not NaN (NaN where all are).

    >>> nanmean([1.0, float("nan"), 2.0]).item()
    1.5
    """
    _check_out(out, "nanmean")
    a = as_operand(a)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else _inexact_dtype(a.dtype)
    if not dtypes.is_inexact(a.dtype):
        a = convert(a, out_dtype)
    total = nansum(a, axis=axis, dtype=out_dtype, keepdims=keepdims, where=where)
    count = _valid_count(a, axis, keepdims, out_dtype, where)
    return lax.div(total, convert(count, total.dtype, total.weak_type))


def nanvar(a, axis=None, dtype=None, out=None, ddof: int = 0, keepdims: bool = False,
           where=None, mean=None):
    """The variance over ``axis`` of the elements that are not NaN, dividing by
    ``N - ddof`` (NaN where that is not positive). ``mean``: the precomputed ``nanmean``
    (JAX's keyword; its shape with or without the reduced axes kept).

    >>> nanvar([1.0, float("nan"), 3.0]).item()
    1.0
    """
    _check_out(out, "nanvar")
    a = as_operand(a)
    a = convert(a, _inexact_dtype(a.dtype), a.weak_type)
    # A complex variance is real: the mean of |a - mean|**2 (as in NumPy and JAX).
    real_dtype = dtypes.real_dtype(a.dtype)
    out_dtype = dtypes.canonicalize(dtype) if dtype is not None else real_dtype
    if mean is None:
        center = nanmean(a, axis=axis, dtype=a.dtype, keepdims=True, where=where)
    else:
        center = _kept_shape(convert(as_operand(mean), a.dtype), a.shape, axis, "nanvar: mean")
    centered = _nan_replaced(lax.sub(a, broadcast_to(center, a.shape)), 0, where)
    if dtypes.is_complex(a.dtype):
        squares = lax.add(lax.square(lax.real(centered)), lax.square(lax.imag(centered)))
    else:
        squares = lax.mul(centered, centered)
    squares = reductions.sum(squares, axis=axis, keepdims=keepdims)
    divisor = lax.sub(_valid_count(a, axis, keepdims, squares.dtype, where),
                      constant_like(squares, ddof))
    positive = lax.gt(divisor, constant_like(divisor, 0))
    # A safe divisor where there is none keeps the gradient of the NaN branch finite.
    safe = lax.select_n(positive, constant_like(divisor, 1), divisor)
    out = lax.select_n(positive, constant_like(squares, np.nan), lax.div(squares, safe))
    return convert(out, out_dtype, out.weak_type)


def nanstd(a, axis=None, dtype=None, out=None, ddof: int = 0, keepdims: bool = False,
           where=None, mean=None):
    """The standard deviation over ``axis`` of the elements that are not NaN.

    >>> nanstd([1.0, float("nan"), 3.0]).item()
    1.0
    """
    return lax.sqrt(nanvar(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                           where=where, mean=mean))


def _kept_shape(x, shape, axis, what: str):
    """``x`` (a reduction's result over ``axis``, kept dims or not) with the dims kept."""
    axes = canonical_axes(axis, len(shape))
    kept = tuple(1 if d in axes else n for d, n in enumerate(shape))
    if x.size != reductions.element_count(kept, range(len(kept))):
        raise FlamefxValueError(f"{what} of shape {x.shape} does not match the reduced shape "
                                f"{kept}\n  at {user_frame()}")
    return lax.reshape(x, kept)


def _nan_extremum(name, reduce, combine, is_min, a, axis, out, keepdims, initial, where):
    _check_out(out, name)
    a = as_operand(a)
    if where is not None and initial is None:
        raise FlamefxValueError(f"{name}: a where mask needs initial= (an empty selection has no "
                                f"{name[3:]}), as in JAX\n  at {user_frame()}")
    is_float = dtypes.is_float(a.dtype)
    if is_float or where is not None:
        a_filled = _nan_replaced(a, (highest if is_min else lowest)(a.dtype), where)
    else:
        a_filled = a
    result = _with_initial(reduce(a_filled, axis=axis, keepdims=keepdims), initial, combine)
    if not is_float or initial is not None:
        return result  # with initial, an all-NaN slice gives initial (NumPy's and JAX's rule)
    all_nan = reductions.all(_isnan(a), axis=axis, keepdims=keepdims)
    return lax.select_n(all_nan, result, constant_like(result, np.nan))


def nanmax(a, axis=None, out=None, keepdims: bool = False, initial=None, where=None):
    """The maximum over ``axis`` ignoring NaNs (NaN where all elements are NaN, unless
    ``initial`` is given: it is a lower bound), over the elements where ``where`` is true
    (which needs ``initial``).

    >>> nanmax([1.0, float("nan"), 3.0]).item()
    3.0
    """
    return _nan_extremum("nanmax", reductions.max, lax.max, False, a, axis, out, keepdims,
                         initial, where)


def nanmin(a, axis=None, out=None, keepdims: bool = False, initial=None, where=None):
    """The minimum over ``axis`` ignoring NaNs (NaN where all elements are NaN, unless
    ``initial`` is given: it is an upper bound), over the elements where ``where`` is true
    (which needs ``initial``).

    >>> nanmin([1.0, float("nan"), 3.0]).item()
    1.0
    """
    return _nan_extremum("nanmin", reductions.min, lax.min, True, a, axis, out, keepdims,
                         initial, where)


def _nan_arg_extremum(arg_reduce, fill, a, axis, keepdims):
    a = as_operand(a)
    if not dtypes.is_float(a.dtype):
        return arg_reduce(a, axis=axis, keepdims=keepdims)
    index = arg_reduce(_nan_replaced(a, fill), axis=axis, keepdims=keepdims)
    all_nan = reductions.all(_isnan(a), axis=axis, keepdims=keepdims)
    return lax.select_n(all_nan, index, constant_like(index, -1))


def nanargmax(a, axis=None, out=None, keepdims: bool = False):
    """The index of the maximum over ``axis`` ignoring NaNs. As in JAX, a slice of only
    NaNs gives -1 (NumPy raises).

    >>> nanargmax([1.0, float("nan"), 3.0]).item()
    2
    """
    _check_out(out, "nanargmax")
    return _nan_arg_extremum(reductions.argmax, -np.inf, a, axis, keepdims)


def nanargmin(a, axis=None, out=None, keepdims: bool = False):
    """The index of the minimum over ``axis`` ignoring NaNs (-1 for an all-NaN slice, as
    in JAX).

    >>> nanargmin([4.0, float("nan"), 3.0]).item()
    2
    """
    _check_out(out, "nanargmin")
    return _nan_arg_extremum(reductions.argmin, np.inf, a, axis, keepdims)


def nancumsum(a, axis=None, dtype=None, out=None):
    """Running sums along ``axis`` with NaNs counted as zero.

    >>> nancumsum([1.0, float("nan"), 2.0]).tolist()
    [1.0, 1.0, 3.0]
    """
    return reductions.cumsum(_nans_as("nancumsum", a, 0, out), axis=axis, dtype=dtype)


def nancumprod(a, axis=None, dtype=None, out=None):
    """Running products along ``axis`` with NaNs counted as one.

    >>> nancumprod([2.0, float("nan"), 3.0]).tolist()
    [2.0, 2.0, 6.0]
    """
    return reductions.cumprod(_nans_as("nancumprod", a, 1, out), axis=axis, dtype=dtype)


# --- averages, spreads, counts ---------------------------------------------------------------


def average(a, axis=None, weights=None, returned: bool = False, keepdims: bool = False):
    """The weighted mean over ``axis``; 1-D ``weights`` may run along a single ``axis``.
    ``returned`` also gives the sum of the weights (broadcast to the average's shape).

    >>> average([1.0, 2.0, 4.0], weights=[2.0, 1.0, 1.0]).item()
    2.0
    """
    a = as_operand(a)
    if weights is None:
        avg = reductions.mean(a, axis=axis, keepdims=keepdims)
        weights_sum = constant_like(
            avg, reductions.element_count(a.shape, canonical_axes(axis, a.ndim)))
    else:
        a, weights = promote_dtypes_inexact(a, weights)
        if weights.shape != a.shape:
            weights = _weights_along_axis(a, weights, axis)
        weights_sum = reductions.sum(weights, axis=axis, keepdims=keepdims)
        avg = lax.div(reductions.sum(lax.mul(a, weights), axis=axis, keepdims=keepdims),
                      weights_sum)
    if not returned:
        return avg
    return avg, broadcast_to(weights_sum, avg.shape)


def _weights_along_axis(a, weights, axis):
    """1-D ``weights`` laid along the single ``axis`` of ``a``."""
    if weights.ndim != 1:
        raise FlamefxValueError(f"average: weights of shape {weights.shape} differ from a's "
                                f"shape {a.shape}, so they must be 1-D\n  at {user_frame()}")
    if axis is None or not isinstance(axis, (int, np.integer)):
        raise FlamefxValueError(f"average: 1-D weights (shape {weights.shape}) need a single "
                                f"int axis of a (shape {a.shape}), got axis={axis!r}\n  at "
                                f"{user_frame()}")
    axis = canonical_axis(axis, a.ndim)
    if weights.shape[0] != a.shape[axis]:
        raise FlamefxValueError(f"average: {weights.shape[0]} weights for axis {axis} of length "
                                f"{a.shape[axis]} (a of shape {a.shape})\n  at {user_frame()}")
    return lax.broadcast_in_dim(weights, a.shape, (axis,))


def ptp(a, axis=None, out=None, keepdims: bool = False):
    """The range (maximum minus minimum) over ``axis``.

    >>> ptp([3, 1, 7]).item()
    6
    """
    _check_out(out, "ptp")
    return lax.sub(reductions.max(a, axis=axis, keepdims=keepdims),
                   reductions.min(a, axis=axis, keepdims=keepdims))


def count_nonzero(a, axis=None, keepdims: bool = False):
    """How many elements over ``axis`` are nonzero (in the default integer dtype).

    >>> count_nonzero([[0, 1], [2, 0]], axis=0).tolist()
    [1, 1]
    """
    a = as_operand(a)
    nonzero = a if a.dtype == dtypes.bool_ else lax.ne(a, constant_like(a, 0))
    return reductions.sum(nonzero, axis=axis, dtype=dtypes.default_int(), keepdims=keepdims)


# --- covariance ----------------------------------------------------------------------------


def _as_variables(x, rowvar: bool, name: str):
    """``x`` as a 2-D array with one row per variable. As in JAX, a 2-D ``m`` with one row
    is transposed when not ``rowvar`` (NumPy keeps it); ``y`` follows NumPy's rule."""
    if x.ndim > 2:
        raise FlamefxValueError(f"cov: {name} has more than 2 dimensions (shape {x.shape})\n  at "
                                f"{user_frame()}")
    transpose = not rowvar and (x.ndim != 1 if name == "m" else x.ndim == 2 and x.shape[0] != 1)
    x = lax.reshape(x, (1,) * (2 - x.ndim) + x.shape)
    return lax.transpose(x, (1, 0)) if transpose else x


def _sample_weights(weights, n_samples: int, name: str):
    weights = as_operand(weights)
    if weights.ndim != 1 or weights.shape[0] != n_samples:
        raise FlamefxValueError(f"cov: {name} must be 1-D with one weight per sample "
                                f"({n_samples}), got shape {weights.shape}\n  at {user_frame()}")
    return weights


def _check_inexact_dtype(dtype, name: str):
    if dtype is not None and not dtypes.is_inexact(dtypes.canonicalize(dtype)):
        raise FlamefxValueError(f"{name}: dtype must be a float or complex type, got {dtype!r}"
                                f"\n  at {user_frame()}")


def cov(m, y=None, rowvar: bool = True, bias: bool = False, ddof: int | None = None,
        fweights=None, aweights=None, dtype=None):
    """The covariance matrix of the variables in the rows of ``m`` (columns if not
    ``rowvar``), with ``y``'s variables appended, computed in ``dtype`` if given.
    ``fweights`` are integer repeat counts, ``aweights`` importance weights; negative
    weights count by their absolute value, as in JAX (NumPy raises). No samples give NaN.
    As in JAX, a 2-D ``m`` of one row is transposed when not ``rowvar`` (NumPy keeps it).

    >>> cov([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]).tolist()
    [[1.0, -1.0], [-1.0, 1.0]]
    """
    from flamefx.numpy.complex_numbers import conj
    from flamefx.numpy.math import abs
    if y is None:
        (m,) = promote_dtypes_inexact(m)
    else:
        m, y = promote_dtypes_inexact(m, y)
    _check_inexact_dtype(dtype, "cov")
    x = _as_variables(m, rowvar, "m")
    if x.shape[0] == 0:
        return lax.broadcast_in_dim(core.to_array(0, dtype=x.dtype), (0, 0), ())
    if y is not None:
        y = _as_variables(y, rowvar, "y")
        if y.shape[1] != x.shape[1]:
            raise FlamefxValueError(f"cov: m has {x.shape[1]} samples per variable but y has "
                                    f"{y.shape[1]} (m of shape {m.shape}, y as variables x samples "
                                    f"{y.shape}, rowvar={rowvar})\n  at {user_frame()}")
        x = lax.concatenate([x, y], 0)
    if dtype is not None:
        x = convert(x, dtypes.canonicalize(dtype))
    n_samples = x.shape[1]
    if n_samples == 0:
        shape = () if x.shape[0] == 1 else (x.shape[0], x.shape[0])
        return lax.broadcast_in_dim(core.to_array(np.nan, dtype=x.dtype), shape, ())
    if ddof is None:
        ddof = 0 if bias else 1
    w = None
    if fweights is not None:
        fweights = _sample_weights(fweights, n_samples, "fweights")
        if not dtypes.is_int(fweights.dtype):
            raise FlamefxTypeError(f"cov: fweights must be integers, got {fweights.dtype}\n  at "
                                   f"{user_frame()}")
        w = convert(abs(fweights), x.dtype)
    if aweights is not None:
        aweights = convert(abs(_sample_weights(aweights, n_samples, "aweights")), x.dtype)
        w = aweights if w is None else lax.mul(w, aweights)
    avg, w_sum = average(x, axis=1, weights=w, returned=True)
    w_sum = lax.reshape(lax.slice(w_sum, (0,), (1,)), ())
    if w is None:
        factor = constant_like(w_sum, n_samples - ddof)
    elif ddof == 0:
        factor = w_sum
    elif aweights is None:
        factor = lax.sub(w_sum, constant_like(w_sum, ddof))
    else:
        correction = lax.div(reductions.sum(lax.mul(w, aweights)), w_sum)
        factor = lax.sub(w_sum, lax.mul(constant_like(w_sum, ddof), correction))
    centered = lax.sub(x, lax.broadcast_in_dim(avg, x.shape, (0,)))
    weighted = centered if w is None else lax.mul(centered, broadcast_to(w, x.shape))
    products = lax.dot_general(centered, conj(weighted), (((1,), (1,)), ((), ())))
    out = lax.div(products, broadcast_to(factor, products.shape))
    return lax.reshape(out, ()) if out.shape == (1, 1) else out


def corrcoef(x, y=None, rowvar: bool = True, dtype=None):
    """The Pearson correlation coefficients of the variables (``cov`` normalized by the
    standard deviations, clipped to [-1, 1]), computed in ``dtype`` if given.

    >>> corrcoef([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]).tolist()
    [[1.0, -1.0], [-1.0, 1.0]]
    """
    from flamefx.numpy.math import clip
    from flamefx.numpy.matrices import diagonal
    _check_inexact_dtype(dtype, "corrcoef")
    c = cov(x, y, rowvar, dtype=dtype)
    if c.ndim == 0:
        return lax.div(c, c)
    variances = diagonal(c)
    if dtypes.is_complex(c.dtype):
        variances = lax.real(variances)
    stddev = convert(lax.sqrt(variances), c.dtype)
    n = stddev.shape[0]
    c = lax.div(c, lax.broadcast_in_dim(stddev, (n, n), (0,)))
    c = lax.div(c, lax.broadcast_in_dim(stddev, (n, n), (1,)))
    # Rounding can push the coefficients a little past +-1; clip them back (both parts).
    if dtypes.is_complex(c.dtype):
        return lax.complex(clip(lax.real(c), -1, 1), clip(lax.imag(c), -1, 1))
    return clip(c, -1, 1)


# --- order statistics ------------------------------------------------------------------------

QUANTILE_METHODS = ("linear", "lower", "higher", "midpoint", "nearest", "inverted_cdf")


def _reduced_last(a, axis):
    """``a`` with the reduced axes merged into one last axis, and the shape a keepdims
    result has (the reduced axes as 1s)."""
    axes = canonical_axes(axis, a.ndim)
    kept = [d for d in range(a.ndim) if d not in axes]
    kept_shape = tuple(1 if d in axes else n for d, n in enumerate(a.shape))
    moved = lax.transpose(a, tuple(kept) + axes)
    merged = reductions.element_count(a.shape, axes)
    return lax.reshape(moved, tuple(a.shape[d] for d in kept) + (merged,)), kept_shape


def _check_q_range(q, name: str, scale: float):
    """Host-side q (Python numbers, lists, NumPy arrays) must lie in [0, scale]. Device
    arrays are not read back (that would sync the GPU), as JAX checks none."""
    if isinstance(q, (core.Array, core.Tracer)):
        return
    try:
        values = np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError):
        return  # a list holding traced values: checked by nobody, as in JAX
    if not np.all((values >= 0) & (values <= scale)):
        raise FlamefxValueError(f"{name}: q must lie in [0, {scale:g}], got {values.tolist()}"
                                f"\n  at {user_frame()}")


def _quantile(name, a, q, axis, method, keepdims, skip_nans, weights=None):
    if method not in QUANTILE_METHODS:
        raise FlamefxValueError(f"{name}: method must be one of {QUANTILE_METHODS}, got "
                                f"{method!r}\n  at {user_frame()}")
    if weights is not None and method != "inverted_cdf":
        raise FlamefxValueError(f"{name}: weights need method='inverted_cdf' (as in JAX), got "
                                f"method={method!r}\n  at {user_frame()}")
    a, q = promote_dtypes_inexact(a, q)
    if dtypes.is_complex(a.dtype):
        raise FlamefxTypeError(f"{name} of complex values is not defined (they have no order), "
                               f"got {a.dtype}\n  at {user_frame()}")
    if q.ndim > 1:
        raise FlamefxValueError(f"{name}: q must be a scalar or 1-D, got shape {q.shape}\n  at "
                                f"{user_frame()}")
    a_shape = a.shape
    a, kept_shape = _reduced_last(a, axis)
    batch, n = a.shape[:-1], a.shape[-1]
    q_size = q.shape[0] if q.ndim else 1
    if n == 0:
        nan = core.to_array(np.nan, dtype=a.dtype)
        values = lax.broadcast_in_dim(nan, batch + (q_size,), ())
    elif method == "inverted_cdf":
        values = _inverted_cdf(a, q, weights, axis, a_shape, skip_nans)
    else:
        values = _interpolated(a, q, method, skip_nans)
    # values: batch + (len(q),) -> (len(q),) + batch, then q's own shape and keepdims.
    values = lax.transpose(values, (values.ndim - 1,) + tuple(range(values.ndim - 1)))
    out_shape = kept_shape if keepdims else batch
    return lax.reshape(values, q.shape + tuple(out_shape))


def _interpolated(a, q, method, skip_nans):
    """The quantiles of each row of ``a`` (its last axis), interpolated by ``method``."""
    from flamefx.numpy.indexing import take_along_axis
    from flamefx.numpy.sorting import sort
    batch, n = a.shape[:-1], a.shape[-1]
    q = lax.reshape(q, (q.size,))
    if skip_nans:
        count = convert(reductions.sum(lax.bitwise_not(_isnan(a)), axis=-1, keepdims=True),
                        a.dtype)
    else:
        # One NaN makes the row's quantiles NaN: NaN the whole row before sorting.
        has_nan = reductions.any(_isnan(a), axis=-1, keepdims=True)
        a = lax.select_n(broadcast_to(has_nan, a.shape), a, constant_like(a, np.nan))
        count = lax.broadcast_in_dim(core.to_array(n, dtype=a.dtype), batch + (1,), ())
    a = sort(a, axis=-1)
    shape = batch + (q.shape[0],)
    last = lax.sub(broadcast_to(count, shape), constant_like(broadcast_to(count, shape), 1))
    position = lax.mul(lax.broadcast_in_dim(q, shape, (len(batch),)), last)
    low, high = lax.floor(position), lax.ceil(position)
    high_weight = lax.sub(position, low)
    zero = constant_like(low, 0)
    low = convert(lax.max(zero, lax.min(low, last)), dtypes.int32)
    high = convert(lax.max(zero, lax.min(high, last)), dtypes.int32)
    low_value = take_along_axis(a, low, axis=-1)
    high_value = take_along_axis(a, high, axis=-1)
    if method == "linear":
        low_weight = lax.sub(constant_like(high_weight, 1), high_weight)
        return lax.add(lax.mul(low_value, low_weight), lax.mul(high_value, high_weight))
    if method == "lower":
        return low_value
    if method == "higher":
        return high_value
    if method == "nearest":
        # JAX's rule: exactly halfway goes to the lower element (NumPy rounds half to even).
        return lax.select_n(lax.le(high_weight, constant_like(high_weight, 0.5)), high_value,
                            low_value)
    return lax.mul(lax.add(low_value, high_value), constant_like(low_value, 0.5))


def _inverted_cdf(a, q, weights, axis, a_shape, skip_nans):
    """The first sorted element whose running weight reaches ``q`` of the row's total."""
    from flamefx.numpy.indexing import take_along_axis
    from flamefx.numpy.sorting import argsort
    batch, n = a.shape[:-1], a.shape[-1]
    if weights is None:
        weights = lax.full_like(a, 1)
    else:
        weights = _quantile_weights(weights, a.dtype, axis, a_shape)
    order = argsort(a, axis=-1)
    a = take_along_axis(a, order, axis=-1)
    weights = take_along_axis(weights, order, axis=-1)
    nan_data = _isnan(a)
    bad_weights = lax.bitwise_or(lax.lt(weights, constant_like(weights, 0)), _isnan(weights))
    clean = lax.select_n(lax.bitwise_or(bad_weights, nan_data), weights,
                         constant_like(weights, 0))
    running = reductions.cumsum(clean, axis=-1)
    total = lax.slice(running, (0,) * len(batch) + (n - 1,), batch + (n,))
    q = lax.reshape(q, (q.size,))
    shape = batch + (q.shape[0],)
    target = lax.mul(lax.broadcast_in_dim(q, shape, (len(batch),)), broadcast_to(total, shape))
    below = lax.lt(lax.broadcast_in_dim(running, batch + (n, q.shape[0]), tuple(range(a.ndim))),
                   lax.broadcast_in_dim(target, batch + (n, q.shape[0]),
                                        tuple(range(len(batch))) + (a.ndim,)))
    index = reductions.sum(below, axis=-2, dtype=dtypes.int32)
    valid = reductions.sum(lax.bitwise_not(nan_data), axis=-1, keepdims=True,
                           dtype=dtypes.int32) if skip_nans else None
    last = constant_like(index, n - 1) if valid is None else lax.sub(
        broadcast_to(valid, shape), constant_like(index, 1))
    index = lax.max(constant_like(index, 0), lax.min(index, last))
    values = take_along_axis(a, index, axis=-1)
    any_bad = reductions.any(bad_weights, axis=-1, keepdims=True)
    if skip_nans:
        force_nan = lax.bitwise_or(any_bad, lax.eq(valid, constant_like(valid, 0)))
    else:
        force_nan = lax.bitwise_or(any_bad, reductions.any(nan_data, axis=-1, keepdims=True))
    return lax.select_n(broadcast_to(force_nan, shape), values, constant_like(values, np.nan))


def _quantile_weights(weights, dtype, axis, a_shape):
    """``weights`` of ``a``'s shape (or of its reduced axes), laid out like the rows."""
    weights = convert(as_operand(weights), dtype)
    if weights.shape != tuple(a_shape):
        axes = canonical_axes(axis, len(a_shape))
        if axis is None or weights.shape != tuple(a_shape[d] for d in axes):
            raise FlamefxValueError(f"quantile: weights of shape {weights.shape} must have a's "
                                    f"shape {tuple(a_shape)} or that of the reduced axes\n  at "
                                    f"{user_frame()}")
        weights = lax.broadcast_in_dim(weights, tuple(a_shape), axes)
    return _reduced_last(weights, axis)[0]


def quantile(a, q, axis=None, out=None, overwrite_input: bool = False, method: str = "linear",
             keepdims: bool = False, *, weights=None):
    """The ``q``-th quantiles (``q`` in [0, 1], a scalar or 1-D) over ``axis`` (an int, a
    tuple or None). ``method``: 'linear', 'lower', 'higher', 'midpoint', 'nearest' (JAX's
    rule: halfway goes down) or 'inverted_cdf' (the only one taking ``weights``). A slice
    holding a NaN gives NaN. Gradients flow to the selected elements, as in JAX.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5).item()
    2.5
    """
    _check_out(out, "quantile")
    _check_q_range(q, "quantile", 1)
    del overwrite_input
    return _quantile("quantile", a, q, axis, method, keepdims, False, weights)


def nanquantile(a, q, axis=None, out=None, overwrite_input: bool = False,
                method: str = "linear", keepdims: bool = False, *, weights=None):
    """``quantile`` of the elements that are not NaN (NaN for an all-NaN slice).

    >>> nanquantile([1.0, float("nan"), 3.0], 0.5).item()
    2.0
    """
    _check_out(out, "nanquantile")
    _check_q_range(q, "nanquantile", 1)
    del overwrite_input
    return _quantile("nanquantile", a, q, axis, method, keepdims, True, weights)


def _percent(q):
    (q,) = promote_dtypes_inexact(q)
    return lax.div(q, constant_like(q, 100))


def percentile(a, q, axis=None, out=None, overwrite_input: bool = False,
               method: str = "linear", keepdims: bool = False, *, weights=None):
    """The ``q``-th percentiles (``q`` in [0, 100]): ``quantile`` at ``q / 100``.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50).item()
    2.5
    """
    _check_out(out, "percentile")
    _check_q_range(q, "percentile", 100)
    return _quantile("percentile", a, _percent(q), axis, method, keepdims, False, weights)


def nanpercentile(a, q, axis=None, out=None, overwrite_input: bool = False,
                  method: str = "linear", keepdims: bool = False, *, weights=None):
    """``percentile`` of the elements that are not NaN.

    >>> nanpercentile([1.0, float("nan"), 3.0], 50).item()
    2.0
    """
    _check_out(out, "nanpercentile")
    _check_q_range(q, "nanpercentile", 100)
    return _quantile("nanpercentile", a, _percent(q), axis, method, keepdims, True, weights)


def median(a, axis=None, out=None, overwrite_input: bool = False, keepdims: bool = False):
    """The median over ``axis``: the 0.5 quantile by the 'midpoint' method, as in JAX (its
    gradient splits between the two middle elements of an even count).

    >>> median([3.0, 1.0, 2.0, 10.0]).item()
    2.5
    """
    return quantile(a, 0.5, axis=axis, out=out, method="midpoint", keepdims=keepdims)


def nanmedian(a, axis=None, out=None, overwrite_input: bool = False, keepdims: bool = False):
    """The median over ``axis`` of the elements that are not NaN.

    >>> nanmedian([3.0, float("nan"), 1.0]).item()
    2.0
    """
    return nanquantile(a, 0.5, axis=axis, out=out, method="midpoint", keepdims=keepdims)
