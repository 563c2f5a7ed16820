"""flamefx.numpy.linalg: products (matmul with NumPy's 1-D and batch broadcasting rules,
dot, vdot, inner, outer, tensordot, multi_dot, vecdot), norms (norm with every ord,
vector_norm, matrix_norm), the array-API names (diagonal, trace, cross, matrix_transpose),
and the factorizations and solvers of flamefx/numpy/decompositions.py, re-exported here.
All contractions are one dot_general.

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
from flamefx.numpy.shape import matrix_transpose  # noqa: F401 (the array-API name, re-exported)


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
    if dtypes.is_complex(a.dtype):  # vdot conjugates its first argument (NumPy's and JAX's)
        a = lax.conj(a)
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
    """The outer product of the flattened arrays (``flamefx.numpy.outer``; as
    ``flamefx.numpy.linalg.outer`` it also takes n-d input, where JAX's refuses it).

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
    """Vector norms (ord None/2, 1, inf, -inf, 0, p) and matrix norms ('fro', 'nuc', 1, -1,
    2, -2, inf, -inf; 2/-2/'nuc' through the singular values) over ``axis`` (an int:
    vectors; a pair: matrices; None: the whole array as a vector, or as a matrix when 2-D
    and ``ord`` is given).

    >>> norm([3.0, 4.0]).item()
    5.0
    """
    from flamefx.numpy import math as fmath
    from flamefx.numpy import reductions

    x = as_operand(x)
    if not dtypes.is_inexact(x.dtype):
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
        pick = _max_norm if ord == 1 else reductions.min
        out = pick(sums, axis=col_axis, keepdims=True)
    elif ord in (np.inf, -np.inf):
        sums = reductions.sum(abs_x, axis=col_axis, keepdims=True)
        pick = _max_norm if ord == np.inf else reductions.min
        out = pick(sums, axis=row_axis, keepdims=True)
    elif ord in (2, -2, "nuc"):
        out = _singular_value_norm(x, ord, row_axis, col_axis)
    else:
        raise FlamefxValueError(f"norm: matrix ord {ord!r} is not one of 'fro', 'nuc', 1, -1, "
                                f"2, -2, inf, -inf\n  at {user_frame()}")
    if keepdims:
        return out
    return lax.reshape(out, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def _frobenius(x, axes, keepdims):
    from flamefx.numpy import reductions
    if dtypes.is_complex(x.dtype):  # |x|^2 as JAX writes it: real(x * conj(x))
        return lax.sqrt(reductions.sum(lax.real(lax.mul(x, lax.conj(x))), axis=axes,
                                       keepdims=keepdims))
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


def _singular_value_norm(x, ord, row_axis, col_axis):
    """Matrix norms 2 (largest singular value), -2 (smallest) and 'nuc' (their sum), with
    the two axes kept as size 1 (norm's keepdims layout)."""
    from flamefx.numpy import reductions
    from flamefx.numpy.shape import expand_dims, moveaxis
    s = svdvals(moveaxis(x, (row_axis, col_axis), (-2, -1)))
    pick = {2: _max_norm, -2: reductions.min, "nuc": reductions.sum}[ord]
    return expand_dims(pick(s, axis=-1), tuple(sorted((row_axis, col_axis))))


def _max_norm(values, axis, keepdims=False):
    """The largest of non-negative ``values`` over ``axis``; 0 over an empty axis, as JAX's
    norms (they reduce with initial=0), which is the sum of nothing."""
    from flamefx.numpy import reductions
    pick = reductions.max if values.shape[axis] else reductions.sum
    return pick(values, axis=axis, keepdims=keepdims)


def vector_norm(x, /, *, axis=None, keepdims: bool = False, ord=2):
    """The vector norm over ``axis`` (None: all axes; a tuple: those axes as one vector).

    >>> vector_norm([[3.0], [4.0]]).item()
    5.0
    """
    from flamefx.numpy.shape import moveaxis
    x = as_operand(x)
    if not dtypes.is_inexact(x.dtype):
        x = convert(x, dtypes.default_float())
    axes = (tuple(range(x.ndim)) if axis is None else
            (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis))
    axes = tuple(canonical_axis(i, x.ndim) for i in axes)
    if isinstance(ord, str):
        raise FlamefxTypeError(f"vector_norm: ord {ord!r} is a matrix norm (matrix_norm)")
    kept = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    flat = lax.reshape(moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim))),
                       kept + (int(np.prod([x.shape[i] for i in axes], dtype=np.int64)),))
    from flamefx.numpy import math as fmath
    from flamefx.numpy import reductions
    out = _vector_norm(flat, ord, (flat.ndim - 1,), False, fmath, reductions)
    if keepdims:
        out = lax.reshape(out, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return out


def matrix_norm(x, /, *, keepdims: bool = False, ord="fro"):
    """The matrix norm over the last two axes ('fro', 'nuc', 1, -1, 2, -2, inf, -inf).

    >>> matrix_norm([[1.0, 0.0], [0.0, -2.0]], ord=2).item()
    2.0
    """
    return norm(x, ord=ord, axis=(-2, -1), keepdims=keepdims)


def vecdot(x1, x2, /, *, axis: int = -1, precision=None, preferred_element_type=None):
    """The dot product of vectors along ``axis`` (``x1`` conjugated), broadcast over the
    other axes: ``flamefx.numpy.vecdot`` with ``preferred_element_type``.

    >>> vecdot([[1, 2], [3, 4]], [1, 1]).tolist()
    [3, 7]
    """
    from flamefx.numpy.einsum import vecdot as einsum_vecdot
    out = einsum_vecdot(x1, x2, axis=axis, precision=precision)
    return out if preferred_element_type is None else out.astype(preferred_element_type)


def multi_dot(arrays, *, precision=None):
    """The product of a chain of matrices (a 1-d first/last array is a row/column vector).

    >>> multi_dot([[1, 2], [[1, 0], [0, 1]], [3, 4]]).item()
    11
    """
    arrays = [as_operand(a) for a in arrays]
    if len(arrays) < 2:
        raise FlamefxValueError(f"multi_dot: needs at least 2 arrays, got {len(arrays)}")
    out = arrays[0]
    for a in arrays[1:]:
        out = matmul(out, a, precision=precision)
    return out


def diagonal(x, /, *, offset: int = 0):
    """The ``offset``-th diagonal of the matrices in the last two axes.

    >>> diagonal([[1, 2], [3, 4]]).tolist()
    [1, 4]
    """
    from flamefx.numpy import matrices
    return matrices.diagonal(x, offset, -2, -1)


def trace(x, /, *, offset: int = 0, dtype=None):
    """The sum of the ``offset``-th diagonal of the matrices in the last two axes.

    >>> trace([[1, 2], [3, 4]]).item()
    5
    """
    from flamefx.numpy import matrices
    return matrices.trace(x, offset, -2, -1, dtype)


def cross(x1, x2, /, *, axis: int = -1):
    """The cross product of 3-vectors along ``axis`` (the array-API form: size 3 only).

    >>> cross([1, 0, 0], [0, 1, 0]).tolist()
    [0, 0, 1]
    """
    from flamefx.numpy import matrices
    x1, x2 = as_operand(x1), as_operand(x2)
    if not x1.ndim or not x2.ndim or x1.shape[axis] != 3 or x2.shape[axis] != 3:
        raise FlamefxValueError(f"cross: both operands need size 3 along axis {axis}, got "
                                f"shapes {x1.shape} and {x2.shape}\n  at {user_frame()}")
    return matrices.cross(x1, x2, axis=axis)


# The factorizations and solvers (flamefx/numpy/decompositions.py) are linalg names too.
from flamefx.numpy.decompositions import (  # noqa: E402, F401 (re-exports)
    EighResult, QRResult, SlogdetResult, SVDResult, cholesky, cond, det, eigh, eigvalsh, inv,
    lstsq, matrix_power, matrix_rank, pinv, qr, slogdet, solve, svd, svdvals, tensorinv,
    tensorsolve)
