"""flamefx.numpy's statistics (nan-reductions, average, ptp, count_nonzero, cov, corrcoef,
median/quantile/percentile and their nan forms) and binning (bincount, histogram,
histogram2d, histogramdd, digitize) against NumPy in float64 (and JAX's rules where they
differ, from constants taken from JAX), with gradients to order 2, jit, vmap and bad input."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.errors import ConcretizationError, FlamefxTypeError, FlamefxValueError
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


def _f64(x):
    """Float64 as a flamefx array (NumPy float64 arrays would canonicalize to float32)."""
    return fnp.array(x, dtype=fnp.float64)


def _with_nans():
    x = RNG.normal(size=(3, 4, 5))
    x[0, 1, 2] = np.nan
    x[1, :, 3] = np.nan   # a slice of only NaNs along axis 1
    x[2, 2, :] = np.nan   # ... and along axis 2
    return x


def _check(got, want, rtol=1e-12, atol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


AXES = [None, 0, -1, (0, 2), (1, 2)]


# --- NaN-ignoring reductions -----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["nansum", "nanprod", "nanmean", "nanvar", "nanstd", "nanmax",
                                  "nanmin"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_nan_reductions_match_numpy(name, axis, keepdims):
    x = _with_nans()
    _check(getattr(fnp, name)(_f64(x), axis=axis, keepdims=keepdims),
           getattr(np, name)(x, axis=axis, keepdims=keepdims))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_reductions_ddof_where_and_integers():
    x = _with_nans()
    _check(fnp.nanvar(_f64(x), axis=1, ddof=1), np.nanvar(x, axis=1, ddof=1))
    _check(fnp.nanstd(_f64(x), axis=2, ddof=5), np.nanstd(x, axis=2, ddof=5))  # N - ddof <= 0
    mask = RNG.random(x.shape) > 0.3
    for name in ["nansum", "nanprod", "nanmean", "nanvar"]:
        _check(getattr(fnp, name)(_f64(x), axis=1, where=mask),
               getattr(np, name)(x, axis=1, where=mask))
    ints = np.array([[1, 2], [3, 4]], np.int32)
    assert fnp.nansum(ints).dtype == np.int32 and fnp.nansum(ints).item() == 10
    assert fnp.nanmean(ints).dtype == np.float32 and fnp.nanmean(ints).item() == 2.5
    assert fnp.nanmax(ints, axis=0).tolist() == [3, 4]
    assert fnp.nanargmin(ints).item() == 0
    assert np.isnan(fnp.nanmean(_f64([])).item())
    assert fnp.nansum(_f64(np.zeros((0, 3))), axis=0).tolist() == [0.0, 0.0, 0.0]
    assert fnp.nanmax(_f64(2.5)).item() == 2.5  # 0-d


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_reductions_initial_and_mean():
    x = _with_nans()
    mask = RNG.random(x.shape) > 0.3
    for name in ["nansum", "nanprod"]:
        _check(getattr(fnp, name)(_f64(x), axis=1, initial=2.0, where=mask),
               getattr(np, name)(x, axis=1, initial=2.0, where=mask))
    for name in ["nanmax", "nanmin"]:
        # With initial, an all-NaN slice gives initial (NumPy's and JAX's rule).
        _check(getattr(fnp, name)(_f64(x), axis=1, initial=0.25),
               getattr(np, name)(x, axis=1, initial=0.25))
        _check(getattr(fnp, name)(_f64(x), axis=2, initial=-0.25, where=mask),
               getattr(np, name)(x, axis=2, initial=-0.25, where=mask))
        with pytest.raises(FlamefxValueError, match="needs initial="):
            getattr(fnp, name)(_f64(x), where=mask)
    ints = np.array([[1, 5], [3, 4]], np.int32)
    _check(fnp.nanmax(ints, axis=0, initial=4), np.array([4, 5], np.int32))
    center = np.nanmean(x, axis=2, keepdims=True)
    _check(fnp.nanvar(_f64(x), axis=2, mean=_f64(center)), np.nanvar(x, axis=2))
    _check(fnp.nanstd(_f64(x), axis=2, mean=_f64(center[..., 0])), np.nanstd(x, axis=2))


@pytest.mark.parametrize("name", ["nanargmax", "nanargmin"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_nan_arg_extrema(name, axis):
    x = _with_nans()
    got = getattr(fnp, name)(_f64(x), axis=axis)
    numpy_fn = getattr(np, name)
    if axis is None:
        want = np.asarray(numpy_fn(x))
    else:
        # NumPy raises on an all-NaN slice; JAX (and flamefx) give -1 there.
        all_nan = np.all(np.isnan(x), axis=axis)
        want = numpy_fn(np.where(np.isnan(x), np.inf if "min" in name else -np.inf, x), axis=axis)
        want = np.where(all_nan, -1, want)
    _check(got, want.astype(np.int32))


@pytest.mark.parametrize("name", ["nancumsum", "nancumprod"])
@pytest.mark.parametrize("axis", [None, 0, 2])
def test_nan_cumulative(name, axis):
    x = _with_nans()
    _check(getattr(fnp, name)(_f64(x), axis=axis), getattr(np, name)(x, axis=axis))


def test_zero_dimensional_inputs():
    x = _f64(2.5)
    for name in ["nansum", "nanprod", "nanmean", "nanvar", "nanstd", "nanmax", "nanmin",
                 "ptp", "average", "median", "nanmedian"]:
        _check(getattr(fnp, name)(x), getattr(np, name)(np.float64(2.5)))
    _check(fnp.count_nonzero(x), np.asarray(1, np.int32))
    _check(fnp.nanargmax(x), np.asarray(0, np.int32))
    _check(fnp.quantile(x, 0.3), np.quantile(np.float64(2.5), 0.3))
    _check(fnp.nanmean(_f64(np.nan)), np.asarray(np.nan))
    _check(fnp.nancumsum(x), np.nancumsum(np.float64(2.5)))


# --- averages, spreads, counts ---------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
def test_average_matches_numpy(axis):
    y = RNG.normal(size=(4, 5))
    _check(fnp.average(_f64(y), axis), np.average(y, axis))
    weights = RNG.random((4, 5))
    got, got_sum = fnp.average(_f64(y), axis, weights=_f64(weights), returned=True)
    want, want_sum = np.average(y, axis, weights=weights, returned=True)
    _check(got, want)
    _check(got_sum, np.broadcast_to(want_sum, np.shape(want)))


def test_average_1d_weights_keepdims_and_errors():
    y, w = RNG.normal(size=(4, 5)), RNG.random(5)
    got, got_sum = fnp.average(_f64(y), 1, weights=_f64(w), returned=True, keepdims=True)
    want, want_sum = np.average(y, 1, weights=w, returned=True, keepdims=True)
    _check(got, want)
    _check(got_sum, np.broadcast_to(want_sum, want.shape))
    with pytest.raises(FlamefxValueError, match="5 weights for axis 0 of length 4"):
        fnp.average(y, 0, weights=w)
    with pytest.raises(FlamefxValueError, match="single int axis"):
        fnp.average(y, None, weights=w)


def test_ptp_and_count_nonzero():
    y = RNG.normal(size=(4, 5))
    _check(fnp.ptp(_f64(y), 1), np.ptp(y, 1))
    _check(fnp.ptp(_f64(y), keepdims=True), np.ptp(y, keepdims=True))
    m = np.array([[0, 1, 2], [0, 0, 3]], np.int32)
    _check(fnp.count_nonzero(m, axis=0), np.count_nonzero(m, axis=0).astype(np.int32))
    _check(fnp.count_nonzero(m, axis=1, keepdims=True),
           np.count_nonzero(m, axis=1, keepdims=True).astype(np.int32))
    assert fnp.count_nonzero(np.array([True, False, True])).item() == 2


# --- covariance ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"rowvar": False}, {"bias": True}, {"ddof": 2}])
def test_cov_and_corrcoef_match_numpy(kwargs):
    y = RNG.normal(size=(4, 6))
    _check(fnp.cov(_f64(y), **kwargs), np.cov(y, **kwargs))
    rowvar = kwargs.get("rowvar", True)
    _check(fnp.corrcoef(_f64(y), rowvar=rowvar), np.corrcoef(y, rowvar=rowvar))


@pytest.mark.parametrize("weights", ["f", "a", "fa", "fa0", "a_bias"])
def test_cov_weights_match_numpy(weights):
    y = RNG.normal(size=(3, 6))
    fweights = np.array([1, 2, 0, 3, 1, 2], np.int32)
    aweights = RNG.random(6)
    kwargs = {}
    if "f" in weights:
        kwargs["fweights"] = fweights
    if "a" in weights:
        kwargs["aweights"] = aweights
    if weights.endswith("0"):
        kwargs["ddof"] = 0
    if weights.endswith("bias"):
        kwargs["bias"] = True
    got_kwargs = {k: _f64(v) if k == "aweights" else v for k, v in kwargs.items()}
    _check(fnp.cov(_f64(y), **got_kwargs), np.cov(y, **kwargs))


def test_cov_shapes():
    y = RNG.normal(size=(2, 6))
    _check(fnp.cov(_f64(y[0]), _f64(y[1])), np.cov(y[0], y[1]))
    _check(fnp.cov(_f64(y[0])), np.cov(y[0]))  # one variable: 0-d
    _check(fnp.corrcoef(_f64(y[0])), np.asarray(1.0))
    assert fnp.cov(_f64(np.zeros((0, 3)))).shape == (0, 0)


def test_cov_dtype_and_empty_samples():
    y = RNG.normal(size=(2, 6))
    assert fnp.cov(y, dtype=fnp.float16).dtype == np.float16
    _check(fnp.corrcoef(_f64(y), dtype=fnp.float64), np.corrcoef(y))
    got = fnp.cov(np.ones((2, 0), np.float32))
    assert got.shape == (2, 2) and np.isnan(np.asarray(got)).all()
    with pytest.raises(FlamefxValueError, match="dtype must be a float or complex"):
        fnp.cov(y, dtype=np.int32)
    with pytest.raises(FlamefxValueError, match="2 samples per variable but y has 6"):
        fnp.cov(y, y[:1], rowvar=False)


def test_cov_bad_weights():
    y = np.ones((2, 4), np.float32)
    with pytest.raises(FlamefxValueError, match=r"fweights must be 1-D with one weight per "
                                                r"sample \(4\), got shape \(3,\)"):
        fnp.cov(y, fweights=np.ones(3, np.int32))
    with pytest.raises(FlamefxValueError, match="aweights"):
        fnp.cov(y, aweights=np.ones((2, 4)))
    with pytest.raises(FlamefxTypeError, match="fweights must be integers"):
        fnp.cov(y, fweights=np.ones(4))
    with pytest.raises(FlamefxValueError, match="more than 2 dimensions"):
        fnp.cov(np.ones((2, 2, 2)))


def test_complex_inputs():
    z = RNG.normal(size=(3, 5)) + 1j * RNG.normal(size=(3, 5))
    z_nan = z.copy()
    z_nan[0, 1] = np.nan
    for name in ["nansum", "nanmean", "nanvar", "nanstd", "nanprod"]:
        # A complex variance is real (its dtype too).
        _check(getattr(fnp, name)(fnp.array(z_nan, dtype=fnp.complex128), axis=1),
               getattr(np, name)(z_nan, axis=1))
    _check(fnp.cov(fnp.array(z, dtype=fnp.complex128)), np.cov(z))
    _check(fnp.corrcoef(fnp.array(z, dtype=fnp.complex128)), np.corrcoef(z))
    with pytest.raises(FlamefxTypeError, match="complex"):
        fnp.median(fnp.array(z, dtype=fnp.complex128))


# --- counting --------------------------------------------------------------------------------


def test_bincount():
    x = np.array([0, 1, 1, 3, 7], np.int32)
    _check(fnp.bincount(x), np.bincount(x).astype(np.int32))
    _check(fnp.bincount(x, minlength=10), np.bincount(x, minlength=10).astype(np.int32))
    weights = RNG.random(5)
    _check(fnp.bincount(x, _f64(weights)), np.bincount(x, weights))
    # JAX's rules: length= fixes the bins, later values are dropped, negative ones go to 0.
    _check(fnp.bincount(np.array([-2, 1, 5], np.int32), length=3), np.array([1, 1, 0], np.int32))
    _check(fnp.bincount(np.zeros(0, np.int32)), np.zeros(0, np.int32))
    jitted = flamefx.jit(lambda x: fnp.bincount(x, length=8))
    _check(jitted(x), np.bincount(x, minlength=8).astype(np.int32))


def test_bincount_errors():
    with pytest.raises(ConcretizationError, match="length="):
        flamefx.jit(fnp.bincount)(np.array([1, 2], np.int32))
    with pytest.raises(FlamefxTypeError, match="integers"):
        fnp.bincount(np.array([1.0]))
    with pytest.raises(FlamefxValueError, match="weights"):
        fnp.bincount(np.array([1, 2], np.int32), np.ones(3))


# --- order statistics ------------------------------------------------------------------------

QS = [0.3, np.array([0.0, 0.25, 0.5, 0.9, 1.0])]
NUMPY_METHODS = ["linear", "lower", "higher", "midpoint", "inverted_cdf"]


@pytest.mark.parametrize("method", NUMPY_METHODS)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_quantile_matches_numpy(method, axis, keepdims):
    x = RNG.normal(size=(3, 4, 5))
    for q in QS:
        _check(fnp.quantile(_f64(x), _f64(q), axis=axis, method=method, keepdims=keepdims),
               np.quantile(x, q, axis=axis, method=method, keepdims=keepdims))
        _check(fnp.percentile(_f64(x), _f64(q * 100), axis=axis, method=method,
                              keepdims=keepdims),
               np.percentile(x, q * 100, axis=axis, method=method, keepdims=keepdims))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("method", NUMPY_METHODS)
@pytest.mark.parametrize("axis", AXES)
def test_nanquantile_matches_numpy(method, axis):
    x = _with_nans()
    for q in QS:
        _check(fnp.nanquantile(_f64(x), _f64(q), axis=axis, method=method),
               np.nanquantile(x, q, axis=axis, method=method))
        _check(fnp.nanpercentile(_f64(x), _f64(q * 100), axis=axis, method=method,
                                 keepdims=True),
               np.nanpercentile(x, q * 100, axis=axis, method=method, keepdims=True))
        # One NaN in a slice makes its plain quantile NaN.
        want = np.quantile(x, q, axis=axis, method=method)
        _check(fnp.quantile(_f64(x), _f64(q), axis=axis, method=method), want)


def test_nearest_follows_jax():
    # JAX sends an exact half to the lower element; NumPy rounds the index half to even.
    x = _f64([1.0, 2.0, 3.0, 4.0])
    _check(fnp.quantile(x, _f64([0.5, 1 / 6, 0.8]), method="nearest"),
           np.array([2.0, 1.0, 3.0]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
def test_median_and_nanmedian_match_numpy(axis):
    x = RNG.normal(size=(3, 4, 5))
    _check(fnp.median(_f64(x), axis=axis), np.median(x, axis=axis))
    _check(fnp.median(_f64(x), axis=axis, keepdims=True), np.median(x, axis=axis, keepdims=True))
    x = _with_nans()
    _check(fnp.nanmedian(_f64(x), axis=axis), np.nanmedian(x, axis=axis))
    _check(fnp.median(_f64(x), axis=axis), np.median(x, axis=axis))


def test_quantile_edge_cases():
    assert fnp.median(np.array([3, 1, 2, 10], np.int32)).dtype == np.float32
    assert fnp.median(_f64(2.5)).item() == 2.5  # 0-d
    assert np.isnan(fnp.median(_f64([])).item())
    got = fnp.quantile(_f64(np.zeros((2, 0))), 0.5, axis=1)
    assert got.shape == (2,) and np.isnan(np.asarray(got)).all()


def test_weighted_inverted_cdf():
    # Weighted quantiles (JAX's keyword, method='inverted_cdf'): values checked against
    # NumPy >= 2.0's weights=.
    x, w = RNG.normal(size=(3, 7)), RNG.random((3, 7))
    for axis in [None, 1]:
        _check(fnp.quantile(_f64(x), _f64([0.2, 0.7]), axis=axis, method="inverted_cdf",
                            weights=_f64(w)),
               np.quantile(x, [0.2, 0.7], axis=axis, method="inverted_cdf", weights=w))
    _check(fnp.quantile(_f64(x), 0.4, axis=1, method="inverted_cdf", weights=_f64(w[0])),
           np.quantile(x, 0.4, axis=1, method="inverted_cdf",
                       weights=np.broadcast_to(w[0], x.shape)))


def test_quantile_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(FlamefxValueError, match=r"q must lie in \[0, 1\]"):
        fnp.quantile(x, 1.5)
    with pytest.raises(FlamefxValueError, match=r"\[0, 100\]"):
        fnp.percentile(x, -1.0)
    with pytest.raises(FlamefxValueError, match="method must be one of"):
        fnp.quantile(x, 0.5, method="hazen")
    with pytest.raises(FlamefxValueError, match="inverted_cdf"):
        fnp.quantile(x, 0.5, weights=x)
    with pytest.raises(FlamefxValueError, match="scalar or 1-D"):
        fnp.quantile(x, np.ones((2, 2)) / 2)
    with pytest.raises(FlamefxValueError, match="weights of shape"):
        fnp.quantile(x, 0.5, axis=1, method="inverted_cdf", weights=np.ones(2))


# --- histograms ------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 5, [-1.0, 0.0, 0.5, 2.0]])
@pytest.mark.parametrize("value_range", [None, (-1.0, 1.0), (0.0, 0.0)])
@pytest.mark.parametrize("density", [None, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_histogram_matches_numpy(bins, value_range, density, weighted):
    x, w = RNG.normal(size=(5, 10)), RNG.random((5, 10))
    weights = w if weighted else None
    got_counts, got_edges = fnp.histogram(
        _f64(x), _f64(bins) if np.ndim(bins) else bins, value_range,
        None if weights is None else _f64(weights), density)
    counts, edges = np.histogram(x, bins, value_range, weights=weights, density=density)
    _check(got_edges, edges)
    _check(got_counts, counts.astype(np.float64))
    _check(fnp.histogram_bin_edges(_f64(x), _f64(bins) if np.ndim(bins) else bins, value_range),
           np.histogram_bin_edges(x, bins, value_range))


def test_histogram_nan_ints_and_errors():
    x = RNG.normal(size=20)
    x[3] = np.nan
    _check(fnp.histogram(_f64(x), 3, (-1, 1))[0], np.histogram(x, 3, (-1, 1))[0].astype(float))
    counts, edges = fnp.histogram(np.array([1, 2, 2, 3], np.int32), 3)
    assert counts.dtype == np.float32 and counts.tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(FlamefxValueError, match="weights"):
        fnp.histogram(np.ones(3), weights=np.ones(4))
    with pytest.raises(FlamefxValueError, match="string bins"):
        fnp.histogram(np.ones(3), bins="auto")
    with pytest.raises(FlamefxValueError, match="positive static int"):
        fnp.histogram(np.ones(3), bins=0)


@pytest.mark.parametrize("bins", [4, [2, 3, 4], [[-1.0, 0.0, 1.0], 3, [-2.0, 0.5, 2.0]]])
@pytest.mark.parametrize("value_range", [None, [(-1.0, 1.0), None, (0.0, 2.0)]])
@pytest.mark.parametrize("density", [None, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_histogramdd_matches_numpy(bins, value_range, density, weighted):
    sample, w = RNG.normal(size=(40, 3)), RNG.random(40)
    weights = w if weighted else None
    got_bins = [_f64(b) if np.ndim(b) else b for b in bins] if isinstance(bins, list) else bins
    counts, edges = fnp.histogramdd(_f64(sample), got_bins, value_range,
                                    None if weights is None else _f64(weights), density)
    want, want_edges = np.histogramdd(sample, bins, value_range, weights=weights,
                                      density=density)
    # Without weights or density the counts are integers, as in JAX.
    _check(counts, want if weighted or density else want.astype(np.int32))
    for got_e, want_e in zip(edges, want_edges):
        _check(got_e, want_e)


@pytest.mark.parametrize("bins", [5, [3, 4], [-1.0, 0.0, 1.0, 2.0]])
def test_histogram2d_matches_numpy(bins):
    x, y, w = RNG.normal(size=30), RNG.normal(size=30), RNG.random(30)
    got_bins = _f64(bins) if np.ndim(bins) == 1 and len(bins) > 2 else bins
    counts, x_edges, y_edges = fnp.histogram2d(_f64(x), _f64(y), got_bins, weights=_f64(w))
    want, want_x, want_y = np.histogram2d(x, y, bins, weights=w)
    _check(counts, want)
    _check(x_edges, want_x)
    _check(y_edges, want_y)
    with pytest.raises(FlamefxValueError, match="one weight per point"):
        fnp.histogramdd(np.ones((4, 2)), weights=np.ones(3))
    with pytest.raises(FlamefxValueError, match="one length"):
        fnp.histogram2d(np.ones(3), np.ones(4))


@pytest.mark.parametrize("right", [False, True])
@pytest.mark.parametrize("bins", [[-1.0, 0.0, 0.5, 2.0], [2.0, 0.5, 0.0, -1.0], [0.0, 0.0, 1.0]])
def test_digitize_matches_numpy(right, bins):
    x = RNG.normal(size=(4, 5))
    x[0, :3] = bins[:3]  # values on the edges
    _check(fnp.digitize(_f64(x), _f64(bins), right), np.digitize(x, bins, right).astype(np.int32))
    _check(fnp.digitize(_f64(x), _f64(bins), right, method="compare_all"),
           np.digitize(x, bins, right).astype(np.int32))


def test_digitize_empty_bins_and_errors():
    _check(fnp.digitize(np.array([1.0, 2.0]), np.zeros(0)), np.zeros(2, np.int32))
    with pytest.raises(FlamefxValueError, match="1-D"):
        fnp.digitize(np.ones(2), np.ones((2, 2)))


# --- gradients, jit, vmap --------------------------------------------------------------------


def test_gradients_to_order_2():
    x = RNG.normal(size=(3, 5))
    x_nan = x.copy()
    x_nan[1, 2] = np.nan
    # NaN-ignoring reductions: derivatives of the non-NaN elements (the NaN stays put).
    mask = np.isnan(x_nan)

    def at_nans(fn):
        return lambda v: fn(fnp.where(mask, np.nan, v))
    check_grads(at_nans(lambda v: fnp.nansum(v, axis=1)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanmean(v, axis=0)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanvar(v, axis=1, ddof=1)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanstd(v)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanprod(v, axis=1)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanmax(v, axis=0)), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nancumsum(v, axis=1)), (_f64(x),))
    w = _f64(RNG.random(5) + 0.1)
    check_grads(lambda a, w: fnp.average(a, 1, weights=w), (_f64(x), w))
    check_grads(fnp.ptp, (_f64(x),))
    check_grads(lambda a: fnp.cov(a, aweights=w), (_f64(x),))
    check_grads(fnp.corrcoef, (_f64(x),))
    check_grads(lambda a, q: fnp.quantile(a, q, axis=1), (_f64(x), _f64([0.2, 0.65])))
    check_grads(lambda a: fnp.median(a, axis=0), (_f64(x),))
    check_grads(at_nans(lambda v: fnp.nanpercentile(v, 40.0, axis=1)), (_f64(x),))
    check_grads(lambda w: fnp.histogram(_f64(x), 4, (-1, 1), weights=w)[0],
                (_f64(RNG.random((3, 5))),))
    check_grads(lambda w: fnp.histogram2d(_f64(x[0]), _f64(x[1]), 2, weights=w)[0],
                (_f64(RNG.random(5)),))


def test_quantile_gradient_goes_to_the_selected_elements():
    x = _f64([4.0, 1.0, 3.0, 2.0])
    # The median of an even count is the midpoint of the two middle elements (2 and 3).
    np.testing.assert_allclose(flamefx.grad(fnp.median)(x), [0.0, 0.0, 0.5, 0.5])
    # Linear interpolation at q = 0.25: position 0.75 between the sorted 1 and 2.
    np.testing.assert_allclose(flamefx.grad(lambda v: fnp.quantile(v, 0.25))(x),
                               [0.0, 0.25, 0.0, 0.75])
    np.testing.assert_allclose(flamefx.grad(lambda v: fnp.quantile(v, 0.25, method="lower"))(x),
                               [0.0, 1.0, 0.0, 0.0])


def test_jit_and_vmap():
    x = _with_nans()[:, 0]
    _check(flamefx.jit(lambda v: fnp.nanmedian(v, axis=1))(_f64(x)), np.nanmedian(x, axis=1))
    _check(flamefx.vmap(fnp.nanmean)(_f64(x)), np.nanmean(x, axis=1))
    y = RNG.normal(size=(4, 3, 6))
    _check(flamefx.vmap(fnp.cov)(_f64(y)), np.stack([np.cov(m) for m in y]))
    _check(flamefx.jit(lambda v: fnp.quantile(v, 0.3, axis=(1, 2)))(_f64(y)),
           np.quantile(y, 0.3, axis=(1, 2)))
    _check(flamefx.vmap(lambda v: fnp.percentile(v, 75.0))(_f64(y)),
           np.percentile(y.reshape(4, -1), 75.0, axis=1))
    counts = flamefx.jit(lambda v: fnp.histogram(v, 4, (-2, 2))[0])(_f64(y[0]))
    _check(counts, np.histogram(y[0], 4, (-2, 2))[0].astype(np.float64))
    counts = flamefx.jit(lambda v: fnp.histogramdd(v, 3, [(-2, 2)] * 3)[0])(_f64(y[0, :, :3]))
    _check(counts, np.histogramdd(y[0, :, :3], 3, [(-2, 2)] * 3)[0].astype(np.int32))
    edges = _f64([-1.0, 0.0, 1.0])
    _check(flamefx.vmap(lambda v: fnp.digitize(v, edges))(_f64(y[0])),
           np.digitize(y[0], [-1.0, 0.0, 1.0]).astype(np.int32))
