"""Continuous distributions from uniform bits: JAX's algorithms, step for step, so that a
key gives JAX's numbers (up to the last ulp of the transcendental functions).

>>> from flamefx.random.keys import key
>>> x = uniform(key(0), (3,))
>>> x.dtype, x.shape
(dtype('float32'), (3,))
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.primitives import elementwise
from flamefx.random.keys import as_shape, random_bits, split, unwrap
from flamefx.transforms.ad import stop_gradient


def float_dtype(dtype, where: str) -> np.dtype:
    """``dtype`` (default: the default float), checked to be a float dtype."""
    dtype = dtypes.canonicalize(float if dtype is None else dtype)
    if not dtypes.is_float(dtype):
        raise FlamefxTypeError(f"{where}: dtype must be a float dtype, got {dtype}"
                               f"\n  at {user_frame()}")
    return dtype


def as_param(x, dtype, where: str):
    """A distribution parameter as an array of ``dtype`` (JAX's convert_element_type);
    it must hold real numbers."""
    x = fnp.asarray(x)
    if not (dtypes.is_float(x.dtype) or dtypes.is_int(x.dtype)):
        raise FlamefxTypeError(f"{where}: parameters must be real numbers, got "
                               f"{x.aval.str_short()}\n  at {user_frame()}")
    return x if x.dtype == dtype else x.astype(dtype)


def broadcast_param(x, shape, where: str):
    try:
        return fnp.broadcast_to(x, shape)
    except ValueError as e:
        raise FlamefxValueError(f"{where}: parameter of shape {x.shape} does not broadcast to "
                                f"the shape argument {shape}\n  at {user_frame()}") from e


def draw_shape(shape, where: str, *param_shapes) -> tuple:
    """The draw's shape: ``shape`` if given (the parameter shapes must broadcast to exactly
    it), else the parameters' broadcast shape (JAX's _check_broadcast_shapes)."""
    param_shapes = [tuple(s) for s in param_shapes]
    if shape is None:
        return tuple(fnp.broadcast_shapes(*param_shapes)) if param_shapes else ()
    shape = as_shape(shape, where)
    try:
        joined = tuple(fnp.broadcast_shapes(shape, *param_shapes))
    except ValueError:
        joined = None
    if joined != shape:
        raise FlamefxValueError(f"{where}: parameter shapes {param_shapes} must broadcast to "
                                f"the shape argument {shape}\n  at {user_frame()}")
    return shape


def param_shape(shape, where: str, *params) -> tuple:
    """:func:`draw_shape` for parameter values."""
    return draw_shape(shape, where, *(np.shape(p) for p in params))


def _unit_floats(data, shape, dtype):
    """Floats in [0, 1) with the mantissa of ``dtype`` random: JAX's bit pattern
    ``1.m - 1``, computed as the integer ``m`` times ``2**-nmant`` (exact, no bitcast)."""
    info = np.finfo(dtype)
    nbits, nmant = info.bits, info.nmant
    rng_bits = 8 if nmant < 8 else nbits  # bfloat16 draws a byte, as JAX
    words = random_bits(data, rng_bits, shape)
    shift = elementwise.full_like(words, rng_bits - nmant)
    mantissa = elementwise.shift_right_logical(words, shift)
    floats = elementwise.convert_element_type(mantissa, dtype)
    return elementwise.mul(floats, elementwise.full_like(floats, 2.0**-nmant))


# XLA's CPU backend contracts uniform's u * (maxval - minval) + minval into one FMA in these
# dtypes; float16 and bfloat16 it computes op by op, each in float32 and rounded.
_FUSED = frozenset({dtypes.float32, dtypes.float64})


def _half_affine(floats, minval, maxval):
    """``floats * (maxval - minval) + minval`` in a half type, each op in float32 and
    rounded to the half type by an explicit cast: jit's fused GPU kernels keep half-type
    values in float between ops and round them only at casts."""
    half = floats.dtype

    def up(x):
        return elementwise.convert_element_type(x, dtypes.float32)

    def down(x):
        return elementwise.convert_element_type(x, half)

    span = down(elementwise.sub(up(maxval), up(minval)))
    product = down(elementwise.mul(up(floats), up(span)))
    return down(elementwise.add(up(product), up(minval)))


def _exact_product(minval, maxval, dtype) -> bool:
    """Whether ``u * (maxval - minval)`` is exact for every draw ``u``: bounds given as
    numbers whose difference in ``dtype`` is a power of two, at least 1 (then the FMA rounds
    as a multiply and an add do; [0, 1) and normal's bounds are such)."""
    numbers = (int, float, np.integer, np.floating)
    if not (isinstance(minval, numbers) and isinstance(maxval, numbers)):
        return False
    with np.errstate(all="ignore"):
        span = np.asarray(maxval).astype(dtype) - np.asarray(minval).astype(dtype)
    return bool(np.isfinite(span) and span >= 1 and np.frexp(np.float64(span))[0] == 0.5)


def uniform_from_data(data, shape, dtype, minval, maxval):
    shape = as_shape(shape, "uniform")
    exact = _exact_product(minval, maxval, dtype)
    minval = broadcast_param(as_param(minval, dtype, "uniform"), shape, "uniform")
    maxval = broadcast_param(as_param(maxval, dtype, "uniform"), shape, "uniform")
    floats = _unit_floats(data, shape, dtype)
    if dtype not in _FUSED:
        scaled = _half_affine(floats, minval, maxval)
    elif exact:  # the same bits as the FMA, faster (NumPy has no FMA)
        scaled = floats * (maxval - minval) + minval
    else:
        scaled = elementwise.fma(floats, maxval - minval, minval)
    return fnp.maximum(minval, scaled)


def uniform(key, shape=(), dtype=None, minval=0.0, maxval=1.0):
    """Uniform floats in ``[minval, maxval)``: JAX's bits in every float dtype, any bounds
    (``u * (maxval - minval) + minval`` with one FMA in float32/float64, as XLA's CPU
    backend computes it; op by op in float16/bfloat16, as XLA does).

    >>> from flamefx.random.keys import key
    >>> x = uniform(key(0), (1000,), minval=-1.0, maxval=1.0)
    >>> bool((x >= -1).all() and (x < 1).all())
    True
    """
    dtype = float_dtype(dtype, "uniform")
    data, _ = unwrap(key, "uniform")
    return uniform_from_data(data, shape, dtype, minval, maxval)


def _erf_inv(u, dtype):
    out = elementwise.erf_inv(u)
    return out if out.dtype == dtype else out.astype(dtype)


def normal(key, shape=(), dtype=None):
    """Standard normal floats: ``sqrt(2) * erf_inv(u)``, ``u`` uniform on (-1, 1) (JAX's).
    float32, float16 and bfloat16 draws are JAX's bit for bit (``erf_inv`` computes XLA's
    float32 arithmetic: flamefx/kernels/erf_inv.py); float64 ones take SciPy's ``erf_inv``
    and differ from JAX's by a few ulp (up to ~1e4 ulp beyond 5 sigma).

    >>> from flamefx.random.keys import key
    >>> normal(key(0), (2, 2)).shape
    (2, 2)
    """
    dtype = float_dtype(dtype, "normal")
    data, _ = unwrap(key, "normal")
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    u = uniform_from_data(data, shape, dtype, lo, 1.0)
    return fnp.asarray(np.sqrt(2), dtype) * _erf_inv(u, dtype)


def truncated_normal(key, lower, upper, shape=None, dtype=None):
    """Normal floats conditioned on ``lower < x < upper`` (by the inverse CDF, as JAX). Not
    JAX's bits: XLA has its own float32 ``erf`` for the bounds, so float32 draws differ from
    JAX's in the last bits (68% of draws, up to ~7e-7, for bounds (-1.5, 2)).

    >>> from flamefx.random.keys import key
    >>> x = truncated_normal(key(0), -2.0, 2.0, (100,))
    >>> bool((abs(x) < 2).all())
    True
    """
    dtype = float_dtype(dtype, "truncated_normal")
    data, _ = unwrap(key, "truncated_normal")
    shape = param_shape(shape, "truncated_normal", lower, upper)
    sqrt2 = fnp.asarray(np.sqrt(2), dtype)
    lower = as_param(lower, dtype, "truncated_normal")
    upper = as_param(upper, dtype, "truncated_normal")
    a = elementwise.erf(lower / sqrt2)
    b = elementwise.erf(upper / sqrt2)
    out = sqrt2 * _erf_inv(uniform_from_data(data, shape, dtype, a, b), dtype)
    # erf_inv rounds near the ends: keep the draw strictly inside (lower, upper).
    inf = fnp.asarray(np.inf, dtype)
    low = fnp.nextafter(stop_gradient(lower), inf)
    high = fnp.nextafter(stop_gradient(upper), -inf)
    return fnp.clip(out, low, high)


def exponential(key, shape=(), dtype=None):
    """Exponential(1) floats: ``-log1p(-u)``.

    >>> from flamefx.random.keys import key
    >>> bool((exponential(key(0), (100,)) >= 0).all())
    True
    """
    dtype = float_dtype(dtype, "exponential")
    u = uniform(key, shape, dtype)
    return -fnp.log1p(-u)


def laplace(key, shape=(), dtype=None):
    """Laplace(0, 1) floats: ``sign(u) * log1p(-|u|)``, ``u`` uniform on (-1, 1).

    >>> from flamefx.random.keys import key
    >>> laplace(key(0), (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "laplace")
    epsneg = float(np.finfo(dtype).epsneg)
    u = uniform(key, shape, dtype, minval=-1.0 + epsneg, maxval=1.0)
    return fnp.sign(u) * fnp.log1p(-fnp.abs(u))


def logistic(key, shape=(), dtype=None):
    """Standard logistic floats: ``log(u) - log1p(-u)``.

    >>> from flamefx.random.keys import key
    >>> logistic(key(0), (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "logistic")
    x = uniform(key, shape, dtype, minval=float(np.finfo(dtype).tiny), maxval=1.0)
    return fnp.log(x) - fnp.log1p(-x)


def gumbel(key, shape=(), dtype=None, mode=None):
    """Standard Gumbel floats: ``-log(-log(u))``; ``mode='high'`` spends two uniforms per
    draw for more resolution in the far right tail (as JAX).

    >>> from flamefx.random.keys import key
    >>> gumbel(key(0), (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "gumbel")
    mode = "low" if mode is None else mode
    if mode not in ("low", "high"):
        raise FlamefxValueError(f"gumbel: mode must be 'low' or 'high', got {mode!r}"
                                f"\n  at {user_frame()}")
    data, _ = unwrap(key, "gumbel")
    shape = as_shape(shape, "gumbel")
    info = np.finfo(dtype)
    if mode == "high":
        both = uniform_from_data(data, (2,) + shape, dtype, 0.0, 1.0)
        high, low = both[0], both[1]
        x = fnp.where(high >= 0.5, high, high + float(2.0**-info.nmant) * low + float(info.tiny))
        return -fnp.log(-fnp.log1p(-x))
    u = uniform_from_data(data, shape, dtype, float(info.tiny), 1.0)
    return -fnp.log(-fnp.log(u))


def cauchy(key, shape=(), dtype=None):
    """Standard Cauchy floats: ``tan(pi * (u - 1/2))``.

    >>> from flamefx.random.keys import key
    >>> cauchy(key(0), (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "cauchy")
    u = uniform(key, shape, dtype, minval=float(np.finfo(dtype).eps), maxval=1.0)
    return fnp.tan(fnp.asarray(np.pi, dtype) * (u - fnp.asarray(0.5, dtype)))


def pareto(key, b, shape=None, dtype=None):
    """Pareto floats of shape parameter ``b`` (support ``[1, inf)``): ``exp(e / b)``.

    >>> from flamefx.random.keys import key
    >>> bool((pareto(key(0), 3.0, (100,)) >= 1).all())
    True
    """
    dtype = float_dtype(dtype, "pareto")
    shape = param_shape(shape, "pareto", b)
    b = as_param(b, dtype, "pareto")
    return fnp.exp(exponential(key, shape, dtype) / b)


def weibull_min(key, scale, concentration, shape=(), dtype=None):
    """Weibull floats: ``(-log1p(-u)) ** (1 / concentration) * scale``.

    >>> from flamefx.random.keys import key
    >>> weibull_min(key(0), 1.0, 2.0, (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "weibull_min")
    u = uniform(key, shape, dtype)
    scale = as_param(scale, dtype, "weibull_min")
    concentration = as_param(concentration, dtype, "weibull_min")
    return fnp.power(-fnp.log1p(-u), 1.0 / concentration) * scale


def lognormal(key, sigma=1.0, shape=None, dtype=None):
    """Log-normal floats: ``exp(sigma * normal)``.

    >>> from flamefx.random.keys import key
    >>> bool((lognormal(key(0), 0.5, (10,)) > 0).all())
    True
    """
    dtype = float_dtype(dtype, "lognormal")
    shape = param_shape(shape, "lognormal", sigma)
    return fnp.exp(normal(key, shape, dtype) * as_param(sigma, dtype, "lognormal"))


def rayleigh(key, scale, shape=None, dtype=None):
    """Rayleigh floats: ``scale * sqrt(-2 log u)``.

    >>> from flamefx.random.keys import key
    >>> rayleigh(key(0), 2.0, (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "rayleigh")
    shape = param_shape(shape, "rayleigh", scale)
    u = uniform(key, shape, dtype)
    scale = fnp.broadcast_to(as_param(scale, dtype, "rayleigh"), shape)
    return scale * fnp.sqrt(fnp.log(u) * fnp.asarray(-2, dtype))


def wald(key, mean, shape=None, dtype=None):
    """Wald (inverse Gaussian) floats of ``mean`` and shape parameter 1 (Michael, Schucany
    and Haas's transformation with a normal and a uniform draw, as JAX).

    >>> from flamefx.random.keys import key
    >>> bool((wald(key(0), 1.5, (10,)) > 0).all())
    True
    """
    dtype = float_dtype(dtype, "wald")
    data, _ = unwrap(key, "wald")
    shape = param_shape(shape, "wald", mean)
    k1, k2 = split(data)
    mean = fnp.broadcast_to(as_param(mean, dtype, "wald"), shape)
    y = normal(k1, shape, dtype) ** 2
    z = uniform(k2, shape, dtype)
    mean_sq = mean**2
    x = mean + mean_sq * y / 2 - mean / 2 * fnp.sqrt(4 * mean * y + mean_sq * y**2)
    return fnp.where(z <= mean / (mean + x), x, mean_sq / x)


def triangular(key, left, mode, right, shape=None, dtype=None):
    """Triangular floats on ``[left, right]`` peaking at ``mode`` (inverse CDF).

    >>> from flamefx.random.keys import key
    >>> x = triangular(key(0), 0.0, 1.0, 3.0, (10,))
    >>> bool(((x >= 0) & (x <= 3)).all())
    True
    """
    dtype = float_dtype(dtype, "triangular")
    shape = param_shape(shape, "triangular", left, mode, right)
    left, mode, right = (fnp.broadcast_to(as_param(v, dtype, "triangular"), shape)
                         for v in (left, mode, right))
    u = uniform(key, shape, dtype)
    rising = left + fnp.sqrt(u * (right - left) * (mode - left))
    falling = right - fnp.sqrt((1 - u) * (right - left) * (right - mode))
    return fnp.where(u < (mode - left) / (right - left), rising, falling)


def maxwell(key, shape=(), dtype=None):
    """Maxwell floats: the length of a 3-d standard normal vector.

    >>> from flamefx.random.keys import key
    >>> bool((maxwell(key(0), (10,)) > 0).all())
    True
    """
    dtype = float_dtype(dtype, "maxwell")
    x = normal(key, as_shape(shape, "maxwell") + (3,), dtype)
    return fnp.sqrt(fnp.sum(x * x, axis=-1))


def double_sided_maxwell(key, loc, scale, shape=(), dtype=None):
    """Maxwell floats with a random sign, times ``scale`` plus ``loc``. As JAX, the draw's
    shape is ``shape + broadcast(loc, scale).shape`` (or that broadcast shape alone).

    >>> from flamefx.random.keys import key
    >>> double_sided_maxwell(key(0), 0.0, 1.0, (4,)).shape
    (4,)
    """
    from flamefx.random.discrete import rademacher

    dtype = float_dtype(dtype, "double_sided_maxwell")
    data, typed = unwrap(key, "double_sided_maxwell")
    params = tuple(fnp.broadcast_shapes(np.shape(loc), np.shape(scale)))
    shape = as_shape(shape, "double_sided_maxwell")
    shape = (shape or params) + params
    maxwell_key, sign_key = split(data)
    magnitude = maxwell(maxwell_key, shape, dtype)
    sign = rademacher(sign_key, shape, dtype)
    return (sign * magnitude * as_param(scale, dtype, "double_sided_maxwell")
            + as_param(loc, dtype, "double_sided_maxwell"))


def generalized_normal(key, p, shape=(), dtype=None):
    """Generalized normal floats of power ``p`` (density ~ ``exp(-|x|**p)``): a Gamma(1/p)
    draw to the power ``1/p`` with a random sign (as JAX).

    >>> from flamefx.random.keys import key
    >>> generalized_normal(key(0), 2.0, (3,)).shape
    (3,)
    """
    from flamefx.random.discrete import rademacher
    from flamefx.random.gamma import gamma

    dtype = float_dtype(dtype, "generalized_normal")
    data, _ = unwrap(key, "generalized_normal")
    shape = as_shape(shape, "generalized_normal")
    keys = split(data)
    g = gamma(keys[0], 1.0 / p, shape, dtype)
    r = rademacher(keys[1], shape, dtype)
    return r * g ** (1.0 / p)


def ball(key, d: int, p: float = 2, shape=(), dtype=None):
    """Points uniform in the ``d``-dimensional unit ``p``-norm ball (shape ``shape + (d,)``).

    >>> from flamefx.random.keys import key
    >>> bool((fnp.linalg.norm(ball(key(0), 3, shape=(5,)), axis=-1) <= 1).all())
    True
    """
    dtype = float_dtype(dtype, "ball")
    data, _ = unwrap(key, "ball")
    shape = as_shape(shape, "ball")
    k1, k2 = split(data)
    g = generalized_normal(k1, p, shape + (int(d),), dtype)
    e = exponential(k2, shape, dtype)
    return g / ((fnp.sum(fnp.abs(g) ** p, axis=-1) + e) ** (1.0 / p))[..., None]

