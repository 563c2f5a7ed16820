"""Reduction CUDA kernels (sum, max, min, prod, and, or; argmax/argmin; cumsum) and the
``Reduction`` descriptor jit's fusion generator reads.

float16/bfloat16 accumulate in float32; every other dtype accumulates in its own type.

>>> Reduction("sum").identity(np.dtype("float32"))
'0'
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import devices, dtypes
from flamefx.kernels import cuda_elementwise
from flamefx.kernels.cuda_elementwise import PREAMBLE, compute_ctype, load_expr, store_expr

# reduce_expr combines two partial results ``a`` and ``b`` of the accumulation type. max and
# min propagate NaN (as NumPy and JAX do): a NaN on either side wins.
_COMBINE = {
    "sum": "(a + b)",
    "prod": "(a * b)",
    "max": "((a > b || a != a) ? a : b)",
    "min": "((a < b || a != a) ? a : b)",
    "and": "(a && b)",
    "or": "(a || b)",
}

_FLOAT_INF = {"float": "__int_as_float(0x7f800000)",
              "double": "__longlong_as_double(0x7ff0000000000000LL)"}


class Reduction:
    """How jit fuses a closing reduction: ``kind`` in sum | prod | max | min | and | or.

    Contract for the fusion generator: accumulate in ``accumulator_ctype(dtype)``; start
    from ``identity(dtype)`` (a C expression); combine partials ``a`` and ``b`` with
    ``combine`` (a C expression); store with ``cuda_elementwise.store_expr``. The reduced
    axes are the primitive's ``axes`` param.
    """

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    @property
    def combine(self) -> str:
        return _COMBINE[self.kind]

    def identity(self, dtype) -> str:
        dtype = np.dtype(dtype)
        acc = accumulator_ctype(dtype)
        if self.kind in ("sum", "or"):
            return "0"
        if self.kind in ("prod", "and"):
            return "1"
        if dtype == dtypes.bool_:
            return "false" if self.kind == "max" else "true"
        if dtypes.is_float(dtype):
            return f"(-{_FLOAT_INF[acc]})" if self.kind == "max" else _FLOAT_INF[acc]
        info = np.iinfo(dtype)
        suffix = "ull" if info.min == 0 else "ll"
        if self.kind == "max":
            return f"(({acc})0)" if info.min == 0 else f"(({acc})({info.min + 1}ll - 1))"
        return f"(({acc}){info.max}{suffix})"

    def __repr__(self):
        return f"Reduction({self.kind!r})"


def accumulator_ctype(dtype) -> str:
    return compute_ctype(dtype)


@functools.cache
def _reduction_kernel(kind: str, in_dtype: np.dtype, out_dtype: np.dtype):
    cp = devices.cupy()
    reduction = Reduction(kind)
    acc = accumulator_ctype(in_dtype)
    return cp.ReductionKernel(
        f"{_param(in_dtype)} x_raw", f"{_param(out_dtype)} y_raw",
        load_expr(in_dtype, "x_raw"), reduction.combine,
        f"y_raw = {store_expr(out_dtype, 'a')}", reduction.identity(in_dtype),
        f"flamefx_reduce_{kind}", reduce_type=acc, preamble=PREAMBLE)


def _param(dtype) -> str:
    name = np.dtype(dtype).name
    return "uint16" if name == "bfloat16" else name


def reduce(kind: str, x, axes: tuple):
    """Reduces CuPy ``x`` over ``axes`` with ``kind``; the output keeps ``x``'s dtype."""
    if not axes:
        return x.copy()
    kernel = _reduction_kernel(kind, np.dtype(x.dtype), np.dtype(x.dtype))
    out = kernel(cuda_elementwise.raw_view(x), axis=tuple(axes))
    return cuda_elementwise.from_raw(out, x.dtype)


_ARG_SOURCE = r"""
extern "C" __global__ void flamefx_arg{kind}(const {ctype}* x, {index_ctype}* out,
                                             long long n, long long rows) {{
  // x is laid out (n, rows): thread r walks column r, so neighbouring threads read
  // neighbouring addresses. The first NaN wins, then the first extreme value.
  long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  {ctype} best = x[r];
  long long best_at = 0;
  for (long long j = 1; j < n && best == best; ++j) {{
    {ctype} v = x[j * rows + r];
    if (v != v || v {op} best) {{ best = v; best_at = j; }}
  }}
  out[r] = ({index_ctype})best_at;
}}
"""


@functools.cache
def _arg_kernel(kind: str, dtype: np.dtype, index_dtype: np.dtype):
    cp = devices.cupy()
    source = _ARG_SOURCE.format(kind=kind, ctype=compute_ctype(dtype),
                                index_ctype=compute_ctype(index_dtype),
                                op=">" if kind == "max" else "<")
    return cp.RawKernel(source, f"flamefx_arg{kind}")


def arg_reduce(kind: str, x, axis: int, index_dtype):
    """argmax/argmin of CuPy ``x`` along ``axis`` (NaN-aware, first occurrence wins)."""
    cp = devices.cupy()
    if x.dtype in (dtypes.float16, dtypes.bfloat16):
        x = cuda_elementwise.convert(x, dtypes.float32)
    n = x.shape[axis]
    columns = cp.ascontiguousarray(cp.moveaxis(x, axis, 0))
    out_shape = x.shape[:axis] + x.shape[axis + 1:]
    out = cp.empty(out_shape, dtype=index_dtype)
    rows = out.size
    if rows:
        threads = 256
        kernel = _arg_kernel(kind, np.dtype(x.dtype), np.dtype(index_dtype))
        kernel(((rows + threads - 1) // threads,), (threads,),
               (columns, out, np.int64(n), np.int64(rows)))
    return out


def cumsum(x, axis: int, reverse: bool):
    """Inclusive prefix sum of CuPy ``x`` along ``axis``; half types accumulate in float32."""
    cp = devices.cupy()
    dtype = x.dtype
    work = cuda_elementwise.convert(x, dtypes.float32) if dtype in (
        dtypes.float16, dtypes.bfloat16) else x
    if reverse:
        work = cp.flip(work, axis)
    out = cp.cumsum(work, axis=axis, dtype=work.dtype)
    if reverse:
        out = cp.flip(out, axis)
    return cuda_elementwise.convert(cp.ascontiguousarray(out), dtype)
