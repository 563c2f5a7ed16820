"""Fused multiply-add ``a * b + c`` rounded once, in NumPy: float32 and float64, bit for bit
as the FMA instruction (and CUDA's ``fma``) computes it.

XLA's CPU backend lets LLVM contract a multiply feeding an add into one FMA, so JAX's
float32 and float64 arithmetic rounds ``a * b + c`` once where NumPy rounds twice (JAX's
bounded ``random.uniform`` and erf_inv's polynomials, for two). NumPy has no FMA:

- float32: the product of two float32 is exact in float64, so ``a * b + c`` summed in float64
  and rounded to float32 is right except where the float64 sum lands exactly halfway between
  two float32 (a second rounding); those lanes are settled with the exact sum's remainder
  (TwoSum). :func:`fma_float32_normal` assumes normal float32 results (erf_inv's polynomials
  never make others); :func:`fma_float32` also settles subnormal results.
- float64: an error-free transformation. Dekker's TwoProduct gives ``a * b = p + e`` exactly,
  TwoSum ``p + c = s + t``, and Boldo and Melquiond's theorem ("Emulation of FMA and correctly
  rounded sums: proved algorithms using rounding to odd", IEEE TC 2008) gives the correctly
  rounded ``a * b + c = RN(s + RO(t + e))``, RO rounding to odd. The proof assumes no
  overflow or underflow: lanes outside its range (huge operands, tiny products, non-finite
  or tiny results) are computed exactly from Python fractions (or, for inf/nan operands, as
  ``a * b + c``, the same as an FMA's there).

>>> import numpy as np
>>> a = np.float32(1 + 2**-12)
>>> float(fma(a, a, np.float32(-1))) == 2**-11 + 2**-24   # a * a + -1 rounded twice: 2**-11
True
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

_F32, _F64 = np.float32, np.float64

# Elements per block: a block's temporaries stay in the L2 cache (as erf_inv.BLOCK).
BLOCK = 65536

# A float64 whose low 29 bits are 1 followed by 28 zeros lies halfway between two float32
# (for results in float32's normal range).
_LOW_BITS, _HALFWAY = np.uint64(0x1FFFFFFF), np.uint64(0x10000000)
_F32_TINY = float(np.finfo(_F32).tiny)

_SPLITTER = _F64(2.0**27 + 1)  # Veltkamp: splits a float64 into two 26-bit halves
# Boldo-Melquiond's range, with margin: the products' low parts of |a * b| < 2**-969
# underflow (and the split of |x| >= 2**997 overflows: a NaN, caught as such).
_PRODUCT_MIN = _F64(2.0**-960)


def fma_float32_normal(a: np.ndarray, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, for results in float32's normal range: ``a``
    float32, ``b`` a float32 value or a float64 array of them (cast once, where a chain
    reuses it), ``c`` float32.

    >>> import numpy as np
    >>> fma_float32_normal(np.float32([2.0]), np.float32(3.0), np.float32(1.0))
    array([7.], dtype=float32)
    """
    total = a.astype(_F64)
    total *= b  # exact: 24 + 24 significant bits
    total += c
    out = total.astype(_F32)
    low = total.view(np.uint64)
    low &= _LOW_BITS  # in place: total is not needed again but where it lies halfway
    halfway = np.flatnonzero(low == _HALFWAY)
    if halfway.size:
        a, b, c = (np.broadcast_to(np.asarray(v), out.shape)[halfway] for v in (a, b, c))
        p = a.astype(_F64) * b
        s = p + c
        # TwoSum: the exact sum is s + err; a nonzero err says which float32 is nearer.
        t = s - p
        err = (p - (s - t)) + (c.astype(_F64) - t)
        nudged = np.nextafter(s, np.copysign(np.inf, err))
        out[halfway] = np.where(err == 0, s, nudged).astype(_F32)
    return out


def _round_to_odd_float32(a, b, c) -> np.ndarray:
    """float32 ``a * b + c`` for any result: the float64 sum rounded to odd (exact
    product, TwoSum remainder), then to float32 (rounding to odd with 29 spare bits
    leaves the second rounding right, subnormal float32 included)."""
    p = a.astype(_F64) * b.astype(_F64)
    c = c.astype(_F64)
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    inexact = (err != 0) & np.isfinite(s)
    s = np.where(inexact & even, np.nextafter(s, np.copysign(np.inf, err)), s)
    return s.astype(_F32)


def fma_float32(a, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (same-shape float32 arrays).

    >>> import numpy as np
    >>> fma_float32(np.float32([3.0]), np.float32([0.1]), np.float32([-0.3]))
    array([-7.450581e-09], dtype=float32)
    """
    out = fma_float32_normal(a, b, c)
    # Zero, subnormal, or rounded up to the smallest normal from below it: settled anew.
    tiny = np.flatnonzero(np.abs(out) <= _F32_TINY)
    if tiny.size:
        out[tiny] = _round_to_odd_float32(a[tiny], b[tiny], c[tiny])
    return out


def _split(x):
    """``x = hi + lo``, each half of 26 significant bits (Veltkamp; NaN where x * 2**27
    overflows, which the caller's range check catches)."""
    hi = x * _SPLITTER
    lo = hi - x
    hi -= lo
    lo = np.subtract(x, hi, out=lo)
    return hi, lo


def _two_product(a, b):
    """``a * b = p + e`` exactly (Dekker), within Boldo-Melquiond's range."""
    p = a * b
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    e = a_hi * b_hi
    e -= p
    a_hi *= b_lo
    e += a_hi
    b_hi *= a_lo
    e += b_hi
    a_lo *= b_lo
    e += a_lo
    return p, e


def _two_sum(x, y):
    """``x + y = s + err`` exactly (Knuth): ``err = (x - (s - t)) + (y - t)``, ``t = s - x``."""
    s = x + y
    t = s - x
    err = s - t
    np.subtract(x, err, out=err)
    np.subtract(y, t, out=t)
    err += t
    return s, err


def _exact_float64(a: float, b: float, c: float) -> float:
    """One lane outside the transformation's range: from exact rationals, or as
    ``a * b + c`` where ``a`` or ``b`` is inf or nan (an FMA gives the same there)."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return a * b + c
    if not np.isfinite(c):  # the exact product, finite, added to inf or nan
        return c
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:  # the sign of zero: IEEE's, which a * b + c has when the sum is exact
        return a * b + c
    try:
        return float(exact)  # int / int: correctly rounded
    except OverflowError:
        return np.inf if exact > 0 else -np.inf


def fma_float64(a, b, c) -> np.ndarray:
    """float64 ``a * b + c`` rounded once (same-shape float64 arrays).

    >>> import numpy as np
    >>> fma_float64(np.array([0.1]), np.array([10.0]), np.array([-1.0]))
    array([5.55111512e-17])
    """
    with np.errstate(all="ignore"):
        p, e = _two_product(a, b)
        s, t = _two_sum(p, c)
        v, w = _two_sum(t, e)
        # Round v = RN(t + e) to odd: where inexact and even, one step toward the remainder.
        odd = (v.view(np.uint64) & np.uint64(1)) != 0
        fix = np.flatnonzero((w != 0) & ~odd)
        if fix.size:
            v[fix] = np.nextafter(v[fix], np.copysign(np.inf, w[fix]))
        out = s + v
        # Outside the range: an inf or nan anywhere (overflowing splits and products
        # included) makes out inf or nan; tiny products and results are checked.
        magnitude = np.abs(out)
        inside = magnitude >= _PRODUCT_MIN
        inside &= magnitude < np.inf
        np.abs(p, out=magnitude)
        inside &= magnitude >= _PRODUCT_MIN
    outside = np.flatnonzero(~inside)
    for i in outside:
        out[i] = _exact_float64(float(a[i]), float(b[i]), float(c[i]))
    return out


_BY_DTYPE = {np.dtype(_F32): fma_float32, np.dtype(_F64): fma_float64}


def fma(a, b, c, out=None) -> np.ndarray:
    """``a * b + c`` rounded once: float32 or float64 operands of one dtype, broadcast
    together, computed block by block (``out=`` as a ufunc's).

    >>> import numpy as np
    >>> float(fma(np.float64(0.1), np.float64(10.0), np.float64(-1.0)))
    5.551115123125783e-17
    """
    dtype = np.result_type(a, b, c)
    compute = _BY_DTYPE[dtype]
    a, b, c = (np.asarray(v, dtype) for v in (a, b, c))
    shape = np.broadcast_shapes(a.shape, b.shape, c.shape) if out is None else out.shape
    flat = [np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(-1) for v in (a, b, c)]
    size = flat[0].size
    with np.errstate(all="ignore"):  # inf and nan lanes are results like any other
        if size <= BLOCK:  # one block: no copy into a result array
            result = compute(*flat).reshape(shape)
        else:
            result = np.empty(shape, dtype)
            flat_result = result.reshape(-1)
            for start in range(0, size, BLOCK):
                block = slice(start, start + BLOCK)
                flat_result[block] = compute(*(v[block] for v in flat))
    if out is None:
        return result
    out[...] = result
    return out
