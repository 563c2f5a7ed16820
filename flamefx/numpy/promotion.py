"""Explicit dtype promotion and shape broadcasting of operands, before strict primitives.

Primitives accept only equal shapes and dtypes; every flamefx.numpy function first turns
its operands into arrays, joins their dtypes on JAX's lattice (``flamefx.dtypes``) and
broadcasts their shapes with NumPy's rules, writing both steps out as primitives.

>>> import flamefx.numpy as fnp
>>> fnp.result_type(fnp.ones(2, fnp.int32), 2.0)
dtype('float32')
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from flamefx import config, core, dtypes, lax
from flamefx.core import Array, Tracer
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame


def is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)


def as_operand(x, name: str = "argument"):
    """An Array or tracer for ``x``; Python scalars stay weak (``x * 2.0`` keeps x's dtype)."""
    if isinstance(x, (Array, Tracer)):
        return x
    if isinstance(x, (list, tuple)):
        from flamefx.numpy.creation import array  # lists may hold tracers: array stacks them
        return array(x)
    if isinstance(x, (str, bytes)) or x is None:
        raise FlamefxTypeError(f"{name} must be an array or a number, got {type(x).__name__} "
                               f"{x!r}\n  at {user_frame()}")
    return core.to_canonical_array(x)  # NumPy float64 data is float32 unless x64 is on


def _typed(x) -> tuple[np.dtype, bool]:
    """The (dtype, weak) pair of an operand, a dtype-like, or a Python type such as float."""
    if isinstance(x, (Array, Tracer)):
        return x.dtype, x.weak_type
    if x is float or x is int or x is bool or x is complex:
        return dtypes.canonicalize(x), x is not bool
    if is_python_scalar(x):
        return dtypes.dtype_of_python_scalar(x), True
    if isinstance(x, (np.ndarray, np.generic)):
        return dtypes.canonicalize_dtype(dtypes.canonicalize(x.dtype)), False
    if isinstance(x, (list, tuple)) or (hasattr(x, "__array__") and not isinstance(x, type)):
        return _typed(as_operand(x))  # lists and array-likes (pandas frames) read as arrays
    return dtypes.canonicalize(x), False


def result_type(*args) -> np.dtype:
    """The dtype flamefx gives an operation on ``args`` (arrays, scalars or dtypes).

    Follows JAX's lattice: Python scalars are weak and defer to arrays.

    >>> result_type(np.dtype('bfloat16'), np.dtype('float16'))
    dtype('float32')
    """
    if not args:
        raise FlamefxValueError("result_type needs at least one argument")
    return dtypes.result_type(*[_typed(a) for a in args])[0]


def promote_types(a, b) -> np.dtype:
    """The smallest dtype both ``a`` and ``b`` convert to safely (no weak types here).

    >>> promote_types('int32', 'float16')
    dtype('float16')
    """
    return dtypes.result_type((dtypes.canonicalize(a), False), (dtypes.canonicalize(b), False))[0]


def convert(x, dtype, weak_type: bool = False):
    """``x`` as ``dtype`` (and weak-typedness); no primitive when nothing changes."""
    dtype = np.dtype(dtype)
    if is_python_scalar(x):
        return core.to_array(x, dtype=dtype, weak=weak_type)
    x = as_operand(x)
    if x.dtype == dtype and x.weak_type == weak_type:
        return x
    return lax.convert_element_type(x, dtype, weak_type=weak_type)


def promote_dtypes(*args) -> list:
    """Operands converted to their common dtype and weak-typedness (JAX's lattice join)."""
    if len(args) == 1:
        return [as_operand(args[0])]
    dtype, weak = dtypes.result_type(*[_typed(a) for a in args])
    out = []
    for a in args:
        if is_python_scalar(a):
            out.append(core.to_array(a, dtype=dtype, weak=weak))
            continue
        out.append(convert(a, dtype, weak))
    return out


def to_inexact_dtype(dtype) -> np.dtype:
    """Floats and complex stay; bool and integers become the default float dtype."""
    return np.dtype(dtype) if dtypes.is_inexact(dtype) else dtypes.default_float()


def promote_dtypes_inexact(*args) -> list:
    """Like ``promote_dtypes`` but the common dtype is floating (``int32 / int32`` -> f32)."""
    dtype, weak = dtypes.result_type(*[_typed(a) for a in args])
    dtype = to_inexact_dtype(dtype)
    return [convert(a, dtype, weak) for a in args]


def broadcast_shapes(*shapes) -> tuple:
    """NumPy's broadcast of ``shapes``, with an error naming them when they do not fit.

    >>> broadcast_shapes((3, 1), (4,))
    (3, 4)
    """
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise FlamefxValueError(f"shapes {listed} cannot be broadcast together (NumPy's rules: "
                                f"trailing dims must be equal or 1)\n  at {user_frame()}") from None


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape`` with NumPy's rules (a view-like new array).

    >>> import flamefx.numpy as fnp
    >>> fnp.broadcast_to(fnp.arange(3), (2, 3)).shape
    (2, 3)
    """
    x = as_operand(x)
    shape = tuple(int(d) for d in shape) if not isinstance(shape, int) else (int(shape),)
    if x.shape == shape:
        return x
    n_lead = len(shape) - x.ndim
    if n_lead < 0 or any(d not in (1, s) for d, s in zip(x.shape, shape[n_lead:])):
        raise FlamefxValueError(f"cannot broadcast an array of shape {x.shape} to shape "
                                f"{shape}\n  at {user_frame()}")
    # broadcast_in_dim maps dims one to one; size-1 dims that grow are squeezed out first.
    kept = [i for i, d in enumerate(x.shape) if d == shape[n_lead + i]]
    if len(kept) != x.ndim:
        x = lax.reshape(x, tuple(x.shape[i] for i in kept))
    return lax.broadcast_in_dim(x, shape, tuple(n_lead + i for i in kept))


def broadcast_arrays(*args) -> list:
    """Operands broadcast against each other (no dtype change).

    >>> import flamefx.numpy as fnp
    >>> [a.shape for a in fnp.broadcast_arrays(fnp.ones((2, 1)), fnp.ones(3))]
    [(2, 3), (2, 3)]
    """
    arrays = [as_operand(a) for a in args]
    shape = broadcast_shapes(*[a.shape for a in arrays])
    if len({a.ndim for a in arrays if a.ndim}) > 1:  # rank promotion (scalars are exempt)
        _check_rank_promotion([a.shape for a in arrays])
    return [broadcast_to(a, shape) for a in arrays]


def _check_rank_promotion(shapes) -> None:
    """Honours ``jax_numpy_rank_promotion``: 'warn' or 'raise' where operands of different
    ranks would broadcast (JAX's option; the default, 'allow', is NumPy's rule)."""
    mode = config.read("numpy_rank_promotion")
    if mode == "allow":
        return
    message = (f"operands of shapes {' '.join(map(str, shapes))} would be broadcast by rank "
               f"promotion, which jax_numpy_rank_promotion={mode!r} forbids; add the leading "
               f"axes explicitly (x[None], fnp.expand_dims)\n  at {user_frame()}")
    if mode == "raise":
        raise FlamefxValueError(message)
    warnings.warn(message, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the user's line, not flamefx's."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    return level


def promote_args(*args) -> list:
    """Operands promoted to one dtype, then broadcast to one shape."""
    return broadcast_arrays(*promote_dtypes(*args))


def promote_args_inexact(*args) -> list:
    """Operands promoted to one floating dtype, then broadcast to one shape."""
    return broadcast_arrays(*promote_dtypes_inexact(*args))


def canonical_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """``axis`` in [0, ndim), negative axes counted from the end."""
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise FlamefxValueError(f"{name} {axis} is out of bounds for an array of {ndim} "
                                f"dimension(s)\n  at {user_frame()}")
    return axis % ndim


def canonical_axes(axis, ndim: int) -> tuple:
    """A sorted tuple of non-negative axes; None means all of them."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = tuple(sorted(canonical_axis(a, ndim) for a in axes))
    if len(set(out)) != len(out):
        raise FlamefxValueError(f"repeated axis in {axis!r}\n  at {user_frame()}")
    return out


def constant_like(x, value):
    """``value`` filled into ``x``'s shape, dtype and weak-typedness (a broadcast scalar)."""
    scalar = core.to_array(value, dtype=x.dtype, weak=x.weak_type)
    return lax.broadcast_in_dim(scalar, tuple(x.shape), ()) if x.shape else scalar
