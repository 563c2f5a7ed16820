"""The Poisson distribution (jax.scipy.stats.poisson); negative or non-integer k has
log-probability -inf.

>>> from flamefx.scipy.stats import poisson
>>> round(float(poisson.pmf(0, 2.0)), 6)
0.135335
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpmf(k, mu, loc=0):
    """log P(K = k) for rate ``mu``.

    >>> round(float(logpmf(1, 1.0)), 6)
    -1.0
    """
    k, mu, loc = promote_args_inexact(k, mu, loc)
    x = k - loc
    log_probs = special.xlogy(x, mu) - special.gammaln(x + 1.0) - mu
    return fnp.where((x < 0) | (fnp.round(k) != k), -np.inf, log_probs)


def pmf(k, mu, loc=0):
    """P(K = k).

    >>> round(float(pmf(1, 1.0)), 6)
    0.367879
    """
    return fnp.exp(logpmf(k, mu, loc))


def cdf(k, mu, loc=0):
    """P(K <= k) = Q(floor(k - loc) + 1, mu), the regularized upper incomplete gamma.

    >>> round(float(cdf(0, 2.0)), 6)
    0.135335
    """
    k, mu, loc = promote_args_inexact(k, mu, loc)
    x = k - loc
    return fnp.where(x < 0, 0.0, special.gammaincc(fnp.floor(1.0 + x), mu))


def _entropy_by_sum(mu, max_k: int, upper):
    """-sum_k p_k log p_k over k < min(max_k, upper) (the omitted tail is below 1e-16)."""
    k = fnp.expand_dims(fnp.arange(max_k, dtype=mu.dtype), 1)
    kept = k < fnp.ceil(upper)
    # Dropped terms read p = 1 (entr 0, finite slope): entr's slope at p = 0 is -inf, which
    # forward mode would multiply by a zero tangent.
    probs = fnp.where(kept, pmf(k, mu), fnp.ones_like(mu))
    return fnp.sum(fnp.where(kept, special.entr(probs), fnp.zeros_like(mu)), axis=0)


def entropy(mu, loc=0):
    """The entropy of Poisson(mu) (``loc`` shifts without changing it), by JAX's method: a
    sum over the pmf for mu < 100, the asymptotic series above.

    >>> round(float(entropy(1.0)), 6)
    1.304842
    """
    mu, loc = promote_args_inexact(mu, loc)
    shape = mu.shape
    flat = fnp.ravel(mu)
    # Each branch sees a safe mu, so none makes NaNs (or NaN gradients) where it is not taken.
    small = _entropy_by_sum(fnp.where(flat < 10, flat, 1.0), 35, flat + 20)
    medium_mu = fnp.where((flat >= 10) & (flat < 100), flat, 10.0)
    medium = _entropy_by_sum(medium_mu, 250, medium_mu + 10 * fnp.sqrt(medium_mu) + 20)
    large_mu = fnp.where(flat >= 100, flat, 100.0)
    large = 0.5 * fnp.log(2 * np.pi * np.e * large_mu) - 1.0 / (12 * large_mu)
    out = fnp.where(flat == 0, 0.0, fnp.where(flat < 10, small,
                                               fnp.where(flat < 100, medium, large)))
    return fnp.broadcast_to(fnp.reshape(out, shape), fnp.broadcast_shapes(shape, loc.shape))
