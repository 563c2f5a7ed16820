"""flamefx.random's distributions: JAX's numbers for fixed keys, moments and goodness of fit
(Kolmogorov-Smirnov, or chi-square for discrete ones) against scipy.stats on 10**5 draws,
dtype and shape rules, jit/vmap against eager, and gradients of gamma draws.

The constant vectors were printed by jax 0.10.2 (CPU, default partitionable threefry) with
the calls named in each comment; jax is not imported here.
"""

import numpy as np
import pytest
import scipy.special
import scipy.stats

import flamefx
import flamefx.numpy as fnp
from flamefx import config
from flamefx import random as frandom
from flamefx.primitives.random_ops import random_gamma_grad
from flamefx.test_util import check_grads

N = 100_000


def _draw(f, seed=0):
    return np.asarray(f(frandom.key(seed)), np.float64)


# --- JAX's numbers ---------------------------------------------------------------------------


def test_discrete_draws_equal_jax():
    # jax.random.randint(key(4), (9,), -5, 1000) and (key(4), (4,), -2**31, 2**31 - 1)
    assert frandom.randint(frandom.key(4), (9,), -5, 1000).tolist() == [
        554, 606, 2, 90, 580, 529, 374, 954, 945]
    assert frandom.randint(frandom.key(4), (4,), -2**31, 2**31 - 1).tolist() == [
        591994710, 341517154, 867671949, 517258274]
    # jax.random.permutation(key(5), 10); choice(key(6), 10, (4,), replace=False);
    # choice(key(6), 4, (8,), p=[.1, .2, .3, .4])
    assert frandom.permutation(frandom.key(5), 10).tolist() == [9, 0, 2, 4, 8, 1, 3, 5, 7, 6]
    assert frandom.choice(frandom.key(6), 10, (4,), replace=False).tolist() == [2, 7, 0, 6]
    p = fnp.array([0.1, 0.2, 0.3, 0.4])
    assert frandom.choice(frandom.key(6), 4, (8,), p=p).tolist() == [2, 3, 3, 3, 1, 3, 2, 3]
    # jax.random.categorical(key(7), log([.1, .2, .7]), shape=(8,))
    logits = fnp.log(fnp.array([0.1, 0.2, 0.7]))
    assert frandom.categorical(frandom.key(7), logits, shape=(8,)).tolist() == [
        1, 2, 2, 2, 2, 2, 2, 2]
    # jax.random.bernoulli(key(8), 0.3, (10,)); poisson(key(9), [0.5, 3, 12, 100])
    assert frandom.bernoulli(frandom.key(8), 0.3, (10,)).tolist() == [
        True, True, False, False, True, True, True, False, True, True]
    assert frandom.poisson(frandom.key(9), fnp.array([0.5, 3.0, 12.0, 100.0])).tolist() == [
        0, 6, 13, 89]
    # jax.random.geometric(key(14), 0.3, (6,))
    assert frandom.geometric(frandom.key(14), 0.3, (6,)).tolist() == [6, 1, 15, 10, 4, 2]
    # jax.random.binomial(key(22), [5, 20, 100, 1000], [.3, .7, .2, .5]) (inversion, then
    # BTRS for the last two); multinomial(key(23), 20, [.2, .3, .5])
    assert frandom.binomial(frandom.key(22), fnp.array([5.0, 20.0, 100.0, 1000.0]),
                            fnp.array([0.3, 0.7, 0.2, 0.5])).tolist() == [2, 15, 30, 489]
    assert frandom.multinomial(frandom.key(23), 20.0, fnp.array([0.2, 0.3, 0.5])).tolist() == [
        4, 3, 13]


def test_draws_equal_jax_with_x64():
    # With jax_enable_x64: randint(key(4), (4,), -2**40, 2**40) (64-bit words) and
    # normal(key(3), (3,)) in float64
    with config.override("enable_x64", True):
        assert frandom.randint(frandom.key(4), (4,), -2**40, 2**40).tolist() == [
            119831735373, 683979567869, 340876299970, 10972502304]
        np.testing.assert_allclose(frandom.normal(frandom.key(3), (3,)),
                                   [1.1048739767803086, -0.11756943795234803,
                                    -0.7110143201629989], rtol=1e-14)


def test_continuous_draws_equal_jax():
    # Same bits as JAX; the transcendental functions (log, erf_inv, pow) may differ in the
    # last ulp between XLA and NumPy/SciPy (a few ulp after wald's cancellation), hence rtol.
    # jax.random.gamma(key(10), [0.3, 1, 2.5, 10]); beta(key(11), 2, 3, (3,));
    # exponential(key(12), (3,)); truncated_normal(key(13), -1, 2, (3,))
    cases = [
        (frandom.gamma(frandom.key(10), fnp.array([0.3, 1.0, 2.5, 10.0])),
         [0.48241955041885376, 0.6674570441246033, 3.4960567951202393, 9.054032325744629]),
        (frandom.beta(frandom.key(11), 2.0, 3.0, (3,)),
         [0.517713725566864, 0.42271995544433594, 0.15045325458049774]),
        (frandom.exponential(frandom.key(12), (3,)),
         [0.9182754755020142, 0.761666476726532, 0.78696608543396]),
        (frandom.truncated_normal(frandom.key(13), -1.0, 2.0, (3,)),
         [1.352756142616272, -0.1147041916847229, 1.2251468896865845]),
        # triangular(key(15), 0, 1, 3, (3,)); rayleigh(key(16), 2, (3,));
        # lognormal(key(17), 0.5, (3,)); wald(key(18), 1.5, (3,)); f(key(19), 3, 7, (3,));
        # multivariate_normal(key(20), [1, -1], [[2, .3], [.3, 1]]); laplace(key(21), (3,))
        (frandom.triangular(frandom.key(15), 0.0, 1.0, 3.0, (3,)),
         [1.0993757247924805, 1.6355341672897339, 1.710981845855713]),
        (frandom.rayleigh(frandom.key(16), 2.0, (3,)),
         [0.6578561067581177, 5.719985008239746, 2.1291275024414062]),
        (frandom.lognormal(frandom.key(17), 0.5, (3,)),
         [0.7162384986877441, 1.8156133890151978, 1.4365737438201904]),
        (frandom.wald(frandom.key(18), 1.5, (3,)),
         [16.169031143188477, 2.140040397644043, 0.6849903464317322]),
        (frandom.f(frandom.key(19), 3.0, 7.0, (3,)),
         [1.259382724761963, 4.320979118347168, 2.7485556602478027]),
        (frandom.multivariate_normal(frandom.key(20), fnp.array([1.0, -1.0]),
                                     fnp.array([[2.0, 0.3], [0.3, 1.0]])),
         [0.3286120891571045, -1.5563884973526]),
        (frandom.laplace(frandom.key(21), (3,)),
         [-0.48346173763275146, -0.3471587896347046, 0.25862541794776917]),
    ]
    for got, expected in cases:
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- goodness of fit -------------------------------------------------------------------------

_SLOW = pytest.mark.slow  # over ~1 s on 2 cores: three or more gamma draws per value

_CONTINUOUS = [
    ("uniform", lambda k: frandom.uniform(k, (N,), minval=-2.0, maxval=3.0),
     scipy.stats.uniform(-2, 5)),
    ("normal", lambda k: frandom.normal(k, (N,)), scipy.stats.norm()),
    ("truncated_normal", lambda k: frandom.truncated_normal(k, -1.0, 2.0, (N,)),
     scipy.stats.truncnorm(-1, 2)),
    ("exponential", lambda k: frandom.exponential(k, (N,)), scipy.stats.expon()),
    ("laplace", lambda k: frandom.laplace(k, (N,)), scipy.stats.laplace()),
    ("logistic", lambda k: frandom.logistic(k, (N,)), scipy.stats.logistic()),
    ("gumbel", lambda k: frandom.gumbel(k, (N,)), scipy.stats.gumbel_r()),
    ("gumbel_high", lambda k: frandom.gumbel(k, (N,), mode="high"), scipy.stats.gumbel_r()),
    ("cauchy", lambda k: frandom.cauchy(k, (N,)), scipy.stats.cauchy()),
    ("pareto", lambda k: frandom.pareto(k, 5.0, (N,)), scipy.stats.pareto(5.0)),
    ("weibull_min", lambda k: frandom.weibull_min(k, 2.0, 1.5, (N,)),
     scipy.stats.weibull_min(1.5, scale=2.0)),
    ("maxwell", lambda k: frandom.maxwell(k, (N,)), scipy.stats.maxwell()),
    ("lognormal", lambda k: frandom.lognormal(k, 0.5, (N,)), scipy.stats.lognorm(0.5)),
    ("rayleigh", lambda k: frandom.rayleigh(k, 2.0, (N,)), scipy.stats.rayleigh(scale=2.0)),
    ("wald", lambda k: frandom.wald(k, 1.5, (N,)), scipy.stats.invgauss(1.5)),
    ("triangular", lambda k: frandom.triangular(k, 0.0, 1.0, 3.0, (N,)),
     scipy.stats.triang(1 / 3, scale=3.0)),
    pytest.param("generalized_normal", lambda k: frandom.generalized_normal(k, 1.5, (N,)),
                 scipy.stats.gennorm(1.5), marks=_SLOW),
    pytest.param("gamma_small", lambda k: frandom.gamma(k, 0.4, (N,)), scipy.stats.gamma(0.4),
                 marks=_SLOW),
    ("gamma", lambda k: frandom.gamma(k, 3.0, (N,)), scipy.stats.gamma(3.0)),
    pytest.param("loggamma", lambda k: frandom.loggamma(k, 2.0, (N,)),
                 scipy.stats.loggamma(2.0), marks=_SLOW),
    pytest.param("beta", lambda k: frandom.beta(k, 2.0, 3.0, (N,)), scipy.stats.beta(2.0, 3.0),
                 marks=_SLOW),
    pytest.param("chisquare", lambda k: frandom.chisquare(k, 3.0, (N,)), scipy.stats.chi2(3.0),
                 marks=_SLOW),
    ("t", lambda k: frandom.t(k, 5.0, (N,)), scipy.stats.t(5.0)),
    pytest.param("f", lambda k: frandom.f(k, 3.0, 9.0, (N,)), scipy.stats.f(3.0, 9.0),
                 marks=_SLOW),
    pytest.param("dirichlet_marginal",
                 lambda k: frandom.dirichlet(k, fnp.array([1.0, 2.0, 3.0]), (N // 3,))[:, 0],
                 scipy.stats.beta(1.0, 5.0), marks=_SLOW),
    ("double_sided_maxwell_magnitude",
     lambda k: fnp.abs(frandom.double_sided_maxwell(k, 1.0, 2.0, (N,)) - 1.0) / 2.0,
     scipy.stats.maxwell()),
    pytest.param("ball_radius_to_the_d",
                 lambda k: fnp.linalg.norm(frandom.ball(k, 3, shape=(N // 3,)), axis=-1) ** 3,
                 scipy.stats.uniform(), marks=_SLOW),
]


@pytest.mark.parametrize("name,draw,dist", _CONTINUOUS,
                         ids=[getattr(c, "values", c)[0] for c in _CONTINUOUS])
def test_continuous_fit_scipy(name, draw, dist):
    x = _draw(draw)
    n = len(x)  # N, or N / 3 for draws that take three gamma draws each
    assert x.shape == (n,) and n >= N // 3 and np.isfinite(x).all()
    assert scipy.stats.kstest(x, dist.cdf).pvalue > 1e-3
    mean, var, kurt = (float(m) for m in dist.stats(moments="mvk"))
    if np.isfinite(var):
        assert abs(x.mean() - mean) < 5 * np.sqrt(var / n)
    if np.isfinite(kurt):  # the variance's standard error needs the fourth moment
        assert abs(x.var() - var) < 5 * var * np.sqrt((kurt + 2) / n)


def _chi_square_pvalue(x, pmf, support):
    counts = np.array([(x == v).sum() for v in support], np.float64)
    expected = N * pmf(np.asarray(support))
    keep = expected > 5
    counts, expected = counts[keep], expected[keep]
    return scipy.stats.chisquare(counts, expected * counts.sum() / expected.sum()).pvalue


_DISCRETE = [
    ("poisson_knuth", lambda k: frandom.poisson(k, 3.0, (N,)), scipy.stats.poisson(3.0)),
    ("poisson_rejection", lambda k: frandom.poisson(k, 50.0, (N,)), scipy.stats.poisson(50.0)),
    ("randint", lambda k: frandom.randint(k, (N,), -3, 7), scipy.stats.randint(-3, 7)),
    ("geometric", lambda k: frandom.geometric(k, 0.3, (N,)), scipy.stats.geom(0.3)),
    ("binomial_inversion", lambda k: frandom.binomial(k, 12.0, 0.3, (N,)),
     scipy.stats.binom(12, 0.3)),
    ("binomial_btrs", lambda k: frandom.binomial(k, 200.0, 0.6, (N,)),
     scipy.stats.binom(200, 0.6)),
    ("bernoulli", lambda k: frandom.bernoulli(k, 0.3, (N,)), scipy.stats.bernoulli(0.3)),
    ("rademacher", lambda k: (frandom.rademacher(k, (N,)) + 1) // 2, scipy.stats.bernoulli(0.5)),
    ("categorical", lambda k: frandom.categorical(k, fnp.log(fnp.array([0.1, 0.2, 0.7])),
                                                  shape=(N,)),
     scipy.stats.rv_discrete(values=([0, 1, 2], [0.1, 0.2, 0.7]))),
    ("choice_weighted", lambda k: frandom.choice(k, 4, (N,), p=fnp.array([0.4, 0.0, 0.5, 0.1])),
     scipy.stats.rv_discrete(values=([0, 1, 2, 3], [0.4, 0.0, 0.5, 0.1]))),
]


@pytest.mark.parametrize("name,draw,dist", _DISCRETE, ids=[c[0] for c in _DISCRETE])
def test_discrete_fit_scipy(name, draw, dist):
    x = _draw(draw)
    lo, hi = dist.support()
    support = range(int(max(lo, dist.ppf(1e-9))), int(min(hi, dist.ppf(1 - 1e-9))) + 1)
    assert set(np.unique(x)) <= set(support)
    assert _chi_square_pvalue(x, dist.pmf, support) > 1e-3
    mean, var = dist.stats()
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / N) + 1e-12


def test_multivariate_normal_covariance():
    cov = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 0.5]])
    mean = np.array([1.0, -2.0, 0.5])
    for method in ("cholesky", "eigh", "svd"):
        x = np.asarray(frandom.multivariate_normal(frandom.key(1), fnp.asarray(mean),
                                                   fnp.asarray(cov), (N,), method=method),
                       np.float64)
        assert x.shape == (N, 3)
        np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.03)
        direction = np.array([0.3, -1.0, 2.0])
        projected = scipy.stats.norm(direction @ mean, np.sqrt(direction @ cov @ direction))
        assert scipy.stats.kstest(x @ direction, projected.cdf).pvalue > 1e-3


def test_multinomial_counts():
    p = np.array([0.1, 0.6, 0.3])
    x = np.asarray(frandom.multinomial(frandom.key(5), 30.0, fnp.asarray(p), shape=(N // 10, 3)))
    assert x.shape == (N // 10, 3) and (x.sum(-1) == 30).all() and (x >= 0).all()
    np.testing.assert_allclose(x.mean(0), 30 * p, rtol=0.02)
    np.testing.assert_allclose(x.var(0), 30 * p * (1 - p), rtol=0.05)
    edge = frandom.binomial(frandom.key(5), fnp.array([np.nan, -1.0, np.inf, 0.0, 3.0]),
                            fnp.array([0.3, 0.5, 0.5, 0.5, 1.0]))
    np.testing.assert_array_equal(edge, [np.nan, np.nan, np.inf, 0.0, 3.0])


def test_orthogonal_is_orthonormal_and_unbiased():
    q = np.asarray(frandom.orthogonal(frandom.key(2), 4, (2000,)), np.float64)
    assert q.shape == (2000, 4, 4)
    np.testing.assert_allclose(q @ np.swapaxes(q, -1, -2), np.broadcast_to(np.eye(4), q.shape),
                               atol=1e-5)
    assert np.abs(q.mean(0)).max() < 0.05  # Haar matrices average to zero
    wide = np.asarray(frandom.orthogonal(frandom.key(2), 3, m=5))
    np.testing.assert_allclose(wide @ wide.T, np.eye(3), atol=1e-5)


def test_choice_and_permutation_without_replacement():
    x = fnp.arange(20).reshape(4, 5)
    cols = np.asarray(frandom.choice(frandom.key(3), x, (3,), replace=False, axis=1))
    assert cols.shape == (4, 3) and len(set(cols[0].tolist())) == 3
    np.testing.assert_array_equal(cols[1] - cols[0], 5)
    weighted = frandom.choice(frandom.key(3), 6, (4,), replace=False,
                              p=fnp.array([0.3, 0.3, 0.0, 0.2, 0.1, 0.1]))
    assert len(set(weighted.tolist())) == 4 and 2 not in weighted.tolist()
    rows = np.asarray(frandom.permutation(frandom.key(4), x, axis=1, independent=True))
    assert all(sorted(r) == list(range(5 * i, 5 * i + 5)) for i, r in enumerate(rows.tolist()))
    assert len({tuple(r % 5) for r in rows}) > 1  # rows shuffled independently
    big = np.asarray(frandom.permutation(frandom.key(4), 5000))  # two sort rounds
    assert sorted(big.tolist()) == list(range(5000))


# --- dtype and shape rules -------------------------------------------------------------------


def test_parameters_broadcast_against_shape():
    a = fnp.array([0.5, 2.0, 8.0])
    assert frandom.gamma(frandom.key(0), a).shape == (3,)
    draws = np.asarray(frandom.gamma(frandom.key(0), a, (4000, 3)))
    np.testing.assert_allclose(draws.mean(0), [0.5, 2.0, 8.0], rtol=0.1)
    assert frandom.beta(frandom.key(0), a, 1.0).shape == (3,)
    assert frandom.pareto(frandom.key(0), a, (2, 3)).shape == (2, 3)
    assert frandom.poisson(frandom.key(0), a, (2, 3)).shape == (2, 3)
    assert frandom.truncated_normal(frandom.key(0), -a, a).shape == (3,)
    assert frandom.dirichlet(frandom.key(0), fnp.ones((2, 4))).shape == (2, 4)
    assert frandom.categorical(frandom.key(0), fnp.zeros((2, 5)), shape=(7, 2)).shape == (7, 2)
    assert frandom.categorical(frandom.key(0), fnp.zeros((2, 5)), axis=0).shape == (5,)
    # As JAX: double_sided_maxwell appends the parameters' shape to ``shape``.
    assert frandom.double_sided_maxwell(frandom.key(0), fnp.zeros(2), 1.0, (3,)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"gamma: parameter shapes \[\(3,\)\] must broadcast "
                                         r"to the shape argument \(2,\)"):
        frandom.gamma(frandom.key(0), a, (2,))


def test_dtypes():
    k = frandom.key(0)
    for f in (frandom.exponential, frandom.laplace, frandom.logistic, frandom.gumbel,
              frandom.cauchy, frandom.maxwell):
        assert f(k, (3,)).dtype == np.float32 and f(k, (3,), np.float16).dtype == np.float16
    assert frandom.gamma(k, 2.0, (3,), np.float64).dtype == np.float64
    assert frandom.beta(k, 2.0, 2.0, (3,), np.float16).dtype == np.float16
    assert frandom.t(k, 3.0, (2,), np.float64).dtype == np.float64
    assert frandom.randint(k, (3,), 0, 5, np.int8).dtype == np.int8
    assert frandom.randint(k, (3,), 0, 256, np.uint8).tolist() == frandom.randint(
        k, (3,), 0, 256, np.uint8).tolist()
    assert frandom.poisson(k, 3.0, (3,)).dtype == np.int32
    assert frandom.rademacher(k, (3,)).dtype == np.int32
    assert frandom.rademacher(k, (3,), np.float32).dtype == np.float32
    assert frandom.categorical(k, fnp.zeros(3)).dtype == np.int32
    with config.override("enable_x64", True):
        assert frandom.randint(k, (3,), 0, 5).dtype == np.int64
        assert frandom.gamma(k, 2.0, (3,)).dtype == np.float64
    with pytest.raises(TypeError, match="float dtype"):
        frandom.gamma(k, 1.0, (2,), np.int32)
    with pytest.raises(TypeError, match="integer dtype"):
        frandom.randint(k, (2,), 0, 3, np.float32)
    with pytest.raises(TypeError, match="float dtype"):
        frandom.bernoulli(k, fnp.array([1, 0]))


def test_zero_sized_draws():
    k = frandom.key(0)
    assert frandom.gamma(k, 1.0, (0,)).shape == (0,)
    assert frandom.normal(k, (2, 0)).shape == (2, 0)
    assert frandom.choice(k, 5, (0,)).shape == (0,)


# --- transforms ------------------------------------------------------------------------------

_UNDER_TRANSFORMS = {
    "gamma": lambda k: frandom.gamma(k, fnp.array([0.3, 2.0, 7.0])),
    "beta": lambda k: frandom.beta(k, 0.5, 2.0, (3,)),
    "poisson": lambda k: frandom.poisson(k, fnp.array([1.0, 30.0])),
    "randint": lambda k: frandom.randint(k, (5,), -4, 9),
    "categorical": lambda k: frandom.categorical(k, fnp.array([0.0, 1.0, 2.0]), shape=(4,)),
    "choice": lambda k: frandom.choice(k, 6, (3,), replace=False),
    "permutation": lambda k: frandom.permutation(k, fnp.arange(5.0)),
    "truncated_normal": lambda k: frandom.truncated_normal(k, -0.5, 0.5, (3,)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=_SLOW) if n == "beta" else n
                                  for n in sorted(_UNDER_TRANSFORMS)])
def test_jit_and_vmap_match_eager(name):
    draw = _UNDER_TRANSFORMS[name]
    k = frandom.key(21)
    np.testing.assert_array_equal(flamefx.jit(draw)(k), draw(k))
    keys = frandom.split(k, 3)
    batched = flamefx.vmap(draw)(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], draw(keys[i]))


# --- gradients of gamma draws ----------------------------------------------------------------


def _inverse_cdf_derivative(a, x):
    """d/da of Gamma(a)'s quantile at the draw's own quantile (the implicit reparameterization
    gradient), by a central difference of SciPy's inverse incomplete gamma."""
    q = scipy.special.gammainc(a, x)
    h = 1e-6 * a
    return (scipy.special.gammaincinv(a + h, q) - scipy.special.gammaincinv(a - h, q)) / (2 * h)


def test_gamma_gradient_is_the_implicit_reparameterization():
    k = frandom.key(30)
    a = fnp.array([0.2, 0.9, 1.0, 3.5, 40.0], dtype=np.float64)
    x = np.asarray(frandom.gamma(k, a, dtype=np.float64))
    grads = flamefx.jacfwd(lambda a: frandom.gamma(k, a, dtype=np.float64))(a)
    np.testing.assert_allclose(np.diag(np.asarray(grads)),
                               _inverse_cdf_derivative(np.asarray(a), x), rtol=1e-6)
    rev = flamefx.grad(lambda a: frandom.gamma(k, a, dtype=np.float64).sum())(a)
    np.testing.assert_allclose(rev, np.diag(np.asarray(grads)), rtol=1e-12)
    # loggamma: d log x / da = (dx/da) / x, computed from the log-space draw
    log_grad = flamefx.grad(lambda a: frandom.loggamma(k, a, dtype=np.float64).sum())(a)
    np.testing.assert_allclose(log_grad, _inverse_cdf_derivative(np.asarray(a), x) / x,
                               rtol=1e-6)


@pytest.mark.slow
def test_gamma_gradient_under_jit_and_vmap_and_in_float32():
    keys = frandom.split(frandom.key(31), 4)
    a = fnp.array([0.5, 1.5, 2.5, 6.0])
    per_key = flamefx.jit(flamefx.vmap(flamefx.grad(lambda k, a: frandom.gamma(k, a),
                                                    argnums=1)))(keys, a)
    x = np.stack([np.asarray(frandom.gamma(keys[i], a[i]), np.float64) for i in range(4)])
    np.testing.assert_allclose(per_key, _inverse_cdf_derivative(np.asarray(a, np.float64), x),
                               rtol=2e-4)
    # The t, chisquare and beta draws are differentiable through their gamma draws.
    assert np.isfinite(flamefx.grad(lambda d: frandom.t(frandom.key(1), d))(5.0))
    assert np.isfinite(flamefx.grad(lambda d: frandom.chisquare(frandom.key(1), d))(3.0))
    assert np.isfinite(flamefx.grad(lambda b: frandom.beta(frandom.key(1), 2.0, b))(3.0))


def test_gamma_second_derivative():
    # The implicit-reparameterization second derivative: d2/da2 of Gamma(a)'s quantile at
    # the draw's quantile q (not the rejection sampler's own path, which a difference of
    # first derivatives at a +- h would follow).
    k = frandom.key(32)
    a = 2.5
    x = float(frandom.gamma(k, a, dtype=np.float64))

    def first(a):
        return flamefx.grad(lambda a: frandom.gamma(k, a, dtype=np.float64))(a)

    second = float(flamefx.grad(first)(fnp.asarray(a, np.float64)))
    q, h = scipy.special.gammainc(a, x), 1e-3
    quantile = [scipy.special.gammaincinv(a + s * h, q) for s in (-1, 0, 1)]
    expected = (quantile[0] - 2 * quantile[1] + quantile[2]) / h**2
    assert second == pytest.approx(expected, rel=1e-4)


def test_random_gamma_grad_derivative_in_a():
    # The registry samples differentiate in x only (see tests/samples/random_ops.py); the
    # a-derivative is a finite difference of the primitive, checked here at a wider tolerance.
    a = fnp.array([0.7, 2.0, 9.0], dtype=np.float64)
    x = fnp.array([0.4, 2.5, 7.0], dtype=np.float64)
    check_grads(lambda a: random_gamma_grad(a, x), [a], order=2, rtol=2e-3, atol=2e-3)
    check_grads(lambda a: random_gamma_grad(a, fnp.asarray(0.4, np.float64)),
                [fnp.asarray(1.3, np.float64)], order=1, rtol=2e-3, atol=2e-3)


def _cdf_derivatives_in_a(a, x):
    """dP/da and d2P/da2 of the regularized lower incomplete gamma P(a, x) by fourth-order
    central differences of SciPy's gammainc in float64 (step a/1000: truncation ~1e-12,
    rounding ~1e-10 relative): a route independent of flamefx's own differences."""
    h = 1e-3 * a
    fm2, fm1, f0, f1, f2 = (scipy.special.gammainc(a + k * h, x) for k in (-2, -1, 0, 1, 2))
    return ((8 * (f1 - fm1) - (f2 - fm2)) / (12 * h),
            (16 * (f1 + fm1) - (f2 + fm2) - 30 * f0) / (12 * h * h))


# (a, quantile) pairs from small to large a and into both tails.
_A = np.array([0.1, 0.1, 0.3, 0.5, 1.0, 2.5, 3.0, 3.0, 6.0, 20.0, 50.0, 50.0])
_X = scipy.special.gammaincinv(_A, [0.01, 0.99, 0.2, 0.999, 0.8, 0.35, 0.001, 0.99, 0.65,
                                    0.5, 0.01, 0.99])


def _a_derivatives(fn, a, x):
    """d fn(a, x)/da elementwise, forward (jvp) and reverse (vmap of grad)."""
    forward = flamefx.jvp(lambda a: fn(a, x), (a,), (np.ones_like(a),))[1]
    reverse = flamefx.vmap(flamefx.grad(fn))(a, x)
    return np.asarray(forward), np.asarray(reverse)


def test_a_derivatives_of_igamma_grad_a_and_random_gamma_grad_against_the_cdf():
    # Both primitives' a-derivatives are central differences of the primitives themselves,
    # so check_grads in a only compares them with another difference of the same values.
    # Here: d2P/da2 and d/da (-P_a / p) at fixed x from SciPy's CDF, p the gamma density.
    from flamefx import lax
    d1, d2 = _cdf_derivatives_in_a(_A, _X)
    density = np.exp((_A - 1) * np.log(_X) - _X - scipy.special.gammaln(_A))
    density_a = density * (np.log(_X) - scipy.special.digamma(_A))
    want = -(d2 * density - d1 * density_a) / density**2
    with config.override("enable_x64", True):
        for got in _a_derivatives(lax.igamma_grad_a, _A, _X):
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, d2, rtol=1e-6)
        for got in _a_derivatives(random_gamma_grad, _A, _X):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    a32, x32 = _A[4:10].astype(np.float32), _X[4:10].astype(np.float32)
    d2_32 = _cdf_derivatives_in_a(a32.astype(np.float64), x32.astype(np.float64))[1]
    for got in _a_derivatives(lax.igamma_grad_a, a32, x32):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, d2_32, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_gpu_distributions_equal_cpu():
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    key_cpu = flamefx.device_put(frandom.key(40), cpu)
    key_gpu = flamefx.device_put(key_cpu, gpu)
    a = fnp.array([0.3, 1.0, 2.5, 10.0] * 4)

    def draw(k):
        ks = frandom.split(k, 6)
        return (frandom.poisson(ks[0], fnp.array([0.5, 3.0, 12.0, 100.0])),
                frandom.categorical(ks[1], fnp.zeros((3, 5)), shape=(4, 3)),
                frandom.choice(ks[2], 50, (10,), replace=False),
                frandom.uniform(ks[3], (9,), np.float64),
                frandom.gamma(ks[4], a),
                flamefx.grad(lambda a: frandom.gamma(ks[5], a).sum())(a))

    on_cpu = flamefx.jit(draw)(key_cpu)
    on_gpu = flamefx.jit(draw)(key_gpu)
    assert all(g.device.platform == "gpu" for g in on_gpu)
    for c, g in zip(on_cpu[:4], on_gpu[:4]):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(g))
    for c, g in zip(on_cpu[4:], on_gpu[4:]):
        np.testing.assert_allclose(np.asarray(c), np.asarray(g), rtol=1e-4)
