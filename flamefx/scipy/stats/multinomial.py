"""The multinomial distribution (jax.scipy.stats.multinomial): integer counts ``x`` along
the last axis, ``n`` trials, probabilities ``p``; counts not summing to n have
log-probability -inf (summed per point along the last axis: JAX sums all of x).

>>> import flamefx.numpy as fnp
>>> from flamefx.scipy.stats import multinomial
>>> float(multinomial.pmf(fnp.array([1, 1]), 2, fnp.array([0.5, 0.5])))
0.5
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import as_operand, promote_args_inexact
from flamefx.scipy import special


def logpmf(x, n, p):
    """gammaln(n + 1) + sum (x log p - gammaln(x + 1)).

    >>> round(float(logpmf(fnp.array([2, 0]), 2, fnp.array([0.5, 0.5]))), 6)
    -1.386294
    """
    (p,) = promote_args_inexact(p)
    x, n = as_operand(x, "x"), as_operand(n, "n")
    if not (dtypes.is_int(x.dtype) and dtypes.is_int(n.dtype)):
        raise FlamefxValueError(f"multinomial: x and n must be integer arrays, got {x.dtype} "
                                f"and {n.dtype}\n  at {user_frame()}")
    x, n = x.astype(p.dtype), n.astype(p.dtype)
    log_probs = special.gammaln(n + 1.0) + fnp.sum(
        special.xlogy(x, p) - special.gammaln(x + 1.0), axis=-1)
    return fnp.where(fnp.sum(x, axis=-1) == n, log_probs, -np.inf)


def pmf(x, n, p):
    """P(X = x).

    >>> float(pmf(fnp.array([1, 0]), 2, fnp.array([0.5, 0.5])))
    0.0
    """
    return fnp.exp(logpmf(x, n, p))
