"""The generalized normal distribution with shape ``beta`` (jax.scipy.stats.gennorm):
beta = 2 is a normal of variance 1/2, beta = 1 the Laplace distribution.

>>> from flamefx.scipy.stats import gennorm
>>> float(gennorm.cdf(0.0, 2.0))
0.5
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, beta):
    """log(beta / 2) - gammaln(1 / beta) - |x|^beta.

    >>> round(float(logpdf(0.0, 1.0)), 6)
    -0.693147
    """
    x, beta = promote_args_inexact(x, beta)
    return fnp.log(0.5 * beta) - special.gammaln(1.0 / beta) - fnp.abs(x) ** beta


def pdf(x, beta):
    """The generalized normal density.

    >>> float(pdf(0.0, 1.0))
    0.5
    """
    return fnp.exp(logpdf(x, beta))


def cdf(x, beta):
    """(1 + sign(x) P(1 / beta, |x|^beta)) / 2.

    >>> round(float(cdf(1.0, 1.0)), 6)
    0.81606
    """
    x, beta = promote_args_inexact(x, beta)
    return 0.5 * (1.0 + fnp.sign(x) * special.gammainc(1.0 / beta, fnp.abs(x) ** beta))
