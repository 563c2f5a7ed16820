"""Functional, counter-based random numbers (JAX's scheme, on Threefry-2x32).

A key is a ``uint32[2]`` array. Nothing is hidden or mutated: the same key always gives
the same numbers, so split a key whenever you need fresh randomness. ``key``, ``split``
and ``fold_in`` give the same keys as ``jax.random`` (threefry, non-partitionable).

>>> import flamefx.random as frandom
>>> key = frandom.key(0)
>>> params_key, dropout_key = frandom.split(key)
>>> frandom.normal(params_key, (2, 3)).shape
(2, 3)
"""

from __future__ import annotations

import math

import numpy as np

import flamefx.numpy as fnp
from flamefx import core, dtypes
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.primitives import elementwise, indexing, structural
from flamefx.primitives.random_ops import threefry2x32

_UINT32_MASK = 0xFFFFFFFF


# --- keys --------------------------------------------------------------------------------------


def key(seed) -> core.Array:
    """A PRNG key (``uint32[2]``) from an integer seed, as ``jax.random.key`` / ``PRNGKey``.

    >>> key(0).tolist()
    [0, 0]
    """
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        high = 0 if -(2**31) <= seed < 2**32 else (seed >> 32) & _UINT32_MASK
        return core.to_array(np.array([high, seed & _UINT32_MASK], dtype=np.uint32))
    seed = core.ensure_array(seed)
    if not dtypes.is_int(seed.dtype) or seed.shape != ():
        raise FlamefxTypeError(f"key: the seed must be a scalar integer, got {seed.aval}")
    if seed.dtype.itemsize == 8:
        high = elementwise.convert_element_type(fnp.floor_divide(seed, 2**32), dtypes.uint32)
    else:
        high = elementwise.convert_element_type(fnp.zeros((), seed.dtype), dtypes.uint32)
    low = elementwise.convert_element_type(seed, dtypes.uint32)
    words = [structural.reshape(high, (1,)), structural.reshape(low, (1,))]
    return structural.concatenate(words, 0)


PRNGKey = key


def _check_key(k, where: str):
    k = core.ensure_array(k)
    if k.shape != (2,) or k.dtype != dtypes.uint32:
        raise FlamefxTypeError(
            f"{where}: expected a PRNG key (uint32[2], from flamefx.random.key), got "
            f"{k.aval.str_short()}. To use many keys, vmap over them.")
    return k


def _key_words(k):
    return (structural.reshape(structural.slice(k, (0,), (1,)), ()),
            structural.reshape(structural.slice(k, (1,), (2,)), ()))


def _hash_counters(k, x0, x1):
    """Threefry of counter pairs ``(x0, x1)`` under key ``k``: all outputs, concatenated."""
    k0, k1 = _key_words(k)
    y0, y1 = threefry2x32(k0, k1, x0, x1)
    return structural.concatenate([y0, y1], 0)


def _counter_bits(k, count: int):
    """``count`` random uint32 words: the hash of counters 0..count-1 (JAX's layout when
    ``count`` is even; for odd counts JAX pads with a zero counter, this with ``count``)."""
    half = (count + 1) // 2
    x0 = structural.iota(dtypes.uint32, (half,), 0)
    x1 = elementwise.add(x0, _full_u32(half, (half,)))
    return structural.slice(_hash_counters(k, x0, x1), (0,), (count,))


def _full_u32(value: int, shape):
    scalar = core.to_array(np.uint32(value))
    return structural.broadcast_in_dim(scalar, tuple(shape), ())


def split(key, num: int = 2):
    """``num`` new independent keys (shape ``(num, 2)``) from one key.

    >>> split(key(0)).tolist()
    [[4146024105, 967050713], [2718843009, 1272950319]]
    """
    k = _check_key(key, "split")
    return structural.reshape(_counter_bits(k, 2 * int(num)), (int(num), 2))


def fold_in(key, data):
    """A new key from ``key`` and an integer ``data`` (e.g. a step or layer index).

    >>> fold_in(key(0), 1).shape
    (2,)
    """
    k = _check_key(key, "fold_in")
    data = core.ensure_array(data)
    if not dtypes.is_int(data.dtype) or data.shape != ():
        raise FlamefxTypeError(f"fold_in: data must be a scalar integer, got {data.aval}")
    x0 = structural.iota(dtypes.uint32, (1,), 0)
    x1 = structural.reshape(elementwise.convert_element_type(data, dtypes.uint32), (1,))
    return _hash_counters(k, x0, x1)


# --- bits and uniform floats ---------------------------------------------------------------------


def _shape(shape) -> tuple:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)


def bits(key, shape=(), dtype=dtypes.uint32):
    """Uniformly random unsigned 32-bit words of ``shape``.

    >>> bits(key(0), (3,)).dtype
    dtype('uint32')
    """
    if np.dtype(dtype) != dtypes.uint32:
        raise FlamefxTypeError(f"bits: only uint32 is supported, got {np.dtype(dtype)}")
    shape = _shape(shape)
    k = _check_key(key, "bits")
    return structural.reshape(_counter_bits(k, math.prod(shape)), shape)


def _shift_right(words, amount: int):
    return elementwise.shift_right_logical(words, _full_u32(amount, words.shape))


def _random_mantissa(k, shape, dtype) -> tuple:
    """Uniform random integers as floats, exactly: (values, bits); 24 bits for float32
    and narrower, 53 bits (from two words) for float64."""
    n = math.prod(shape)
    if np.dtype(dtype) == dtypes.float64:
        words = _counter_bits(k, 2 * n)
        high = _shift_right(structural.slice(words, (0,), (n,)), 5)  # 27 bits
        low = _shift_right(structural.slice(words, (n,), (2 * n,)), 6)  # 26 bits
        mantissa = (elementwise.convert_element_type(high, dtypes.float64) * float(2**26)
                    + elementwise.convert_element_type(low, dtypes.float64))
        return mantissa, 53
    top_bits = _shift_right(_counter_bits(k, n), 8)  # 24 bits: exact in float32
    return elementwise.convert_element_type(top_bits, dtypes.float32), 24


def _unit_float(k, shape, dtype, open_interval: bool):
    """Floats in [0, 1) (or (0, 1) when ``open_interval``) with full mantissa resolution."""
    shape = _shape(shape)
    mantissa, bits = _random_mantissa(k, shape, dtype)
    step = 2.0**-bits
    unit = (mantissa + 0.5) * step if open_interval else mantissa * step
    if open_interval:  # (2**bits - 0.5) * step rounds up to exactly 1.0: keep it below 1
        unit = elementwise.min(unit, fnp.full_like(unit, 1.0 - step))
    return structural.reshape(unit, shape)


def _symmetric_open_unit(k, shape, dtype):
    """Floats in the open interval (-1, 1), symmetric, every value exactly representable:
    ``m * 2**(1-bits) - (1 - 2**-bits)`` for integer ``m`` in [0, 2**bits)."""
    shape = _shape(shape)
    mantissa, bits = _random_mantissa(k, shape, dtype)
    values = mantissa * 2.0 ** (1 - bits) - (1.0 - 2.0**-bits)
    return structural.reshape(values, shape)


def _float_dtype(dtype, where: str) -> np.dtype:
    dtype = dtypes.canonicalize(dtype)
    if not dtypes.is_float(dtype):
        raise FlamefxTypeError(f"{where}: dtype must be a float dtype, got {dtype}")
    return dtype


def uniform(key, shape=(), dtype=dtypes.float32, minval=0.0, maxval=1.0):
    """Uniform floats in ``[minval, maxval)``.

    >>> x = uniform(key(0), (1000,), minval=-1.0, maxval=1.0)
    >>> bool((x >= -1).all() and (x < 1).all())
    True
    """
    dtype = _float_dtype(dtype, "uniform")
    k = _check_key(key, "uniform")
    unit = _unit_float(k, shape, dtype, open_interval=False)
    compute = unit.dtype
    minval = fnp.asarray(minval, compute)
    maxval = fnp.asarray(maxval, compute)
    out = fnp.maximum(minval, unit * (maxval - minval) + minval)
    return out.astype(dtype)


def normal(key, shape=(), dtype=dtypes.float32):
    """Standard normal floats: ``sqrt(2) * erf_inv(u)`` for ``u`` uniform on (-1, 1).

    >>> normal(key(0), (2, 2)).shape
    (2, 2)
    """
    dtype = _float_dtype(dtype, "normal")
    k = _check_key(key, "normal")
    # erf_inv(+-1) is infinite, so the argument must stay strictly inside (-1, 1).
    symmetric = _symmetric_open_unit(k, shape, dtype)
    return (elementwise.erf_inv(symmetric) * math.sqrt(2.0)).astype(dtype)


def truncated_normal(key, lower, upper, shape=None, dtype=dtypes.float32):
    """Normal floats conditioned on ``lower <= x <= upper`` (by the inverse CDF).

    >>> x = truncated_normal(key(0), -2.0, 2.0, (100,))
    >>> bool((abs(x) <= 2).all())
    True
    """
    dtype = _float_dtype(dtype, "truncated_normal")
    k = _check_key(key, "truncated_normal")
    compute = dtypes.float64 if dtype == dtypes.float64 else dtypes.float32
    lower = fnp.asarray(lower, compute)
    upper = fnp.asarray(upper, compute)
    if shape is None:
        shape = fnp.broadcast_shapes(lower.shape, upper.shape)
    shape = _shape(shape)
    sqrt2 = math.sqrt(2.0)
    a = elementwise.erf(fnp.broadcast_to(lower / sqrt2, shape))
    b = elementwise.erf(fnp.broadcast_to(upper / sqrt2, shape))
    unit = _unit_float(k, shape, compute, open_interval=True)
    out = elementwise.erf_inv(a + unit * (b - a)) * sqrt2
    # erf_inv rounds near the ends; keep the result inside the interval.
    out = fnp.clip(out, lower, upper)
    return out.astype(dtype)


# --- discrete distributions ------------------------------------------------------------------


def bernoulli(key, p=0.5, shape=None):
    """Booleans that are True with probability ``p``.

    >>> bernoulli(key(0), 0.5, (4,)).dtype
    dtype('bool')
    """
    k = _check_key(key, "bernoulli")
    p = fnp.asarray(p)
    if not dtypes.is_float(p.dtype):
        p = p.astype(dtypes.float32)
    shape = p.shape if shape is None else _shape(shape)
    return uniform(k, shape, p.dtype) < p


def randint(key, shape, minval, maxval, dtype=dtypes.int32):
    """Uniform integers in ``[minval, maxval)``.

    >>> x = randint(key(0), (100,), 0, 10)
    >>> bool((x >= 0).all() and (x < 10).all())
    True
    """
    dtype = dtypes.canonicalize(dtype)
    if not dtypes.is_int(dtype):
        raise FlamefxTypeError(f"randint: dtype must be an integer dtype, got {dtype}")
    k = _check_key(key, "randint")
    shape = _shape(shape)
    # Scale a 53-bit uniform float: every span up to 2**32 is exact enough (bias < 2**-21)
    # without 64-bit integer arithmetic, which the GPU kernels do not all have.
    low = fnp.broadcast_to(fnp.asarray(minval, dtypes.float64), shape)
    high = fnp.broadcast_to(fnp.asarray(maxval, dtypes.float64), shape)
    span = fnp.maximum(high - low, 1.0)
    offset = fnp.minimum(fnp.floor(_unit_float(k, shape, dtypes.float64, False) * span),
                         span - 1.0)
    return (low + offset).astype(dtype)


def permutation(key, x, axis: int = 0):
    """A random permutation of ``range(x)`` (int ``x``) or of ``x`` along ``axis``.

    >>> sorted(permutation(key(0), 5).tolist())
    [0, 1, 2, 3, 4]
    """
    k = _check_key(key, "permutation")
    if isinstance(x, (int, np.integer)):
        return _random_order(k, int(x))
    x = core.ensure_array(x)
    if x.ndim == 0:
        raise FlamefxValueError("permutation: x must be an int or an array of rank >= 1")
    return fnp.take(x, _random_order(k, x.shape[axis]), axis=axis)


def _random_order(k, n: int):
    """A uniformly random ordering of ``range(n)``, without a sort primitive.

    Each round stably moves the positions that drew a 0 bit in front of those that drew
    a 1: ``rounds`` such passes are an LSD radix sort by ``rounds`` random bits per
    element, i.e. a uniform shuffle up to ties, whose chance (about n**2 / 2**rounds)
    the round count keeps below 1e-4. Every pass is a cumsum and a scatter: O(n) work,
    traceable, batchable.
    """
    rounds = 2 * max(n - 1, 1).bit_length() + 16
    words = bits(k, (-(-rounds // 32), n))
    order = fnp.arange(n, dtype=dtypes.int32)
    for r in range(rounds):
        word = structural.reshape(structural.slice(words, (r // 32, 0), (r // 32 + 1, n)), (n,))
        one = elementwise.convert_element_type(
            elementwise.bitwise_and(_shift_right(word, r % 32), _full_u32(1, (n,))),
            dtypes.int32)
        zero = 1 - one
        zeros_before = fnp.cumsum(zero) - zero
        ones_before = fnp.cumsum(one) - one
        destination = fnp.where(one == 1, fnp.sum(zero) + ones_before, zeros_before)
        order = indexing.scatter(fnp.zeros((n,), dtypes.int32), destination[:, None], order,
                                 (0,), "set")
    return order.astype(dtypes.default_int())


def choice(key, a, shape=(), replace: bool = True, p=None):
    """Random elements of ``a`` (an array, or ``range(a)`` for an int), optionally weighted.

    >>> choice(key(0), 5, (3,), replace=False).shape
    (3,)
    """
    k = _check_key(key, "choice")
    values = fnp.arange(a) if isinstance(a, (int, np.integer)) else core.ensure_array(a)
    n = values.shape[0]
    shape = _shape(shape)
    count = math.prod(shape)
    if not replace:
        if p is not None:
            raise FlamefxValueError("choice: weighted sampling without replacement (p with "
                                    "replace=False) is not supported")
        if count > n:
            raise FlamefxValueError(f"choice: cannot take {count} samples from {n} without "
                                    f"replacement")
        index = structural.slice(_random_order(k, n), (0,), (count,))
    elif p is None:
        index = randint(k, (count,), 0, n)
    else:
        # Inverse CDF: count the cumulative weights at or below each uniform draw.
        cdf = fnp.cumsum(fnp.asarray(p, dtypes.float32))
        draws = uniform(k, (count,)) * cdf[-1]
        index = fnp.sum(cdf[None, :] <= draws[:, None], axis=1)
        index = fnp.minimum(index, n - 1).astype(dtypes.default_int())
    return fnp.take(values, index, axis=0).reshape(shape + values.shape[1:])
