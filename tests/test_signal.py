"""flamefx.numpy's signal functions (diff, ediff1d, gradient, trapezoid, cumulative_*,
convolve, correlate, interp, poly*) against NumPy in float64, with gradients to order 2,
jit, vmap and bad input."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.errors import FlamefxError, FlamefxValueError
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


def _normal(*shape):
    """Float64 samples as a flamefx array (NumPy float64 arrays would canonicalize to f32)."""
    return fnp.array(RNG.normal(size=shape), dtype=fnp.float64)


def _f64(x):
    return fnp.array(x, dtype=fnp.float64)


def _check(got, want, rtol=1e-12, atol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# --- differences -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 4])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_diff_matches_numpy(n, axis):
    x = _normal(3, 5)
    _check(fnp.diff(x, n, axis), np.diff(x, n, axis))


def test_diff_prepend_append_bool_and_empty():
    x = _normal(3, 5)
    _check(fnp.diff(x, 2, 1, prepend=1.5, append=x[:, :2]),
           np.diff(x, 2, 1, prepend=1.5, append=np.asarray(x)[:, :2]))
    flags = np.array([True, False, False, True])
    _check(fnp.diff(flags), np.diff(flags))
    _check(fnp.diff(fnp.zeros((0, 3), fnp.float64)), np.diff(np.zeros((0, 3))))
    _check(fnp.diff(fnp.zeros(1, fnp.float64)), np.diff(np.zeros(1)))
    ints = np.array([1, 4, 9, 16], np.int32)
    _check(fnp.diff(ints), np.diff(ints))


def test_ediff1d_matches_numpy():
    x = _normal(2, 3)
    _check(fnp.ediff1d(x), np.ediff1d(x))
    _check(fnp.ediff1d(x, to_end=[1.0, 2.0], to_begin=3.0),
           np.ediff1d(x, to_end=[1.0, 2.0], to_begin=3.0))
    _check(fnp.ediff1d(fnp.zeros(0, fnp.float64)), np.ediff1d(np.zeros(0)))


@pytest.mark.parametrize("spacing", [(), (2.0,), (np.array([0.0, 1.0, 3.0]),
                                                  np.array([0.0, 1.0, 2.5, 4.0, 7.0]))])
def test_gradient_matches_numpy(spacing):
    x = _normal(3, 5)
    spacing_f64 = tuple(_f64(h) if np.ndim(h) else h for h in spacing)
    for got, want in zip(fnp.gradient(x, *spacing_f64), np.gradient(x, *spacing)):
        _check(got, want)
    _check(fnp.gradient(x, axis=1), np.gradient(x, axis=1))
    _check(fnp.gradient(x[0], 0.5), np.gradient(np.asarray(x[0]), 0.5))


def test_gradient_of_integers_is_float():
    got = fnp.gradient(fnp.array([1, 2, 4, 8]))
    assert got.dtype == fnp.float32
    np.testing.assert_allclose(got, [1.0, 1.5, 3.0, 4.0])


# --- integrals and running totals ------------------------------------------------------------


def test_trapezoid_matches_numpy():
    y = _normal(3, 5)
    _check(fnp.trapezoid(y), np.trapezoid(y))
    _check(fnp.trapezoid(y, dx=0.5, axis=0), np.trapezoid(y, dx=0.5, axis=0))
    x = _f64(np.cumsum(RNG.random(5)))
    _check(fnp.trapezoid(y, x), np.trapezoid(y, x))
    xs = _f64(np.cumsum(RNG.random((3, 5)), axis=0))
    _check(fnp.trapezoid(y, xs, axis=0), np.trapezoid(y, xs, axis=0))
    _check(fnp.trapezoid(fnp.zeros(0, fnp.float64)), np.trapezoid(np.zeros(0)))
    _check(fnp.trapezoid(fnp.ones(1, fnp.float64)), np.trapezoid(np.ones(1)))
    # A dx per interval (JAX accepts an array dx).
    dx = _f64([1.0, 2.0, 3.0, 4.0])
    want = 0.5 * (np.asarray(dx) * (np.asarray(y)[:, 1:] + np.asarray(y)[:, :-1])).sum(-1)
    _check(fnp.trapezoid(y, dx=dx), want)


def test_cumulative_sum_and_prod():
    x = _normal(3, 4)
    _check(fnp.cumulative_sum(x, axis=1), np.cumsum(x, axis=1))
    _check(fnp.cumulative_sum(x, axis=0, include_initial=True),
           np.concatenate([np.zeros((1, 4)), np.cumsum(x, axis=0)]))
    _check(fnp.cumulative_prod(x, axis=1, include_initial=True),
           np.concatenate([np.ones((3, 1)), np.cumprod(x, axis=1)], axis=1))
    ints = np.array([1, 2, 3], np.int32)
    _check(fnp.cumulative_sum(ints, include_initial=True), np.array([0, 1, 3, 6], np.int32))
    with pytest.raises(FlamefxValueError, match="axis is required"):
        fnp.cumulative_sum(x)
    with pytest.raises(FlamefxValueError, match="at least 1 dimension"):
        fnp.cumulative_prod(2.0)


# --- convolution -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("sizes", [(5, 3), (3, 5), (4, 4), (1, 3), (6, 2), (1, 1)])
def test_convolve_and_correlate_match_numpy(mode, sizes):
    a, v = _normal(sizes[0]), _normal(sizes[1])
    _check(fnp.convolve(a, v, mode), np.convolve(a, v, mode))
    _check(fnp.correlate(a, v, mode), np.correlate(a, v, mode))


def test_convolve_defaults_and_integers():
    a, v = np.array([1, 2, 3], np.int32), np.array([0, 1, 1], np.int32)
    got = fnp.convolve(a, v)
    assert got.dtype == fnp.float32  # integers promote to floats, as in JAX
    np.testing.assert_allclose(got, np.convolve(a, v))
    np.testing.assert_allclose(fnp.correlate(a, v), np.correlate(a, v))  # default: valid


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("sizes", [(5, 3), (3, 5)])
def test_complex_convolve_and_correlate(mode, sizes):
    def complex_normal(n):
        return fnp.array(RNG.normal(size=n) + 1j * RNG.normal(size=n), dtype=fnp.complex128)
    a, v, real_v = complex_normal(sizes[0]), complex_normal(sizes[1]), _normal(sizes[1])
    _check(fnp.convolve(a, v, mode), np.convolve(a, v, mode))
    # correlate conjugates its second operand, whichever is longer (NumPy's and JAX's rule).
    _check(fnp.correlate(a, v, mode), np.correlate(a, v, mode))
    _check(fnp.correlate(real_v, a, mode), np.correlate(real_v, a, mode))
    check_grads(lambda x, y: fnp.correlate(x, y, mode), (a, v))


def test_convolution_errors():
    with pytest.raises(FlamefxValueError, match="1-D"):
        fnp.convolve(np.ones((2, 2)), np.ones(2))
    with pytest.raises(FlamefxValueError, match="empty"):
        fnp.correlate(np.ones(3), np.ones(0))
    with pytest.raises(FlamefxValueError, match="mode"):
        fnp.convolve(np.ones(3), np.ones(2), mode="circular")


# --- interpolation ---------------------------------------------------------------------------


def test_interp_matches_numpy():
    xp, fp = np.sort(RNG.normal(size=8)), RNG.normal(size=8)
    x = RNG.normal(size=(3, 7)) * 1.5
    _check(fnp.interp(_f64(x), _f64(xp), _f64(fp)), np.interp(x, xp, fp))
    _check(fnp.interp(_f64(x), _f64(xp), _f64(fp), left=-5.0, right=7.0),
           np.interp(x, xp, fp, -5.0, 7.0))
    _check(fnp.interp(_f64(xp), _f64(xp), _f64(fp)), np.interp(xp, xp, fp))  # at the knots
    unordered = RNG.normal(size=8) * 3
    _check(fnp.interp(_f64(x), _f64(unordered), _f64(fp), period=2.0),
           np.interp(x, unordered, fp, period=2.0))
    # A repeated knot takes the value at its right (NumPy's and JAX's rule) and a 0-d x works.
    knots, values = _f64([0.0, 1.0, 1.0, 2.0]), _f64([0.0, 1.0, 3.0, 4.0])
    _check(fnp.interp(_f64([0.5, 1.0, 1.5]), knots, values),
           np.interp([0.5, 1.0, 1.5], [0.0, 1.0, 1.0, 2.0], [0.0, 1.0, 3.0, 4.0]))
    assert fnp.interp(2, [1, 3], [0, 10]).dtype == fnp.float32
    # JAX's left/right='extrapolate': the end segments continue.
    _check(fnp.interp(_f64([-1.0, 0.5, 4.0]), _f64([0.0, 1.0, 2.0]), _f64([0.0, 2.0, 3.0]),
                      left="extrapolate", right="extrapolate"), np.array([-2.0, 1.0, 5.0]))
    _check(fnp.interp(_f64(5.0), _f64([1.0]), _f64([2.0])), np.asarray(2.0))


def test_interp_errors():
    with pytest.raises(FlamefxValueError, match="xp and fp"):
        fnp.interp(1.0, np.ones(3), np.ones(4))
    with pytest.raises(FlamefxValueError, match="period must be a scalar"):
        fnp.interp(1.0, np.arange(3.0), np.ones(3), period=np.ones(2))
    with pytest.raises(FlamefxValueError, match="extrapolate"):
        fnp.interp(1.0, np.arange(3.0), np.ones(3), left="clip")


# --- polynomials -----------------------------------------------------------------------------


def test_polyval_matches_numpy():
    p, x = _normal(4), _normal(3, 2)
    _check(fnp.polyval(p, x), np.polyval(p, x))
    assert fnp.polyval(np.array([3, 0, 1], np.int32), 2).item() == 13
    # p of 2 dims: its columns are polynomials evaluated at the matching x.
    p2, x2 = _normal(3, 2), _normal(2)
    _check(fnp.polyval(p2, x2), (np.asarray(p2) * np.asarray(x2) ** np.arange(2, -1, -1)[:, None])
           .sum(0))


def test_polynomial_arithmetic_matches_numpy():
    a, b = _normal(3), _normal(5)
    _check(fnp.polyadd(a, b), np.polyadd(a, b))
    _check(fnp.polysub(a, b), np.polysub(a, b))
    _check(fnp.polymul(a, b), np.polymul(a, b))
    _check(fnp.polymul(_f64([0.0, 0.0, 1.0, 2.0]), _f64([1.0, 3.0]), trim_leading_zeros=True),
           np.polymul([1.0, 2.0], [1.0, 3.0]))
    for m in [0, 1, 2, 5]:
        _check(fnp.polyder(b, m), np.polyder(b, m) if m < 5 else np.zeros(0))
        _check(fnp.polyint(b, m), np.polyint(b, m))
    # Integration constants, the first for the first integration (NumPy and JAX agree).
    for m, k in [(2, [1.0, 2.0]), (3, [1.0, 2.0, 3.0]), (2, 1.5)]:
        _check(fnp.polyint(b, m, k=_f64(k)), np.polyint(b, m, k=k))


@pytest.mark.parametrize("deg", [0, 1, 3])
def test_polyfit_matches_numpy(deg):
    x = np.linspace(-1.0, 2.0, 12)
    y, ys, w = RNG.normal(size=12), RNG.normal(size=(12, 3)), RNG.random(12) + 0.2
    _check(fnp.polyfit(_f64(x), _f64(y), deg), np.polyfit(x, y, deg), rtol=1e-9)
    _check(fnp.polyfit(_f64(x), _f64(ys), deg, w=_f64(w)), np.polyfit(x, ys, deg, w=w),
           rtol=1e-9)
    for got, want in zip(fnp.polyfit(_f64(x), _f64(y), deg, full=True),
                         np.polyfit(x, y, deg, full=True)):
        np.testing.assert_allclose(got, want, rtol=1e-9)
    for cov in [True, "unscaled"]:
        for values in [y, ys]:
            got_c, got_v = fnp.polyfit(_f64(x), _f64(values), deg, cov=cov)
            want_c, want_v = np.polyfit(x, values, deg, cov=cov)
            _check(got_v, want_v, rtol=1e-8)


def test_polyfit_errors():
    with pytest.raises(FlamefxValueError, match="non-empty 1-D"):
        fnp.polyfit(np.ones((2, 2)), np.ones(2), 1)
    with pytest.raises(FlamefxValueError, match="x's length 3"):
        fnp.polyfit(np.arange(3.0), np.ones(4), 1)
    with pytest.raises(FlamefxValueError, match="more points"):
        fnp.polyfit(np.arange(3.0), np.ones(3), 2, cov=True)


# --- gradients, jit, vmap --------------------------------------------------------------------


def test_gradients_to_order_2():
    x, v = _normal(3, 5), _normal(3)
    check_grads(lambda x: fnp.diff(x, 2, axis=1, prepend=0.5), (x,))
    check_grads(lambda x: fnp.gradient(x, axis=1), (x,))
    check_grads(lambda x, h: fnp.gradient(x, h, axis=0), (x, _f64([0.0, 1.0, 2.5])))
    check_grads(lambda y, t: fnp.trapezoid(y, t), (x, _f64(np.cumsum(RNG.random(5)) + 0.1)))
    check_grads(lambda x: fnp.cumulative_prod(x, axis=1, include_initial=True), (x,))
    for mode in ["full", "same", "valid"]:
        check_grads(lambda a, b: fnp.convolve(a, b, mode), (x[0], v))
        check_grads(lambda a, b: fnp.correlate(a, b, mode), (v, x[0]))
    check_grads(fnp.polyval, (v, x))
    check_grads(fnp.polymul, (v, x[1]))
    check_grads(lambda p: fnp.polyint(p, 2, k=1.5), (v,))
    knots = _f64(np.sort(RNG.normal(size=6)))
    check_grads(fnp.interp, (x[0] * 0.5, knots, _f64(RNG.normal(size=6))))
    check_grads(lambda t, y: fnp.polyfit(t, y, 2), (_f64(np.linspace(-1, 1, 6)), _normal(6)))


def test_jit_and_vmap():
    x, v = _normal(4, 6), _normal(3)
    _check(flamefx.jit(lambda a, b: fnp.convolve(a, b, "same"))(x[0], v),
           np.convolve(x[0], v, "same"))
    _check(flamefx.vmap(lambda a: fnp.correlate(a, v, "full"))(x),
           np.stack([np.correlate(row, v, "full") for row in np.asarray(x)]))
    _check(flamefx.vmap(fnp.gradient)(x), np.gradient(x, axis=1))
    _check(flamefx.jit(lambda p, t: fnp.polyval(p, t))(v, x), np.polyval(v, x))
    grid = np.linspace(-1.0, 1.0, 6)
    _check(flamefx.jit(lambda y: fnp.polyfit(_f64(grid), y, 2))(x[0]), np.polyfit(grid, x[0], 2),
           rtol=1e-9)
    _check(flamefx.vmap(fnp.trapezoid, in_axes=1)(x), np.trapezoid(x, axis=0))
    xp = _f64([-1.0, 0.0, 2.0])
    _check(flamefx.jit(flamefx.vmap(lambda t: fnp.interp(t, xp, xp * xp)))(x),
           np.interp(x, [-1.0, 0.0, 2.0], [1.0, 0.0, 4.0]))


def test_bad_input_errors():
    with pytest.raises(FlamefxValueError, match="at least 2 samples"):
        fnp.gradient(np.ones((3, 1)))
    with pytest.raises(FlamefxValueError, match="length 3"):
        fnp.gradient(np.ones(3), np.arange(4.0))
    with pytest.raises(FlamefxValueError, match="edge_order"):
        fnp.gradient(np.ones(3), edge_order=2)
    with pytest.raises(FlamefxValueError, match="non-negative"):
        fnp.diff(np.ones(3), -1)
    with pytest.raises(FlamefxError, match="static Python int"):
        flamefx.jit(lambda n: fnp.diff(np.ones(3), n))(1)
