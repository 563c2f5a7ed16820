"""flamefx.random: functional, counter-based random numbers, as ``jax.random``.

A key is a value: the same key always gives the same numbers, so split a key whenever
you need fresh randomness. ``key(seed)`` makes a typed key (shape ``()``, dtype
``key<fry>``), ``PRNGKey(seed)`` a raw ``uint32[2]`` one; every function takes either.
The bits are JAX's default (the partitionable Threefry-2x32), and each distribution is
JAX's algorithm on them, so a seed gives JAX's numbers (see ``flamefx/random/keys.py``).

>>> import flamefx.random as frandom
>>> params_key, dropout_key = frandom.split(frandom.key(0))
>>> frandom.normal(params_key, (2, 3)).shape
(2, 3)

Modules: ``keys`` (keys, split, fold_in, bits), ``continuous`` (uniform, normal and the
distributions built directly on them), ``gamma`` (the gamma family), ``discrete``
(bernoulli, randint, geometric, categorical, choice, permutation, poisson, binomial,
multinomial), ``multivariate`` (multivariate_normal, orthogonal).
"""

from flamefx.random.continuous import (ball, cauchy, double_sided_maxwell, exponential,
                                       generalized_normal, gumbel, laplace, logistic, lognormal,
                                       maxwell, normal, pareto, rayleigh, triangular,
                                       truncated_normal, uniform, wald, weibull_min)
from flamefx.random.discrete import (bernoulli, binomial, categorical, choice, geometric,
                                     multinomial, permutation, poisson, rademacher, randint)
from flamefx.random.gamma import beta, chisquare, dirichlet, f, gamma, loggamma, t
from flamefx.random.keys import (KeyArray, PRNGKey, bits, clone, fold_in, key, key_data,
                                 key_impl, split, wrap_key_data)
from flamefx.random.multivariate import multivariate_normal, orthogonal

__all__ = [
    "KeyArray", "PRNGKey", "ball", "bernoulli", "beta", "binomial", "bits", "categorical",
    "cauchy", "chisquare", "choice", "clone", "dirichlet", "double_sided_maxwell",
    "exponential", "f", "fold_in", "gamma", "generalized_normal", "geometric", "gumbel", "key",
    "key_data", "key_impl", "laplace", "logistic", "loggamma", "lognormal", "maxwell",
    "multinomial", "multivariate_normal", "normal", "orthogonal", "pareto", "permutation",
    "poisson", "rademacher", "randint", "rayleigh", "split", "t", "triangular",
    "truncated_normal", "uniform", "wald", "weibull_min", "wrap_key_data",
]
