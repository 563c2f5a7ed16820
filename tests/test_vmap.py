"""vmap: JAX's axis semantics, per-example gradients, composition, and errors."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp

rng = np.random.default_rng(0)


def arr(*shape):
    return fnp.asarray(rng.normal(size=shape).astype(np.float32))


def test_in_axes_prefix_none_and_negative():
    x, y = arr(4, 3), arr(3, 4)
    out = flamefx.vmap(lambda a, b: a * b, in_axes=(0, -1))(x, y)  # y batched on its last axis
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) * np.asarray(y).T, rtol=1e-6)
    w = arr(3)
    out = flamefx.vmap(lambda p, v: p["w"] * v, in_axes=({"w": None}, 0))({"w": w}, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) * np.asarray(w), rtol=1e-6)


def test_negative_in_axis_and_out_axes():
    x = arr(3, 4)
    out = flamefx.vmap(lambda c: c * 2.0, in_axes=-1, out_axes=1)(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) * 2.0, rtol=1e-6)
    out = flamefx.vmap(lambda r: fnp.sum(r), in_axes=-1)(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x).sum(0), rtol=1e-5)


def test_kwargs_batched_along_axis_0():
    x = arr(5, 2)
    out = flamefx.vmap(lambda a, *, scale: a * scale)(x, scale=fnp.arange(5.0))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) * np.arange(5.0)[:, None])


def test_nested_vmap_matmul_is_one_dot_general():
    a, b = arr(2, 3, 4, 5), arr(2, 3, 5, 6)
    f = flamefx.vmap(flamefx.vmap(lambda x, y: x @ y))
    np.testing.assert_allclose(np.asarray(f(a, b)), np.asarray(a) @ np.asarray(b), rtol=1e-5)
    jaxpr = flamefx.make_jaxpr(f)(a, b)
    names = [e.prim.name for e in jaxpr.eqns]
    assert names.count("dot_general") == 1, str(jaxpr)
    assert len(names) <= 3, str(jaxpr)


def _mlp_loss(params, x, label):
    h = fnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"]
    logp = logits - fnp.log(fnp.sum(fnp.exp(logits)))
    return -logp[label]


def test_per_example_gradients_equal_a_loop():
    params = {"w1": arr(4, 8) * 0.5, "b1": arr(8), "w2": arr(8, 3)}
    xs, labels = arr(6, 4), fnp.asarray(np.array([0, 1, 2, 0, 1, 2], np.int32))
    per_example = flamefx.vmap(flamefx.grad(_mlp_loss), in_axes=(None, 0, 0))(params, xs, labels)
    for i in range(6):
        single = flamefx.grad(_mlp_loss)(params, xs[i], labels[i])
        for k in params:
            np.testing.assert_allclose(np.asarray(per_example[k][i]), np.asarray(single[k]),
                                       rtol=1e-5, atol=1e-6)
    batched = flamefx.make_jaxpr(flamefx.vmap(flamefx.grad(_mlp_loss), in_axes=(None, 0, 0)))(
        params, xs, labels)
    single = flamefx.make_jaxpr(flamefx.grad(_mlp_loss))(params, xs[0], labels[0])
    # No per-example loop: about as many equations as one example (plus axis moves).
    assert len(batched.eqns) <= 2 * len(single.eqns) + 10


def test_grad_of_vmap_and_vmap_of_vmap():
    x = arr(3, 4)
    g = flamefx.grad(lambda x: fnp.sum(flamefx.vmap(fnp.sin)(x)))(x)
    np.testing.assert_allclose(np.asarray(g), np.cos(np.asarray(x)), rtol=1e-6)
    out = flamefx.vmap(flamefx.vmap(lambda v: v * v))(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) ** 2, rtol=1e-6)


def test_jit_of_vmap_of_grad():
    x = arr(5)
    out = flamefx.jit(flamefx.vmap(flamefx.grad(lambda t: fnp.sin(t) * t)))(x)
    xv = np.asarray(x)
    np.testing.assert_allclose(np.asarray(out), np.sin(xv) + xv * np.cos(xv), rtol=1e-5)


def test_error_inconsistent_sizes_names_arguments():
    with pytest.raises(flamefx.FlamefxError, match="size 3.*size 4|inconsistent"):
        flamefx.vmap(lambda a, b: a + b)(arr(3), arr(4))


def test_error_in_axes_structure():
    with pytest.raises(flamefx.FlamefxError, match="in_axes"):
        flamefx.vmap(lambda a, b: a + b, in_axes=(0,))(arr(3), arr(3))


def test_error_axis_out_of_range():
    with pytest.raises(flamefx.FlamefxError, match="out of range"):
        flamefx.vmap(lambda a: a, in_axes=2)(arr(3, 4))


def test_error_axis_size_missing():
    with pytest.raises(flamefx.FlamefxError, match="axis_size"):
        flamefx.vmap(lambda a: a, in_axes=None)(arr(3))
    out = flamefx.vmap(lambda a: a, in_axes=None, axis_size=2)(arr(3))
    assert out.shape == (2, 3)


def test_out_axes_out_of_bounds_raises_as_in_jax():
    # A scalar per example batches to rank 1: out_axes=1 does not exist (JAX raises too).
    with pytest.raises(ValueError, match=r"out_axes=1 is out of bounds for output 0.*shape \(\)"):
        flamefx.vmap(lambda x: x.sum(), out_axes=1)(fnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"out_axes=-3 is out of bounds"):
        flamefx.vmap(lambda x: x, out_axes=-3)(fnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"out_axes=2 is out of bounds"):  # unbatched output
        flamefx.vmap(lambda x: fnp.ones(2), out_axes=2)(fnp.ones((3, 2)))
    assert flamefx.vmap(lambda x: x, out_axes=-1)(fnp.ones((3, 2))).shape == (2, 3)
    assert flamefx.vmap(lambda x: fnp.ones(2), out_axes=1)(fnp.ones((3, 2))).shape == (2, 3)
