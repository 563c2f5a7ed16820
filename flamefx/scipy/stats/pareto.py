"""The Pareto distribution with shape ``b`` (jax.scipy.stats.pareto): support x >= loc + scale.

>>> from flamefx.scipy.stats import pareto
>>> float(pareto.cdf(2.0, 1.0))
0.5
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact


def logpdf(x, b, loc=0, scale=1):
    """-log(scale / b) - (b + 1) log(y), y = (x - loc) / scale; -inf below the support.

    >>> round(float(logpdf(1.0, 2.0)), 6)
    0.693147
    """
    x, b, loc, scale = promote_args_inexact(x, b, loc, scale)
    y = (x - loc) / scale
    log_probs = -(fnp.log(scale / b) + (b + 1.0) * fnp.log(y))
    return fnp.where(x < loc + scale, -np.inf, log_probs)


def pdf(x, b, loc=0, scale=1):
    """The Pareto density.

    >>> float(pdf(2.0, 1.0))
    0.25
    """
    return fnp.exp(logpdf(x, b, loc, scale))


def cdf(x, b, loc=0, scale=1):
    """P(X <= x) = 1 - y^-b.

    >>> float(cdf(0.5, 1.0))
    0.0
    """
    x, b, loc, scale = promote_args_inexact(x, b, loc, scale)
    y = (x - loc) / scale
    return fnp.where(x < loc + scale, 0.0, 1.0 - y ** -b)


def logcdf(x, b, loc=0, scale=1):
    """log P(X <= x) = log1p(-y^-b).

    >>> round(float(logcdf(2.0, 1.0)), 6)
    -0.693147
    """
    x, b, loc, scale = promote_args_inexact(x, b, loc, scale)
    y = (x - loc) / scale
    return fnp.where(x < loc + scale, -np.inf, fnp.log1p(-(y ** -b)))


def logsf(x, b, loc=0, scale=1):
    """log P(X > x) = -b log(y); 0 below the support.

    >>> round(float(logsf(2.0, 1.0)), 6)
    -0.693147
    """
    x, b, loc, scale = promote_args_inexact(x, b, loc, scale)
    y = (x - loc) / scale
    return fnp.where(x < loc + scale, 0.0, -b * fnp.log(y))


def sf(x, b, loc=0, scale=1):
    """P(X > x).

    >>> float(sf(4.0, 1.0))
    0.25
    """
    return fnp.exp(logsf(x, b, loc, scale))


def ppf(q, b, loc=0, scale=1):
    """loc + scale (1 - q)^(-1/b); NaN for q outside [0, 1].

    >>> float(ppf(0.5, 1.0))
    2.0
    """
    q, b, loc, scale = promote_args_inexact(q, b, loc, scale)
    value = loc + scale * (1.0 - q) ** (-1.0 / b)
    return fnp.where(fnp.isnan(q) | (q < 0) | (q > 1), np.nan, value)
