"""flamefx.scipy.stats: jax.scipy.stats's distributions, one module each, composed of
flamefx.numpy and flamefx.scipy.special (values and gradients in x and the parameters).

>>> from flamefx.scipy import stats
>>> float(stats.norm.cdf(0.0))
0.5
"""

from flamefx.scipy.stats import (  # noqa: F401
    bernoulli, beta, betabinom, binom, cauchy, chi2, dirichlet, expon, gamma, gennorm, geom,
    laplace, logistic, multinomial, multivariate_normal, nbinom, norm, pareto, poisson, t,
    truncnorm, uniform, vonmises)
