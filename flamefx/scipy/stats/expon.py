"""The exponential distribution (jax.scipy.stats.expon): -inf log-density below loc.

>>> from flamefx.scipy.stats import expon
>>> float(expon.pdf(0.0))
1.0
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact


def logpdf(x, loc=0, scale=1):
    """-(x - loc) / scale - log(scale) at and above loc.

    >>> float(logpdf(1.0))
    -1.0
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return fnp.where(x < loc, -np.inf, -((x - loc) / scale + fnp.log(scale)))


def pdf(x, loc=0, scale=1):
    """The exponential density.

    >>> float(pdf(-1.0))
    0.0
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x) = -expm1(-(x - loc) / scale).

    >>> round(float(cdf(1.0)), 6)
    0.632121
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return fnp.where(x < loc, 0.0, -fnp.expm1((loc - x) / scale))


def logsf(x, loc=0, scale=1):
    """log P(X > x) = -(x - loc) / scale; 0 below loc.

    >>> float(logsf(2.0))
    -2.0
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return fnp.where(x < loc, 0.0, (loc - x) / scale)


def sf(x, loc=0, scale=1):
    """P(X > x).

    >>> round(float(sf(1.0)), 6)
    0.367879
    """
    return fnp.exp(logsf(x, loc, scale))


def logcdf(x, loc=0, scale=1):
    """log P(X <= x) = log1p(-sf(x)).

    >>> round(float(logcdf(1.0)), 6)
    -0.458675
    """
    return fnp.log1p(-sf(x, loc, scale))


def ppf(q, loc=0, scale=1):
    """loc - scale log1p(-q); NaN for q outside [0, 1].

    >>> round(float(ppf(0.5)), 6)
    0.693147
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return fnp.where(fnp.isnan(q) | (q < 0) | (q > 1), np.nan, loc - scale * fnp.log1p(-q))
