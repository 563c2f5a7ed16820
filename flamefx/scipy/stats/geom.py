"""The geometric distribution on k = 1, 2, ... (jax.scipy.stats.geom).

>>> from flamefx.scipy.stats import geom
>>> round(float(geom.pmf(2, 0.5)), 6)
0.25
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, p, loc=0):
    """log P(K = k) = (k - 1) log(1 - p) + log p; -inf for k - loc <= 0.

    >>> round(float(logpmf(1, 0.5)), 6)
    -0.693147
    """
    k, p, loc = promote_args_inexact(k, p, loc)
    x = k - loc
    log_probs = special.xlog1py(x - 1.0, -p) + fnp.log(p)
    return fnp.where(x <= 0, -np.inf, log_probs)


def pmf(k, p, loc=0):
    """P(K = k).

    >>> float(pmf(0, 0.5))
    0.0
    """
    return fnp.exp(logpmf(k, p, loc))
