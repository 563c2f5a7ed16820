"""Structural primitives: they move, copy, pad and cut data but compute nothing.

Every one of them is linear in its array operands, so each VJP is another structural op
(broadcast <-> reduce_sum, slice <-> pad, concatenate <-> slices, ...; the dynamic windows
are in dynamic_slicing.py)
and each JVP applies the op itself to the tangent.

>>> import numpy as np
>>> from flamefx.primitives.structural import pad
>>> pad(np.arange(3.0), 0.0, ((1, -1, 1),)).tolist()
[0.0, 0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

import builtins

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cuda_structural


def _cp():
    return devices.cupy()


def _lax():
    # Elementwise ops and reductions are declared in sibling modules that import this one.
    from flamefx.primitives import elementwise, reductions
    return elementwise, reductions


def _batching():
    from flamefx.transforms import batching
    return batching


def _weak(*avals) -> bool:
    return all(a.weak_type for a in avals)


def device_of(x):
    """The device of a concrete array (or of a tracer's known value); None when abstract.

    Constants made inside rules go there, so that GPU work stays on the GPU even when
    the default device is the CPU.
    """
    return x.device if core.is_array(x) else None


def zeros(shape, dtype, device=None):
    """A traceable array of zeros: a broadcast 0-d constant (one kernel, no host copy)."""
    zero = core.to_array(np.zeros((), dtypes.canonicalize(dtype)), device=device)
    return broadcast_in_dim(zero, tuple(shape), ())


def zeros_like(x):
    aval = core.get_aval(x)
    return zeros(aval.shape, aval.dtype, device_of(x))


def iota_like(dtype, shape, dimension, like):
    """``iota`` on the device of ``like``: a primitive has no operand to say where it runs."""
    device = device_of(like)
    if device is None or device == devices.default_device():
        return iota(dtype, shape, dimension)
    return core.to_array(_iota_impl(np, np.dtype(dtype), tuple(shape), dimension)[0],
                         device=device)


def _instantiate(tangent, primal):
    return zeros_like(primal) if tangent is None else tangent


def _check_axes(axes, ndim, what):
    if len(set(axes)) != len(axes) or any(not 0 <= a < ndim for a in axes):
        raise FlamefxTypeError(f"{what} {axes} must be distinct axes in [0, {ndim})")


def _contiguous(cp, x):
    # asarray(order="C"), not ascontiguousarray: CuPy's, like NumPy's, makes a 0-d array 1-d.
    return cp.asarray(x, order="C")


# --- reshape -----------------------------------------------------------------------------------


def _reshape_abstract(x, *, new_sizes):
    if any(d < 0 for d in new_sizes) or int(np.prod(new_sizes, dtype=np.int64)) != x.size:
        raise FlamefxTypeError(f"cannot reshape {x.shape} ({x.size} elements) into "
                               f"{tuple(new_sizes)} ({int(np.prod(new_sizes))} elements)")
    return [x.update(shape=new_sizes)]


def _reshape_batch(axis_size, args, bdims, *, new_sizes):
    x = _batching().move_axis(args[0], bdims[0], 0)
    return [reshape(x, (axis_size,) + new_sizes)], [0]


reshape_p = Primitive(
    "reshape",
    abstract_eval=_reshape_abstract,
    impl=lambda x, *, new_sizes: [np.reshape(x, new_sizes)],
    cuda_impl=lambda x, *, new_sizes: [_contiguous(_cp(), x).reshape(new_sizes)],
    vjp=lambda cts, primals, outs, *, new_sizes: [reshape(cts[0], primals[0].shape)],
    jvp=lambda primals, tangents, *, new_sizes: (
        [reshape(primals[0], new_sizes)],
        [None if tangents[0] is None else reshape(tangents[0], new_sizes)]),
    batch=_reshape_batch,
)


def reshape(x, new_sizes):
    """Row-major reshape to ``new_sizes`` (no -1 here; flamefx.numpy resolves it).

    >>> reshape(np.arange(6.0), (2, 3)).shape
    (2, 3)
    """
    new_sizes = tuple(int(d) for d in new_sizes)
    if core.get_aval(x).shape == new_sizes:
        return core.ensure_array(x)
    return reshape_p.bind(x, new_sizes=new_sizes)


# --- broadcast_in_dim --------------------------------------------------------------------------


def _broadcast_abstract(x, *, shape, broadcast_dimensions):
    dims = broadcast_dimensions
    if len(dims) != x.ndim:
        raise FlamefxTypeError(f"broadcast_dimensions {dims} must name one output axis per "
                               f"operand axis ({x.ndim})")
    if any(not 0 <= d < len(shape) for d in dims) or list(dims) != sorted(set(dims)):
        raise FlamefxTypeError(f"broadcast_dimensions {dims} must be strictly increasing axes "
                               f"of the output shape {shape}")
    for i, d in enumerate(dims):
        if x.shape[i] not in (1, shape[d]):
            raise FlamefxTypeError(f"operand axis {i} of size {x.shape[i]} cannot broadcast to "
                                   f"output axis {d} of size {shape[d]} (output shape {shape})")
    return [x.update(shape=shape)]


def _expanded_shape(x_shape, shape, dims):
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x_shape[i]
    return tuple(expanded)


def _broadcast_impl(xp, x, shape, dims):
    x = x.reshape(_expanded_shape(x.shape, shape, dims))
    return [xp.asarray(xp.broadcast_to(x, shape), order="C")]  # 0-d stays 0-d


def _broadcast_vjp(cts, primals, outs, *, shape, broadcast_dimensions):
    if cts[0] is None:
        return [None]
    _, reductions = _lax()
    x_shape = primals[0].shape
    expanded = _expanded_shape(x_shape, shape, broadcast_dimensions)
    summed = tuple(d for d in range(len(shape)) if expanded[d] != shape[d]
                   or d not in broadcast_dimensions)
    ct = reductions.reduce_sum(cts[0], summed) if summed else cts[0]
    return [reshape(ct, x_shape)]


def _broadcast_batch(axis_size, args, bdims, *, shape, broadcast_dimensions):
    x = _batching().move_axis(args[0], bdims[0], 0)
    dims = (0,) + tuple(d + 1 for d in broadcast_dimensions)
    return [broadcast_in_dim(x, (axis_size,) + shape, dims)], [0]


broadcast_in_dim_p = Primitive(
    "broadcast_in_dim",
    abstract_eval=_broadcast_abstract,
    impl=lambda x, *, shape, broadcast_dimensions: _broadcast_impl(np, x, shape,
                                                                   broadcast_dimensions),
    cuda_impl=lambda x, *, shape, broadcast_dimensions: _broadcast_impl(_cp(), x, shape,
                                                                        broadcast_dimensions),
    vjp=_broadcast_vjp,
    jvp=lambda primals, tangents, **params: (
        [broadcast_in_dim_p.bind(primals[0], **params)],
        [None if tangents[0] is None else broadcast_in_dim_p.bind(tangents[0], **params)]),
    batch=_broadcast_batch,
)


def broadcast_in_dim(x, shape, broadcast_dimensions):
    """Broadcasts ``x`` to ``shape``; operand axis i becomes output axis broadcast_dimensions[i].

    >>> broadcast_in_dim(np.ones(3), (2, 3), (1,)).shape
    (2, 3)
    """
    shape = tuple(int(d) for d in shape)
    dims = tuple(int(d) for d in broadcast_dimensions)
    if core.get_aval(x).shape == shape and dims == tuple(range(len(shape))):
        return core.ensure_array(x)
    return broadcast_in_dim_p.bind(x, shape=shape, broadcast_dimensions=dims)


# --- transpose ---------------------------------------------------------------------------------


def _transpose_abstract(x, *, permutation):
    if sorted(permutation) != list(range(x.ndim)):
        raise FlamefxTypeError(f"permutation {permutation} is not a permutation of the "
                               f"{x.ndim} axes of the operand")
    return [x.update(shape=tuple(x.shape[p] for p in permutation))]


def _transpose_batch(axis_size, args, bdims, *, permutation):
    bdim = bdims[0]
    physical = tuple(p if p < bdim else p + 1 for p in permutation)
    return [transpose(args[0], (bdim,) + physical)], [0]


transpose_p = Primitive(
    "transpose",
    abstract_eval=_transpose_abstract,
    # asarray(order='C'), not ascontiguousarray: that one turns a 0-d result into shape (1,)
    impl=lambda x, *, permutation: [np.asarray(np.transpose(x, permutation), order="C")],
    cuda_impl=lambda x, *, permutation: [_contiguous(_cp(), x.transpose(permutation))],
    vjp=lambda cts, primals, outs, *, permutation: [
        None if cts[0] is None else transpose(cts[0], tuple(np.argsort(permutation)))],
    jvp=lambda primals, tangents, *, permutation: (
        [transpose(primals[0], permutation)],
        [None if tangents[0] is None else transpose(tangents[0], permutation)]),
    batch=_transpose_batch,
)


def transpose(x, permutation):
    """Permutes the axes: output axis i is operand axis permutation[i].

    >>> transpose(np.ones((2, 3)), (1, 0)).shape
    (3, 2)
    """
    permutation = tuple(int(p) for p in permutation)
    if permutation == tuple(range(len(permutation))):
        return core.ensure_array(x)
    return transpose_p.bind(x, permutation=permutation)


# --- squeeze / expand_dims ---------------------------------------------------------------------


def _squeeze_abstract(x, *, dimensions):
    _check_axes(dimensions, x.ndim, "squeeze dimensions")
    if any(x.shape[d] != 1 for d in dimensions):
        raise FlamefxTypeError(f"can only squeeze axes of size 1, but axes {dimensions} of "
                               f"shape {x.shape} are not all 1")
    return [x.update(shape=tuple(n for i, n in enumerate(x.shape) if i not in dimensions))]


def _squeeze_batch(axis_size, args, bdims, *, dimensions):
    x = _batching().move_axis(args[0], bdims[0], 0)
    return [squeeze(x, tuple(d + 1 for d in dimensions))], [0]


def _squeezed(x, dimensions):
    return [x.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dimensions))]


squeeze_p = Primitive(
    "squeeze",
    abstract_eval=_squeeze_abstract,
    impl=lambda x, *, dimensions: _squeezed(x, dimensions),
    cuda_impl=lambda x, *, dimensions: _squeezed(x, dimensions),
    vjp=lambda cts, primals, outs, *, dimensions: [
        None if cts[0] is None else reshape(cts[0], primals[0].shape)],
    jvp=lambda primals, tangents, *, dimensions: (
        [squeeze(primals[0], dimensions)],
        [None if tangents[0] is None else squeeze(tangents[0], dimensions)]),
    batch=_squeeze_batch,
)


def squeeze(x, dimensions):
    """Removes the listed axes, which must have size 1 (negative axes count from the end).

    >>> squeeze(np.ones((1, 3, 1)), (0, -1)).shape
    (3,)
    """
    ndim = core.get_aval(x).ndim
    dims = tuple(sorted(int(d) % ndim if ndim else int(d) for d in dimensions))
    if not dims:
        return core.ensure_array(x)
    return squeeze_p.bind(x, dimensions=dims)


def _expand_dims_abstract(x, *, dimensions):
    out_ndim = x.ndim + len(dimensions)
    _check_axes(dimensions, out_ndim, "expand_dims dimensions")
    return [x.update(shape=_expanded_dims_shape(x.shape, dimensions))]


def _expanded_dims_shape(shape, dimensions):
    rest = iter(shape)
    return tuple(1 if i in dimensions else next(rest)
                 for i in range(len(shape) + len(dimensions)))


def _expand_dims_batch(axis_size, args, bdims, *, dimensions):
    x = _batching().move_axis(args[0], bdims[0], 0)
    return [expand_dims(x, tuple(d + 1 for d in dimensions))], [0]


expand_dims_p = Primitive(
    "expand_dims",
    abstract_eval=_expand_dims_abstract,
    impl=lambda x, *, dimensions: [x.reshape(_expanded_dims_shape(x.shape, dimensions))],
    cuda_impl=lambda x, *, dimensions: [x.reshape(_expanded_dims_shape(x.shape, dimensions))],
    vjp=lambda cts, primals, outs, *, dimensions: [
        None if cts[0] is None else reshape(cts[0], primals[0].shape)],
    jvp=lambda primals, tangents, *, dimensions: (
        [expand_dims(primals[0], dimensions)],
        [None if tangents[0] is None else expand_dims(tangents[0], dimensions)]),
    batch=_expand_dims_batch,
)


def expand_dims(x, dimensions):
    """Inserts size-1 axes at the listed positions of the output.

    >>> expand_dims(np.ones(3), (0, 2)).shape
    (1, 3, 1)
    """
    out_ndim = core.get_aval(x).ndim + len(dimensions)
    dims = tuple(sorted(int(d) % out_ndim for d in dimensions))
    if not dims:
        return core.ensure_array(x)
    return expand_dims_p.bind(x, dimensions=dims)


# --- slice -------------------------------------------------------------------------------------


def _slice_abstract(x, *, start_indices, limit_indices, strides):
    if not len(start_indices) == len(limit_indices) == len(strides) == x.ndim:
        raise FlamefxTypeError(f"slice needs one start, limit and stride per axis ({x.ndim}); "
                               f"got {start_indices}, {limit_indices}, {strides}")
    for start, limit, stride, n in zip(start_indices, limit_indices, strides, x.shape):
        if not 0 <= start <= limit <= n or stride < 1:
            raise FlamefxTypeError(f"slice [{start}:{limit}:{stride}] is out of bounds for an "
                                   f"axis of size {n} (need 0 <= start <= limit <= size, "
                                   f"stride >= 1)")
    return [x.update(shape=_slice_shape(start_indices, limit_indices, strides))]


def _slice_shape(starts, limits, strides):
    return tuple(max(0, -(-(limit - start) // stride))
                 for start, limit, stride in zip(starts, limits, strides))


def _slice_impl(xp, x, starts, limits, strides):
    index = tuple(builtins.slice(s, e, st) for s, e, st in zip(starts, limits, strides))
    return [xp.asarray(x[index], order="C")]  # 0-d stays 0-d (ascontiguousarray: 1-d)


def _slice_vjp(cts, primals, outs, *, start_indices, limit_indices, strides):
    if cts[0] is None:
        return [None]
    ct = cts[0]
    config = []
    for start, stride, n, m in zip(start_indices, strides, primals[0].shape, ct.shape):
        covered = start + (m - 1) * stride + 1 if m else start
        config.append((start, n - covered, stride - 1))
    return [pad(ct, zeros((), ct.dtype, device_of(ct)), tuple(config))]


def _slice_batch(axis_size, args, bdims, *, start_indices, limit_indices, strides):
    b = bdims[0]
    out = slice(args[0], start_indices[:b] + (0,) + start_indices[b:],
                limit_indices[:b] + (axis_size,) + limit_indices[b:],
                strides[:b] + (1,) + strides[b:])
    return [out], [b]


slice_p = Primitive(
    "slice",
    abstract_eval=_slice_abstract,
    impl=lambda x, *, start_indices, limit_indices, strides: _slice_impl(
        np, x, start_indices, limit_indices, strides),
    cuda_impl=lambda x, *, start_indices, limit_indices, strides: _slice_impl(
        _cp(), x, start_indices, limit_indices, strides),
    vjp=_slice_vjp,
    jvp=lambda primals, tangents, **params: (
        [slice_p.bind(primals[0], **params)],
        [None if tangents[0] is None else slice_p.bind(tangents[0], **params)]),
    batch=_slice_batch,
)


def slice(x, start_indices, limit_indices, strides=None):
    """Static slice ``x[start:limit:stride, ...]`` per axis.

    >>> slice(np.arange(10.0), (1,), (8,), (3,)).tolist()
    [1.0, 4.0, 7.0]
    """
    ndim = core.get_aval(x).ndim
    strides = (1,) * ndim if strides is None else tuple(int(s) for s in strides)
    return slice_p.bind(x, start_indices=tuple(int(s) for s in start_indices),
                        limit_indices=tuple(int(s) for s in limit_indices), strides=strides)


# --- pad ---------------------------------------------------------------------------------------


def _pad_abstract(x, padding_value, *, padding_config):
    if padding_value.shape != () or padding_value.dtype != x.dtype:
        raise FlamefxTypeError(f"padding_value must be a 0-d array of the operand's dtype "
                               f"{x.dtype}, got {padding_value.str_short()}")
    if len(padding_config) != x.ndim:
        raise FlamefxTypeError(f"padding_config {padding_config} needs one (lo, hi, interior) "
                               f"per operand axis ({x.ndim})")
    shape = []
    for (lo, hi, interior), n in zip(padding_config, x.shape):
        if interior < 0:
            raise FlamefxTypeError(f"interior padding must be >= 0, got {interior}")
        size = lo + hi + n + max(n - 1, 0) * interior
        if size < 0:
            raise FlamefxTypeError(f"padding ({lo}, {hi}, {interior}) of an axis of size {n} "
                                   f"gives a negative size {size}")
        shape.append(size)
    return [x.update(shape=tuple(shape), weak_type=_weak(x, padding_value))]


def _pad_impl(xp, x, padding_value, padding_config):
    # Pad by the non-negative amounts with strided assignment, then crop negative padding.
    grown = [max(lo, 0) + max(hi, 0) + n + max(n - 1, 0) * interior
             for (lo, hi, interior), n in zip(padding_config, x.shape)]
    out = xp.empty(tuple(grown), x.dtype)
    out[...] = padding_value
    inner = tuple(builtins.slice(max(lo, 0), max(lo, 0) + max(n - 1, 0) * (interior + 1) + 1,
                                interior + 1)
                  for (lo, _, interior), n in zip(padding_config, x.shape))
    if x.size:
        out[inner] = x
    crop = tuple(builtins.slice(max(-lo, 0), g - max(-hi, 0))
                 for (lo, hi, _), g in zip(padding_config, grown))
    return [xp.asarray(out[crop], order="C")]  # 0-d stays 0-d (ascontiguousarray: 1-d)


def _pad_vjp(cts, primals, outs, *, padding_config):
    ct = cts[0]
    if ct is None:
        return [None, None]
    _, reductions = _lax()
    unpad = tuple((-lo, -hi, 0) for lo, hi, _ in padding_config)
    unpadded = pad(ct, zeros((), ct.dtype, device_of(ct)), unpad)
    ct_x = slice(unpadded, (0,) * ct.ndim, unpadded.shape,
                 tuple(interior + 1 for _, _, interior in padding_config))
    elementwise, _ = _lax()
    everything = tuple(range(ct.ndim))
    ct_value = elementwise.sub(reductions.reduce_sum(ct, everything),
                               reductions.reduce_sum(ct_x, everything))
    return [ct_x, ct_value]


def _pad_jvp(primals, tangents, *, padding_config):
    out = pad(primals[0], primals[1], padding_config)
    if tangents[0] is None and tangents[1] is None:
        return [out], [None]
    tx, tv = (_instantiate(t, p) for t, p in zip(tangents, primals))
    return [out], [pad(tx, tv, padding_config)]


def _pad_batch(axis_size, args, bdims, *, padding_config):
    x, value = args
    batching = _batching()
    x = batching.to_front(x, bdims[0], axis_size)
    config = ((0, 0, 0),) + padding_config
    if bdims[1] is None:
        return [pad(x, value, config)], [0]
    # A per-example padding value: pad with zero, then select the value outside the operand.
    elementwise, _ = _lax()
    padded = pad(x, zeros((), x.dtype), config)
    device = device_of(x)
    inside = pad(broadcast_in_dim(core.to_array(np.True_, device=device), x.shape, ()),
                 core.to_array(np.False_, device=device), config)
    value = broadcast_in_dim(value, padded.shape, (0,))
    return [elementwise.select_n(inside, value, padded)], [0]


pad_p = Primitive(
    "pad",
    abstract_eval=_pad_abstract,
    impl=lambda x, v, *, padding_config: _pad_impl(np, x, v, padding_config),
    cuda_impl=lambda x, v, *, padding_config: _pad_impl(_cp(), x, v, padding_config),
    vjp=_pad_vjp,
    jvp=_pad_jvp,
    batch=_pad_batch,
)


def pad(x, padding_value, padding_config):
    """Pads with ``padding_value``: per axis (lo, hi, interior); negative lo/hi crop.

    >>> pad(np.ones(2), 0.0, ((1, 2, 1),)).tolist()
    [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    """
    config = tuple((int(lo), int(hi), int(interior)) for lo, hi, interior in padding_config)
    x = core.ensure_array(x)
    if not core.is_array(padding_value):
        padding_value = core.to_array(np.asarray(padding_value, x.dtype), weak=x.weak_type)
    return pad_p.bind(x, padding_value, padding_config=config)


# --- concatenate -------------------------------------------------------------------------------


def _concatenate_abstract(*xs, dimension):
    first = xs[0]
    if not 0 <= dimension < first.ndim:
        raise FlamefxTypeError(f"dimension {dimension} is out of range for {first.ndim}-d "
                               f"operands")
    for x in xs[1:]:
        same_rest = (x.ndim == first.ndim and all(
            a == b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != dimension))
        if x.dtype != first.dtype or not same_rest:
            raise FlamefxTypeError(f"operands must share dtype and all axes but {dimension}: "
                                   f"{first.str_short()} vs {x.str_short()}")
    shape = list(first.shape)
    shape[dimension] = sum(x.shape[dimension] for x in xs)
    return [first.update(shape=tuple(shape), weak_type=_weak(*xs))]


def _concatenate_vjp(cts, primals, outs, *, dimension):
    ct = cts[0]
    if ct is None:
        return [None] * len(primals)
    out, offset = [], 0
    for x in primals:
        starts = [0] * ct.ndim
        limits = list(ct.shape)
        starts[dimension], limits[dimension] = offset, offset + x.shape[dimension]
        out.append(slice(ct, starts, limits))
        offset += x.shape[dimension]
    return out


def _concatenate_jvp(primals, tangents, *, dimension):
    out = concatenate(primals, dimension)
    if all(t is None for t in tangents):
        return [out], [None]
    return [out], [concatenate([_instantiate(t, p) for t, p in zip(tangents, primals)],
                               dimension)]


def _concatenate_batch(axis_size, args, bdims, *, dimension):
    to_front = _batching().to_front
    xs = [to_front(x, b, axis_size) for x, b in zip(args, bdims)]
    return [concatenate(xs, dimension + 1)], [0]


concatenate_p = Primitive(
    "concatenate",
    abstract_eval=_concatenate_abstract,
    impl=lambda *xs, dimension: [np.concatenate(xs, axis=dimension)],
    cuda_impl=lambda *xs, dimension: [_cp().concatenate(xs, axis=dimension)],
    vjp=_concatenate_vjp,
    jvp=_concatenate_jvp,
    batch=_concatenate_batch,
)


def concatenate(xs, dimension):
    """Joins arrays of equal dtype along ``dimension``.

    >>> concatenate([np.ones(2), np.zeros(1)], 0).tolist()
    [1.0, 1.0, 0.0]
    """
    xs = [core.ensure_array(x) for x in xs]
    if len(xs) == 1:
        return xs[0]
    return concatenate_p.bind(*xs, dimension=int(dimension) % xs[0].ndim)


# --- iota, rev, copy ---------------------------------------------------------------------------


def _iota_abstract(*, dtype, shape, dimension):
    if not 0 <= dimension < len(shape):
        raise FlamefxTypeError(f"iota dimension {dimension} is out of range for shape {shape}")
    return [ShapedArray(shape, dtype)]


def _iota_impl(xp, dtype, shape, dimension):
    # Count in the default integer type and cast: not every backend has arange per dtype.
    line = xp.arange(shape[dimension]).astype(dtype)
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    return [xp.asarray(xp.broadcast_to(line.reshape(expanded), shape), order="C")]


def _iota_cuda(*, dtype, shape, dimension):
    out = cuda_structural.iota(dtype, shape, dimension)  # one launch, not arange + casts
    return [out] if out is not None else _iota_impl(_cp(), dtype, shape, dimension)


iota_p = Primitive(
    "iota",
    abstract_eval=_iota_abstract,
    impl=lambda *, dtype, shape, dimension: _iota_impl(np, dtype, shape, dimension),
    cuda_impl=_iota_cuda,
    differentiable=False,
    batch=lambda axis_size, args, bdims, **params: ([iota_p.bind(**params)], [None]),
)


def iota(dtype, shape, dimension=0):
    """Counts 0, 1, 2, ... along ``dimension`` of an array of ``shape``.

    >>> iota(np.int32, (2, 3), 1).tolist()
    [[0, 1, 2], [0, 1, 2]]
    """
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    return iota_p.bind(dtype=dtypes.canonicalize(dtype), shape=shape, dimension=int(dimension))


def _rev_abstract(x, *, dimensions):
    _check_axes(dimensions, x.ndim, "rev dimensions")
    return [x]


def _rev_batch(axis_size, args, bdims, *, dimensions):
    b = bdims[0]
    return [rev(args[0], tuple(d if d < b else d + 1 for d in dimensions))], [b]


rev_p = Primitive(
    "rev",
    abstract_eval=_rev_abstract,
    impl=lambda x, *, dimensions: [np.asarray(np.flip(x, dimensions), order="C")],
    cuda_impl=lambda x, *, dimensions: [_contiguous(_cp(), _cp().flip(x, dimensions))],
    vjp=lambda cts, primals, outs, *, dimensions: [
        None if cts[0] is None else rev(cts[0], dimensions)],
    jvp=lambda primals, tangents, *, dimensions: (
        [rev(primals[0], dimensions)],
        [None if tangents[0] is None else rev(tangents[0], dimensions)]),
    batch=_rev_batch,
)


def rev(x, dimensions):
    """Reverses the order of elements along each axis in ``dimensions``.

    >>> rev(np.arange(3.0), (0,)).tolist()
    [2.0, 1.0, 0.0]
    """
    ndim = core.get_aval(x).ndim
    return rev_p.bind(x, dimensions=tuple(sorted(int(d) % ndim for d in dimensions)))


copy_p = Primitive(
    "copy",
    abstract_eval=lambda x: [x],
    impl=lambda x: [np.array(x, copy=True)],
    cuda_impl=lambda x: [x.copy()],
    vjp=lambda cts, primals, outs: [cts[0]],
    jvp=lambda primals, tangents: ([copy(primals[0])], [tangents[0]]),
    batch=lambda axis_size, args, bdims: ([copy(args[0])], [bdims[0]]),
)


def copy(x):
    """A fresh copy of ``x`` (a separate buffer).

    >>> copy(np.ones(2)).tolist()
    [1.0, 1.0]
    """
    return copy_p.bind(x)
