"""Matrix helpers: diagonals (diag, diagonal, diagflat, trace), kron, cross and vander.

Diagonals are strided slices of the flattened matrix (and ``diag`` of a vector is the
matching interior padding), so their gradients are slices and pads, with no gather.

>>> import flamefx.numpy as fnp
>>> fnp.diagonal(fnp.arange(9).reshape(3, 3)).tolist()
[0, 4, 8]
"""

from __future__ import annotations

from flamefx import core, dtypes, lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_arrays, canonical_axis, convert,
                                     promote_dtypes)


def _diagonal_start_and_length(n_rows: int, n_cols: int, offset: int) -> tuple[int, int]:
    """The flat position of the first element of the ``offset`` diagonal, and its length."""
    if offset >= 0:
        return offset, max(0, min(n_rows, n_cols - offset))
    return -offset * n_cols, max(0, min(n_rows + offset, n_cols))


def diagonal(a, offset: int = 0, axis1: int = 0, axis2: int = 1):
    """The ``offset``-th diagonal of the matrices spanned by ``axis1`` and ``axis2``; the
    diagonal becomes the last axis of the result (as in NumPy and JAX).

    >>> diagonal([[1, 2], [3, 4]], offset=1).tolist()
    [2]
    """
    a = as_operand(a)
    if a.ndim < 2:
        raise FlamefxValueError(f"diagonal needs an array of at least 2 dimensions, got shape "
                                f"{a.shape}\n  at {user_frame()}")
    axis1 = canonical_axis(axis1, a.ndim, "axis1")
    axis2 = canonical_axis(axis2, a.ndim, "axis2")
    if axis1 == axis2:
        raise FlamefxValueError(f"diagonal: axis1 and axis2 are both {axis1}\n  at "
                                f"{user_frame()}")
    rest = [d for d in range(a.ndim) if d not in (axis1, axis2)]
    a = lax.transpose(a, tuple(rest) + (axis1, axis2))
    n_rows, n_cols = a.shape[-2:]
    batch = a.shape[:-2]
    flat = lax.reshape(a, batch + (n_rows * n_cols,))
    start, length = _diagonal_start_and_length(n_rows, n_cols, int(offset))
    if length == 0:
        start = 0
    # Consecutive diagonal elements lie n_cols + 1 apart in the flattened matrix.
    limit = start + (length - 1) * (n_cols + 1) + 1 if length else 0
    zeros = (0,) * len(batch)
    return lax.slice(flat, zeros + (start,), batch + (limit,), (1,) * len(batch) + (n_cols + 1,))


def _diag_matrix(v, k: int):
    """The square matrix with vector ``v`` on its ``k``-th diagonal and zeros elsewhere."""
    n = v.shape[0]
    size = n + abs(k)
    zero = core.to_array(0, dtype=v.dtype, weak=v.weak_type)
    if n == 0:
        return lax.broadcast_in_dim(zero, (size, size), ())
    start, _ = _diagonal_start_and_length(size, size, k)
    # Interior padding of size places v's elements size + 1 apart: along the diagonal.
    high = size * size - (start + (n - 1) * (size + 1) + 1)
    flat = lax.pad(v, zero, ((start, high, size),))
    return lax.reshape(flat, (size, size))


def diag(v, k: int = 0):
    """A 1-D ``v`` placed on the ``k``-th diagonal of a square matrix, or the ``k``-th
    diagonal of a 2-D ``v``.

    >>> diag([1, 2]).tolist()
    [[1, 0], [0, 2]]
    """
    v = as_operand(v)
    if v.ndim == 1:
        return _diag_matrix(v, int(k))
    if v.ndim == 2:
        return diagonal(v, offset=int(k))
    raise FlamefxValueError(f"diag takes a 1-D or 2-D array, got shape {v.shape}\n  at "
                            f"{user_frame()}")


def diagflat(v, k: int = 0):
    """The flattened ``v`` placed on the ``k``-th diagonal of a square matrix.

    >>> diagflat([[1, 2]]).tolist()
    [[1, 0], [0, 2]]
    """
    v = as_operand(v)
    return _diag_matrix(lax.reshape(v, (v.size,)), int(k))


def trace(a, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype=None, out=None):
    """The sum of the ``offset``-th diagonal of the matrices spanned by ``axis1``, ``axis2``
    (``out`` is not supported: flamefx arrays are immutable).

    >>> trace([[1, 2], [3, 4]]).item()
    5
    """
    from flamefx.numpy.reductions import sum
    if out is not None:
        raise FlamefxValueError(f"trace: the out argument is not supported (flamefx arrays are "
                                f"immutable; use the returned array)\n  at {user_frame()}")
    return sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def kron(a, b):
    """The Kronecker product: blocks ``a[i, j] * b`` (the lower-rank operand gets leading
    axes of size 1).

    >>> kron([1, 2], [1, 10]).tolist()
    [1, 10, 2, 20]
    """
    from flamefx.numpy.math import multiply
    a, b = promote_dtypes(a, b)
    ndim = max(a.ndim, b.ndim)
    a = lax.reshape(a, (1,) * (ndim - a.ndim) + a.shape)
    b = lax.reshape(b, (1,) * (ndim - b.ndim) + b.shape)
    # a's axes at even, b's at odd positions: their product, reshaped, lays out the blocks.
    a_spread = lax.reshape(a, tuple(d for n in a.shape for d in (n, 1)))
    b_spread = lax.reshape(b, tuple(d for n in b.shape for d in (1, n)))
    out_shape = tuple(int(m) * int(n) for m, n in zip(a.shape, b.shape))
    return lax.reshape(multiply(a_spread, b_spread), out_shape)


def _component(x, i: int):
    return lax.squeeze(lax.slice(x, (0,) * (x.ndim - 1) + (i,), x.shape[:-1] + (i + 1,)),
                       (x.ndim - 1,))


def cross(a, b, axisa: int = -1, axisb: int = -1, axisc: int = -1, axis: int | None = None):
    """The cross product of 2- or 3-vectors along ``axisa`` of ``a`` and ``axisb`` of
    ``b`` (broadcast over the other axes), placed along ``axisc``; ``axis`` sets all three.
    Two 2-vectors give the scalar z-component; a 2-vector with a 3-vector has z = 0.

    >>> cross([1, 0, 0], [0, 1, 0]).tolist()
    [0, 0, 1]
    """
    from flamefx.numpy.math import multiply, subtract
    from flamefx.numpy.shape import moveaxis, stack
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = promote_dtypes(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise FlamefxValueError(f"cross needs vectors, got shapes {a.shape} and {b.shape}\n  at "
                                f"{user_frame()}")
    a = moveaxis(a, axisa, -1)
    b = moveaxis(b, axisb, -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise FlamefxValueError(f"cross: the vectors must have 2 or 3 components, got "
                                f"{a.shape[-1]} (a of shape {a.shape}, axisa={axisa}) and "
                                f"{b.shape[-1]} (b of shape {b.shape}, axisb={axisb})\n  at "
                                f"{user_frame()}")
    a0, a1, b0, b1 = _component(a, 0), _component(a, 1), _component(b, 0), _component(b, 1)
    z = subtract(multiply(a0, b1), multiply(a1, b0))
    if a.shape[-1] == 2 and b.shape[-1] == 2:
        return z
    # A 2-vector's missing z-component is zero, as in NumPy and JAX.
    a2 = _component(a, 2) if a.shape[-1] == 3 else lax.full_like(a0, 0)
    b2 = _component(b, 2) if b.shape[-1] == 3 else lax.full_like(b0, 0)
    x = subtract(multiply(a1, b2), multiply(a2, b1))
    y = subtract(multiply(a2, b0), multiply(a0, b2))
    x, y, z = broadcast_arrays(x, y, z)
    return moveaxis(stack([x, y, z], axis=0), 0, axisc)


def vander(x, N: int | None = None, increasing: bool = False):
    """The Vandermonde matrix of 1-D ``x``: columns ``x**(N-1), ..., x, 1`` (or increasing).

    The powers are running products of ``x`` (not ``power``), so the gradient is finite
    at ``x = 0`` too.

    >>> vander([2, 3], 3).tolist()
    [[4, 2, 1], [9, 3, 1]]
    """
    from flamefx.numpy.reductions import cumprod
    x = as_operand(x)
    if x.ndim != 1:
        raise FlamefxValueError(f"vander needs a 1-D array, got shape {x.shape}\n  at "
                                f"{user_frame()}")
    n_cols = x.shape[0] if N is None else int(N)
    if n_cols < 0:
        raise FlamefxValueError(f"vander: N must be nonnegative, got {n_cols}\n  at "
                                f"{user_frame()}")
    if x.dtype == dtypes.bool_:
        x = convert(x, dtypes.default_int())
    n = x.shape[0]
    if n_cols == 0:
        return lax.broadcast_in_dim(core.to_array(0, dtype=x.dtype), (n, 0), ())
    ones = lax.full_like(lax.reshape(x, (n, 1)), 1)
    repeated = lax.broadcast_in_dim(x, (n, n_cols - 1), (0,))
    powers = cumprod(lax.concatenate([ones, repeated], 1), axis=1, dtype=x.dtype)
    return powers if increasing else lax.rev(powers, (1,))
