"""Layers as pytrees: shapes, tree structure, initializer statistics, grads, and a model
that learns."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import nn, tree_util
from flamefx import random as frandom
from flamefx.nn import initializers


def _keys(n, seed=0):
    keys = frandom.split(frandom.key(seed), n)
    return [keys[i] for i in range(n)]


def test_linear_matches_matmul():
    layer = nn.Linear.init(frandom.key(0), 3, 2)
    assert layer.weight.shape == (3, 2) and layer.bias.shape == (2,)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    expected = x @ np.asarray(layer.weight) + np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(layer(fnp.asarray(x))), expected, rtol=1e-6)
    assert nn.Linear.init(frandom.key(0), 3, 2, use_bias=False).bias is None


def test_layers_are_pytrees_with_static_config():
    conv = nn.Conv2d.init(frandom.key(0), 3, 8, 3, stride=2, groups=1)
    leaves, treedef = tree_util.tree_flatten(conv)
    assert [leaf.shape for leaf in leaves] == [(8, 3, 3, 3), (8,)]
    rebuilt = tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.stride == (2, 2) and rebuilt.padding == "SAME"
    other = nn.Conv2d.init(frandom.key(0), 3, 8, 3, stride=1)
    assert tree_util.tree_structure(other) != treedef  # config is structure, not data
    doubled = tree_util.tree_map(lambda p: p * 2, conv)
    assert isinstance(doubled, nn.Conv2d) and doubled.stride == (2, 2)


def test_layer_output_shapes():
    k = _keys(6)
    x = fnp.ones((2, 4, 8, 8))
    assert nn.Conv2d.init(k[0], 4, 6, 3, stride=2)(x).shape == (2, 6, 4, 4)
    assert nn.Conv2d.init(k[0], 4, 8, 3, padding="VALID", groups=2)(x).shape == (2, 8, 6, 6)
    up = nn.ConvTranspose2d.init(k[1], 4, 2, 4, stride=2, padding=1)
    assert up(x).shape == (2, 2, 16, 16)
    assert nn.GroupNorm.init(4, num_groups=2)(x).shape == x.shape
    assert nn.LayerNorm.init(8)(x).shape == x.shape
    table = nn.Embedding.init(k[2], 10, 5)
    assert table(fnp.asarray([[1, 2, 3]])).shape == (1, 3, 5)
    attention = nn.Attention.init(k[3], 12, num_heads=3)
    assert attention(fnp.ones((2, 5, 12)), is_causal=True).shape == (2, 5, 12)


def test_attention_layer_matches_numpy():
    layer = nn.Attention.init(frandom.key(1), 8, num_heads=2)
    x = np.random.default_rng(1).normal(size=(2, 3, 8))

    def project(linear, v):
        return v @ np.asarray(linear.weight, np.float64) + np.asarray(linear.bias, np.float64)

    def heads(v):
        return v.reshape(2, 3, 2, 4).transpose(0, 2, 1, 3)

    q, k, v = (heads(project(p, x)) for p in (layer.query, layer.key, layer.value))
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0
    scores = np.where(np.tril(np.ones((3, 3), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    mixed = (weights / weights.sum(-1, keepdims=True)) @ v
    expected = project(layer.out, mixed.transpose(0, 2, 1, 3).reshape(2, 3, 8))
    out = layer(fnp.asarray(x.astype(np.float32)), is_causal=True)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)


def test_sequential_wraps_functions():
    k = _keys(2)
    model = nn.Sequential.init(nn.Linear.init(k[0], 4, 8), nn.relu, nn.Linear.init(k[1], 8, 1))
    assert isinstance(model.layers[1], nn.Activation)
    assert len(tree_util.tree_leaves(model)) == 4
    assert model(fnp.ones((3, 4))).shape == (3, 1)


def test_fans_like_flax():
    assert initializers.compute_fans((5, 7)) == (5, 7)
    assert initializers.compute_fans((16, 3, 3, 3), in_axis=1, out_axis=0) == (27, 144)


@pytest.mark.parametrize("name,variance", [
    ("lecun_normal", 1 / 200), ("lecun_uniform", 1 / 200), ("glorot_normal", 2 / 500),
    ("glorot_uniform", 2 / 500), ("he_normal", 2 / 200), ("he_uniform", 2 / 200),
])
def test_initializer_variance(name, variance):
    w = np.asarray(getattr(initializers, name)()(frandom.key(3), (200, 300)), np.float64)
    assert abs(w.mean()) < 0.05 * np.sqrt(variance)
    assert w.var() == pytest.approx(variance, rel=0.03)


def test_simple_initializers():
    k = frandom.key(0)
    assert np.asarray(initializers.zeros(k, (2, 3))).sum() == 0
    assert np.asarray(initializers.ones(k, (2,))).tolist() == [1.0, 1.0]
    assert np.asarray(initializers.constant(0.5)(k, (2,))).tolist() == [0.5, 0.5]
    w = np.asarray(initializers.normal(0.02)(k, (20000,)))
    assert abs(w.std() - 0.02) < 0.001
    u = np.asarray(initializers.uniform(0.1)(k, (1000,)))
    assert u.min() >= 0 and u.max() < 0.1
    conv = np.asarray(initializers.he_normal(in_axis=1, out_axis=0)(k, (64, 32, 3, 3)))
    assert conv.var() == pytest.approx(2 / (32 * 9), rel=0.05)


def test_grad_over_a_model_and_jit():
    k = _keys(3)
    model = nn.Sequential.init(nn.Conv2d.init(k[0], 1, 4, 3), nn.silu,
                               nn.GroupNorm.init(4, num_groups=2), nn.Conv2d.init(k[1], 4, 1, 3))
    x = frandom.normal(k[2], (2, 1, 6, 6))

    def loss(m):
        return fnp.mean(m(x) ** 2)

    grads = flamefx.grad(loss)(model)
    assert tree_util.tree_structure(grads) == tree_util.tree_structure(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in tree_util.tree_leaves(grads))
    jitted = flamefx.jit(flamefx.grad(loss))(model)
    for a, b in zip(tree_util.tree_leaves(grads), tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_a_small_classifier_learns():
    """Two Gaussian blobs; an MLP trained by plain gradient descent separates them."""
    k = _keys(4, seed=5)
    labels = frandom.bernoulli(k[0], 0.5, (128,)).astype(np.int32)
    centers = fnp.asarray(np.array([[-1.5, 0.0], [1.5, 0.0]], np.float32))
    x = nn.embed(centers, labels) + frandom.normal(k[1], (128, 2))
    model = nn.Sequential.init(nn.Linear.init(k[2], 2, 16), nn.gelu,
                               nn.Linear.init(k[3], 16, 2))

    def loss(m):
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(m(x), labels))

    step = flamefx.jit(lambda m: tree_util.tree_map(lambda p, g: p - 0.5 * g, m,
                                                    flamefx.grad(loss)(m)))
    first = float(loss(model))
    for _ in range(40):
        model = step(model)
    accuracy = float(fnp.mean(fnp.argmax(model(x), axis=-1) == labels))
    assert float(loss(model)) < 0.5 * first and accuracy > 0.85


def test_per_example_gradients_with_vmap():
    layer = nn.Linear.init(frandom.key(2), 3, 2)
    x = frandom.normal(frandom.key(3), (4, 3))
    y = fnp.asarray([0, 1, 1, 0])

    def loss(m, xi, yi):
        return nn.softmax_cross_entropy_with_integer_labels(m(xi), yi)

    batched = flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0))(layer, x, y)
    assert batched.weight.shape == (4, 3, 2)
    for i in range(4):
        single = flamefx.grad(loss)(layer, x[i], y[i])
        np.testing.assert_allclose(np.asarray(batched.weight[i]), np.asarray(single.weight),
                                   rtol=1e-5, atol=1e-6)
