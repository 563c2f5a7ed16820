"""What the registry tests do not cover for elementwise ops and reductions: error messages,
dtype rules (half types, weak types), gradient conventions at ties and zeros, the fusion
descriptors' contract, and (on a GPU machine) every CUDA kernel against the NumPy impl in
float32, float16 and bfloat16.
"""

import math

import numpy as np
import pytest

import flamefx
from flamefx import core, dtypes
from flamefx.core import Primitive
from flamefx.errors import FlamefxTypeError
from flamefx.kernels.cuda_elementwise import Elementwise
from flamefx.kernels.cuda_reduce import Reduction
from flamefx.primitives import elementwise as ew
from flamefx.primitives import reductions as red
from tests.samples import elementwise as ew_samples
from tests.samples import reductions as red_samples

BF16 = dtypes.bfloat16


# --- errors ----------------------------------------------------------------------------------


def test_shape_mismatch_names_primitive_and_shapes():
    with pytest.raises(FlamefxTypeError) as info:
        ew.add(np.ones(3, np.float32), np.ones(4, np.float32))
    message = str(info.value)
    assert "add" in message and "(3,)" in message and "(4,)" in message
    assert "test_elementwise.py" in message  # the user's own line


def test_dtype_mismatch_is_an_error_not_a_promotion():
    with pytest.raises(FlamefxTypeError, match="equal dtypes.*float32.*float64"):
        ew.mul(np.ones(2, np.float32), np.ones(2, np.float64))


def test_int_input_to_float_op_is_rejected():
    with pytest.raises(FlamefxTypeError, match="exp.*floating-point.*int32"):
        ew.exp(np.arange(3, dtype=np.int32))


def test_bad_reduction_axes():
    with pytest.raises(FlamefxTypeError, match="axis 2 is out of range"):
        red.reduce_sum(np.ones((2, 3)), (2,))
    with pytest.raises(FlamefxTypeError, match="bool"):
        red.reduce_and(np.ones(3), (0,))


# --- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float32])
def test_half_and_single_precision_keep_their_dtype(dtype):
    x = np.linspace(-1, 1, 7).astype(dtype)
    for fn in (ew.exp, ew.tanh, ew.logistic, ew.erf, ew.sqrt):
        out = fn(np.abs(x) if fn is ew.sqrt else x)
        assert out.dtype == np.dtype(dtype), fn.__name__
    expected = np.exp(x.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(np.asarray(ew.exp(x)), expected)
    assert ew.lt(x, x).dtype == np.bool_
    assert red.reduce_max(x, (0,)).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype,n", [(np.float16, 4096), (BF16, 512)])
def test_half_sums_accumulate_in_float32(dtype, n):
    # A half-precision accumulator stalls at 2048 (float16) or 256 (bfloat16).
    ones = np.ones(n, dtype)
    assert float(red.reduce_sum(ones, (0,))) == n
    assert float(red.cumsum(ones, 0)[-1]) == n


def test_weak_type_iff_all_inputs_weak():
    weak = core.to_array(np.ones(3, np.float32), weak=True)
    strong = core.to_array(np.ones(3, np.float32))
    assert ew.add(weak, weak).weak_type
    assert not ew.add(weak, strong).weak_type
    assert ew.exp(weak).weak_type
    assert not ew.lt(weak, weak).weak_type
    assert red.reduce_sum(weak, (0,)).weak_type
    assert ew.convert_element_type(strong, np.float32, weak_type=True).weak_type


def test_integer_semantics_follow_c():
    x, y = np.array([-7, 7, -7, 7], np.int32), np.array([2, -2, -2, 2], np.int32)
    assert ew.div(x, y).tolist() == [-3, -3, 3, 3]
    assert ew.rem(x, y).tolist() == [-1, 1, -1, 1]
    assert ew.shift_right_logical(np.array([-8], np.int32), np.array([28], np.int32)).tolist() \
        == [15]
    assert ew.convert_element_type(np.array([-2.7, 2.7]), np.int32).tolist() == [-2, 2]


def test_erf_and_erf_inv_are_accurate_in_float64():
    x = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(np.asarray(ew.erf(x)), [math.erf(v) for v in x], rtol=1e-15,
                               atol=1e-16)
    y = np.linspace(-0.999, 0.999, 41)
    np.testing.assert_allclose([math.erf(v) for v in np.asarray(ew.erf_inv(y))], y,
                               rtol=1e-14, atol=1e-15)
    edge = np.asarray(ew.erf_inv(np.array([-1.0, 1.0, 1.5])))
    assert edge[0] == -np.inf and edge[1] == np.inf and np.isnan(edge[2])


def test_round_is_half_away_from_zero():
    assert ew.round(np.array([-2.5, -0.5, 0.5, 1.5, 2.5])).tolist() == [-3, -1, 1, 2, 3]


def test_max_and_min_propagate_nan():
    x, y = np.array([np.nan, 1.0]), np.array([0.0, np.nan])
    assert np.isnan(np.asarray(ew.max(x, y))).all()
    assert np.isnan(np.asarray(red.reduce_min(np.array([1.0, np.nan, 0.0]), (0,))))
    assert red.argmax(np.array([1.0, np.nan, 5.0]), 0, np.int32).item() == 1


# --- gradient conventions ----------------------------------------------------------------------


def test_max_min_ties_split_the_gradient_evenly():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 0.0, 5.0])
    gx, gy = flamefx.grad(lambda a, b: red.reduce_sum(ew.max(a, b), (0,)), argnums=(0, 1))(x, y)
    assert gx.tolist() == [0.5, 1.0, 0.0] and gy.tolist() == [0.5, 0.0, 1.0]
    gx, gy = flamefx.grad(lambda a, b: red.reduce_sum(ew.min(a, b), (0,)), argnums=(0, 1))(x, y)
    assert gx.tolist() == [0.5, 0.0, 1.0] and gy.tolist() == [0.5, 1.0, 0.0]
    g = flamefx.grad(lambda a: red.reduce_max(a, (0,)))(np.array([1.0, 3.0, 3.0]))
    assert g.tolist() == [0.0, 0.5, 0.5]


def test_pow_exponent_gradient_is_zero_at_zero_base():
    gx, gy = flamefx.grad(lambda a, b: red.reduce_sum(ew.pow(a, b), (0,)), argnums=(0, 1))(
        np.array([0.0, 2.0]), np.array([2.0, 3.0]))
    assert np.isfinite(np.asarray(gy)).all()
    np.testing.assert_allclose(np.asarray(gy), [0.0, 8 * math.log(2)])
    np.testing.assert_allclose(np.asarray(gx), [0.0, 12.0])


@pytest.mark.parametrize("x,expected", [
    ([2.0, 3.0, 4.0], [12.0, 8.0, 6.0]),
    ([2.0, 0.0, 4.0], [0.0, 8.0, 0.0]),
    ([0.0, 0.0, 4.0], [0.0, 0.0, 0.0]),
])
def test_prod_gradient_with_zeros(x, expected):
    g = flamefx.grad(lambda a: red.reduce_prod(a, (0,)))(np.array(x))
    assert g.tolist() == expected


def test_integer_and_bool_inputs_get_no_cotangent():
    def f(x, n):
        return red.reduce_sum(ew.mul(x, ew.convert_element_type(n, np.float64)), (0,))
    g = flamefx.grad(f)(np.ones(3), np.arange(3, dtype=np.int32))
    assert g.tolist() == [0.0, 1.0, 2.0]


def test_select_n_routes_cotangents_to_the_chosen_case():
    which = np.array([0, 2, 1], np.int32)
    grads = flamefx.grad(lambda a, b, c: red.reduce_sum(ew.select_n(which, a, b, c), (0,)),
                         argnums=(0, 1, 2))(np.ones(3), np.ones(3), np.ones(3))
    assert [g.tolist() for g in grads] == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_vmap_of_reduction_keeps_the_batch_axis_in_place():
    x = np.arange(24.0).reshape(2, 3, 4)
    out = flamefx.vmap(lambda a: red.reduce_sum(a, (1,)), in_axes=1)(x)
    np.testing.assert_array_equal(np.asarray(out), x.sum(axis=2).T)
    out = flamefx.vmap(lambda a: red.argmax(a, 0, np.int32), in_axes=2)(x)
    np.testing.assert_array_equal(np.asarray(out), np.argmax(x, axis=0).T)


# --- the fusion descriptors ------------------------------------------------------------------


def test_fusion_descriptors_render_c_expressions():
    f32, i32 = np.dtype(np.float32), np.dtype(np.int32)
    assert ew.exp_p.fusion.render((f32,)) == "exp(x0)"
    assert ew.abs_p.fusion.render((i32,)) == "(x0 < 0 ? -x0 : x0)"
    assert ew.integer_pow_p.fusion.render((f32,), y=3) == "flamefx_ipow(x0, 3)"
    assert ew.select_n_p.fusion.render((i32, f32, f32, f32)) == \
        "(x0 <= 0 ? x1 : (x0 <= 1 ? x2 : x3))"
    assert ew.bitwise_not_p.fusion.render((np.dtype(bool),)) == "(!x0)"
    assert red.reduce_max_p.fusion.combine == "((a > b || a != a) ? a : b)"
    assert red.reduce_sum_p.fusion.identity(np.float16) == "0"
    for prim in Primitive.registry.values():
        # complex_ops' primitives never fuse (tests/samples/elementwise.py holds theirs too)
        if prim.name in ew_samples.SAMPLES and prim.name not in ("real", "imag", "conj",
                                                                  "complex"):
            assert isinstance(prim.fusion, Elementwise), prim.name
        if prim.name.startswith("reduce_") and prim.abstract_eval.__module__ == red.__name__:
            assert isinstance(prim.fusion, Reduction), prim.name


# --- GPU: every CUDA kernel against the NumPy impl ------------------------------------------------

_TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float16): 4e-3, BF16: 3e-2}
_GPU_CASES = [pytest.param(name, i, id=f"{name}-{i}")
              for samples in (ew_samples.SAMPLES, red_samples.SAMPLES)
              for name in sorted(samples) for i in range(len(samples[name]))]


def _run_impl(prim, platform, args, params):
    from flamefx import devices
    if platform == "gpu":
        cp = devices.cupy()
        args = [cp.asarray(a) for a in args]
    outs = prim.impl_for(platform)(*args, **params)
    return [np.asarray(o.get() if platform == "gpu" else o) for o in outs]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("name,i", _GPU_CASES)
def test_cuda_impl_matches_numpy_impl(name, i, dtype):
    samples = {**ew_samples.SAMPLES, **red_samples.SAMPLES}
    prim, sample = Primitive.registry[name], samples[name][i]
    rng = np.random.default_rng(i)
    args = [np.asarray(a) for a in sample.make(rng)]
    args = [a.astype(dtype) if dtypes.is_float(a.dtype) else a for a in args]
    try:
        core.abstract_eval(prim, [core.get_aval(a) for a in args], sample.params)
    except FlamefxTypeError:
        pytest.skip(f"{name} does not take {np.dtype(dtype).name}")
    cpu = _run_impl(prim, "cpu", args, sample.params)
    gpu = _run_impl(prim, "gpu", args, sample.params)
    tol = _TOLERANCE[np.dtype(dtype)]
    for c, g in zip(cpu, gpu):
        assert c.dtype == g.dtype and c.shape == g.shape
        if dtypes.is_inexact(c.dtype):
            wide = np.complex128 if dtypes.is_complex(c.dtype) else np.float64
            np.testing.assert_allclose(g.astype(wide), c.astype(wide), rtol=tol, atol=tol,
                                       equal_nan=True)
        else:
            np.testing.assert_array_equal(g, c)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16], ids=["f32", "f16", "bf16"])
def test_cuda_kernels_on_large_inputs(dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (300, 1000)).astype(dtype)
    y = rng.uniform(0.5, 1.5, (300, 1000)).astype(dtype)
    tol = _TOLERANCE[np.dtype(dtype)]
    checks = [(ew.tanh_p, (x,), {}), (ew.div_p, (x, y), {}), (ew.max_p, (x, y), {}),
              (red.reduce_max_p, (x,), {"axes": (0,)}), (red.reduce_min_p, (x,), {"axes": (1,)}),
              (red.argmax_p, (x,), {"axis": 1, "index_dtype": np.dtype(np.int32)}),
              (red.cumsum_p, (y,), {"axis": 1, "reverse": True})]
    for prim, args, params in checks:
        cpu, gpu = (_run_impl(prim, p, args, params)[0] for p in ("cpu", "gpu"))
        if dtypes.is_float(cpu.dtype):
            scale = 1 if prim is not red.cumsum_p else 1000
            np.testing.assert_allclose(gpu.astype(np.float64), cpu.astype(np.float64),
                                       rtol=tol, atol=tol * scale, err_msg=prim.name)
        else:
            np.testing.assert_array_equal(gpu, cpu, err_msg=prim.name)
    total = _run_impl(red.reduce_sum_p, "gpu", (x,), {"axes": (0, 1)})[0]
    exact = x.astype(np.float64).sum()
    assert abs(float(total) - exact) <= tol * np.abs(x.astype(np.float64)).sum() * 1e-2 + 1


# --- flamefx.numpy functions composed of elementwise primitives (issue 19) -------------------

import flamefx.numpy as fnp  # noqa: E402
from flamefx.test_util import check_grads  # noqa: E402



_X = np.array([[-1.7, -0.4, 0.3], [0.9, 1.6, 2.4]])
_Y = np.array([[0.6, -1.1, 0.3], [-2.0, 1.6, 0.5]])  # ties with _X at two places


@pytest.mark.parametrize("fn,reference,args", [
    (fnp.arcsinh, np.arcsinh, (_X,)),
    (fnp.arccosh, np.arccosh, (np.abs(_X) + 1.1,)),
    (fnp.arctanh, np.arctanh, (_X / 3,)),
    (fnp.sinc, np.sinc, (_X,)),
    (fnp.sinc, np.sinc, (np.array([0.0, 1e-3, -0.05, 0.0318, 0.0319, 2.0]),)),
    (fnp.logaddexp, np.logaddexp, (_X, _Y)),
    (fnp.logaddexp2, np.logaddexp2, (_X, _Y)),
    (fnp.rad2deg, np.rad2deg, (_X,)),
    (fnp.deg2rad, np.deg2rad, (_X * 90,)),
    (fnp.copysign, np.copysign, (_X, -_Y)),
    (fnp.fabs, np.fabs, (_X,)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_composite_values_and_gradients(fn, reference, args, x64):
    np.testing.assert_allclose(np.asarray(fn(*args)), reference(*args), rtol=1e-12, atol=1e-15)
    if fn not in (fnp.copysign, fnp.fabs):  # kinks at 0 only; tested through the samples
        check_grads(fn, [fnp.asarray(a) for a in args], order=2)


def test_logaddexp_derivatives_at_ties(x64):
    # The second derivative at x == y is 1/4 (it was 0 through a |x - y| kink).
    x = fnp.array([-3.0, 0.0, 1.5], dtype="float64")
    check_grads(fnp.logaddexp, (x, x), order=2)
    hessian = flamefx.hessian(lambda v: fnp.logaddexp(v[0], v[1]))(fnp.array([1.0, 1.0]))
    np.testing.assert_allclose(np.asarray(hessian), [[0.25, -0.25], [-0.25, 0.25]])
    grads = flamefx.grad(fnp.logaddexp, argnums=(0, 1))(2.0, 2.0)
    assert [float(g) for g in grads] == [0.5, 0.5]


def test_logaddexp_is_exact_at_extremes(x64):
    inf = np.inf
    x = np.array([0.0, -40.0, 800.0, -inf, inf, -inf, 5.0])
    y = np.array([-40.0, 0.0, 799.0, -inf, 1.0, 2.0, inf])
    np.testing.assert_allclose(np.asarray(fnp.logaddexp(x, y)), np.logaddexp(x, y), rtol=1e-15)


def test_sinc_is_smooth_at_zero(x64):
    # JAX's values: sinc'(0) = 0, sinc''(0) = -pi^2 / 3, sinc'''(0) = 0, sinc''''(0) = pi^4 / 5.
    derivative, expected = fnp.sinc, [1.0, 0.0, -math.pi ** 2 / 3, 0.0, math.pi ** 4 / 5]
    for k, value in enumerate(expected):
        assert float(derivative(0.0)) == pytest.approx(value, rel=1e-5, abs=1e-6), k
        derivative = flamefx.grad(derivative)


def test_fmax_fmin_ignore_nan_and_send_ties_to_y(x64):
    x = np.array([np.nan, 1.0, np.nan, 3.0])
    y = np.array([2.0, np.nan, np.nan, -1.0])
    np.testing.assert_array_equal(np.asarray(fnp.fmax(x, y)), np.fmax(x, y))
    np.testing.assert_array_equal(np.asarray(fnp.fmin(x, y)), np.fmin(x, y))
    assert [float(g) for g in flamefx.grad(fnp.fmax, argnums=(0, 1))(1.0, 1.0)] == [0.0, 1.0]
    assert fnp.fmax(np.int32(3), 2).dtype == np.int32


def test_copysign_and_signbit_read_the_sign_bit(x64):
    x = np.array([0.0, -0.0, 2.0, -3.0, np.inf, -np.inf])
    np.testing.assert_array_equal(np.asarray(fnp.signbit(x)), np.signbit(x))
    np.testing.assert_array_equal(np.asarray(fnp.signbit(np.array([-2, 0, 5]))), [True, False,
                                                                                   False])
    np.testing.assert_array_equal(np.asarray(fnp.copysign(1.0, x)), np.copysign(1.0, x))
    assert fnp.copysign(np.int32(1), np.int32(-2)).dtype == np.float64  # as JAX with x64
    grads = flamefx.grad(fnp.copysign, argnums=(0, 1))(2.0, -1.0)
    assert [float(g) for g in grads] == [-1.0, 0.0]


def test_shifts_follow_jax():
    x = np.array([-8, -1, 5, 1 << 30], np.int32)
    for s in (0, 1, 3, 31, 32, 40):
        expected_right = [v >> s if s < 32 else (-1 if v < 0 else 0) for v in x.tolist()]
        np.testing.assert_array_equal(np.asarray(fnp.right_shift(x, s)), expected_right)
        expected_left = [((v << s) & 0xFFFFFFFF) if s < 32 else 0 for v in x.tolist()]
        np.testing.assert_array_equal(np.asarray(fnp.left_shift(x, s)).view(np.uint32),
                                      expected_left)
    u = np.array([200, 7], np.uint8)
    np.testing.assert_array_equal(np.asarray(fnp.right_shift(u, 3)), u >> 3)
    a = fnp.asarray(x)
    np.testing.assert_array_equal(np.asarray(a >> 1), np.asarray(fnp.right_shift(x, 1)))
    np.testing.assert_array_equal(np.asarray(a << 2), np.asarray(fnp.left_shift(x, 2)))
    three = fnp.array(3, dtype=fnp.int32)
    assert int(1 << three) == 8 and int(64 >> three) == 8
    assert fnp.bitwise_left_shift is fnp.left_shift and fnp.bitwise_invert is fnp.invert
    with pytest.raises(FlamefxTypeError, match="right_shift"):
        fnp.right_shift(1.5, 1)


def test_isclose_allclose_and_array_equality(x64):
    a = np.array([1.0, np.inf, np.nan, np.inf, -np.inf, 1e-9])
    b = np.array([1.0 + 1e-6, np.inf, np.nan, -np.inf, 5.0, 0.0])
    for equal_nan in (False, True):
        np.testing.assert_array_equal(np.asarray(fnp.isclose(a, b, equal_nan=equal_nan)),
                                      np.isclose(a, b, equal_nan=equal_nan))
    np.testing.assert_array_equal(np.asarray(fnp.isclose(a, 1.0, rtol=0.5)),
                                  np.isclose(a, 1.0, rtol=0.5))
    assert bool(fnp.allclose([1.0, 2.0], [1.0, 2.0 + 1e-7]))
    assert not bool(fnp.allclose([1.0, np.nan], [1.0, np.nan]))
    assert bool(fnp.allclose([1.0, np.nan], [1.0, np.nan], equal_nan=True))
    assert not bool(fnp.isclose(np.int32(1), 2)) and bool(fnp.isclose(3, 3))
    assert bool(fnp.array_equal([1, 2], [1.0, 2.0]))
    assert not bool(fnp.array_equal(fnp.ones(2), fnp.ones(3)))
    assert not bool(fnp.array_equal([np.nan], [np.nan]))
    assert bool(fnp.array_equal([np.nan], [np.nan], equal_nan=True))
    assert bool(fnp.array_equiv(fnp.ones(2), fnp.ones((3, 2))))
    assert not bool(fnp.array_equiv(fnp.ones(2), fnp.ones(3)))


def test_nextafter_and_array_api_spellings():
    x = np.array([0.0, 1.0, -2.0], np.float32)
    np.testing.assert_array_equal(np.asarray(fnp.nextafter(x, 5.0)), np.nextafter(x, 5.0))
    with pytest.raises(FlamefxTypeError, match="float32 and float64"):
        fnp.nextafter(np.float16(1), np.float16(2))
    pairs = [(fnp.acos, fnp.arccos), (fnp.asin, fnp.arcsin), (fnp.atan, fnp.arctan),
             (fnp.atan2, fnp.arctan2), (fnp.pow, fnp.power), (fnp.acosh, fnp.arccosh),
             (fnp.asinh, fnp.arcsinh), (fnp.atanh, fnp.arctanh), (fnp.radians, fnp.deg2rad),
             (fnp.degrees, fnp.rad2deg)]
    assert all(a is b for a, b in pairs)
    assert fnp.arcsinh(np.int32(1)).dtype == np.float32  # integers promote, as in JAX


def test_erf_and_normal_on_0d_arrays():
    assert float(ew.erf(np.float32(0.5))) == pytest.approx(math.erf(0.5), rel=1e-6)
    assert ew.erf_inv(np.float64(0.5)).shape == ()
    assert flamefx.random.normal(flamefx.random.PRNGKey(0), ()).shape == ()
