"""The normal distribution (jax.scipy.stats.norm): loc and scale broadcast against x.

>>> from flamefx.scipy.stats import norm
>>> round(float(norm.logpdf(0.0)), 6)
-0.918939
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, loc=0, scale=1):
    """log of the normal density at ``x``.

    >>> round(float(logpdf(1.0, 1.0, 2.0)), 6)
    -1.612086
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    scale_sqrd = scale * scale
    return -0.5 * (fnp.log(2 * math.pi * scale_sqrd) + (x - loc) ** 2 / scale_sqrd)


def pdf(x, loc=0, scale=1):
    """The normal density at ``x``.

    >>> round(float(pdf(0.0)), 6)
    0.398942
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x).

    >>> float(cdf(0.0))
    0.5
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return special.ndtr((x - loc) / scale)


def logcdf(x, loc=0, scale=1):
    """log P(X <= x), accurate far into the lower tail.

    >>> round(float(logcdf(0.0)), 6)
    -0.693147
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return special.log_ndtr((x - loc) / scale)


def sf(x, loc=0, scale=1):
    """P(X > x) = cdf(-x, -loc, scale).

    >>> float(sf(0.0))
    0.5
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return cdf(-x, -loc, scale)


def logsf(x, loc=0, scale=1):
    """log P(X > x).

    >>> round(float(logsf(0.0)), 6)
    -0.693147
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return logcdf(-x, -loc, scale)


def ppf(q, loc=0, scale=1):
    """The quantile function, the inverse of cdf.

    >>> float(ppf(0.5, 3.0))
    3.0
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return special.ndtri(q) * scale + loc


def isf(q, loc=0, scale=1):
    """The inverse of sf: ppf(1 - q).

    >>> float(isf(0.5, 3.0))
    3.0
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return ppf(1.0 - q, loc, scale)
