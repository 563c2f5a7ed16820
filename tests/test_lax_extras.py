"""JAX's lax names beyond the primitives: convolution layouts and string padding, windowed
and monoid reductions, the prefix scan and cumulative ops, map, the *_in_dim helpers and
products; values against NumPy float64 loops, gradients by check_grads to order 2."""

import itertools

import numpy as np
import pytest

import flamefx
from flamefx import lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _float64():
    with flamefx.config.override("jax_enable_x64", True):
        yield


def _close(actual, expected, tol=1e-9):
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=tol, atol=tol)


# --- convolution ---------------------------------------------------------------------------


def _np_conv_nchw(x, w, strides, pads, rhs_dilation):
    """Direct float64 loop: NCHW x OIHW -> NCHW cross-correlation."""
    x = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    sh, sw = strides
    dh, dw = rhs_dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = x[:, :, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw]
        out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def _same_pads(size, k, s, lower=False):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


@pytest.mark.parametrize("padding", ["SAME", "VALID", "SAME_LOWER", ((1, 0), (2, 1))])
@pytest.mark.parametrize("layout", [None, ("NHWC", "HWIO", "NHWC"), ("NCHW", "HWIO", "NHWC")])
def test_conv_general_dilated_string_padding_and_layouts(padding, layout):
    x = RNG.normal(size=(2, 3, 7, 6))              # NCHW
    w = RNG.normal(size=(4, 3, 3, 2))              # OIHW
    strides, rhs_dilation = (2, 1), (1, 2)
    if isinstance(padding, str):
        spans = (3, 3)  # kernel (3, 2) with dilation (1, 2)
        pads = [_same_pads(s, k, st, padding == "SAME_LOWER") if padding != "VALID" else (0, 0)
                for s, k, st in zip((7, 6), spans, strides)]
    else:
        pads = padding
    want = _np_conv_nchw(x, w, strides, pads, rhs_dilation)
    if layout is None:
        got = lax.conv_general_dilated(x, w, strides, padding, None, rhs_dilation)
    else:
        lhs = x.transpose(0, 2, 3, 1) if layout[0] == "NHWC" else x
        got = lax.conv_general_dilated(lhs, w.transpose(2, 3, 1, 0), strides, padding, None,
                                       rhs_dilation, layout)
        want = want.transpose(0, 2, 3, 1)
    _close(got, want)


def test_primitive_level_conv_takes_string_padding():
    from flamefx.primitives import nn_ops
    x, w = RNG.normal(size=(1, 2, 6, 5)), RNG.normal(size=(3, 2, 3, 2))
    # spans (3, 3): kernel (3, 2) with rhs dilation (1, 2)
    want = _np_conv_nchw(x, w, (2, 1), [_same_pads(6, 3, 2), _same_pads(5, 3, 1)], (1, 2))
    _close(nn_ops.conv_general_dilated(x, w, (2, 1), "SAME", None, (1, 2)), want)


def test_conv_shape_helpers_match_jax_numbers():
    dn = ("NHWC", "HWIO", "NHWC")
    assert lax.conv_dimension_numbers((1, 5, 5, 2), (3, 3, 2, 4), dn) == \
        lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    assert lax.conv_general_shape_tuple((8, 28, 28, 1), (3, 3, 1, 16), (2, 2), "SAME", dn) == \
        (8, 14, 14, 16)
    assert lax.conv_transpose_shape_tuple((1, 4, 4, 2), (3, 3, 2, 5), (2, 2), "VALID", dn) == \
        (1, 9, 9, 5)
    assert lax.padtype_to_pads((5, 4), (3, 3), (2, 1), "SAME") == [(1, 1), (1, 1)]
    assert lax.padtype_to_pads((6,), (3,), (2,), "SAME_LOWER") == [(1, 0)]


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 2), (0, 1))])
def test_conv_transpose_is_the_gradient_of_conv(padding):
    # conv_transpose(transpose_kernel=True) of y is the input gradient of the forward conv
    # (the exact transpose when the forward conv tiles its input), checked via <y, conv(x)>.
    x = RNG.normal(size=(2, 8, 6, 3))              # NHWC
    w = RNG.normal(size=(3, 3, 3, 4))              # HWIO
    dn = ("NHWC", "HWIO", "NHWC")

    def forward(x):
        return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn)

    y = RNG.normal(size=np.shape(forward(x)))
    _, pullback = flamefx.vjp(forward, x)
    want = np.asarray(pullback(y)[0])
    got = lax.conv_transpose(y, w, (2, 2), "SAME", dimension_numbers=dn, transpose_kernel=True)
    _close(got, want)
    # The shape helper agrees with the op for every padding.
    kernel = w.swapaxes(2, 3)  # HWIO with I = y's 4 channels
    out = lax.conv_transpose(y, kernel, (2, 2), padding, dimension_numbers=dn)
    assert out.shape == lax.conv_transpose_shape_tuple(y.shape, kernel.shape, (2, 2), padding,
                                                       dn)


def test_conv_gradients_and_precision():
    x, w = RNG.normal(size=(1, 5, 5, 2)), RNG.normal(size=(3, 3, 2, 2))
    dn = ("NHWC", "HWIO", "NHWC")
    check_grads(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=dn, precision=lax.Precision.HIGHEST), (x, w),
        order=2)
    a = lax.conv(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1), "VALID",
                 precision=(lax.Precision.DEFAULT, lax.Precision.HIGH))
    b = lax.conv_with_general_padding(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1),
                                      ((0, 0), (0, 0)), (1, 1), (1, 1))
    _close(a, np.asarray(b))
    assert lax.Precision("float32") is lax.Precision.HIGHEST
    # Precision is accepted wherever precision= is: flamefx.numpy products and nn.conv too.
    import flamefx.numpy as fnp
    from flamefx import nn
    _close(fnp.matmul(x[0, 0], w[0, 0], precision=lax.Precision.HIGHEST), x[0, 0] @ w[0, 0])
    _close(nn.conv(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), padding="VALID",
                   precision=lax.Precision.HIGH), np.asarray(b))


def test_conv_errors():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(FlamefxValueError, match="unknown padding"):
        lax.conv_general_dilated(x, w, (1, 1), "FULL")
    with pytest.raises(FlamefxValueError, match="transposed"):
        lax.conv_general_dilated(x, w, (1, 1), "SAME", (2, 2))
    with pytest.raises(FlamefxTypeError, match="'C'"):
        lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWX", "HWIO", "NHWC"))
    with pytest.raises(FlamefxTypeError, match="precision"):
        lax.conv_general_dilated(x, w, (1, 1), "SAME", precision="fast")


# --- windowed and monoid reductions --------------------------------------------------------


def _np_reduce_window(x, init, op, window, strides, pads):
    """Windows of the padded operand (padding never counts), folded from init, as JAX
    computes them, by loops."""
    identity = {np.add: 0.0, np.maximum: -np.inf, np.minimum: np.inf}[op]
    padded = np.pad(x, pads, constant_values=identity)
    out_shape = [(p - w) // s + 1 for p, w, s in zip(padded.shape, window, strides)]
    out = np.empty(out_shape)
    for idx in itertools.product(*(range(o) for o in out_shape)):
        acc = init
        for tap in itertools.product(*(range(w) for w in window)):
            acc = op(acc, padded[tuple(i * s + t for i, s, t in zip(idx, strides, tap))])
        out[idx] = acc
    return out


@pytest.mark.parametrize("computation, op, init", [
    (lax.add, np.add, 0.0), (lax.max, np.maximum, -np.inf), (lax.min, np.minimum, np.inf),
    (lax.add, np.add, 1.5), (lax.max, np.maximum, 0.25)])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 0), (0, 2))])
def test_reduce_window_values(computation, op, init, padding):
    x = RNG.normal(size=(5, 6))
    window, strides = (2, 3), (1, 2)
    pads = (lax.padtype_to_pads(x.shape, window, strides, padding) if isinstance(padding, str)
            else padding)
    got = lax.reduce_window(x, init, computation, window, strides, padding)
    _close(got, _np_reduce_window(x, init, op, window, strides, pads))
    assert got.shape == lax.reduce_window_shape_tuple(x.shape, window, strides, pads)


def test_reduce_window_gradients_and_transforms():
    x = RNG.permutation(np.arange(24.0)).reshape(4, 6) / 5  # distinct: no ties

    def pool(x):
        return lax.reduce_window(x, -np.inf, lax.max, (2, 2), (2, 2), "SAME")

    check_grads(pool, (x,), order=2)
    check_grads(lambda x: lax.reduce_window(x, 0.0, lax.add, (3, 2), (1, 1), "SAME",
                                            window_dilation=(1, 2)), (x,), order=2)
    batched = flamefx.vmap(pool)(np.stack([x, -x]))
    _close(batched, np.stack([np.asarray(pool(x)), np.asarray(pool(-x))]))
    _close(flamefx.jit(pool)(x), np.asarray(pool(x)))


def test_max_pool_gradient_goes_to_the_first_maximum():
    # Ties: JAX's select-and-scatter gives the whole cotangent to the first maximal element.
    x = np.array([[1.0, 1.0], [0.0, 1.0]])
    g = flamefx.grad(lambda x: lax.reduce_window(x, -np.inf, lax.max, (2, 2), (1, 1),
                                                 "VALID").sum())(x)
    _close(g, np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_reduce_window_errors():
    with pytest.raises(FlamefxValueError, match="not supported"):
        lax.reduce_window(np.ones(4), 0.0, lambda a, b: a + b, (2,), (1,), "VALID")
    with pytest.raises(FlamefxValueError, match="prod"):
        lax.reduce_window(np.ones(4), 1.0, lax.mul, (2,), (1,), "VALID")
    with pytest.raises(FlamefxTypeError, match="window_dimensions"):
        lax.reduce_window(np.ones(4), 0.0, lax.add, (2, 2), (1,), ((0, 0),))


@pytest.mark.parametrize("computation, np_fn, init, dtype", [
    (lax.add, np.sum, 0.0, np.float64), (lax.mul, np.prod, 1.0, np.float64),
    (lax.max, np.max, -np.inf, np.float64), (lax.min, np.min, np.inf, np.float64),
    (lax.add, np.sum, 2.0, np.float64), (lax.max, np.max, 0.5, np.float64),
    (lax.bitwise_and, np.all, True, np.bool_), (lax.bitwise_or, np.any, False, np.bool_)])
def test_reduce_monoids(computation, np_fn, init, dtype):
    x = RNG.normal(size=(3, 4, 2)) if dtype != np.bool_ else RNG.random((3, 4, 2)) < 0.6
    got = np.asarray(lax.reduce(x, init, computation, (0, 2)))
    if np_fn in (np.sum, np.prod):
        want = np_fn([np_fn(x, axis=(0, 2)), np.full(4, init)], axis=0)
    else:
        want = np_fn(np.stack([np_fn(x, axis=(0, 2)), np.full(4, init, x.dtype)]), axis=0)
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), atol=1e-12)
    with pytest.raises(FlamefxValueError, match="not supported"):
        lax.reduce(x, init, lambda a, b: a, (0,))


# --- prefix scans -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_associative_scan_matches_cumsum_along_any_axis(n):
    x = RNG.normal(size=(3, n))
    _close(lax.associative_scan(lax.add, x, axis=1), np.cumsum(x, axis=1))
    _close(lax.associative_scan(lax.add, x, reverse=True, axis=-1),
           np.cumsum(x[:, ::-1], axis=1)[:, ::-1])


def test_associative_scan_pytree_and_non_commutative():
    # Composition of affine maps (a, b): x -> a x + b is associative, not commutative.
    a, b = RNG.uniform(0.5, 1.5, 7), RNG.normal(size=7)

    def compose(first, second):
        return first[0] * second[0], second[0] * first[1] + second[1]

    got_a, got_b = lax.associative_scan(compose, (a, b))
    want_a, want_b = np.cumprod(a), np.zeros(7)
    acc = 0.0
    for i in range(7):
        acc = a[i] * acc + b[i]
        want_b[i] = acc
    _close(got_a, want_a)
    _close(got_b, want_b)


@pytest.mark.parametrize("name, reference", [
    ("cumprod", lambda x, axis: np.cumprod(x, axis=axis)),
    ("cummax", lambda x, axis: np.maximum.accumulate(x, axis=axis)),
    ("cummin", lambda x, axis: np.minimum.accumulate(x, axis=axis)),
    ("cumlogsumexp", lambda x, axis: np.logaddexp.accumulate(x, axis=axis))])
def test_cumulative_ops(name, reference):
    fn = getattr(lax, name)
    x = RNG.permutation(np.arange(1.0, 13.0)).reshape(3, 4) / 6  # distinct, positive
    _close(fn(x, axis=1), reference(x, 1))
    _close(fn(x, axis=0, reverse=True), reference(x[::-1], 0)[::-1])
    check_grads(lambda x: fn(x, axis=1), (x,), order=2)


def test_cumlogsumexp_is_stable():
    x = np.array([1000.0, 1000.0, -np.inf])
    _close(lax.cumlogsumexp(x), np.logaddexp.accumulate(x))


# --- map, select, slicing helpers, shapes ---------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 10])
def test_map(batch_size):
    xs = {"a": RNG.normal(size=(7, 2)), "b": RNG.normal(size=7)}
    got = lax.map(lambda d: d["a"].sum() * d["b"], xs, batch_size=batch_size)
    _close(got, xs["a"].sum(axis=1) * xs["b"])
    check_grads(lambda a: lax.map(lambda r: (r * r).sum(), a, batch_size=batch_size),
                (xs["a"],), order=2)


def test_select_and_clamp():
    pred = np.array([True, False, True])
    a, b = RNG.normal(size=3), RNG.normal(size=3)
    _close(lax.select(pred, a, b), np.where(pred, a, b))
    x = np.array([-2.0, -0.5, 0.3, 2.0])
    _close(lax.clamp(-1.0, x, 1.0), np.clip(x, -1, 1))
    _close(flamefx.grad(lambda x: lax.clamp(-1.0, x, 1.0).sum())(x), [0.0, 1.0, 1.0, 0.0])
    with pytest.raises(FlamefxTypeError, match="max must be"):
        lax.clamp(0.0, x, np.ones(2))


def test_in_dim_helpers():
    x = np.arange(24.0).reshape(2, 3, 4)
    _close(lax.slice_in_dim(x, 1, None, 2, axis=2), x[:, :, 1::2])
    _close(lax.slice_in_dim(x, -2, -1, axis=1), x[:, -2:-1])
    _close(lax.index_in_dim(x, -1, axis=1, keepdims=False), x[:, -1])
    _close(lax.index_in_dim(x, 0, axis=0), x[:1])
    _close(lax.dynamic_slice_in_dim(x, 2, 2, axis=2), x[:, :, 2:4])
    _close(lax.dynamic_index_in_dim(x, 1, axis=1, keepdims=False), x[:, 1])
    _close(flamefx.jit(lambda i: lax.dynamic_slice_in_dim(x, i, 2, axis=1))(np.int32(5)),
           x[:, 1:3])  # clamped, as JAX
    want = x.copy()
    want[:, 1:3] = -1.0
    _close(lax.dynamic_update_slice_in_dim(x, -np.ones((2, 2, 4)), 1, axis=1), want)
    want = x.copy()
    want[:, :, 2] = 7.0
    _close(lax.dynamic_update_index_in_dim(x, np.full((2, 3), 7.0), 2, axis=2), want)
    with pytest.raises(FlamefxValueError, match="out of bounds"):
        lax.index_in_dim(x, 3, axis=1)


def test_shapes_and_constants():
    x = np.arange(6.0).reshape(2, 3)
    _close(lax.broadcast(x, (4,)), np.broadcast_to(x, (4, 2, 3)))
    _close(lax.collapse(np.ones((2, 3, 4)), 0, 2), np.ones((6, 4)))
    _close(lax.collapse(np.ones((2, 3, 4)), 1), np.ones((2, 12)))
    assert lax.full((2, 2), 3, np.float32).dtype == np.float32
    _close(lax.full(3, 1.5), np.full(3, 1.5))
    _close(lax.zeros_like_array(x), np.zeros((2, 3)))


def test_products():
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(3, 4))
    _close(lax.dot(a, b, precision=lax.Precision.HIGHEST), a @ b)
    _close(lax.dot(a, b[:, 0]), a @ b[:, 0])
    p, q = RNG.normal(size=(5, 2, 3)), RNG.normal(size=(5, 3, 4))
    _close(lax.batch_matmul(p, q), p @ q)
    check_grads(lambda p, q: lax.batch_matmul(p, q), (p, q), order=2)
    with pytest.raises(FlamefxTypeError, match="incompatible"):
        lax.dot(a, a)
    with pytest.raises(FlamefxValueError, match="batch"):
        lax.batch_matmul(p, q[:4])


def test_cumsum_has_jax_signature():
    x = RNG.normal(size=(3, 4))
    _close(lax.cumsum(x), np.cumsum(x, axis=0))
    _close(lax.cumsum(x, axis=-1, reverse=True), np.cumsum(x[:, ::-1], axis=1)[:, ::-1])
    check_grads(lambda x: lax.cumsum(x, -1), (x,), order=2)


def test_composites_under_jit_and_vmap():
    x = RNG.normal(size=(4, 7))
    for fn in (lambda r: lax.cummax(r), lambda r: lax.cumlogsumexp(r, reverse=True),
               lambda r: lax.associative_scan(lax.mul, r),
               lambda r: lax.reduce_window(r, 0.0, lax.add, (3,), (2,), "SAME"),
               lambda r: lax.clamp(-0.5, r, 0.5)):
        loop = np.stack([np.asarray(fn(row)) for row in x])
        _close(flamefx.vmap(fn)(x), loop)
        _close(flamefx.jit(flamefx.vmap(fn))(x), loop)
    grads = flamefx.jit(flamefx.grad(lambda x: lax.cumprod(x, axis=1).sum()))(x)
    _close(grads, np.asarray(flamefx.grad(lambda x: lax.cumprod(x, axis=1).sum())(x)))


def test_reduce_with_traced_init_and_variadic_error():
    x = RNG.normal(size=(3, 4))
    got = flamefx.jit(lambda x, init: lax.reduce(x, init, lax.max, (1,)))(x, np.float64(0.5))
    _close(got, np.maximum(x.max(1), 0.5))
    got = flamefx.jit(lambda x, init: lax.reduce_window(x, init, lax.add, (2, 2), (1, 1),
                                                        "VALID"))(x, np.float64(1.0))
    _close(got, 1.0 + x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:])
    with pytest.raises(FlamefxValueError, match="variadic"):
        lax.reduce((x, x), (0.0, 0.0), lax.add, (0,))


def test_negative_dynamic_indices_and_jax_defaults():
    x = np.arange(24.0).reshape(2, 3, 4)
    _close(lax.dynamic_slice_in_dim(x, -2, 2, axis=2), x[:, :, 2:])
    _close(flamefx.jit(lambda i: lax.dynamic_index_in_dim(x, i, 1, False))(np.int32(-1)),
           x[:, -1])
    with pytest.raises(FlamefxValueError, match="index -2 is out of bounds.*size 4"):
        lax.dynamic_slice_in_dim(x, -2, 2, axis=2, allow_negative_indices=False)  # as JAX
    _close(flamefx.jit(lambda i: lax.dynamic_slice_in_dim(x, i, 2, axis=2,
                                                          allow_negative_indices=False))(
        np.int32(-2)), x[:, :, :2])  # a traced start is clamped to 0, not wrapped (as JAX)
    want = x.copy()
    want[:, -1] = 0.0
    _close(flamefx.jit(lambda i: lax.dynamic_update_index_in_dim(x, np.zeros((2, 4)), i, 1))(
        np.int32(-1)), want)
    a, b = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(4, 5))
    _close(lax.dot(a, b, dimension_numbers=(((2,), (0,)), ((), ()))), a @ b)
    _close(lax.reduce_window(x, 0.0, lax.add, (1, 2, 2)),
           x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:])


def test_dynamic_slice_wraps_a_negative_start_once_then_clamps():
    # JAX's _dynamic_slice_indices: i + dim when i < 0, then the primitive clamps the window.
    # Expected rows taken from jax 0.10.2 (x = arange(5), size-2 windows).
    x = np.arange(5.0)
    starts = np.array([-1, -4, -6, -11, 2, 9], np.int32)
    want = [[3.0, 4.0], [1.0, 2.0], [0.0, 1.0], [0.0, 1.0], [2.0, 3.0], [3.0, 4.0]]
    for s, w in zip(starts, want):
        _close(lax.dynamic_slice(x, [int(s)], (2,)), w)
        _close(lax.dynamic_slice(x, [s], (2,)), w)
        _close(flamefx.jit(lambda i: lax.dynamic_slice(x, [i], (2,)))(s), w)
    _close(flamefx.vmap(lambda i: lax.dynamic_slice(x, [i], (2,)))(starts), want)
    _close(flamefx.jit(flamefx.vmap(lambda i: lax.dynamic_slice(x, (i,), (2,))))(starts), want)
    _close(lax.dynamic_slice(x, np.array([-2], np.int32), (2,)), [3.0, 4.0])  # a 1-D array
    _close(lax.dynamic_slice(x, [np.uint32(3)], (2,)), [3.0, 4.0])  # unsigned: no wrap
    grid = np.arange(12.0).reshape(3, 4)
    _close(lax.dynamic_slice(grid, [-1, 1], (1, 2), allow_negative_indices=[True, False]),
           [[9.0, 10.0]])  # per-axis flags
    with pytest.raises(FlamefxValueError, match="index -3 is out of bounds.*size 4"):
        lax.dynamic_slice(grid, [-1, -3], (1, 2), allow_negative_indices=(True, False))
    with pytest.raises(FlamefxValueError, match="2 start indices for an operand of rank 1"):
        lax.dynamic_slice(x, [0, 0], (2,))


def test_dynamic_update_slice_wraps_a_negative_start_under_every_transform():
    x = np.arange(5.0)
    want = np.array([0.0, 1.0, 9.0, 9.0, 4.0])
    _close(lax.dynamic_update_slice(x, np.full(2, 9.0), [-3]), want)
    _close(flamefx.jit(lambda i: lax.dynamic_update_slice(x, np.full(2, 9.0), [i]))(
        np.int32(-3)), want)
    rows = flamefx.vmap(lambda i: lax.dynamic_update_slice(x, np.full(2, 9.0), [i]))(
        np.array([-1, -3, -9], np.int32))
    _close(rows, [[0.0, 1.0, 2.0, 9.0, 9.0], want, [9.0, 9.0, 2.0, 3.0, 4.0]])
    # grad: the cotangent lands in the wrapped window (positions 3, 4 for start -2), eager
    # and under jit; the update's gradient reads the same window.
    w = np.array([2.0, 3.0])

    def loss(x, u, i):
        y = lax.dynamic_update_slice(x, u, [i])
        return (lax.dynamic_slice(y * y, [i], (2,)) * w).sum() + y.sum()

    for fn in (flamefx.grad(loss, (0, 1)), flamefx.jit(flamefx.grad(loss, (0, 1)))):
        gx, gu = fn(np.arange(5.0), np.array([5.0, 7.0]), np.int32(-2))
        _close(gx, [1.0, 1.0, 1.0, 0.0, 0.0])
        _close(gu, [1.0 + 2 * 2.0 * 5.0, 1.0 + 2 * 3.0 * 7.0])
    check_grads(lambda x, u: lax.dynamic_update_slice(x, u * u, [-2]) ** 2,
                (np.arange(1.0, 6.0), np.array([0.5, 1.5])), order=2)


def test_conv_transpose_consistent_padding_is_the_forward_padding():
    # With use_consistent_padding, (lo, hi) are the forward conv's: conv_transpose with
    # transpose_kernel is then the forward conv's input gradient (PyTorch's reading).
    x = RNG.normal(size=(1, 7, 6, 2))
    w = RNG.normal(size=(3, 3, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")
    pads = ((1, 1), (1, 1))

    def forward(x):
        return lax.conv_general_dilated(x, w, (2, 1), pads, dimension_numbers=dn)

    y = RNG.normal(size=np.shape(forward(x)))
    _, pullback = flamefx.vjp(forward, x)
    got = lax.conv_transpose(y, w, (2, 1), pads, dimension_numbers=dn, transpose_kernel=True,
                             use_consistent_padding=True)
    _close(got, np.asarray(pullback(y)[0]))
