"""The Poisson distribution (jax.scipy.stats.poisson); negative or non-integer k has
log-probability -inf.

>>> from flamefx.scipy.stats import poisson
>>> round(float(poisson.pmf(0, 2.0)), 6)
0.135335
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, mu, loc=0):
    """log P(K = k) for rate ``mu``.

    >>> round(float(logpmf(1, 1.0)), 6)
    -1.0
    """
    k, mu, loc = promote_args_inexact(k, mu, loc)
    x = k - loc
    log_probs = special.xlogy(x, mu) - special.gammaln(x + 1.0) - mu
    return fnp.where((x < 0) | (fnp.round(k) != k), -np.inf, log_probs)


def pmf(k, mu, loc=0):
    """P(K = k).

    >>> round(float(pmf(1, 1.0)), 6)
    0.367879
    """
    return fnp.exp(logpmf(k, mu, loc))


def cdf(k, mu, loc=0):
    """P(K <= k) = Q(floor(k - loc) + 1, mu), the regularized upper incomplete gamma.

    >>> round(float(cdf(0, 2.0)), 6)
    0.135335
    """
    k, mu, loc = promote_args_inexact(k, mu, loc)
    x = k - loc
    return fnp.where(x < 0, 0.0, special.gammaincc(fnp.floor(1.0 + x), mu))
