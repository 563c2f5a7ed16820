"""The Laplace distribution (jax.scipy.stats.laplace).

>>> from flamefx.scipy.stats import laplace
>>> float(laplace.pdf(0.0))
0.5
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact


def logpdf(x, loc=0, scale=1):
    """-|x - loc| / scale - log(2 scale).

    >>> round(float(logpdf(1.0)), 6)
    -1.693147
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    return -(fnp.abs(x - loc) / scale + fnp.log(2.0 * scale))


def pdf(x, loc=0, scale=1):
    """The Laplace density.

    >>> round(float(pdf(1.0)), 6)
    0.18394
    """
    return fnp.exp(logpdf(x, loc, scale))


def cdf(x, loc=0, scale=1):
    """P(X <= x): exp(z) / 2 below loc, 1 - exp(-z) / 2 above.

    >>> float(cdf(0.0))
    0.5
    """
    x, loc, scale = promote_args_inexact(x, loc, scale)
    z = (x - loc) / scale
    # Each branch sees only its own half, so the other's exp cannot overflow (or NaN a grad).
    below, above = fnp.minimum(z, 0.0), fnp.maximum(z, 0.0)
    return fnp.where(z <= 0, 0.5 * fnp.exp(below), 1.0 - 0.5 * fnp.exp(-above))
