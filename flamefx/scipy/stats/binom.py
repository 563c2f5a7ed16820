"""The binomial distribution (jax.scipy.stats.binom); k outside [0, n] (after loc) has
log-probability -inf.

>>> from flamefx.scipy.stats import binom
>>> round(float(binom.pmf(1, 2, 0.5)), 6)
0.5
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, n, p, loc=0):
    """log P(K = k) for ``n`` trials of success probability ``p``.

    >>> round(float(logpmf(0, 1, 0.5)), 6)
    -0.693147
    """
    k, n, p, loc = promote_args_inexact(k, n, p, loc)
    y = k - loc
    comb_term = special.gammaln(n + 1.0) - (special.gammaln(y + 1.0)
                                            + special.gammaln(n - y + 1.0))
    log_linear_term = special.xlogy(y, p) + special.xlog1py(n - y, -p)
    log_probs = comb_term + log_linear_term
    # Certain outcomes (n = 0, or p at 0 or 1 with the matching k) are exactly log 1 = 0.
    certain = ((y == 0) & (n == 0)) | (log_linear_term == 0)
    log_probs = fnp.where(certain, 0.0, log_probs)
    return fnp.where((k >= loc) & (k < loc + n + 1.0), log_probs, -np.inf)


def pmf(k, n, p, loc=0):
    """P(K = k).

    >>> round(float(pmf(2, 2, 0.5)), 6)
    0.25
    """
    return fnp.exp(logpmf(k, n, p, loc))
