"""The Cauchy distribution (jax.scipy.stats.cauchy).

>>> from flamefx.scipy.stats import cauchy
>>> float(cauchy.cdf(0.0))
0.5
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact


def logpdf(x, loc=0, scale=1):
    """-log(pi scale) - log1p(z^2).

    >>> round(float(logpdf(0.0)), 6)
    -1.14473
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    z = (x - loc) / scale
    return -(fnp.log(math.pi * scale) + fnp.log1p(z * z))


def pdf(x, loc=0, scale=1):
    """The Cauchy density.

    >>> round(float(pdf(0.0)), 6)
    0.31831
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x) = 1/2 + arctan(z) / pi.

    >>> float(cdf(1.0))
    0.75
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return 0.5 + fnp.arctan((x - loc) / scale) / math.pi


def logcdf(x, loc=0, scale=1):
    """log P(X <= x).

    >>> round(float(logcdf(0.0)), 6)
    -0.693147
    """
    return fnp.log(cdf(x, loc, scale))


def sf(x, loc=0, scale=1):
    """P(X > x) = cdf(-x, -loc, scale).

    >>> float(sf(1.0))
    0.25
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
    """The quantile function: tan(pi q - pi/2) scale + loc.

    >>> round(float(ppf(0.75)), 6)
    1.0
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return fnp.tan(math.pi * q - math.pi / 2) * scale + loc


def isf(q, loc=0, scale=1):
    """The inverse of sf: tan(pi/2 - pi q) scale + loc.

    >>> round(float(isf(0.25)), 6)
    1.0
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return fnp.tan(math.pi / 2 - math.pi * q) * scale + loc
