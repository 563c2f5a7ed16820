"""The logistic distribution (jax.scipy.stats.logistic).

>>> from flamefx.scipy.stats import logistic
>>> float(logistic.cdf(0.0))
0.5
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, loc=0, scale=1):
    """log of the logistic density, -2 logaddexp(z/2, -z/2) - log scale (stable for large z).

    >>> round(float(logpdf(0.0)), 6)
    -1.386294
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    half_z = (x - loc) / scale / 2.0
    return -2.0 * fnp.logaddexp(half_z, -half_z) - fnp.log(scale)


def pdf(x, loc=0, scale=1):
    """The logistic density.

    >>> float(pdf(0.0))
    0.25
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x) = expit(z).

    >>> float(cdf(1.0, 1.0))
    0.5
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return special.expit((x - loc) / scale)


def sf(x, loc=0, scale=1):
    """P(X > x) = expit(-z).

    >>> float(sf(0.0))
    0.5
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return special.expit(-(x - loc) / scale)


def ppf(x, loc=0, scale=1):
    """The quantile function: logit(q) scale + loc.

    >>> float(ppf(0.5, 2.0))
    2.0
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return special.logit(x) * scale + loc


def isf(x, loc=0, scale=1):
    """The inverse of sf: -logit(q) scale + loc.

    >>> float(isf(0.5, 2.0))
    2.0
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return -special.logit(x) * scale + loc
