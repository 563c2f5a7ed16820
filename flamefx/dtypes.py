"""Supported dtypes and JAX's type-promotion lattice, with weak Python scalars.

Promotion follows JAX's lattice rather than NumPy's value-free table so that
``int32 + float16 -> float16`` and ``bfloat16 + float16 -> float32``; Python scalars
are *weak*: ``x * 2.0`` keeps ``x``'s dtype.
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

SUPPORTED = (
    bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
    bfloat16, float16, float32, float64,
)
_SUPPORTED_SET = frozenset(SUPPORTED)
FLOATS = frozenset({bfloat16, float16, float32, float64})
INTS = frozenset({int8, int16, int32, int64, uint8, uint16, uint32, uint64})


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
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise FlamefxTypeError(f"{dtype!r} is not a dtype flamefx understands") from e
    if dt not in _SUPPORTED_SET:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise FlamefxTypeError(f"dtype {dt} is not supported by flamefx; supported: {names}")
    return dt


def default_float() -> np.dtype:
    return float64 if config.read("enable_x64") else float32


def default_int() -> np.dtype:
    return int64 if config.read("enable_x64") else int32


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOATS


def is_int(dtype) -> bool:
    return np.dtype(dtype) in INTS


def is_inexact(dtype) -> bool:
    return is_float(dtype)


def finfo(dtype):
    """Machine limits of a float dtype (bfloat16 included)."""
    return ml_dtypes.finfo(np.dtype(dtype))


def iinfo(dtype):
    return np.iinfo(np.dtype(dtype))


# --- JAX's promotion lattice -------------------------------------------------------------
# Nodes are dtypes plus the two weak kinds "i*" (Python int) and "f*" (Python float).
_WEAK_INT, _WEAK_FLOAT = "i*", "f*"
_LATTICE = {
    bool_: [_WEAK_INT],
    _WEAK_INT: [uint8, int8],
    uint8: [int16, uint16], uint16: [int32, uint32], uint32: [int64, uint64],
    uint64: [_WEAK_FLOAT],
    int8: [int16], int16: [int32], int32: [int64], int64: [_WEAK_FLOAT],
    _WEAK_FLOAT: [bfloat16, float16],
    bfloat16: [float32], float16: [float32], float32: [float64], float64: [],
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
        if is_float(dtype):
            return _WEAK_FLOAT
        if is_int(dtype):
            return _WEAK_INT
    return dtype


def result_type(*typed) -> tuple[np.dtype, bool]:
    """Joins ``(dtype, weak_type)`` pairs on JAX's lattice; returns ``(dtype, weak)``.

    >>> result_type((np.dtype('int32'), False), (np.dtype('float32'), True))
    (dtype('float32'), False)
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
    return node, False


def dtype_of_python_scalar(x) -> np.dtype:
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, int):
        return default_int()
    if isinstance(x, float):
        return default_float()
    raise FlamefxTypeError(f"{type(x).__name__} is not a Python scalar flamefx accepts")
