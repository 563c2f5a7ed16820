"""Gather and scatter: reading and combining single elements (or rows) at traced indices.

``indices`` has shape ``batch + (len(axes),)``: each index vector picks one position along
the operand axes in ``axes``; the other operand axes are carried along whole. Indices are
clamped into range, as JAX does for gathers (scatters clamp too, so that scatter-add is
exactly the transpose of gather).

>>> import numpy as np
>>> table = np.arange(6.0).reshape(3, 2)
>>> gather(table, np.array([[2], [0]]), (0,)).tolist()
[[4.0, 5.0], [0.0, 1.0]]
"""

from __future__ import annotations

import math

import numpy as np

from flamefx import dtypes
from flamefx.core import Primitive
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cuda_structural
from flamefx.primitives import structural

SCATTER_MODES = ("add", "set", "mul", "min", "max")


def _cp():
    from flamefx import devices
    return devices.cupy()


def _elementwise():
    from flamefx.primitives import elementwise
    return elementwise


def _rest_axes(ndim, axes):
    return tuple(d for d in range(ndim) if d not in axes)


def _check_indices(operand, indices, axes):
    if not dtypes.is_int(indices.dtype) or indices.ndim < 1:
        raise FlamefxTypeError(f"indices must be an integer array of shape batch + "
                               f"(len(axes),), got {indices.str_short()}")
    if indices.shape[-1] != len(axes):
        raise FlamefxTypeError(f"the last axis of indices ({indices.shape[-1]}) must equal the "
                               f"number of indexed axes {axes}")
    if len(set(axes)) != len(axes) or any(not 0 <= a < operand.ndim for a in axes):
        raise FlamefxTypeError(f"axes {axes} must be distinct axes of the {operand.ndim}-d "
                               f"operand")
    if any(operand.shape[a] == 0 for a in axes) and int(np.prod(indices.shape[:-1])):
        raise FlamefxTypeError(f"cannot index into an empty axis (operand shape "
                               f"{operand.shape}, axes {axes})")


def _gathered_shape(operand_shape, indices_shape, axes):
    return tuple(indices_shape[:-1]) + tuple(operand_shape[d] for d in
                                             _rest_axes(len(operand_shape), axes))


# --- the row layout both backends share ------------------------------------------------------
# Moving the indexed axes to the front turns the operand into a table of rows; an index
# vector then names one row, whose number is its row-major position among indexed axes.


# These run on every gather/scatter (the cross-entropy's take_along_axis in a training
# step, say) on small arrays, where NumPy's Python-level wrappers (moveaxis, clip, prod)
# cost more than the work: the common layouts (indexed axes leading) skip them.


def _as_table(xp, operand, axes):
    front = tuple(range(len(axes)))
    moved = operand if tuple(axes) == front else xp.moveaxis(operand, axes, front)
    n_rows = math.prod(operand.shape[a] for a in axes)
    row_len = math.prod(operand.shape[d] for d in _rest_axes(operand.ndim, axes))
    return xp.ascontiguousarray(moved).reshape(n_rows, row_len), moved.shape


def _from_table(xp, table, moved_shape, axes):
    moved = table.reshape(moved_shape)
    front = tuple(range(len(axes)))
    return moved if tuple(axes) == front else xp.ascontiguousarray(
        xp.moveaxis(moved, front, axes))


def _row_numbers(xp, indices, indexed_sizes):
    flat = indices.reshape(-1, len(indexed_sizes))
    if xp is np and indices.dtype.kind == "i" and indexed_sizes and min(indexed_sizes) > 0:
        # One C call clamps and combines the columns (2 against 6.7 us on C1's 128 rows).
        return np.ravel_multi_index(tuple(flat.T), indexed_sizes, mode="clip")
    rows = xp.zeros(flat.shape[0], np.int64)
    for j, n in enumerate(indexed_sizes):
        rows = rows * n + xp.minimum(xp.maximum(flat[:, j].astype(np.int64), 0), n - 1)
    return rows


# --- gather ------------------------------------------------------------------------------------


def _gather_abstract(operand, indices, *, axes):
    _check_indices(operand, indices, axes)
    return [operand.update(shape=_gathered_shape(operand.shape, indices.shape, axes))]


def _gather_impl(xp, operand, indices, axes):
    table, _ = _as_table(xp, operand, axes)
    rows = _row_numbers(xp, indices, [operand.shape[a] for a in axes])
    out = xp.take(table, rows, axis=0)
    return [out.reshape(_gathered_shape(operand.shape, indices.shape, axes))]


def _gather_cuda(operand, indices, *, axes):
    table, _ = _as_table(_cp(), operand, axes)
    rows = cuda_structural.gather_rows(table, indices, [operand.shape[a] for a in axes])
    return [rows.reshape(_gathered_shape(operand.shape, indices.shape, axes))]


def _gather_vjp(cts, primals, outs, *, axes):
    operand, indices = primals
    if cts[0] is None:
        return [None, None]
    return [scatter(structural.zeros_like(operand), indices, cts[0], axes, "add"), None]


def _with_batch_column(indices, axis_size):
    """Prepends an index column that counts the batch, for an operand batched at axis 0."""
    batch_column = structural.iota_like(indices.dtype, indices.shape[:-1] + (1,), 0, indices)
    return structural.concatenate([batch_column, indices], indices.ndim - 1)


def _gather_batch(axis_size, args, bdims, *, axes):
    from flamefx.transforms import batching
    operand, indices = args
    operand_bdim, indices_bdim = bdims
    if indices_bdim is None:
        # The batch axis becomes one more carried axis; it lands after the index batch.
        operand = batching.move_axis(operand, operand_bdim, 0)
        out = gather(operand, indices, tuple(a + 1 for a in axes))
        return [out], [indices.ndim - 1]
    indices = batching.move_axis(indices, indices_bdim, 0)
    if operand_bdim is None:
        return [gather(operand, indices, axes)], [0]
    operand = batching.move_axis(operand, operand_bdim, 0)
    indices = _with_batch_column(indices, axis_size)
    return [gather(operand, indices, (0,) + tuple(a + 1 for a in axes))], [0]


gather_p = Primitive(
    "gather",
    abstract_eval=_gather_abstract,
    impl=lambda operand, indices, *, axes: _gather_impl(np, operand, indices, axes),
    cuda_impl=_gather_cuda,
    vjp=_gather_vjp,
    jvp=lambda primals, tangents, *, axes: (
        [gather(primals[0], primals[1], axes)],
        [None if tangents[0] is None else gather(tangents[0], primals[1], axes)]),
    batch=_gather_batch,
)


def gather(operand, indices, axes):
    """``out[b..., rest...] = operand[axes[j] <- indices[b..., j], rest...]`` (clamped).

    >>> gather(np.arange(4.0), np.array([[3], [9]]), (0,)).tolist()
    [3.0, 3.0]
    """
    return gather_p.bind(operand, indices, axes=tuple(int(a) for a in axes))


# --- scatter -----------------------------------------------------------------------------------


def _scatter_abstract(operand, indices, updates, *, axes, mode):
    if mode not in SCATTER_MODES:
        raise FlamefxTypeError(f"scatter mode must be one of {SCATTER_MODES}, got {mode!r}")
    _check_indices(operand, indices, axes)
    expected = _gathered_shape(operand.shape, indices.shape, axes)
    if updates.shape != expected or updates.dtype != operand.dtype:
        raise FlamefxTypeError(f"updates must have shape {expected} (indices batch + operand "
                               f"axes not in {axes}) and dtype {operand.dtype}, got "
                               f"{updates.str_short()}")
    return [operand.update(weak_type=operand.weak_type and updates.weak_type)]


_NUMPY_COMBINE = {"add": np.add, "mul": np.multiply, "min": np.minimum, "max": np.maximum}


def _scatter_impl(operand, indices, updates, *, axes, mode):
    compute = np.float32 if operand.dtype in (dtypes.float16, dtypes.bfloat16) else operand.dtype
    # astype copies, so the table is ours to update in place.
    table, moved_shape = _as_table(np, operand.astype(compute), axes)
    rows = _row_numbers(np, indices, [operand.shape[a] for a in axes])
    rows_of_updates = updates.astype(compute).reshape(len(rows), table.shape[1])
    if mode == "set":
        table[rows] = rows_of_updates
    else:
        _NUMPY_COMBINE[mode].at(table, rows, rows_of_updates)
    return [_from_table(np, table, moved_shape, axes).astype(operand.dtype, copy=False)]


def _scatter_cuda(operand, indices, updates, *, axes, mode):
    cp = _cp()
    table, moved_shape = _as_table(cp, operand, axes)
    n_vectors = int(np.prod(indices.shape[:-1], dtype=np.int64))
    out = cuda_structural.scatter_rows(table, indices, [operand.shape[a] for a in axes],
                                       updates.reshape(n_vectors, table.shape[1]), mode)
    return [_from_table(cp, out, moved_shape, axes)]


def _select_where_equal(a, b, ct):
    """ct where a == b, else zero: min/max gradients flow to the entries that won."""
    elementwise = _elementwise()
    return elementwise.select_n(elementwise.eq(a, b), structural.zeros_like(ct), ct)


def _scatter_vjp(cts, primals, outs, *, axes, mode):
    operand, indices, updates = primals
    ct = cts[0]
    if ct is None:
        return [None, None, None]
    if mode == "add":
        return [ct, None, gather(ct, indices, axes)]
    if mode == "set":
        ct_operand = scatter(ct, indices, structural.zeros_like(updates), axes, "set")
        return [ct_operand, None, gather(ct, indices, axes)]
    if mode == "mul":
        # d out / d operand is the product of the updates that landed there (exact with
        # duplicates); d out / d update is the operand there, exact for unique indices only
        # (as in JAX; with duplicates the other updates' factors are missing).
        ct_operand = scatter(ct, indices, updates, axes, "mul")
        ct_updates = gather(_elementwise().mul(ct, operand), indices, axes)
        return [ct_operand, None, ct_updates]
    # min / max: every entry equal to the result gets the full cotangent (ties share none).
    ct_operand = _select_where_equal(operand, outs[0], ct)
    ct_updates = _select_where_equal(updates, gather(outs[0], indices, axes),
                                     gather(ct, indices, axes))
    return [ct_operand, None, ct_updates]


def _scatter_jvp(primals, tangents, *, axes, mode):
    operand, indices, updates = primals
    if mode not in ("add", "set"):
        from flamefx.transforms import ad
        return ad.jvp_from_vjp(scatter_p, primals, tangents, {"axes": axes, "mode": mode})
    out = scatter(operand, indices, updates, axes, mode)
    t_operand = structural.zeros_like(operand) if tangents[0] is None else tangents[0]
    t_updates = structural.zeros_like(updates) if tangents[2] is None else tangents[2]
    return [out], [scatter(t_operand, indices, t_updates, axes, mode)]


def _scatter_batch(axis_size, args, bdims, *, axes, mode):
    from flamefx.transforms import batching
    operand, indices, updates = (batching.to_front(x, b, axis_size) for x, b in zip(args, bdims))
    indices = _with_batch_column(indices, axis_size)
    return [scatter(operand, indices, updates, (0,) + tuple(a + 1 for a in axes), mode)], [0]


scatter_p = Primitive(
    "scatter",
    abstract_eval=_scatter_abstract,
    impl=_scatter_impl,
    cuda_impl=_scatter_cuda,
    vjp=_scatter_vjp,
    jvp=_scatter_jvp,
    batch=_scatter_batch,
)


def scatter(operand, indices, updates, axes, mode="add"):
    """``operand`` with ``updates`` combined in at ``indices`` (the layout of gather's output).

    ``mode``: 'add' | 'set' | 'mul' | 'min' | 'max'. Duplicate indices accumulate for add,
    mul, min and max; for 'set' one of them wins (which one is unspecified).

    >>> scatter(np.zeros(3), np.array([[1], [1]]), np.array([2.0, 3.0]), (0,)).tolist()
    [0.0, 5.0, 0.0]
    """
    return scatter_p.bind(operand, indices, updates, axes=tuple(int(a) for a in axes),
                          mode=str(mode))
