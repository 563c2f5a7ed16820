"""checkpoint's saving policies: which equations the backward pass recomputes (counted in
the jaxpr of grad(checkpoint(f, policy=...))), values and gradients against the plain
function, float64 NumPy and finite differences, under jit and vmap."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.ad_checkpoint import checkpoint_name
from flamefx.test_util import check_grads

P = flamefx.checkpoint_policies


def _mlp(w, x):
    h = fnp.sin(x @ w)
    return fnp.sum(fnp.tanh(h @ w.T))


def _mlp_grad_np(w, x):
    a = x @ w
    h = np.sin(a)
    b = h @ w.T
    ct_b = 1 - np.tanh(b) ** 2
    ct_h = ct_b @ w
    ct_a = ct_h * np.cos(a)
    return x.T @ ct_a + (h.T @ ct_b).T


def _args(dtype=np.float64):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(3, 3)).astype(dtype), rng.normal(size=(2, 3)).astype(dtype))


def _backward_counts(policy, f=_mlp):
    w, x = _args(np.float32)
    jaxpr = flamefx.make_jaxpr(flamefx.grad(flamefx.checkpoint(f, policy=policy)))(w, x)
    names = [e.prim.name for e in jaxpr.eqns]  # the forward is inside the remat equation
    return {n: names.count(n) for n in ("sin", "tanh", "dot_general")}


def test_policies_decide_what_is_recomputed():
    # The backward pass of _mlp alone has 4 products (the cotangents of both operands of
    # both products: remat's rule differentiates every float input) and no sin or tanh.
    nothing = _backward_counts(P.nothing_saveable)
    assert nothing == {"sin": 1, "tanh": 1, "dot_general": 2 + 4}
    assert _backward_counts(None) == nothing  # checkpoint's default saves nothing
    assert _backward_counts(P.everything_saveable) == {"sin": 0, "tanh": 0, "dot_general": 4}
    assert _backward_counts(P.dots_saveable) == {"sin": 1, "tanh": 1, "dot_general": 4}
    assert _backward_counts(P.checkpoint_dots) == {"sin": 1, "tanh": 1, "dot_general": 4}
    assert _backward_counts(P.dots_with_no_batch_dims_saveable)["dot_general"] == 4


def _named(w, x):
    h = checkpoint_name(fnp.sin(x @ w), "h")
    return fnp.sum(fnp.tanh(h @ w.T))


def test_name_policies():
    only_h = _backward_counts(P.save_only_these_names("h"), _named)
    # Both products are redone: sin's derivative needs x @ w, tanh's needs h @ w.T.
    assert only_h == {"sin": 0, "tanh": 1, "dot_general": 4 + 2}
    except_h = _backward_counts(P.save_anything_except_these_names("h"), _named)
    # sin's own result is saved (only the name is not): just the identity is redone.
    assert except_h == {"sin": 0, "tanh": 0, "dot_general": 4}
    w, x = _args(np.float32)
    jaxpr = flamefx.make_jaxpr(flamefx.grad(flamefx.checkpoint(
        _named, policy=P.save_anything_except_these_names("h"))))(w, x)
    assert [e.prim.name for e in jaxpr.eqns].count("checkpoint_name") == 1
    assert _backward_counts(P.save_only_these_names("other"), _named)["sin"] == 1
    both = P.save_from_both_policies(P.dots_saveable, P.save_only_these_names("h"))
    assert _backward_counts(both, _named) == {"sin": 0, "tanh": 1, "dot_general": 4}


@pytest.mark.parametrize("policy", [None, P.nothing_saveable, P.everything_saveable,
                                    P.dots_saveable, P.save_only_these_names("h")])
def test_gradients_match_numpy_and_finite_differences(policy):
    w, x = _args()
    f = flamefx.checkpoint(_named, policy=policy)
    g = flamefx.grad(f)(w, x)
    np.testing.assert_allclose(np.asarray(g), _mlp_grad_np(w, x), rtol=1e-10)
    # float64 flamefx arrays: jit would take NumPy float64 as float32 (x64 off, as JAX)
    jitted = flamefx.jit(flamefx.grad(f))(core.to_array(w), core.to_array(x))
    np.testing.assert_allclose(jitted, g, rtol=1e-10)
    check_grads(lambda w: f(w, x), [w], order=2, modes=("fwd", "rev"))


def test_policy_under_vmap_and_value():
    w, x = _args()
    f = flamefx.checkpoint(_mlp, policy=P.dots_saveable)
    per_example = flamefx.vmap(flamefx.grad(f), in_axes=(None, 0))(w, x[:, None, :])
    for i in range(2):
        np.testing.assert_allclose(per_example[i], _mlp_grad_np(w, x[i:i + 1]), rtol=1e-10)
    assert float(f(w, x)) == pytest.approx(float(_mlp(w, x)))


def test_checkpoint_name_is_the_identity():
    x = fnp.arange(3.0)
    np.testing.assert_array_equal(checkpoint_name(x, "a"), x)
    assert checkpoint_name({"k": x}, "a")["k"].shape == (3,)
    np.testing.assert_allclose(flamefx.grad(lambda x: checkpoint_name(x * x, "sq"))(3.0), 6.0)
