"""The beta distribution on [loc, loc + scale] (jax.scipy.stats.beta): -inf log-density
outside the support, NaN for non-positive a, b or scale. The cdf is differentiable in x
only (betainc's derivative in a and b is zero here; JAX raises).

>>> from flamefx.scipy.stats import beta
>>> float(beta.pdf(0.5, 1.0, 1.0))
1.0
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, a, b, loc=0, scale=1):
    """log of the beta density.

    >>> round(float(logpdf(0.5, 2.0, 2.0)), 6)
    0.405465
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    y = (x - loc) / scale
    log_linear_term = special.xlogy(a - 1.0, y) + special.xlog1py(b - 1.0, -y)
    log_probs = log_linear_term - special.betaln(a, b) - fnp.log(scale)
    out = fnp.where((x > loc + scale) | (x < loc), -np.inf, log_probs)
    return fnp.where((a <= 0) | (b <= 0) | (scale <= 0), np.nan, out)


def pdf(x, a, b, loc=0, scale=1):
    """The beta density.

    >>> float(pdf(2.0, 1.0, 1.0))
    0.0
    """
    return fnp.exp(logpdf(x, a, b, loc, scale))


def _standardized(x, loc, scale):
    return fnp.clip((x - loc) / scale, 0.0, 1.0)


def cdf(x, a, b, loc=0, scale=1):
    """P(X <= x) = I_y(a, b), y = (x - loc) / scale clipped to [0, 1].

    >>> float(cdf(0.25, 1.0, 1.0))
    0.25
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    return special.betainc(a, b, _standardized(x, loc, scale))


def logcdf(x, a, b, loc=0, scale=1):
    """log P(X <= x).

    >>> round(float(logcdf(0.5, 1.0, 1.0)), 6)
    -0.693147
    """
    return fnp.log(cdf(x, a, b, loc, scale))


def sf(x, a, b, loc=0, scale=1):
    """P(X > x) = I_{1-y}(b, a).

    >>> float(sf(0.25, 1.0, 1.0))
    0.75
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    return special.betainc(b, a, 1.0 - _standardized(x, loc, scale))


def logsf(x, a, b, loc=0, scale=1):
    """log P(X > x).

    >>> round(float(logsf(0.5, 1.0, 1.0)), 6)
    -0.693147
    """
    return fnp.log(sf(x, a, b, loc, scale))
