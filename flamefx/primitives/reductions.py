"""Reductions over axes (sum, max, min, prod, and, or), argmax/argmin, and cumsum.

float16/bfloat16 reductions accumulate in float32 on both backends. Batching never loops:
the batch axis stays where it is and the reduced axes shift around it.

>>> import numpy as np
>>> reduce_sum(np.arange(6.0).reshape(2, 3), axes=(1,)).tolist()
[3.0, 12.0]
"""

from __future__ import annotations

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cuda_reduce
from flamefx.kernels.cuda_reduce import Reduction
from flamefx.primitives import elementwise as ew

_HALF = (dtypes.float16, dtypes.bfloat16)


def _structural():
    from flamefx.primitives import structural
    return structural


# --- shape rules -----------------------------------------------------------------------------


def _check_axes(aval, axes):
    if not isinstance(axes, tuple) or not all(isinstance(a, int) for a in axes):
        raise FlamefxTypeError(f"axes must be a tuple of ints, got {axes!r}")
    for a in axes:
        if not 0 <= a < aval.ndim:
            raise FlamefxTypeError(f"axis {a} is out of range for an array of rank {aval.ndim} "
                                   f"(axes are non-negative at the primitive level)")
    if len(set(axes)) != len(axes):
        raise FlamefxTypeError(f"axes {axes} repeat an axis")


def _reduce_rule(allowed, label):
    def abstract_eval(x, *, axes):
        _check_axes(x, axes)
        if x.dtype not in allowed:
            raise FlamefxTypeError(f"operand must be {label}, got {x.dtype}")
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [ShapedArray(shape, x.dtype, x.weak_type)]

    return abstract_eval


def _kept_dims(ndim, axes):
    return tuple(i for i in range(ndim) if i not in axes)


def _broadcast_back(y, x_aval, axes):
    """``y`` (reduced over ``axes``) broadcast back to ``x``'s shape."""
    return _structural().broadcast_in_dim(y, x_aval.shape, _kept_dims(x_aval.ndim, axes))


# --- impls -----------------------------------------------------------------------------------


def _numpy_reduce(numpy_fn, identity=None):
    def impl(x, *, axes):
        dtype = x.dtype
        work = x.astype(np.float32) if dtype in _HALF else x
        kwargs = {}
        if identity is not None:  # max/min of an empty axis give -inf/+inf (the identity)
            kwargs["initial"] = identity(work.dtype)
        with np.errstate(all="ignore"):
            out = numpy_fn(work, axis=axes, **kwargs)
        return [np.asarray(out).astype(dtype)]

    return impl


def lowest(dtype):
    """max's identity: the lowest value of ``dtype`` (-inf for floats).

    >>> lowest(np.dtype(np.int8))
    -128
    """
    if dtype == np.bool_:
        return False
    return -np.inf if dtypes.is_float(dtype) else np.iinfo(dtype).min


def highest(dtype):
    """min's identity: the highest value of ``dtype`` (inf for floats).

    >>> highest(np.dtype(np.float32))
    inf
    """
    if dtype == np.bool_:
        return True
    return np.inf if dtypes.is_float(dtype) else np.iinfo(dtype).max


def _cuda_reduce(kind):
    def cuda_impl(x, *, axes):
        if dtypes.is_complex(x.dtype):  # sum and prod only: CuPy's own, unfused
            return [getattr(devices.cupy(), kind)(x, axis=tuple(axes))]
        return [cuda_reduce.reduce(kind, x, axes)]

    return cuda_impl


# --- batching (shared) -------------------------------------------------------------------------


def _shift_axes(axes, bdim):
    """The reduced axes of the batched operand, and where the batch axis ends up."""
    new_axes = tuple(a + (a >= bdim) for a in axes)
    return new_axes, bdim - sum(a < bdim for a in axes)


def _batch_reduce(prim):
    def batch(axis_size, args, bdims, *, axes):
        new_axes, out_bdim = _shift_axes(axes, bdims[0])
        return [prim.bind(args[0], axes=new_axes)], [out_bdim]

    return batch


# --- derivatives -----------------------------------------------------------------------------


def _sum_vjp(cts, primals, outs, *, axes):
    ct = cts[0]
    if ct is None:
        return [None]
    return [_broadcast_back(ct, core.get_aval(primals[0]), axes)]


def _sum_jvp(primals, tangents, *, axes):
    out = reduce_sum(primals[0], axes)
    t = tangents[0]
    return [out], [None if t is None else reduce_sum(t, axes)]


def _extremum_partial(x, out, axes):
    """d out / d x for max/min: the positions equal to the result, ties sharing evenly."""
    x_aval = core.get_aval(x)
    hits = ew.convert_element_type(ew.eq(x, _broadcast_back(out, x_aval, axes)), x_aval.dtype)
    count = reduce_sum(hits, axes)
    return ew.div(hits, _broadcast_back(count, x_aval, axes))


def _extremum_vjp(cts, primals, outs, *, axes):
    ct, x = cts[0], primals[0]
    if ct is None or not dtypes.is_float(core.get_aval(x).dtype):
        return [None]
    x_aval = core.get_aval(x)
    return [ew.mul(_broadcast_back(ct, x_aval, axes), _extremum_partial(x, outs[0], axes))]


def _extremum_jvp(prim):
    def jvp(primals, tangents, *, axes):
        x, t = primals[0], tangents[0]
        out = prim.bind(x, axes=axes)
        if t is None or not dtypes.is_float(core.get_aval(x).dtype):
            return [out], [None]
        return [out], [reduce_sum(ew.mul(t, _extremum_partial(x, out, axes)), axes)]

    return jvp


def _prod_partial(x, axes):
    """d prod / d x_i = product of the other elements, exact with zeros in the input.

    With z zeros among the reduced elements, Q the product of the nonzero ones and S the
    sum of the zero-valued ones (S == 0, but d S / d x_zero == 1):
    z == 0 -> Q / x_i;  z == 1 -> Q at the zero, S * Q / x_i elsewhere;  z >= 2 -> 0.
    Carrying S keeps second derivatives exact for z <= 1 (d^2 prod / d x_i d x_zero is
    Q / x_i, not 0).
    """
    x_aval = core.get_aval(x)
    zeros, ones = ew.full_like(x, 0), ew.full_like(x, 1)
    is_zero = ew.eq(x, zeros)
    x_nonzero = ew.select_n(is_zero, x, ones)
    nonzero_prod = _broadcast_back(reduce_prod(x_nonzero, axes), x_aval, axes)
    zero_sum = _broadcast_back(reduce_sum(ew.select_n(is_zero, zeros, x), axes), x_aval, axes)
    zero_count = _broadcast_back(
        reduce_sum(ew.convert_element_type(is_zero, x_aval.dtype), axes), x_aval, axes)
    others = ew.div(nonzero_prod, x_nonzero)
    one_zero = ew.select_n(is_zero, ew.mul(zero_sum, others), nonzero_prod)
    some_zeros = ew.select_n(ew.eq(zero_count, ones), zeros, one_zero)
    return ew.select_n(ew.eq(zero_count, zeros), some_zeros, others)


def _prod_vjp(cts, primals, outs, *, axes):
    ct, x = cts[0], primals[0]
    if ct is None or not dtypes.is_inexact(core.get_aval(x).dtype):
        return [None]
    return [ew.mul(_broadcast_back(ct, core.get_aval(x), axes), _prod_partial(x, axes))]


def _prod_jvp(primals, tangents, *, axes):
    x, t = primals[0], tangents[0]
    out = reduce_prod(x, axes)
    if t is None or not dtypes.is_inexact(core.get_aval(x).dtype):
        return [out], [None]
    return [out], [reduce_sum(ew.mul(t, _prod_partial(x, axes)), axes)]


# --- declarations ------------------------------------------------------------------------------

_NUMERIC = dtypes.FLOATS | dtypes.INTS
_NUMBER = _NUMERIC | dtypes.COMPLEXES  # sum and prod take complex; max and min do not
_BOOL = frozenset({dtypes.bool_})
_ORDERED = _NUMERIC | _BOOL

reduce_sum_p = Primitive(
    "reduce_sum", abstract_eval=_reduce_rule(_NUMBER, "numeric"), impl=_numpy_reduce(np.sum),
    cuda_impl=_cuda_reduce("sum"), vjp=_sum_vjp, jvp=_sum_jvp, fusion=Reduction("sum"))
reduce_max_p = Primitive(
    "reduce_max", abstract_eval=_reduce_rule(_ORDERED, "numeric or bool"),
    impl=_numpy_reduce(np.max, lowest), cuda_impl=_cuda_reduce("max"), vjp=_extremum_vjp,
    fusion=Reduction("max"))
reduce_min_p = Primitive(
    "reduce_min", abstract_eval=_reduce_rule(_ORDERED, "numeric or bool"),
    impl=_numpy_reduce(np.min, highest), cuda_impl=_cuda_reduce("min"), vjp=_extremum_vjp,
    fusion=Reduction("min"))
reduce_prod_p = Primitive(
    "reduce_prod", abstract_eval=_reduce_rule(_NUMBER, "numeric"), impl=_numpy_reduce(np.prod),
    cuda_impl=_cuda_reduce("prod"), vjp=_prod_vjp, jvp=_prod_jvp, fusion=Reduction("prod"))
reduce_and_p = Primitive(
    "reduce_and", abstract_eval=_reduce_rule(_BOOL, "bool"), impl=_numpy_reduce(np.all),
    cuda_impl=_cuda_reduce("and"), differentiable=False, fusion=Reduction("and"))
reduce_or_p = Primitive(
    "reduce_or", abstract_eval=_reduce_rule(_BOOL, "bool"), impl=_numpy_reduce(np.any),
    cuda_impl=_cuda_reduce("or"), differentiable=False, fusion=Reduction("or"))
reduce_max_p.jvp = _extremum_jvp(reduce_max_p)
reduce_min_p.jvp = _extremum_jvp(reduce_min_p)
for _prim in (reduce_sum_p, reduce_max_p, reduce_min_p, reduce_prod_p, reduce_and_p,
              reduce_or_p):
    _prim.batch = _batch_reduce(_prim)


# --- argmax / argmin -------------------------------------------------------------------------


def _arg_rule(x, *, axis, index_dtype):
    _check_axes(x, (axis,))
    if x.dtype not in _ORDERED:
        raise FlamefxTypeError(f"operand must be numeric or bool, got {x.dtype}")
    if x.shape[axis] == 0:
        raise FlamefxTypeError(f"cannot take the arg-extremum of an empty axis {axis}")
    if not dtypes.is_int(index_dtype):
        raise FlamefxTypeError(f"index_dtype must be an integer dtype, got {index_dtype}")
    shape = x.shape[:axis] + x.shape[axis + 1:]
    return [ShapedArray(shape, index_dtype)]


def _numpy_arg(numpy_fn):
    def impl(x, *, axis, index_dtype):
        work = x.astype(np.float32) if x.dtype in _HALF else x
        return [numpy_fn(work, axis=axis).astype(index_dtype)]

    return impl


def _cuda_arg(kind):
    def cuda_impl(x, *, axis, index_dtype):
        return [cuda_reduce.arg_reduce(kind, x, axis, index_dtype)]

    return cuda_impl


def _batch_arg(prim):
    def batch(axis_size, args, bdims, *, axis, index_dtype):
        (new_axis,), out_bdim = _shift_axes((axis,), bdims[0])
        return [prim.bind(args[0], axis=new_axis, index_dtype=index_dtype)], [out_bdim]

    return batch


argmax_p = Primitive("argmax", abstract_eval=_arg_rule, impl=_numpy_arg(np.argmax),
                     cuda_impl=_cuda_arg("max"), differentiable=False)
argmin_p = Primitive("argmin", abstract_eval=_arg_rule, impl=_numpy_arg(np.argmin),
                     cuda_impl=_cuda_arg("min"), differentiable=False)
argmax_p.batch = _batch_arg(argmax_p)
argmin_p.batch = _batch_arg(argmin_p)


# --- cumsum ----------------------------------------------------------------------------------


def _cumsum_rule(x, *, axis, reverse):
    _check_axes(x, (axis,))
    if x.dtype not in _NUMBER:
        raise FlamefxTypeError(f"operand must be numeric, got {x.dtype}")
    return [x]


def _numpy_cumsum(x, *, axis, reverse):
    work = x.astype(np.float32) if x.dtype in _HALF else x
    if reverse:
        work = np.flip(work, axis)
    out = np.cumsum(work, axis=axis, dtype=work.dtype)
    if reverse:
        out = np.flip(out, axis)
    return [np.ascontiguousarray(out).astype(x.dtype)]


def _cumsum_cuda(x, *, axis, reverse):
    if dtypes.is_complex(x.dtype):  # CuPy's own, unfused
        cp = devices.cupy()
        work = cp.flip(x, axis) if reverse else x
        out = cp.cumsum(work, axis=axis)
        return [cp.ascontiguousarray(cp.flip(out, axis) if reverse else out)]
    return [cuda_reduce.cumsum(x, axis, reverse)]


def _cumsum_vjp(cts, primals, outs, *, axis, reverse):
    ct = cts[0]
    if ct is None or not dtypes.is_inexact(core.get_aval(primals[0]).dtype):
        return [None]
    return [cumsum(ct, axis, reverse=not reverse)]


def _cumsum_jvp(primals, tangents, *, axis, reverse):
    t = tangents[0]
    out = cumsum(primals[0], axis, reverse)
    return [out], [None if t is None else cumsum(t, axis, reverse)]


def _cumsum_batch(axis_size, args, bdims, *, axis, reverse):
    (new_axis,), _ = _shift_axes((axis,), bdims[0])
    return [cumsum(args[0], new_axis, reverse)], [bdims[0]]


cumsum_p = Primitive("cumsum", abstract_eval=_cumsum_rule, impl=_numpy_cumsum,
                     cuda_impl=_cumsum_cuda, vjp=_cumsum_vjp, jvp=_cumsum_jvp,
                     batch=_cumsum_batch)


# --- lax-level wrappers ------------------------------------------------------------------------


def reduce_sum(x, axes):
    """Sum over ``axes`` (a tuple of non-negative ints).

    >>> reduce_sum(np.ones((2, 3)), (0, 1)).item()
    6.0
    """
    return reduce_sum_p.bind(x, axes=tuple(axes))


def reduce_max(x, axes):
    """Maximum over ``axes``; NaN propagates; an empty axis gives -inf."""
    return reduce_max_p.bind(x, axes=tuple(axes))


def reduce_min(x, axes):
    """Minimum over ``axes``; NaN propagates; an empty axis gives +inf."""
    return reduce_min_p.bind(x, axes=tuple(axes))


def reduce_prod(x, axes):
    """Product over ``axes``; its gradient is exact when inputs contain zeros."""
    return reduce_prod_p.bind(x, axes=tuple(axes))


def reduce_and(x, axes):
    """Logical AND of a bool array over ``axes``."""
    return reduce_and_p.bind(x, axes=tuple(axes))


def reduce_or(x, axes):
    """Logical OR of a bool array over ``axes``."""
    return reduce_or_p.bind(x, axes=tuple(axes))


def argmax(x, axis: int, index_dtype):
    """Index of the first maximum along ``axis`` (the first NaN, if any).

    >>> argmax(np.array([1.0, 3.0, 3.0]), 0, np.int32).item()
    1
    """
    return argmax_p.bind(x, axis=int(axis), index_dtype=dtypes.canonicalize(index_dtype))


def argmin(x, axis: int, index_dtype):
    """Index of the first minimum along ``axis`` (the first NaN, if any)."""
    return argmin_p.bind(x, axis=int(axis), index_dtype=dtypes.canonicalize(index_dtype))


def cumsum(x, axis: int, reverse: bool = False):
    """Inclusive prefix sum along ``axis`` (from the end when ``reverse``).

    >>> cumsum(np.array([1.0, 2.0, 3.0]), 0).tolist()
    [1.0, 3.0, 6.0]
    """
    return cumsum_p.bind(x, axis=int(axis), reverse=bool(reverse))
