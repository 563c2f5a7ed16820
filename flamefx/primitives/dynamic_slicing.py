"""dynamic_slice and dynamic_update_slice: windows at positions known only at run time.

Start indices are scalar integer arrays, clamped so the window stays inside the array (as
in JAX). Under vmap, batched starts become a gather (or a scatter for updates).

>>> import numpy as np
>>> from flamefx.primitives.dynamic_slicing import dynamic_slice
>>> dynamic_slice(np.arange(5.0), [np.int32(3)], (2,)).tolist()
[3.0, 4.0]
"""

from __future__ import annotations

import builtins

import numpy as np

from flamefx import core, dtypes
from flamefx.core import Primitive
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cuda_structural
from flamefx.primitives.structural import (
    _batching,
    _instantiate,
    _lax,
    _weak,
    broadcast_in_dim,
    concatenate,
    device_of,
    expand_dims,
    iota_like,
    zeros,
    zeros_like,
)

# --- dynamic_slice / dynamic_update_slice ------------------------------------------------------


def _check_starts(x, starts):
    if len(starts) != x.ndim or any(s.shape != () or not dtypes.is_int(s.dtype)
                                    for s in starts):
        got = ", ".join(s.str_short() for s in starts)
        raise FlamefxTypeError(f"start_indices must be {x.ndim} scalar integers (one per axis), "
                               f"got ({got})")


def clamped_starts_host(starts, shape, sizes):
    """Starts clamped so the window [start, start + size) stays inside the array (JAX)."""
    return tuple(min(max(int(s), 0), n - k) for s, n, k in zip(starts, shape, sizes))


def _dynamic_slice_abstract(x, *starts, slice_sizes):
    _check_starts(x, starts)
    if len(slice_sizes) != x.ndim or any(not 0 <= k <= n for k, n in zip(slice_sizes, x.shape)):
        raise FlamefxTypeError(f"slice_sizes {slice_sizes} must give one size per axis, each "
                               f"at most the axis size of {x.shape}")
    return [x.update(shape=tuple(slice_sizes))]


def _dynamic_slice_impl(x, *starts, slice_sizes):
    starts = clamped_starts_host(starts, x.shape, slice_sizes)
    window = x[tuple(builtins.slice(s, s + k) for s, k in zip(starts, slice_sizes))]
    return [np.asarray(window, order="C")]  # 0-d stays 0-d (ascontiguousarray: shape (1,))


def _dynamic_slice_vjp(cts, primals, outs, *, slice_sizes):
    x, *starts = primals
    if cts[0] is None:
        return [None] * len(primals)
    return [dynamic_update_slice(zeros_like(x), cts[0], starts)] + [None] * len(starts)


def _window_indices(starts, start_bdims, operand_shape, window_shape, axis_size, batched_operand):
    """Gather/scatter indices (B, *window, ndim [+1]) of per-example clamped windows."""
    elementwise, _ = _lax()
    to_front = _batching().to_front
    full = (axis_size,) + tuple(window_shape)
    columns = []
    like = next(s for s, b in zip(starts, start_bdims) if b is not None)
    device = device_of(like)
    if batched_operand:
        columns.append(iota_like(np.int32, full, 0, like))
    for d, (s, b) in enumerate(zip(starts, start_bdims)):
        s = elementwise.convert_element_type(to_front(s, b, axis_size), np.int32)
        highest = core.to_array(np.int32(operand_shape[d] - window_shape[d]), device=device)
        s = elementwise.max(elementwise.min(s, broadcast_in_dim(highest, (axis_size,), ())),
                            zeros((axis_size,), np.int32, device))
        columns.append(elementwise.add(broadcast_in_dim(s, full, (0,)),
                                       iota_like(np.int32, full, d + 1, like)))
    return concatenate([expand_dims(c, (len(full),)) for c in columns], len(full))


def _dynamic_slice_batch(axis_size, args, bdims, *, slice_sizes):
    x, *starts = args
    x_bdim, *start_bdims = bdims
    if all(b is None for b in start_bdims):
        zero = core.to_array(np.zeros((), starts[0].dtype if starts else np.int32))
        starts = starts[:x_bdim] + [zero] + starts[x_bdim:]
        sizes = slice_sizes[:x_bdim] + (axis_size,) + slice_sizes[x_bdim:]
        return [dynamic_slice(x, starts, sizes)], [x_bdim]
    from flamefx.primitives import indexing
    batched_operand = x_bdim is not None
    if batched_operand:
        x = _batching().move_axis(x, x_bdim, 0)
    operand_shape = x.shape[1:] if batched_operand else x.shape
    idx = _window_indices(starts, start_bdims, operand_shape, slice_sizes, axis_size,
                          batched_operand)
    return [indexing.gather(x, idx, tuple(range(x.ndim)))], [0]


dynamic_slice_p = Primitive(
    "dynamic_slice",
    abstract_eval=_dynamic_slice_abstract,
    impl=_dynamic_slice_impl,
    cuda_impl=lambda x, *starts, slice_sizes: [
        cuda_structural.dynamic_slice(x, starts, slice_sizes)],
    vjp=_dynamic_slice_vjp,
    jvp=lambda primals, tangents, *, slice_sizes: (
        [dynamic_slice(primals[0], primals[1:], slice_sizes)],
        [None if tangents[0] is None
         else dynamic_slice(tangents[0], primals[1:], slice_sizes)]),
    batch=_dynamic_slice_batch,
)


def _as_starts(start_indices):
    # Python ints become int32 (not the default int, which may be int64); anything else is
    # checked by the shape rule.
    return [core.to_array(np.int32(s)) if isinstance(s, int) else s for s in start_indices]


def dynamic_slice(x, start_indices, slice_sizes):
    """A window of ``slice_sizes`` at traced ``start_indices``, clamped to stay in bounds.

    >>> dynamic_slice(np.arange(5.0), [4], (2,)).tolist()
    [3.0, 4.0]
    """
    return dynamic_slice_p.bind(x, *_as_starts(start_indices),
                                slice_sizes=tuple(int(k) for k in slice_sizes))


def _dynamic_update_slice_abstract(x, update, *starts):
    _check_starts(x, starts)
    if update.dtype != x.dtype or update.ndim != x.ndim or any(
            u > n for u, n in zip(update.shape, x.shape)):
        raise FlamefxTypeError(f"update {update.str_short()} must have the operand's dtype and "
                               f"rank and fit inside it ({x.str_short()})")
    return [x.update(weak_type=_weak(x, update))]


def _dynamic_update_slice_impl(x, update, *starts):
    starts = clamped_starts_host(starts, x.shape, update.shape)
    out = np.array(x, copy=True)
    out[tuple(builtins.slice(s, s + k) for s, k in zip(starts, update.shape))] = update
    return [out]


def _dynamic_update_slice_vjp(cts, primals, outs):
    _x, update, *starts = primals
    ct = cts[0]
    if ct is None:
        return [None] * len(primals)
    ct_x = dynamic_update_slice(ct, zeros_like(update), starts)
    ct_update = dynamic_slice(ct, starts, update.shape)
    return [ct_x, ct_update] + [None] * len(starts)


def _dynamic_update_slice_jvp(primals, tangents):
    x, update, *starts = primals
    out = dynamic_update_slice(x, update, starts)
    if tangents[0] is None and tangents[1] is None:
        return [out], [None]
    tx, tu = _instantiate(tangents[0], x), _instantiate(tangents[1], update)
    return [out], [dynamic_update_slice(tx, tu, starts)]


def _dynamic_update_slice_batch(axis_size, args, bdims):
    x, update, *starts = args
    to_front = _batching().to_front
    x, update = to_front(x, bdims[0], axis_size), to_front(update, bdims[1], axis_size)
    start_bdims = bdims[2:]
    if all(b is None for b in start_bdims):
        zero = core.to_array(np.zeros((), starts[0].dtype if starts else np.int32))
        return [dynamic_update_slice(x, update, [zero] + list(starts))], [0]
    from flamefx.primitives import indexing
    idx = _window_indices(starts, start_bdims, x.shape[1:], update.shape[1:], axis_size, True)
    return [indexing.scatter(x, idx, update, tuple(range(x.ndim)), "set")], [0]


dynamic_update_slice_p = Primitive(
    "dynamic_update_slice",
    abstract_eval=_dynamic_update_slice_abstract,
    impl=_dynamic_update_slice_impl,
    cuda_impl=lambda x, update, *starts: [
        cuda_structural.dynamic_update_slice(x, update, starts)],
    vjp=_dynamic_update_slice_vjp,
    jvp=_dynamic_update_slice_jvp,
    batch=_dynamic_update_slice_batch,
)


def dynamic_update_slice(x, update, start_indices):
    """``x`` with ``update`` written at traced ``start_indices`` (clamped to stay in bounds).

    >>> dynamic_update_slice(np.zeros(4), np.ones(2), [3]).tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    return dynamic_update_slice_p.bind(x, update, *_as_starts(start_indices))
