"""The chi-squared distribution with ``df`` degrees of freedom (jax.scipy.stats.chi2):
-inf log-density below loc.

>>> from flamefx.scipy.stats import chi2
>>> round(float(chi2.pdf(2.0, 2.0)), 6)
0.18394
"""

from __future__ import annotations

import math

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, df, loc=0, scale=1):
    """log of the chi-squared density.

    >>> round(float(logpdf(2.0, 2.0)), 6)
    -1.693147
    """
    x, df, loc, scale = promote_args_inexact(x, df, loc, scale)
    y = (x - loc) / scale
    half_df = df / 2.0
    kernel = (half_df - 1.0) * fnp.log(y) - y / 2.0
    normalizer = -(special.gammaln(half_df) + math.log(2) * df / 2.0)
    return fnp.where(x < loc, -np.inf, normalizer - fnp.log(scale) + kernel)


def pdf(x, df, loc=0, scale=1):
    """The chi-squared density.

    >>> float(pdf(-1.0, 2.0))
    0.0
    """
    return fnp.exp(logpdf(x, df, loc, scale))


def _half_standardized(x, loc, scale):
    return fnp.maximum((x - loc) / (scale * 2.0), 0.0)


def cdf(x, df, loc=0, scale=1):
    """P(X <= x) = P(df / 2, y / 2).

    >>> round(float(cdf(2.0, 2.0)), 6)
    0.632121
    """
    x, df, loc, scale = promote_args_inexact(x, df, loc, scale)
    return special.gammainc(df / 2.0, _half_standardized(x, loc, scale))


def logcdf(x, df, loc=0, scale=1):
    """log P(X <= x).

    >>> round(float(logcdf(2.0, 2.0)), 6)
    -0.458675
    """
    return fnp.log(cdf(x, df, loc, scale))


def sf(x, df, loc=0, scale=1):
    """P(X > x) = Q(df / 2, y / 2).

    >>> round(float(sf(2.0, 2.0)), 6)
    0.367879
    """
    x, df, loc, scale = promote_args_inexact(x, df, loc, scale)
    return special.gammaincc(df / 2.0, _half_standardized(x, loc, scale))


def logsf(x, df, loc=0, scale=1):
    """log P(X > x).

    >>> round(float(logsf(2.0, 2.0)), 6)
    -1.0
    """
    return fnp.log(sf(x, df, loc, scale))
