"""The Dirichlet distribution (jax.scipy.stats.dirichlet): ``x`` holds points of the simplex
along its first axis (JAX's layout, not SciPy's last axis); ``alpha`` is 1-d. Points off the
simplex (an entry <= 0, or a sum more than 1e-6 from 1) have log-density -inf.

>>> import flamefx.numpy as fnp
>>> from flamefx.scipy.stats import dirichlet
>>> round(float(dirichlet.pdf(fnp.array([0.25, 0.75]), fnp.array([1.0, 1.0]))), 6)
1.0
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import promote_dtypes_inexact
from flamefx.scipy import special


def logpdf(x, alpha):
    """sum (alpha - 1) log x - (sum gammaln(alpha) - gammaln(sum alpha)); ``x`` may leave
    out its last entry (then 1 - sum of the others).

    >>> round(float(logpdf(fnp.array([0.5]), fnp.array([2.0, 2.0]))), 6)
    0.405465
    """
    x, alpha = promote_dtypes_inexact(x, alpha)
    if alpha.ndim != 1:
        raise FlamefxValueError(f"dirichlet: alpha must be one-dimensional, got shape "
                                f"{alpha.shape}\n  at {user_frame()}")
    k = alpha.shape[0]
    if not x.ndim or x.shape[0] not in (k, k - 1):
        raise FlamefxValueError(f"dirichlet: x of shape {x.shape} needs {k} (or {k - 1}) "
                                f"entries along its first axis for alpha of shape "
                                f"{alpha.shape}\n  at {user_frame()}")
    if x.shape[0] != k:
        x = fnp.concatenate([x, 1.0 - fnp.sum(x, axis=0, keepdims=True)], axis=0)
    normalizer = fnp.sum(special.gammaln(alpha)) - special.gammaln(fnp.sum(alpha))
    alpha = fnp.reshape(alpha, (k,) + (1,) * (x.ndim - 1))
    log_probs = fnp.sum(special.xlogy(alpha - 1.0, x), axis=0) - normalizer
    on_simplex = fnp.all(x > 0, axis=0) & (fnp.abs(fnp.sum(x, axis=0) - 1.0) < 1e-6)
    return fnp.where(on_simplex, log_probs, -np.inf)


def pdf(x, alpha):
    """The Dirichlet density.

    >>> round(float(pdf(fnp.array([0.5, 0.5]), fnp.array([2.0, 2.0]))), 6)
    1.5
    """
    return fnp.exp(logpdf(x, alpha))
