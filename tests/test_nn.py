"""flamefx.nn functions against NumPy float64 formulas, gradients, stability at +-1000,
jit against eager and vmap against a loop."""

import math

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import nn
from flamefx import random as frandom
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _float64_references():
    """The references are NumPy float64 and so are the inputs: as in JAX, NumPy float64
    data stays float64 only with x64 on (else fnp.asarray makes it float32)."""
    with flamefx.config.override("jax_enable_x64", True):
        yield


def _f64(shape, low=-3.0, high=3.0):
    return RNG.uniform(low, high, size=shape)


def _close(actual, expected, tol=1e-9):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


def _np_erf(x):
    return np.vectorize(math.erf)(x)


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- activations ----------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": (nn.relu, lambda x: np.maximum(x, 0)),
    "relu6": (nn.relu6, lambda x: np.clip(x, 0, 6)),
    "sigmoid": (nn.sigmoid, _np_sigmoid),
    "silu": (nn.silu, lambda x: x * _np_sigmoid(x)),
    "gelu_tanh": (nn.gelu, lambda x: 0.5 * x * (1 + np.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    "gelu_erf": (lambda x: nn.gelu(x, approximate=False),
                 lambda x: 0.5 * x * (1 + _np_erf(x / math.sqrt(2)))),
    "softplus": (nn.softplus, lambda x: np.log1p(np.exp(x))),
    "log_sigmoid": (nn.log_sigmoid, lambda x: np.log(_np_sigmoid(x))),
    "leaky_relu": (lambda x: nn.leaky_relu(x, 0.2), lambda x: np.where(x >= 0, x, 0.2 * x)),
    "elu": (nn.elu, lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)))),
    "celu": (lambda x: nn.celu(x, 2.0), lambda x: np.where(x > 0, x, 2 * np.expm1(
        np.minimum(x, 0) / 2))),
    "selu": (nn.selu, lambda x: 1.0507009873554805 * np.where(
        x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0)))),
    "tanh": (nn.tanh, np.tanh),
    "hard_tanh": (nn.hard_tanh, lambda x: np.clip(x, -1, 1)),
    "hard_sigmoid": (nn.hard_sigmoid, lambda x: np.clip(x + 3, 0, 6) / 6),
    "hard_silu": (nn.hard_silu, lambda x: x * np.clip(x + 3, 0, 6) / 6),
    "mish": (nn.mish, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    "soft_sign": (nn.soft_sign, lambda x: x / (np.abs(x) + 1)),
    "squareplus": (nn.squareplus, lambda x: (x + np.sqrt(x * x + 4)) / 2),
    "sparse_plus": (nn.sparse_plus, lambda x: np.where(
        x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4))),
    "sparse_sigmoid": (nn.sparse_sigmoid, lambda x: np.clip((x + 1) / 2, 0, 1)),
    "identity": (nn.identity, lambda x: x),
}
SMOOTH = ("sigmoid", "silu", "gelu_tanh", "gelu_erf", "softplus", "log_sigmoid", "tanh", "mish",
          "squareplus", "identity")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_formula(name):
    fn, ref = ACTIVATIONS[name]
    x = np.concatenate([_f64((20,), -8, 8), [-7.0, 6.5, 7.0]])
    _close(fn(fnp.asarray(x)), ref(x))
    if name in SMOOTH:
        check_grads(fn, (fnp.asarray(x[:6]),), order=2)
    else:  # piecewise: check away from the kinks at 0, +-1, +-3 and 6
        check_grads(fn, (fnp.asarray(np.array([-2.5, -0.7, 0.4, 3.3, 7.5])),), order=2)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_stable_at_extremes(name):
    fn, _ = ACTIVATIONS[name]
    x = fnp.asarray(np.array([-1000.0, 1000.0], np.float32))
    assert np.isfinite(np.asarray(fn(x))).all()
    grads = flamefx.grad(lambda x: fn(x).sum())(x)
    assert np.isfinite(np.asarray(grads)).all()


def test_softplus_gradient_at_zero_is_one_half():
    assert float(flamefx.grad(nn.softplus)(fnp.asarray(0.0))) == 0.5


def test_softmax_family():
    x = _f64((3, 5))
    e = np.exp(x - x.max(-1, keepdims=True))
    _close(nn.softmax(fnp.asarray(x)), e / e.sum(-1, keepdims=True))
    _close(nn.softmax(fnp.asarray(x), axis=0), np.exp(x) / np.exp(x).sum(0))
    lse = np.log(np.exp(x).sum(-1))
    _close(nn.log_softmax(fnp.asarray(x)), x - lse[:, None])
    _close(nn.logsumexp(fnp.asarray(x), axis=-1), lse)
    _close(nn.logsumexp(fnp.asarray(x)), np.log(np.exp(x).sum()))
    _close(nn.logsumexp(fnp.asarray(x), axis=1, keepdims=True), lse[:, None])
    for fn in (nn.softmax, nn.log_softmax, lambda v: nn.logsumexp(v, axis=-1)):
        check_grads(fn, (fnp.asarray(x),), order=2)


def test_softmax_stable_at_extremes():
    x = fnp.asarray(np.array([[1000.0, -1000.0, 0.0], [-np.inf, 0.0, -np.inf]], np.float32))
    _close(nn.softmax(x), [[1, 0, 0], [0, 1, 0]])
    assert float(nn.logsumexp(fnp.asarray([1000.0, 1000.0]))) == pytest.approx(
        1000 + math.log(2))
    grads = flamefx.grad(lambda v: nn.log_softmax(v)[0, 1])(x)
    assert np.isfinite(np.asarray(grads)[0]).all()
    all_masked = nn.logsumexp(fnp.asarray([-np.inf, -np.inf]))
    assert float(all_masked) == -np.inf


def test_integer_inputs_promote_as_jax():
    ints = np.array([-3, -1, 0, 1, 2], np.int32)
    for fn, ref in ((nn.softplus, lambda x: np.log1p(np.exp(x))),
                    (nn.mish, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
                    (nn.hard_sigmoid, lambda x: np.clip(x + 3, 0, 6) / 6)):
        out = fn(fnp.asarray(ints))
        assert out.dtype == np.float64  # x64 is on in this module
        _close(out, ref(ints.astype(np.float64)))
    assert nn.hard_tanh(fnp.asarray(ints)).dtype == np.int32  # as JAX: where keeps ints


def test_hard_swish_and_normalize_are_aliases():
    assert nn.hard_swish is nn.hard_silu
    x = _f64((3, 4))
    _close(nn.normalize(fnp.asarray(x)), np.asarray(nn.standardize(fnp.asarray(x))))


def test_log1mexp():
    x = np.array([1e-8, 0.01, 0.5, 0.7, 2.0, 40.0])
    _close(nn.log1mexp(fnp.asarray(x)), np.log(-np.expm1(-x)), tol=1e-12)
    check_grads(nn.log1mexp, (fnp.asarray(np.array([0.3, 1.0, 3.0])),), order=2)


@pytest.mark.parametrize("algorithm", ["fast", "stable"])
def test_standardize(algorithm):
    x = _f64((3, 5))
    mean = x.mean(-1, keepdims=True)
    want = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    _close(nn.standardize(fnp.asarray(x), algorithm=algorithm), want)
    want0 = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    _close(nn.standardize(fnp.asarray(x), axis=0, epsilon=1e-3, algorithm=algorithm), want0)
    where = np.arange(5) < 3
    xs = x[:, :3]
    want_w = (x - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + 1e-5)
    _close(nn.standardize(fnp.asarray(x), where=where, algorithm=algorithm), want_w)
    given = nn.standardize(fnp.asarray(x), mean=0.5, variance=2.0)
    _close(given, (x - 0.5) / np.sqrt(2.0 + 1e-5))
    check_grads(lambda x: nn.standardize(x, algorithm=algorithm), (fnp.asarray(x),), order=2)
    with pytest.raises(ValueError, match="algorithm"):
        nn.standardize(fnp.asarray(x), algorithm="exact")
    ints = np.array([[1, 2, 4], [0, 3, 3]])
    out = nn.standardize(fnp.asarray(ints), algorithm=algorithm)
    assert out.dtype == np.float64  # x64 on: JAX's promotion of the integer mean
    _close(out, (ints - ints.mean(-1, keepdims=True)) / np.sqrt(ints.var(-1, keepdims=True)
                                                                  + 1e-5))


def test_glu():
    x = _f64((2, 6))
    _close(nn.glu(fnp.asarray(x)), x[:, :3] * _np_sigmoid(x[:, 3:]))
    _close(nn.glu(fnp.asarray(x.T), axis=0), (x[:, :3] * _np_sigmoid(x[:, 3:])).T)
    check_grads(nn.glu, (fnp.asarray(x),), order=2)
    with pytest.raises(ValueError, match="odd size"):
        nn.glu(fnp.ones((2, 5)))


def test_one_hot_axis_and_out_of_range():
    labels = [[0, 2], [3, 1]]  # 3 is out of range: an all-zero row, as JAX
    out = nn.one_hot(fnp.asarray(labels), 3, axis=1)
    assert out.shape == (2, 3, 2)
    _close(out, np.moveaxis(_np_one_hot(labels, 3), -1, 1))
    _close(nn.one_hot(fnp.asarray(labels), 3, axis=-1), _np_one_hot(labels, 3))


def _np_one_hot(labels, n):
    labels = np.asarray(labels)
    return (labels[..., None] == np.arange(n)).astype(np.float64)


def test_one_hot():
    _close(nn.one_hot(fnp.asarray([2, 0, 1]), 3), np.eye(3)[[2, 0, 1]])
    assert nn.one_hot(fnp.asarray([[1]]), 4, dtype=np.int32).dtype == np.int32
    assert nn.one_hot(fnp.asarray([[1]]), 4).shape == (1, 1, 4)


# --- losses ---------------------------------------------------------------------------------


def test_cross_entropies():
    logits = _f64((4, 6))
    labels = np.array([0, 5, 2, 2])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -logp[np.arange(4), labels]
    _close(nn.softmax_cross_entropy_with_integer_labels(fnp.asarray(logits),
                                                        fnp.asarray(labels)), expected)
    _close(nn.softmax_cross_entropy(fnp.asarray(logits), fnp.asarray(np.eye(6)[labels])),
           expected)
    probs = RNG.dirichlet(np.ones(6), size=4)
    _close(nn.softmax_cross_entropy(fnp.asarray(logits), fnp.asarray(probs)),
           -(probs * logp).sum(-1))
    check_grads(lambda z: nn.softmax_cross_entropy_with_integer_labels(
        z, fnp.asarray(labels)), (fnp.asarray(logits),), order=2)
    check_grads(lambda z: nn.softmax_cross_entropy(z, fnp.asarray(probs)),
                (fnp.asarray(logits),), order=2)


def _integer_label_cross_entropy_f64(logits, labels):
    """NumPy float64 reference with optax's label rules: a label in [-C, 0) counts from
    the end, any other out-of-range label gives a NaN loss and the softmax as gradient."""
    classes = logits.shape[-1]
    shifted = logits - logits.max(-1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    logp = np.log(softmax)
    in_range = (labels >= -classes) & (labels < classes)
    picked = np.where(in_range, labels % classes, 0)
    loss = np.where(in_range, -np.take_along_axis(logp, picked[..., None], -1)[..., 0], np.nan)
    grads = softmax - np.where(in_range[..., None], np.eye(classes)[picked], 0.0)
    return loss, grads


@pytest.mark.parametrize("transform", ["plain", "jit", "vmap", "jit_vmap"])
def test_integer_label_cross_entropy_labels_in_and_out_of_range(transform):
    logits = _f64((6, 5))
    labels = np.array([0, 4, -1, -5, 5, -6], np.int32)  # the last two are out of range
    expected_loss, expected_grads = _integer_label_cross_entropy_f64(logits, labels)

    def loss(z, y):
        return nn.softmax_cross_entropy_with_integer_labels(z, y)

    def grads(z, y):  # per-example gradients of the summed loss
        return flamefx.grad(lambda z: loss(z, y).sum())(z)

    if transform == "vmap":
        loss, grads = flamefx.vmap(loss), flamefx.vmap(flamefx.grad(loss))
    elif transform == "jit":
        loss, grads = flamefx.jit(loss), flamefx.jit(grads)
    elif transform == "jit_vmap":
        loss, grads = flamefx.jit(flamefx.vmap(loss)), flamefx.jit(flamefx.vmap(flamefx.grad(loss)))
    z, y = fnp.asarray(logits), fnp.asarray(labels)
    actual = np.asarray(loss(z, y))
    assert np.isnan(actual[4:]).all()
    _close(actual[:4], expected_loss[:4])
    _close(grads(z, y), expected_grads)


def test_cross_entropy_stable_at_extremes():
    logits = fnp.asarray(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], np.float32))
    labels = fnp.asarray([1, 1])
    loss = nn.softmax_cross_entropy_with_integer_labels(logits, labels)
    _close(loss, [2000.0, 0.0], tol=1e-3)
    grads = flamefx.grad(lambda z: nn.softmax_cross_entropy_with_integer_labels(
        z, labels).sum())(logits)
    _close(grads, [[1.0, -1.0], [0.0, 0.0]], tol=1e-6)


def test_sigmoid_binary_cross_entropy():
    logits, labels = _f64((7,)), RNG.uniform(0, 1, 7)
    p = _np_sigmoid(logits)
    expected = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    _close(nn.sigmoid_binary_cross_entropy(fnp.asarray(logits), fnp.asarray(labels)), expected)
    check_grads(lambda z: nn.sigmoid_binary_cross_entropy(z, fnp.asarray(labels)),
                (fnp.asarray(logits),), order=2)
    extreme = fnp.asarray(np.array([1000.0, -1000.0, 1000.0, -1000.0], np.float32))
    targets = fnp.asarray(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    _close(nn.sigmoid_binary_cross_entropy(extreme, targets), [0, 0, 1000, 1000], tol=1e-4)
    grads = flamefx.grad(lambda z: nn.sigmoid_binary_cross_entropy(z, targets).sum())(extreme)
    _close(grads, [0, 0, 1, -1], tol=1e-6)


def test_regression_losses():
    p, t = _f64((5,)), _f64((5,))
    _close(nn.l2_loss(fnp.asarray(p), fnp.asarray(t)), 0.5 * (p - t) ** 2)
    _close(nn.mse(fnp.asarray(p), fnp.asarray(t)), np.mean((p - t) ** 2))
    check_grads(lambda a: nn.mse(a, fnp.asarray(t)), (fnp.asarray(p),), order=2)


# --- convolution ----------------------------------------------------------------------------


def _np_conv(x, w, stride, pads, dilation, groups):
    """Direct NCHW cross-correlation with explicit padding, one output position at a time."""
    n = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    k = w.shape[2:]
    out_sizes = [(x.shape[2 + i] - (k[i] - 1) * dilation[i] - 1) // stride[i] + 1
                 for i in range(n)]
    o, cg = w.shape[0], w.shape[1]
    out = np.zeros((x.shape[0], o) + tuple(out_sizes))
    for pos in np.ndindex(*out_sizes):
        window = tuple(slice(p * s, p * s + (kk - 1) * d + 1, d)
                       for p, s, kk, d in zip(pos, stride, k, dilation))
        for g in range(groups):
            patch = x[(slice(None), slice(g * cg, (g + 1) * cg)) + window]
            wg = w[g * (o // groups):(g + 1) * (o // groups)]
            out[(slice(None), slice(g * (o // groups), (g + 1) * (o // groups))) + pos] = \
                np.tensordot(patch, wg, axes=(list(range(1, n + 2)), list(range(1, n + 2))))
    return out


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups,pads", [
    ((2, 3, 7), (4, 3, 3), 1, "SAME", 1, 1, ((1, 1),)),
    ((1, 4, 6, 5), (6, 2, 3, 2), (2, 1), "SAME", 1, 2, ((0, 1), (0, 1))),
    ((1, 2, 7, 7), (3, 2, 3, 3), 1, "VALID", 2, 1, ((0, 0), (0, 0))),
    ((1, 2, 5, 5), (2, 2, 3, 3), 2, ((2, 0), 1), 1, 1, ((2, 0), (1, 1))),
    ((1, 1, 4, 4, 4), (2, 1, 2, 2, 2), 2, "SAME", 1, 1, ((0, 0), (0, 0), (0, 0))),
])
def test_conv_matches_direct_loop(x_shape, w_shape, stride, padding, dilation, groups, pads):
    x, w = _f64(x_shape), _f64(w_shape)
    n = len(x_shape) - 2
    strides = stride if isinstance(stride, tuple) else (stride,) * n
    expected = _np_conv(x, w, strides, pads, (dilation,) * n, groups)
    out = nn.conv(fnp.asarray(x), fnp.asarray(w), stride, padding, dilation, groups)
    _close(out, expected)


def _np_conv_transpose(x, w, stride, padding, output_padding=0):
    """Scatter definition: every input element adds ``x * w`` into a stride-spaced window."""
    n_batch, _c_in, length = x.shape
    _, c_out, k = w.shape
    full = np.zeros((n_batch, c_out, (length - 1) * stride + k + output_padding))
    for i in range(length):
        full[:, :, i * stride:i * stride + k] += np.einsum("nc,cok->nok", x[:, :, i], w)
    return full[:, :, padding:full.shape[2] - padding] if padding else full


def test_conv_transpose_matches_scatter_definition():
    x, w = _f64((2, 3, 5)), _f64((3, 4, 3))
    _close(nn.conv_transpose(fnp.asarray(x), fnp.asarray(w), stride=2, padding=1,
                             output_padding=1), _np_conv_transpose(x, w, 2, 1, 1))
    _close(nn.conv_transpose(fnp.asarray(x), fnp.asarray(w), stride=2, padding="VALID"),
           _np_conv_transpose(x, w, 2, 0))
    assert nn.conv_transpose(fnp.ones((1, 3, 5)), fnp.ones((3, 2, 4)), stride=2).shape == \
        (1, 2, 10)


def test_conv_transpose_is_the_transpose_of_conv():
    """<conv(x, W), y> == <x, conv_transpose(y, W')> for the matching strides and padding."""
    x, y = _f64((2, 4, 8, 8)), _f64((2, 6, 4, 4))
    w = _f64((6, 2, 3, 3))  # conv: 4 -> 6 channels in 2 groups
    lhs = np.sum(np.asarray(nn.conv(fnp.asarray(x), fnp.asarray(w), 2, 1, groups=2)) * y)
    # As a transposed conv the same kernel reads (C_in=6, C_out/groups=2, k, k).
    back = nn.conv_transpose(fnp.asarray(y), fnp.asarray(w), 2, 1, groups=2, output_padding=1)
    rhs = np.sum(x * np.asarray(back))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_conv_gradients_and_vmap():
    x, w = fnp.asarray(_f64((2, 2, 5, 5))), fnp.asarray(_f64((3, 2, 3, 3)))
    check_grads(lambda a, b: nn.conv(a, b, stride=2), (x, w), order=2)
    y = fnp.asarray(_f64((1, 3, 3, 3)))
    check_grads(lambda a, b: nn.conv_transpose(a, b, stride=2), (y, w), order=1)
    batched = flamefx.vmap(lambda a: nn.conv(a[None], w)[0])(x)
    _close(batched, nn.conv(x, w))


# --- normalization ---------------------------------------------------------------------------


def test_layer_group_rms_norm():
    x = _f64((2, 4, 3, 3))
    scale, bias = _f64((3,)), _f64((3,))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    _close(nn.layer_norm(fnp.asarray(x), fnp.asarray(scale), fnp.asarray(bias)),
           (x - mean) / np.sqrt(var + 1e-5) * scale + bias)
    mean2, var2 = x.mean((-2, -1), keepdims=True), x.var((-2, -1), keepdims=True)
    _close(nn.layer_norm(fnp.asarray(x), axis=(-2, -1)), (x - mean2) / np.sqrt(var2 + 1e-5))
    groups = x.reshape(2, 2, -1)
    gn = (groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + 1e-5)
    cs, cb = _f64((4,)), _f64((4,))
    _close(nn.group_norm(fnp.asarray(x), fnp.asarray(cs), fnp.asarray(cb), num_groups=2),
           gn.reshape(x.shape) * cs[None, :, None, None] + cb[None, :, None, None])
    _close(nn.rms_norm(fnp.asarray(x), fnp.asarray(scale)),
           x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * scale)


def test_batch_norm_training_and_inference():
    x = _f64((8, 3, 2, 2))
    scale, bias = _f64((3,)), _f64((3,))
    rm, rv = np.zeros(3), np.ones(3)
    y, new_m, new_v = nn.batch_norm(fnp.asarray(x), fnp.asarray(scale), fnp.asarray(bias),
                                    fnp.asarray(rm), fnp.asarray(rv), training=True,
                                    momentum=0.8)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    shape = (1, 3, 1, 1)
    _close(y, (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
           * scale.reshape(shape) + bias.reshape(shape))
    _close(new_m, 0.2 * mean)
    _close(new_v, 0.8 + 0.2 * var)
    y_eval, same_m, _ = nn.batch_norm(fnp.asarray(x), fnp.asarray(scale), fnp.asarray(bias),
                                      new_m, new_v, training=False)
    _close(y_eval, (x - np.asarray(new_m).reshape(shape))
           / np.sqrt(np.asarray(new_v).reshape(shape) + 1e-5) * scale.reshape(shape)
           + bias.reshape(shape))
    _close(same_m, np.asarray(new_m))
    check_grads(lambda a, s: nn.batch_norm(a, s, fnp.asarray(bias), fnp.asarray(rm),
                                           fnp.asarray(rv), training=True)[0],
                (fnp.asarray(x), fnp.asarray(scale)), order=2)


# --- pooling and resampling ------------------------------------------------------------------


def test_max_and_avg_pool():
    x = _f64((2, 3, 5, 6))
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(2, 3))[:, :, ::2, ::2]
    _close(nn.max_pool(fnp.asarray(x), 2), windows.max((-2, -1)))
    _close(nn.avg_pool(fnp.asarray(x), 2), windows.mean((-2, -1)))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    same = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3)).max((-2, -1))
    _close(nn.max_pool(fnp.asarray(x), 3, strides=1, padding="SAME"), same)
    ones = np.pad(np.ones((5, 6)), 1)
    counts = np.lib.stride_tricks.sliding_window_view(ones, (3, 3)).sum((-2, -1))
    sums = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3)).sum((-2, -1))
    _close(nn.avg_pool(fnp.asarray(x), 3, 1, "SAME", count_include_pad=False), sums / counts)
    check_grads(lambda a: nn.max_pool(a, 2), (fnp.asarray(x),), order=1)
    check_grads(lambda a: nn.avg_pool(a, 3, 2, "SAME"), (fnp.asarray(x),), order=2)


def test_upsampling():
    x = _f64((1, 2, 3, 4))
    _close(nn.upsample_nearest(fnp.asarray(x), 2), x.repeat(2, axis=2).repeat(2, axis=3))
    # align_corners=False: [0, 4] upsampled x2 is [0, .75*0 + .25*4, .25*0 + .75*4, 4].
    row = np.array([[[[0.0, 4.0]]]])
    _close(nn.upsample_bilinear(fnp.asarray(row), scale=(1, 2)), [[[[0.0, 1.0, 3.0, 4.0]]]])
    up = np.asarray(nn.upsample_bilinear(fnp.asarray(x), scale=2))
    assert up.shape == (1, 2, 6, 8)
    _close(up[..., 0, 0], x[..., 0, 0])
    _close(up[..., 1, 1], 0.5625 * x[..., 0, 0] + 0.1875 * (x[..., 0, 1] + x[..., 1, 0])
           + 0.0625 * x[..., 1, 1])
    check_grads(lambda v: nn.upsample_bilinear(v, scale=2), (fnp.asarray(x),), order=2)


# --- attention, embedding, dropout ------------------------------------------------------------


def test_attention_reexport_with_causal_mask():
    q, k, v = (_f64((1, 2, 4, 3)) for _ in range(3))
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(3)
    scores = np.where(np.tril(np.ones((4, 4), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (p / p.sum(-1, keepdims=True)) @ v
    args = tuple(fnp.asarray(t) for t in (q, k, v))
    _close(nn.dot_product_attention(*args, is_causal=True), expected)
    _close(nn.dot_product_attention(*args, mask=nn.causal_mask(4)), expected)
    features = _f64((2, 5, 6))
    heads = nn.split_heads(fnp.asarray(features), 3)
    _close(heads, features.reshape(2, 5, 3, 2).transpose(0, 2, 1, 3))
    _close(nn.merge_heads(heads), features)


def test_embed_and_dropout():
    table = _f64((10, 3))
    ids = np.array([[1, 9], [0, 1]])
    _close(nn.embed(fnp.asarray(table), fnp.asarray(ids)), table[ids])
    x = fnp.ones((20000,), fnp.float32)
    y = np.asarray(nn.dropout(frandom.key(0), 0.25, x))
    assert set(np.unique(y).tolist()) == {0.0, float(np.float32(4 / 3))}
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert nn.dropout(frandom.key(0), 0.25, x, deterministic=True) is x
    grads = flamefx.grad(lambda v: nn.dropout(frandom.key(0), 0.5, v).sum())(fnp.ones(8))
    assert set(np.asarray(grads).tolist()) <= {0.0, 2.0}


# --- transforms ------------------------------------------------------------------------------


def test_jit_matches_eager():
    x = fnp.asarray(_f64((2, 3, 6, 6)))
    w = fnp.asarray(_f64((4, 3, 3, 3)))

    def block(x, w):
        h = nn.max_pool(nn.silu(nn.conv(x, w)), 2)
        return nn.log_softmax(h.reshape(2, -1)), nn.upsample_nearest(h, 2)

    for eager, jitted in zip(block(x, w), flamefx.jit(block)(x, w)):
        _close(jitted, np.asarray(eager), tol=1e-7)


def test_vmap_matches_loop():
    x = fnp.asarray(_f64((3, 2, 5)))

    def per_example(v):
        return nn.softmax(v) * nn.gelu(v) + nn.logsumexp(v, axis=0)

    batched = flamefx.vmap(per_example)(x)
    looped = np.stack([np.asarray(per_example(x[i])) for i in range(3)])
    _close(batched, looped)
    labels = fnp.asarray([1, 4, 0])
    per_example_grads = flamefx.vmap(flamefx.grad(
        lambda z, y: nn.softmax_cross_entropy_with_integer_labels(z, y)))(x[:, 0], labels)
    loop_grads = [np.asarray(flamefx.grad(nn.softmax_cross_entropy_with_integer_labels)(
        x[i, 0], labels[i])) for i in range(3)]
    _close(per_example_grads, np.stack(loop_grads))


@pytest.mark.gpu
def test_gpu_matches_cpu():
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    rng = np.random.default_rng(1)
    inputs = {
        "x": rng.normal(size=(2, 4, 8, 8)), "w": rng.normal(size=(8, 2, 3, 3)) * 0.3,
        "wt": rng.normal(size=(8, 4, 4, 4)) * 0.3, "gamma": rng.normal(size=8),
        "q": rng.normal(size=(2, 2, 6, 4)), "labels": np.array([1, 3]),
    }
    inputs = {k: v.astype(np.float32) if v.dtype == np.float64 else v.astype(np.int32)
              for k, v in inputs.items()}

    def block(p, labels, key):
        h = nn.conv(p["x"], p["w"], stride=1, groups=2)
        h = nn.group_norm(h, p["gamma"], None, num_groups=4)
        h = nn.dropout(key, 0.2, nn.gelu(h))
        pooled = nn.avg_pool(nn.max_pool(h, 2), 3, 1, "SAME", count_include_pad=False)
        up = nn.upsample_bilinear(nn.conv_transpose(pooled, p["wt"], stride=2, padding=1),
                                  scale=2)
        logits = nn.layer_norm(up.reshape(2, -1))[:, :5]
        loss = nn.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        attended = nn.dot_product_attention(p["q"], p["q"], p["q"], is_causal=True)
        return loss + nn.sigmoid_binary_cross_entropy(attended, 0.5).mean()

    def run(device):
        p = {k: flamefx.device_put(fnp.asarray(v), device) for k, v in inputs.items()
             if k != "labels"}
        labels = flamefx.device_put(fnp.asarray(inputs["labels"]), device)
        key = flamefx.device_put(frandom.key(0), device)
        value, grads = flamefx.jit(flamefx.value_and_grad(block))(p, labels, key)
        return [value] + [grads[k] for k in sorted(grads)]

    for c, g in zip(run(cpu), run(gpu)):
        assert g.device.platform == "gpu"
        np.testing.assert_allclose(np.asarray(g), np.asarray(c), rtol=2e-3, atol=2e-4)


# --- initializers (JAX's names and signatures) ------------------------------------------------


def test_initializer_fans_and_variances():
    from flamefx.nn import initializers as init
    assert init.compute_fans((3, 3, 8, 16), in_axis=(0, 2), out_axis=3) == (72.0, 48.0)
    assert init.compute_fans((4, 5, 6), batch_axis=0) == (5.0, 6.0)
    key = frandom.key(3)
    for mode, fan in (("fan_in", 200.0), ("fan_out", 50.0), ("fan_avg", 125.0),
                      ("fan_geo_avg", 100.0)):
        w = np.asarray(init.variance_scaling(2.0, mode, "normal")(key, (200, 50)), np.float64)
        assert abs(w.var() / (2.0 / fan) - 1) < 0.05, mode
    w = np.asarray(init.glorot_uniform()(key, (300, 100)), np.float64)
    assert abs(w.var() / (2 / 400) - 1) < 0.05 and np.abs(w).max() <= np.sqrt(6 / 400)
    w = np.asarray(init.he_normal()(key, (400, 100)), np.float64)  # truncated, rescaled
    assert abs(w.var() / (2 / 400) - 1) < 0.05 and np.abs(w).max() <= 2 * np.sqrt(2 / 400) / .8796
    assert init.lecun_normal(dtype=np.float64)(key, (3, 4)).dtype == np.float64
    assert init.normal(dtype=np.float16)(key, (3,)).dtype == np.float16
    t = np.asarray(init.truncated_normal(0.5, lower=-1.0, upper=1.0)(key, (1000,)))
    assert np.abs(t).max() <= 0.5 and t.std() < 0.5
    assert np.asarray(init.constant(2.0, np.int32)(key, (2,))).tolist() == [2, 2]


@pytest.mark.parametrize("shape, column_axis", [((5, 3), -1), ((3, 5), -1), ((2, 3, 6), 0)])
def test_orthogonal_initializers(shape, column_axis):
    from flamefx.nn import initializers as init
    w = np.asarray(init.orthogonal(2.0, column_axis)(frandom.key(1), shape), np.float64)
    assert w.shape == shape
    cols = np.moveaxis(w, column_axis, -1).reshape(-1, shape[column_axis])
    gram = cols.T @ cols if cols.shape[0] >= cols.shape[1] else cols @ cols.T
    _close(gram, 4.0 * np.eye(gram.shape[0]), tol=1e-5)
    d = np.asarray(init.delta_orthogonal()(frandom.key(2), (3, 3, 4, 6)), np.float64)
    centre = d[1, 1]
    _close(centre @ centre.T, np.eye(4), tol=1e-5)
    assert np.abs(d).sum() - np.abs(centre).sum() == 0
    with pytest.raises(ValueError, match="fan_in"):
        init.delta_orthogonal()(frandom.key(2), (3, 6, 4))
    with pytest.raises(ValueError, match="2-D"):
        init.orthogonal()(frandom.key(2), (4,))


# --- attention: JAX's length and window masks -------------------------------------------------


def _np_attention(q, k, v, allowed):
    """float64 softmax attention over (B, N, T, H) with a boolean (B|1, 1, T, S) mask; rows
    with no allowed key give zeros (flamefx's convention)."""
    logits = np.einsum("bnth,bnsh->bnts", q, k) / np.sqrt(q.shape[-1])
    allowed = np.broadcast_to(allowed, logits.shape)
    logits = np.where(allowed, logits, -np.inf)
    shift = np.where(allowed.any(-1, keepdims=True), logits.max(-1, keepdims=True), 0.0)
    weights = np.exp(logits - shift)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bnts,bnsh->bnth", weights, v)


@pytest.mark.parametrize("kwargs", [
    {"query_seq_lengths": [3, 5]}, {"key_value_seq_lengths": [2, 6]},
    {"local_window_size": (1, 2)}, {"local_window_size": 1, "is_causal": True},
    {"query_seq_lengths": [4, 2], "key_value_seq_lengths": [3, 1], "local_window_size": (2, 0)}])
def test_attention_lengths_and_local_window(kwargs):
    B, N, T, S, H = 2, 2, 5, 6, 4
    q, k, v = _f64((B, N, T, H)), _f64((B, N, S, H)), _f64((B, N, S, H))
    allowed = np.ones((B, 1, T, S), bool)
    t, s = np.arange(T)[:, None], np.arange(S)[None, :]
    if "query_seq_lengths" in kwargs:
        allowed &= (np.arange(T)[None, :] < np.array(kwargs["query_seq_lengths"])[:, None])[
            :, None, :, None]
    if "key_value_seq_lengths" in kwargs:
        allowed &= (np.arange(S)[None, :] < np.array(kwargs["key_value_seq_lengths"])[:, None])[
            :, None, None, :]
    if "local_window_size" in kwargs:
        window = kwargs["local_window_size"]
        left, right = (window, window) if isinstance(window, int) else window
        allowed &= (t <= s + left) & (t >= s - right)
    if kwargs.get("is_causal"):
        allowed &= s <= t
    flame_kwargs = {name: fnp.asarray(np.array(value, np.int32)) if "lengths" in name else value
                    for name, value in kwargs.items()}
    got = nn.dot_product_attention(fnp.asarray(q), fnp.asarray(k), fnp.asarray(v), **flame_kwargs)
    _close(got, _np_attention(q, k, v, allowed))
    check_grads(lambda q, k, v: nn.dot_product_attention(q, k, v, **flame_kwargs),
                (fnp.asarray(q), fnp.asarray(k), fnp.asarray(v)), order=2)


def test_attention_mask_argument_errors():
    q = fnp.ones((2, 1, 3, 2))
    with pytest.raises(ValueError, match="query_seq_lengths"):
        nn.dot_product_attention(q, q, q, query_seq_lengths=fnp.asarray([1, 2, 3]))
    with pytest.raises(ValueError, match="key_value_seq_lengths"):
        nn.dot_product_attention(q, q, q, key_value_seq_lengths=fnp.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match="local_window_size"):
        nn.dot_product_attention(q, q, q, local_window_size=(1, 2, 3))
    with pytest.raises(ValueError, match="implementation"):
        nn.dot_product_attention(q, q, q, implementation="flash")
    # JAX's keyword names work.
    out = nn.dot_product_attention(query=q, key=q, value=q, implementation="xla", scale=1.0)
    assert out.shape == (2, 1, 3, 2)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_on_reduce_window(count_include_pad):
    x = _f64((2, 3, 5, 4))
    got = nn.avg_pool(fnp.asarray(x), 3, strides=2, padding="SAME",
                      count_include_pad=count_include_pad)
    # SAME for stride 2, window 3: height 5 pads (1, 1), width 4 pads (0, 1).
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 1)))
    real = np.pad(np.ones((5, 4)), ((1, 1), (0, 1)))
    want = np.zeros((2, 3, 3, 2))
    for i, j in np.ndindex(3, 2):
        window = padded[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum((2, 3))
        want[:, :, i, j] = window / (9 if count_include_pad else
                                     real[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum())
    _close(got, want)
    check_grads(lambda x: nn.avg_pool(x, 3, 2, "SAME", count_include_pad), (fnp.asarray(x),),
                order=2)
