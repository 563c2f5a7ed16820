"""The negative binomial distribution: failures before the ``n``-th success of probability
``p`` (jax.scipy.stats.nbinom); k below loc has log-probability -inf.

>>> from flamefx.scipy.stats import nbinom
>>> float(nbinom.pmf(0, 1.0, 0.5))
0.5
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, n, p, loc=0):
    """log P(K = k) = log C(k + n - 1, k) + n log p + k log(1 - p).

    >>> round(float(logpmf(1, 1.0, 0.5)), 6)
    -1.386294
    """
    k, n, p, loc = promote_args_inexact(k, n, p, loc)
    y = k - loc
    comb_term = special.gammaln(y + n) - special.gammaln(n) - special.gammaln(y + 1.0)
    log_probs = comb_term + special.xlogy(n, p) + special.xlogy(y, 1.0 - p)
    return fnp.where(k < loc, -np.inf, log_probs)


def pmf(k, n, p, loc=0):
    """P(K = k).

    >>> float(pmf(2, 1.0, 0.5))
    0.125
    """
    return fnp.exp(logpmf(k, n, p, loc))
