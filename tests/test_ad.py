"""Automatic differentiation: nesting, higher orders, Jacobians, checkpoint, custom rules."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.test_util import check_grads


def f64(*values):
    return fnp.asarray(np.array(values, dtype=np.float64))


def test_nested_grad_keeps_levels_apart():
    assert float(flamefx.grad(lambda x: flamefx.grad(lambda y: x * y)(2.0))(3.0)) == 1.0


def test_nested_jvp_keeps_levels_apart():
    def outer(x):
        return flamefx.jvp(lambda y: x * y, (2.0,), (1.0,))[1]
    assert float(flamefx.jvp(outer, (3.0,), (1.0,))[1]) == 1.0


def test_third_derivative_closed_form():
    x = 0.7
    d3 = flamefx.grad(flamefx.grad(flamefx.grad(lambda t: fnp.sin(t) * t)))(x)
    # (x sin x)''' = -3 sin x - x cos x
    np.testing.assert_allclose(float(d3), -3 * np.sin(x) - x * np.cos(x), rtol=1e-5)


def test_hessian_closed_form():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    h = flamefx.hessian(lambda x: fnp.sum(x * (fnp.asarray(a) @ x)) + fnp.sum(x ** 3))
    x = np.array([0.5, -1.0])
    np.testing.assert_allclose(np.asarray(h(fnp.asarray(x))), 2 * a + np.diag(6 * x), rtol=1e-6)


def test_jacfwd_equals_jacrev_on_pytrees():
    def f(params, x):
        return {"y": fnp.tanh(params["w"] @ x), "s": fnp.sum(params["b"] * x)}
    params = {"w": f64(*range(6)).reshape(2, 3) * 0.1, "b": f64(1.0, 2.0, 3.0)}
    x = f64(0.3, -0.2, 0.5)
    fwd = flamefx.jacfwd(f)(params, x)
    rev = flamefx.jacrev(f)(params, x)
    for a, b in zip(flamefx.tree_util.tree_leaves(fwd), flamefx.tree_util.tree_leaves(rev)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    assert fwd["y"]["w"].shape == (2, 2, 3)


def test_jacobians_are_built_on_vmap_not_loops():
    jaxpr = flamefx.make_jaxpr(flamefx.jacrev(lambda x: fnp.sin(x) * 2.0))(fnp.ones(50))
    assert len(jaxpr.eqns) < 20


def test_value_and_grad_argnums_and_pytrees():
    def loss(p, x):
        return fnp.sum((p["w"] * x + p["b"]) ** 2)
    p = {"w": f64(1.0, 2.0), "b": f64(0.5)}
    x = f64(3.0, 4.0)
    value, (gp, gx) = flamefx.value_and_grad(loss, argnums=(0, 1))(p, x)
    r = np.array([1.0, 2.0]) * [3.0, 4.0] + 0.5
    np.testing.assert_allclose(float(value), np.sum(r ** 2))
    np.testing.assert_allclose(np.asarray(gp["w"]), 2 * r * [3.0, 4.0])
    np.testing.assert_allclose(np.asarray(gp["b"]), [np.sum(2 * r)])
    np.testing.assert_allclose(np.asarray(gx), 2 * r * [1.0, 2.0])


def test_has_aux():
    g, aux = flamefx.grad(lambda x: (x * x, {"double": x * 2}), has_aux=True)(3.0)
    assert float(g) == 6.0 and float(aux["double"]) == 6.0
    assert isinstance(aux["double"], flamefx.Array)


def test_linearize_matches_jvp():
    def f(x):
        return fnp.sin(x) * x
    y, f_jvp = flamefx.linearize(f, f64(0.4, 0.9))
    np.testing.assert_allclose(np.asarray(f_jvp(f64(1.0, 1.0))),
                               np.asarray(flamefx.jvp(f, (f64(0.4, 0.9),), (f64(1.0, 1.0),))[1]))


def test_stop_gradient():
    assert float(flamefx.grad(lambda x: x * flamefx.stop_gradient(x))(3.0)) == 3.0


@pytest.mark.parametrize("fn", [
    lambda x, y: fnp.sum(x * y),                       # broadcasting (3,) * (2, 3)
    lambda x, y: fnp.mean(fnp.exp(x) / (1.0 + y ** 2), axis=0),
    lambda x, y: fnp.max(x + y, axis=1),
    lambda x, y: fnp.sum(fnp.tanh(x @ y.T)),
    lambda x, y: fnp.var(y, axis=-1) + fnp.std(x),
])
def test_fnp_gradients(fn):
    rng = np.random.default_rng(0)
    x = fnp.asarray(rng.normal(size=(3,)))
    y = fnp.asarray(rng.normal(size=(2, 3)))
    check_grads(fn, (x, y), order=2)


def test_checkpoint_same_gradients_and_recomputes():
    def block(x):
        return fnp.sin(fnp.sin(x))
    x = f64(0.1, 0.2, 0.3)
    plain = flamefx.grad(lambda x: fnp.sum(block(x)))(x)
    remat = flamefx.grad(lambda x: fnp.sum(flamefx.checkpoint(block)(x)))(x)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(remat))
    jaxpr = flamefx.make_jaxpr(flamefx.grad(lambda x: fnp.sum(flamefx.checkpoint(block)(x))))(x)
    listing = str(jaxpr)
    assert "remat" in listing
    # The backward pass recomputes both sines at the top level, outside the remat equation.
    top_level_sins = sum(1 for e in jaxpr.eqns if e.prim.name == "sin")
    assert top_level_sins == 2, listing


def test_checkpoint_closes_over_traced_values():
    def f(w, x):
        return fnp.sum(flamefx.checkpoint(lambda x: fnp.tanh(w * x))(x))
    check_grads(f, (f64(0.5, 1.5), f64(0.2, -0.4)), order=2)


def _log1pexp():
    @flamefx.custom_vjp
    def log1pexp(x):
        return fnp.log1p(fnp.exp(x))

    def fwd(x):
        return log1pexp(x), x

    def bwd(x, g):
        return (g * (1.0 - 1.0 / (1.0 + fnp.exp(x))),)

    log1pexp.defvjp(fwd, bwd)
    return log1pexp


def test_custom_vjp_is_stable_where_naive_is_not():
    log1pexp = _log1pexp()
    naive = flamefx.grad(lambda x: fnp.log1p(fnp.exp(x)))(100.0)
    assert not np.isfinite(float(naive))  # exp(100) overflows float32: inf / inf
    assert float(flamefx.grad(log1pexp)(100.0)) == 1.0
    np.testing.assert_allclose(float(flamefx.grad(log1pexp)(0.0)), 0.5)
    # Also under jit, vmap and forward mode.
    xs = fnp.array([-3.0, 0.0, 3.0])
    expected = 1 / (1 + np.exp(-np.array([-3.0, 0.0, 3.0])))
    np.testing.assert_allclose(np.asarray(flamefx.vmap(flamefx.grad(log1pexp))(xs)), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(flamefx.jit(flamefx.vmap(flamefx.grad(log1pexp)))(xs)),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(flamefx.jvp(log1pexp, (xs,), (fnp.ones(3),))[1]),
                               expected, rtol=1e-6)


def test_custom_jvp_and_its_reverse_mode():
    @flamefx.custom_jvp
    def f(x):
        return fnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return fnp.sin(x), 2.0 * fnp.cos(x) * t   # deliberately twice the true derivative

    assert np.isclose(float(flamefx.jvp(f, (0.0,), (1.0,))[1]), 2.0)
    assert np.isclose(float(flamefx.grad(f)(0.0)), 2.0)


def test_custom_vjp_closure_over_tracer_fails_clearly():
    def outer(w):
        @flamefx.custom_vjp
        def g(x):
            return x * w
        g.defvjp(lambda x: (x * w, None), lambda res, ct: (ct,))
        return g(2.0)
    with pytest.raises(flamefx.FlamefxError, match="closes over a traced value"):
        flamefx.grad(outer)(3.0)


def test_custom_vjp_bad_bwd_output():
    @flamefx.custom_vjp
    def f(x, y):
        return x * y
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g,))
    with pytest.raises(flamefx.FlamefxError, match="structure"):
        flamefx.grad(f)(1.0, 2.0)

    @flamefx.custom_vjp
    def h(x):
        return fnp.sum(x)
    h.defvjp(lambda x: (fnp.sum(x), None), lambda res, g: (fnp.ones(5),))
    with pytest.raises(flamefx.FlamefxError, match="shape"):
        flamefx.grad(h)(fnp.ones(3))


def test_nan_through_where_and_the_double_where_fix():
    # fnp.where(x > 0, sqrt(x), 0) has gradient NaN at 0: the untaken branch's derivative,
    # 1/(2 sqrt(0)) = inf, is multiplied by a zero cotangent, and 0 * inf = NaN.
    naive = flamefx.grad(lambda x: fnp.where(x > 0, fnp.sqrt(x), 0.0))(0.0)
    assert np.isnan(float(naive))
    # The fix: make the untaken branch's input safe too ("double where").
    def safe(x):
        safe_x = fnp.where(x > 0, x, 1.0)
        return fnp.where(x > 0, fnp.sqrt(safe_x), 0.0)
    assert float(flamefx.grad(safe)(0.0)) == 0.0
    assert np.isclose(float(flamefx.grad(safe)(4.0)), 0.25)


def test_error_grad_of_non_scalar():
    with pytest.raises(flamefx.FlamefxTypeError, match="jacrev"):
        flamefx.grad(lambda x: x * 2)(fnp.ones(3))


def test_error_grad_of_integer_input():
    with pytest.raises(flamefx.FlamefxTypeError, match="float inputs"):
        flamefx.grad(lambda x: x * 2)(3)


def test_error_has_aux_not_a_pair():
    with pytest.raises(flamefx.FlamefxTypeError, match="pair"):
        flamefx.grad(lambda x: x * 2, has_aux=True)(3.0)


