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
from flamefx.errors import (FlamefxTypeError, FlamefxValueError, abstract_shape_error,
                            user_frame)
from flamefx.numpy.concrete import concrete_scalar, concrete_value
from flamefx.numpy.promotion import (broadcast_shapes, broadcast_to, canonical_axis, convert,
                                     is_python_scalar, result_type, to_inexact_dtype)


def _dimension(d) -> int:
    """One dimension: a Python int, or a concrete integer array of one element (as in JAX)."""
    d = concrete_value(d, lambda aval: abstract_shape_error(d, "dimension"))
    if isinstance(d, (Array, np.ndarray, np.generic)) and not (
            dtypes.is_int(d.dtype) and d.size == 1):
        raise FlamefxTypeError(f"a shape dimension must be an integer, got an array of "
                               f"{d.dtype} and shape {d.shape}\n  at {user_frame()}")
    return int(d)


def shape_tuple(shape) -> tuple:
    """A shape argument (an int, a sequence, a concrete 0-d integer array) as a tuple of
    ints; an abstract (traced) or negative dimension raises a flamefx error.

    >>> shape_tuple(3), shape_tuple([2, np.int64(4)])
    ((3,), (2, 4))
    """
    dims = shape if isinstance(shape, (list, tuple)) else (shape,)
    if any(isinstance(d, Tracer) and d.to_concrete() is None for d in dims):
        raise abstract_shape_error(shape)
    if isinstance(shape, (Array, Tracer, np.ndarray)) and not shape.shape:
        shape = (shape,)  # a concrete 0-d integer array is one dimension
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    shape = tuple(_dimension(d) for d in shape)
    if any(d < 0 for d in shape):
        raise FlamefxValueError(f"negative dimension in shape {shape}\n  at {user_frame()}")
    return shape


def _on_device(out, device):
    """``out`` placed on ``device`` (a flamefx Device, or None: where it was made)."""
    if device is None:
        return out
    from flamefx.transfer import device_put
    return device_put(out, device)


def _holds_traced(x) -> bool:
    if isinstance(x, (list, tuple)):
        return any(_holds_traced(e) for e in x)
    return isinstance(x, (Array, Tracer))


def array(obj, dtype=None, copy: bool = True, order=None, ndmin: int = 0, *, device=None):
    """An Array holding ``obj`` (nested lists, NumPy arrays, scalars or flamefx arrays).

    Python scalars give strongly typed arrays (``array(2.0)`` is float32 without x64).
    NumPy's 64-bit data becomes 32-bit unless x64 is on, as in JAX (``array(np.ones(2))``
    is float32); unlike JAX, an explicit ``dtype=float64`` is honoured even with x64 off.

    >>> array([[1, 2], [3, 4]]).shape
    (2, 2)
    """
    del copy, order  # flamefx arrays are immutable; NumPy inputs are always copied (below)
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
        # Without a dtype, NumPy's 64-bit data becomes 32-bit unless x64 is on (as in JAX).
        out = (core.to_array(obj, dtype=dtype, weak=False) if dtype is not None
               else core.to_canonical_array(obj))
    if out.ndim < ndmin:
        out = lax.reshape(out, (1,) * (ndmin - out.ndim) + tuple(out.shape))
    return _on_device(out, device)


def asarray(a, dtype=None, order=None, *, copy: bool | None = None, device=None):
    """``a`` as a flamefx array; arrays of the right dtype come back unchanged.

    >>> asarray([1.5, 2.5]).dtype
    dtype('float32')
    """
    del order
    if isinstance(a, (Array, Tracer)):
        out = a if dtype is None else convert(a, dtypes.canonicalize(dtype))
        return _on_device(out, device)
    return array(a, dtype=dtype, copy=copy if copy is not None else True, device=device)


def full(shape, fill_value, dtype=None, *, device=None):
    """An array of ``shape`` filled with ``fill_value``.

    >>> full((2,), 7).tolist()
    [7, 7]
    """
    shape = shape_tuple(shape)
    if dtype is None:
        value = array(fill_value)
    else:
        value = asarray(fill_value, dtype=dtypes.canonicalize(dtype))
    if value.weak_type:
        value = convert(value, value.dtype, weak_type=False)
    if value.ndim == 0:
        return _on_device(lax.broadcast_in_dim(value, shape, ()), device)
    return _on_device(broadcast_to(value, shape), device)


def zeros(shape, dtype=None, *, device=None):
    """An array of zeros (default dtype: the default float).

    >>> zeros(3).tolist()
    [0.0, 0.0, 0.0]
    """
    return full(shape, 0, dtypes.canonicalize(dtype if dtype is not None else float),
                device=device)


def ones(shape, dtype=None, *, device=None):
    """An array of ones (default dtype: the default float).

    >>> ones((1, 2)).tolist()
    [[1.0, 1.0]]
    """
    return full(shape, 1, dtypes.canonicalize(dtype if dtype is not None else float),
                device=device)


def empty(shape, dtype=None, *, device=None):
    """Like ``zeros``: flamefx has no uninitialized memory to hand out.

    >>> empty(2).shape
    (2,)
    """
    return zeros(shape, dtype, device=device)


def _like_aval(a, dtype, shape):
    aval = core.get_aval(a) if not isinstance(a, (list, tuple)) else asarray(a).aval
    return (aval.shape if shape is None else shape_tuple(shape),
            aval.dtype if dtype is None else dtypes.canonicalize(dtype))


def full_like(a, fill_value, dtype=None, shape=None, *, device=None):
    """An array shaped like ``a`` (and of its dtype unless given) filled with ``fill_value``.

    >>> full_like(ones(2, int), 5).tolist()
    [5, 5]
    """
    shape, dtype = _like_aval(a, dtype, shape)
    return full(shape, fill_value, dtype, device=device)


def zeros_like(a, dtype=None, shape=None, *, device=None):
    """Zeros shaped like ``a``.

    >>> zeros_like(ones(2)).tolist()
    [0.0, 0.0]
    """
    return full_like(a, 0, dtype, shape, device=device)


def ones_like(a, dtype=None, shape=None, *, device=None):
    """Ones shaped like ``a``.

    >>> ones_like(zeros(2)).tolist()
    [1.0, 1.0]
    """
    return full_like(a, 1, dtype, shape, device=device)


def empty_like(a, dtype=None, shape=None, *, device=None):
    """Like ``zeros_like``.

    >>> empty_like(ones(2)).shape
    (2,)
    """
    return full_like(a, 0, dtype, shape, device=device)


def arange(start, stop=None, step=None, dtype=None, *, device=None):
    """Evenly spaced values in [start, stop) (the bounds must be concrete numbers).

    >>> arange(3).tolist()
    [0, 1, 2]
    >>> arange(0.0, 1.0, 0.5).tolist()
    [0.0, 0.5]
    """
    known = "(it must be known while tracing)"
    start = concrete_scalar(start, f"arange start {known}")
    stop = None if stop is None else concrete_scalar(stop, f"arange stop {known}")
    step = None if step is None else concrete_scalar(step, f"arange step {known}")
    if dtype is None:
        bounds = [v for v in (start, stop, step) if v is not None]
        is_float = any(isinstance(v, float) for v in bounds)
        dtype = dtypes.default_float() if is_float else dtypes.default_int()
    dtype = dtypes.canonicalize(dtype)
    if stop is None:
        start, stop = 0, start
    values = np.arange(start, stop, 1 if step is None else step)
    return _on_device(core.to_array(values.astype(dtype), weak=False), device)


def _range_bounds(start, stop, dtype):
    """``start`` and ``stop`` as arrays of the computation dtype (JAX: inexact), and the
    output dtype."""
    if dtype is None:
        dtype = to_inexact_dtype(result_type(start, stop))
    dtype = dtypes.canonicalize(dtype)
    compute_dtype = to_inexact_dtype(dtype)
    # Python numbers go straight to the computation dtype (a float32 detour would round
    # linspace(16777217.0, ..., dtype=float64)'s start).
    return asarray(start, compute_dtype), asarray(stop, compute_dtype), dtype


def _with_axis(shape: tuple, axis: int, size: int) -> tuple:
    return shape[:axis] + (size,) + shape[axis + 1:]


def _num_samples(name: str, num) -> int:
    num = shape_tuple((num,))[0]
    if num < 0:
        raise FlamefxValueError(f"{name}: the number of samples must be non-negative, got "
                                f"{num}\n  at {user_frame()}")
    return num


def _interpolated(start, stop, div: int, axis: int):
    """``start * (1 - t) + stop * t`` for t = 0, 1/div, ..., (div-1)/div along a new ``axis``
    (JAX's formula: exact at both ends, differentiable in both bounds)."""
    from flamefx.numpy.shape import reshape
    dtype = start.dtype
    column_shape = start.shape[:axis] + (1,) + start.shape[axis:]
    out_shape = _with_axis(column_shape, axis, div)
    t_shape = _with_axis((1,) * len(column_shape), axis, div)
    t = lax.div(lax.iota(dtype, (div,), 0), full((div,), div, dtype))
    t = broadcast_to(reshape(t, t_shape), out_shape)
    lo = broadcast_to(reshape(start, column_shape), out_shape)
    hi = broadcast_to(reshape(stop, column_shape), out_shape)
    return lax.add(lax.mul(lo, lax.sub(full(out_shape, 1, dtype), t)), lax.mul(hi, t))


def linspace(start, stop, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype=None, axis: int = 0, *, device=None):
    """``num`` evenly spaced values from ``start`` to ``stop``.

    ``start`` and ``stop`` may be traced and differentiated (arrays broadcast, samples go
    along ``axis``). As in JAX, each value is ``start * (1 - t) + stop * t`` so that both
    ends are exact, and integer dtypes take the floor.

    >>> linspace(0.0, 1.0, 3).tolist()
    [0.0, 0.5, 1.0]
    """
    from flamefx.numpy.shape import expand_dims, reshape
    num = _num_samples("linspace", num)
    start, stop, dtype = _range_bounds(start, stop, dtype)
    compute_dtype = start.dtype
    bounds_shape = broadcast_shapes(start.shape, stop.shape)
    start, stop = broadcast_to(start, bounds_shape), broadcast_to(stop, bounds_shape)
    axis = canonical_axis(axis, len(bounds_shape) + 1)
    column_shape = bounds_shape[:axis] + (1,) + bounds_shape[axis:]
    div = num - 1 if endpoint else num
    if num > 1:
        delta = lax.div(lax.sub(stop, start), full(bounds_shape, div, compute_dtype))
        out = _interpolated(start, stop, div, axis)
        if endpoint:
            out = lax.concatenate([out, expand_dims(stop, axis)], axis)
    elif num == 1:
        delta = (full(bounds_shape, np.nan, compute_dtype) if endpoint
                 else lax.sub(stop, start))
        out = reshape(start, column_shape)
    else:
        delta = full(bounds_shape, np.nan, compute_dtype)
        out = zeros(_with_axis(column_shape, axis, 0), compute_dtype)
    if dtypes.is_int(dtype):
        out = lax.floor(out)
    out = _on_device(convert(out, dtype), device)
    return (out, delta) if retstep else out


def logspace(start, stop, num: int = 50, endpoint: bool = True, base=10.0, dtype=None,
             axis: int = 0):
    """``base ** linspace(start, stop, num)``: values evenly spaced on a log scale.

    Differentiable in ``start``, ``stop`` and ``base``.

    >>> logspace(0.0, 2.0, 3).tolist()
    [1.0, 10.0, 100.0]
    """
    from flamefx.numpy.math import power
    start, stop, dtype = _range_bounds(start, stop, dtype)
    exponents = linspace(start, stop, num, endpoint=endpoint, axis=axis)
    return convert(power(base, exponents), dtype)


def geomspace(start, stop, num: int = 50, endpoint: bool = True, dtype=None, axis: int = 0):
    """``num`` values from ``start`` to ``stop`` evenly spaced on a log scale (a geometric
    progression; both bounds of one sign, negative allowed). Differentiable in the bounds.

    >>> geomspace(1.0, 100.0, 3).tolist()
    [1.0, 10.0, 100.0]
    """
    from flamefx.numpy.math import divide, log10, multiply, sign
    from flamefx.numpy.shape import moveaxis
    start, stop, dtype = _range_bounds(start, stop, dtype)
    signs = sign(start)
    magnitudes = logspace(log10(divide(start, signs)), log10(divide(stop, signs)), num,
                          endpoint=endpoint, base=10.0, dtype=start.dtype, axis=0)
    out = multiply(signs, magnitudes)
    axis = canonical_axis(axis, out.ndim)
    return convert(out if axis == 0 else moveaxis(out, 0, axis), dtype)


def _diagonal_grid(n: int, m: int, k: int):
    """(rows + k, cols) index grids; ``k`` is clamped to [-n, m], beyond which every
    diagonal is empty, so that huge offsets (eye(k=2**31)) do not overflow int32."""
    k = min(max(int(k), -n), m)
    rows = lax.iota(dtypes.int32, (n, m), 0)
    cols = lax.iota(dtypes.int32, (n, m), 1)
    return lax.add(rows, full((n, m), k, dtypes.int32)), cols


def tri(N: int, M: int | None = None, k: int = 0, dtype=None):
    """A matrix with ones at and below the ``k``-th diagonal, zeros above.

    >>> tri(2).tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """
    M = N if M is None else M
    shifted_rows, cols = _diagonal_grid(_dimension(N), _dimension(M), k)
    mask = lax.ge(shifted_rows, cols)
    return convert(mask, dtypes.canonicalize(dtype if dtype is not None else float))


def eye(N: int, M: int | None = None, k: int = 0, dtype=None, *, device=None):
    """A matrix with ones on the ``k``-th diagonal.

    >>> eye(2, dtype=int).tolist()
    [[1, 0], [0, 1]]
    """
    M = N if M is None else M
    shifted_rows, cols = _diagonal_grid(_dimension(N), _dimension(M), k)
    mask = lax.eq(shifted_rows, cols)
    return _on_device(convert(mask, dtypes.canonicalize(dtype if dtype is not None else float)),
                      device)


def identity(n: int, dtype=None, *, device=None):
    """The ``n`` x ``n`` identity matrix.

    >>> identity(2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    return eye(n, dtype=dtype, device=device)


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


def copy(a, order=None):
    """A copy of ``a`` (flamefx arrays are immutable, so the copy is a new array of the same
    values; kept for NumPy code).

    >>> copy([1, 2]).tolist()
    [1, 2]
    """
    del order
    return array(a, copy=True)


def from_dlpack(x, /, *, device=None, copy=None):
    """An array sharing memory with the DLPack-capable ``x`` (NumPy, CuPy, PyTorch, JAX),
    on ``device`` if given. See ``flamefx.from_dlpack``: treat ``x`` as frozen afterwards.

    >>> import numpy as np
    >>> from_dlpack(np.arange(3.0)).tolist()
    [0.0, 1.0, 2.0]
    """
    from flamefx.transfer import from_dlpack as wrap
    out = wrap(x)
    if copy:
        out = core.to_array(np.array(out) if out.device.platform == "cpu" else out.buffer.copy(),
                            device=out.device, weak=False)
    return _on_device(out, device)
