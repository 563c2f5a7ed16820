"""Supported dtypes and JAX's type-promotion lattice, with weak Python scalars.

Promotion follows JAX's lattice rather than NumPy's value-free table so that
``int32 + float16 -> float16``, ``bfloat16 + float16 -> float32`` and
``float32 + complex64 -> complex64`` (not complex128); Python scalars are *weak*:
``x * 2.0`` keeps ``x``'s dtype, and ``x * 1j`` is complex of ``x``'s width.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from flamefx import config
from flamefx.errors import FlamefxTypeError

bool_ = np.dtype(np.bool_)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
uint16 = np.dtype(np.uint16)
uint32 = np.dtype(np.uint32)
uint64 = np.dtype(np.uint64)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
complex64 = np.dtype(np.complex64)
complex128 = np.dtype(np.complex128)

SUPPORTED = (
    bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
    bfloat16, float16, float32, float64, complex64, complex128,
)
_SUPPORTED_SET = frozenset(SUPPORTED)
FLOATS = frozenset({bfloat16, float16, float32, float64})
INTS = frozenset({int8, int16, int32, int64, uint8, uint16, uint32, uint64})
COMPLEXES = frozenset({complex64, complex128})
INEXACT = FLOATS | COMPLEXES


def canonicalize(dtype) -> np.dtype:
    """Returns the np.dtype for ``dtype`` or raises a clear error if flamefx lacks it.

    >>> canonicalize("float32")
    dtype('float32')
    """
    if dtype is float:
        return default_float()
    if dtype is int:
        return default_int()
    if dtype is bool:
        return bool_
    if dtype is complex:
        return default_complex()
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise FlamefxTypeError(f"{dtype!r} is not a dtype flamefx understands") from e
    if dt not in _SUPPORTED_SET:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise FlamefxTypeError(f"dtype {dt} is not supported by flamefx; supported: {names}")
    return dt


# With x64 off (JAX's default), 64-bit NumPy data entering flamefx becomes 32-bit.
_X64_TO_32 = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32),
              np.dtype(np.uint64): np.dtype(np.uint32),
              np.dtype(np.complex128): np.dtype(np.complex64)}


def canonicalize_dtype(dtype) -> np.dtype:
    """The dtype NumPy data of ``dtype`` takes in flamefx: 32-bit unless x64 is on (JAX's
    ``jax.dtypes.canonicalize_dtype``).

    >>> canonicalize_dtype("float64")
    dtype('float32')
    """
    dt = np.dtype(dtype)
    if dt in _X64_TO_32 and not config.read("enable_x64"):
        return _X64_TO_32[dt]
    return dt


def default_float() -> np.dtype:
    return float64 if config.read("enable_x64") else float32


def default_int() -> np.dtype:
    return int64 if config.read("enable_x64") else int32


def default_complex() -> np.dtype:
    return complex128 if config.read("enable_x64") else complex64


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOATS


def is_int(dtype) -> bool:
    return np.dtype(dtype) in INTS


def is_complex(dtype) -> bool:
    return np.dtype(dtype) in COMPLEXES


def is_inexact(dtype) -> bool:
    """Float or complex: the dtypes that have derivatives."""
    return np.dtype(dtype) in INEXACT


def real_dtype(dtype) -> np.dtype:
    """The dtype of the real (and imaginary) part: complex64 -> float32; others unchanged."""
    dtype = np.dtype(dtype)
    return {complex64: float32, complex128: float64}.get(dtype, dtype)


def complex_dtype(dtype) -> np.dtype:
    """The complex dtype holding ``dtype``'s values: float64 -> complex128, other floats (and
    complex64) -> complex64."""
    dtype = np.dtype(dtype)
    if dtype in COMPLEXES:
        return dtype
    return complex128 if dtype == float64 else complex64


class finfo:
    """Machine limits of a float (or complex: its parts') dtype, bfloat16 included.

    The limits are Python floats, as the array API asks (JAX's finfo gives NumPy scalars).

    >>> finfo("float32").eps
    1.1920928955078125e-07
    """

    def __init__(self, dtype):
        dt = real_dtype(np.dtype(dtype))
        if dt not in FLOATS:
            raise FlamefxTypeError(f"finfo needs a floating-point or complex dtype, got {dt} "
                                   f"(iinfo gives integer limits)")
        info = ml_dtypes.finfo(dt)
        self.dtype = dt
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.epsneg = float(info.epsneg)
        self.max = float(info.max)
        self.min = float(info.min)
        self.smallest_normal = float(info.smallest_normal)
        self.tiny = self.smallest_normal
        self.smallest_subnormal = float(info.smallest_subnormal)
        self.resolution = float(info.resolution)
        self.precision = int(info.precision)
        self.nmant, self.nexp = int(info.nmant), int(info.nexp)
        self.maxexp, self.minexp = int(info.maxexp), int(info.minexp)
        self.machep, self.negep = int(info.machep), int(info.negep)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, "
                f"dtype={self.dtype})")


def iinfo(dtype):
    return np.iinfo(np.dtype(dtype))


# --- JAX's promotion lattice -------------------------------------------------------------
# Nodes are dtypes plus the weak kinds "i*", "f*" and "c*" (Python int, float, complex).
_WEAK_INT, _WEAK_FLOAT, _WEAK_COMPLEX = "i*", "f*", "c*"
_LATTICE = {
    bool_: [_WEAK_INT],
    _WEAK_INT: [uint8, int8],
    uint8: [int16, uint16], uint16: [int32, uint32], uint32: [int64, uint64],
    uint64: [_WEAK_FLOAT],
    int8: [int16], int16: [int32], int32: [int64], int64: [_WEAK_FLOAT],
    _WEAK_FLOAT: [bfloat16, float16, _WEAK_COMPLEX],
    bfloat16: [float32], float16: [float32], float32: [float64, complex64], float64: [complex128],
    _WEAK_COMPLEX: [complex64], complex64: [complex128], complex128: [],
}


@functools.cache
def _upper_bounds(node) -> frozenset:
    ups = {node}
    for nxt in _LATTICE[node]:
        ups |= _upper_bounds(nxt)
    return frozenset(ups)


@functools.cache
def _join(a, b):
    common = _upper_bounds(a) & _upper_bounds(b)
    # The least upper bound is the common node every other common node is above.
    for node in common:
        if all(other in _upper_bounds(node) for other in common):
            return node
    raise AssertionError(f"lattice has no join for {a}, {b}")


def _node(dtype: np.dtype, weak: bool):
    if weak:
        if is_complex(dtype):
            return _WEAK_COMPLEX
        if is_float(dtype):
            return _WEAK_FLOAT
        if is_int(dtype):
            return _WEAK_INT
    return dtype


def result_type(*typed) -> tuple[np.dtype, bool]:
    """Joins ``(dtype, weak_type)`` pairs on JAX's lattice; returns ``(dtype, weak)``.

    >>> result_type((np.dtype('int32'), False), (np.dtype('float32'), True))
    (dtype('float32'), True)
    >>> result_type((np.dtype('float32'), False), (np.dtype('complex64'), True))
    (dtype('complex64'), False)
    """
    node = None
    for dtype, weak in typed:
        n = _node(np.dtype(dtype), weak)
        node = n if node is None else _join(node, n)
    if node == _WEAK_FLOAT:
        # A weak float joined only with weak things: keep the widest concrete float seen.
        floats = [np.dtype(d) for d, _ in typed if is_float(d)]
        return (max(floats, key=lambda d: d.itemsize) if floats else default_float()), True
    if node == _WEAK_INT:
        ints = [np.dtype(d) for d, _ in typed if is_int(d)]
        return (max(ints, key=lambda d: d.itemsize) if ints else default_int()), True
    if node == _WEAK_COMPLEX:
        # Only weak things: as wide as the widest float or complex seen (float64 -> complex128).
        inexact = [complex_dtype(d) for d, _ in typed if is_inexact(d)]
        return (max(inexact, key=lambda d: d.itemsize) if inexact else default_complex()), True
    return node, False


def dtype_of_python_scalar(x) -> np.dtype:
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, int):
        return default_int()
    if isinstance(x, float):
        return default_float()
    if isinstance(x, complex):
        return default_complex()
    raise FlamefxTypeError(f"{type(x).__name__} is not a Python scalar flamefx accepts")
