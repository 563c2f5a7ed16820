"""Special-function primitives: lgamma, digamma, polygamma, igamma/igammac, igamma_grad_a,
bessel_i0e/i1e, erfc, betainc, zeta (lax's names and operand orders), and ndtri, erfcx,
exp1, expi (lax has none: JAX composes them; primitives here take CuPy's and SciPy's
tuned kernels).

They reuse the elementwise family's rules (shape rule, NumPy impl wrapper, partials giving
both JVP and VJP, batching). Where CUDA's math library has the function (lgamma, erfc) the
primitive is an ordinary fusible elementwise op; the others run CuPy's
``cupyx.scipy.special`` ufuncs (Cephes ports) as opaque steps. The CPU reference is
``scipy.special``.

Derivatives are the published ones, written in flamefx ops so they trace to any order.
Operands that JAX does not differentiate (polygamma's ``m``, betainc's ``a`` and ``b``,
zeta's ``x``) get zero derivatives here: JAX raises instead. igamma's derivative in ``a``
(igamma_grad_a) has no closed form: it is a finite difference of SciPy's/CuPy's gammainc
accurate to ~1e-11 in float64 (XLA sums a series).

>>> import numpy as np
>>> round(float(lgamma(np.float64(5.0))), 6)   # log(4!)
3.178054
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from flamefx import core, devices, dtypes
from flamefx.kernels import cuda_elementwise
from flamefx.kernels.cuda_elementwise import Elementwise
from flamefx.primitives.elementwise import (
    FLOAT, abs, add, declare_elementwise, div, exp, full_like, gt, log, log1p, mul, neg,
    same_type_rule, select_n, sign, sub)

_HALF = (dtypes.float16, dtypes.bfloat16)


def _cpu_impl(fn_name, domain):
    """``scipy.special.<fn_name>`` cast to the operands' dtype (some return float64), then
    ``domain``'s NaNs."""
    def fn(*xs):
        out = np.asarray(getattr(scipy.special, fn_name)(*xs)).astype(xs[-1].dtype)
        return out if domain is None else domain(np, *xs, out)
    return fn


def _cupyx_impl(fn_name, domain):
    """``cupyx.scipy.special.<fn_name>`` (the same names as SciPy's), then ``domain``'s NaNs;
    float16/bfloat16 computed in float32."""
    def cuda_impl(*arrays):
        import cupyx.scipy.special as cupy_special
        dtype = arrays[-1].dtype
        if dtype in _HALF:
            arrays = [cuda_elementwise.convert(a, np.float32) for a in arrays]
        out = getattr(cupy_special, fn_name)(*arrays)
        if domain is not None:
            out = domain(devices.cupy(), *arrays, out)
        return [cuda_elementwise.convert(out, dtype)]
    return cuda_impl


def _opaque(name, fn_name, partials, domain=None):
    """An elementwise primitive that jit runs as one opaque step: SciPy's ufunc ``fn_name``
    on the CPU, CuPy's of the same name on the GPU."""
    return declare_elementwise(name, same_type_rule(FLOAT), _cpu_impl(fn_name, domain),
                               cuda_impl=_cupyx_impl(fn_name, domain), partials=partials)


def _polygamma_domain(xp, m, x, out):
    """NaN where ``m`` is negative or not an integer (JAX; SciPy extends it)."""
    return xp.where((m >= 0) & (m == xp.floor(m)), out, xp.nan).astype(out.dtype)


def _zeta_domain(xp, x, q, out):
    """NaN at x == 1 (JAX; SciPy gives inf there); x < 1 is NaN in both."""
    return xp.where(x == 1, xp.nan, out).astype(out.dtype)


def _expi_domain(xp, x, out):
    """NaN at x == 0 (JAX; SciPy gives the limit -inf)."""
    return xp.where(x == 0, xp.nan, out).astype(out.dtype)


def gammainc_grad_a(xp, special, a, x):
    """dP(a, x)/da in float64 by a fourth-order central difference in ``a`` (step a/1000:
    truncation ~1e-12, rounding ~1e-13/a), of P, or of P - 1 = -Q where P > 1/2 so that the
    upper tail keeps its relative accuracy. No closed form exists; XLA sums a series.
    ``xp``/``special``: NumPy and scipy.special, or CuPy and cupyx.scipy.special. It serves
    igamma_grad_a and random_ops' random_gamma_grad (which divides it by the density).

    >>> round(float(gammainc_grad_a(np, scipy.special, np.array(1.0), np.array(1.0))), 5)
    -0.43173
    """
    a, x = a.astype(np.float64), x.astype(np.float64)
    h = a * 1e-3
    lower = special.gammainc(a, x) <= 0.5

    def cdf(b):
        return xp.where(lower, special.gammainc(b, x), -special.gammaincc(b, x))

    return (8 * (cdf(a + h) - cdf(a - h)) - (cdf(a + 2 * h) - cdf(a - 2 * h))) / (12 * h)


def _igamma_grad_a_numpy(a, x):
    return gammainc_grad_a(np, scipy.special, a, x).astype(x.dtype)


def _igamma_grad_a_cuda(a, x):
    import cupyx.scipy.special as cupy_special
    dtype = x.dtype
    if dtype in _HALF:
        a, x = cuda_elementwise.convert(a, np.float32), cuda_elementwise.convert(x, np.float32)
    out = gammainc_grad_a(devices.cupy(), cupy_special, a, x).astype(x.dtype)
    return [cuda_elementwise.convert(out, dtype)]


# --- derivatives ---------------------------------------------------------------------------


def _igamma_dx(a, x):
    """d/dx P(a, x) = x^(a-1) e^-x / Gamma(a)."""
    one = full_like(a, 1)
    return exp(sub(sub(mul(sub(a, one), log(x)), x), lgamma(a)))


def _igamma_grad_a_partials(a, x, out):
    """d/dx in closed form: d/da of the density p = dP/dx is p (log x - digamma(a)).
    d/da by a central difference of the primitive itself."""
    dx = mul(_igamma_dx(a, x), sub(log(x), digamma(a)))
    return [central_difference_in_a(lambda b: igamma_grad_a(b, x), a), dx]


def central_difference_in_a(fn, a):
    """d fn(a)/da by a fourth-order central difference written in flamefx ops (step
    a eps^(1/5): truncation and rounding both ~eps^(4/5), and still ~eps^(3/5) when
    differentiated again), so that every order traces: the ``a``-derivative of
    igamma_grad_a and of random_ops' random_gamma_grad, which have no closed form.

    >>> round(float(central_difference_in_a(lambda b: mul(b, b), np.float64(3.0))), 6)
    6.0
    """
    h = mul(a, full_like(a, float(np.finfo(core.get_aval(a).dtype).eps) ** 0.2))

    def at(steps):
        return fn(add(a, mul(h, full_like(a, steps))))

    near = mul(full_like(a, 8), sub(at(1), at(-1)))
    return div(sub(near, sub(at(2), at(-2))), mul(h, full_like(a, 12)))


def _bessel_i1e_partial(x, out):
    # i1e'(x) = i0e(x) - i1e(x) (sign(x) + 1/x); its limit at x = 0 is 1/2.
    eps = full_like(x, float(np.finfo(core.get_aval(x).dtype).eps))
    not_tiny = gt(abs(x), eps)
    safe_x = select_n(not_tiny, eps, x)
    safe_out = bessel_i1e(safe_x)
    dy = sub(bessel_i0e(safe_x), mul(safe_out, add(sign(safe_x), div(full_like(x, 1), safe_x))))
    return select_n(not_tiny, full_like(x, 0.5), dy)


def _betainc_dx(a, b, x):
    """d/dx I_x(a, b) = x^(a-1) (1-x)^(b-1) / B(a, b)."""
    one = full_like(a, 1)
    log_beta = sub(add(lgamma(a), lgamma(b)), lgamma(add(a, b)))
    return exp(sub(add(mul(sub(a, one), log(x)), mul(sub(b, one), log1p(neg(x)))), log_beta))


# --- declarations --------------------------------------------------------------------------

lgamma_p = declare_elementwise("lgamma", same_type_rule(FLOAT), scipy.special.gammaln,
                               fusion=Elementwise("lgamma(x0)"),
                               partials=lambda x, out: [digamma(x)])
erfc_p = declare_elementwise("erfc", same_type_rule(FLOAT), scipy.special.erfc,
                             fusion=Elementwise("erfc(x0)"),
                             partials=lambda x, out: [mul(full_like(x, -2 / math.sqrt(math.pi)),
                                                          exp(neg(mul(x, x))))])
digamma_p = _opaque("digamma", "digamma",
                    lambda x, out: [polygamma(full_like(x, 1), x)])
polygamma_p = _opaque("polygamma", "polygamma",
                      lambda m, x, out: [None, polygamma(add(m, full_like(m, 1)), x)],
                      _polygamma_domain)
igamma_p = _opaque("igamma", "gammainc",
                   lambda a, x, out: [igamma_grad_a(a, x), _igamma_dx(a, x)])
igammac_p = _opaque("igammac", "gammaincc",
                    lambda a, x, out: [neg(igamma_grad_a(a, x)), neg(_igamma_dx(a, x))])
igamma_grad_a_p = declare_elementwise(
    "igamma_grad_a", same_type_rule(FLOAT), _igamma_grad_a_numpy,
    cuda_impl=_igamma_grad_a_cuda, partials=_igamma_grad_a_partials)
bessel_i0e_p = _opaque("bessel_i0e", "i0e",
                       lambda x, out: [sub(bessel_i1e(x), mul(sign(x), out))])
bessel_i1e_p = _opaque("bessel_i1e", "i1e",
                       lambda x, out: [_bessel_i1e_partial(x, out)])
betainc_p = _opaque("betainc", "betainc",
                    lambda a, b, x, out: [None, None, _betainc_dx(a, b, x)])
ndtri_p = _opaque("ndtri", "ndtri",
                  lambda p, out: [mul(full_like(p, math.sqrt(2 * math.pi)),
                                      exp(mul(full_like(p, 0.5), mul(out, out))))])
erfcx_p = _opaque("erfcx", "erfcx",
                  lambda x, out: [sub(mul(mul(full_like(x, 2), x), out),
                                      full_like(x, 2 / math.sqrt(math.pi)))])
exp1_p = _opaque("exp1", "exp1", lambda x, out: [neg(div(exp(neg(x)), x))])
expi_p = _opaque("expi", "expi", lambda x, out: [div(exp(x), x)], _expi_domain)
zeta_p = _opaque("zeta", "zeta",
                 lambda x, q, out: [None, mul(neg(x), zeta(add(x, full_like(x, 1)), q))],
                 _zeta_domain)


# --- lax-level wrappers ----------------------------------------------------------------------


def lgamma(x):
    """log |Gamma(x)|, elementwise (lax.lgamma).

    >>> round(float(lgamma(np.float64(0.5))), 6)   # log sqrt(pi)
    0.572365
    """
    return lgamma_p.bind(x)


def digamma(x):
    """The digamma function, d/dx lgamma(x) (lax.digamma).

    >>> round(float(digamma(np.float64(1.0))), 6)   # -Euler's gamma
    -0.577216
    """
    return digamma_p.bind(x)


def polygamma(m, x):
    """The m-th derivative of digamma (lax.polygamma); ``m`` a float array of integers,
    NaN elsewhere. Not differentiable in ``m`` (zero derivative; JAX raises).

    >>> round(float(polygamma(np.float64(1.0), np.float64(1.0))), 6)   # pi^2 / 6
    1.644934
    """
    return polygamma_p.bind(m, x)


def igamma(a, x):
    """The regularized lower incomplete gamma function P(a, x) (lax.igamma).

    >>> round(float(igamma(np.float64(1.0), np.float64(1.0))), 6)   # 1 - 1/e
    0.632121
    """
    return igamma_p.bind(a, x)


def igamma_grad_a(a, x):
    """d/da of igamma(a, x), the regularized lower incomplete gamma (lax.igamma_grad_a).

    >>> round(float(igamma_grad_a(np.float64(1.0), np.float64(1.0))), 6)
    -0.43173
    """
    return igamma_grad_a_p.bind(a, x)


def igammac(a, x):
    """The regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x) (lax.igammac).

    >>> round(float(igammac(np.float64(1.0), np.float64(1.0))), 6)   # 1/e
    0.367879
    """
    return igammac_p.bind(a, x)


def bessel_i0e(x):
    """The exponentially scaled modified Bessel function of order 0, exp(-|x|) I0(x).

    >>> float(bessel_i0e(np.float64(0.0)))
    1.0
    """
    return bessel_i0e_p.bind(x)


def bessel_i1e(x):
    """The exponentially scaled modified Bessel function of order 1, exp(-|x|) I1(x).

    >>> float(bessel_i1e(np.float64(0.0)))
    0.0
    """
    return bessel_i1e_p.bind(x)


def erfc(x):
    """The complementary error function 1 - erf(x), accurate for large x (lax.erfc).

    >>> float(erfc(np.float64(0.0)))
    1.0
    """
    return erfc_p.bind(x)


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b) (lax.betainc).

    Differentiable in ``x`` only (zero derivative in ``a`` and ``b``; JAX raises).

    >>> float(betainc(np.float64(1.0), np.float64(1.0), np.float64(0.25)))
    0.25
    """
    return betainc_p.bind(a, b, x)


def ndtri(p):
    """The inverse of the standard normal CDF (scipy.special.ndtri), accurate in both tails.

    >>> float(ndtri(np.float64(0.5)))
    0.0
    """
    return ndtri_p.bind(p)


def erfcx(x):
    """The scaled complementary error function exp(x^2) erfc(x), finite for large x.

    >>> float(erfcx(np.float64(0.0)))
    1.0
    """
    return erfcx_p.bind(x)


def exp1(x):
    """The exponential integral E1(x) = int_x^inf e^-t / t dt (NaN for x < 0).

    >>> round(float(exp1(np.float64(1.0))), 6)
    0.219384
    """
    return exp1_p.bind(x)


def expi(x):
    """The exponential integral Ei(x), the principal value of int_-inf^x e^t / t dt (NaN at
    0, as JAX; SciPy gives -inf).

    >>> round(float(expi(np.float64(1.0))), 6)
    1.895118
    """
    return expi_p.bind(x)


def zeta(x, q):
    """The Hurwitz zeta function sum_k (k + q)^-x (lax.zeta); NaN for x <= 1.

    Differentiable in ``q`` only (zero derivative in ``x``; JAX raises).

    >>> round(float(zeta(np.float64(2.0), np.float64(1.0))), 6)   # pi^2 / 6
    1.644934
    """
    return zeta_p.bind(x, q)
