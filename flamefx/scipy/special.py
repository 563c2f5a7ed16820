"""flamefx.scipy.special: jax.scipy.special's functions on flamefx arrays.

Each function promotes its operands to a floating dtype and broadcasts them (integers become
float32, as in JAX), then composes the special-function primitives of
flamefx/primitives/special.py with flamefx.numpy. Where JAX deviates from SciPy (xlogy's
derivative at x = 0, log_ndtr's tail series, softmax's default axis) this follows JAX.

>>> import flamefx.scipy.special as fss
>>> round(float(fss.gammaln(5.0)), 6)
3.178054
"""

from __future__ import annotations

import math

import numpy as np

import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.primitives import special as prims
from flamefx.transforms.custom import custom_jvp


def _inexact(*args):
    out = promote_args_inexact(*args)
    return out[0] if len(out) == 1 else out


def _const(x, value):
    return fnp.full_like(x, value)


# --- error function and normal distribution ------------------------------------------------


def erf(x):
    """The error function.

    >>> float(erf(0.0))
    0.0
    """
    return lax.erf(_inexact(x))


def erfc(x):
    """The complementary error function 1 - erf(x), accurate where erf(x) is near 1.

    >>> float(erfc(0.0))
    1.0
    """
    return prims.erfc(_inexact(x))


def erfinv(x):
    """The inverse error function on (-1, 1).

    >>> float(erfinv(0.0))
    0.0
    """
    return lax.erf_inv(_inexact(x))


def erfcx(x):
    """The scaled complementary error function exp(x^2) erfc(x).

    >>> float(erfcx(0.0))
    1.0
    """
    return prims.erfcx(_inexact(x))


def ndtr(x):
    """The standard normal CDF, with erfc in the tails (as JAX) so neither end loses digits.

    >>> float(ndtr(0.0))
    0.5
    """
    x = _inexact(x)
    half_sqrt_2 = 0.5 * math.sqrt(2)
    w = x * half_sqrt_2
    z = fnp.abs(w)
    y = fnp.where(z < half_sqrt_2, 1.0 + erf(w), fnp.where(w > 0, 2.0 - erfc(z), erfc(z)))
    return 0.5 * y


def ndtri(p):
    """The inverse of the standard normal CDF (NaN outside [0, 1]).

    >>> float(ndtri(0.5))
    0.0
    """
    return prims.ndtri(_inexact(p))


def _log_ndtr_lower(x, series_order):
    """log ndtr(x) for very negative x: the asymptotic series of the Mills ratio (JAX's)."""
    x_2 = x * x
    log_scale = -(x_2 / 2) - fnp.log(-x) - 0.5 * math.log(2 * math.pi)
    even_sum, odd_sum = fnp.zeros_like(x), fnp.zeros_like(x)
    x_2n = x_2
    for n in range(1, series_order + 1):
        term = float(math.prod(range(2 * n - 1, 0, -2))) / x_2n
        if n % 2:
            odd_sum = odd_sum + term
        else:
            even_sum = even_sum + term
        x_2n = x_2n * x_2
    return log_scale + fnp.log(1.0 + even_sum - odd_sum)


def _log_ndtr(x, series_order):
    # Where ndtr is accurate log(ndtr) is; above `upper` log1p(-ndtr(-x)) keeps the digits
    # of a value near 0; below `lower` ndtr underflows and the series takes over.
    lower, upper = (-20.0, 8.0) if x.dtype == np.float64 else (-10.0, 5.0)
    return fnp.where(x > upper, fnp.log1p(-ndtr(-x)),
                     fnp.where(x > lower, fnp.log(ndtr(fnp.maximum(x, lower))),
                               _log_ndtr_lower(fnp.minimum(x, lower), series_order)))


def _log_ndtr_custom(x, series_order):
    return _log_ndtr(x, series_order)


_log_ndtr_custom = custom_jvp(_log_ndtr_custom, nondiff_argnums=(1,))


@_log_ndtr_custom.defjvp
def _log_ndtr_jvp(series_order, primals, tangents):
    (x,), (t,) = primals, tangents
    out = _log_ndtr_custom(x, series_order)
    # d/dx log ndtr(x) = pdf(x) / ndtr(x), taken in log space so the far tail stays finite.
    return out, t * fnp.exp(-0.5 * x * x - out - 0.5 * math.log(2 * math.pi))


def log_ndtr(x, series_order: int = 3):
    """log of the standard normal CDF, accurate far into both tails (JAX's method: an
    asymptotic series below -20 in float64, -10 in float32).

    >>> round(float(log_ndtr(0.0)), 6)
    -0.693147
    """
    if not isinstance(series_order, int) or not 0 <= series_order <= 30:
        raise FlamefxValueError(f"log_ndtr: series_order must be an int in [0, 30], got "
                                f"{series_order!r}\n  at {user_frame()}")
    return _log_ndtr_custom(_inexact(x), series_order)


# --- gamma family ------------------------------------------------------------------------


def gammaln(x):
    """log |Gamma(x)|.

    >>> round(float(gammaln(0.5)), 6)
    0.572365
    """
    return prims.lgamma(_inexact(x))


def loggamma(x):
    """The principal branch of log Gamma(x) for real x: gammaln for x > 0, NaN elsewhere
    (complex arguments are not supported here).

    >>> round(float(loggamma(3.0)), 6)
    0.693147
    """
    x = _inexact(x)
    return fnp.where(x > 0, prims.lgamma(x), _const(x, np.nan))


def gammasgn(x):
    """The sign of Gamma(x): NaN at the poles (non-positive integers) and at NaN.

    >>> float(gammasgn(-0.5))
    -1.0
    """
    x = _inexact(x)
    floor_x = fnp.floor(x)
    negative = x < 0
    pole = (negative & (x == floor_x)) | fnp.isnan(x)
    minus = (negative & (fnp.fmod(floor_x, 2.0) != 0)) | ((x == 0) & (1.0 / x < 0))
    return fnp.where(pole, _const(x, np.nan), fnp.where(minus, _const(x, -1.0), _const(x, 1.0)))


def gamma(x):
    """The gamma function, as sign(Gamma(x)) exp(log|Gamma(x)|) (JAX's formula).

    >>> float(gamma(5.0))
    24.0
    """
    x = _inexact(x)
    return gammasgn(x) * fnp.exp(prims.lgamma(x))


def _poch(z, m):
    return fnp.where(m == 0, _const(z, 1.0), gamma(z + m) / gamma(z))


_poch = custom_jvp(_poch)


@_poch.defjvp
def _poch_jvp(primals, tangents):
    (z, m), (tz, tm) = primals, tangents
    out = _poch(z, m)
    # JAX's rule: d/dz = (digamma(z + m) - digamma(z)) poch, d/dm = digamma(z + m) poch.
    dz = (prims.digamma(z + m) - prims.digamma(z)) * out
    return out, tz * dz + tm * prims.digamma(z + m) * out


def poch(z, m):
    """The rising factorial Gamma(z + m) / Gamma(z) (1 where m == 0), with JAX's derivatives.

    >>> float(poch(2.0, 3.0))
    24.0
    """
    z, m = _inexact(z, m)
    return _poch(z, m)


def digamma(x):
    """The digamma function psi(x) = d/dx log Gamma(x).

    >>> round(float(digamma(1.0)), 6)
    -0.577216
    """
    return prims.digamma(_inexact(x))


def polygamma(n, x):
    """The n-th derivative of digamma; ``n`` a non-negative integer (NaN otherwise).
    Differentiable in ``x``.

    >>> round(float(polygamma(1, 1.0)), 6)
    1.644934
    """
    n, x = _inexact(n, x)
    return prims.polygamma(n, x)


def gammainc(a, x):
    """The regularized lower incomplete gamma function P(a, x); its derivative in ``a`` is
    a finite difference accurate to ~1e-11 in float64 (no closed form exists).

    >>> round(float(gammainc(1.0, 1.0)), 6)
    0.632121
    """
    a, x = _inexact(a, x)
    return prims.igamma(a, x)


def gammaincc(a, x):
    """The regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x) (its
    derivative in ``a`` as gammainc's).

    >>> round(float(gammaincc(1.0, 1.0)), 6)
    0.367879
    """
    a, x = _inexact(a, x)
    return prims.igammac(a, x)


def betaln(a, b):
    """log |B(a, b)| = gammaln(a) + gammaln(b) - gammaln(a + b).

    >>> round(float(betaln(1.0, 1.0)), 6)
    0.0
    """
    a, b = _inexact(a, b)
    return prims.lgamma(a) + prims.lgamma(b) - prims.lgamma(a + b)


def beta(a, b):
    """The beta function Gamma(a) Gamma(b) / Gamma(a + b), with its sign (JAX's formula).

    >>> float(beta(1.0, 1.0))
    1.0
    """
    a, b = _inexact(a, b)
    sign = gammasgn(a) * gammasgn(b) * gammasgn(a + b)
    return sign * fnp.exp(betaln(a, b))


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b); differentiable in ``x``.

    >>> float(betainc(1.0, 1.0, 0.25))
    0.25
    """
    a, b, x = _inexact(a, b, x)
    return prims.betainc(a, b, x)


def multigammaln(a, d: int):
    """The log of the multivariate gamma function of dimension ``d`` (a Python int).

    >>> round(float(multigammaln(2.0, 1)), 6)
    0.0
    """
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise FlamefxValueError(f"multigammaln: d must be a positive int, got {d!r}\n"
                                f"  at {user_frame()}")
    a = _inexact(a)
    steps = fnp.asarray(-0.5 * np.arange(d), a.dtype)
    total = fnp.sum(prims.lgamma(fnp.expand_dims(a, -1) + steps), axis=-1)
    return total + 0.25 * d * (d - 1) * math.log(math.pi)


def factorial(n, exact: bool = False):
    """n! as exp(gammaln(n + 1)), 0 for n < 0 (only exact=False, as JAX).

    >>> float(factorial(4))
    24.0
    """
    if exact:
        raise NotImplementedError("factorial with exact=True (flamefx computes in floating "
                                  "point, as JAX)")
    n = _inexact(n)
    return fnp.where(n < 0, _const(n, 0.0), fnp.exp(prims.lgamma(n + 1.0)))


def comb(N, k, *, repetition: bool = False):
    """The number of ways to choose ``k`` of ``N`` (floating point, through gammaln); 0
    outside 0 <= k <= N; ``repetition``: with replacement, comb(N + k - 1, k).

    >>> round(float(comb(5.0, 2.0)), 4)
    10.0
    """
    N, k = _inexact(N, k)
    if repetition:
        return fnp.where((k == 0) & (N >= 0), _const(N, 1.0), comb(N + k - 1.0, k))
    valid = (k <= N) & (N >= 0) & (k >= 0)
    safe_n = fnp.where(valid, N, _const(N, 0.0))
    safe_k = fnp.where(valid, k, _const(k, 0.0))
    value = fnp.exp(prims.lgamma(safe_n + 1.0) - prims.lgamma(safe_k + 1.0)
                    - prims.lgamma(safe_n + 1.0 - safe_k))
    return fnp.where(valid, value, _const(value, 0.0))


def zeta(x, q=None):
    """The Hurwitz zeta function sum_k (k + q)^-x; differentiable in ``q``. ``q`` is
    required (the Riemann zeta, q=None, is not supported, as in JAX).

    >>> round(float(zeta(2.0, 1.0)), 6)
    1.644934
    """
    if q is None:
        raise NotImplementedError("zeta(x) without q (Riemann zeta) is not supported; pass "
                                  "q=1.0")
    x, q = _inexact(x, q)
    return prims.zeta(x, q)


# --- exponential integrals ---------------------------------------------------------------


def exp1(x):
    """The exponential integral E1(x) (NaN for x < 0).

    >>> round(float(exp1(1.0)), 5)
    0.21938
    """
    return prims.exp1(_inexact(x))


def expi(x):
    """The exponential integral Ei(x) (NaN at 0, as JAX; SciPy gives -inf).

    >>> round(float(expi(1.0)), 5)
    1.89512
    """
    return prims.expi(_inexact(x))


# --- Box-Cox transforms ------------------------------------------------------------------


def boxcox(x, lmbda):
    """The Box-Cox transform (x^lmbda - 1) / lmbda, log(x) at lmbda == 0.

    >>> float(boxcox(1.0, 2.0))
    0.0
    """
    x, lmbda = _inexact(x, lmbda)
    return _boxcox_of_log(fnp.log(x), lmbda)


def boxcox1p(x, lmbda):
    """The Box-Cox transform of 1 + x, accurate for small x.

    >>> float(boxcox1p(0.0, 2.0))
    0.0
    """
    x, lmbda = _inexact(x, lmbda)
    return _boxcox_of_log(fnp.log1p(x), lmbda)


def _boxcox_of_log(log_x, lmbda):
    # A safe lambda in the untaken branch: 0/0 there would poison gradients through where.
    zero = lmbda == 0
    safe = fnp.where(zero, fnp.ones_like(lmbda), lmbda)
    return fnp.where(zero, log_x, fnp.expm1(safe * log_x) / safe)


# --- Bessel functions --------------------------------------------------------------------


def i0e(x):
    """exp(-|x|) I0(x), the exponentially scaled modified Bessel function of order 0.

    >>> float(i0e(0.0))
    1.0
    """
    return prims.bessel_i0e(_inexact(x))


def i1e(x):
    """exp(-|x|) I1(x), the exponentially scaled modified Bessel function of order 1.

    >>> float(i1e(0.0))
    0.0
    """
    return prims.bessel_i1e(_inexact(x))


def i0(x):
    """The modified Bessel function of order 0, exp(|x|) i0e(x).

    >>> float(i0(0.0))
    1.0
    """
    x = _inexact(x)
    return fnp.exp(fnp.abs(x)) * prims.bessel_i0e(x)


def i1(x):
    """The modified Bessel function of order 1, exp(|x|) i1e(x).

    >>> float(i1(0.0))
    0.0
    """
    x = _inexact(x)
    return fnp.exp(fnp.abs(x)) * prims.bessel_i1e(x)


# --- logistic, logs and entropies --------------------------------------------------------


def expit(x):
    """The logistic sigmoid 1 / (1 + exp(-x)).

    >>> float(expit(0.0))
    0.5
    """
    return lax.logistic(_inexact(x))


def logit(x):
    """log(x / (1 - x)), the inverse of expit.

    >>> float(logit(0.5))
    0.0
    """
    x = _inexact(x)
    return fnp.log(x / (1.0 - x))


@custom_jvp
def _xlogy(x, y):
    return fnp.where(x != 0, x * fnp.log(y), fnp.zeros_like(x))


@_xlogy.defjvp
def _xlogy_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    return _xlogy(x, y), tx * fnp.log(y) + ty * x / y


def xlogy(x, y):
    """x log(y), and 0 where x == 0 (even where y == 0). Its derivative is JAX's:
    log(y) dx + x / y dy, taken as is (so NaN/inf at y == 0 where SciPy has no rule).

    >>> float(xlogy(0.0, 0.0))
    0.0
    """
    x, y = _inexact(x, y)
    return _xlogy(x, y)


@custom_jvp
def _xlog1py(x, y):
    return fnp.where(x != 0, x * fnp.log1p(y), fnp.zeros_like(x))


@_xlog1py.defjvp
def _xlog1py_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    return _xlog1py(x, y), tx * fnp.log1p(y) + ty * x / (1.0 + y)


def xlog1py(x, y):
    """x log(1 + y), and 0 where x == 0 (JAX's derivative rule, as xlogy).

    >>> float(xlog1py(0.0, -1.0))
    0.0
    """
    x, y = _inexact(x, y)
    return _xlog1py(x, y)


def _xlogx(x):
    return _xlogy(x, x)


def entr(x):
    """-x log(x) for x > 0, 0 at 0, -inf for x < 0.

    >>> float(entr(1.0))
    -0.0
    """
    x = _inexact(x)
    return fnp.where(x < 0, _const(x, -np.inf), -_xlogx(x))


def rel_entr(p, q):
    """p log(p / q) for p, q > 0; 0 for p == 0 and q >= 0; inf otherwise.

    >>> float(rel_entr(1.0, 1.0))
    0.0
    """
    p, q = _inexact(p, q)
    both_positive = (p > 0) & (q > 0)
    p_zero = (p == 0) & (q >= 0)
    safe_p = fnp.where(both_positive, p, _const(p, 1.0))
    safe_q = fnp.where(both_positive, q, _const(q, 1.0))
    value = _xlogx(safe_p) - _xlogy(safe_p, safe_q)
    return fnp.where(both_positive, value,
                     fnp.where(p_zero, _const(p, 0.0), _const(p, np.inf)))


def kl_div(p, q):
    """rel_entr(p, q) - p + q (q where p == 0 and q >= 0; inf otherwise).

    >>> float(kl_div(1.0, 1.0))
    0.0
    """
    p, q = _inexact(p, q)
    return rel_entr(p, q) - p + q


# --- softmax and logsumexp ---------------------------------------------------------------


def logsumexp(a, axis=None, b=None, keepdims: bool = False, return_sign: bool = False,
              where=None):
    """log |sum(b * exp(a))| over ``axis``, without overflow; with ``return_sign`` also the
    sum's sign (then a negative sum is allowed, as in JAX; otherwise its log is NaN).
    ``where``: only the elements where it is True enter the sum (none: -inf).

    >>> round(float(logsumexp(fnp.array([0.0, 0.0]))), 6)
    0.693147
    """
    a = _inexact(a)
    if b is not None:
        a, b = _inexact(a, b)
    if where is not None:
        a = fnp.where(where, a, _const(a, -np.inf))
    axes = tuple(range(a.ndim)) if axis is None else axis
    shift = fnp.max(a, axis=axes, keepdims=True) if a.ndim else a
    # All -inf (or an inf): shift by 0 so a - shift is not NaN. The shift cancels out of
    # the value, so its gradient is not wanted (max's gradient is a mask).
    shift = lax.stop_gradient(fnp.where(fnp.isfinite(shift), shift, fnp.zeros_like(shift)))
    terms = fnp.exp(a - shift)
    if b is not None:
        terms = terms * b
    total = fnp.sum(terms, axis=axes, keepdims=True) if a.ndim else terms
    sign = fnp.sign(total)
    magnitude = fnp.abs(total) if return_sign else total
    out = fnp.log(magnitude) + shift
    if not keepdims and a.ndim:
        out, sign = fnp.squeeze(out, axis=axes), fnp.squeeze(sign, axis=axes)
    return (out, sign) if return_sign else out


def softmax(x, axis=None):
    """exp(x) / sum(exp(x)) over ``axis`` (all axes by default, as scipy and
    jax.scipy.special; flamefx.nn.softmax defaults to the last axis).

    >>> softmax(fnp.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    x = _inexact(x)
    axes = tuple(range(x.ndim)) if axis is None else axis
    shift = lax.stop_gradient(fnp.max(x, axis=axes, keepdims=True))
    shift = fnp.where(fnp.isfinite(shift), shift, fnp.zeros_like(shift))
    unnormalized = fnp.exp(x - shift)
    return unnormalized / fnp.sum(unnormalized, axis=axes, keepdims=True)


def log_softmax(x, axis=None):
    """x - logsumexp(x) over ``axis`` (all axes by default, as scipy).

    >>> round(float(log_softmax(fnp.array([0.0, 0.0]))[0]), 6)
    -0.693147
    """
    x = _inexact(x)
    axes = tuple(range(x.ndim)) if axis is None else axis
    return x - logsumexp(x, axis=axes, keepdims=True)
