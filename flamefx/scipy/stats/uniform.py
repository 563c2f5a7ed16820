"""The uniform distribution on [loc, loc + scale] (jax.scipy.stats.uniform).

>>> from flamefx.scipy.stats import uniform
>>> float(uniform.pdf(0.5))
1.0
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact


def logpdf(x, loc=0, scale=1):
    """-log(scale) on the support, -inf off it.

    >>> float(logpdf(2.0))
    -inf
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return fnp.where((x > loc + scale) | (x < loc), -np.inf, -fnp.log(scale))


def pdf(x, loc=0, scale=1):
    """The uniform density.

    >>> float(pdf(0.5, 0.0, 2.0))
    0.5
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x): 0 below the support, 1 above, linear on it.

    >>> float(cdf(0.25))
    0.25
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return fnp.where(x < loc, 0.0, fnp.where(x > loc + scale, 1.0, (x - loc) / scale))


def ppf(q, loc=0, scale=1):
    """loc + scale q; NaN for q outside [0, 1].

    >>> float(ppf(0.5, 1.0, 2.0))
    2.0
    """
    q, loc, scale = promote_args_inexact(q, loc, scale)
    return fnp.where(fnp.isnan(q) | (q < 0) | (q > 1), np.nan, loc + scale * q)
