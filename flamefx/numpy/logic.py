"""Comparisons, logical and bitwise functions, and the NaN/infinity tests.

>>> import flamefx.numpy as fnp
>>> fnp.less(fnp.arange(3), 1.5).tolist()
[True, True, False]
"""

from __future__ import annotations

import numpy as np

from flamefx import dtypes, lax
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.numpy.promotion import as_operand, broadcast_arrays, constant_like, promote_args


def _require_integer_or_bool(name: str, x):
    if dtypes.is_inexact(x.dtype):
        raise FlamefxTypeError(f"{name} needs integer or bool arrays, got {x.dtype}\n  at "
                               f"{user_frame()}")


def equal(x, y):
    """``x == y``.

    >>> equal(1, 1.0).item()
    True
    """
    return lax.eq(*promote_args(x, y))


def not_equal(x, y):
    """``x != y``.

    >>> not_equal(1, 2).item()
    True
    """
    return lax.ne(*promote_args(x, y))


def less(x, y):
    """``x < y``.

    >>> less(1, 2).item()
    True
    """
    return lax.lt(*promote_args(x, y))


def less_equal(x, y):
    """``x <= y``.

    >>> less_equal(2, 2).item()
    True
    """
    return lax.le(*promote_args(x, y))


def greater(x, y):
    """``x > y``.

    >>> greater(1, 2).item()
    False
    """
    return lax.gt(*promote_args(x, y))


def greater_equal(x, y):
    """``x >= y``.

    >>> greater_equal(2, 2).item()
    True
    """
    return lax.ge(*promote_args(x, y))


def truth(x):
    """``x != 0`` (bool arrays as they are)."""
    x = as_operand(x)
    return x if x.dtype == dtypes.bool_ else lax.ne(x, constant_like(x, 0))


def logical_and(x, y):
    """Elementwise ``x and y`` of truth values.

    >>> logical_and(True, 0).item()
    False
    """
    return lax.bitwise_and(*broadcast_arrays(truth(x), truth(y)))


def logical_or(x, y):
    """Elementwise ``x or y`` of truth values.

    >>> logical_or(False, 2).item()
    True
    """
    return lax.bitwise_or(*broadcast_arrays(truth(x), truth(y)))


def logical_xor(x, y):
    """Elementwise ``x xor y`` of truth values.

    >>> logical_xor(True, True).item()
    False
    """
    return lax.bitwise_xor(*broadcast_arrays(truth(x), truth(y)))


def logical_not(x):
    """Elementwise ``not x``.

    >>> logical_not(0).item()
    True
    """
    return lax.bitwise_not(truth(x))


def bitwise_and(x, y):
    """``x & y`` of integer or bool arrays.

    >>> bitwise_and(6, 3).item()
    2
    """
    x, y = promote_args(x, y)
    _require_integer_or_bool("bitwise_and", x)
    return lax.bitwise_and(x, y)


def bitwise_or(x, y):
    """``x | y`` of integer or bool arrays.

    >>> bitwise_or(6, 3).item()
    7
    """
    x, y = promote_args(x, y)
    _require_integer_or_bool("bitwise_or", x)
    return lax.bitwise_or(x, y)


def bitwise_xor(x, y):
    """``x ^ y`` of integer or bool arrays.

    >>> bitwise_xor(6, 3).item()
    5
    """
    x, y = promote_args(x, y)
    _require_integer_or_bool("bitwise_xor", x)
    return lax.bitwise_xor(x, y)


def invert(x):
    """``~x`` of integer or bool arrays.

    >>> invert(True).item()
    False
    """
    x = as_operand(x)
    _require_integer_or_bool("invert", x)
    return lax.bitwise_not(x)


bitwise_not = invert


def isfinite(x):
    """True where ``x`` is neither infinite nor NaN.

    >>> isfinite(1.0).item()
    True
    """
    x = as_operand(x)
    if dtypes.is_complex(x.dtype):
        return lax.bitwise_and(lax.is_finite(lax.real(x)), lax.is_finite(lax.imag(x)))
    if not dtypes.is_float(x.dtype):
        return lax.eq(x, x)
    return lax.is_finite(x)


def isnan(x):
    """True where ``x`` is NaN.

    >>> isnan(float("nan")).item()
    True
    """
    x = as_operand(x)
    return lax.ne(x, x)


def isinf(x):
    """True where ``x`` is +inf or -inf.

    >>> isinf(float("-inf")).item()
    True
    """
    x = as_operand(x)
    if not dtypes.is_inexact(x.dtype):
        return lax.ne(x, x)
    magnitude = lax.abs(x)  # complex: infinite where either part is
    return lax.eq(magnitude, constant_like(magnitude, np.inf))


bitwise_invert = invert


def signbit(x):
    """True where the sign bit of ``x`` is set (-0.0 and negative NaN included).

    >>> signbit(-0.0).item()
    True
    """
    x = as_operand(x)
    if x.dtype == dtypes.bool_ or np.dtype(x.dtype).kind == "u":
        return lax.ne(x, x)
    if not dtypes.is_float(x.dtype):
        return lax.lt(x, constant_like(x, 0))
    return lax.lt(lax.copysign(constant_like(x, 1), x), constant_like(x, 0))


def _shift_operands(name, x, y):
    x, y = promote_args(x, y)
    _require_integer_or_bool(name, x)
    if x.dtype == dtypes.bool_:  # JAX shifts bools as default ints
        x = lax.convert_element_type(x, dtypes.default_int(), weak_type=x.weak_type)
        y = lax.convert_element_type(y, dtypes.default_int(), weak_type=y.weak_type)
    return x, y


def left_shift(x, y):
    """``x << y`` of integers; shifting by the bit width or more gives 0.

    >>> left_shift(3, 2).item()
    12
    """
    return lax.shift_left(*_shift_operands("left_shift", x, y))


def right_shift(x, y):
    """``x >> y``: arithmetic (sign-filling) for signed integers, logical for unsigned.

    Shifting by the bit width or more gives 0, or -1 for negative signed values (as JAX).

    >>> right_shift(-8, 1).item()
    -4
    """
    x, y = _shift_operands("right_shift", x, y)
    if np.dtype(x.dtype).kind == "u":
        return lax.shift_right_logical(x, y)
    # ~x is non-negative where x is negative, so its logical shift fills with zeros; the
    # second ~ turns them into the sign bits.
    negative = lax.lt(x, constant_like(x, 0))
    filled = lax.bitwise_not(lax.shift_right_logical(lax.bitwise_not(x), y))
    return lax.select_n(negative, lax.shift_right_logical(x, y), filled)


bitwise_left_shift = left_shift
bitwise_right_shift = right_shift


def _all(x):
    return lax.reduce_and(x, axes=tuple(range(x.ndim)))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan: bool = False):
    """``|a - b| <= atol + rtol * |b|`` elementwise; equal infinities are close, NaN is not
    (unless ``equal_nan``). Integers compare exactly.

    >>> isclose(1.0, 1.0 + 1e-9).item()
    True
    """
    a, b = broadcast_arrays(*promote_args(a, b))
    if not dtypes.is_inexact(a.dtype):
        return lax.eq(a, b)
    magnitude = lax.abs(b)  # real for complex operands too
    tolerance = lax.add(constant_like(magnitude, atol),
                        lax.mul(constant_like(magnitude, rtol), magnitude))
    close = lax.le(lax.abs(lax.sub(a, b)), tolerance)
    a_inf, b_inf = isinf(a), isinf(b)
    # An infinity is close only to the same infinity (inf - inf is NaN, not close).
    close = lax.select_n(lax.bitwise_or(a_inf, b_inf), close, lax.eq(a, b))
    both_nan = lax.bitwise_and(isnan(a), isnan(b))
    if equal_nan:
        close = lax.bitwise_or(close, both_nan)
    return close


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan: bool = False):
    """True when every element of ``a`` is close to ``b`` (``isclose``), as a bool array.

    >>> allclose([1.0, 2.0], [1.0, 2.0 + 1e-9]).item()
    True
    """
    return _all(isclose(a, b, rtol, atol, equal_nan))


def array_equal(a1, a2, equal_nan: bool = False):
    """True when ``a1`` and ``a2`` have the same shape and elements (a bool array).

    >>> array_equal([1, 2], [1, 2]).item()
    True
    """
    a1, a2 = as_operand(a1), as_operand(a2)
    if a1.shape != a2.shape:
        return as_operand(np.bool_(False))
    a1, a2 = promote_args(a1, a2)
    same = lax.eq(a1, a2)
    if equal_nan:
        same = lax.bitwise_or(same, lax.bitwise_and(isnan(a1), isnan(a2)))
    return _all(same)


def array_equiv(a1, a2):
    """True when ``a1`` and ``a2`` broadcast together and are equal elementwise.

    >>> array_equiv([1, 1], [[1], [1]]).item()
    True
    """
    a1, a2 = as_operand(a1), as_operand(a2)
    try:
        np.broadcast_shapes(a1.shape, a2.shape)
    except ValueError:
        return as_operand(np.bool_(False))
    return _all(equal(a1, a2))
