"""Host callbacks: Python functions called on concrete values from inside traced programs.

Three primitives, as JAX has them:

- ``debug_callback`` (``flamefx.debug.print`` / ``flamefx.debug.callback``): no outputs,
  *effectful* — jit's passes keep it although nothing reads its (absent) results, never
  merge two of them and never fold one at compile time (``EFFECTFUL`` below);
- ``pure_callback``: results of declared shapes, a pure function of its operands (so it may
  be merged or dropped like any other equation);
- ``io_callback``: results of declared shapes and effectful (``flamefx.experimental``).

The callback travels in the equation's params as a ``HostCallback`` (compared by identity,
so jit's cache and CSE never confuse two callbacks). On the GPU the operands are copied to
the host at the equation's place in the program and the results copied back; a jitted
program holding a callback is never replayed as a CUDA graph (``passes.calls_host``, read
by jit's ``_compile``).

>>> import flamefx.numpy as fnp
>>> from flamefx.primitives.callbacks import debug_callback
>>> debug_callback(lambda x: print("x is", x), fnp.arange(2.0))
x is [0. 1.]
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flamefx import core, tree_util
from flamefx.core import Primitive, ShapedArray
from flamefx.devices import cupy
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError, user_frame

VMAP_METHODS = (None, "sequential", "sequential_unrolled", "expand_dims", "broadcast_all",
                "legacy_vectorized")


class HostCallback:
    """A Python function of flat NumPy arrays, wrapped so that it can be an equation param.

    ``fn(*flat_np_arrays)`` returns a list of results (empty for debug callbacks). Hashed and
    compared by identity: every call of ``pure_callback`` makes its own.
    """

    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name

    def __call__(self, *bufs):
        return self.fn(*bufs)

    def __repr__(self):
        return self.name

    @property
    def __name__(self):  # jaxpr listings print callable params by name
        return self.name


def _to_host(bufs) -> list[np.ndarray]:
    return [b if isinstance(b, np.ndarray) else b.get() for b in bufs]


def _to_device(results) -> list:
    cp = cupy()
    return [cp.asarray(r) for r in results]


# --- shared batching helpers --------------------------------------------------------------


def _batching():
    from flamefx.transforms import batching
    return batching


def _st():
    from flamefx.primitives import structural
    return structural


def _element(x, bdim, i):
    """Element ``i`` along ``bdim`` of a batched operand (an unbatched one as it is)."""
    if bdim is None:
        return x
    x = _batching().move_axis(x, bdim, 0)
    shape = core.get_aval(x).shape
    row = _st().slice(x, (i,) + (0,) * (len(shape) - 1), (i + 1,) + shape[1:])
    return _st().squeeze(row, (0,))


def _stack(rows):
    return _st().concatenate([_st().expand_dims(r, (0,)) for r in rows], 0)


def _sequential(prim, axis_size, args, bdims, params):
    """A batching rule that calls the callback once per batch element, in order."""
    per_element = [core.bind_list(prim, *[_element(a, d, i) for a, d in zip(args, bdims)],
                                  **params) for i in range(axis_size)]
    n_out = len(per_element[0]) if per_element else 0
    outs = [_stack([row[j] for row in per_element]) for j in range(n_out)]
    return outs, [0] * n_out


# --- debug_callback -----------------------------------------------------------------------


def _debug_abstract(*avals, callback, ordered):
    return []


def _debug_impl(*bufs, callback, ordered):
    callback(*bufs)
    return []


def _debug_cuda(*bufs, callback, ordered):
    callback(*_to_host(bufs))  # a host sync, on purpose: the values are printed here
    return []


def _debug_vjp(cts, primals, outs, *, callback, ordered):
    return [None] * len(primals)  # no outputs, so nothing flows back through it


def _debug_jvp(primals, tangents, *, callback, ordered):
    # The primal values are what a debug print shows under forward mode too (as JAX).
    return core.bind_list(debug_callback_p, *primals, callback=callback, ordered=ordered), []


def _debug_batch(axis_size, args, bdims, *, callback, ordered):
    # As JAX: the callback sees each batch element in turn, not the batched array.
    return _sequential(debug_callback_p, axis_size, args, bdims,
                       dict(callback=callback, ordered=ordered))


debug_callback_p = Primitive(
    "debug_callback", abstract_eval=_debug_abstract, impl=_debug_impl, cuda_impl=_debug_cuda,
    vjp=_debug_vjp, jvp=_debug_jvp, batch=_debug_batch, multiple_results=True,
    differentiable=False)


def debug_callback(fn: Callable, *args, ordered: bool = False, **kwargs) -> None:
    """Calls ``fn(*args, **kwargs)`` on the concrete values (NumPy arrays) when the program
    runs: eagerly, under jit, in every iteration of a loop, per batch element under vmap.

    >>> import flamefx.numpy as fnp
    >>> debug_callback(lambda x, y: print(x + y), fnp.ones(2), y=1.0)
    [2. 2.]
    """
    leaves, in_tree = tree_util.tree_flatten((args, kwargs))
    leaves = [core.ensure_array(x) for x in leaves]

    def flat_fn(*bufs):
        a, k = tree_util.tree_unflatten(in_tree, list(bufs))
        fn(*a, **k)
        return []

    callback = HostCallback(flat_fn, getattr(fn, "__name__", "callback"))
    core.bind_list(debug_callback_p, *leaves, callback=callback, ordered=bool(ordered))


# --- pure_callback and io_callback ----------------------------------------------------------


def _results_abstract(*avals, callback, result_avals, **_):
    return list(result_avals)


def _checked_results(callback, bufs, result_avals) -> list[np.ndarray]:
    results = callback(*bufs)
    out = []
    for k, (r, aval) in enumerate(zip(results, result_avals)):
        r = np.asarray(r)
        if r.shape != aval.shape:
            got = ShapedArray(r.shape, r.dtype).str_short()
            raise FlamefxTypeError(
                f"{callback.name}: the callback returned {got} for result {k}, but "
                f"result_shape_dtypes declared {aval.str_short()}\n  at {user_frame()}")
        # As JAX: a result of another dtype (NumPy's float64, say) takes the declared one.
        out.append(r if r.dtype == aval.dtype else r.astype(aval.dtype))
    return out


def _results_impl(*bufs, callback, result_avals, **_):
    return _checked_results(callback, bufs, result_avals)


def _results_cuda(*bufs, callback, result_avals, **_):
    return _to_device(_checked_results(callback, _to_host(bufs), result_avals))


def _not_differentiable(name):
    def rule(*_, **__):
        raise FlamefxError(
            f"{name} cannot be differentiated: flamefx cannot see inside the Python "
            f"callback. Wrap the function that calls it in flamefx.custom_jvp (or "
            f"custom_vjp) and give its derivative.\n  at {user_frame()}")
    return rule


def _batched_avals(result_avals, axis_size):
    return tuple(a.update(shape=(axis_size,) + a.shape) for a in result_avals)


def _pure_batch(axis_size, args, bdims, *, callback, result_avals, vmap_method):
    params = dict(callback=callback, result_avals=result_avals, vmap_method=vmap_method)
    if vmap_method is None:
        raise FlamefxValueError(
            f"pure_callback ({callback.name}) under vmap needs a vmap_method: 'sequential', "
            f"'sequential_unrolled', 'expand_dims', 'broadcast_all' or 'legacy_vectorized' "
            f"(as JAX)\n  at "
            f"{user_frame()}")
    if vmap_method in ("sequential", "sequential_unrolled"):
        return _sequential(pure_callback_p, axis_size, args, bdims, params)
    batching = _batching()
    moved = []
    for a, d in zip(args, bdims):
        if d is not None:
            moved.append(batching.move_axis(a, d, 0))
        elif vmap_method == "expand_dims":
            moved.append(_st().expand_dims(a, (0,)))
        elif vmap_method == "broadcast_all":
            moved.append(batching.broadcast_batch(a, axis_size, 0))
        else:  # legacy_vectorized: unbatched operands go in as they are
            moved.append(a)
    params["result_avals"] = _batched_avals(result_avals, axis_size)
    outs = core.bind_list(pure_callback_p, *moved, **params)
    return outs, [0] * len(outs)


pure_callback_p = Primitive(
    "pure_callback", abstract_eval=_results_abstract, impl=_results_impl,
    cuda_impl=_results_cuda, vjp=_not_differentiable("pure_callback"),
    jvp=_not_differentiable("pure_callback"), batch=_pure_batch, multiple_results=True)


def _io_batch(axis_size, args, bdims, *, callback, result_avals, ordered):
    if ordered:
        raise FlamefxValueError(
            f"an ordered io_callback ({callback.name}) cannot be vmapped (as in JAX): its "
            f"calls would have no single order\n  at {user_frame()}")
    return _sequential(io_callback_p, axis_size, args, bdims,
                       dict(callback=callback, result_avals=result_avals, ordered=ordered))


io_callback_p = Primitive(
    "io_callback", abstract_eval=_results_abstract, impl=_results_impl,
    cuda_impl=_results_cuda, vjp=_not_differentiable("io_callback"),
    jvp=_not_differentiable("io_callback"), batch=_io_batch, multiple_results=True)

# Equations of these primitives are kept by jit's passes whatever reads their outputs and
# are never merged or folded (flamefx/transforms/passes.py); nor do they run in CUDA graphs.
EFFECTFUL = frozenset({"debug_callback", "io_callback"})
HOST_CALLBACKS = frozenset({"debug_callback", "io_callback", "pure_callback"})


def _result_avals(result_shape_dtypes) -> tuple[list[ShapedArray], tree_util.PyTreeDef]:
    leaves, tree = tree_util.tree_flatten(result_shape_dtypes)
    avals = []
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise FlamefxTypeError(
                f"result_shape_dtypes must be a pytree of objects with .shape and .dtype "
                f"(flamefx.ShapeDtypeStruct or arrays), got {type(leaf).__name__}\n  at "
                f"{user_frame()}")
        avals.append(ShapedArray(leaf.shape, leaf.dtype))
    return avals, tree


def _host_callback(fn, in_tree, out_tree, kind) -> HostCallback:
    name = f"{kind}({getattr(fn, '__name__', 'callback')})"

    def flat_fn(*bufs):
        a, k = tree_util.tree_unflatten(in_tree, list(bufs))
        result = fn(*a, **k)
        leaves, tree = tree_util.tree_flatten(result)
        if tree != out_tree:
            raise FlamefxTypeError(
                f"{name}: the callback returned a result of structure {tree}, but "
                f"result_shape_dtypes declared {out_tree}\n  at {user_frame()}")
        return leaves

    return HostCallback(flat_fn, name)


def pure_callback(callback: Callable, result_shape_dtypes, *args, vmap_method=None,
                  **kwargs):
    """Calls the pure host function ``callback(*args, **kwargs)`` (on NumPy arrays) and
    returns its results, which must match ``result_shape_dtypes`` (a pytree of
    ``flamefx.ShapeDtypeStruct``). Not differentiable (wrap in ``custom_jvp``); under vmap,
    ``vmap_method`` says how it is batched, as in JAX.

    >>> import numpy as np, flamefx, flamefx.numpy as fnp
    >>> spec = flamefx.ShapeDtypeStruct((3,), fnp.float32)
    >>> pure_callback(np.sin, spec, fnp.zeros(3)).tolist()
    [0.0, 0.0, 0.0]
    """
    if vmap_method not in VMAP_METHODS:
        raise FlamefxValueError(f"vmap_method must be one of {VMAP_METHODS}, got "
                                f"{vmap_method!r}\n  at {user_frame()}")
    avals, out_tree = _result_avals(result_shape_dtypes)
    leaves, in_tree = tree_util.tree_flatten((args, kwargs))
    leaves = [core.ensure_array(x) for x in leaves]
    host = _host_callback(callback, in_tree, out_tree, "pure_callback")
    outs = core.bind_list(pure_callback_p, *leaves, callback=host, result_avals=tuple(avals),
                          vmap_method=vmap_method)
    return tree_util.tree_unflatten(out_tree, outs)


def io_callback(callback: Callable, result_shape_dtypes, *args, ordered: bool = False,
                **kwargs):
    """Calls the host function ``callback(*args, **kwargs)``, which may have side effects:
    it runs where the program reaches it, even if nothing uses its results (as JAX's
    ``jax.experimental.io_callback``). Not differentiable; vmapped one element at a time.

    >>> import numpy as np, flamefx, flamefx.numpy as fnp
    >>> log = []
    >>> def record(x):
    ...     log.append(float(x)); return np.float32(len(log))
    >>> io_callback(record, flamefx.ShapeDtypeStruct((), fnp.float32), fnp.float32(2.5)).item()
    1.0
    """
    avals, out_tree = _result_avals(result_shape_dtypes)
    leaves, in_tree = tree_util.tree_flatten((args, kwargs))
    leaves = [core.ensure_array(x) for x in leaves]
    host = _host_callback(callback, in_tree, out_tree, "io_callback")
    outs = core.bind_list(io_callback_p, *leaves, callback=host, result_avals=tuple(avals),
                          ordered=bool(ordered))
    return tree_util.tree_unflatten(out_tree, outs)
