"""Differences, integrals, convolutions and polynomials of sampled signals: diff, ediff1d,
gradient, trapezoid, cumulative_sum/prod, convolve, correlate, interp and the poly* family
(polyval, polyadd, polysub, polymul, polyder, polyint, polyfit).

Everything is composed of existing primitives: slices and pads, ``conv_general_dilated``
(one per real 1-D convolution, as in JAX), ``searchsorted`` for interp and ``lstsq`` for
polyfit.

>>> import flamefx.numpy as fnp
>>> fnp.diff(fnp.array([1, 4, 9, 16])).tolist()
[3, 5, 7]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.concrete import concrete_value
from flamefx.numpy.promotion import (as_operand, broadcast_to, canonical_axis, convert,
                                     promote_dtypes, promote_dtypes_inexact)


def _along(a, axis: int, start: int, stop: int | None = None):
    """``a[..., start:stop, ...]`` along ``axis`` (Python slice semantics for the bounds)."""
    begin, end, _ = slice(start, stop).indices(a.shape[axis])
    end = max(begin, end)
    starts = [0] * a.ndim
    limits = list(a.shape)
    starts[axis], limits[axis] = begin, end
    return lax.slice(a, tuple(starts), tuple(limits))


def _static_int(value, what: str) -> int:
    if isinstance(value, core.Tracer) or not float(value).is_integer():
        raise FlamefxTypeError(f"{what} must be a static Python int, got {value!r}\n  at "
                               f"{user_frame()}")
    return int(value)


# --- differences -------------------------------------------------------------------------


def _edge_piece(piece, a, axis: int):
    piece = as_operand(piece)
    if piece.ndim == 0:
        shape = list(a.shape)
        shape[axis] = 1
        piece = broadcast_to(piece, tuple(shape))
    return piece


def diff(a, n: int = 1, axis: int = -1, prepend=None, append=None):
    """The ``n``-th discrete difference along ``axis``, after joining ``prepend`` and
    ``append`` (scalars are broadcast to one slice). Bools differ by ``!=``.

    >>> diff([1, 2, 4, 7], n=2).tolist()
    [1, 1]
    """
    from flamefx.numpy.math import subtract
    from flamefx.numpy.shape import concatenate
    a = as_operand(a)
    n = _static_int(n, "diff: n")
    if n < 0:
        raise FlamefxValueError(f"diff: the order n must be non-negative, got {n}\n  at "
                                f"{user_frame()}")
    if n == 0:
        return a
    if a.ndim == 0:
        raise FlamefxValueError(f"diff needs an array of at least 1 dimension, got shape "
                                f"{a.shape}\n  at {user_frame()}")
    axis = canonical_axis(axis, a.ndim)
    pieces = [a]
    if prepend is not None:
        pieces.insert(0, _edge_piece(prepend, a, axis))
    if append is not None:
        pieces.append(_edge_piece(append, a, axis))
    if len(pieces) > 1:
        a = concatenate(pieces, axis)
    for _ in range(n):
        head, tail = _along(a, axis, 1), _along(a, axis, 0, -1)
        a = lax.ne(head, tail) if a.dtype == dtypes.bool_ else subtract(head, tail)
    return a


def ediff1d(ary, to_end=None, to_begin=None):
    """The differences of consecutive elements of the flattened ``ary``, with ``to_begin``
    and ``to_end`` (flattened, cast to ``ary``'s dtype) around them.

    >>> ediff1d([1, 2, 4], to_begin=-9).tolist()
    [-9, 1, 2]
    """
    from flamefx.numpy.shape import concatenate
    ary = as_operand(ary)
    flat = lax.reshape(ary, (ary.size,))
    out = diff(flat) if ary.size else flat
    pieces = [out]
    if to_begin is not None:
        pieces.insert(0, _flat_as(to_begin, out))
    if to_end is not None:
        pieces.append(_flat_as(to_end, out))
    return concatenate(pieces) if len(pieces) > 1 else out


def _flat_as(values, like):
    values = as_operand(values)
    return convert(lax.reshape(values, (values.size,)), like.dtype, like.weak_type)


def _gradient_along(a, h, axis: int):
    """Central differences inside, one-sided ones at the two edges (edge_order=1)."""
    from flamefx.numpy.math import divide, multiply, subtract
    from flamefx.numpy.shape import concatenate
    first = subtract(_along(a, axis, 1, 2), _along(a, axis, 0, 1))
    last = subtract(_along(a, axis, -1), _along(a, axis, -2, -1))
    if h.ndim == 0:
        inner = divide(subtract(_along(a, axis, 2), _along(a, axis, 0, -2)), multiply(h, 2))
        return concatenate([divide(first, h), inner, divide(last, h)], axis)
    if h.ndim != 1 or h.shape[0] != a.shape[axis]:
        raise FlamefxValueError(f"gradient: the coordinates along axis {axis} must be a scalar "
                                f"or a 1-D array of length {a.shape[axis]}, got shape {h.shape}"
                                f"\n  at {user_frame()}")
    shape = [1] * a.ndim
    shape[axis] = h.shape[0]
    x = lax.reshape(h, tuple(shape))
    dx_first = subtract(_along(x, axis, 1, 2), _along(x, axis, 0, 1))
    dx_last = subtract(_along(x, axis, -1), _along(x, axis, -2, -1))
    dx1 = subtract(_along(x, axis, 1, -1), _along(x, axis, 0, -2))
    dx2 = subtract(_along(x, axis, 2), _along(x, axis, 1, -1))
    # Second-order accurate weights for uneven spacing (NumPy's and JAX's formula).
    w_prev = divide(-dx2, multiply(dx1, dx1 + dx2))
    w_here = divide(subtract(dx2, dx1), multiply(dx1, dx2))
    w_next = divide(dx1, multiply(dx2, dx1 + dx2))
    inner = (multiply(w_prev, _along(a, axis, 0, -2)) + multiply(w_here, _along(a, axis, 1, -1))
             + multiply(w_next, _along(a, axis, 2)))
    return concatenate([divide(first, dx_first), inner, divide(last, dx_last)], axis)


def gradient(f, *varargs, axis=None, edge_order=None):
    """The gradient of sampled ``f`` by central differences inside and one-sided ones at the
    edges, along each axis in ``axis`` (None: all). ``varargs``: one spacing for every axis,
    or one per axis, each a scalar or the 1-D coordinates. One axis gives an array, several
    a list. As in JAX, only first-order edges exist (``edge_order`` None or 1).

    >>> gradient([1.0, 2.0, 4.0, 8.0]).tolist()
    [1.0, 1.5, 3.0, 4.0]
    """
    if edge_order not in (None, 1):
        raise FlamefxValueError(f"gradient: only edge_order=1 is supported (as in JAX), got "
                                f"{edge_order!r}\n  at {user_frame()}")
    a, *spacing = promote_dtypes_inexact(f, *varargs)
    if axis is None:
        axes = tuple(range(a.ndim))
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = tuple(canonical_axis(i, a.ndim) for i in axes)
    if not axes or min(a.shape[i] for i in axes) < 2:
        raise FlamefxValueError(f"gradient needs at least 2 samples along each axis, got shape "
                                f"{a.shape} (axes {axes})\n  at {user_frame()}")
    if not spacing:
        spacing = [core.to_array(1.0, dtype=a.dtype, weak=True)] * len(axes)
    elif len(spacing) == 1:
        spacing = spacing * len(axes)
    elif len(spacing) != len(axes):
        raise FlamefxTypeError(f"gradient: give one spacing for all axes or one per axis "
                               f"({len(axes)}), got {len(spacing)}\n  at {user_frame()}")
    grads = [_gradient_along(a, h, i) for i, h in zip(axes, spacing)]
    return grads[0] if len(axes) == 1 else grads


# --- integrals and running totals --------------------------------------------------------


def trapezoid(y, x=None, dx=1.0, axis: int = -1):
    """The integral of ``y`` along ``axis`` by the trapezoidal rule, at sample points ``x``
    (or evenly ``dx`` apart).

    >>> trapezoid([1.0, 2.0, 3.0]).item()
    4.0
    """
    from flamefx.numpy.math import add, multiply, subtract
    from flamefx.numpy.reductions import sum
    from flamefx.numpy.shape import moveaxis
    if x is None:
        y, dx = promote_dtypes_inexact(y, dx)
        step = dx
        if dx.ndim > 0:
            step = moveaxis(lax.reshape(dx, (1,) * (y.ndim - dx.ndim) + dx.shape), axis, -1)
        y = moveaxis(y, axis, -1)
    else:
        y, x = promote_dtypes_inexact(y, x)
        step = diff(x) if x.ndim == 1 else moveaxis(diff(x, axis=axis), axis, -1)
        y = moveaxis(y, axis, -1)
    pairs = add(_along(y, y.ndim - 1, 1), _along(y, y.ndim - 1, 0, -1))
    return multiply(sum(multiply(step, pairs), axis=-1), 0.5)


def _cumulative(name, running, x, axis, dtype, include_initial, initial):
    x = as_operand(x)
    if x.ndim == 0:
        raise FlamefxValueError(f"{name} needs an array of at least 1 dimension, got a scalar"
                                f"\n  at {user_frame()}")
    if axis is None:
        if x.ndim > 1:
            raise FlamefxValueError(f"{name}: axis is required for a {x.ndim}-d array (shape "
                                    f"{x.shape})\n  at {user_frame()}")
        axis = 0
    axis = canonical_axis(axis, x.ndim)
    out = running(x, axis=axis, dtype=dtype)
    if not include_initial:
        return out
    shape = list(x.shape)
    shape[axis] = 1
    first = lax.broadcast_in_dim(core.to_array(initial, dtype=out.dtype, weak=out.weak_type),
                                 tuple(shape), ())
    return lax.concatenate([first, out], axis)


def cumulative_sum(x, /, *, axis: int | None = None, dtype=None, include_initial: bool = False):
    """Running sums along ``axis`` (the array API's cumsum: ``axis`` is required unless
    ``x`` is 1-D; ``include_initial`` puts a leading 0).

    >>> cumulative_sum([1, 2, 3], include_initial=True).tolist()
    [0, 1, 3, 6]
    """
    from flamefx.numpy.reductions import cumsum
    return _cumulative("cumulative_sum", cumsum, x, axis, dtype, include_initial, 0)


def cumulative_prod(x, /, *, axis: int | None = None, dtype=None,
                    include_initial: bool = False):
    """Running products along ``axis`` (``axis`` is required unless ``x`` is 1-D;
    ``include_initial`` puts a leading 1).

    >>> cumulative_prod([1, 2, 3], include_initial=True).tolist()
    [1, 1, 2, 6]
    """
    from flamefx.numpy.reductions import cumprod
    return _cumulative("cumulative_prod", cumprod, x, axis, dtype, include_initial, 1)


def _take(x, index):
    from flamefx.numpy.indexing import take
    return take(x, index)


def interp(x, xp, fp, left=None, right=None, period=None):
    """Piecewise-linear interpolation of the points (``xp``, ``fp``) (``xp`` increasing) at
    ``x``; beyond the ends ``left`` / ``right`` (default: the end values of ``fp``; JAX's
    'extrapolate' continues the end segments). With ``period``, ``xp`` may be in any order
    and the function repeats (left/right unused).

    >>> interp([0.5, 1.5, 9.0], [0.0, 1.0, 2.0], [0.0, 10.0, 0.0]).tolist()
    [5.0, 5.0, 0.0]
    """
    from flamefx.numpy.math import abs, clip, remainder, where
    from flamefx.numpy.sorting import argsort, searchsorted
    xp, fp = as_operand(xp), as_operand(fp)
    if xp.ndim != 1 or xp.shape != fp.shape or xp.shape[0] == 0:
        raise FlamefxValueError(f"interp: xp and fp must be 1-D of one nonzero length, got "
                                f"shapes {xp.shape} and {fp.shape}\n  at {user_frame()}")
    _check_end(left, "left")
    _check_end(right, "right")
    x, xp = promote_dtypes_inexact(x, xp)
    (fp,) = promote_dtypes_inexact(fp)
    if dtypes.is_complex(x.dtype):
        raise FlamefxTypeError(f"interp: x and xp must be real, got {x.dtype}\n  at "
                               f"{user_frame()}")
    if period is not None:
        period = as_operand(period)
        if period.ndim != 0:
            raise FlamefxValueError(f"interp: period must be a scalar, got shape "
                                    f"{period.shape}\n  at {user_frame()}")
        period = abs(period)
        x, xp = remainder(x, period), remainder(xp, period)
        order = argsort(xp)
        xp, fp = _take(xp, order), _take(fp, order)
        # One point wrapped around at each end closes the period.
        xp = _concatenate_1d(_along(xp, 0, -1) - period, xp, _along(xp, 0, 0, 1) + period)
        fp = _concatenate_1d(_along(fp, 0, -1), fp, _along(fp, 0, 0, 1))
    n = xp.shape[0]
    i = clip(searchsorted(xp, x, side="right"), 1, n - 1)
    x_lo, x_hi, f_lo, f_hi = _take(xp, i - 1), _take(xp, i), _take(fp, i - 1), _take(fp, i)
    dx = x_hi - x_lo
    # Repeated xp values (dx = 0) take the left value, with a finite gradient.
    flat = abs(dx) <= np.spacing(np.finfo(xp.dtype).eps)
    f = where(flat, f_lo, f_lo + (x - x_lo) / where(flat, 1, dx) * (f_hi - f_lo))
    if period is None and left != "extrapolate":
        f = where(x < _along(xp, 0, 0, 1)[0], _along(fp, 0, 0, 1)[0] if left is None else left, f)
    if period is None and right != "extrapolate":
        f = where(x > _along(xp, 0, -1)[0], _along(fp, 0, -1)[0] if right is None else right, f)
    return f


def _check_end(value, name: str):
    if isinstance(value, str) and value != "extrapolate":
        raise FlamefxValueError(f"interp: the only string {name} is 'extrapolate' (as in JAX), "
                                f"got {value!r}\n  at {user_frame()}")


def _concatenate_1d(*pieces):
    return lax.concatenate(list(promote_dtypes(*pieces)), 0)


# --- convolution ---------------------------------------------------------------------------


def _convolution(name, a, v, mode, precision, preferred_element_type, flip_kernel):
    from flamefx.numpy.complex_numbers import conj
    if preferred_element_type is None:
        a, v = promote_dtypes_inexact(a, v)
    else:
        a, v = as_operand(a), as_operand(v)
    if a.ndim != 1 or v.ndim != 1:
        raise FlamefxValueError(f"{name} takes 1-D arrays, got shapes {a.shape} and {v.shape}"
                                f"\n  at {user_frame()}")
    if a.shape[0] == 0 or v.shape[0] == 0:
        raise FlamefxValueError(f"{name}: the inputs must not be empty, got shapes {a.shape} "
                                f"and {v.shape}\n  at {user_frame()}")
    if not flip_kernel:
        v = conj(v)  # correlate conjugates its second operand (NumPy's and JAX's definition)
    reverse_out = False
    if a.shape[0] < v.shape[0]:
        # The longer signal slides under the shorter one; correlation then runs backwards.
        a, v = v, a
        reverse_out = not flip_kernel
    if flip_kernel:
        v = lax.rev(v, (0,))
    n = v.shape[0]
    pads = {"full": (n - 1, n - 1), "same": (n // 2, n - n // 2 - 1), "valid": (0, 0)}
    if mode not in pads:
        raise FlamefxValueError(f"{name}: mode must be 'full', 'same' or 'valid', got {mode!r}"
                                f"\n  at {user_frame()}")
    conv = _complex_conv if dtypes.is_complex(a.dtype) else _real_conv
    out = conv(a, v, pads[mode], precision, preferred_element_type)
    return lax.rev(out, (0,)) if reverse_out else out


def _real_conv(a, v, padding, precision, preferred_element_type):
    """The 1-D cross-correlation of ``a`` with ``v`` as one convolution primitive."""
    out = lax.conv_general_dilated(lax.reshape(a, (1, 1) + a.shape),
                                   lax.reshape(v, (1, 1) + v.shape), (1,), (padding,),
                                   precision=precision,
                                   preferred_element_type=preferred_element_type)
    return lax.reshape(out, (out.shape[-1],))


def _complex_conv(a, v, padding, precision, preferred_element_type):
    """Complex operands as four real convolutions (the convolution primitive is real)."""
    from flamefx.numpy.math import add, subtract
    if preferred_element_type is not None:
        preferred_element_type = dtypes.real_dtype(preferred_element_type)

    def conv(x, y):
        return _real_conv(x, y, padding, precision, preferred_element_type)
    a_re, a_im, v_re, v_im = lax.real(a), lax.imag(a), lax.real(v), lax.imag(v)
    return lax.complex(subtract(conv(a_re, v_re), conv(a_im, v_im)),
                       add(conv(a_re, v_im), conv(a_im, v_re)))


def convolve(a, v, mode: str = "full", *, precision=None, preferred_element_type=None):
    """The discrete linear convolution of 1-D ``a`` and ``v`` (``mode``: 'full', 'same',
    'valid'). Integers are promoted to floats, as JAX does.

    >>> convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5]).tolist()
    [0.0, 1.0, 2.5, 4.0, 1.5]
    """
    return _convolution("convolve", a, v, mode, precision, preferred_element_type, True)


def correlate(a, v, mode: str = "valid", *, precision=None, preferred_element_type=None):
    """The cross-correlation ``c[k] = sum_n a[n + k] conj(v[n])`` of 1-D ``a`` and ``v``
    (``mode``: 'valid' by default, 'same', 'full'). Integers are promoted to floats.

    >>> correlate([1.0, 2.0, 3.0], [0.0, 1.0, 0.5], mode="full").tolist()
    [0.5, 2.0, 3.5, 3.0, 0.0]
    """
    return _convolution("correlate", a, v, mode, precision, preferred_element_type, False)


# --- polynomials -------------------------------------------------------------------------


def polyval(p, x, *, unroll: int = 16):
    """The polynomial with coefficients ``p`` (highest power first, along ``p``'s first
    axis) at ``x``, by Horner's rule. ``unroll`` is accepted for JAX's signature (the loop
    is always unrolled here).

    >>> polyval([3, 0, 1], 2).item()
    13
    """
    from flamefx.numpy.math import add, multiply
    from flamefx.numpy.promotion import broadcast_shapes
    del unroll
    p, x = promote_dtypes(p, x)
    if p.ndim == 0:
        raise FlamefxValueError(f"polyval: p must have at least 1 dimension, got a scalar\n  at "
                                f"{user_frame()}")
    shape = broadcast_shapes(p.shape[1:], x.shape)
    y = lax.full_like(broadcast_to(x, shape), 0)
    for i in range(p.shape[0]):
        coefficient = lax.reshape(_along(p, 0, i, i + 1), p.shape[1:])
        y = add(multiply(y, x), coefficient)
    return y


def polyadd(a1, a2):
    """The sum of two polynomials (coefficients highest power first).

    >>> polyadd([1, 2], [1, 0, 0]).tolist()
    [1, 1, 2]
    """
    from flamefx.numpy.math import add
    a1, a2 = promote_dtypes(a1, a2)
    if a1.shape[0] < a2.shape[0]:
        a1, a2 = a2, a1
    config = ((a1.shape[0] - a2.shape[0], 0, 0),) + ((0, 0, 0),) * (a2.ndim - 1)
    zero = core.to_array(0, dtype=a2.dtype, weak=a2.weak_type)
    return add(a1, lax.pad(a2, zero, config))


def polysub(a1, a2):
    """The difference of two polynomials (coefficients highest power first).

    >>> polysub([1, 2], [1, 0, 0]).tolist()
    [-1, 1, 2]
    """
    from flamefx.numpy.math import negative
    a1, a2 = promote_dtypes(a1, a2)
    return polyadd(a1, negative(a2))


def polymul(a1, a2, *, trim_leading_zeros: bool = False):
    """The product of two polynomials (coefficients highest power first), as floats.
    ``trim_leading_zeros`` (JAX's keyword; needs concrete values) drops leading zeros first.

    >>> polymul([1.0, 1.0], [1.0, -1.0]).tolist()
    [1.0, 0.0, -1.0]
    """
    a1, a2 = promote_dtypes_inexact(a1, a2)
    if trim_leading_zeros and (a1.shape[0] > 1 or a2.shape[0] > 1):
        a1, a2 = _trim_leading_zeros(a1), _trim_leading_zeros(a2)
    if a1.shape[0] == 0:
        a1 = _zero_poly(a1)
    if a2.shape[0] == 0:
        a2 = _zero_poly(a2)
    return convolve(a1, a2, mode="full")


def _zero_poly(like):
    return core.to_array(np.zeros(1, like.dtype))


def _trim_leading_zeros(p):
    values = np.asarray(_concrete(p, "polymul(trim_leading_zeros=True)"))
    nonzero = np.flatnonzero(values)
    start = int(nonzero[0]) if nonzero.size else values.shape[0]
    return _along(p, 0, start)


def _concrete(x, what: str):
    return concrete_value(x, lambda aval: FlamefxTypeError(
        f"{what} needs concrete values, but got a traced array ({aval})\n  at {user_frame()}"))


def polyder(p, m: int = 1):
    """The ``m``-th derivative of the polynomial ``p`` (as floats, as in JAX).

    >>> polyder([1.0, 1.0, 1.0]).tolist()
    [2.0, 1.0]
    """
    from flamefx.numpy.math import multiply
    m = _static_int(m, "polyder: m")
    (p,) = promote_dtypes_inexact(p)
    if m < 0:
        raise FlamefxValueError(f"polyder: the order m must be non-negative, got {m}\n  at "
                                f"{user_frame()}")
    if m == 0:
        return p
    n = p.shape[0]
    # The coefficient of x**k gains the factor k (k-1) ... (k-m+1).
    powers = np.arange(n - 1, m - 1, -1)
    factors = np.prod([powers - j for j in range(m)], axis=0) if n > m else np.zeros(0)
    return multiply(_along(p, 0, 0, max(n - m, 0)), core.to_array(factors.astype(p.dtype)))


def polyint(p, m: int = 1, k=None):
    """The ``m``-th antiderivative of the polynomial ``p``, as floats (as in JAX), with
    integration constants ``k`` (a scalar or ``m`` values, the first for the first
    integration; default 0).

    >>> polyint([3.0, 2.0, 1.0]).tolist()
    [1.0, 1.0, 1.0, 0.0]
    """
    from flamefx.numpy.math import divide
    m = _static_int(m, "polyint: m")
    p, k = promote_dtypes_inexact(p, 0 if k is None else k)
    if m < 0:
        raise FlamefxValueError(f"polyint: the order m must be non-negative (see polyder), got "
                                f"{m}\n  at {user_frame()}")
    if k.ndim == 0 or k.shape == (1,):
        k = broadcast_to(lax.reshape(k, ()), (m,))
    if k.shape != (m,):
        raise FlamefxValueError(f"polyint: k must be a scalar or {m} values, got shape "
                                f"{k.shape}\n  at {user_frame()}")
    if m == 0:
        return p
    n = p.shape[0]
    # After m integrations the coefficient of x**i is divided by i (i-1) ... (i-m+1), each
    # factor at least 1 (JAX's rule; the constants are divided too).
    grid = np.arange(n + m)[None, :] - np.arange(m)[:, None]
    factors = np.prod(np.maximum(grid, 1), axis=0)[::-1]
    full = lax.concatenate([p, convert(k, p.dtype, p.weak_type)], 0)
    return divide(full, core.to_array(factors.astype(p.dtype)))


def polyfit(x, y, deg: int, rcond=None, full: bool = False, w=None, cov=False):
    """The least-squares polynomial of degree ``deg`` through (``x``, ``y``), coefficients
    highest power first (``y`` 2-D: one fit per column), through ``linalg.lstsq`` on the
    column-scaled Vandermonde matrix, as in JAX. ``w`` weights the residuals; ``full`` also
    returns ``(residuals, rank, singular values, rcond)``; ``cov`` (True or 'unscaled') the
    covariance of the coefficients.

    >>> [round(c, 6) for c in polyfit([0.0, 1.0, 2.0], [1.0, 3.0, 5.0], 1).tolist()]
    [2.0, 1.0]
    """
    from flamefx.numpy import linalg, reductions
    from flamefx.numpy.matrices import vander
    deg = _static_int(deg, "polyfit: deg")
    x, y = promote_dtypes_inexact(x, y)
    order = deg + 1
    if deg < 0:
        raise FlamefxValueError(f"polyfit: deg must be non-negative, got {deg}\n  at "
                                f"{user_frame()}")
    if x.ndim != 1 or x.shape[0] == 0:
        raise FlamefxValueError(f"polyfit: x must be a non-empty 1-D array, got shape "
                                f"{x.shape}\n  at {user_frame()}")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise FlamefxValueError(f"polyfit: y must be 1-D or 2-D with x's length {x.shape[0]}, "
                                f"got shape {y.shape}\n  at {user_frame()}")
    if rcond is None:
        rcond = x.shape[0] * float(np.finfo(x.dtype).eps)
    lhs, rhs = vander(x, order), y
    if w is not None:
        (w,) = promote_dtypes_inexact(w)
        if w.ndim != 1 or w.shape[0] != x.shape[0]:
            raise FlamefxValueError(f"polyfit: w must be 1-D with x's length {x.shape[0]}, got "
                                    f"shape {w.shape}\n  at {user_frame()}")
        w = convert(w, x.dtype)
        lhs = lax.mul(lhs, lax.broadcast_in_dim(w, lhs.shape, (0,)))
        rhs = lax.mul(rhs, lax.broadcast_in_dim(w, rhs.shape, (0,)))
    # Columns scaled to unit norm improve the conditioning of the least-squares problem.
    scale = lax.sqrt(reductions.sum(lax.mul(lhs, lhs), axis=0))
    lhs = lax.div(lhs, lax.broadcast_in_dim(scale, lhs.shape, (1,)))
    c, resids, rank, s = linalg.lstsq(lhs, rhs, rcond)
    c = lax.div(c, lax.broadcast_in_dim(scale, c.shape, (0,)))
    if full:
        return c, resids, rank, s, core.to_array(np.asarray(rcond, x.dtype))
    if not cov:
        return c
    gram_inverse = linalg.inv(lax.dot_general(lhs, lhs, (((0,), (0,)), ((), ()))))
    gram_inverse = lax.div(gram_inverse, lax.mul(
        lax.broadcast_in_dim(scale, (order, order), (0,)),
        lax.broadcast_in_dim(scale, (order, order), (1,))))
    if cov == "unscaled":
        factor = lax.full_like(lax.reshape(lax.slice(scale, (0,), (1,)), (1,)), 1)
    else:
        if x.shape[0] <= order:
            raise FlamefxValueError(f"polyfit: scaling the covariance needs more points "
                                    f"({x.shape[0]}) than coefficients ({order})\n  at "
                                    f"{user_frame()}")
        # resids: one sum of squares per column of y (shape (1,) for a 1-D y).
        factor = lax.div(resids, lax.full_like(resids, x.shape[0] - order))
    if y.ndim == 1:
        factor = lax.reshape(lax.slice(factor, (0,), (1,)), ())
        return c, lax.mul(gram_inverse, broadcast_to(factor, gram_inverse.shape))
    # As in NumPy and JAX: a 2-D y gives (order, order, K), K = 1 for 'unscaled'.
    shape = (order, order, factor.shape[0])
    return c, lax.mul(lax.broadcast_in_dim(gram_inverse, shape, (0, 1)),
                      lax.broadcast_in_dim(factor, shape, (2,)))
