"""Draws that need a matrix factorization: multivariate_normal and orthogonal (JAX's
algorithms, on flamefx.lax.linalg's cholesky, eigh, svd and qr).

>>> import flamefx.numpy as fnp
>>> from flamefx.random.keys import key
>>> multivariate_normal(key(0), fnp.zeros(2), fnp.eye(2), (5,)).shape
(5, 2)
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx import lax_linalg
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.random.continuous import as_shape, draw_shape, float_dtype, normal
from flamefx.random.keys import unwrap


def _factor(cov, method: str):
    """A matrix ``F`` with ``F @ F.T == cov``."""
    if method == "svd":
        u, s, _ = lax_linalg.svd(cov)
        return u * fnp.sqrt(s[..., None, :])
    if method == "eigh":
        v, w = lax_linalg.eigh(cov)
        return v * fnp.sqrt(w[..., None, :])
    return lax_linalg.cholesky(cov)


def multivariate_normal(key, mean, cov, shape=None, dtype=None, method: str = "cholesky"):
    """Normal vectors with ``mean`` (``(..., n)``) and covariance ``cov`` (``(..., n, n)``):
    ``mean + F @ z`` for a factor ``F F^T = cov`` by ``method`` ('cholesky', 'eigh' or
    'svd'; the latter two also take semi-definite ``cov``). ``shape`` is the batch shape.
    With 'cholesky' the draws are JAX's; eigh/svd factors may differ from JAX's in the signs
    of their vectors (LAPACK's choice), which changes the draws but not their distribution.

    >>> import flamefx.numpy as fnp
    >>> from flamefx.random.keys import key
    >>> multivariate_normal(key(0), fnp.zeros(3), fnp.eye(3)).shape
    (3,)
    """
    data, _ = unwrap(key, "multivariate_normal")
    if method not in ("svd", "eigh", "cholesky"):
        raise FlamefxValueError(f"multivariate_normal: method must be one of 'svd', 'eigh', "
                                f"'cholesky', got {method!r}\n  at {user_frame()}")
    mean, cov = fnp.asarray(mean), fnp.asarray(cov)
    dtype = float_dtype(dtype if dtype is not None else fnp.result_type(mean, cov, float),
                        "multivariate_normal")
    mean, cov = mean.astype(dtype), cov.astype(dtype)
    if mean.ndim < 1 or cov.ndim < 2:
        raise FlamefxValueError(f"multivariate_normal: mean needs rank >= 1 and cov rank >= 2, "
                                f"got shapes {mean.shape} and {cov.shape}\n  at {user_frame()}")
    n = mean.shape[-1]
    if cov.shape[-2:] != (n, n):
        raise FlamefxValueError(f"multivariate_normal: cov.shape must be (..., {n}, {n}) for "
                                f"mean.shape {mean.shape}, got {cov.shape}\n  at {user_frame()}")
    shape = draw_shape(shape, "multivariate_normal", mean.shape[:-1], cov.shape[:-2])
    factor = _factor(cov, method)
    z = normal(data, shape + (n,), dtype)
    return mean + fnp.einsum("...ij,...j->...i", factor, z)


def orthogonal(key, n: int, shape=(), dtype=None, m: int | None = None):
    """Haar-random ``n x m`` matrices (default ``m = n``) with orthonormal columns (or rows
    when ``n < m``): the QR of a normal matrix, signs fixed by R's diagonal (as JAX).

    >>> from flamefx.random.keys import key
    >>> q = orthogonal(key(0), 3)
    >>> bool(fnp.allclose(q @ q.T, fnp.eye(3), atol=1e-5))
    True
    """
    data, _ = unwrap(key, "orthogonal")
    dtype = float_dtype(dtype, "orthogonal")
    shape = as_shape(shape, "orthogonal")
    n = int(n)
    m = n if m is None else int(m)
    z = normal(data, shape + (max(n, m), min(n, m)), dtype)
    q, r = lax_linalg.qr(z, full_matrices=False)
    d = fnp.diagonal(r, axis1=-2, axis2=-1)
    x = q * fnp.expand_dims(fnp.sign(d), -2)
    return fnp.swapaxes(x, -1, -2) if n < m else x
