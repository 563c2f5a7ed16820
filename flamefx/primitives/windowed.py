"""Windowed reductions: ``reduce_window_sum``, ``reduce_window_max``, ``reduce_window_min``.

Each reduces every window of an operand (any rank) that has been padded (``padding``: one
``(lo, hi)`` per axis, negative crops) and base-dilated (``base_dilation - 1`` holes between
elements), windows of ``window_dimensions`` elements spaced ``window_dilation`` apart,
placed every ``window_strides``. Padding and holes hold the monoid's identity (0, -inf,
+inf), as XLA's ReduceWindow with its identity as init value. Pooling layers and JAX's
``lax.reduce_window`` (flamefx/lax_extras.py) are built on them.

Both backends run one implementation over their array module: pad into a buffer of the
identity, then fold one strided slice per window offset with add/maximum/minimum. The sum's VJP
is JAX's: a padded, stride-dilated cotangent summed over windows again. The max/min VJP and
JVP select, per output, the first window element equal to the result (row-major order:
the element XLA's select-and-scatter with ``ge``/``le`` picks), written with slices, pads
and selects, so grad of grad, jit and vmap follow.

>>> import numpy as np
>>> x = np.arange(5.0)
>>> reduce_window_sum(x, (2,), (1,), ((0, 0),)).tolist()
[1.0, 3.0, 5.0, 7.0]
"""

from __future__ import annotations

import itertools

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.primitives import elementwise as ew
from flamefx.primitives import structural

_HALF = (dtypes.float16, dtypes.bfloat16)


# --- shapes ------------------------------------------------------------------------------


def dilate_dim(size: int, dilation: int) -> int:
    """The length of ``size`` elements with ``dilation - 1`` holes between them."""
    return 0 if size == 0 else (size - 1) * dilation + 1


def reduce_window_shape_tuple(operand_shape, window_dimensions, window_strides, padding,
                              base_dilation=None, window_dilation=None) -> tuple:
    """The output shape of a windowed reduction (JAX's ``lax.reduce_window_shape_tuple``).

    >>> reduce_window_shape_tuple((5, 6), (2, 3), (1, 3), ((0, 0), (1, 1)))
    (4, 2)
    """
    n = len(operand_shape)
    base_dilation = base_dilation or (1,) * n
    window_dilation = window_dilation or (1,) * n
    out = []
    for size, w, s, (lo, hi), bd, wd in zip(operand_shape, window_dimensions, window_strides,
                                            padding, base_dilation, window_dilation):
        padded = dilate_dim(size, bd) + lo + hi
        out.append(max(0, (padded - dilate_dim(w, wd)) // s + 1))
    return tuple(out)


def _abstract_eval(allowed, label):
    def abstract_eval(x, *, window_dimensions, window_strides, padding, base_dilation,
                      window_dilation):
        for name, value in (("window_dimensions", window_dimensions),
                            ("window_strides", window_strides), ("padding", padding),
                            ("base_dilation", base_dilation),
                            ("window_dilation", window_dilation)):
            if len(value) != x.ndim:
                raise FlamefxTypeError(f"{name} has {len(value)} entries for an operand of "
                                       f"shape {x.shape} (one per axis)")
        for name, value in (("window_dimensions", window_dimensions),
                            ("window_strides", window_strides),
                            ("base_dilation", base_dilation),
                            ("window_dilation", window_dilation)):
            if any(v < 1 for v in value):
                raise FlamefxTypeError(f"{name} must be positive, got {value}")
        if not allowed(x.dtype):
            raise FlamefxTypeError(f"operand must be {label}, got {x.dtype}")
        shape = reduce_window_shape_tuple(x.shape, window_dimensions, window_strides, padding,
                                          base_dilation, window_dilation)
        return [ShapedArray(shape, x.dtype, x.weak_type)]

    return abstract_eval


def _numeric(dtype):
    return np.dtype(dtype) != np.bool_ and not dtypes.is_complex(dtype)


def _ordered(dtype):
    return not dtypes.is_complex(dtype)


# --- impls (one for both backends) ----------------------------------------------------------


def identity_element(kind, dtype):
    from flamefx.primitives.reductions import highest, lowest
    return {"sum": lambda d: 0, "max": lowest, "min": highest}[kind](np.dtype(dtype))


def _reduce_windows(xp, kind, x, window_dimensions, window_strides, padding, base_dilation,
                    window_dilation):
    """The windowed reduction over array module ``xp`` (NumPy or CuPy)."""
    out_shape = reduce_window_shape_tuple(x.shape, window_dimensions, window_strides, padding,
                                          base_dilation, window_dilation)
    work_dtype = np.float32 if x.dtype in _HALF else x.dtype
    fill = identity_element(kind, x.dtype)
    if 0 in out_shape:
        return xp.full(out_shape, fill, x.dtype)
    dilated = [dilate_dim(s, bd) for s, bd in zip(x.shape, base_dilation)]
    grown = [max(lo, 0) + d + max(hi, 0) for d, (lo, hi) in zip(dilated, padding)]
    buffer = xp.full(tuple(grown), fill, work_dtype)
    buffer[tuple(slice(max(lo, 0), max(lo, 0) + d, bd)
                 for d, (lo, _), bd in zip(dilated, padding, base_dilation))] = x
    buffer = buffer[tuple(slice(max(-lo, 0), g - max(-hi, 0))
                          for g, (lo, hi) in zip(grown, padding))]
    # One strided slice per window offset, folded elementwise: far faster than reducing the
    # window axes of a sliding_window_view, and a handful of slices for pooling windows.
    combine = {"sum": xp.add, "max": xp.maximum, "min": xp.minimum}[kind]
    out = None
    for offset in itertools.product(*(range(w) for w in window_dimensions)):
        part = buffer[tuple(slice(t * wd, t * wd + dilate_dim(o, s), s)
                            for t, wd, o, s in zip(offset, window_dilation, out_shape,
                                                   window_strides))]
        out = xp.array(part, copy=True) if out is None else combine(out, part, out=out)
    return xp.asarray(out).astype(x.dtype)


def _impl(kind):
    def impl(x, **params):
        return [_reduce_windows(np, kind, x, **params)]

    return impl


def _cuda_impl(kind):
    def cuda_impl(x, **params):
        from flamefx.kernels import cuda_elementwise
        if x.dtype in _HALF:  # CuPy has no bfloat16 arithmetic: work in float32
            wide = cuda_elementwise.convert(x, dtypes.float32)
            out = _reduce_windows(devices.cupy(), kind, wide, **params)
            return [cuda_elementwise.convert(out, x.dtype)]
        return [_reduce_windows(devices.cupy(), kind, x, **params)]

    return cuda_impl


# --- batching ---------------------------------------------------------------------------------


def _batch(kind):
    def batch(axis_size, args, bdims, *, window_dimensions, window_strides, padding,
              base_dilation, window_dilation):
        b = bdims[0]

        def insert(values, value):
            return tuple(values[:b]) + (value,) + tuple(values[b:])

        out = _PRIMITIVES[kind].bind(args[0], window_dimensions=insert(window_dimensions, 1),
                        window_strides=insert(window_strides, 1),
                        padding=insert(padding, (0, 0)),
                        base_dilation=insert(base_dilation, 1),
                        window_dilation=insert(window_dilation, 1))
        return [out], [b]

    return batch


# --- derivatives ------------------------------------------------------------------------------


def _zero(like_dtype):
    return core.to_array(np.zeros((), like_dtype), weak=False)


def _sum_transpose(ct, x_shape, *, window_dimensions, window_strides, padding, base_dilation,
                   window_dilation):
    """The input cotangent of a windowed sum: the cotangent stride-dilated, padded so every
    input position sees the outputs whose windows hold it, summed over windows again."""
    ct_shape = core.get_aval(ct).shape
    config = []
    for size, w, s, out, (lo, _), bd, wd in zip(x_shape, window_dimensions, window_strides,
                                                ct_shape, padding, base_dilation,
                                                window_dilation):
        before = dilate_dim(w, wd) - lo - 1
        after = dilate_dim(size, bd) + dilate_dim(w, wd) - 1 - dilate_dim(out, s) - before
        config.append((before, after, s - 1))
    dilated_ct = structural.pad(ct, _zero(core.get_aval(ct).dtype), tuple(config))
    return reduce_window_sum(dilated_ct, window_dimensions, base_dilation,
                             ((0, 0),) * len(x_shape), None, window_dilation)


def _sum_vjp(cts, primals, outs, **params):
    ct, x = cts[0], primals[0]
    if ct is None:
        return [None]
    return [_sum_transpose(ct, core.get_aval(x).shape, **params)]


def _sum_jvp(primals, tangents, **params):
    out = reduce_window_sum_p.bind(primals[0], **params)
    t = tangents[0]
    return [out], [None if t is None else reduce_window_sum_p.bind(t, **params)]


def _pad_config(padding, base_dilation):
    return tuple((lo, hi, bd - 1) for (lo, hi), bd in zip(padding, base_dilation))


def _first_hits(x, out, *, window_dimensions, window_strides, padding, base_dilation,
                window_dilation, fill):
    """Per window offset: the slice of the padded operand it reads (start, limit, strides)
    and a mask of the outputs whose first element equal to the result sits there."""
    x_aval = core.get_aval(x)
    padded = structural.pad(x, core.to_array(np.asarray(fill, x_aval.dtype), weak=False),
                            _pad_config(padding, base_dilation))
    out_shape = core.get_aval(out).shape
    taken = None
    for offset in itertools.product(*(range(w) for w in window_dimensions)):
        start = tuple(t * wd for t, wd in zip(offset, window_dilation))
        limit = tuple(st + dilate_dim(o, s) for st, o, s in zip(start, out_shape,
                                                                 window_strides))
        hit = ew.eq(structural.slice(padded, start, limit, window_strides), out)
        if taken is None:
            taken = hit
        else:
            hit = ew.bitwise_and(hit, ew.bitwise_not(taken))
            taken = ew.bitwise_or(taken, hit)
        yield start, limit, hit


def _chooser_vjp(kind):
    def vjp(cts, primals, outs, **params):
        ct, x = cts[0], primals[0]
        x_aval = core.get_aval(x)
        if ct is None or not dtypes.is_float(x_aval.dtype):
            return [None]
        zero = _zero(x_aval.dtype)
        zeros = structural.broadcast_in_dim(zero, core.get_aval(ct).shape, ())
        config = _pad_config(params["padding"], params["base_dilation"])
        padded_shape = [dilate_dim(n, bd) + lo + hi
                        for n, (lo, hi, _), bd in zip(x_aval.shape, config,
                                                      params["base_dilation"])]
        total = None
        for start, limit, hit in _first_hits(x, outs[0], fill=identity_element(kind, x_aval.dtype),
                                             **params):
            # The transpose of the strided slice: a pad back onto the padded operand.
            back = tuple((st, size - lim, s - 1) for st, lim, size, s in zip(
                start, limit, padded_shape, params["window_strides"]))
            part = structural.pad(ew.select_n(hit, zeros, ct), zero, back)
            total = part if total is None else ew.add(total, part)
        # The transpose of the padding: negate lo/hi (crops), keep every base_dilation-th.
        unpadded = structural.pad(total, zero, tuple((-lo, -hi, 0) for lo, hi, _ in config))
        shape = core.get_aval(unpadded).shape
        return [structural.slice(unpadded, (0,) * len(shape), shape, params["base_dilation"])]

    return vjp


def _chooser_jvp(kind):
    def jvp(primals, tangents, **params):
        x, t = primals[0], tangents[0]
        out = _PRIMITIVES[kind].bind(x, **params)
        x_aval = core.get_aval(x)
        if t is None or not dtypes.is_float(x_aval.dtype):
            return [out], [None]
        zero = _zero(x_aval.dtype)
        zeros = structural.broadcast_in_dim(zero, core.get_aval(out).shape, ())
        padded_t = structural.pad(t, zero, _pad_config(params["padding"],
                                                       params["base_dilation"]))
        tangent = zeros
        for start, limit, hit in _first_hits(x, out, fill=identity_element(kind, x_aval.dtype),
                                             **params):
            part = structural.slice(padded_t, start, limit, params["window_strides"])
            tangent = ew.select_n(hit, tangent, part)
        return [out], [tangent]

    return jvp


reduce_window_sum_p = Primitive(
    "reduce_window_sum", abstract_eval=_abstract_eval(_numeric, "numeric (not bool)"),
    impl=_impl("sum"), cuda_impl=_cuda_impl("sum"), vjp=_sum_vjp, jvp=_sum_jvp,
    batch=_batch("sum"))
reduce_window_max_p = Primitive(
    "reduce_window_max", abstract_eval=_abstract_eval(_ordered, "real or bool"),
    impl=_impl("max"), cuda_impl=_cuda_impl("max"), vjp=_chooser_vjp("max"),
    jvp=_chooser_jvp("max"), batch=_batch("max"))
reduce_window_min_p = Primitive(
    "reduce_window_min", abstract_eval=_abstract_eval(_ordered, "real or bool"),
    impl=_impl("min"), cuda_impl=_cuda_impl("min"), vjp=_chooser_vjp("min"),
    jvp=_chooser_jvp("min"), batch=_batch("min"))
_PRIMITIVES = {"sum": reduce_window_sum_p, "max": reduce_window_max_p,
               "min": reduce_window_min_p}


# --- wrappers -------------------------------------------------------------------------------


def _params(ndim, window_dimensions, window_strides, padding, base_dilation, window_dilation):
    return {"window_dimensions": tuple(int(w) for w in window_dimensions),
            "window_strides": tuple(int(s) for s in window_strides),
            "padding": tuple((int(lo), int(hi)) for lo, hi in padding),
            "base_dilation": tuple(int(d) for d in (base_dilation or (1,) * ndim)),
            "window_dilation": tuple(int(d) for d in (window_dilation or (1,) * ndim))}


def reduce_window_sum(x, window_dimensions, window_strides, padding, base_dilation=None,
                      window_dilation=None):
    """The sum over every window; padding and dilation holes count as 0.

    >>> reduce_window_sum(np.ones((3, 3)), (2, 2), (1, 1), ((0, 0), (0, 0))).tolist()
    [[4.0, 4.0], [4.0, 4.0]]
    """
    x = core.ensure_array(x)
    return reduce_window_sum_p.bind(x, **_params(core.get_aval(x).ndim, window_dimensions,
                                                 window_strides, padding, base_dilation,
                                                 window_dilation))


def reduce_window_max(x, window_dimensions, window_strides, padding, base_dilation=None,
                      window_dilation=None):
    """The max over every window; padding and dilation holes hold -inf (never win).

    >>> reduce_window_max(np.arange(4.0), (2,), (2,), ((0, 0),)).tolist()
    [1.0, 3.0]
    """
    x = core.ensure_array(x)
    return reduce_window_max_p.bind(x, **_params(core.get_aval(x).ndim, window_dimensions,
                                                 window_strides, padding, base_dilation,
                                                 window_dilation))


def reduce_window_min(x, window_dimensions, window_strides, padding, base_dilation=None,
                      window_dilation=None):
    """The min over every window; padding and dilation holes hold +inf (never win).

    >>> reduce_window_min(np.arange(4.0), (2,), (2,), ((0, 0),)).tolist()
    [0.0, 2.0]
    """
    x = core.ensure_array(x)
    return reduce_window_min_p.bind(x, **_params(core.get_aval(x).ndim, window_dimensions,
                                                 window_strides, padding, base_dilation,
                                                 window_dilation))
