"""Array creation: array/asarray, filled arrays, ranges, identity and triangle masks.

New arrays go to ``flamefx.devices.default_device()``; Python floats give float32 (the
default float) unless ``flamefx.config`` has ``enable_x64``.

>>> import flamefx.numpy as fnp
>>> fnp.zeros((2, 3)).dtype
dtype('float32')
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, lax
from flamefx.core import Array, Tracer
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.promotion import broadcast_to, convert, is_python_scalar


def _shape_tuple(shape) -> tuple:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise FlamefxValueError(f"negative dimension in shape {shape}\n  at {user_frame()}")
    return shape


def _holds_traced(x) -> bool:
    if isinstance(x, (list, tuple)):
        return any(_holds_traced(e) for e in x)
    return isinstance(x, (Array, Tracer))


def array(obj, dtype=None, copy: bool = True, ndmin: int = 0):
    """An Array holding ``obj`` (nested lists, NumPy arrays, scalars or flamefx arrays).

    Python scalars give strongly typed arrays (``array(2.0)`` is float32 without x64).

    >>> array([[1, 2], [3, 4]]).shape
    (2, 2)
    """
    del copy  # flamefx arrays are immutable; NumPy inputs are always copied (below)
    if isinstance(obj, (Array, Tracer)):
        out = obj if dtype is None else convert(obj, dtypes.canonicalize(dtype))
        if out.weak_type:
            out = convert(out, out.dtype, weak_type=False)
    elif isinstance(obj, (list, tuple)) and _holds_traced(obj):
        from flamefx.numpy.shape import stack  # a list of tracers is a stack of them
        out = stack([array(e, dtype) for e in obj])
    elif is_python_scalar(obj):
        out = core.to_array(obj, dtype=dtype, weak=False)
    elif isinstance(obj, (str, bytes)) or obj is None or isinstance(obj, dict):
        raise FlamefxTypeError(f"cannot make a flamefx array from {type(obj).__name__} "
                               f"{obj!r}\n  at {user_frame()}")
    else:
        if isinstance(obj, np.ndarray):
            obj = obj.copy()  # the caller may write into their NumPy array later
        out = core.to_array(obj, dtype=dtype, weak=False)
    if out.ndim < ndmin:
        out = lax.reshape(out, (1,) * (ndmin - out.ndim) + tuple(out.shape))
    return out


def asarray(a, dtype=None, copy: bool | None = None):
    """``a`` as a flamefx array; arrays of the right dtype come back unchanged.

    >>> asarray([1.5, 2.5]).dtype
    dtype('float32')
    """
    if isinstance(a, (Array, Tracer)):
        return a if dtype is None else convert(a, dtypes.canonicalize(dtype))
    return array(a, dtype=dtype, copy=copy if copy is not None else True)


def full(shape, fill_value, dtype=None):
    """An array of ``shape`` filled with ``fill_value``.

    >>> full((2,), 7).tolist()
    [7, 7]
    """
    shape = _shape_tuple(shape)
    if dtype is None:
        value = array(fill_value)
    else:
        value = asarray(fill_value, dtype=dtypes.canonicalize(dtype))
    if value.weak_type:
        value = convert(value, value.dtype, weak_type=False)
    if value.ndim == 0:
        return lax.broadcast_in_dim(value, shape, ())
    return broadcast_to(value, shape)


def zeros(shape, dtype=None):
    """An array of zeros (default dtype: the default float).

    >>> zeros(3).tolist()
    [0.0, 0.0, 0.0]
    """
    return full(shape, 0, dtypes.canonicalize(dtype if dtype is not None else float))


def ones(shape, dtype=None):
    """An array of ones (default dtype: the default float).

    >>> ones((1, 2)).tolist()
    [[1.0, 1.0]]
    """
    return full(shape, 1, dtypes.canonicalize(dtype if dtype is not None else float))


def empty(shape, dtype=None):
    """Like ``zeros``: flamefx has no uninitialized memory to hand out.

    >>> empty(2).shape
    (2,)
    """
    return zeros(shape, dtype)


def _like_aval(a, dtype, shape):
    aval = core.get_aval(a) if not isinstance(a, (list, tuple)) else asarray(a).aval
    return (aval.shape if shape is None else _shape_tuple(shape),
            aval.dtype if dtype is None else dtypes.canonicalize(dtype))


def full_like(a, fill_value, dtype=None, shape=None):
    """An array shaped like ``a`` (and of its dtype unless given) filled with ``fill_value``.

    >>> full_like(ones(2, int), 5).tolist()
    [5, 5]
    """
    shape, dtype = _like_aval(a, dtype, shape)
    return full(shape, fill_value, dtype)


def zeros_like(a, dtype=None, shape=None):
    """Zeros shaped like ``a``.

    >>> zeros_like(ones(2)).tolist()
    [0.0, 0.0]
    """
    return full_like(a, 0, dtype, shape)


def ones_like(a, dtype=None, shape=None):
    """Ones shaped like ``a``.

    >>> ones_like(zeros(2)).tolist()
    [1.0, 1.0]
    """
    return full_like(a, 1, dtype, shape)


def empty_like(a, dtype=None, shape=None):
    """Like ``zeros_like``.

    >>> empty_like(ones(2)).shape
    (2,)
    """
    return full_like(a, 0, dtype, shape)


def _concrete_scalar(x, what: str):
    if isinstance(x, Tracer):
        x = x._concrete(f"{what} (it must be known while tracing)")
    return x.item() if isinstance(x, (Array, np.ndarray, np.generic)) else x


def arange(start, stop=None, step=None, dtype=None):
    """Evenly spaced values in [start, stop) (the bounds must be concrete numbers).

    >>> arange(3).tolist()
    [0, 1, 2]
    >>> arange(0.0, 1.0, 0.5).tolist()
    [0.0, 0.5]
    """
    start = _concrete_scalar(start, "arange start")
    stop = None if stop is None else _concrete_scalar(stop, "arange stop")
    step = None if step is None else _concrete_scalar(step, "arange step")
    if dtype is None:
        bounds = [v for v in (start, stop, step) if v is not None]
        is_float = any(isinstance(v, float) for v in bounds)
        dtype = dtypes.default_float() if is_float else dtypes.default_int()
    dtype = dtypes.canonicalize(dtype)
    if stop is None:
        start, stop = 0, start
    values = np.arange(start, stop, 1 if step is None else step)
    return core.to_array(values.astype(dtype), weak=False)


def linspace(start, stop, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype=None, axis: int = 0):
    """``num`` evenly spaced values from ``start`` to ``stop`` (concrete scalar bounds).

    >>> linspace(0.0, 1.0, 3).tolist()
    [0.0, 0.5, 1.0]
    """
    start = _concrete_scalar(start, "linspace start")
    stop = _concrete_scalar(stop, "linspace stop")
    dtype = dtypes.canonicalize(dtype if dtype is not None else dtypes.default_float())
    values, step = np.linspace(start, stop, int(num), endpoint=endpoint, retstep=True,
                               axis=axis)
    if dtypes.is_int(dtype):
        values = np.floor(values)
    out = core.to_array(values.astype(dtype), weak=False)
    return (out, step) if retstep else out


def _index_grid(n: int, m: int):
    rows = lax.iota(dtypes.int32, (n, m), 0)
    cols = lax.iota(dtypes.int32, (n, m), 1)
    return rows, cols


def tri(N: int, M: int | None = None, k: int = 0, dtype=None):
    """A matrix with ones at and below the ``k``-th diagonal, zeros above.

    >>> tri(2).tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """
    M = N if M is None else M
    rows, cols = _index_grid(int(N), int(M))
    mask = lax.ge(lax.add(rows, full((N, M), int(k), dtypes.int32)), cols)
    return convert(mask, dtypes.canonicalize(dtype if dtype is not None else float))


def eye(N: int, M: int | None = None, k: int = 0, dtype=None):
    """A matrix with ones on the ``k``-th diagonal.

    >>> eye(2, dtype=int).tolist()
    [[1, 0], [0, 1]]
    """
    M = N if M is None else M
    rows, cols = _index_grid(int(N), int(M))
    mask = lax.eq(lax.add(rows, full((N, M), int(k), dtypes.int32)), cols)
    return convert(mask, dtypes.canonicalize(dtype if dtype is not None else float))


def identity(n: int, dtype=None):
    """The ``n`` x ``n`` identity matrix.

    >>> identity(2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    return eye(n, dtype=dtype)


def _triangle(m, k: int, lower: bool):
    from flamefx.numpy.math import where  # math builds on creation; import at call time
    m = asarray(m)
    if m.ndim < 2:
        raise FlamefxValueError(f"{'tril' if lower else 'triu'} needs an array of at least 2 "
                                f"dimensions, got shape {m.shape}\n  at {user_frame()}")
    n_rows, n_cols = m.shape[-2:]
    keep = tri(n_rows, n_cols, k if lower else k - 1, dtype=bool)
    if not lower:
        keep = lax.bitwise_not(keep)
    return where(broadcast_to(keep, m.shape), m, zeros_like(m))


def tril(m, k: int = 0):
    """``m`` with the elements above the ``k``-th diagonal zeroed (last two axes).

    >>> tril(ones((2, 2))).tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """
    return _triangle(m, k, lower=True)


def triu(m, k: int = 0):
    """``m`` with the elements below the ``k``-th diagonal zeroed (last two axes).

    >>> triu(ones((2, 2))).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
    """
    return _triangle(m, k, lower=False)


def meshgrid(*xi, indexing: str = "xy", sparse: bool = False, copy: bool = True) -> list:
    """Coordinate arrays from 1-D coordinate vectors ('xy' or 'ij' indexing).

    >>> [g.shape for g in meshgrid(arange(3), arange(2))]
    [(2, 3), (2, 3)]
    """
    del copy
    if indexing not in ("xy", "ij"):
        raise FlamefxValueError(f"meshgrid indexing must be 'xy' or 'ij', got {indexing!r}")
    vectors = [asarray(x) for x in xi]
    vectors = [v if v.ndim == 1 else lax.reshape(v, (v.size,)) for v in vectors]
    shape = [v.shape[0] for v in vectors]
    if indexing == "xy" and len(vectors) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for i, v in enumerate(vectors):
        axis = i
        if indexing == "xy" and len(vectors) >= 2 and i < 2:
            axis = 1 - i
        if sparse:
            sparse_shape = [1] * len(vectors)
            sparse_shape[axis] = v.shape[0]
            out.append(lax.reshape(v, tuple(sparse_shape)))
        else:
            out.append(lax.broadcast_in_dim(v, tuple(shape), (axis,)))
    return out
