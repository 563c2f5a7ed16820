"""Shapes without compute, and the tracing context managers JAX users reach for.

``eval_shape`` traces a function to a jaxpr and returns the shapes and dtypes of its
results without running it; ``ShapeDtypeStruct`` describes an array without holding one
(accepted wherever ``eval_shape`` takes arguments, and as ``pure_callback``'s results).

>>> import flamefx, flamefx.numpy as fnp
>>> eval_shape(lambda x: fnp.zeros((2, 3)) @ x, ShapeDtypeStruct((3, 4), fnp.float32))
ShapeDtypeStruct(shape=(2, 4), dtype=float32)
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from flamefx import core, dtypes, tree_util
from flamefx.core import ShapedArray, Trace, Tracer
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.jaxpr import trace_to_jaxpr


class ShapeDtypeStruct:
    """An array's shape and dtype, without data (as ``jax.ShapeDtypeStruct``).

    >>> s = ShapeDtypeStruct((2, 3), "float32")
    >>> s.shape, s.dtype, s.ndim, s.size
    ((2, 3), dtype('float32'), 2, 6)
    """

    __slots__ = ("shape", "dtype", "weak_type", "sharding")

    def __init__(self, shape, dtype, *, weak_type: bool = False, sharding=None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.weak_type = bool(weak_type)
        self.sharding = sharding  # accepted for JAX's signature; flamefx has no shardings

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def aval(self) -> ShapedArray:
        return ShapedArray(self.shape, self.dtype, self.weak_type)

    def __eq__(self, other):
        return (isinstance(other, ShapeDtypeStruct) and self.shape == other.shape
                and self.dtype == other.dtype and self.weak_type == other.weak_type)

    def __hash__(self):
        return hash((self.shape, self.dtype, self.weak_type))

    def __repr__(self):
        weak = ", weak_type=True" if self.weak_type else ""
        return f"ShapeDtypeStruct(shape={self.shape}, dtype={self.dtype.name}{weak})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]


def _aval_of(x) -> ShapedArray:
    if isinstance(x, ShapeDtypeStruct):
        return x.aval
    if isinstance(x, (core.Array, Tracer, bool, int, float, complex, np.ndarray, np.generic)):
        aval = core.get_aval(x)
        return aval.update(dtype=dtypes.canonicalize_dtype(aval.dtype)) \
            if isinstance(x, (np.ndarray, np.generic)) else aval
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # e.g. jax.ShapeDtypeStruct, a CuPy array
        return ShapedArray(x.shape, x.dtype)
    raise FlamefxTypeError(f"eval_shape: an argument of type {type(x).__name__} is not an "
                           f"array, a scalar or a ShapeDtypeStruct\n  at {user_frame()}")


def eval_shape(fun: Callable, *args, **kwargs):
    """The shapes and dtypes of ``fun(*args, **kwargs)``'s results, as a pytree of
    ``ShapeDtypeStruct``, found by tracing: nothing is computed or allocated, so a function
    that would build a 100 GB array answers at once.

    >>> import flamefx.numpy as fnp
    >>> eval_shape(lambda x: {"y": fnp.sum(x, axis=0)}, fnp.ones((5, 7)))
    {'y': ShapeDtypeStruct(shape=(7,), dtype=float32)}
    """
    leaves, in_tree = tree_util.tree_flatten((args, kwargs))
    in_avals = [_aval_of(x) for x in leaves]
    out_tree_box = []

    def flat_fn(*flat):
        a, k = tree_util.tree_unflatten(in_tree, list(flat))
        out_leaves, out_tree = tree_util.tree_flatten(fun(*a, **k))
        out_tree_box.append(out_tree)
        return [core.ensure_array(o) for o in out_leaves]

    closed = trace_to_jaxpr(flat_fn, in_avals)
    structs = [ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
               for v in closed.jaxpr.outvars]
    return tree_util.tree_unflatten(out_tree_box[0], structs)


@contextlib.contextmanager
def named_scope(name: str):
    """A context manager that names a region of a traced function, as ``jax.named_scope``.

    flamefx records no scope names: it only checks that ``name`` is a string. Equations
    carry their source line instead (see ``JaxprEqn.source``), which is what flamefx's
    errors and listings show.

    >>> with named_scope("encoder"):
    ...     pass
    """
    if not isinstance(name, str):
        raise FlamefxTypeError(f"named_scope takes a string name, got {type(name).__name__}"
                               f"\n  at {user_frame()}")
    yield


class _CompileTimeEvalTrace(Trace):
    """Runs operations on concrete values eagerly (on the root trace); operations on
    tracers go to the enclosing trace as usual."""

    def __init__(self, parent, root):
        super().__init__(parent)
        self.root = root

    def process_primitive(self, prim, args, params):
        target = self.parent if any(isinstance(a, Tracer) for a in args) else self.root
        with core.set_current_trace(target):
            return core.bind_list(prim, *args, **params)


@contextlib.contextmanager
def ensure_compile_time_eval():
    """Inside this block, operations whose operands are all concrete run right away, even
    while jit (or make_jaxpr, or a loop body) is tracing, as ``jax.ensure_compile_time_eval``;
    operations on traced values are traced as usual.

    >>> import flamefx, flamefx.numpy as fnp
    >>> @flamefx.jit
    ... def f(x):
    ...     with ensure_compile_time_eval():
    ...         n = int(fnp.sum(fnp.arange(4)))   # concrete: a Python int at trace time
    ...     return x * n
    >>> f(fnp.ones(2)).tolist()
    [6.0, 6.0]
    """
    root = core.current_trace()
    while root.parent is not None:
        root = root.parent
    with core.new_trace(_CompileTimeEvalTrace, root):
        yield
