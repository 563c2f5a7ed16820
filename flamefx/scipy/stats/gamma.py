"""The gamma distribution with shape ``a`` (jax.scipy.stats.gamma): -inf log-density below
loc.

>>> from flamefx.scipy.stats import gamma
>>> round(float(gamma.pdf(1.0, 1.0)), 6)
0.367879
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, a, loc=0, scale=1):
    """log of the gamma density.

    >>> round(float(logpdf(1.0, 2.0)), 6)
    -1.0
    """
    x, a, loc, scale = promote_args_inexact(x, a, loc, scale)
    ok = x >= loc
    y = fnp.where(ok, (x - loc) / scale, 1.0)
    log_probs = special.xlogy(a - 1.0, y) - y - (special.gammaln(a) + fnp.log(scale))
    return fnp.where(ok, log_probs, -np.inf)


def pdf(x, a, loc=0, scale=1):
    """The gamma density.

    >>> float(pdf(-1.0, 2.0))
    0.0
    """
    return fnp.exp(logpdf(x, a, loc, scale))


def cdf(x, a, loc=0, scale=1):
    """P(X <= x) = P(a, y), the regularized lower incomplete gamma at y = (x - loc) / scale.

    >>> round(float(cdf(1.0, 1.0)), 6)
    0.632121
    """
    x, a, loc, scale = promote_args_inexact(x, a, loc, scale)
    return special.gammainc(a, fnp.maximum((x - loc) / scale, 0.0))


def logcdf(x, a, loc=0, scale=1):
    """log P(X <= x).

    >>> round(float(logcdf(1.0, 1.0)), 6)
    -0.458675
    """
    return fnp.log(cdf(x, a, loc, scale))


def sf(x, a, loc=0, scale=1):
    """P(X > x) = Q(a, y); 1 below loc.

    >>> round(float(sf(1.0, 1.0)), 6)
    0.367879
    """
    x, a, loc, scale = promote_args_inexact(x, a, loc, scale)
    y = (x - loc) / scale
    return fnp.where(y < 0, 1.0, special.gammaincc(a, fnp.maximum(y, 0.0)))


def logsf(x, a, loc=0, scale=1):
    """log P(X > x).

    >>> round(float(logsf(1.0, 1.0)), 6)
    -1.0
    """
    return fnp.log(sf(x, a, loc, scale))
