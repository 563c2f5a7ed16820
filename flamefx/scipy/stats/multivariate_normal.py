"""The multivariate normal distribution (jax.scipy.stats.multivariate_normal): ``x`` and
``mean`` end in the event axis of size n; ``cov`` is a scalar (isotropic), or (..., n, n),
whose batch axes broadcast against x's. The density goes through the Cholesky factor.

>>> import numpy as np
>>> from flamefx.scipy.stats import multivariate_normal
>>> round(float(multivariate_normal.logpdf(np.zeros(2), np.zeros(2), np.eye(2))), 6)
-1.837877
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import broadcast_shapes, promote_dtypes_inexact


def _whitened(x, mean, chol):
    """L^-1 (x - mean) for each of the broadcast batch of x - mean and L."""
    y = x - mean
    n = y.shape[-1]
    batch = broadcast_shapes(y.shape[:-1], chol.shape[:-2])
    chol = fnp.broadcast_to(chol, batch + (n, n))
    y = fnp.broadcast_to(y, batch + (n,))
    solved = lax.linalg.triangular_solve(chol, fnp.expand_dims(y, -1), left_side=True,
                                         lower=True)
    return solved[..., 0]


def logpdf(x, mean, cov, allow_singular=None):
    """log of the density at ``x``; ``allow_singular`` is not supported (as JAX).

    >>> round(float(logpdf(fnp.ones(2), fnp.zeros(2), 2.0)), 6)
    -3.031024
    """
    if allow_singular is not None:
        raise NotImplementedError("allow_singular argument of multivariate_normal.logpdf")
    x, mean, cov = promote_dtypes_inexact(x, mean, cov)
    if not mean.shape:
        return -0.5 * (x - mean) ** 2 / cov - 0.5 * (math.log(2 * math.pi) + fnp.log(cov))
    n = mean.shape[-1]
    if not cov.shape:
        y = x - mean
        return (-0.5 * fnp.sum(y * y, axis=-1) / cov
                - n / 2 * (math.log(2 * math.pi) + fnp.log(cov)))
    if cov.ndim < 2 or cov.shape[-2:] != (n, n):
        raise FlamefxValueError(f"multivariate_normal.logpdf: cov of shape {cov.shape} does "
                                f"not match mean of shape {mean.shape} (want (..., {n}, {n}))"
                                f"\n  at {user_frame()}")
    chol = lax.linalg.cholesky(cov)
    z = _whitened(x, mean, chol)
    log_det_half = fnp.sum(fnp.log(fnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * fnp.sum(z * z, axis=-1) - n / 2 * math.log(2 * math.pi) - log_det_half


def pdf(x, mean, cov):
    """The density at ``x``.

    >>> round(float(pdf(fnp.zeros(2), fnp.zeros(2), fnp.eye(2))), 6)
    0.159155
    """
    return fnp.exp(logpdf(x, mean, cov))
