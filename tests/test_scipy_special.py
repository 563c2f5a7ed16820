"""flamefx.scipy.special against scipy.special in float64, gradients by check_grads, and the
places where JAX (and so flamefx) defines what SciPy leaves open."""

import numpy as np
import pytest
import scipy.special as ss

import flamefx
import flamefx.numpy as fnp
from flamefx import core
import flamefx.scipy.special as fss
from flamefx.errors import FlamefxValueError
from flamefx.test_util import check_grads
from tests.grad_checks import check_grads_in

RNG = np.random.default_rng(0)
SHAPE = (3, 4)


def _f64(a):
    """A float64 flamefx array whatever the x64 setting (the registry's way in)."""
    return core.to_array(np.asarray(a, np.float64))


def _u(low, high, shape=SHAPE):
    return RNG.uniform(low, high, shape)


# (name, flamefx function, scipy function, arguments, argnums to differentiate)
CASES = [
    ("erf", fss.erf, ss.erf, [_u(-2, 2)], (0,)),
    ("erfc", fss.erfc, ss.erfc, [_u(-2, 5)], (0,)),
    ("erfinv", fss.erfinv, ss.erfinv, [_u(-0.9, 0.9)], (0,)),
    ("erfcx", fss.erfcx, ss.erfcx, [np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 40.0, 1e5])], ()),
    ("erfcx gradients", fss.erfcx, ss.erfcx, [_u(-2, 4)], (0,)),
    ("exp1", fss.exp1, ss.exp1, [np.array([-1.0, 0.1, 0.9, 3.0, 30.0])], ()),
    ("exp1 gradients", fss.exp1, ss.exp1, [_u(0.2, 5)], (0,)),
    ("expi", fss.expi, lambda x: np.where(x == 0, np.nan, ss.expi(x)),
     [np.array([-30.0, -1.5, 0.0, 0.4, 2.0, 50.0])], ()),
    ("expi gradients", fss.expi, ss.expi, [np.array([-3.0, -0.6, 0.4, 2.5])], (0,)),
    ("ndtr", fss.ndtr, ss.ndtr, [np.concatenate([_u(-9, 9, (20,)), [-40.0, 0.1, 0.9]])],
     (0,)),
    ("ndtri", fss.ndtri, ss.ndtri, [np.array([1e-300, 1e-10, 0.02, 0.5, 0.7, 1 - 1e-9])], ()),
    ("log_ndtr", fss.log_ndtr, ss.log_ndtr,
     [np.array([-1e3, -60.0, -25.0, -20.5, -19.5, -3.0, 0.0, 2.0, 7.5, 8.5, 30.0])], ()),
    ("gammaln", fss.gammaln, ss.gammaln, [_u(0.2, 8)], (0,)),
    ("gamma", fss.gamma, ss.gamma, [np.array([-2.5, -1.5, -0.5, 0.5, 1.0, 3.7, 10.0])], (0,)),
    ("gammasgn", fss.gammasgn, ss.gammasgn,
     [np.array([-2.5, -1.5, -0.5, 0.5, 3.0, np.inf])], ()),
    ("digamma", fss.digamma, ss.digamma, [_u(0.2, 8)], (0,)),
    ("polygamma", fss.polygamma, ss.polygamma,
     [RNG.integers(0, 4, SHAPE).astype(np.float64), _u(0.5, 6)], (1,)),
    ("gammainc", fss.gammainc, ss.gammainc, [_u(0.5, 5), _u(0.1, 6)], (0, 1)),
    ("gammaincc", fss.gammaincc, ss.gammaincc, [_u(0.5, 5), _u(0.1, 6)], (0, 1)),
    ("betaln", fss.betaln, ss.betaln, [_u(0.3, 5), _u(0.3, 5)], (0, 1)),
    ("betainc", fss.betainc, ss.betainc, [_u(0.5, 4), _u(0.5, 4), _u(0.05, 0.95)], (2,)),
    ("zeta", fss.zeta, ss.zeta, [_u(1.5, 5), _u(0.5, 4)], (1,)),
    ("i0e", fss.i0e, ss.i0e, [np.array([-30.0, -2.0, -0.4, 0.3, 1.5, 700.0])], (0,)),
    ("i1e", fss.i1e, ss.i1e, [np.array([-30.0, -2.0, -0.4, 0.0, 0.3, 1.5, 700.0])], (0,)),
    ("i0", fss.i0, ss.i0, [_u(-5, 5)], ()),
    ("i1", fss.i1, ss.i1, [_u(-5, 5)], ()),
    ("expit", fss.expit, ss.expit, [_u(-30, 30)], (0,)),
    ("logit", fss.logit, ss.logit, [_u(0.05, 0.95)], (0,)),
    ("xlogy", fss.xlogy, ss.xlogy, [_u(-2, 2), _u(0.1, 3)], (0, 1)),
    ("xlog1py", fss.xlog1py, ss.xlog1py, [_u(-2, 2), _u(-0.9, 3)], (0, 1)),
    ("entr", fss.entr, ss.entr, [np.array([-1.0, 0.0, 0.3, 1.0, 2.5])], ()),
    ("rel_entr", fss.rel_entr, ss.rel_entr,
     [np.array([0.0, 0.0, 0.5, 1.0, -1.0, 2.0]), np.array([0.0, 1.0, 0.2, 1.0, 1.0, -1.0])], ()),
    ("kl_div", fss.kl_div, ss.kl_div,
     [np.array([0.0, 0.0, 0.5, 1.0, -1.0, 2.0]), np.array([0.0, 1.0, 0.2, 1.0, 1.0, -1.0])], ()),
    ("factorial", fss.factorial, ss.factorial, [np.array([-1.0, 0.0, 1.0, 4.0, 7.5])], ()),
    ("loggamma", fss.loggamma, lambda x: np.where(x > 0, ss.loggamma(x), np.nan),
     [np.array([-1.5, 0.0, 0.3, 2.0, 7.5])], ()),
    ("poch", fss.poch, ss.poch, [_u(0.5, 4), _u(-0.4, 3)], (0, 1)),
    ("poch at m = 0", fss.poch, ss.poch, [_u(0.5, 4), np.zeros(SHAPE)], ()),
    ("boxcox", fss.boxcox, ss.boxcox, [_u(0.2, 3), np.array([[-1.0], [0.0], [0.7]])], (0,)),
    ("boxcox smooth", fss.boxcox, ss.boxcox, [_u(0.2, 3), _u(-1, 1)], (0, 1)),
    ("boxcox1p", fss.boxcox1p, ss.boxcox1p, [_u(-0.5, 3), _u(-1, 1)], (0, 1)),
    ("beta", fss.beta, ss.beta, [np.array([0.5, 2.0, -0.5, 3.5]), np.array([1.5, 3.0, 2.2, 0.7])],
     (0, 1)),
    ("comb", fss.comb, ss.comb,
     [np.array([5.0, 10.0, 4.0, 3.0, 7.5]), np.array([2.0, 3.0, 5.0, -1.0, 2.5])], ()),
    ("comb with repetition", lambda n, k: fss.comb(n, k, repetition=True),
     lambda n, k: ss.comb(n, k, repetition=True), [np.array([5.0, 4.0, 3.0]),
                                                     np.array([2.0, 0.0, 4.0])], ()),
]


@pytest.mark.parametrize("name,fn,ref,args,argnums", CASES, ids=[c[0] for c in CASES])
def test_values_match_scipy(name, fn, ref, args, argnums):
    got = np.asarray(fn(*[_f64(a) for a in args]))
    assert got.dtype == np.float64
    with np.errstate(all="ignore"):
        want = ref(*args)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)


GRAD_CASES = [c for c in CASES if c[4]]


@pytest.mark.parametrize("name,fn,ref,args,argnums", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients(name, fn, ref, args, argnums):
    check_grads_in(fn, [_f64(a) for a in args], argnums)


def test_gradients_in_the_tails():
    # log_ndtr's derivative pdf/cdf, computed in log space, is finite and ~ -x far out.
    grad = flamefx.vmap(flamefx.grad(fss.log_ndtr))(_f64([-60.0, -25.0, -3.0, 10.0]))
    want = np.exp(-0.5 * np.array([-60.0, -25.0, -3.0, 10.0]) ** 2 - ss.log_ndtr(
        [-60.0, -25.0, -3.0, 10.0])) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-8)
    check_grads(fss.log_ndtr, [_f64(np.array([-30.0, -22.0, -4.0, 1.0]))], order=2)


def test_xlogy_is_zero_at_x_zero_with_jax_derivatives():
    assert float(fss.xlogy(_f64(0.0), _f64(0.0))) == 0.0
    dx, dy = flamefx.grad(fss.xlogy, argnums=(0, 1))(_f64(0.0), _f64(2.0))
    assert float(dx) == pytest.approx(np.log(2.0)) and float(dy) == 0.0
    assert float(flamefx.grad(fss.xlog1py)(_f64(0.0), _f64(1.0))) == \
        pytest.approx(np.log(2.0))


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
def test_logsumexp_softmax(axis):
    a, b = _u(-3, 3), _u(-1, 1)
    np.testing.assert_allclose(np.asarray(fss.logsumexp(_f64(a), axis=axis)),
                               ss.logsumexp(a, axis=axis), rtol=1e-12)
    out, sign = fss.logsumexp(_f64(a), axis=axis, b=_f64(b), return_sign=True)
    want, want_sign = ss.logsumexp(a, axis=axis, b=b, return_sign=True)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(sign), want_sign)
    kept = fss.logsumexp(_f64(a), axis=axis, keepdims=True)
    assert kept.shape == ss.logsumexp(a, axis=axis, keepdims=True).shape
    np.testing.assert_allclose(np.asarray(fss.softmax(_f64(a), axis=axis)),
                               ss.softmax(a, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(fss.log_softmax(_f64(a), axis=axis)),
                               ss.log_softmax(a, axis=axis), rtol=1e-12, atol=1e-14)
    check_grads(lambda x, w: fss.logsumexp(x, axis=axis, b=w), [_f64(a),
                                                                   _f64(b + 2)], order=2)
    check_grads(lambda x: fss.softmax(x, axis=axis), [_f64(a)], order=2)


def test_logsumexp_where():
    a, mask = _u(-3, 3), RNG.random(SHAPE) < 0.6
    got = fss.logsumexp(_f64(a), axis=1, where=fnp.asarray(mask))
    want = np.log(np.sum(np.where(mask, np.exp(a), 0.0), axis=1))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    grad = flamefx.grad(lambda x: fss.logsumexp(x, where=fnp.asarray(mask)))(_f64(a))
    np.testing.assert_allclose(np.asarray(grad), np.where(mask, np.exp(a), 0.0) / np.sum(
        np.where(mask, np.exp(a), 0.0)), rtol=1e-12)


def test_logsumexp_edges():
    assert float(fss.logsumexp(_f64([-np.inf, -np.inf]))) == -np.inf
    assert float(fss.logsumexp(_f64([1000.0, 1000.0]))) == pytest.approx(1000 + np.log(2))
    assert np.isnan(float(fss.logsumexp(_f64([0.0, 0.0]), b=_f64([-1.0, 0.5]))))


def test_multigammaln():
    a = _u(2, 6, (5,))
    for d in (1, 2, 4):
        np.testing.assert_allclose(np.asarray(fss.multigammaln(_f64(a), d)),
                                   ss.multigammaln(a, d), rtol=1e-12)
    check_grads(lambda x: fss.multigammaln(x, 3), [_f64(a)], order=2)
    with pytest.raises(FlamefxValueError, match="positive int"):
        fss.multigammaln(_f64(a), 0)


def test_integers_promote_to_float32_as_jax():
    assert fss.gammaln(fnp.arange(1, 4)).dtype == np.float32
    assert fss.xlogy(2, fnp.arange(1, 4)).dtype == np.float32
    assert fss.gammainc(_f64(np.float64(1.0)), 2).dtype == np.float64


def test_unsupported_arguments_raise():
    with pytest.raises(FlamefxValueError, match="series_order"):
        fss.log_ndtr(_f64(0.0), series_order=-1)
    with pytest.raises(NotImplementedError):
        fss.zeta(_f64(2.0))
    with pytest.raises(NotImplementedError):
        fss.factorial(3, exact=True)


def test_jit_and_vmap():
    x = _f64(_u(0.5, 3))
    np.testing.assert_allclose(np.asarray(flamefx.jit(fss.gammaln)(x)), ss.gammaln(np.asarray(x)))
    per_row = flamefx.vmap(lambda r: fss.logsumexp(r))(x)
    np.testing.assert_allclose(np.asarray(per_row), ss.logsumexp(np.asarray(x), axis=1))


def test_nan_where_jax_gives_nan():
    # polygamma for negative or fractional orders, zeta at x == 1 (SciPy: inf), gamma at poles.
    got = fss.polygamma(_f64([-1.0, 1.5, 1.0]), _f64([2.0, 2.0, 2.0]))
    assert np.isnan(np.asarray(got)[:2]).all() and np.isfinite(np.asarray(got)[2])
    assert np.isnan(float(fss.zeta(_f64(1.0), _f64(2.0))))
    assert np.isnan(np.asarray(fss.gamma(_f64([-1.0, -2.0, -np.inf])))).all()
    assert float(fss.gamma(_f64(-0.0))) == -np.inf
