"""Elementwise CUDA kernels, and the ``Elementwise`` descriptor jit's fusion generator reads.

Every elementwise primitive carries ``fusion=Elementwise(c_expr)``. Eager calls launch a
CuPy ElementwiseKernel built from that expression (one kernel per primitive and dtypes,
cached); jit splices the same expressions into one generated kernel per fused chain.

>>> Elementwise("exp(x0)").render((np.dtype("float32"),))
'exp(x0)'
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from flamefx import devices, dtypes
from flamefx.kernels.cuda_scalar import HALF_CONVERSIONS
from flamefx.kernels.erf_inv import CUDA_SOURCE as ERF_INV_SOURCE

# Helpers every generated kernel includes. bfloat16 travels as raw uint16 bits: CuPy only
# gained a bfloat16 type recently, and bit conversion keeps kernels independent of that.
# flamefx_erf_inv is XLA's float32 erf_inv, bit for bit (JAX's random.normal).
PREAMBLE = HALF_CONVERSIONS + ERF_INV_SOURCE + r"""
template <typename T> __device__ __forceinline__ T flamefx_ipow(T x, int n) {
  if (n < 0) { x = T(1) / x; n = -n; }
  T acc = T(1);
  while (n) {
    if (n & 1) acc *= x;
    n >>= 1;
    if (n) x *= x;
  }
  return acc;
}
"""

_COMPUTE_CTYPE = {
    "bool": "bool", "int8": "signed char", "int16": "short", "int32": "int",
    "int64": "long long", "uint8": "unsigned char", "uint16": "unsigned short",
    "uint32": "unsigned int", "uint64": "unsigned long long",
    "float16": "float", "bfloat16": "float", "float32": "float", "float64": "double",
}


def compute_ctype(dtype) -> str:
    """The C type an expression computes in for ``dtype`` (float for the half types)."""
    return _COMPUTE_CTYPE[np.dtype(dtype).name]


def load_expr(dtype, raw: str) -> str:
    """C code reading the stored element ``raw`` as ``compute_ctype(dtype)`` (bfloat16 as its
    raw bits, float16 as CuPy's half)."""
    name = np.dtype(dtype).name
    if name == "bfloat16":
        return f"flamefx_bf16_load({raw})"
    if name == "float16":
        return f"((float)({raw}))"
    return raw


def store_expr(dtype, value: str) -> str:
    """C code turning a computed ``value`` into a stored element of ``dtype``."""
    name = np.dtype(dtype).name
    if name == "bfloat16":
        return f"flamefx_bf16_store((float)({value}))"
    if name == "float16":
        return f"((float16)((float)({value})))"
    return f"(({_COMPUTE_CTYPE[name]})({value}))"


class Elementwise:
    """How jit fuses an elementwise primitive: a C expression over its operands.

    Contract for the fusion generator:
      * ``render(in_dtypes, **params)`` returns a C/C++ expression (a string) over the
        operand names ``x0``, ``x1``, ``x2``, ... in operand order; the primitive's params
        are already substituted.
      * Each ``x<i>`` must be a local of type ``compute_ctype(in_dtypes[i])``: ``float`` for
        float16, bfloat16 and float32, ``double`` for float64, the C integer type for ints,
        ``bool`` for bool. Read stored elements with ``load_expr`` (bfloat16 is raw uint16).
      * The expression's value is converted to the output dtype with ``store_expr``.
      * Math uses CUDA's overloaded C++ names (``exp``, ``log1p``, ``erfinv``...), valid for
        float and double alike; some expressions call the helpers in ``PREAMBLE``
        (``flamefx_ipow``), so a generated kernel must include ``PREAMBLE`` once.
      * ``int_expr`` / ``bool_expr`` replace ``expr`` when the LAST operand is an integer or
        bool (C semantics differ, e.g. ``~`` vs ``!``); the last operand is a data operand
        for every primitive (select_n's predicate comes first).
    ``expr`` may be a format string (``"flamefx_ipow(x0, {y})"``) or a callable
    ``(n_operands, **params) -> str`` for variadic primitives such as select_n.
    """

    __slots__ = ("bool_expr", "expr", "int_expr")

    def __init__(self, expr: str | Callable, int_expr: str | None = None,
                 bool_expr: str | None = None):
        self.expr = expr
        self.int_expr = int_expr
        self.bool_expr = bool_expr

    def render(self, in_dtypes, **params) -> str:
        last = np.dtype(in_dtypes[-1])
        expr = self.expr
        if last == dtypes.bool_ and self.bool_expr is not None:
            expr = self.bool_expr
        elif (dtypes.is_int(last) or last == dtypes.bool_) and self.int_expr is not None:
            expr = self.int_expr
        if callable(expr):
            return expr(len(in_dtypes), **params)
        return expr.format(**params) if params else expr

    def __repr__(self):
        return f"Elementwise({self.expr!r})"


def _param_dtype_name(dtype) -> str:
    """The dtype name CuPy's kernel signature uses for a stored element."""
    name = np.dtype(dtype).name
    return "uint16" if name == "bfloat16" else name


@functools.cache
def _elementwise_kernel(name: str, expr: str, in_dtypes: tuple, out_dtype: np.dtype):
    cp = devices.cupy()
    in_params = ", ".join(f"{_param_dtype_name(d)} x{i}_raw" for i, d in enumerate(in_dtypes))
    loads = "".join(f"const {compute_ctype(d)} x{i} = {load_expr(d, f'x{i}_raw')};\n"
                    for i, d in enumerate(in_dtypes))
    body = f"{loads}y_raw = {store_expr(out_dtype, expr)};"
    return cp.ElementwiseKernel(in_params, f"{_param_dtype_name(out_dtype)} y_raw", body,
                                name, preamble=PREAMBLE)


def raw_view(x):
    """A CuPy array as its kernels see it: bfloat16 buffers as uint16 bits."""
    return x.view(np.uint16) if x.dtype == dtypes.bfloat16 else x


def from_raw(raw, dtype):
    """The inverse of ``raw_view`` for an output buffer of ``dtype``."""
    return raw.view(dtypes.bfloat16) if np.dtype(dtype) == dtypes.bfloat16 else raw


def empty_raw(shape, dtype):
    cp = devices.cupy()
    return cp.empty(shape, dtype=np.uint16 if np.dtype(dtype) == dtypes.bfloat16 else dtype)


def launch(name: str, fusion: Elementwise, arrays, out_dtype, **params):
    """Runs ``fusion``'s expression over same-shape CuPy ``arrays``; returns the output.

    >>> launch("exp", Elementwise("exp(x0)"), [cupy_x], cupy_x.dtype)   # doctest: +SKIP
    """
    in_dtypes = tuple(np.dtype(a.dtype) for a in arrays)
    out_dtype = np.dtype(out_dtype)
    kernel = _elementwise_kernel(f"flamefx_{name}", fusion.render(in_dtypes, **params),
                                 in_dtypes, out_dtype)
    out = empty_raw(arrays[0].shape, out_dtype)
    kernel(*[raw_view(a) for a in arrays], out)
    return from_raw(out, out_dtype)


_IDENTITY = Elementwise("x0")


def convert(x, dtype):
    """``x`` (CuPy) converted to ``dtype`` on the GPU, bfloat16 and complex included (complex to
    real keeps the real part, as JAX; complex to bool tests for nonzero)."""
    dtype = np.dtype(dtype)
    if np.dtype(x.dtype) == dtype:
        return x
    if dtypes.is_complex(dtype):
        if x.dtype == dtypes.bfloat16:
            x = launch("convert", _IDENTITY, [x], dtypes.float32)
        return x.astype(dtype)
    if dtypes.is_complex(x.dtype):
        if dtype == dtypes.bool_:
            return x != 0
        real = devices.cupy().asarray(x.real, order="C")  # 0-d stays 0-d
        return convert(real, dtype)
    return launch("convert", _IDENTITY, [x], dtype)


def _select_n(cp, which, *cases):
    # Nested from the last case inward, clamping out-of-range selectors (as _select_n_expr).
    out = cases[-1]
    for case in range(len(cases) - 2, -1, -1):
        out = cp.where(which <= case, cases[case], out)
    return out


def _complex_sign(cp, x):
    magnitude = cp.abs(x)
    return cp.where(magnitude == 0, 0, x / cp.where(magnitude == 0, 1, magnitude)).astype(x.dtype)


# CuPy's ufuncs take complex64/complex128 (cupy/complex.cuh's complex<float/double>); each entry
# maps an elementwise primitive's name to its CuPy computation.
_COMPLEX_OPS = {
    "neg": lambda cp, x: cp.negative(x),
    "exp": lambda cp, x: cp.exp(x),
    "log": lambda cp, x: cp.log(x),
    "log1p": lambda cp, x: cp.log1p(x),
    "expm1": lambda cp, x: cp.expm1(x),
    "asin": lambda cp, x: cp.arcsin(x),
    "acos": lambda cp, x: cp.arccos(x),
    "atan": lambda cp, x: cp.arctan(x),
    "asinh": lambda cp, x: cp.arcsinh(x),
    "acosh": lambda cp, x: cp.arccosh(x),
    "atanh": lambda cp, x: cp.arctanh(x),
    "sin": lambda cp, x: cp.sin(x),
    "cos": lambda cp, x: cp.cos(x),
    "tan": lambda cp, x: cp.tan(x),
    "sinh": lambda cp, x: cp.sinh(x),
    "cosh": lambda cp, x: cp.cosh(x),
    "tanh": lambda cp, x: cp.tanh(x),
    "logistic": lambda cp, x: 1 / (1 + cp.exp(-x)),
    "sqrt": lambda cp, x: cp.sqrt(x),
    "rsqrt": lambda cp, x: 1 / cp.sqrt(x),
    "abs": lambda cp, x: cp.abs(x),
    "sign": _complex_sign,
    "square": lambda cp, x: x * x,
    "integer_pow": lambda cp, x, *, y: cp.power(x, y),
    "add": lambda cp, x, y: x + y,
    "sub": lambda cp, x, y: x - y,
    "mul": lambda cp, x, y: x * y,
    "div": lambda cp, x, y: x / y,
    "pow": lambda cp, x, y: cp.power(x, y),
    "eq": lambda cp, x, y: x == y,
    "ne": lambda cp, x, y: x != y,
    "select_n": _select_n,
}


def launch_complex(name: str, arrays, **params):
    """An elementwise primitive on complex CuPy ``arrays``, through CuPy's own ufuncs (one
    unfused launch or a few; jit does not fuse complex equations).

    >>> launch_complex("mul", [cupy_z, cupy_z])   # doctest: +SKIP
    """
    if name not in _COMPLEX_OPS:
        raise NotImplementedError(f"{name} has no complex GPU implementation")
    out = _COMPLEX_OPS[name](devices.cupy(), *arrays, **params)
    return devices.cupy().asarray(out, order="C")  # 0-d stays 0-d (ascontiguousarray: 1-d)
