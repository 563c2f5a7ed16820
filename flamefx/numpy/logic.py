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
    if dtypes.is_float(x.dtype):
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
    if not dtypes.is_float(x.dtype):
        return lax.ne(x, x)
    return lax.eq(lax.abs(x), constant_like(x, np.inf))
