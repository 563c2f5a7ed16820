"""Products and norms: matmul (NumPy's 1-D and batch broadcasting rules), dot, vdot, inner,
outer, tensordot, and ``flamefx.numpy.linalg.norm``. All contractions are one dot_general.

>>> import flamefx.numpy as fnp
>>> (fnp.ones((4, 2, 3)) @ fnp.ones((3, 5))).shape
(4, 2, 5)
"""

from __future__ import annotations

import numpy as np

from flamefx import dtypes, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_shapes, broadcast_to, canonical_axis,
                                     constant_like, convert, promote_dtypes)


def _promoted_pair(a, b):
    a, b = promote_dtypes(a, b)
    if a.dtype == dtypes.bool_:
        a, b = convert(a, dtypes.default_int()), convert(b, dtypes.default_int())
    return a, b


def matmul(a, b, precision=None):
    """The matrix product, with NumPy's rules for 1-D operands and broadcast batch dims.

    >>> matmul([[1, 2]], [[3], [4]]).tolist()
    [[11]]
    """
    a, b = _promoted_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise FlamefxValueError("matmul: operands must not be scalars (use multiply)")
    a_vector, b_vector = a.ndim == 1, b.ndim == 1
    if a_vector:
        a = lax.reshape(a, (1,) + a.shape)
    if b_vector:
        b = lax.reshape(b, b.shape + (1,))
    if a.shape[-1] != b.shape[-2]:
        raise FlamefxValueError(f"matmul: contracted dimensions differ: {a.shape} @ {b.shape}"
                                f"\n  at {user_frame()}")
    if b.ndim == 2:
        # The batch dims of a fold into its rows: one plain GEMM, no broadcast copies.
        out = lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), precision=precision)
    elif a.ndim == 2:
        out = lax.dot_general(a, b, (((1,), (b.ndim - 2,)), ((), ())), precision=precision)
        # out: a rows, b batch..., b cols -> b batch..., a rows, b cols
        perm = tuple(range(1, b.ndim - 1)) + (0, b.ndim - 1)
        out = lax.transpose(out, perm)
    else:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = broadcast_to(a, batch + a.shape[-2:])
        b = broadcast_to(b, batch + b.shape[-2:])
        batch_dims = tuple(range(len(batch)))
        out = lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 2,)), (batch_dims, batch_dims)),
                              precision=precision)
    if a_vector:
        out = lax.reshape(out, out.shape[:-2] + out.shape[-1:])
    if b_vector:
        out = lax.reshape(out, out.shape[:-1])
    return out


def dot(a, b, precision=None):
    """NumPy's dot: products of scalars, inner product of vectors, else contraction of
    the last axis of ``a`` with the second-to-last of ``b``.

    >>> dot([1, 2], [3, 4]).item()
    11
    """
    a, b = _promoted_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        from flamefx.numpy.math import multiply
        return multiply(a, b)
    b_axis = 0 if b.ndim == 1 else b.ndim - 2
    if a.shape[-1] != b.shape[b_axis]:
        raise FlamefxValueError(f"dot: shapes {a.shape} and {b.shape} are not aligned\n  at "
                                f"{user_frame()}")
    return lax.dot_general(a, b, (((a.ndim - 1,), (b_axis,)), ((), ())), precision=precision)


def vdot(a, b, precision=None):
    """The dot product of the flattened arrays.

    >>> vdot([[1, 2]], [[3], [4]]).item()
    11
    """
    a, b = _promoted_pair(a, b)
    return dot(lax.reshape(a, (a.size,)), lax.reshape(b, (b.size,)), precision=precision)


def inner(a, b, precision=None):
    """The sum product over the last axes of ``a`` and ``b``.

    >>> inner([1, 2], [3, 4]).item()
    11
    """
    a, b = _promoted_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        from flamefx.numpy.math import multiply
        return multiply(a, b)
    return lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 1,)), ((), ())), precision=precision)


def outer(a, b):
    """The outer product of the flattened arrays.

    >>> outer([1, 2], [3, 4]).tolist()
    [[3, 4], [6, 8]]
    """
    a, b = _promoted_pair(a, b)
    a, b = lax.reshape(a, (a.size,)), lax.reshape(b, (b.size,))
    shape = (a.shape[0], b.shape[0])
    product = lax.mul(lax.broadcast_in_dim(a, shape, (0,)), lax.broadcast_in_dim(b, shape, (1,)))
    return convert(product, product.dtype, False)


def tensordot(a, b, axes=2, precision=None):
    """The sum product over the last ``axes`` axes of ``a`` and first of ``b`` (or over the
    axes given as a pair of sequences).

    >>> tensordot([[1, 2], [3, 4]], [[1, 0], [0, 1]]).item()
    5
    """
    a, b = _promoted_pair(a, b)
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        a_axes, b_axes = tuple(range(a.ndim - n, a.ndim)), tuple(range(n))
    else:
        a_axes, b_axes = axes
        a_axes = (a_axes,) if isinstance(a_axes, (int, np.integer)) else tuple(a_axes)
        b_axes = (b_axes,) if isinstance(b_axes, (int, np.integer)) else tuple(b_axes)
    a_axes = tuple(canonical_axis(i, a.ndim) for i in a_axes)
    b_axes = tuple(canonical_axis(i, b.ndim) for i in b_axes)
    if len(a_axes) != len(b_axes) or any(a.shape[i] != b.shape[j]
                                         for i, j in zip(a_axes, b_axes)):
        raise FlamefxValueError(f"tensordot: axes {a_axes} of {a.shape} and {b_axes} of "
                                f"{b.shape} do not match\n  at {user_frame()}")
    return lax.dot_general(a, b, ((a_axes, b_axes), ((), ())), precision=precision)


def norm(x, ord=None, axis=None, keepdims: bool = False):
    """Vector norms (ord None/2, 1, inf, -inf, 0, p) and matrix norms ('fro', 1, -1, inf,
    -inf) over ``axis`` (an int: vectors; a pair: matrices; None: the whole array as a
    vector, or as a matrix when 2-D and ``ord`` is given).

    >>> norm([3.0, 4.0]).item()
    5.0
    """
    from flamefx.numpy import math as fmath
    from flamefx.numpy import reductions

    x = as_operand(x)
    if not dtypes.is_float(x.dtype):
        x = convert(x, dtypes.default_float())
    if axis is None:
        if ord is None or x.ndim == 1:
            axes = tuple(range(x.ndim))
            if ord is None:
                return _frobenius(x, axes, keepdims)
        elif x.ndim == 2:
            axes = (0, 1)
        else:
            raise FlamefxValueError("norm: give axis for a norm of a >2-d array with ord set")
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = tuple(canonical_axis(i, x.ndim) for i in axes)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes, keepdims, fmath, reductions)
    if len(axes) != 2:
        raise FlamefxValueError(f"norm: axis must be an int or a pair, got {axis!r}")
    if ord in (None, "fro", "f"):
        return _frobenius(x, axes, keepdims)
    row_axis, col_axis = axes
    abs_x = fmath.abs(x)
    if ord in (1, -1):
        sums = reductions.sum(abs_x, axis=row_axis, keepdims=True)
        pick = reductions.max if ord == 1 else reductions.min
        out = pick(sums, axis=col_axis, keepdims=True)
    elif ord in (np.inf, -np.inf):
        sums = reductions.sum(abs_x, axis=col_axis, keepdims=True)
        pick = reductions.max if ord == np.inf else reductions.min
        out = pick(sums, axis=row_axis, keepdims=True)
    else:
        raise FlamefxValueError(f"norm: matrix ord {ord!r} is not supported (2 and 'nuc' need "
                                f"an SVD, which flamefx does not have)")
    if keepdims:
        return out
    return lax.reshape(out, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def _frobenius(x, axes, keepdims):
    from flamefx.numpy import reductions
    return lax.sqrt(reductions.sum(lax.mul(x, x), axis=axes, keepdims=keepdims))


def _vector_norm(x, ord, axes, keepdims, fmath, reductions):
    if ord is None or ord == 2:
        return _frobenius(x, axes, keepdims)
    if isinstance(ord, str):
        raise FlamefxTypeError(f"norm: ord {ord!r} is a matrix norm; give a pair of axes")
    abs_x = fmath.abs(x)
    if ord == np.inf:
        return reductions.max(abs_x, axis=axes, keepdims=keepdims)
    if ord == -np.inf:
        return reductions.min(abs_x, axis=axes, keepdims=keepdims)
    if ord == 0:
        nonzero = convert(lax.ne(x, constant_like(x, 0)), x.dtype)
        return reductions.sum(nonzero, axis=axes, keepdims=keepdims)
    if ord == 1:
        return reductions.sum(abs_x, axis=axes, keepdims=keepdims)
    total = reductions.sum(fmath.power(abs_x, float(ord)), axis=axes, keepdims=keepdims)
    return fmath.power(total, 1.0 / float(ord))
