"""Elementwise math: arithmetic, transcendental functions, rounding, where, clip.

Comparisons and logical/bitwise functions are in ``flamefx.numpy.logic``.

Each function promotes dtypes and broadcasts shapes explicitly (``promotion``), then binds
the strict lax-level primitives.

>>> import flamefx.numpy as fnp
>>> fnp.add(fnp.ones(2, fnp.int32), 1.5).dtype
dtype('float32')
"""

from __future__ import annotations

import math as _pymath

import numpy as np

from flamefx import dtypes, lax
from flamefx.core import Array
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.numpy.logic import truth
from flamefx.numpy.promotion import (as_operand, broadcast_arrays, constant_like, convert,
                                     is_python_scalar, promote_args, promote_args_inexact,
                                     promote_dtypes_inexact)


def _is_bool(x) -> bool:
    return x.dtype == dtypes.bool_


def _is_unsigned(x) -> bool:
    return dtypes.is_int(x.dtype) and np.dtype(x.dtype).kind == "u"


def _inexact(x):
    return promote_dtypes_inexact(x)[0]


# --- arithmetic ----------------------------------------------------------------------------


def add(x, y):
    """``x + y`` with broadcasting (bool: logical or).

    >>> add(1, 2).item()
    3
    """
    x, y = promote_args(x, y)
    return lax.bitwise_or(x, y) if _is_bool(x) else lax.add(x, y)


def subtract(x, y):
    """``x - y`` with broadcasting.

    >>> subtract(5.0, 2.0).item()
    3.0
    """
    x, y = promote_args(x, y)
    if _is_bool(x):
        raise FlamefxTypeError(f"subtract of bool arrays is not defined; use "
                               f"fnp.logical_xor\n  at {user_frame()}")
    return lax.sub(x, y)


def multiply(x, y):
    """``x * y`` with broadcasting (bool: logical and).

    >>> multiply(2, 3).item()
    6
    """
    x, y = promote_args(x, y)
    return lax.bitwise_and(x, y) if _is_bool(x) else lax.mul(x, y)


def true_divide(x, y):
    """``x / y``; integers divide as floats.

    >>> true_divide(1, 2).item()
    0.5
    """
    x, y = promote_args_inexact(x, y)
    return lax.div(x, y)


divide = true_divide


def _floor_divmod(x, y):
    """NumPy's float divmod (npy_divmod): the quotient floored, the remainder with y's sign."""
    mod = lax.rem(x, y)
    quotient = lax.div(lax.sub(x, mod), y)
    fix = lax.bitwise_and(lax.ne(mod, constant_like(mod, 0)),
                          lax.ne(lax.lt(y, constant_like(y, 0)),
                                 lax.lt(mod, constant_like(mod, 0))))
    mod = lax.select_n(fix, mod, lax.add(mod, y))
    quotient = lax.select_n(fix, quotient, lax.sub(quotient, constant_like(quotient, 1)))
    return quotient, mod


def floor_divide(x, y):
    """``x // y``: the quotient rounded towards minus infinity (NumPy's rule).

    >>> floor_divide(-7, 2).item()
    -4
    """
    x, y = promote_args(x, y)
    if _is_bool(x):
        x, y = convert(x, dtypes.int8), convert(y, dtypes.int8)
    if _is_unsigned(x):
        return lax.div(x, y)
    if dtypes.is_int(x.dtype):
        quotient = lax.div(x, y)  # truncates towards zero
        signs_differ = lax.ne(lax.lt(x, constant_like(x, 0)), lax.lt(y, constant_like(y, 0)))
        inexact = lax.ne(lax.rem(x, y), constant_like(x, 0))
        return lax.select_n(lax.bitwise_and(signs_differ, inexact), quotient,
                            lax.sub(quotient, constant_like(quotient, 1)))
    quotient, _ = _floor_divmod(x, y)
    # The quotient is an integer up to rounding error; land on it exactly.
    return lax.floor(lax.add(quotient, constant_like(quotient, 0.5)))


def remainder(x, y):
    """``x % y`` with the sign of ``y`` (NumPy's rule).

    >>> remainder(-7, 3).item()
    2
    """
    x, y = promote_args(x, y)
    if _is_unsigned(x):
        return lax.rem(x, y)
    if dtypes.is_int(x.dtype):
        mod = lax.rem(x, y)
        fix = lax.bitwise_and(lax.ne(mod, constant_like(mod, 0)),
                              lax.ne(lax.lt(y, constant_like(y, 0)),
                                     lax.lt(mod, constant_like(mod, 0))))
        return lax.select_n(fix, mod, lax.add(mod, y))
    return _floor_divmod(x, y)[1]


mod = remainder


def fmod(x, y):
    """C's fmod: the remainder with the sign of ``x``.

    >>> fmod(-7, 3).item()
    -1
    """
    x, y = promote_args(x, y)
    return lax.rem(x, y)


def _concrete_int_exponent(y):
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return int(y)
    return None


def _integer_power(x, y):
    """``x ** y`` for integer arrays by repeated squaring (y >= 0), as NumPy computes it."""
    if isinstance(y, Array):
        n_bits = max(int(np.max(np.asarray(y), initial=0)).bit_length(), 1)
    else:
        n_bits = np.dtype(y.dtype).itemsize * 8
    result, base = constant_like(x, 1), x
    two, zero = constant_like(y, 2), constant_like(y, 0)
    for i in range(n_bits):
        odd = lax.ne(lax.rem(y, two), zero)
        result = lax.select_n(odd, result, lax.mul(result, base))
        if i + 1 < n_bits:
            base = lax.mul(base, base)
            y = lax.div(y, two)
    return result


def power(x, y):
    """``x ** y``; a Python int exponent becomes an exact integer power.

    >>> power(2.0, 3).item()
    8.0
    """
    exponent = _concrete_int_exponent(y)
    if exponent is not None and not is_python_scalar(x):
        x = as_operand(x)
        if dtypes.is_inexact(x.dtype):
            return lax.integer_pow(x, exponent)
        if exponent < 0:
            raise FlamefxTypeError("integers to negative integer powers are not allowed "
                                   f"(use a float base)\n  at {user_frame()}")
    x, y = promote_args(x, y)
    if dtypes.is_inexact(x.dtype):
        return lax.pow(x, y)
    if _is_bool(x):
        x, y = convert(x, dtypes.int8), convert(y, dtypes.int8)
    return _integer_power(x, y)


float_power = power


def negative(x):
    """``-x``.

    >>> negative(2).item()
    -2
    """
    x = as_operand(x)
    if _is_bool(x):
        raise FlamefxTypeError(f"negative of a bool array is not defined; use "
                               f"fnp.logical_not\n  at {user_frame()}")
    return lax.neg(x)


def positive(x):
    """``+x`` (``x`` itself).

    >>> positive(-2).item()
    -2
    """
    return as_operand(x)


def absolute(x):
    """``|x|``.

    >>> absolute(-2.5).item()
    2.5
    """
    x = as_operand(x)
    return x if _is_bool(x) or _is_unsigned(x) else lax.abs(x)


abs = absolute


def sign(x):
    """-1, 0 or 1 by the sign of ``x`` (NaN stays NaN); ``x / |x|`` for complex ``x``.

    >>> sign(-3.0).item()
    -1.0
    """
    x = as_operand(x)
    if dtypes.is_inexact(x.dtype):
        return lax.sign(x)
    if _is_bool(x) or _is_unsigned(x):
        return convert(lax.gt(x, constant_like(x, 0)), x.dtype, x.weak_type)
    positive_part = convert(lax.gt(x, constant_like(x, 0)), x.dtype, x.weak_type)
    negative_part = convert(lax.lt(x, constant_like(x, 0)), x.dtype, x.weak_type)
    return lax.sub(positive_part, negative_part)


def square(x):
    """``x * x``.

    >>> square(3).item()
    9
    """
    x = as_operand(x)
    return lax.square(x) if dtypes.is_inexact(x.dtype) else lax.mul(x, x)


def reciprocal(x):
    """``1 / x`` (integers divide as floats).

    >>> reciprocal(4.0).item()
    0.25
    """
    x = _inexact(x)
    return lax.div(constant_like(x, 1), x)


def maximum(x, y):
    """The elementwise maximum (NaN propagates).

    >>> maximum(1, 3).item()
    3
    """
    x, y = promote_args(x, y)
    return lax.bitwise_or(x, y) if _is_bool(x) else lax.max(x, y)


def minimum(x, y):
    """The elementwise minimum (NaN propagates).

    >>> minimum(1, 3).item()
    1
    """
    x, y = promote_args(x, y)
    return lax.bitwise_and(x, y) if _is_bool(x) else lax.min(x, y)


def fmax(x, y):
    """The elementwise maximum, ignoring NaN (NaN only where both are NaN).

    At ties the gradient goes to ``y``, as in JAX.

    >>> fmax(float("nan"), 1.0).item()
    1.0
    """
    x, y = promote_args(x, y)
    if not dtypes.is_float(x.dtype):
        return maximum(x, y)
    return lax.select_n(lax.bitwise_or(lax.gt(x, y), lax.ne(y, y)), y, x)


def fmin(x, y):
    """The elementwise minimum, ignoring NaN (NaN only where both are NaN).

    At ties the gradient goes to ``y``, as in JAX.

    >>> fmin(float("nan"), 1.0).item()
    1.0
    """
    x, y = promote_args(x, y)
    if not dtypes.is_float(x.dtype):
        return minimum(x, y)
    return lax.select_n(lax.bitwise_or(lax.lt(x, y), lax.ne(y, y)), y, x)


def fabs(x):
    """``|x|`` as a float (integers become the default float dtype, as in JAX).

    >>> fabs(-2).item()
    2.0
    """
    return lax.abs(_inexact(_real_operand(x, "fabs")))


def copysign(x, y):
    """``|x|`` with the sign bit of ``y`` (-0.0 and negative NaN count as negative).

    >>> copysign(2, -0.0).item()
    -2.0
    """
    x, y = promote_args_inexact(x, y)
    return lax.copysign(x, y)


def nextafter(x, y):
    """The next float after ``x`` towards ``y``; float32 and float64 only (JAX also takes
    float16 and bfloat16). Not differentiable (JAX raises; flamefx gives zero).

    >>> nextafter(1.0, 2.0).item() > 1.0
    True
    """
    x, y = promote_args_inexact(x, y)
    if x.dtype not in (dtypes.float32, dtypes.float64):
        raise FlamefxTypeError(f"nextafter supports float32 and float64, got {x.dtype}\n  at "
                               f"{user_frame()}")
    return lax.nextafter(x, y)


def clip(x, min=None, max=None):
    """``x`` limited to [min, max] (either bound may be None).

    >>> clip(5, 0, 3).item()
    3
    """
    x = as_operand(x)
    if min is not None:
        x = maximum(x, min)
    if max is not None:
        x = minimum(x, max)
    return x


# --- transcendental functions ----------------------------------------------------------------


def exp(x):
    """``e ** x``.

    >>> exp(0.0).item()
    1.0
    """
    return lax.exp(_inexact(x))


def exp2(x):
    """``2 ** x``.

    >>> exp2(3.0).item()
    8.0
    """
    x = _inexact(x)
    return lax.exp(lax.mul(x, constant_like(x, _pymath.log(2.0))))


def log(x):
    """The natural logarithm.

    >>> log(1.0).item()
    0.0
    """
    return lax.log(_inexact(x))


def log2(x):
    """The base-2 logarithm.

    >>> log2(8.0).item()
    3.0
    """
    x = _inexact(x)
    return lax.div(lax.log(x), constant_like(x, _pymath.log(2.0)))


def log10(x):
    """The base-10 logarithm.

    >>> f"{log10(100.0).item():.5f}"
    '2.00000'
    """
    x = _inexact(x)
    return lax.div(lax.log(x), constant_like(x, _pymath.log(10.0)))


def log1p(x):
    """``log(1 + x)``, accurate for small ``x``.

    >>> log1p(0.0).item()
    0.0
    """
    return lax.log1p(_inexact(x))


def expm1(x):
    """``exp(x) - 1``, accurate for small ``x``.

    >>> expm1(0.0).item()
    0.0
    """
    return lax.expm1(_inexact(x))


def logaddexp(x, y):
    """``log(exp(x) + exp(y))`` without overflow, smooth at ``x == y`` to every order.

    >>> f"{logaddexp(0.0, 0.0).item():.5f}"
    '0.69315'
    """
    x, y = promote_args_inexact(x, y)
    largest = lax.max(x, y)
    # Shifting by any constant gives the same function, so the shift is held constant: its
    # derivative is exactly zero, and no |x - y| kink enters the derivatives (which made
    # the second derivative 0 at x == y; it is 1/4). Infinities shift by 0.
    finite = lax.is_finite(largest)
    shift = lax.stop_gradient(lax.select_n(finite, constant_like(largest, 0), largest))
    dx, dy = lax.sub(x, shift), lax.sub(y, shift)
    # exp(dx) + exp(dy) - 1, the larger term through expm1 (exactly 0 there) so that log1p
    # keeps a tiny smaller term. Both cases are the same smooth function of x and y.
    sum_minus_one = lax.select_n(lax.ge(x, y), lax.add(lax.exp(dx), lax.expm1(dy)),
                                 lax.add(lax.expm1(dx), lax.exp(dy)))
    return lax.add(shift, lax.log1p(sum_minus_one))


def logaddexp2(x, y):
    """``log2(2**x + 2**y)`` without overflow.

    >>> logaddexp2(1.0, 1.0).item()
    2.0
    """
    x, y = promote_args_inexact(x, y)
    ln2 = constant_like(x, _pymath.log(2.0))
    return lax.div(logaddexp(lax.mul(x, ln2), lax.mul(y, ln2)), ln2)


def sqrt(x):
    """The square root.

    >>> sqrt(4.0).item()
    2.0
    """
    return lax.sqrt(_inexact(x))


def cbrt(x):
    """The real cube root (negative inputs give negative roots).

    >>> f"{cbrt(-8.0).item():.5f}"
    '-2.00000'
    """
    x = _inexact(x)
    root = lax.pow(lax.abs(x), constant_like(x, 1.0 / 3.0))
    return lax.mul(lax.sign(x), root)


def sin(x):
    """The sine.

    >>> sin(0.0).item()
    0.0
    """
    return lax.sin(_inexact(x))


def cos(x):
    """The cosine.

    >>> cos(0.0).item()
    1.0
    """
    return lax.cos(_inexact(x))


def tan(x):
    """The tangent.

    >>> tan(0.0).item()
    0.0
    """
    return lax.tan(_inexact(x))


def arctan2(y, x):
    """The angle of the point (x, y), in (-pi, pi].

    >>> f"{arctan2(1.0, 1.0).item():.5f}"
    '0.78540'
    """
    y, x = promote_args_inexact(y, x)
    return lax.atan2(y, x)


def arctan(x):
    """The inverse tangent.

    >>> f"{arctan(1.0).item():.5f}"
    '0.78540'
    """
    return lax.atan(_inexact(x))


def arcsin(x):
    """The inverse sine, for x in [-1, 1].

    >>> f"{arcsin(1.0).item():.5f}"
    '1.57080'
    """
    return lax.asin(_inexact(x))


def arccos(x):
    """The inverse cosine, for x in [-1, 1].

    >>> f"{arccos(1.0).item():.5f}"
    '0.00000'
    """
    return lax.acos(_inexact(x))


def tanh(x):
    """The hyperbolic tangent.

    >>> tanh(0.0).item()
    0.0
    """
    return lax.tanh(_inexact(x))


def sinh(x):
    """The hyperbolic sine.

    >>> sinh(0.0).item()
    0.0
    """
    return lax.sinh(_inexact(x))


def cosh(x):
    """The hyperbolic cosine.

    >>> cosh(0.0).item()
    1.0
    """
    return lax.cosh(_inexact(x))


def hypot(x, y):
    """``sqrt(x**2 + y**2)`` without overflow for large inputs.

    >>> hypot(3.0, 4.0).item()
    5.0
    """
    x, y = promote_args_inexact(x, y)
    x, y = lax.abs(x), lax.abs(y)
    largest, smallest = lax.max(x, y), lax.min(x, y)
    is_zero = lax.eq(largest, constant_like(largest, 0))
    # Divide by 1 where both are 0, so that the gradient of the unused branch is not NaN.
    safe_largest = lax.select_n(is_zero, largest, constant_like(largest, 1))
    ratio = lax.div(smallest, safe_largest)
    scaled = lax.mul(largest, lax.sqrt(lax.add(constant_like(ratio, 1), lax.mul(ratio, ratio))))
    return lax.select_n(is_zero, scaled, constant_like(scaled, 0))


def _real_operand(x, who):
    x = as_operand(x)
    if dtypes.is_complex(x.dtype):
        raise FlamefxTypeError(f"{who} is not defined for complex arrays (as in JAX), got "
                               f"{x.dtype}\n  at {user_frame()}")
    return x


# --- rounding ------------------------------------------------------------------------------


def floor(x):
    """The largest integer <= x.

    >>> floor(-1.5).item()
    -2.0
    """
    x = _real_operand(x, "floor")
    return lax.floor(x) if dtypes.is_float(x.dtype) else x


def ceil(x):
    """The smallest integer >= x.

    >>> ceil(-1.5).item()
    -1.0
    """
    x = _real_operand(x, "ceil")
    return lax.ceil(x) if dtypes.is_float(x.dtype) else x


def trunc(x):
    """``x`` rounded towards zero.

    >>> trunc(-1.5).item()
    -1.0
    """
    x = _real_operand(x, "trunc")
    if not dtypes.is_float(x.dtype):
        return x
    return lax.select_n(lax.lt(x, constant_like(x, 0)), lax.floor(x), lax.ceil(x))


fix = trunc


def _round_half_to_even(x):
    below = lax.floor(x)
    fraction = lax.sub(x, below)  # exact for floats
    above = lax.add(below, constant_like(below, 1))
    below_is_odd = lax.ne(lax.rem(below, constant_like(below, 2)), constant_like(below, 0))
    half = constant_like(fraction, 0.5)
    tie = lax.select_n(below_is_odd, below, above)
    return lax.select_n(lax.gt(fraction, half),
                        lax.select_n(lax.lt(fraction, half), tie, below), above)


def round(x, decimals: int = 0):
    """``x`` rounded to ``decimals`` places, halves to even (as NumPy).

    >>> round(2.5).item()
    2.0
    >>> round(12.5, -1).item()
    10.0
    """
    x = as_operand(x)
    if dtypes.is_complex(x.dtype):  # each part, as JAX
        return lax.complex(round(lax.real(x), decimals), round(lax.imag(x), decimals))
    if not dtypes.is_float(x.dtype):
        return x
    if decimals == 0:
        return _round_half_to_even(x)
    scale = constant_like(x, 10.0 ** decimals)
    return lax.div(_round_half_to_even(lax.mul(x, scale)), scale)


around = round


def rint(x):
    """``x`` rounded to the nearest integer, halves to even.

    >>> rint(3.5).item()
    4.0
    """
    return round(x)


def where(condition, x=None, y=None, /, *, size=None, fill_value=None):
    """``x`` where ``condition`` holds, else ``y`` (with broadcasting and promotion).

    With one argument: ``nonzero(condition, size=size, fill_value=fill_value)`` (concrete
    arrays only unless a static ``size`` is given).

    >>> import flamefx.numpy as fnp
    >>> fnp.where(fnp.array([True, False]), 1, 0).tolist()
    [1, 0]
    >>> fnp.where(fnp.array([0, 7]), size=2, fill_value=-1)[0].tolist()
    [1, -1]
    """
    if x is None and y is None:
        from flamefx.numpy.indexing import nonzero
        return nonzero(condition, size=size, fill_value=fill_value)
    if size is not None or fill_value is not None:
        raise FlamefxTypeError("where: size and fill_value go with the one-argument form only")
    if x is None or y is None:
        raise FlamefxTypeError("where takes either one argument or three")
    condition = truth(condition)
    x, y = promote_args(x, y)
    condition, x, y = broadcast_arrays(condition, x, y)
    return lax.select_n(condition, y, x)


def nan_to_num(x, copy: bool = True, nan: float = 0.0, posinf=None, neginf=None):
    """``x`` with NaN replaced by ``nan`` and infinities by the largest finite values.

    >>> nan_to_num(float("inf")).item() > 1e38
    True
    """
    del copy
    x = as_operand(x)
    if dtypes.is_complex(x.dtype):  # each part, as JAX
        parts = [nan_to_num(part, nan=nan, posinf=posinf, neginf=neginf)
                 for part in (lax.real(x), lax.imag(x))]
        return lax.complex(*parts)
    if not dtypes.is_float(x.dtype):
        return x
    info = dtypes.finfo(x.dtype)
    posinf = float(info.max) if posinf is None else posinf
    neginf = float(info.min) if neginf is None else neginf
    x = lax.select_n(lax.ne(x, x), x, constant_like(x, nan))
    x = lax.select_n(lax.eq(x, constant_like(x, np.inf)), x, constant_like(x, posinf))
    return lax.select_n(lax.eq(x, constant_like(x, -np.inf)), x, constant_like(x, neginf))



# The array API's spellings (JAX has them too).
acos = arccos
asin = arcsin
atan = arctan
atan2 = arctan2
pow = power
