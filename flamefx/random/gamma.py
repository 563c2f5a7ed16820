"""The gamma family: gamma, loggamma, beta, dirichlet, chisquare, f, t.

Gamma draws follow JAX: one key per element (``split(key, size)``), and for each element
Marsaglia and Tsang's rejection sampler (2000) as two nested ``while_loop``s, vmapped over
the elements (a batched loop runs until every element is accepted). Their derivative in
``a`` is the implicit-reparameterization one (Figurnov et al. 2018), as JAX's:
``dx/da = random_gamma_grad(a, x)``, attached with ``custom_jvp``.

>>> from flamefx.random.keys import key
>>> x = gamma(key(0), 2.0, (4,))
>>> x.shape, bool((x > 0).all())
((4,), True)
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.primitives import control_flow
from flamefx.primitives.random_ops import random_gamma_grad
from flamefx.random.continuous import (as_param, draw_shape, exponential, float_dtype,
                                       normal, param_shape, uniform)
from flamefx.random.keys import split, unwrap
from flamefx.transforms.batching import vmap
from flamefx.transforms.ad import stop_gradient
from flamefx.transforms.custom import custom_jvp


def _gamma_one(data, alpha, log_space: bool):
    """One Gamma(alpha) draw (or its log) from one key's words: JAX's _gamma_one."""
    dtype = alpha.dtype

    def const(v):
        return fnp.asarray(v, dtype)

    zero, one = const(0), const(1)
    # alpha < 1 is boosted: Gamma(alpha) ~ Gamma(alpha + 1) * U ** (1 / alpha).
    boost_mask = alpha >= one
    alpha_orig = alpha
    alpha = fnp.where(boost_mask, alpha, alpha + one)
    d = alpha - const(1.0 / 3.0)
    c = const(1.0 / 3.0) / fnp.sqrt(d)

    def rejected(state):
        _, x_sq, v, u = state
        squeeze = u >= one - const(0.0331) * (x_sq * x_sq)
        exact = fnp.log(u) >= x_sq * const(0.5) + d * (one - v + fnp.log(v))
        return squeeze & exact

    def next_candidate(state):
        k, _, _ = state
        k, subkey = split(k)
        x = normal(subkey, (), dtype)
        return k, x, one + x * c

    def propose(state):
        k, x_key, u_key = split(state[0], 3)
        _, x, v = control_flow.while_loop(lambda s: s[2] <= zero, next_candidate,
                                          (x_key, zero, const(-1)))
        return k, x * x, v * v * v, uniform(u_key, (), dtype)

    k, subkey = split(data)
    _, _, v, _ = control_flow.while_loop(rejected, propose, (k, zero, one, const(2)))
    if log_space:
        log_samples = -exponential(subkey, (), dtype)
        log_boost = fnp.where(boost_mask | (log_samples == 0), zero,
                              log_samples * (one / alpha_orig))
        return fnp.log(d) + fnp.log(v) + log_boost
    samples = one - uniform(subkey, (), dtype)
    boost = fnp.where(boost_mask, one, fnp.power(samples, one / alpha_orig))
    return d * v * boost


def _gamma_grad(sample, a, log_space: bool):
    if not log_space:
        return random_gamma_grad(a, sample)
    x = fnp.exp(sample)
    x = fnp.where(x == 0, float(np.finfo(x.dtype).tiny), x)
    return random_gamma_grad(a, x) / x


def _sampler(log_space: bool):
    @custom_jvp
    def sample(data, a):
        keys = split(data, (a.size,))
        flat = vmap(lambda k, alpha: _gamma_one(k, alpha, log_space))(keys, a.reshape(-1))
        return flat.reshape(a.shape)

    @sample.defjvp
    def sample_jvp(primals, tangents):
        data, a = primals
        out = sample(data, a)
        return out, tangents[1] * _gamma_grad(out, a, log_space)

    return sample


_gamma_sample = _sampler(log_space=False)
_loggamma_sample = _sampler(log_space=True)


def _gamma(key, a, shape, dtype, log_space: bool, where: str):
    dtype = float_dtype(dtype, where)
    data, _ = unwrap(key, where)
    shape = param_shape(shape, where, a)
    a = fnp.broadcast_to(as_param(a, dtype, where), shape)
    if a.size == 0:
        return fnp.zeros(shape, dtype)
    return (_loggamma_sample if log_space else _gamma_sample)(data, a)


def gamma(key, a, shape=None, dtype=None):
    """Gamma(``a``, 1) floats; differentiable in ``a`` (implicit reparameterization).

    >>> from flamefx.random.keys import key
    >>> gamma(key(0), fnp.array([0.5, 5.0])).shape
    (2,)
    """
    return _gamma(key, a, shape, dtype, False, "gamma")


def loggamma(key, a, shape=None, dtype=None):
    """The logs of Gamma(``a``) draws, computed in log space (accurate for tiny ``a``,
    whose draws underflow to 0).

    >>> from flamefx.random.keys import key
    >>> bool(loggamma(key(0), 0.01, (3,)).max() < 0)
    True
    """
    return _gamma(key, a, shape, dtype, True, "loggamma")


def beta(key, a, b, shape=None, dtype=None):
    """Beta(``a``, ``b``) floats, from two log-gamma draws (as JAX).

    >>> from flamefx.random.keys import key
    >>> x = beta(key(0), 2.0, 3.0, (5,))
    >>> bool(((x > 0) & (x < 1)).all())
    True
    """
    dtype = float_dtype(dtype, "beta")
    data, _ = unwrap(key, "beta")
    shape = param_shape(shape, "beta", a, b)
    key_a, key_b = split(data)
    a = fnp.broadcast_to(as_param(a, dtype, "beta"), shape)
    b = fnp.broadcast_to(as_param(b, dtype, "beta"), shape)
    log_gamma_a = loggamma(key_a, a, shape, dtype)
    log_gamma_b = loggamma(key_b, b, shape, dtype)
    log_max = fnp.maximum(log_gamma_a, log_gamma_b)
    gamma_a_scaled = fnp.exp(log_gamma_a - log_max)
    gamma_b_scaled = fnp.exp(log_gamma_b - log_max)
    return gamma_a_scaled / (gamma_a_scaled + gamma_b_scaled)


def dirichlet(key, alpha, shape=None, dtype=None):
    """Dirichlet(``alpha``) vectors along the last axis: a softmax of log-gamma draws.

    >>> from flamefx.random.keys import key
    >>> x = dirichlet(key(0), fnp.array([1.0, 2.0, 3.0]), (4,))
    >>> x.shape, bool(fnp.allclose(x.sum(-1), 1.0))
    ((4, 3), True)
    """
    dtype = float_dtype(dtype, "dirichlet")
    data, _ = unwrap(key, "dirichlet")
    alpha = as_param(alpha, dtype, "dirichlet")
    if alpha.ndim < 1:
        raise FlamefxValueError(f"dirichlet: alpha must have at least one axis, got shape "
                                f"{alpha.shape}\n  at {user_frame()}")
    batch = draw_shape(shape, "dirichlet", alpha.shape[:-1])
    logs = loggamma(data, alpha, batch + alpha.shape[-1:], dtype)
    # softmax, as jax.nn.softmax: the max is a constant for differentiation.
    shifted = fnp.exp(logs - stop_gradient(fnp.max(logs, axis=-1, keepdims=True)))
    return shifted / fnp.sum(shifted, axis=-1, keepdims=True)


def chisquare(key, df, shape=None, dtype=None):
    """Chi-square(``df``) floats: ``2 * Gamma(df / 2)``, drawn in log space (as JAX).

    >>> from flamefx.random.keys import key
    >>> bool((chisquare(key(0), 3.0, (5,)) > 0).all())
    True
    """
    dtype = float_dtype(dtype, "chisquare")
    shape = param_shape(shape, "chisquare", df)
    half_df = as_param(df, dtype, "chisquare") / fnp.asarray(2, dtype)
    return fnp.exp(loggamma(key, half_df, shape, dtype)) * fnp.asarray(2, dtype)


def t(key, df, shape=None, dtype=None):
    """Student's t(``df``) floats: ``normal * sqrt((df/2) / Gamma(df/2))``.

    >>> from flamefx.random.keys import key
    >>> t(key(0), 5.0, (3,)).shape
    (3,)
    """
    dtype = float_dtype(dtype, "t")
    data, _ = unwrap(key, "t")
    shape = param_shape(shape, "t", df)
    key_n, key_g = split(data)
    n = normal(key_n, shape, dtype)
    half_df = as_param(df, dtype, "t") / fnp.asarray(2, dtype)
    g = gamma(key_g, half_df, shape, dtype)
    return n * fnp.sqrt(half_df / g)



def f(key, dfnum, dfden, shape=None, dtype=None):
    """F(``dfnum``, ``dfden``) floats: a ratio of scaled chi-square draws.

    >>> from flamefx.random.keys import key
    >>> bool((f(key(0), 3.0, 7.0, (5,)) > 0).all())
    True
    """
    dtype = float_dtype(dtype, "f")
    data, _ = unwrap(key, "f")
    shape = param_shape(shape, "f", dfnum, dfden)
    dfnum, dfden = as_param(dfnum, dtype, "f"), as_param(dfden, dtype, "f")
    key_dfd, key_dfn = split(data)
    numerator = chisquare(key_dfn, dfnum, shape, dtype) / dfnum
    denominator = chisquare(key_dfd, dfden, shape, dtype) / dfden
    return numerator / denominator
