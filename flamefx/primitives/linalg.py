"""dot_general: every matrix product, batched or not, with JAX's dimension numbers.

``dimension_numbers = ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))``; the output
axes are the batch axes, then the free lhs axes, then the free rhs axes (in order).

>>> import numpy as np
>>> a, b = np.ones((2, 3)), np.ones((3, 4))
>>> dot_general(a, b, (((1,), (0,)), ((), ()))).shape
(2, 4)
"""

from __future__ import annotations

import numpy as np

from flamefx import config, core, dtypes
from flamefx.core import Primitive
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cublas

PRECISIONS = ("highest", "tf32", "bf16")


def _free_axes(ndim, contract, batch):
    return tuple(d for d in range(ndim) if d not in contract and d not in batch)


def _check_dims(axes, ndim, side):
    if len(set(axes)) != len(axes) or any(not 0 <= d < ndim for d in axes):
        raise FlamefxTypeError(f"{side} contracting/batch axes {axes} must be distinct axes of a "
                               f"{ndim}-d operand")


def _dot_general_abstract(lhs, rhs, *, dimension_numbers, precision, preferred_element_type):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    _check_dims(lhs_contract + lhs_batch, lhs.ndim, "lhs")
    _check_dims(rhs_contract + rhs_batch, rhs.ndim, "rhs")
    if len(lhs_contract) != len(rhs_contract) or len(lhs_batch) != len(rhs_batch):
        raise FlamefxTypeError(f"dimension_numbers {dimension_numbers} pair unequal numbers of "
                               f"lhs and rhs axes")
    for kind, lhs_axes, rhs_axes in (("contracting", lhs_contract, rhs_contract),
                                     ("batch", lhs_batch, rhs_batch)):
        lhs_sizes = tuple(lhs.shape[d] for d in lhs_axes)
        rhs_sizes = tuple(rhs.shape[d] for d in rhs_axes)
        if lhs_sizes != rhs_sizes:
            raise FlamefxTypeError(f"{kind} axes differ in size: lhs {lhs_axes} -> {lhs_sizes}, "
                                   f"rhs {rhs_axes} -> {rhs_sizes} (shapes {lhs.shape} and "
                                   f"{rhs.shape})")
    if lhs.dtype != rhs.dtype:
        raise FlamefxTypeError(f"operands must have one dtype (flamefx.numpy promotes), got "
                               f"{lhs.dtype} and {rhs.dtype}")
    if precision is not None and precision not in PRECISIONS:
        raise FlamefxTypeError(f"precision must be None or one of {PRECISIONS}, got "
                               f"{precision!r}")
    shape = (tuple(lhs.shape[d] for d in lhs_batch)
             + tuple(lhs.shape[d] for d in _free_axes(lhs.ndim, lhs_contract, lhs_batch))
             + tuple(rhs.shape[d] for d in _free_axes(rhs.ndim, rhs_contract, rhs_batch)))
    dtype = lhs.dtype if preferred_element_type is None else preferred_element_type
    weak = lhs.weak_type and rhs.weak_type and preferred_element_type is None
    return [core.ShapedArray(shape, dtype, weak)]


def as_batched_matmul(xp, lhs, rhs, dimension_numbers):
    """Transposes and reshapes operands to (batch, m, k) and (batch, k, n).

    Returns the two 3-d arrays and the output shape (batch + lhs free + rhs free).
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_free = _free_axes(lhs.ndim, lhs_contract, lhs_batch)
    rhs_free = _free_axes(rhs.ndim, rhs_contract, rhs_batch)

    def size(x, axes):
        return int(np.prod([x.shape[d] for d in axes], dtype=np.int64))

    batch, m, k, n = (size(lhs, lhs_batch), size(lhs, lhs_free), size(lhs, lhs_contract),
                      size(rhs, rhs_free))
    a = xp.transpose(lhs, lhs_batch + lhs_free + lhs_contract).reshape(batch, m, k)
    b = xp.transpose(rhs, rhs_batch + rhs_contract + rhs_free).reshape(batch, k, n)
    out_shape = (tuple(lhs.shape[d] for d in lhs_batch) + tuple(lhs.shape[d] for d in lhs_free)
                 + tuple(rhs.shape[d] for d in rhs_free))
    return a, b, out_shape


def _out_dtype(lhs, preferred_element_type):
    return np.dtype(lhs.dtype if preferred_element_type is None else preferred_element_type)


def _dot_general_impl(lhs, rhs, *, dimension_numbers, precision, preferred_element_type):
    a, b, out_shape = as_batched_matmul(np, lhs, rhs, dimension_numbers)
    out_dtype = _out_dtype(lhs, preferred_element_type)
    if dtypes.is_float(out_dtype) or dtypes.is_float(lhs.dtype):
        # Half types accumulate in float32, as cuBLAS does on the GPU.
        compute = np.float64 if np.dtype(np.float64) in (lhs.dtype, out_dtype) else np.float32
        a, b = a.astype(compute), b.astype(compute)
    elif lhs.dtype == np.bool_:
        a, b = a.astype(np.int32), b.astype(np.int32)
    out = np.matmul(a, b)
    if lhs.dtype == np.bool_ and out_dtype == np.bool_:
        out = out != 0
    return [out.reshape(out_shape).astype(out_dtype)]


def _dot_general_cuda(lhs, rhs, *, dimension_numbers, precision, preferred_element_type):
    from flamefx import devices
    cp = devices.cupy()
    a, b, out_shape = as_batched_matmul(cp, lhs, rhs, dimension_numbers)
    out_dtype = _out_dtype(lhs, preferred_element_type)
    if dtypes.is_complex(lhs.dtype):  # CuPy's matmul (cuBLAS's complex gemm), unplanned
        return [cp.matmul(a, b).astype(out_dtype, copy=False).reshape(out_shape)]
    out = cp.empty(a.shape[:2] + b.shape[2:], out_dtype)
    cublas.gemm_into(out, a, b, precision=_resolved(precision))
    return [out.reshape(out_shape)]


def _resolved(precision):
    return config.read("default_matmul_precision") if precision is None else precision


# --- VJP: each operand's cotangent is another dot_general (then a transpose) -----------------


def _ranges_like(*sizes):
    start = 0
    for n in sizes:
        yield tuple(range(start, start + n))
        start += n


def _lhs_cotangent(ct, lhs, rhs, dimension_numbers, precision, swap_ans=False):
    """The cotangent of ``lhs``: contract ct with rhs over rhs's free axes, then transpose.

    ``swap_ans``: the free axes of ``lhs`` come *after* those of ``rhs`` in ct (used when
    this computes the rhs cotangent with the operands swapped).
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_kept = _free_axes(lhs.ndim, lhs_contract, lhs_batch)
    rhs_kept = _free_axes(rhs.ndim, rhs_contract, rhs_batch)
    if swap_ans:
        ans_batch, ans_rhs, _ = _ranges_like(len(lhs_batch), len(rhs_kept), len(lhs_kept))
    else:
        ans_batch, _, ans_rhs = _ranges_like(len(lhs_batch), len(lhs_kept), len(rhs_kept))
    dims = ((ans_rhs, rhs_kept), (ans_batch, tuple(rhs_batch)))
    lhs_contract_sorted_by_rhs = tuple(np.take(lhs_contract, np.argsort(rhs_contract)))
    out_axes = tuple(int(i) for i in np.argsort(tuple(lhs_batch) + lhs_kept
                                                + lhs_contract_sorted_by_rhs))
    from flamefx.primitives import structural
    if ct.dtype != rhs.dtype:
        ct = _elementwise().convert_element_type(ct, rhs.dtype)
    product = dot_general(ct, rhs, dims, precision=precision)
    return structural.transpose(product, out_axes)


def _elementwise():
    from flamefx.primitives import elementwise
    return elementwise


def _swapped(dimension_numbers):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    return ((rhs_contract, lhs_contract), (rhs_batch, lhs_batch))


def _dot_general_vjp(cts, primals, outs, *, dimension_numbers, precision,
                     preferred_element_type):
    lhs, rhs = primals
    ct = cts[0]
    if ct is None or not dtypes.is_inexact(lhs.dtype):
        return [None, None]
    ct_lhs = _lhs_cotangent(ct, lhs, rhs, dimension_numbers, precision)
    ct_rhs = _lhs_cotangent(ct, rhs, lhs, _swapped(dimension_numbers), precision, swap_ans=True)
    return [ct_lhs, ct_rhs]


def _dot_general_jvp(primals, tangents, **params):
    lhs, rhs = primals
    out = dot_general_p.bind(lhs, rhs, **params)
    t_lhs, t_rhs = tangents
    terms = []
    if t_lhs is not None:
        terms.append(dot_general_p.bind(t_lhs, rhs, **params))
    if t_rhs is not None:
        terms.append(dot_general_p.bind(lhs, t_rhs, **params))
    tangent = terms[0] if len(terms) == 1 else _elementwise().add(*terms)
    return [out], [tangent]


# --- batching: the vmapped axis becomes a batch axis or a free axis -------------------------


def _shift(axes):
    return tuple(d + 1 for d in axes)


def _dot_general_batch(axis_size, args, bdims, *, dimension_numbers, **params):
    from flamefx.transforms import batching
    lhs, rhs = args
    lhs_bdim, rhs_bdim = bdims
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if lhs_bdim is not None:
        lhs = batching.move_axis(lhs, lhs_bdim, 0)
        lhs_contract, lhs_batch = _shift(lhs_contract), _shift(lhs_batch)
    if rhs_bdim is not None:
        rhs = batching.move_axis(rhs, rhs_bdim, 0)
        rhs_contract, rhs_batch = _shift(rhs_contract), _shift(rhs_batch)
    if lhs_bdim is not None and rhs_bdim is not None:
        dims = ((lhs_contract, rhs_contract), ((0,) + lhs_batch, (0,) + rhs_batch))
        return [dot_general_p.bind(lhs, rhs, dimension_numbers=dims, **params)], [0]
    dims = ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))
    out = dot_general_p.bind(lhs, rhs, dimension_numbers=dims, **params)
    if lhs_bdim is not None:
        # Axis 0 of lhs is its first free axis: right after the batch axes in the output.
        return [out], [len(lhs_batch)]
    lhs_free = _free_axes(core.get_aval(lhs).ndim, lhs_contract, lhs_batch)
    return [out], [len(lhs_batch) + len(lhs_free)]


dot_general_p = Primitive(
    "dot_general",
    abstract_eval=_dot_general_abstract,
    impl=_dot_general_impl,
    cuda_impl=_dot_general_cuda,
    vjp=_dot_general_vjp,
    jvp=_dot_general_jvp,
    batch=_dot_general_batch,
)


def _normalize_dimension_numbers(dimension_numbers):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    return tuple(tuple(tuple(int(d) for d in axes) for axes in pair)
                 for pair in ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch)))


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """General tensor contraction (JAX's ``lax.dot_general``).

    ``precision``: None (the ``default_matmul_precision`` option) | 'highest' | 'tf32' |
    'bf16' — how float32 GPU products may trade accuracy for speed (the NumPy reference
    always computes at full precision).
    ``preferred_element_type``: the output dtype (e.g. float32 for bfloat16 operands).

    >>> dot_general(np.ones((5, 2, 3)), np.ones((5, 3)), (((2,), (1,)), ((0,), (0,)))).shape
    (5, 2)
    """
    if preferred_element_type is not None:
        preferred_element_type = dtypes.canonicalize(preferred_element_type)
    return dot_general_p.bind(lhs, rhs,
                              dimension_numbers=_normalize_dimension_numbers(dimension_numbers),
                              precision=precision, preferred_element_type=preferred_element_type)
