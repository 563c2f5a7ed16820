"""The von Mises distribution on the circle (jax.scipy.stats.vonmises); NaN for kappa <= 0.

>>> from flamefx.scipy.stats import vonmises
>>> round(float(vonmises.pdf(0.0, 1.0)), 6)
0.34171
"""

from __future__ import annotations

import math

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, kappa):
    """kappa (cos x - 1) - log(2 pi i0e(kappa)): the scaled Bessel function keeps large
    kappa finite.

    >>> round(float(logpdf(0.0, 1.0)), 6)
    -1.073792
    """
    x, kappa = promote_args_inexact(x, kappa)
    log_probs = kappa * (fnp.cos(x) - 1.0) - fnp.log(2 * math.pi * special.i0e(kappa))
    return fnp.where(kappa > 0, log_probs, np.nan)


def pdf(x, kappa):
    """The von Mises density.

    >>> round(float(pdf(math.pi, 1.0)), 6)
    0.046245
    """
    return fnp.exp(logpdf(x, kappa))
