"""Convolution and normalization primitives: the heavy layers of conv nets and diffusion models.

``conv_general_dilated`` (N, C, spatial...) x (O, C/groups, kernel...) in 1, 2 or 3 spatial
dimensions. Its VJP is written in flamefx ops: the input gradient is itself a convolution,
the weight gradient is ``conv_weight_grad`` (a primitive so that the GPU reads the input and
the output gradient in their NCHW layouts; its own VJP is a convolution and an input
gradient), so grad of grad, jit of grad and vmap of grad follow. The rest of the family
lives beside it and is re-exported here: attention (flamefx/primitives/attention.py) and
the normalizations (flamefx/primitives/normalization.py).

>>> import numpy as np
>>> x = np.ones((1, 1, 4), np.float32); w = np.ones((1, 1, 3), np.float32)
>>> conv_general_dilated(x, w, (1,), ((1, 1),)).tolist()
[[[2.0, 3.0, 3.0, 2.0]]]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.primitives.elementwise import add, convert_element_type, mul
from flamefx.primitives.linalg import PRECISIONS
from flamefx.primitives.structural import broadcast_in_dim, reshape, rev, transpose


def accumulation_dtype(dtype) -> np.dtype:
    """float64 stays float64; every other float (half types included) accumulates in float32."""
    return dtypes.float64 if np.dtype(dtype) == dtypes.float64 else dtypes.float32


def full_on_device(like, shape, value, dtype):
    """A constant array of ``shape`` on ``like``'s device (so GPU rules stay on the GPU).

    >>> full_on_device(np.zeros(1), (2,), 3.0, np.float32).tolist()
    [3.0, 3.0]
    """
    device = like.device if core.is_array(like) else None
    scalar = core.to_array(np.asarray(value, dtype), device=device, weak=False)
    return broadcast_in_dim(scalar, tuple(shape), ())


def scale_by(x, value):
    """``x`` times the constant ``value`` in ``x``'s dtype.

    >>> scale_by(np.ones(2), 0.5).tolist()
    [0.5, 0.5]
    """
    aval = core.get_aval(x)
    return mul(x, full_on_device(x, aval.shape, value, aval.dtype))


def cast_to(x, dtype):
    """``x`` converted to ``dtype``, or ``x`` itself where it already has it.

    >>> cast_to(np.ones(1, np.float32), np.float64).dtype
    dtype('float64')
    """
    return x if core.get_aval(x).dtype == np.dtype(dtype) else convert_element_type(x, dtype)


# --- convolution -----------------------------------------------------------------------------


def conv_output_spatial(in_spatial, kernel_spatial, window_strides, padding, lhs_dilation,
                        rhs_dilation) -> tuple:
    """Output spatial sizes of a convolution (0 where the window does not fit)."""
    out = []
    for size, k, s, (lo, hi), ld, rd in zip(in_spatial, kernel_spatial, window_strides,
                                            padding, lhs_dilation, rhs_dilation):
        dilated_in = (size - 1) * ld + 1 if size > 0 else 0
        dilated_k = (k - 1) * rd + 1
        out.append(max(0, (dilated_in + lo + hi - dilated_k) // s + 1))
    return tuple(out)


def _conv_abstract_eval(x, w, *, window_strides, padding, lhs_dilation, rhs_dilation,
                        feature_group_count, precision, preferred_element_type):
    if x.ndim < 3 or x.ndim > 5 or w.ndim != x.ndim:
        raise FlamefxTypeError(
            f"expects input (N, C, spatial...) and kernel (O, I, spatial...) of equal rank "
            f"3 to 5, got input rank {x.ndim} and kernel rank {w.ndim}")
    if x.dtype != w.dtype:
        raise FlamefxTypeError(f"input dtype {x.dtype} and kernel dtype {w.dtype} differ")
    if not dtypes.is_float(x.dtype):
        raise FlamefxTypeError(f"needs floating-point operands, got {x.dtype}")
    n_spatial = x.ndim - 2
    for name, value in (("window_strides", window_strides), ("padding", padding),
                        ("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        if len(value) != n_spatial:
            raise FlamefxTypeError(f"{name} has {len(value)} entries for {n_spatial} spatial "
                                   f"dimensions")
    for name, value in (("window_strides", window_strides), ("lhs_dilation", lhs_dilation),
                        ("rhs_dilation", rhs_dilation)):
        if any(v < 1 for v in value):
            raise FlamefxTypeError(f"{name} must be positive, got {value}")
    if precision is not None and precision not in PRECISIONS:
        raise FlamefxTypeError(f"precision must be None or one of {PRECISIONS}, got "
                               f"{precision!r}")
    groups = feature_group_count
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise FlamefxTypeError(
            f"feature_group_count={groups} must divide the input channels ({x.shape[1]}) and "
            f"the kernel's output channels ({w.shape[0]})")
    if x.shape[1] != w.shape[1] * groups:
        raise FlamefxTypeError(
            f"input has {x.shape[1]} channels but the kernel expects {w.shape[1] * groups} "
            f"(kernel in-channels {w.shape[1]} x feature_group_count {groups})")
    spatial = conv_output_spatial(x.shape[2:], w.shape[2:], window_strides, padding,
                                  lhs_dilation, rhs_dilation)
    out_dtype = preferred_element_type or x.dtype
    return [ShapedArray((x.shape[0], w.shape[0]) + spatial, out_dtype,
                        x.weak_type and w.weak_type)]


def dilate_and_pad_numpy(x, lhs_dilation, padding):
    """Inserts ``d - 1`` zeros between input elements and pads (negative pads crop)."""
    spatial = x.shape[2:]
    dilated = [(s - 1) * d + 1 if s > 0 else 0 for s, d in zip(spatial, lhs_dilation)]
    grown = [max(lo, 0) + size + max(hi, 0) for size, (lo, hi) in zip(dilated, padding)]
    out = np.zeros(x.shape[:2] + tuple(grown), x.dtype)
    place = tuple(slice(max(lo, 0), max(lo, 0) + size, d)
                  for size, (lo, _), d in zip(dilated, padding, lhs_dilation))
    out[(Ellipsis,) + place] = x
    crop = tuple(slice(max(-lo, 0), g - max(-hi, 0)) for g, (lo, hi) in zip(grown, padding))
    return out[(Ellipsis,) + crop]


def _tap_patches(padded, kernel, out_spatial, window_strides, rhs_dilation):
    """(tap, the (n, g, c, out...) slice of the padded input that tap reads) per kernel tap."""
    for tap in np.ndindex(*kernel):
        window = tuple(slice(t * rd, t * rd + (size - 1) * s + 1, s)
                       for t, rd, size, s in zip(tap, rhs_dilation, out_spatial,
                                                 window_strides))
        yield tap, padded[(slice(None), slice(None), slice(None)) + window]


def _conv_impl(x, w, *, window_strides, padding, lhs_dilation, rhs_dilation,
               feature_group_count, precision, preferred_element_type):
    acc = accumulation_dtype(x.dtype)
    kernel = w.shape[2:]
    spatial = conv_output_spatial(x.shape[2:], kernel, window_strides, padding, lhs_dilation,
                                  rhs_dilation)
    n, c, o, g = x.shape[0], x.shape[1], w.shape[0], feature_group_count
    padded = dilate_and_pad_numpy(x.astype(acc), lhs_dilation, padding)
    padded = padded.reshape((n, g, c // g) + padded.shape[2:])
    wg = w.astype(acc).reshape((g, o // g, c // g) + kernel)
    out = np.zeros((n, g, o // g) + spatial, acc)
    # One tensor contraction per kernel tap: (n, g, c, out...) x (g, o, c) -> (n, g, o, out...)
    for tap, patch in _tap_patches(padded, kernel, spatial, window_strides, rhs_dilation):
        out += np.einsum("ngc...,goc->ngo...", patch, wg[(Ellipsis,) + tap])
    return [out.reshape((n, o) + spatial).astype(preferred_element_type or x.dtype)]


def _conv_cuda_impl(x, w, **params):
    from flamefx.kernels import cuda_conv
    return [cuda_conv.conv_forward(x, w, **params)]


def _conv_lhs_padding(in_spatial, kernel_spatial, window_strides, out_spatial, padding,
                      lhs_dilation, rhs_dilation):
    """Padding of the input-gradient conv so that its output has the input's exact shape:
    per spatial dim, from the low padding and the dilated input, kernel and output sizes."""
    pads = []
    for size, k, s, out, (lo, _), ld, rd in zip(in_spatial, kernel_spatial, window_strides,
                                                out_spatial, padding, lhs_dilation,
                                                rhs_dilation):
        dilated_in, dilated_k, dilated_out = (size - 1) * ld + 1, (k - 1) * rd + 1, \
            (out - 1) * s + 1
        pads.append((dilated_k - lo - 1, dilated_in - dilated_out + lo))
    return tuple(pads)


def _conv_input_grad(ct, w, x_shape, *, window_strides, padding, lhs_dilation, rhs_dilation,
                     feature_group_count, precision, preferred_element_type):
    """d(conv)/dx: the output gradient convolved with the flipped, transposed kernel."""
    o, cg = w.shape[0], w.shape[1]
    g, kernel = feature_group_count, w.shape[2:]
    n_spatial = len(kernel)
    # (O, Cg, k...) -> (G, Og, Cg, k...) -> (G, Cg, Og, k...) -> (C, Og, k...), flipped.
    wt = reshape(w, (g, o // g, cg) + kernel)
    wt = transpose(wt, (0, 2, 1) + tuple(range(3, 3 + n_spatial)))
    wt = rev(reshape(wt, (g * cg, o // g) + kernel), tuple(range(2, 2 + n_spatial)))
    pads = _conv_lhs_padding(x_shape[2:], kernel, window_strides, ct.shape[2:], padding,
                             lhs_dilation, rhs_dilation)
    return conv_general_dilated(ct, cast_to(wt, core.get_aval(ct).dtype), lhs_dilation, pads,
                                window_strides, rhs_dilation, g, precision)


def _conv_weight_grad(ct, x, w_shape, *, preferred_element_type, **params):
    """d(conv)/dw, in the output gradient's dtype (conv_weight_grad_p)."""
    del preferred_element_type  # the gradient takes ct's dtype; the VJP casts it to w's
    return conv_weight_grad_p.bind(ct, cast_to(x, core.get_aval(ct).dtype),
                                   kernel_shape=tuple(w_shape), **params)


def _conv_vjp(cts, primals, outs, **params):
    (ct,), (x, w) = cts, primals
    if ct is None:
        return [None, None]
    x_aval, w_aval = core.get_aval(x), core.get_aval(w)
    dx = cast_to(_conv_input_grad(ct, w, x_aval.shape, **params), x_aval.dtype)
    dw = cast_to(_conv_weight_grad(ct, x, w_aval.shape, **params), w_aval.dtype)
    return [dx, dw]


def _bilinear_jvp(prim, primals, tangents, **params):
    """The JVP of a primitive linear in each of its two operands: f(ta, b) + f(a, tb)."""
    a, b = primals
    ta, tb = tangents
    out = prim.bind(a, b, **params)
    terms = []
    if ta is not None:
        terms.append(prim.bind(ta, b, **params))
    if tb is not None:
        terms.append(prim.bind(a, tb, **params))
    tangent = None if not terms else terms[0] if len(terms) == 1 else add(*terms)
    return [out], [tangent]


def _conv_jvp(primals, tangents, **params):
    return _bilinear_jvp(conv_general_dilated_p, primals, tangents, **params)


def _members_as_channels(x, bdim, axis_size):
    """(N, C, spatial...) with a vmap axis (or none: broadcast) -> (N, axis_size * C,
    spatial...): each vmap member's channels become their own feature groups."""
    from flamefx.transforms.batching import move_axis

    if bdim is None:
        shape = core.get_aval(x).shape
        x = broadcast_in_dim(x, (shape[0], axis_size) + shape[1:],
                             (0,) + tuple(range(2, len(shape) + 1)))
    else:
        x = move_axis(x, bdim, 1)
    shape = core.get_aval(x).shape
    return reshape(x, (shape[0], axis_size * shape[2]) + shape[3:])


def _conv_batch(axis_size, args, bdims, **params):
    from flamefx.transforms.batching import move_axis

    x, w = args
    x_bdim, w_bdim = bdims
    groups = params["feature_group_count"]
    if w_bdim is None:  # fold the vmap axis into N
        x = move_axis(x, x_bdim, 0)
        shape = core.get_aval(x).shape
        out = conv_general_dilated_p.bind(reshape(x, (shape[0] * shape[1],) + shape[2:]), w,
                                          **params)
        out_shape = core.get_aval(out).shape
        return [reshape(out, (axis_size, shape[1]) + out_shape[1:])], [0]
    # A batched kernel: each vmap member becomes its own set of feature groups.
    w = move_axis(w, w_bdim, 0)
    w_shape = core.get_aval(w).shape
    w = reshape(w, (axis_size * w_shape[1],) + w_shape[2:])
    params = dict(params, feature_group_count=groups * axis_size)
    out = conv_general_dilated_p.bind(_members_as_channels(x, x_bdim, axis_size), w, **params)
    out_shape = core.get_aval(out).shape
    return [reshape(out, (out_shape[0], axis_size, w_shape[1]) + out_shape[2:])], [1]


conv_general_dilated_p = Primitive(
    "conv_general_dilated", abstract_eval=_conv_abstract_eval, impl=_conv_impl,
    cuda_impl=_conv_cuda_impl, vjp=_conv_vjp, jvp=_conv_jvp, batch=_conv_batch)


def conv_general_dilated(x, w, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         feature_group_count=1, precision=None, preferred_element_type=None):
    """N-d convolution (cross-correlation, as in JAX/PyTorch) of NC(spatial...) input ``x``
    with an OI(spatial...) kernel ``w``.

    ``padding`` is explicit ``((lo, hi), ...)`` per spatial dim (negative crops) or a
    string ('SAME', 'SAME_LOWER', 'VALID'; JAX's signature, with dimension_numbers, is
    ``flamefx.lax.conv_general_dilated``);
    ``lhs_dilation`` > 1 inserts zeros between input elements (transposed convolution),
    ``rhs_dilation`` dilates the kernel (atrous); ``feature_group_count`` splits channels
    into groups (depthwise: groups = C). Half-precision inputs accumulate in float32.

    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5); w = np.ones((1, 1, 2))
    >>> conv_general_dilated(x, w, (2,), ((0, 0),)).tolist()
    [[[1.0, 5.0]]]
    >>> conv_general_dilated(x, w, (1,), "SAME").shape
    (1, 1, 5)
    """
    n_spatial = len(window_strides)
    if isinstance(padding, str):  # 'SAME'/'SAME_LOWER'/'VALID', resolved as lax's are
        from flamefx.lax_conv import padtype_to_pads
        kernel = core.get_aval(w).shape[2:]
        spans = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dilation or (1,) * n_spatial)]
        padding = padtype_to_pads(core.get_aval(x).shape[2:], spans, window_strides, padding)
    params = {
        "window_strides": tuple(int(s) for s in window_strides),
        "padding": tuple((int(lo), int(hi)) for lo, hi in padding),
        "lhs_dilation": tuple(int(d) for d in (lhs_dilation or (1,) * n_spatial)),
        "rhs_dilation": tuple(int(d) for d in (rhs_dilation or (1,) * n_spatial)),
        "feature_group_count": int(feature_group_count), "precision": precision,
        "preferred_element_type": (None if preferred_element_type is None
                                else np.dtype(preferred_element_type))}
    return conv_general_dilated_p.bind(x, w, **params)


# --- the weight gradient ------------------------------------------------------------------


def _conv_params(**params):
    """A weight gradient's params as the params of its convolution."""
    return dict(params, preferred_element_type=None)


def _weight_grad_abstract_eval(ct, x, *, kernel_shape, **params):
    if ct.dtype != x.dtype:
        raise FlamefxTypeError(f"output gradient dtype {ct.dtype} and input dtype {x.dtype} "
                               f"differ")
    if len(kernel_shape) != x.ndim:
        raise FlamefxTypeError(f"kernel_shape {kernel_shape} does not match an input of rank "
                               f"{x.ndim}")
    (out,) = _conv_abstract_eval(x, ShapedArray(kernel_shape, x.dtype), **_conv_params(**params))
    if out.shape != ct.shape:
        raise FlamefxTypeError(f"output gradient has shape {ct.shape}, the convolution's "
                               f"output has {out.shape}")
    return [ShapedArray(tuple(kernel_shape), ct.dtype, ct.weak_type and x.weak_type)]


def _weight_grad_impl(ct, x, *, kernel_shape, window_strides, padding, lhs_dilation,
                      rhs_dilation, feature_group_count, precision):
    acc = accumulation_dtype(ct.dtype)
    n, c, o, g = x.shape[0], x.shape[1], kernel_shape[0], feature_group_count
    kernel, spatial = tuple(kernel_shape[2:]), ct.shape[2:]
    padded = dilate_and_pad_numpy(x.astype(acc), lhs_dilation, padding)
    padded = padded.reshape((n, g, c // g) + padded.shape[2:])
    ctg = ct.astype(acc).reshape(n, g, o // g, -1)
    dw = np.zeros((g, o // g, c // g) + kernel, acc)
    # Per tap: (n, g, c, out...) x (n, g, o, out...) -> (g, o, c), summed over n and out.
    for tap, patch in _tap_patches(padded, kernel, spatial, window_strides, rhs_dilation):
        dw[(Ellipsis,) + tap] = np.einsum("ngcp,ngop->goc", patch.reshape(n, g, c // g, -1),
                                          ctg)
    return [dw.reshape(kernel_shape).astype(ct.dtype)]


def _weight_grad_cuda_impl(ct, x, **params):
    from flamefx.kernels import cuda_conv
    return [cuda_conv.conv_weight_grad(ct, x, **params)]


def _weight_grad_vjp(cts, primals, outs, *, kernel_shape, **params):
    """The weight gradient is linear in each operand: <dw, v> = <ct, conv(x, v)>, so the
    cotangent ``v`` maps to conv(x, v) for ct and to the input gradient of (ct, v) for x."""
    (v,), (ct, x) = cts, primals
    if v is None:
        return [None, None]
    conv_params = _conv_params(**params)
    v = cast_to(v, core.get_aval(ct).dtype)
    d_ct = conv_general_dilated_p.bind(x, v, **conv_params)
    d_x = _conv_input_grad(ct, v, core.get_aval(x).shape, **conv_params)
    return [d_ct, d_x]


def _weight_grad_jvp(primals, tangents, **params):
    return _bilinear_jvp(conv_weight_grad_p, primals, tangents, **params)


def _weight_grad_batch(axis_size, args, bdims, *, kernel_shape, feature_group_count,
                       **params):
    # Each vmap member's channels (of ct and of x) become their own feature groups, so one
    # weight gradient of axis_size * G groups holds every member's, member-major.
    ct, x = (_members_as_channels(a, d, axis_size) for a, d in zip(args, bdims))
    dw = conv_weight_grad_p.bind(ct, x, kernel_shape=(axis_size * kernel_shape[0],)
                                 + tuple(kernel_shape[1:]),
                                 feature_group_count=feature_group_count * axis_size,
                                 **params)
    return [reshape(dw, (axis_size,) + tuple(kernel_shape))], [0]


conv_weight_grad_p = Primitive(
    "conv_weight_grad", abstract_eval=_weight_grad_abstract_eval, impl=_weight_grad_impl,
    cuda_impl=_weight_grad_cuda_impl, vjp=_weight_grad_vjp, jvp=_weight_grad_jvp,
    batch=_weight_grad_batch)


# Attention and the normalizations have their own modules; importing them here registers
# their primitives with the rest of the NN family (flamefx imports nn_ops) and gives
# flamefx.nn one import site for the NN lax ops. They import this module's helpers (cast_to,
# full_on_device, ...), so they are imported last, once those exist.
from flamefx.primitives.attention import (  # noqa: E402, F401
    dot_product_attention,
    flash_attention_bwd_p,
    flash_attention_p,
)
from flamefx.primitives.normalization import (  # noqa: E402, F401
    group_norm,
    group_norm_p,
    layer_norm,
    layer_norm_p,
    normalization_bwd_p,
    rms_norm,
    rms_norm_p,
)
