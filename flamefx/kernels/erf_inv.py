"""erf_inv in float32 as XLA computes it on the CPU, bit for bit: NumPy, and CUDA source.

JAX draws ``random.normal`` as ``sqrt(2) * erf_inv(u)``; to give JAX's normals from JAX's
uniforms, float32 ``erf_inv`` must round exactly as XLA's compiled code does. XLA lowers
``erf_inv`` (StableHLO's chlo decomposition, XLA's ``ErfInv32``) to Giles' polynomial in
``w = -log1p(-x * x)``; its CPU backend computes ``log1p`` with the Cephes rational function
near 0 and ``log(1 + x)`` elsewhere, ``log`` with Eigen's Cephes polynomial, and LLVM fuses
every ``a * b + c`` it can into one FMA (XLA CPU contracts floating-point ops). The code
below repeats those operations in the same order, with the same float32 constants, fusing
where the compiled kernel fuses (read off jaxlib 0.10.2's x86-64 code for
``jax.random.normal``).

An FMA rounds once. NumPy has none: ``_fma`` (flamefx/kernels/fma.py) computes ``a * b + c``
in float64 (the product of two float32 is exact there), rounds to float32, and settles the
lanes where that second rounding is wrong. XLA's CPU runtime also flushes subnormal inputs
and results to zero; so does this code. The CUDA source computes the same (XLA's GPU
backend has its own log, so JAX's GPU draws may differ from its CPU draws).

Other dtypes: float64 keeps SciPy's ``erfinv`` (XLA's float64 path is another polynomial
with float64 FMAs, not repeated here); float16/bfloat16 are computed in float32 by the
caller, as XLA does.

>>> import numpy as np
>>> erf_inv(np.array([0.0, 0.5, -0.999], np.float32))
array([ 0.        ,  0.47693628, -2.3267577 ], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import scipy.special

from flamefx.kernels.fma import fma_float32_normal as _fma

_F32, _F64 = np.float32, np.float64

# Elements per block: a block's temporaries stay in the L2 cache, and blocks are few enough
# that NumPy's per-call overhead stays small (1e6 floats: 8192 -> 80 ms, 65536 -> 41 ms).
BLOCK = 65536


def _bits(word: int) -> np.float32:
    return np.array(word, np.uint32).view(_F32)[()]


# Eigen's plog_impl_float (Cephes' logf) as XLA's CPU backend inlines it for llvm.log.f32.
_LOG_P = [_bits(w) for w in (0x3D9021BB, 0xBDEBD1B8, 0x3DEF251A, 0xBDFE5D4F, 0x3E11E9BF,
                             0xBE2AAE50, 0x3E4CCEAC, 0xBE7FFFFC, 0x3EAAAAAA)]
_LOG_Q1, _LOG_Q2 = _bits(0xB95E8083), _bits(0x3F318000)  # log(2) = Q2 + Q1, split
_SQRT_HALF = _bits(0x3F3504F3)
_MIN_NORMAL = np.finfo(_F32).tiny

# XLA's log1p (xla/codegen/intrinsic/log1p.cc): x + (-x^2/2 + x^3 N(x)/D(x)) for
# |x| < sqrt(2) - 1, the coefficients rounded to float32.
_LOG1P_NUM = [_F32(c) for c in (4.5270000862445199635215e-5, 4.9854102823193375972212e-1,
                                6.5787325942061044846969e0, 2.9911919328553073277375e1,
                                6.0949667980987787057556e1, 5.7112963590585538103336e1,
                                2.0039553499201281259648e1)]
_LOG1P_DEN = [_F32(c) for c in (1.0, 1.5062909083469192043167e1, 8.3047565967967209469434e1,
                                2.2176239823732856465394e2, 3.0909872225312059774938e2,
                                2.1642788614495947685003e2, 6.0118660497603843919306e1)]
_LOG1P_SMALL = _F32(0.41421356237309504880)

# Giles' erfinv polynomials (XLA's ErfInv32), for w < 5 and w >= 5.
_ERFINV_LT5 = [_F32(c) for c in (2.81022636e-08, 3.43273939e-07, -3.5233877e-06,
                                 -4.39150654e-06, 0.00021858087, -0.00125372503,
                                 -0.00417768164, 0.246640727, 1.50140941)]
_ERFINV_GE5 = [_F32(c) for c in (-0.000200214257, 0.000100950558, 0.00134934322,
                                 -0.00367342844, 0.00573950773, -0.0076224613,
                                 0.00943887047, 1.00167406, 2.83297682)]

def _log(v: np.ndarray) -> np.ndarray:
    """XLA CPU's float32 log: Eigen's range reduction to [sqrt(1/2), sqrt(2)), Cephes'
    polynomial, the FMAs LLVM forms."""
    bits = np.maximum(v, _MIN_NORMAL).view(np.int32)  # np.maximum: NaN -> NaN, masked below
    e = ((bits >> 23) - 127).astype(_F32) + _F32(1)
    m = ((bits & np.int32(-0x7F800001)) | np.int32(0x3F000000)).view(_F32)  # in [0.5, 1)
    below = m < _SQRT_HALF
    x = (m - _F32(1)) + np.where(below, m, _F32(0))
    e = np.where(below, e - _F32(1), e)
    x2 = x * x
    x3 = x2 * x
    x_, x3_ = x.astype(_F64), x3.astype(_F64)
    p = _LOG_P
    y = _fma(_fma(x, p[0], p[1]), x_, p[2])
    y1 = _fma(_fma(x, p[3], p[4]), x_, p[5])
    y2 = _fma(_fma(x, p[6], p[7]), x_, p[8])
    y = _fma(_fma(y, x3_, y1), x3_, y2)
    y = _fma(y, x3_, e * _LOG_Q1)
    out = _fma(e, _LOG_Q2, _fma(x2, _F32(-0.5), x) + y)
    out[v == 0] = -np.inf
    out[v == np.inf] = np.inf
    out[~(v > 0) & (v != 0)] = np.nan  # negative or NaN
    return out


def _horner(x: np.ndarray, coefficients) -> np.ndarray:
    acc = _fma(x, coefficients[0], coefficients[1])
    x_ = x.astype(_F64)
    for c in coefficients[2:]:
        acc = _fma(acc, x_, c)
    return acc


def _log1p_small(x: np.ndarray) -> np.ndarray:
    # XLA's polynomials start from 0 * x + c0: c0 here, where x is finite.
    x2 = x * x
    ratio = _horner(x, _LOG1P_NUM) / _horner(x, _LOG1P_DEN)
    return x + _fma(x2, _F32(-0.5), (x * x2) * ratio)


def _log1p(x: np.ndarray) -> np.ndarray:
    """XLA's float32 log1p: a rational function near 0, ``log(1 + x)`` elsewhere (each
    computed only where it is used)."""
    small = np.abs(x) < _LOG1P_SMALL
    if small.all():
        return _log1p_small(x)
    if not small.any():
        return _log(x + _F32(1))
    out = np.empty_like(x)
    i, j = np.flatnonzero(small), np.flatnonzero(~small)
    out[i] = _log1p_small(x[i])
    out[j] = _log(x[j] + _F32(1))
    return out


def _erf_inv_block(x: np.ndarray) -> np.ndarray:
    # XLA's CPU runtime reads subnormal floats as zero (denormals-are-zero): +-0 out.
    x = np.where(np.abs(x) < _MIN_NORMAL, x * _F32(0), x)
    w = -_log1p(x * -x)
    central = w < _F32(5)
    p = np.empty_like(x)
    i, j = np.flatnonzero(central), np.flatnonzero(~central)
    p[i] = _horner(w[i] - _F32(2.5), _ERFINV_LT5)
    p[j] = _horner(np.sqrt(w[j]) - _F32(3), _ERFINV_GE5)
    out = p * x
    ends = np.abs(x) == 1  # the polynomial is indeterminate there: +-inf, as XLA
    out[ends] = x[ends] * _F32(np.inf)
    return np.where(np.abs(out) < _MIN_NORMAL, out * _F32(0), out)  # and flushes to zero


def erf_inv_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """XLA's float32 ``erf_inv`` of ``x`` (float32), bit for bit, block by block.

    >>> import numpy as np
    >>> erf_inv_float32(np.array([0.25], np.float32))
    array([0.22531207], dtype=float32)
    """
    x = np.asarray(x, _F32)
    if out is not None and x.shape != out.shape:  # broadcast into out, as a ufunc would
        x = np.broadcast_to(x, out.shape)
    direct = out is not None and out.flags.c_contiguous  # else: computed, then copied in
    result = out if direct else np.empty(x.shape, _F32)
    flat_x, flat_result = x.reshape(-1), result.reshape(-1)
    with np.errstate(all="ignore"):
        for start in range(0, flat_x.size, BLOCK):
            flat_result[start:start + BLOCK] = _erf_inv_block(flat_x[start:start + BLOCK])
    if out is not None and not direct:
        out[...] = result
    return out if out is not None else result


def erf_inv(x, out=None) -> np.ndarray:
    """The inverse error function as JAX computes it on the CPU: float32 bit for bit
    (:func:`erf_inv_float32`), other float dtypes by SciPy.

    >>> import numpy as np
    >>> float(erf_inv(np.float64(0.5)))
    0.4769362762044699
    """
    x = np.asarray(x)
    if x.dtype == _F32:
        return erf_inv_float32(x, out)
    return scipy.special.erfinv(x, out=out) if out is not None else scipy.special.erfinv(x)


# --- CUDA: the same operations, each rounding spelled out -------------------------------------


def _c(value) -> str:
    """A float32 constant as a C literal that reads back as the same float."""
    return str(np.float32(value)) + "f"


def _c_horner(acc: str, x: str, coefficients, indent: int = 2) -> str:
    """C statements evaluating ``coefficients`` at ``x`` into ``acc`` with one FMA a step."""
    lines = [f"{acc} = {_c(coefficients[0])};"]
    lines += [f"{acc} = __fmaf_rn({acc}, {x}, {_c(c)});" for c in coefficients[1:]]
    return ("\n" + " " * indent).join(lines)


def _cuda_source() -> str:
    p = _LOG_P
    return rf"""
// XLA CPU's float32 log, log1p and erf_inv, bit for bit (flamefx/kernels/erf_inv.py): every
// product and sum is an explicit intrinsic so nvcc fuses exactly where XLA's LLVM fuses.
__device__ __forceinline__ float flamefx_xla_logf(float v) {{
  const float clamped = v > {_c(_MIN_NORMAL)} ? v : {_c(_MIN_NORMAL)};
  const int bits = __float_as_int(clamped);
  float e = __fadd_rn((float)((bits >> 23) - 127), 1.0f);
  const float m = __int_as_float((bits & 0x807fffff) | 0x3f000000);
  const bool below = m < {_c(_SQRT_HALF)};
  const float x = __fadd_rn(__fadd_rn(m, -1.0f), below ? m : 0.0f);
  if (below) e = __fadd_rn(e, -1.0f);
  const float x2 = __fmul_rn(x, x), x3 = __fmul_rn(x2, x);
  float y = __fmaf_rn(__fmaf_rn(x, {_c(p[0])}, {_c(p[1])}), x, {_c(p[2])});
  const float y1 = __fmaf_rn(__fmaf_rn(x, {_c(p[3])}, {_c(p[4])}), x, {_c(p[5])});
  const float y2 = __fmaf_rn(__fmaf_rn(x, {_c(p[6])}, {_c(p[7])}), x, {_c(p[8])});
  y = __fmaf_rn(__fmaf_rn(y, x3, y1), x3, y2);
  y = __fmaf_rn(y, x3, __fmul_rn(e, {_c(_LOG_Q1)}));
  const float out = __fmaf_rn(e, {_c(_LOG_Q2)}, __fadd_rn(__fmaf_rn(-0.5f, x2, x), y));
  if (v == 0.0f) return __int_as_float(0xff800000);
  if (v == __int_as_float(0x7f800000)) return v;
  return v > 0.0f ? out : __int_as_float(0x7fc00000);
}}

__device__ __forceinline__ float flamefx_xla_log1pf(float x) {{
  if (!(fabsf(x) < {_c(_LOG1P_SMALL)})) return flamefx_xla_logf(__fadd_rn(x, 1.0f));
  float num, den;
  {_c_horner("num", "x", _LOG1P_NUM)}
  {_c_horner("den", "x", _LOG1P_DEN)}
  const float x2 = __fmul_rn(x, x);
  const float ratio = __fdiv_rn(num, den);
  return __fadd_rn(x, __fmaf_rn(-0.5f, x2, __fmul_rn(__fmul_rn(x, x2), ratio)));
}}

__device__ __forceinline__ float flamefx_erf_inv(float x) {{
  if (fabsf(x) < {_c(_MIN_NORMAL)}) x = __fmul_rn(x, 0.0f);  // XLA CPU: denormals are zero
  const float w = -flamefx_xla_log1pf(__fmul_rn(x, -x));
  float p, t;
  if (w < 5.0f) {{
    t = __fadd_rn(w, -2.5f);
    {_c_horner("p", "t", _ERFINV_LT5, 4)}
  }} else {{
    t = __fadd_rn(__fsqrt_rn(w), -3.0f);
    {_c_horner("p", "t", _ERFINV_GE5, 4)}
  }}
  if (fabsf(x) == 1.0f) return __fmul_rn(x, __int_as_float(0x7f800000));
  const float out = __fmul_rn(p, x);
  return fabsf(out) < {_c(_MIN_NORMAL)} ? __fmul_rn(out, 0.0f) : out;  // flush to zero
}}

// Other dtypes: CUDA's erfinv (float64, as SciPy on the CPU).
template <typename T> __device__ __forceinline__ T flamefx_erf_inv(T x) {{ return erfinv(x); }}
"""


CUDA_SOURCE = _cuda_source()
