"""Normalization primitives: layer norm, group norm and RMS norm, fused on the GPU.

Each normalizes *rows*: layer/rms norm the trailing ``axes`` of x, group norm the (C/G,
spatial...) block of each (n, group). The forward primitives return (y, mean, rstd) — rms
norm (y, rstd) — with statistics in float32 (float64 for float64 input). Their VJPs bind
``normalization_bwd``, one primitive for all three whose GPU implementation is a fused
kernel (flamefx/kernels/cuda_norm.py); its own VJP and batching rule go through the same
formula written in flamefx ops, so grad of grad and vmap of grad work.

>>> import numpy as np
>>> layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2), epsilon=0.0).tolist()
[[-1.0, 1.0]]
"""

from __future__ import annotations

import math

import numpy as np

from flamefx import core, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.primitives.elementwise import add, mul, sub
from flamefx.primitives.nn_ops import accumulation_dtype, cast_to, full_on_device, scale_by
from flamefx.primitives.reductions import reduce_sum
from flamefx.primitives.structural import broadcast_in_dim, reshape


def _check_affine(name, param, x, expected_shape):
    if param.shape != expected_shape:
        raise FlamefxTypeError(f"{name} has shape {param.shape} but the input {x.shape} needs "
                               f"{expected_shape} (one per normalized feature)")
    if param.dtype != x.dtype:
        raise FlamefxTypeError(f"{name} dtype {param.dtype} differs from the input's {x.dtype}; "
                               f"cast it first")


def _check_float(x):
    if not dtypes.is_float(x.dtype):
        raise FlamefxTypeError(f"needs a floating-point input, got {x.dtype}")


def _check_trailing_axes(x, axes):
    if not axes or tuple(axes) != tuple(range(x.ndim - len(axes), x.ndim)):
        raise FlamefxTypeError(f"axes {axes} must be the trailing axes of the rank-{x.ndim} "
                               f"input, e.g. ({x.ndim - 1},)")


def _layer_norm_abstract_eval(x, scale, bias, *, axes, epsilon):
    _check_float(x)
    _check_trailing_axes(x, axes)
    feature_shape = x.shape[x.ndim - len(axes):]
    _check_affine("scale", scale, x, feature_shape)
    _check_affine("bias", bias, x, feature_shape)
    stats = ShapedArray(x.shape[:x.ndim - len(axes)], accumulation_dtype(x.dtype))
    return [ShapedArray(x.shape, x.dtype, x.weak_type), stats, stats]


def _group_norm_abstract_eval(x, scale, bias, *, num_groups, epsilon):
    _check_float(x)
    if x.ndim < 2:
        raise FlamefxTypeError(f"expects an (N, C, spatial...) input, got rank {x.ndim}")
    if num_groups < 1 or x.shape[1] % num_groups:
        raise FlamefxTypeError(f"num_groups={num_groups} must divide the {x.shape[1]} channels")
    _check_affine("scale", scale, x, (x.shape[1],))
    _check_affine("bias", bias, x, (x.shape[1],))
    stats = ShapedArray((x.shape[0], num_groups), accumulation_dtype(x.dtype))
    return [ShapedArray(x.shape, x.dtype, x.weak_type), stats, stats]


def _rms_norm_abstract_eval(x, scale, *, axes, epsilon):
    _check_float(x)
    _check_trailing_axes(x, axes)
    _check_affine("scale", scale, x, x.shape[x.ndim - len(axes):])
    stats = ShapedArray(x.shape[:x.ndim - len(axes)], accumulation_dtype(x.dtype))
    return [ShapedArray(x.shape, x.dtype, x.weak_type), stats]


def _normalize_rows_numpy(rows, epsilon, centered):
    """(R, M) accumulation-dtype rows -> (xhat, mean, rstd)."""
    mean = rows.mean(axis=1) if centered else np.zeros(rows.shape[0], rows.dtype)
    centered_rows = rows - mean[:, None]
    rstd = 1.0 / np.sqrt((centered_rows * centered_rows).mean(axis=1) + epsilon)
    return centered_rows * rstd[:, None], mean, rstd.astype(rows.dtype)


def _layer_norm_impl(x, scale, bias, *, axes, epsilon):
    acc = accumulation_dtype(x.dtype)
    lead = x.shape[:x.ndim - len(axes)]
    rows = x.astype(acc).reshape(math.prod(lead), -1)
    xhat, mean, rstd = _normalize_rows_numpy(rows, epsilon, True)
    y = xhat * scale.astype(acc).reshape(-1) + bias.astype(acc).reshape(-1)
    return [y.reshape(x.shape).astype(x.dtype), mean.reshape(lead), rstd.reshape(lead)]


def _group_norm_impl(x, scale, bias, *, num_groups, epsilon):
    acc = accumulation_dtype(x.dtype)
    n, c = x.shape[:2]
    rows = x.astype(acc).reshape(n * num_groups, -1)
    xhat, mean, rstd = _normalize_rows_numpy(rows, epsilon, True)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    y = (xhat.reshape(x.shape) * scale.astype(acc).reshape(per_channel)
         + bias.astype(acc).reshape(per_channel))
    return [y.astype(x.dtype), mean.reshape(n, num_groups), rstd.reshape(n, num_groups)]


def _rms_norm_impl(x, scale, *, axes, epsilon):
    acc = accumulation_dtype(x.dtype)
    lead = x.shape[:x.ndim - len(axes)]
    rows = x.astype(acc).reshape(math.prod(lead), -1)
    xhat, _, rstd = _normalize_rows_numpy(rows, epsilon, False)
    y = xhat * scale.astype(acc).reshape(-1)
    return [y.reshape(x.shape).astype(x.dtype), rstd.reshape(lead)]


def _layer_norm_cuda(x, scale, bias, *, axes, epsilon):
    from flamefx.kernels import cuda_norm
    rows = math.prod(x.shape[:x.ndim - len(axes)])
    return cuda_norm.norm_forward(x, scale, bias, rows=rows, groups=1, inner=1,
                                  epsilon=epsilon, centered=True, stats_shape=x.shape[:-len(axes)])


def _group_norm_cuda(x, scale, bias, *, num_groups, epsilon):
    from flamefx.kernels import cuda_norm
    inner = math.prod(x.shape[2:])
    return cuda_norm.norm_forward(x, scale, bias, rows=x.shape[0] * num_groups,
                                  groups=num_groups, inner=inner, epsilon=epsilon,
                                  centered=True, stats_shape=(x.shape[0], num_groups))


def _rms_norm_cuda(x, scale, *, axes, epsilon):
    from flamefx.kernels import cuda_norm
    rows = math.prod(x.shape[:x.ndim - len(axes)])
    y, _, rstd = cuda_norm.norm_forward(x, scale, None, rows=rows, groups=1, inner=1,
                                        epsilon=epsilon, centered=False,
                                        stats_shape=x.shape[:-len(axes)])
    return [y, rstd]


def _rows_layout(shape, num_groups, n_axes) -> tuple[int, int]:
    """(rows, row length) of a normalization: group norm rows are (n, group) blocks."""
    rows = shape[0] * num_groups if num_groups else math.prod(shape[:len(shape) - n_axes])
    return rows, (math.prod(shape) // rows if rows else 0)


def _param_dims(ndim, num_groups, n_axes) -> tuple:
    """The dims of x that scale/bias map to (the channel, or the trailing features)."""
    return (1,) if num_groups else tuple(range(ndim - n_axes, ndim))


def _rows_backward(x_rows, g_rows, mean, rstd, ct_mean, ct_rstd, centered):
    """dx of (R, M) rows normalized to xhat = (x - mean) * rstd, given g = dL/dxhat.

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), plus the direct paths through the
    statistics outputs: d mean/dx = 1/M and d rstd/dx = -rstd^2 * xhat / M.
    """
    r, m = core.get_aval(x_rows).shape

    def rows_of(v):
        return broadcast_in_dim(v, (r, m), (0,))

    def row_mean(v):
        return scale_by(reduce_sum(v, (1,)), 1.0 / m)

    xhat = mul(sub(x_rows, rows_of(mean)) if centered else x_rows, rows_of(rstd))
    dx = sub(g_rows, rows_of(row_mean(g_rows))) if centered else g_rows
    dx = mul(sub(dx, mul(xhat, rows_of(row_mean(mul(g_rows, xhat))))), rows_of(rstd))
    if centered:
        dx = add(dx, rows_of(scale_by(ct_mean, 1.0 / m)))
    slope = scale_by(mul(ct_rstd, mul(rstd, rstd)), -1.0 / m)
    return xhat, add(dx, mul(xhat, rows_of(slope)))


def normalization_bwd_formula(x, scale, dy, mean, rstd, dmean, drstd, *, centered, num_groups,
                              n_axes):
    """``[dx, dscale, dbias]`` of a normalization in flamefx ops: what ``normalization_bwd``
    computes, written so that it can be differentiated and batched."""
    x_aval = core.get_aval(x)
    acc = core.get_aval(rstd).dtype
    r, m = _rows_layout(x_aval.shape, num_groups, n_axes)
    dims = _param_dims(x_aval.ndim, num_groups, n_axes)
    dy = cast_to(dy, acc)
    g = mul(dy, broadcast_in_dim(cast_to(scale, acc), x_aval.shape, dims))

    def flat(v):
        return reshape(v, (r,))

    xhat, dx = _rows_backward(reshape(cast_to(x, acc), (r, m)), reshape(g, (r, m)), flat(mean),
                              flat(rstd), flat(dmean), flat(drstd), centered)
    not_param = tuple(d for d in range(x_aval.ndim) if d not in dims)
    dscale = reduce_sum(mul(dy, reshape(xhat, x_aval.shape)), not_param)
    dbias = reduce_sum(dy, not_param)
    scale_dtype = core.get_aval(scale).dtype
    return [cast_to(reshape(dx, x_aval.shape), x_aval.dtype), cast_to(dscale, scale_dtype),
            cast_to(dbias, scale_dtype)]


def _bwd_abstract_eval(x, scale, dy, mean, rstd, dmean, drstd, *, centered, num_groups,
                       n_axes):
    if dy.shape != x.shape:
        raise FlamefxTypeError(f"dy {dy.shape} must have x's shape {x.shape}")
    for name, aval in (("mean", mean), ("dmean", dmean), ("drstd", drstd)):
        if aval.shape != rstd.shape:
            raise FlamefxTypeError(f"{name} {aval.shape} must have rstd's shape {rstd.shape}")
    return [ShapedArray(x.shape, x.dtype), ShapedArray(scale.shape, scale.dtype),
            ShapedArray(scale.shape, scale.dtype)]


def _bwd_impl(x, scale, dy, mean, rstd, dmean, drstd, *, centered, num_groups, n_axes):
    acc = rstd.dtype
    r, m = _rows_layout(x.shape, num_groups, n_axes)
    dims = _param_dims(x.ndim, num_groups, n_axes)
    param_shape = [x.shape[d] if d in dims else 1 for d in range(x.ndim)]
    dy = dy.astype(acc)
    g = (dy * scale.astype(acc).reshape(param_shape)).reshape(r, m)
    rs = rstd.reshape(r, 1)
    xhat = (x.astype(acc).reshape(r, m) - (mean.reshape(r, 1) if centered else 0)) * rs
    mean_g = g.mean(axis=1, keepdims=True) if centered else 0
    dx = rs * (g - mean_g - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dx = dx - drstd.reshape(r, 1) * rs * rs * xhat / m
    if centered:
        dx = dx + dmean.reshape(r, 1) / m
    not_param = tuple(d for d in range(x.ndim) if d not in dims)
    dscale = (dy * xhat.reshape(x.shape)).sum(axis=not_param)
    return [dx.reshape(x.shape).astype(x.dtype), dscale.astype(scale.dtype),
            dy.sum(axis=not_param).astype(scale.dtype)]


def _bwd_cuda(x, scale, dy, mean, rstd, dmean, drstd, *, centered, num_groups, n_axes):
    from flamefx.kernels import cuda_norm
    rows, _ = _rows_layout(x.shape, num_groups, n_axes)
    inner = math.prod(x.shape[2:]) if num_groups else 1
    return cuda_norm.norm_backward(x, scale, dy, mean if centered else None, rstd, dmean, drstd,
                                   rows=rows, groups=max(num_groups, 1), inner=inner,
                                   centered=centered, has_bias=True)


def _bwd_vjp(cts, primals, outs, **params):
    """Order 2 (and higher): differentiate the flamefx-ops formula."""
    from flamefx.transforms.ad import vjp
    if all(ct is None for ct in cts):
        return [None] * len(primals)
    cts = [ct if ct is not None else _zeros_like(o) for ct, o in zip(cts, outs)]
    _, pullback = vjp(lambda *a: normalization_bwd_formula(*a, **params), *primals)
    return list(pullback(cts))


def _bwd_batch(axis_size, args, bdims, **params):
    """Per-member dscale/dbias are reductions over each member's rows only: batch the
    formula (its primitives all batch without loops) rather than fold into the kernel."""
    from flamefx.transforms.batching import vmap
    outs = vmap(lambda *a: normalization_bwd_formula(*a, **params), in_axes=tuple(bdims),
                axis_size=axis_size)(*args)
    return list(outs), [0, 0, 0]


normalization_bwd_p = Primitive(
    "normalization_bwd", abstract_eval=_bwd_abstract_eval, impl=_bwd_impl, cuda_impl=_bwd_cuda,
    vjp=_bwd_vjp, batch=_bwd_batch, multiple_results=True)


def _zeros_like(v):
    aval = core.get_aval(v)
    return full_on_device(v, aval.shape, 0, aval.dtype)


def _bind_bwd(ct_y, ct_mean, ct_rstd, x, scale, mean, rstd, **params):
    """The cotangents of (x, scale, bias) from those of (y, mean, rstd), None for zero."""
    if ct_y is None and ct_mean is None and ct_rstd is None:
        return None
    ct_y = _zeros_like(x) if ct_y is None else ct_y
    mean = _zeros_like(rstd) if mean is None else mean
    ct_mean = _zeros_like(rstd) if ct_mean is None else ct_mean
    ct_rstd = _zeros_like(rstd) if ct_rstd is None else ct_rstd
    return normalization_bwd_p.bind(x, scale, ct_y, mean, rstd, ct_mean, ct_rstd, **params)


def _layer_norm_vjp(cts, primals, outs, *, axes, epsilon):
    grads = _bind_bwd(*cts, primals[0], primals[1], outs[1], outs[2], centered=True,
                      num_groups=0, n_axes=len(axes))
    return grads or [None, None, None]


def _group_norm_vjp(cts, primals, outs, *, num_groups, epsilon):
    grads = _bind_bwd(*cts, primals[0], primals[1], outs[1], outs[2], centered=True,
                      num_groups=num_groups, n_axes=0)
    return grads or [None, None, None]


def _rms_norm_vjp(cts, primals, outs, *, axes, epsilon):
    grads = _bind_bwd(cts[0], None, cts[1], primals[0], primals[1], None, outs[1],
                      centered=False, num_groups=0, n_axes=len(axes))
    return grads[:2] if grads else [None, None]


def _to_front(axis_size, v, bdim):
    from flamefx.transforms.batching import to_front
    return to_front(v, bdim, axis_size)


def _apply_batched_affine(axis_size, y, affine, feature_dims):
    """y * scale (+ bias) with per-vmap-member parameters; ``feature_dims`` are the dims of
    the batched ``y`` (batch axis first) that a parameter's own dims map to."""
    y_shape = core.get_aval(y).shape
    for param, bdim, combine in affine:
        param = _to_front(axis_size, param, bdim)
        y = combine(y, broadcast_in_dim(param, y_shape, (0,) + feature_dims))
    return y


def _layer_norm_batch(axis_size, args, bdims, *, axes, epsilon):
    x, scale, bias = args
    x = _to_front(axis_size, x, bdims[0])
    axes = tuple(a + 1 for a in axes)
    if bdims[1] is None and bdims[2] is None:
        return layer_norm_p.bind(x, scale, bias, axes=axes, epsilon=epsilon), [0, 0, 0]
    # Per-member parameters: normalize with the identity affine map, then scale and shift.
    features = core.get_aval(x).shape[-len(axes):]
    dtype = core.get_aval(x).dtype
    y, mean, rstd = layer_norm_p.bind(x, full_on_device(x, features, 1, dtype),
                                      full_on_device(x, features, 0, dtype),
                                      axes=axes, epsilon=epsilon)
    y = _apply_batched_affine(axis_size, y, [(scale, bdims[1], mul), (bias, bdims[2], add)], axes)
    return [y, mean, rstd], [0, 0, 0]


def _rms_norm_batch(axis_size, args, bdims, *, axes, epsilon):
    x, scale = args
    x = _to_front(axis_size, x, bdims[0])
    axes = tuple(a + 1 for a in axes)
    if bdims[1] is None:
        return rms_norm_p.bind(x, scale, axes=axes, epsilon=epsilon), [0, 0]
    features = core.get_aval(x).shape[-len(axes):]
    y, rstd = rms_norm_p.bind(x, full_on_device(x, features, 1, core.get_aval(x).dtype), axes=axes,
                              epsilon=epsilon)
    return [_apply_batched_affine(axis_size, y, [(scale, bdims[1], mul)], axes), rstd], [0, 0]


def _group_norm_batch(axis_size, args, bdims, *, num_groups, epsilon):
    x, scale, bias = args
    x = _to_front(axis_size, x, bdims[0])
    x_shape = core.get_aval(x).shape
    folded = reshape(x, (x_shape[0] * x_shape[1],) + x_shape[2:])  # vmap axis into N
    affine_batched = bdims[1] is not None or bdims[2] is not None
    if affine_batched:
        channels, dtype = (x_shape[2],), core.get_aval(x).dtype
        scale_used = full_on_device(x, channels, 1, dtype)
        bias_used = full_on_device(x, channels, 0, dtype)
    else:
        scale_used, bias_used = scale, bias
    y, mean, rstd = group_norm_p.bind(folded, scale_used, bias_used, num_groups=num_groups,
                                      epsilon=epsilon)
    y = reshape(y, x_shape)
    if affine_batched:
        y = _apply_batched_affine(axis_size, y, [(scale, bdims[1], mul), (bias, bdims[2], add)],
                                  (2,))
    stats_shape = (axis_size, x_shape[1], num_groups)
    return [y, reshape(mean, stats_shape), reshape(rstd, stats_shape)], [0, 0, 0]


layer_norm_p = Primitive(
    "layer_norm", abstract_eval=_layer_norm_abstract_eval, impl=_layer_norm_impl,
    cuda_impl=_layer_norm_cuda, vjp=_layer_norm_vjp, batch=_layer_norm_batch,
    multiple_results=True)
group_norm_p = Primitive(
    "group_norm", abstract_eval=_group_norm_abstract_eval, impl=_group_norm_impl,
    cuda_impl=_group_norm_cuda, vjp=_group_norm_vjp, batch=_group_norm_batch,
    multiple_results=True)
rms_norm_p = Primitive(
    "rms_norm", abstract_eval=_rms_norm_abstract_eval, impl=_rms_norm_impl,
    cuda_impl=_rms_norm_cuda, vjp=_rms_norm_vjp, batch=_rms_norm_batch, multiple_results=True)


def _trailing_axes(x, axes) -> tuple:
    ndim = core.get_aval(x).ndim
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(sorted(int(a) % ndim for a in axes))


def layer_norm(x, scale, bias, *, axes=-1, epsilon=1e-5, return_stats=False):
    """Layer normalization over the trailing ``axes``: (x - mean) / sqrt(var + eps) * scale +
    bias, statistics in float32 (float64 for float64 input).

    ``scale`` and ``bias`` have the normalized dims' shape and x's dtype. With
    ``return_stats`` it returns ``(y, mean, rstd)`` (rstd = 1 / sqrt(var + eps)).

    >>> import numpy as np
    >>> y = layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2), epsilon=0.0)
    >>> y.tolist()
    [[-1.0, 1.0]]
    """
    outs = layer_norm_p.bind(x, scale, bias, axes=_trailing_axes(x, axes), epsilon=float(epsilon))
    return outs if return_stats else outs[0]


def group_norm(x, scale, bias, *, num_groups, epsilon=1e-5, return_stats=False):
    """Group normalization of an (N, C, spatial...) input: channels split into ``num_groups``
    groups, each (n, group) normalized over its channels and spatial positions; ``scale``
    and ``bias`` are per channel (C,). With ``return_stats``: ``(y, mean, rstd)`` of shape
    (N, num_groups) for the statistics.

    >>> import numpy as np
    >>> x = np.array([[[1.0], [3.0], [4.0], [6.0]]])
    >>> group_norm(x, np.ones(4), np.zeros(4), num_groups=2, epsilon=0.0)[0, :, 0].tolist()
    [-1.0, 1.0, -1.0, 1.0]
    """
    outs = group_norm_p.bind(x, scale, bias, num_groups=int(num_groups), epsilon=float(epsilon))
    return outs if return_stats else outs[0]


def rms_norm(x, scale, *, axes=-1, epsilon=1e-6, return_stats=False):
    """RMS normalization over the trailing ``axes``: x / sqrt(mean(x^2) + eps) * scale.
    With ``return_stats``: ``(y, rstd)``.

    >>> import numpy as np
    >>> rms_norm(np.array([[1.0, -1.0]]), np.ones(2), epsilon=0.0).tolist()
    [[1.0, -1.0]]
    """
    outs = rms_norm_p.bind(x, scale, axes=_trailing_axes(x, axes), epsilon=float(epsilon))
    return outs if return_stats else outs[0]


