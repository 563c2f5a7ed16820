"""The Bernoulli distribution (jax.scipy.stats.bernoulli); k outside {0, 1} (after loc) has
log-probability -inf.

>>> from flamefx.scipy.stats import bernoulli
>>> round(float(bernoulli.pmf(1, 0.3)), 6)
0.3
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, p, loc=0):
    """log P(K = k) for success probability ``p``.

    >>> round(float(logpmf(0, 0.5)), 6)
    -0.693147
    """
    k, p, loc = promote_args_inexact(k, p, loc)
    x = k - loc
    log_probs = special.xlogy(x, p) + special.xlog1py(1.0 - x, -p)
    return fnp.where((x < 0) | (x > 1), -np.inf, log_probs)


def pmf(k, p, loc=0):
    """P(K = k).

    >>> float(pmf(2, 0.5))
    0.0
    """
    return fnp.exp(logpmf(k, p, loc))


def cdf(k, p):
    """P(K <= k); NaN where p is outside [0, 1] or an operand is NaN.

    >>> round(float(cdf(0, 0.3)), 6)
    0.7
    """
    k, p = promote_args_inexact(k, p)
    invalid = fnp.isnan(k) | fnp.isnan(p) | (p < 0) | (p > 1)
    inside = fnp.where(k < 0, 0.0, fnp.where(k < 1, 1.0 - p, 1.0))
    return fnp.where(invalid, np.nan, inside)


def ppf(q, p):
    """The smallest k with cdf(k) >= q; NaN for q or p outside [0, 1].

    >>> float(ppf(0.8, 0.3))
    1.0
    """
    q, p = promote_args_inexact(q, p)
    invalid = fnp.isnan(q) | fnp.isnan(p) | (p < 0) | (p > 1) | (q < 0) | (q > 1)
    below = q <= 1.0 - p
    return fnp.where(invalid, np.nan, fnp.where(below, fnp.zeros_like(q), fnp.ones_like(q)))
