"""jit's optimization passes: each shrinks the jaxpr and leaves the results unchanged."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.jaxpr import ClosedJaxpr, eval_jaxpr
from flamefx.transforms import passes


def _run(closed: ClosedJaxpr, *args):
    return [np.asarray(o) for o in eval_jaxpr(closed.jaxpr, closed.consts, *args)]


def _check(fun, pass_fn, *args, fewer_by=1):
    closed = flamefx.make_jaxpr(fun)(*args)
    optimized = pass_fn(closed)
    assert len(optimized.eqns) <= len(closed.eqns) - fewer_by, str(optimized)
    for got, want in zip(_run(optimized, *args), _run(closed, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    return optimized


def _names(closed) -> list[str]:
    """Primitive names, leaving out the broadcasts fnp adds for Python scalars."""
    return [e.prim.name for e in closed.eqns if e.prim.name != "broadcast_in_dim"]


def _jaxpr_pass(fn):
    return lambda closed: passes.prune_consts(closed, fn(closed.jaxpr))


def test_dead_code_is_removed():
    def f(x):
        unused = fnp.exp(x) * 3.0  # noqa: F841
        return x + 1.0
    out = _check(f, _jaxpr_pass(passes.eliminate_dead_code), fnp.arange(3.0), fewer_by=2)
    assert _names(out) == ["add"]


def test_dead_constants_are_pruned():
    table = fnp.arange(5.0)

    def f(x):
        _ = x * table
        return x + 1.0
    closed = flamefx.make_jaxpr(f)(fnp.ones(5))
    assert len(closed.consts) == 1
    assert len(passes.optimize(closed).consts) == 0


def test_common_subexpressions_are_merged():
    def f(x):
        return fnp.sin(x * 2.0) + fnp.sin(x * 2.0)
    out = _check(f, _jaxpr_pass(passes.eliminate_common_subexpressions), fnp.arange(3.0),
                 fewer_by=2)
    assert sum(e.prim.name == "sin" for e in out.eqns) == 1


def test_cse_keeps_different_params_apart():
    def f(x):
        return fnp.sum(x, axis=0), fnp.sum(x, axis=1)
    closed = flamefx.make_jaxpr(f)(fnp.ones((2, 3)))
    out = passes.eliminate_common_subexpressions(closed.jaxpr)
    assert sum(e.prim.name == "reduce_sum" for e in out.eqns) == 2


def test_constants_are_folded():
    def f(x):
        scale = fnp.exp(fnp.asarray(0.0)) * 2.0  # a constant expression
        return x * scale
    out = _check(f, passes.fold_constants, fnp.arange(3.0), fewer_by=1)
    assert "exp" not in [e.prim.name for e in out.eqns]


def test_folding_does_not_materialize_broadcasts():
    closed = flamefx.make_jaxpr(lambda x: x + fnp.full((2000,), 3.0))(fnp.ones(2000))
    out = passes.optimize(closed)
    assert all(c.size < 2000 for c in out.consts)


def test_broadcasts_only_opaque_kernels_read_are_folded():
    """The zero lse cotangent and the row ones that the gradient of sum(attention) hands
    the attention backward (a kernel that reads them from memory) become constants made
    once; a broadcast a fused kernel reads stays in the program."""
    from flamefx import nn
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))

    def loss(q, k, v):
        return fnp.sum(nn.dot_product_attention(q, k, v, scale=0.5))
    grad = flamefx.grad(loss, argnums=(0, 1, 2))
    closed = flamefx.make_jaxpr(grad)(q, k, v)
    out = passes.optimize(closed)
    bwd = [e for e in out.eqns if e.prim.name == "flash_attention_bwd"]
    assert len(bwd) == 1
    at = len(bwd[0].invars) - 2 - bwd[0].params["keep_probs"]  # dout, dlse[, P]
    dout, dlse = bwd[0].invars[at:at + 2]
    const_ids = {c.id for c in out.jaxpr.constvars}
    assert dout.id in const_ids and dlse.id in const_ids
    folded = dict(zip((c.id for c in out.jaxpr.constvars), out.consts))
    np.testing.assert_array_equal(np.asarray(folded[dout.id]), np.ones((2, 3, 5, 1)))
    np.testing.assert_array_equal(np.asarray(folded[dlse.id]), np.zeros((2, 3, 5)))
    for got, want in zip(_run(out, q, k, v), _run(closed, q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # Read by a fused multiply: kept as a broadcast.
    closed = flamefx.make_jaxpr(lambda x: x * fnp.full((2000,), 3.0))(fnp.ones(2000))
    assert all(c.size < 2000 for c in passes.optimize(closed).consts)


def test_noop_reshape_transpose_convert_are_removed():
    def f(x):
        y = lax.reshape(x, (2, 3))
        y = lax.transpose(y, (0, 1))
        y = lax.convert_element_type(y, np.float32)
        return y * 2.0
    out = _check(f, _jaxpr_pass(passes.remove_noops), fnp.ones((2, 3)), fewer_by=1)
    assert _names(out) == ["mul"]


def test_real_transpose_is_kept():
    closed = flamefx.make_jaxpr(lambda x: lax.transpose(x, (1, 0)))(fnp.ones((3, 3)))
    assert len(passes.remove_noops(closed.jaxpr).eqns) == 1


def test_nested_jit_calls_are_inlined():
    inner = flamefx.jit(lambda x: fnp.exp(x) + 1.0)
    closed = flamefx.make_jaxpr(lambda x: inner(x) * 2.0)(fnp.arange(3.0))
    assert any(e.prim.name == "jit_call" for e in closed.eqns)
    inlined = ClosedJaxpr(passes.inline_jit_calls(closed.jaxpr), closed.consts)
    assert sorted(_names(inlined)) == ["add", "exp", "mul"]
    np.testing.assert_allclose(_run(inlined, fnp.arange(3.0))[0],
                               _run(closed, fnp.arange(3.0))[0], rtol=1e-6)


def test_optimize_runs_everything():
    def f(x):
        a = lax.reshape(x, (3,)) * (1.0 + 1.0)
        b = lax.reshape(x, (3,)) * (1.0 + 1.0)
        dead = fnp.cos(x)  # noqa: F841
        return a + b
    out = _check(f, passes.optimize, fnp.arange(3.0), fewer_by=2)
    assert sorted(_names(out)) == ["add", "mul"]


def test_transposed_products_become_swapped_products():
    def weight_grad(g, x):  # the backward pass's dW = transpose(g^T x)
        return lax.transpose(lax.dot_general(g, x, (((0,), (0,)), ((), ()))), (1, 0))

    def batched(a, b):  # 'bij,bjk->bki'
        return lax.transpose(lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))), (0, 2, 1))

    rng = np.random.default_rng(0)
    g, x = (fnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((6, 3), (6, 4)))
    out = _check(weight_grad, _jaxpr_pass(passes.fold_transposes_into_products), g, x)
    assert _names(out) == ["dot_general"]
    a, b = (fnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((2, 3, 5), (2, 5, 4)))
    out = _check(batched, _jaxpr_pass(passes.fold_transposes_into_products), a, b)
    assert _names(out) == ["dot_general"]


def test_transposes_that_are_not_an_operand_swap_or_share_the_product_stay():
    def shared(g, x):  # the product is read twice: it must stay
        p = lax.dot_general(g, x, (((0,), (0,)), ((), ())))
        return lax.transpose(p, (1, 0)), p

    def batched_axis_moved(a, b):  # moves the batch axis: not the swapped product's order
        return lax.transpose(lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))), (1, 0, 2))

    rng = np.random.default_rng(1)
    g, x = (fnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((6, 3), (6, 4)))
    closed = flamefx.make_jaxpr(shared)(g, x)
    assert passes.fold_transposes_into_products(closed.jaxpr) is closed.jaxpr
    a, b = (fnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((2, 3, 5), (2, 5, 4)))
    closed = flamefx.make_jaxpr(batched_axis_moved)(a, b)
    assert passes.fold_transposes_into_products(closed.jaxpr) is closed.jaxpr


def test_mlp_gradient_plan_has_no_transposes():
    params = [(fnp.ones((8, 16)), fnp.zeros(16)), (fnp.ones((16, 4)), fnp.zeros(4))]

    def loss(params, x):
        h = x
        for w, b in params:
            h = fnp.tanh(h @ w + b)
        return fnp.sum(h)

    lowered = flamefx.jit(flamefx.grad(loss)).lower(params, fnp.ones((5, 8)))
    assert "transpose" not in [e.prim.name for e in lowered.jaxpr.eqns]


def test_outer_products_become_fused_broadcast_multiplies():
    rng = np.random.default_rng(0)
    # Per-example weight gradients: batch 0, a size-1 contracting axis, free axes after.
    a = fnp.asarray(rng.standard_normal((5, 1, 3)).astype(np.float32))
    b = fnp.asarray(rng.standard_normal((5, 1, 4)).astype(np.float32))
    # Batch axes after the free ones (a transpose is needed), and no batch at all.
    c = fnp.asarray(rng.standard_normal((3, 5, 1)).astype(np.float32))
    d = fnp.asarray(rng.standard_normal((1, 4)).astype(np.float32))

    def f(a, b, c, d):
        return (lax.dot_general(a, b, (((1,), (1,)), ((0,), (0,)))),
                lax.dot_general(c, b, (((2,), (1,)), ((1,), (0,)))),
                lax.dot_general(c[:, 0, :], d, (((1,), (0,)), ((), ()))))

    closed = flamefx.make_jaxpr(f)(a, b, c, d)
    rewritten = _jaxpr_pass(passes.expand_outer_products)(closed)
    assert "dot_general" not in _names(rewritten), str(rewritten)
    for got, want in zip(_run(rewritten, a, b, c, d), _run(closed, a, b, c, d)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # A real contraction stays a GEMM.
    kept = flamefx.make_jaxpr(lambda x, y: x @ y)(fnp.ones((2, 3)), fnp.ones((3, 4)))
    assert "dot_general" in _names(_jaxpr_pass(passes.expand_outer_products)(kept))


def test_per_example_gradient_plan_fuses_the_outer_product(monkeypatch):
    monkeypatch.setattr(passes, "EXPAND_OUTER_PRODUCTS", True)
    x = fnp.asarray(np.ones((8, 6), np.float32))
    w = fnp.asarray(np.ones((6, 5), np.float32))
    per_example = flamefx.jit(flamefx.vmap(flamefx.grad(lambda w, x: fnp.sum(x @ w)),
                                           in_axes=(None, 0)))
    plan = per_example.lower(w, x, platform="gpu").plan
    assert not [s for s in plan.steps if getattr(s, "eqn", None) is not None
                and s.eqn.prim.name == "dot_general"], plan.describe()
    np.testing.assert_allclose(np.asarray(per_example(w, x)), np.ones((8, 6, 5)))


def _attention_bwd_douts(closed) -> list[tuple]:
    """The shape of the dout operand of each flash_attention_bwd (before dlse and the kept
    probabilities)."""
    return [e.invars[-2 - e.params["keep_probs"]].aval.shape for e in closed.eqns
            if e.prim.name == "flash_attention_bwd"]


def test_broadcast_attention_cotangent_is_narrowed():
    """The gradient of sum(attention) gives the backward one cotangent per query row; the
    gradients stay those of the full (unoptimized) formula."""
    from flamefx import nn
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    weights = rng.standard_normal((2, 3, 5, 4))

    def loss(q, k, v):
        return fnp.sum(nn.dot_product_attention(q, k, v, scale=0.5))

    def weighted(q, k, v):  # dout = weights varies along dv: not narrowed
        return fnp.sum(nn.dot_product_attention(q, k, v, scale=0.5) * weights)

    def half(q, k, v):  # bfloat16: the tensor-core backward takes the narrow dout too
        out = nn.dot_product_attention(*(a.astype(flamefx.dtypes.bfloat16) for a in (q, k, v)))
        return fnp.sum(out.astype(np.float64))

    for fun, dout_shape in ((loss, (2, 3, 5, 1)), (weighted, (2, 3, 5, 4)), (half, (2, 3, 5, 1))):
        grad = flamefx.grad(fun, argnums=(0, 1, 2))
        closed = flamefx.make_jaxpr(grad)(q, k, v)
        assert _attention_bwd_douts(closed) == [(2, 3, 5, 4)]
        # Sinking first turns the bfloat16 cotangent, a cast of a broadcast, into a broadcast.
        optimized = _jaxpr_pass(lambda j: passes.narrow_attention_cotangents(
            passes.sink_broadcasts(j)))(closed)
        assert _attention_bwd_douts(optimized) == [dout_shape]
        for got, want in zip(_run(optimized, q, k, v), _run(closed, q, k, v)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        # float64 flamefx arrays: jit makes NumPy float64 arguments float32 (x64 off).
        jitted = flamefx.jit(grad)(*(fnp.asarray(a, dtype=np.float64) for a in (q, k, v)))
        for got, want in zip(jitted, _run(closed, q, k, v)):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_narrowed_attention_backward_matches_the_cpu(dtype):
    """The GPU's row-cotangent backward (several row slices and column chunks per head, a
    bias) against the CPU's full formula in float64."""
    from flamefx import core, nn
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 150, 32)).astype(dtype) for _ in range(3))
    bias = rng.standard_normal((1, 3, 150, 150)).astype(dtype)

    def loss(q, k, v, bias):
        return fnp.sum(nn.dot_product_attention(q, k, v, bias=bias, scale=0.2))
    grad = flamefx.jit(flamefx.grad(loss, argnums=(0, 1, 2, 3)))
    gpu = flamefx.devices("gpu")[0]
    got = grad(*(core.to_array(a, device=gpu) for a in (q, k, v, bias)))
    assert _attention_bwd_douts(grad.lower(q, k, v, bias).jaxpr) == [(2, 3, 150, 1)]
    want = flamefx.grad(loss, argnums=(0, 1, 2, 3))(*(a.astype(np.float64)
                                                      for a in (q, k, v, bias)))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for g, w in zip(got, want):
        w = np.asarray(w)
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=tol,
                                   atol=tol * np.abs(w).max())


def _count(closed, name) -> int:
    return sum(e.prim.name == name for e in closed.eqns)


def test_products_with_broadcast_operands_become_reductions():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5))
    row, col = rng.standard_normal((2, 4)), rng.standard_normal((2, 1, 3))

    def batched(x, row):  # rhs[b, k, j] = row[b, j]: constant along the contracted k
        rhs = lax.broadcast_in_dim(row, (2, 3, 4), (0, 2))
        return lax.dot_general(x, rhs, (((2,), (1,)), ((0,), (0,))))

    def lhs_broadcast(y, col):  # lhs[b, i, k] = col[b, 0, k] with the size-1 axis on i
        lhs = lax.broadcast_in_dim(col, (2, 5, 3), (0, 1, 2))
        return lax.dot_general(lhs, x, (((1,), (1,)), ((0,), (0,))))

    def sum_gradient(y):  # the gradient of sum(y @ w) w.r.t. w: dot(yᵀ, ones)
        return flamefx.grad(lambda w: fnp.sum(y @ w))(np.ones((5, 7)))

    for fun, args in ((batched, (x, row)), (lhs_broadcast, (y, col)), (sum_gradient, (y,))):
        closed = flamefx.make_jaxpr(fun)(*args)
        optimized = _jaxpr_pass(passes.reduce_products_with_broadcast_operands)(closed)
        assert _count(optimized, "dot_general") < _count(closed, "dot_general")
        for got, want in zip(_run(optimized, *args), _run(closed, *args)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_products_whose_broadcast_varies_along_the_contraction_stay():
    rng = np.random.default_rng(3)
    x, col = rng.standard_normal((4, 3)), rng.standard_normal(3)

    def f(x, col):  # rhs[k, j] = col[k] varies along the contracted k
        return x @ lax.broadcast_in_dim(col, (3, 6), (0,))
    closed = flamefx.make_jaxpr(f)(x, col)
    optimized = _jaxpr_pass(passes.reduce_products_with_broadcast_operands)(closed)
    assert _count(optimized, "dot_general") == 1


def test_elementwise_ops_on_large_broadcasts_run_on_the_sources():
    rng = np.random.default_rng(4)
    rows = rng.random(1024) + 0.5
    n = passes.SINK_MIN_ELEMENTS // 1024

    def f(rows):  # 1 / broadcast(rows), then a multiply by a broadcast scalar
        full = lax.broadcast_in_dim(rows, (1024, n), (0,))
        return (1.0 / full) * lax.broadcast_in_dim(np.float64(3.0), (1024, n), ())
    closed = flamefx.make_jaxpr(f)(rows)
    optimized = _jaxpr_pass(passes.sink_broadcasts)(closed)
    big_ops = [e for e in optimized.eqns if e.prim.name in ("div", "mul")
               and e.outvars[0].aval.size > 1024]
    assert not big_ops, str(optimized)
    for got, want in zip(_run(optimized, rows), _run(closed, rows)):
        np.testing.assert_allclose(got, want, rtol=1e-15)

    def small(rows):
        return 1.0 / lax.broadcast_in_dim(rows[:8], (8, 4), (0,))
    closed = flamefx.make_jaxpr(small)(rows)
    assert _jaxpr_pass(passes.sink_broadcasts)(closed).eqns == closed.eqns
