"""Complex-number primitives: real, imag, conj, and complex (two reals into one complex).

Their derivative rules are JAX's. JAX's cotangents are transposes under the bilinear pairing
``<a, b> = Re(a * b)``, not adjoints, so: real's VJP maps a real cotangent ``c`` to ``c + 0j``,
imag's to ``-1j * c``, conj's to ``conj(c)``, and complex's splits ``c`` into
``(Re c, -Im c)``. None of them fuses: on the GPU each runs one CuPy call.

>>> import numpy as np
>>> z = complex_(np.float32(1.0), np.float32(2.0))
>>> (real(z).item(), imag(z).item(), conj(z).item())
(1.0, 2.0, (1-2j))
"""

from __future__ import annotations

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.primitives import elementwise as ew


def _require_complex(x, who):
    if not dtypes.is_complex(x.dtype):
        raise FlamefxTypeError(f"{who} needs a complex operand (complex64 or complex128), got "
                               f"{x.dtype}")


def _part_rule(who):
    def abstract_eval(x):
        _require_complex(x, who)
        return [ShapedArray(x.shape, dtypes.real_dtype(x.dtype), x.weak_type)]
    return abstract_eval


def _conj_rule(x):
    _require_complex(x, "conj")
    return [x]


def _complex_rule(x, y):
    for aval in (x, y):
        if aval.dtype not in (dtypes.float32, dtypes.float64):
            raise FlamefxTypeError(f"complex needs float32 or float64 parts, got {aval.dtype}")
    if x.shape != y.shape or x.dtype != y.dtype:
        raise FlamefxTypeError(f"complex needs parts of one shape and dtype, got "
                               f"{x.str_short()} and {y.str_short()}")
    return [ShapedArray(x.shape, dtypes.complex_dtype(x.dtype), x.weak_type and y.weak_type)]


def _numpy_complex(x, y):
    # Written part by part: x + 1j * y would turn an infinite y into NaN + inf j.
    out = np.empty(x.shape, dtypes.complex_dtype(x.dtype))
    out.real, out.imag = x, y
    return out


def _cuda_complex(x, y):
    cp = devices.cupy()
    out = cp.empty(x.shape, dtypes.complex_dtype(x.dtype))
    out.real[...] = x
    out.imag[...] = y
    return [out]


def _cuda_part(part):
    def cuda_impl(x):
        cp = devices.cupy()
        return [cp.ascontiguousarray(part(cp, x))]
    return cuda_impl


def _as_complex(ct, like):
    return ew.convert_element_type(ct, core.get_aval(like).dtype)


def _real_vjp(cts, primals, outs):
    return [None if cts[0] is None else _as_complex(cts[0], primals[0])]


def _imag_vjp(cts, primals, outs):
    ct = cts[0]
    if ct is None:
        return [None]
    return [complex_(ew.full_like(ct, 0), ew.neg(ct))]


def _conj_vjp(cts, primals, outs):
    return [None if cts[0] is None else conj(cts[0])]


def _complex_vjp(cts, primals, outs):
    ct = cts[0]
    if ct is None:
        return [None, None]
    return [real(ct), ew.neg(imag(ct))]


def _linear_jvp(fn):
    def jvp(primals, tangents):
        t = tangents[0]
        return [fn(primals[0])], [None if t is None else fn(t)]
    return jvp


def _complex_jvp(primals, tangents):
    x, y = primals
    tx, ty = tangents
    out = complex_(x, y)
    if tx is None and ty is None:
        return [out], [None]
    tx = ew.full_like(x, 0) if tx is None else tx
    ty = ew.full_like(y, 0) if ty is None else ty
    return [out], [complex_(tx, ty)]


real_p = ew.declare_elementwise(
    "real", _part_rule("real"), lambda x: np.real(x).copy(),
    cuda_impl=_cuda_part(lambda cp, x: cp.real(x)), vjp=_real_vjp,
    jvp=_linear_jvp(lambda t: real(t)))
imag_p = ew.declare_elementwise(
    "imag", _part_rule("imag"), lambda x: np.imag(x).copy(),
    cuda_impl=_cuda_part(lambda cp, x: cp.imag(x)), vjp=_imag_vjp,
    jvp=_linear_jvp(lambda t: imag(t)))
conj_p = ew.declare_elementwise(
    "conj", _conj_rule, np.conj, cuda_impl=_cuda_part(lambda cp, x: cp.conj(x)),
    vjp=_conj_vjp, jvp=_linear_jvp(lambda t: conj(t)))
complex_p = ew.declare_elementwise("complex", _complex_rule, _numpy_complex,
                                   cuda_impl=_cuda_complex, vjp=_complex_vjp, jvp=_complex_jvp)


def real(x):
    """The real part of a complex array (float32 for complex64).

    >>> real(np.complex64(1 + 2j)).item()
    1.0
    """
    return real_p.bind(x)


def imag(x):
    """The imaginary part of a complex array.

    >>> imag(np.complex64(1 + 2j)).item()
    2.0
    """
    return imag_p.bind(x)


def conj(x):
    """The complex conjugate of a complex array.

    >>> conj(np.complex64(1 + 2j)).item()
    (1-2j)
    """
    return conj_p.bind(x)


def complex_(x, y):
    """``x + 1j * y`` from float32 (float64) parts: complex64 (complex128). ``lax.complex``.

    >>> complex_(np.float32(1.0), np.float32(-1.0)).item()
    (1-1j)
    """
    return complex_p.bind(x, y)
