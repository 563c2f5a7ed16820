"""Collectives over a named axis: psum, pmean, pmax, all_gather, psum_scatter.

A collective combines the values that the members of a named axis hold: the members of a
``vmap(..., axis_name=...)`` batch, or the devices of a ``pmap``. Under vmap a collective
is its batching rule (psum over the axis is a sum over the batch dimension); under pmap the
lockstep interpreter in flamefx/transforms/pmap.py gathers every device's operand and calls
``across_devices`` (host NumPy on CPU devices, NCCL on GPUs). Eager use outside any axis of
that name is an error. ``axis_name=()`` names no axis: the collective over an axis of size 1
(the identity for psum/pmean/pmax), as in JAX.

>>> import flamefx, flamefx.numpy as fnp
>>> flamefx.vmap(lambda x: x / psum(x, "i"), axis_name="i")(fnp.arange(1.0, 5.0)).tolist()
[0.1, 0.2, 0.3, 0.4]
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from flamefx import core, dtypes, tree_util
from flamefx.core import Primitive
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.primitives import elementwise as ew
from flamefx.primitives import reductions as red


def _st():
    from flamefx.primitives import structural
    return structural


def _batching():
    from flamefx.transforms import batching
    return batching


# --- the axis environment --------------------------------------------------------------------


class _PmapAxes(threading.local):
    def __init__(self):
        self.stack: list[tuple] = []  # (axis_name, size) of the pmaps now being traced


_pmap_axes = _PmapAxes()


@contextlib.contextmanager
def bind_pmap_axis(axis_name, size: int):
    """Makes ``axis_name`` (of ``size`` members) visible to collectives while pmap traces."""
    _pmap_axes.stack.append((axis_name, size))
    try:
        yield
    finally:
        _pmap_axes.stack.pop()


def axis_size(axis_name, what: str = "collective") -> int:
    """The size of the innermost enclosing vmap/pmap axis called ``axis_name``."""
    from flamefx.transforms.batching import BatchTrace
    trace = core.current_trace()
    while trace is not None:
        if isinstance(trace, BatchTrace) and trace.axis_name == axis_name:
            return trace.axis_size
        trace = trace.parent
    for name, size in reversed(_pmap_axes.stack):
        if name == axis_name:
            return size
    raise FlamefxError(f"{what} over axis name {axis_name!r}, but no enclosing vmap or pmap has "
                       f"axis_name={axis_name!r}; wrap the function in flamefx.vmap(..., "
                       f"axis_name={axis_name!r}) or flamefx.pmap(..., axis_name={axis_name!r})"
                       f"\n  at {user_frame()}")


def _names(axis_name) -> tuple:
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _unbound(prim_name, axis_name):
    return FlamefxError(f"{prim_name} over axis {axis_name!r} ran outside any vmap or pmap "
                        f"with that axis_name (collectives need the members of a named axis)"
                        f"\n  at {user_frame()}")


# --- shape rules -----------------------------------------------------------------------------

_NUMERIC = dtypes.FLOATS | dtypes.INTS


def _check_dtype(x, allowed, label):
    if x.dtype not in allowed:
        raise FlamefxTypeError(f"operand must be {label}, got {x.dtype}")


def _reduce_abstract(allowed, label):
    def abstract_eval(x, *, axis_name):
        _check_dtype(x, allowed, label)
        return [x]
    return abstract_eval


def _all_gather_abstract(x, *, axis_name, axis_size, axis, tiled):
    shape = list(x.shape)
    if tiled:
        if not 0 <= axis < x.ndim:
            raise FlamefxTypeError(
                f"tiled all_gather axis {axis} is out of range for rank {x.ndim}")
        shape[axis] *= axis_size
    else:
        if not 0 <= axis <= x.ndim:
            raise FlamefxTypeError(f"all_gather axis {axis} is out of range for rank {x.ndim}")
        shape.insert(axis, axis_size)
    return [x.update(shape=tuple(shape))]


def _scattered_shape(shape, axis_size, d, tiled):
    shape = list(shape)
    if not 0 <= d < len(shape):
        raise FlamefxTypeError(f"scatter_dimension {d} is out of range for rank {len(shape)}")
    if tiled:
        if shape[d] % axis_size:
            raise FlamefxTypeError(f"tiled psum_scatter needs dimension {d} (size {shape[d]}) "
                                   f"divisible by the axis size {axis_size}")
        shape[d] //= axis_size
    else:
        if shape[d] != axis_size:
            raise FlamefxTypeError(f"psum_scatter needs dimension {d} (size {shape[d]}) equal to "
                                   f"the axis size {axis_size} (or tiled=True)")
        del shape[d]
    return tuple(shape)


def _psum_scatter_abstract(x, *, axis_name, axis_size, scatter_dimension, tiled):
    _check_dtype(x, _NUMERIC, "numeric")
    return [x.update(shape=_scattered_shape(x.shape, axis_size, scatter_dimension, tiled))]


# --- impls: eager use (only the empty axis tuple is defined there) ----------------------------


def _identity_impl(name):
    def impl(x, *, axis_name):
        if axis_name != ():
            raise _unbound(name, axis_name)
        return [x]
    return impl


def _all_gather_impl(x, *, axis_name, axis_size, axis, tiled):
    if axis_name != ():
        raise _unbound("all_gather", axis_name)
    return [x if tiled else x.reshape(x.shape[:axis] + (1,) + x.shape[axis:])]


def _psum_scatter_impl(x, *, axis_name, axis_size, scatter_dimension, tiled):
    if axis_name != ():
        raise _unbound("psum_scatter", axis_name)
    d = scatter_dimension
    return [x if tiled else x.reshape(x.shape[:d] + x.shape[d + 1:])]


def across_devices(prim, bufs: list, params: dict) -> list:
    """Host reference of a collective over devices: one operand buffer per device in, one
    output buffer per device out (NumPy arrays; pmap uses it for CPU devices)."""
    n = len(bufs)
    name = prim.name
    if name in ("psum", "pmean", "pmax", "psum_scatter"):
        dtype = bufs[0].dtype
        work = [b.astype(np.float32) if dtype in ew._HALF else b for b in bufs]
        if name == "pmax":
            total = np.maximum.reduce(work)
        else:
            total = np.sum(work, axis=0, dtype=work[0].dtype)
            if name == "pmean":
                total = total / n
        total = np.asarray(total).astype(dtype)
        if name != "psum_scatter":
            return [total] * n
        d = params["scatter_dimension"]
        if params["tiled"]:
            return np.split(total, n, axis=d)
        return [np.take(total, m, axis=d) for m in range(n)]
    if name == "all_gather":
        gather = np.concatenate if params["tiled"] else np.stack
        return [gather(bufs, axis=params["axis"])] * n
    raise FlamefxError(f"internal: {name} is not a collective")


# --- batching: the collective over this vmap's axis is a reduction over the batch dim -------


def _as_batched(x, bdim, size):
    if bdim is None:
        return _batching().broadcast_batch(x, size, 0), 0
    return x, bdim


def _reduce_batch(prim, reduce_over_batch):
    def batch(size, args, bdims, *, axis_name, names_this_axis=False):
        x, b = args[0], bdims[0]
        if not names_this_axis:  # another axis: each member of this batch takes part alone
            return [prim.bind(x, axis_name=axis_name)], [b]
        if b is None:
            return [reduce_over_batch(_batching().broadcast_batch(x, size, 0), 0, size)], [None]
        return [reduce_over_batch(x, b, size)], [None]
    return batch


def _sum_over(x, b, size):
    return red.reduce_sum(x, (b,))


def _mean_over(x, b, size):
    total = red.reduce_sum(x, (b,))
    return ew.mul(total, ew.full_like(total, 1.0 / size))


def _max_over(x, b, size):
    return red.reduce_max(x, (b,))


def _all_gather_batch(size, args, bdims, *, axis_name, axis_size, axis, tiled,
                      names_this_axis=False):
    x, b = args[0], bdims[0]
    bt = _batching()
    if not names_this_axis:
        x = bt.move_axis(x, b, 0)
        return [all_gather_p.bind(x, axis_name=axis_name, axis_size=axis_size, axis=axis + 1,
                                  tiled=tiled)], [0]
    x, b = _as_batched(x, b, size)
    stacked = bt.move_axis(x, b, axis)  # every member's value, stacked at ``axis``
    if tiled:
        shape = core.get_aval(stacked).shape
        stacked = _st().reshape(stacked, shape[:axis] + (shape[axis] * shape[axis + 1],)
                                + shape[axis + 2:])
    return [stacked], [None]


def _psum_scatter_batch(size, args, bdims, *, axis_name, axis_size, scatter_dimension, tiled,
                        names_this_axis=False):
    x, b = args[0], bdims[0]
    d = scatter_dimension
    if not names_this_axis:
        x = _batching().move_axis(x, b, 0)
        return [psum_scatter_p.bind(x, axis_name=axis_name, axis_size=axis_size,
                                    scatter_dimension=d + 1, tiled=tiled)], [0]
    x, b = _as_batched(x, b, size)
    total = red.reduce_sum(x, (b,))
    if tiled:  # split dimension d into (members, chunk): member m owns chunk m
        shape = core.get_aval(total).shape
        total = _st().reshape(total, shape[:d] + (size, shape[d] // size) + shape[d + 1:])
    return [total], [d]  # the scattered dimension *is* the batch dimension now


# --- derivatives (written with the collectives themselves, so they stay traceable) -----------


def _float(x) -> bool:
    return dtypes.is_inexact(core.get_aval(x).dtype)  # float or complex


def _linear(prim):
    def vjp(cts, primals, outs, **params):
        ct = cts[0]
        return [None if ct is None or not _float(primals[0]) else prim.bind(ct, **params)]

    def jvp(primals, tangents, **params):
        t = tangents[0]
        return ([prim.bind(primals[0], **params)],
                [None if t is None else prim.bind(t, **params)])
    return vjp, jvp


def _pmax_partial(x, out, axis_name):
    """d pmax / d x on each member: 1 where it holds the max, ties sharing evenly."""
    hits = ew.convert_element_type(ew.eq(x, out), core.get_aval(x).dtype)
    return ew.div(hits, psum_p.bind(hits, axis_name=axis_name))


def _pmax_vjp(cts, primals, outs, *, axis_name):
    ct, x = cts[0], primals[0]
    if ct is None or not _float(x):
        return [None]
    total_ct = psum_p.bind(ct, axis_name=axis_name)  # every member's output is the same max
    return [ew.mul(total_ct, _pmax_partial(x, outs[0], axis_name))]


def _pmax_jvp(primals, tangents, *, axis_name):
    x, t = primals[0], tangents[0]
    out = pmax_p.bind(x, axis_name=axis_name)
    if t is None:
        return [out], [None]
    return [out], [psum_p.bind(ew.mul(t, _pmax_partial(x, out, axis_name)), axis_name=axis_name)]


def _all_gather_vjp(cts, primals, outs, *, axis_name, axis_size, axis, tiled):
    ct = cts[0]
    if ct is None or not _float(primals[0]):
        return [None]
    return [psum_scatter_p.bind(ct, axis_name=axis_name, axis_size=axis_size,
                                scatter_dimension=axis, tiled=tiled)]


def _psum_scatter_vjp(cts, primals, outs, *, axis_name, axis_size, scatter_dimension, tiled):
    ct = cts[0]
    if ct is None or not _float(primals[0]):
        return [None]
    return [all_gather_p.bind(ct, axis_name=axis_name, axis_size=axis_size,
                              axis=scatter_dimension, tiled=tiled)]


# --- declarations ----------------------------------------------------------------------------

psum_p = Primitive("psum", abstract_eval=_reduce_abstract(_NUMERIC, "numeric"),
                   impl=_identity_impl("psum"), cuda_impl=_identity_impl("psum"))
psum_p.vjp, psum_p.jvp = _linear(psum_p)
psum_p.batch = _reduce_batch(psum_p, _sum_over)

pmean_p = Primitive("pmean", abstract_eval=_reduce_abstract(dtypes.FLOATS, "floating-point"),
                    impl=_identity_impl("pmean"), cuda_impl=_identity_impl("pmean"))
pmean_p.vjp, pmean_p.jvp = _linear(pmean_p)
pmean_p.batch = _reduce_batch(pmean_p, _mean_over)

pmax_p = Primitive("pmax", abstract_eval=_reduce_abstract(_NUMERIC, "numeric"),
                   impl=_identity_impl("pmax"), cuda_impl=_identity_impl("pmax"),
                   vjp=_pmax_vjp, jvp=_pmax_jvp)
pmax_p.batch = _reduce_batch(pmax_p, _max_over)

all_gather_p = Primitive("all_gather", abstract_eval=_all_gather_abstract,
                         impl=_all_gather_impl, cuda_impl=_all_gather_impl,
                         vjp=_all_gather_vjp, batch=_all_gather_batch)
psum_scatter_p = Primitive("psum_scatter", abstract_eval=_psum_scatter_abstract,
                           impl=_psum_scatter_impl, cuda_impl=_psum_scatter_impl,
                           vjp=_psum_scatter_vjp, batch=_psum_scatter_batch)
all_gather_p.jvp = _linear(all_gather_p)[1]
psum_scatter_p.jvp = _linear(psum_scatter_p)[1]

COLLECTIVES = (psum_p, pmean_p, pmax_p, all_gather_p, psum_scatter_p)


# --- lax-level functions -------------------------------------------------------------------


def _over_names(prim, x, axis_name, what):
    names = _names(axis_name)
    for name in names:
        axis_size(name, what)
    if not names:
        return prim.bind(x, axis_name=())
    for name in names:  # a sum (mean, max) over several axes is one after the other
        x = prim.bind(x, axis_name=name)
    return x


def psum(x, axis_name):
    """Sums ``x`` (a pytree) over the members of the named axis; every member gets the sum.

    >>> import flamefx, flamefx.numpy as fnp
    >>> flamefx.vmap(lambda x: psum(x, "i"), axis_name="i")(fnp.arange(3.0)).tolist()
    [3.0, 3.0, 3.0]
    """
    return tree_util.tree_map(lambda v: _over_names(psum_p, v, axis_name, "psum"), x)


def pmean(x, axis_name):
    """Averages ``x`` (a pytree) over the members of the named axis.

    >>> import flamefx, flamefx.numpy as fnp
    >>> flamefx.vmap(lambda x: pmean(x, "i"), axis_name="i")(fnp.arange(3.0)).tolist()
    [1.0, 1.0, 1.0]
    """
    return tree_util.tree_map(lambda v: _over_names(pmean_p, v, axis_name, "pmean"), x)


def pmax(x, axis_name):
    """The elementwise maximum of ``x`` (a pytree) over the members of the named axis.

    >>> import flamefx, flamefx.numpy as fnp
    >>> flamefx.vmap(lambda x: pmax(x, "i"), axis_name="i")(fnp.arange(3.0)).tolist()
    [2.0, 2.0, 2.0]
    """
    return tree_util.tree_map(lambda v: _over_names(pmax_p, v, axis_name, "pmax"), x)


def _single_name(axis_name, what):
    names = _names(axis_name)
    if len(names) > 1:
        raise FlamefxValueError(f"{what} over several axes {axis_name!r} is not supported; "
                                f"nest one {what} per axis\n  at {user_frame()}")
    if not names:
        return (), 1
    return names[0], axis_size(names[0], what)


def all_gather(x, axis_name, *, axis: int = 0, tiled: bool = False):
    """Every member's ``x`` stacked along a new ``axis`` (concatenated if ``tiled``).

    >>> import flamefx, flamefx.numpy as fnp
    >>> flamefx.vmap(lambda x: all_gather(x, "i"), axis_name="i")(fnp.arange(2.0)).tolist()
    [[0.0, 1.0], [0.0, 1.0]]
    """
    name, size = _single_name(axis_name, "all_gather")

    def gather(v):
        ndim = core.get_aval(v).ndim
        params = {"axis_name": name, "axis_size": size, "axis": axis % (ndim + (0 if tiled else 1)),
                      "tiled": bool(tiled)}
        core.abstract_eval(all_gather_p, [core.get_aval(v)], params)  # vmap's rule skips it
        return all_gather_p.bind(v, **params)
    return tree_util.tree_map(gather, x)


def psum_scatter(x, axis_name, *, scatter_dimension: int = 0, tiled: bool = False):
    """Sums ``x`` over the named axis; member ``m`` keeps slice ``m`` of ``scatter_dimension``
    (whose size must equal the axis size, or be divisible by it if ``tiled``).

    >>> import flamefx, flamefx.numpy as fnp
    >>> f = lambda x: psum_scatter(x, "i")
    >>> flamefx.vmap(f, axis_name="i")(fnp.ones((2, 2))).tolist()
    [2.0, 2.0]
    """
    name, size = _single_name(axis_name, "psum_scatter")

    def scatter(v):
        ndim = core.get_aval(v).ndim
        params = {"axis_name": name, "axis_size": size,
                      "scatter_dimension": scatter_dimension % max(ndim, 1), "tiled": bool(tiled)}
        core.abstract_eval(psum_scatter_p, [core.get_aval(v)], params)  # vmap's rule skips it
        return psum_scatter_p.bind(v, **params)
    return tree_util.tree_map(scatter, x)


__all__ = ["COLLECTIVES", "across_devices", "all_gather", "axis_size",
           "bind_pmap_axis", "pmax", "pmean", "psum", "psum_scatter"]
