"""The beta-binomial distribution (jax.scipy.stats.betabinom): k (floored) outside [0, n]
has log-probability -inf; n < 0 or non-positive a, b give NaN.

>>> from flamefx.scipy.stats import betabinom
>>> round(float(betabinom.pmf(1, 2, 1.0, 1.0)), 6)
0.333333
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, n, a, b, loc=0):
    """log C(n, y) + betaln(y + a, n - y + b) - betaln(a, b), y = floor(k) - loc.

    >>> round(float(logpmf(0, 2, 1.0, 1.0)), 6)
    -1.098612
    """
    k, n, a, b, loc = promote_args_inexact(k, n, a, b, loc)
    y = fnp.floor(k) - loc
    log_comb = -(fnp.log1p(n) + special.betaln(n - y + 1.0, y + 1.0))
    log_probs = log_comb + special.betaln(y + a, n - y + b) - special.betaln(a, b)
    log_probs = fnp.where((y == 0) & (n == 0), 0.0, log_probs)
    outside = (y < -loc) | (y > n) | (y + a <= 0)
    log_probs = fnp.where(outside, -np.inf, log_probs)
    return fnp.where((n < 0) | (a <= 0) | (b <= 0), np.nan, log_probs)


def pmf(k, n, a, b, loc=0):
    """P(K = k).

    >>> round(float(pmf(2, 2, 1.0, 1.0)), 6)
    0.333333
    """
    return fnp.exp(logpmf(k, n, a, b, loc))
