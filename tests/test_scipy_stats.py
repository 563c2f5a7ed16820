"""flamefx.scipy.stats against scipy.stats in float64 (in and out of support, broadcasting
loc/scale against x), and gradients in x and the parameters by check_grads."""

import numpy as np
import pytest
import scipy.stats as sst

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.errors import FlamefxValueError
from flamefx.scipy import stats
from flamefx.test_util import check_grads
from tests.grad_checks import check_grads_in

RNG = np.random.default_rng(0)


def _f64(a):
    """A float64 flamefx array whatever the x64 setting."""
    return core.to_array(np.asarray(a, np.float64))


def _u(low, high, shape=(4,)):
    return RNG.uniform(low, high, shape)


# Points in and out of each support; loc/scale broadcast as columns against x's rows.
X = np.array([-3.0, -0.7, 0.0, 0.4, 1.3, 2.5, 6.0])
LOC, SCALE = np.array([[0.0], [0.5]]), np.array([[1.0], [2.0]])
UNIT = np.array([-0.2, 0.0, 0.1, 0.35, 0.8, 1.0, 1.5])
Q = np.array([0.001, 0.1, 0.5, 0.77, 0.999])
K = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 5.0, 2.5])
# geom, nbinom and binom do not check that k is an integer (JAX's; scipy gives -inf there).
K_INT = K[:-1]

# (distribution, function, arguments): compared with scipy.stats.<distribution>.<function>.
VALUES = [
    *[("norm", f, [X, LOC, SCALE]) for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    ("norm", "logcdf", [np.array([-40.0, -25.0, -10.0, 10.0])]),
    ("norm", "ppf", [Q, LOC, SCALE]), ("norm", "isf", [Q, LOC, SCALE]),
    *[("laplace", f, [X, LOC, SCALE]) for f in ("logpdf", "pdf", "cdf")],
    *[("logistic", f, [X, LOC, SCALE]) for f in ("logpdf", "pdf", "cdf", "sf")],
    ("logistic", "logpdf", [np.array([-800.0, 800.0])]),
    ("logistic", "ppf", [Q, LOC, SCALE]), ("logistic", "isf", [Q, LOC, SCALE]),
    *[("cauchy", f, [X, LOC, SCALE])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    ("cauchy", "ppf", [Q, LOC, SCALE]), ("cauchy", "isf", [Q, LOC, SCALE]),
    *[("expon", f, [X, LOC, SCALE])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    ("expon", "ppf", [Q, LOC, SCALE]),
    *[("uniform", f, [X, LOC, SCALE]) for f in ("logpdf", "pdf", "cdf")],
    ("uniform", "ppf", [np.array([-0.5, 0.0, 0.3, 1.0, 1.5]), LOC, SCALE]),
    *[("t", f, [X, np.array([[1.5], [7.0]]), LOC, SCALE]) for f in ("logpdf", "pdf")],
    *[("gamma", f, [X, np.array([[0.7], [3.0]]), LOC, SCALE])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    *[("chi2", f, [X, np.array([[1.5], [5.0]]), LOC, SCALE])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    *[("beta", f, [UNIT, np.array([[0.8], [2.5]]), np.array([[1.5], [3.0]])])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    ("beta", "logpdf", [X, 2.0, 3.0, LOC, SCALE * 3]),
    *[("bernoulli", f, [K, np.array([[0.3], [0.9]])]) for f in ("logpmf", "pmf", "cdf")],
    ("bernoulli", "logpmf", [K, 0.3, 1.0]),
    # q = 0: JAX (and flamefx) give 0, scipy -1.
    ("bernoulli", "ppf", [np.array([0.01, 0.2, 0.5, 0.8, 1.0]), np.array([[0.3], [0.9]])]),
    *[("poisson", f, [K, np.array([[0.5], [3.0]])]) for f in ("logpmf", "pmf", "cdf")],
    ("poisson", "logpmf", [K, 2.0, 1.0]), ("poisson", "cdf", [K, 2.0, 1.0]),
    *[("geom", f, [K_INT, np.array([[0.2], [0.7]])]) for f in ("logpmf", "pmf")],
    ("geom", "logpmf", [K_INT, 0.4, -1.0]),
    *[("binom", f, [K_INT, np.array([[3.0], [5.0]]), np.array([[0.3], [0.6]])])
      for f in ("logpmf", "pmf")],
    ("binom", "logpmf", [np.array([0.0, 1.0, 4.0]), 4.0, np.array([[0.0], [1.0]])]),
    *[("pareto", f, [np.abs(X) + 0.5, np.array([[0.7], [3.0]]), LOC, SCALE])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
    ("pareto", "ppf", [Q, np.array([[0.7], [3.0]]), LOC, SCALE]),
    *[("nbinom", f, [K_INT, np.array([[1.0], [3.5]]), np.array([[0.3], [0.8]])])
      for f in ("logpmf", "pmf")],
    ("nbinom", "logpmf", [K_INT, 2.0, 0.4, 1.0]),
    # betabinom floors k (JAX's choice; scipy gives -inf off the integers).
    *[("betabinom", f, [K_INT, np.array([[3.0], [6.0]]), np.array([[0.5], [2.0]]), 1.5])
      for f in ("logpmf", "pmf")],
    *[("vonmises", f, [X, np.array([[0.5], [20.0]])]) for f in ("logpdf", "pdf")],
    # Intervals left of, around, right of and far from the mode.
    *[("truncnorm", f, [X, np.array([[-2.0], [-1.0], [0.5], [8.0]]),
                        np.array([[-0.5], [1.5], [3.0], [12.0]]), 0.3, 1.7])
      for f in ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")],
]


@pytest.mark.parametrize("dist,fn,args", VALUES,
                         ids=[f"{d}.{f}-{i}" for i, (d, f, _) in enumerate(VALUES)])
def test_values_match_scipy(dist, fn, args):
    got = getattr(getattr(stats, dist), fn)(*[_f64(a) for a in args])
    assert got.dtype == np.float64
    with np.errstate(all="ignore"):
        want = getattr(getattr(sst, dist), fn)(*args)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-12, equal_nan=True)


# (distribution, function, arguments inside the support, argnums to differentiate)
GRADS = [
    ("norm", "logpdf", [_u(-2, 2), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("norm", "logcdf", [_u(-2, 2), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("norm", "ppf", [_u(0.1, 0.9), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("laplace", "logpdf", [_u(0.5, 2), _u(-1, 0), _u(0.5, 2)], (0, 1, 2)),
    ("laplace", "cdf", [np.array([-2.0, -0.5, 0.7, 3.0]), 0.2, 1.5], (0, 1, 2)),
    ("logistic", "logpdf", [_u(-3, 3), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("logistic", "cdf", [_u(-3, 3), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("cauchy", "logcdf", [_u(-3, 3), _u(-1, 1), _u(0.5, 2)], (0, 1, 2)),
    ("expon", "logpdf", [_u(1, 3), _u(-1, 0.5), _u(0.5, 2)], (0, 1, 2)),
    ("expon", "logcdf", [_u(1, 3), _u(-1, 0.5), _u(0.5, 2)], (0, 1, 2)),
    ("uniform", "cdf", [_u(0.2, 0.8), _u(-0.2, 0.1), _u(1.0, 2.0)], (0, 1, 2)),
    ("t", "logpdf", [_u(-3, 3), _u(1, 6), _u(-1, 1), _u(0.5, 2)], (0, 1, 2, 3)),
    ("gamma", "logpdf", [_u(1, 4), _u(0.5, 3), _u(-0.5, 0.5), _u(0.5, 2)], (0, 1, 2, 3)),
    ("gamma", "cdf", [_u(1, 4), _u(0.5, 3), _u(-0.5, 0.5), _u(0.5, 2)], (0, 1, 2, 3)),
    ("gamma", "logsf", [_u(1, 4), _u(0.5, 3)], (0, 1)),
    ("chi2", "logpdf", [_u(1, 4), _u(1, 5)], (0, 1)),
    ("chi2", "sf", [_u(1, 4), _u(1, 5)], (0, 1)),
    ("poisson", "cdf", [np.array([0.0, 1.0, 3.0]), _u(0.5, 4, (3,))], (1,)),
    ("beta", "logpdf", [_u(0.2, 0.8), _u(0.5, 3), _u(0.5, 3)], (0, 1, 2)),
    ("beta", "cdf", [_u(0.2, 0.8), _u(0.5, 3), _u(0.5, 3)], (0,)),
    ("bernoulli", "logpmf", [np.array([0.0, 1.0, 1.0, 0.0]), _u(0.2, 0.8)], (1,)),
    ("poisson", "logpmf", [np.array([0.0, 1.0, 3.0, 7.0]), _u(0.5, 4)], (1,)),
    ("poisson", "cdf", [np.array([0.0, 1.0, 3.0, 7.0]), _u(0.5, 4)], (1,)),
    ("geom", "logpmf", [np.array([1.0, 2.0, 4.0, 7.0]), _u(0.2, 0.8)], (1,)),
    ("binom", "logpmf", [np.array([0.0, 1.0, 3.0, 5.0]), _u(5, 8), _u(0.2, 0.8)], (1, 2)),
    ("pareto", "logpdf", [_u(3, 5), _u(0.5, 3), _u(-0.5, 0.5), _u(0.5, 2)], (0, 1, 2, 3)),
    ("pareto", "logcdf", [_u(3, 5), _u(0.5, 3), _u(-0.5, 0.5), _u(0.5, 2)], (0, 1, 2, 3)),
    ("nbinom", "logpmf", [np.array([0.0, 1.0, 3.0, 6.0]), _u(0.5, 4), _u(0.2, 0.8)], (1, 2)),
    ("betabinom", "logpmf", [np.array([0.0, 1.0, 3.0, 5.0]), 5.0, _u(0.5, 3), _u(0.5, 3)],
     (2, 3)),
    ("vonmises", "logpdf", [_u(-3, 3), _u(0.5, 30)], (0, 1)),
    ("truncnorm", "logpdf", [_u(-0.5, 0.5), _u(-3, -1), _u(1, 3), _u(-0.2, 0.2),
                             _u(0.8, 1.5)], (0, 1, 2, 3, 4)),

    ("gennorm", "logpdf", [np.array([-1.5, -0.4, 0.3, 2.0]), _u(0.8, 3)], (0, 1)),
    ("gennorm", "cdf", [np.array([-1.5, -0.4, 0.3, 2.0]), _u(0.8, 3)], (0, 1)),
]


@pytest.mark.parametrize("dist,fn,args,argnums", GRADS,
                         ids=[f"{d}.{f}-{i}" for i, (d, f, _, _) in enumerate(GRADS)])
def test_gradients(dist, fn, args, argnums):
    check_grads_in(getattr(getattr(stats, dist), fn), [_f64(a) for a in args], argnums)


def _spd(rng, n, batch=()):
    a = rng.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def test_multivariate_normal_values():
    rng = np.random.default_rng(1)
    x, mean, cov = rng.standard_normal((5, 3)), rng.standard_normal(3), _spd(rng, 3)
    want = sst.multivariate_normal.logpdf(x, mean, cov)
    got = stats.multivariate_normal.logpdf(_f64(x), _f64(mean), _f64(cov))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(stats.multivariate_normal.pdf(_f64(x), _f64(mean),
                                                                         _f64(cov))),
                               np.exp(want), rtol=1e-10)
    # A batch of covariances broadcast against a batch of points.
    covs = _spd(rng, 3, (4,))
    got = stats.multivariate_normal.logpdf(_f64(x[:4]), _f64(mean), _f64(covs))
    want = [sst.multivariate_normal.logpdf(x[i], mean, covs[i]) for i in range(4)]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    # Isotropic (scalar) covariance, and 0-d mean.
    np.testing.assert_allclose(
        np.asarray(stats.multivariate_normal.logpdf(_f64(x), _f64(mean), _f64(2.0))),
        sst.multivariate_normal.logpdf(x, mean, 2.0 * np.eye(3)), rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(stats.multivariate_normal.logpdf(_f64(0.3), _f64(0.1), _f64(2.0))),
        sst.norm.logpdf(0.3, 0.1, np.sqrt(2.0)), rtol=1e-10)


def test_multivariate_normal_gradients_and_errors():
    rng = np.random.default_rng(2)
    x, mean, cov = rng.standard_normal((2, 3)), rng.standard_normal(3), _spd(rng, 3)
    check_grads(stats.multivariate_normal.logpdf, [_f64(x), _f64(mean), _f64(cov)], order=2)
    with pytest.raises(FlamefxValueError, match=r"cov of shape \(2, 2\)"):
        stats.multivariate_normal.logpdf(_f64(x), _f64(mean), _f64(np.eye(2)))
    with pytest.raises(NotImplementedError):
        stats.multivariate_normal.logpdf(_f64(x), _f64(mean), _f64(cov), allow_singular=True)


# truncnorm's cdfs chain three log-space masses: order 2 takes seconds, so order 1 by default.
TRUNCNORM_CDFS = [("logcdf", [_u(-0.5, 0.5), _u(-3, -1), _u(1, 3), _u(-0.2, 0.2), _u(0.8, 1.5)]),
                  ("logsf", [_u(4.5, 5.5), _u(4, 4.3), _u(6, 7), _u(-0.2, 0.2), _u(0.8, 1.5)])]


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("fn,args", TRUNCNORM_CDFS, ids=[f for f, _ in TRUNCNORM_CDFS])
def test_truncnorm_cdf_gradients(fn, args, order):
    check_grads(getattr(stats.truncnorm, fn), [_f64(a) for a in args], order=order)


def test_gennorm_values():
    # scipy's gennorm has the same standard form: exp(-|x|^beta) beta / (2 Gamma(1/beta)).
    for beta in (0.7, 1.0, 2.0, 5.0):
        np.testing.assert_allclose(np.asarray(stats.gennorm.logpdf(_f64(X), _f64(beta))),
                                   sst.gennorm.logpdf(X, beta), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(stats.gennorm.cdf(_f64(X), _f64(beta))),
                                   sst.gennorm.cdf(X, beta), rtol=1e-10, atol=1e-14)


def test_dirichlet_and_multinomial():
    rng = np.random.default_rng(3)
    alpha = np.array([0.7, 2.0, 3.5])
    x = rng.dirichlet(alpha, size=4).T           # (3, 4): points along axis 0, as JAX
    got = stats.dirichlet.logpdf(_f64(x), _f64(alpha))
    np.testing.assert_allclose(np.asarray(got), [sst.dirichlet.logpdf(x[:, i], alpha)
                                                 for i in range(4)], rtol=1e-10)
    # One entry fewer than alpha: the last is 1 - sum; off the simplex: -inf.
    np.testing.assert_allclose(float(stats.dirichlet.logpdf(_f64(x[:2, 0]), _f64(alpha))),
                               sst.dirichlet.logpdf(x[:, 0], alpha), rtol=1e-10)
    assert float(stats.dirichlet.logpdf(_f64([0.5, 0.6, 0.1]), _f64(alpha))) == -np.inf
    check_grads(lambda a: stats.dirichlet.logpdf(_f64(x), a), [_f64(alpha)], order=2)
    with pytest.raises(FlamefxValueError, match="one-dimensional"):
        stats.dirichlet.logpdf(_f64(x), _f64(np.ones((3, 1))))
    counts, p = np.array([2, 0, 3]), np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(
        float(stats.multinomial.logpmf(fnp.asarray(counts), 5, _f64(p))),
        sst.multinomial.logpmf(counts, 5, p), rtol=1e-10)
    assert float(stats.multinomial.logpmf(fnp.asarray(counts), 6, _f64(p))) == -np.inf
    check_grads(lambda q: stats.multinomial.logpmf(fnp.asarray(counts), 5, q), [_f64(p)],
                order=2)
    with pytest.raises(FlamefxValueError, match="integer"):
        stats.multinomial.logpmf(_f64(counts), 5, _f64(p))


def test_poisson_entropy():
    mu = np.array([0.0, 0.3, 1.0, 3.0, 12.0, 42.0, 99.0, 150.0, 1000.0])
    k = np.arange(2000)[:, None]
    probs = sst.poisson.pmf(k, mu)
    want = -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0), axis=0)
    got = stats.poisson.entropy(_f64(mu), _f64(np.zeros((2, 1))))
    assert got.shape == (2, mu.size)
    # Above mu = 100 JAX's asymptotic series, whose next term is ~1 / (24 mu^2).
    np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-6, atol=1e-9)
    # Away from integers: the sums stop at ceil(mu + 20) (JAX's), which steps there.
    check_grads(stats.poisson.entropy, [_f64(np.array([0.5, 4.3, 30.6, 400.0]))], order=2)


def test_integer_arguments_promote_as_jax():
    assert stats.norm.logpdf(1).dtype == np.float32
    assert stats.poisson.logpmf(np.arange(3, dtype=np.int32), 2).dtype == np.float32


def test_jit_and_vmap():
    x, loc = _f64(_u(-2, 2, (3, 4))), _f64(_u(-1, 1, (3,)))
    got = flamefx.vmap(lambda r, m: flamefx.jit(stats.norm.logpdf)(r, m))(x, loc)
    np.testing.assert_allclose(np.asarray(got),
                               sst.norm.logpdf(np.asarray(x), np.asarray(loc)[:, None]))
