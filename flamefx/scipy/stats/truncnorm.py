"""The normal distribution truncated to [a, b] in standard units (jax.scipy.stats.truncnorm):
x maps to (x - loc) / scale; -inf log-density outside [a, b], NaN where a >= b. Masses
are taken in logs with the tail formulas of JAX (log_ndtr on the side away from the
mode), so far-out intervals keep their digits.

>>> from flamefx.scipy.stats import truncnorm
>>> round(float(truncnorm.cdf(0.0, -1.0, 1.0)), 6)
0.5
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import broadcast_arrays, promote_args_inexact
from flamefx.scipy import special
from flamefx.scipy.stats import norm


def _log_diff(x, y):
    """log(exp(x) - exp(y)) for x >= y."""
    terms = fnp.stack([x, y])
    signs = fnp.stack([fnp.ones_like(x), -fnp.ones_like(y)])
    return special.logsumexp(terms, b=signs, axis=0)


def _log_gauss_mass(a, b):
    """log P(a <= Z <= b) for a standard normal Z."""
    a, b = broadcast_arrays(a, b)
    left, right = b <= 0, a > 0
    central = ~(left | right)
    # Right of the mode, the mirrored interval [-b, -a] keeps log_ndtr in its accurate tail.
    a_tail = fnp.where(right, -b, a)
    b_tail = fnp.where(right, -a, b)
    mass_tail = _log_diff(special.log_ndtr(b_tail), special.log_ndtr(a_tail))
    mass_central = fnp.log1p(-special.ndtr(a) - special.ndtr(-b))
    return fnp.where(central, mass_central, mass_tail)


def logpdf(x, a, b, loc=0, scale=1):
    """norm.logpdf(x, loc, scale) - log P(a <= Z <= b) on the support.

    >>> round(float(logpdf(0.0, -1.0, 1.0)), 6)
    -0.537223
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    value = norm.logpdf(x, loc, scale) - _log_gauss_mass(a, b)
    z = (x - loc) / scale
    value = fnp.where((z < a) | (z > b), -np.inf, value)
    return fnp.where(a >= b, np.nan, value)


def pdf(x, a, b, loc=0, scale=1):
    """The truncated normal density.

    >>> float(pdf(2.0, -1.0, 1.0))
    0.0
    """
    return fnp.exp(logpdf(x, a, b, loc, scale))


def logcdf(x, a, b, loc=0, scale=1):
    """log P(X <= x); near 1 it goes through log1p(-sf) so it keeps its digits.

    >>> round(float(logcdf(0.0, -1.0, 1.0)), 6)
    -0.693147
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    z = (x - loc) / scale
    log_mass = _log_gauss_mass(a, b)
    below = _log_gauss_mass(a, z) - log_mass
    above = _log_gauss_mass(z, b) - log_mass
    inside = fnp.where(below > -0.1, fnp.log1p(-fnp.exp(above)), below)
    value = fnp.where(z >= b, 0.0, fnp.where(z <= a, -np.inf, inside))
    return fnp.where(a >= b, np.nan, value)


def cdf(x, a, b, loc=0, scale=1):
    """P(X <= x).

    >>> round(float(cdf(1.0, -1.0, 1.0)), 6)
    1.0
    """
    return fnp.exp(logcdf(x, a, b, loc, scale))


def logsf(x, a, b, loc=0, scale=1):
    """log P(X > x), as logcdf of the mirrored distribution.

    >>> round(float(logsf(0.0, -1.0, 1.0)), 6)
    -0.693147
    """
    x, a, b, loc, scale = promote_args_inexact(x, a, b, loc, scale)
    return logcdf(-x, -b, -a, -loc, scale)


def sf(x, a, b, loc=0, scale=1):
    """P(X > x).

    >>> round(float(sf(-1.0, -1.0, 1.0)), 6)
    1.0
    """
    return fnp.exp(logsf(x, a, b, loc, scale))
