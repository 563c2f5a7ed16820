"""Samples for the special-function primitives (flamefx/primitives/special.py).

The references do not call scipy.special (the CPU impl): they are series and asymptotic
expansions in float64 (Euler-Maclaurin for zeta and polygamma, the recurrence plus Stirling's
series for digamma, power series for the incomplete gamma and beta functions and I1), or
Python's math module. Inputs stay where the series converge quickly.
"""

import math

import numpy as np

from tests.samples import Sample

SHAPE = (2, 3)
# B_2, B_4, ..., B_14: the Bernoulli numbers of the asymptotic expansions.
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)


def _uniform(low, high, shape=SHAPE):
    return lambda rng: rng.uniform(low, high, shape)


def _hurwitz_zeta(s, q, terms=30):
    """sum_k (q + k)^-s by Euler-Maclaurin: a direct sum, the integral, then Bernoulli terms."""
    out = 0.0
    for k in range(terms):
        out += (q + k) ** -s
    y = q + terms
    out += y ** (1 - s) / (s - 1) + 0.5 * y ** -s
    rising = s   # s (s+1) ... (s + 2j - 2)
    for j, b in enumerate(_BERNOULLI, start=1):
        out += b / math.factorial(2 * j) * rising * y ** (-s - 2 * j + 1)
        rising *= (s + 2 * j - 1) * (s + 2 * j)
    return out


def _digamma(x, shift=20):
    """psi(x) = psi(x + n) - sum 1/(x + k), with Stirling's series at x + n."""
    y = x + shift
    out = math.log(y) - 0.5 / y
    for j, b in enumerate(_BERNOULLI, start=1):
        out -= b / (2 * j * y ** (2 * j))
    return out - sum(1 / (x + k) for k in range(shift))


def _lower_gamma_series(a, x, terms=200):
    """P(a, x) = x^a e^-x / Gamma(a + 1) * sum_n x^n / ((a+1)...(a+n))."""
    term, total = 1.0, 1.0
    for n in range(1, terms):
        term *= x / (a + n)
        total += term
    return math.exp(a * math.log(x) - x - math.lgamma(a + 1)) * total


def _beta_series(a, b, x, terms=400):
    """I_x(a, b) = x^a / (a B(a, b)) * sum_n (a)_n (1-b)_n / ((a+1)_n n!) x^n."""
    term, total = 1.0, 1.0
    for n in range(terms):
        term *= (a + n) * (n + 1 - b) / ((a + n + 1) * (n + 1)) * x
        total += term
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp(a * math.log(x) - log_beta) / a * total


def _i1_series(x, terms=60):
    return sum((x / 2) ** (2 * k + 1) / (math.factorial(k) * math.factorial(k + 1))
               for k in range(terms))


def _elementwise(fn):
    """A NumPy reference from a scalar function, keeping the operands' shape and dtype."""
    def reference(*xs):
        out = np.vectorize(fn, otypes=[np.float64])(*[x.astype(np.float64) for x in xs])
        return out.astype(xs[-1].dtype)
    return reference


def _lower_gamma_grad_a(a, x, terms=200):
    """dP/da = sum_n x^(a+n) e^-x / Gamma(a+n+1) (log x - digamma(a+n+1)), differentiating
    the series of _lower_gamma_series term by term (digamma by its recurrence)."""
    psi = _digamma(a + 1)
    total = 0.0
    for n in range(terms):
        term = math.exp((a + n) * math.log(x) - x - math.lgamma(a + n + 1))
        total += term * (math.log(x) - psi)
        psi += 1 / (a + n + 1)
    return total


_EULER_GAMMA = 0.5772156649015329


def _exponential_integral_series(x, sign, terms=80):
    """sum_k (sign x)^k / (k k!): E1(x) = -gamma - log x - series(-1), Ei(x) = gamma +
    log |x| + series(+1)."""
    term, total = 1.0, 0.0
    for k in range(1, terms):
        term *= sign * x / k
        total += term / k
    return total


def _exp1(x):
    return -_EULER_GAMMA - math.log(x) - _exponential_integral_series(x, -1)


def _expi(x):
    return _EULER_GAMMA + math.log(abs(x)) + _exponential_integral_series(x, 1)


def _ndtri(p):
    """Bisection on the normal CDF 0.5 erfc(-x / sqrt 2); the upper half by symmetry (1 - p
    is exact there, 0.5 erfc near 1 is not)."""
    if p > 0.5:
        return -_ndtri(1 - p)
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _polygamma(m, x):
    if m == 0:
        return _digamma(x)
    return (-1) ** (m + 1) * math.factorial(int(m)) * _hurwitz_zeta(m + 1, x)


def _sample(fn, makers, grad_argnums=(), name="", dtype=np.float64):
    def make(rng):
        return [np.asarray(m(rng), dtype) for m in makers]
    return Sample(make=make, reference=_elementwise(fn), grad_argnums=grad_argnums, name=name)


def _orders(rng):
    return rng.integers(0, 4, SHAPE).astype(np.float64)


def _away_from_zero(rng):
    magnitude = rng.uniform(0.3, 3, SHAPE)
    return np.where(rng.random(SHAPE) < 0.5, -magnitude, magnitude)


def _i0e(x):
    return float(np.i0(x)) * math.exp(-abs(x))


def _i1e(x):
    return _i1_series(x) * math.exp(-abs(x))


SAMPLES = {
    "lgamma": [_sample(math.lgamma, [_uniform(0.5, 6)], (0,)),
               _sample(math.lgamma, [lambda rng: rng.uniform(0.5, 6)], (0,), "0-d"),
               # Between the poles: log |Gamma(x)|.
               _sample(math.lgamma, [_uniform(-2.8, -2.2)], (0,), "negative"),
               _sample(math.lgamma, [_uniform(0.5, 6)], name="float32", dtype=np.float32)],
    "digamma": [_sample(_digamma, [_uniform(0.5, 6)], (0,)),
                _sample(_digamma, [lambda rng: rng.uniform(0.5, 6)], (0,), "0-d"),
                _sample(_digamma, [_uniform(0.5, 6)], name="float32", dtype=np.float32)],
    "polygamma": [_sample(_polygamma, [_orders, _uniform(0.5, 5)], (1,)),
                  _sample(_polygamma, [lambda rng: 2.0, lambda rng: rng.uniform(0.5, 5)], (1,),
                          "0-d")],
    "igamma": [_sample(_lower_gamma_series, [_uniform(0.5, 4), _uniform(0.2, 5)], (0, 1)),
               _sample(_lower_gamma_series, [lambda rng: 2.5, lambda rng: 1.5], (0, 1), "0-d"),
               _sample(_lower_gamma_series, [_uniform(0.5, 4), _uniform(0.2, 5)],
                       name="float32", dtype=np.float32)],
    "igammac": [_sample(lambda a, x: 1 - _lower_gamma_series(a, x),
                        [_uniform(0.5, 4), _uniform(0.2, 5)], (0, 1)),
                _sample(lambda a, x: 1 - _lower_gamma_series(a, x),
                        [lambda rng: 0.7, lambda rng: 2.0], (0, 1), "0-d")],
    # Its derivative in a is a finite difference of itself: an order-2 check in a compares a
    # nested difference with the checker's own (errors ~1e-5, the check's tolerance), so
    # these differentiate x; igamma's order-2 samples check the first derivative in a.
    "igamma_grad_a": [_sample(_lower_gamma_grad_a, [_uniform(0.5, 4), _uniform(0.2, 5)], (1,)),
                      _sample(_lower_gamma_grad_a, [lambda rng: 1.5, lambda rng: 3.0], (1,),
                              "0-d"),
                      _sample(_lower_gamma_grad_a, [_uniform(0.5, 4), _uniform(0.2, 5)],
                              name="float32", dtype=np.float32)],
    "bessel_i0e": [_sample(_i0e, [_away_from_zero], (0,)),
                   _sample(_i0e, [lambda rng: -1.3], (0,), "0-d"),
                   _sample(_i0e, [_uniform(-3, 3)], name="float32", dtype=np.float32)],
    "bessel_i1e": [_sample(_i1e, [_away_from_zero], (0,)),
                   _sample(_i1e, [lambda rng: 0.0], (0,), "0-d at the origin"),
                   _sample(_i1e, [_uniform(-3, 3)], name="float32", dtype=np.float32)],
    "erfc": [_sample(math.erfc, [_uniform(-2, 4)], (0,)),
             _sample(math.erfc, [lambda rng: 0.3], (0,), "0-d"),
             _sample(math.erfc, [_uniform(-2, 4)], name="float32", dtype=np.float32)],
    "betainc": [_sample(_beta_series, [_uniform(0.5, 3), _uniform(0.5, 3), _uniform(0.1, 0.7)],
                        (2,)),
                _sample(_beta_series, [lambda rng: 2.0, lambda rng: 3.0, lambda rng: 0.4], (2,),
                        "0-d")],
    "ndtri": [_sample(_ndtri, [_uniform(0.05, 0.95)], (0,)),
              _sample(_ndtri, [lambda rng: 0.02], (0,), "0-d"),
              # Far in the tail (values only: finite differences cannot step there).
              _sample(_ndtri, [lambda rng: np.array([1e-300, 1e-12, 1 - 1e-12])],
                      name="tails"),
              _sample(_ndtri, [_uniform(0.05, 0.95)], name="float32", dtype=np.float32)],
    "erfcx": [_sample(lambda x: math.exp(x * x) * math.erfc(x), [_uniform(-2, 4)], (0,)),
              _sample(lambda x: math.exp(x * x) * math.erfc(x), [lambda rng: 0.7], (0,), "0-d"),
              _sample(lambda x: math.exp(x * x) * math.erfc(x), [_uniform(-2, 4)],
                      name="float32", dtype=np.float32)],
    "exp1": [_sample(_exp1, [_uniform(0.2, 4)], (0,)),
             _sample(_exp1, [lambda rng: 1.3], (0,), "0-d"),
             _sample(_exp1, [_uniform(0.2, 4)], name="float32", dtype=np.float32)],
    "expi": [_sample(_expi, [_away_from_zero], (0,)),
             _sample(_expi, [lambda rng: -0.8], (0,), "0-d"),
             _sample(_expi, [_uniform(0.2, 4)], name="float32", dtype=np.float32)],
    "zeta": [_sample(_hurwitz_zeta, [_uniform(1.5, 4), _uniform(0.5, 3)], (1,)),
             _sample(_hurwitz_zeta, [lambda rng: 3.0, lambda rng: 1.5], (1,), "0-d")],
}
