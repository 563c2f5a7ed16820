"""Control flow: cond/switch, while_loop, fori_loop and scan against plain Python loops,
under grad (to order 2), jvp, vmap (batched and unbatched predicates and carries) and jit,
plus the errors a user meets when a branch or a carry changes type."""

import time

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxError, FlamefxTypeError
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)
W = RNG.uniform(0.5, 1.0, 3)
XS = RNG.standard_normal((6, 3))
X0 = RNG.standard_normal(3)
# The same data as float64 flamefx arrays: NumPy float64 meeting flamefx.numpy ops or jit is
# float32 unless x64 is on (as in JAX), and these tests compare to float64 references.
W64, XS64, X064 = (fnp.asarray(a, dtype=np.float64) for a in (W, XS, X0))


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=tol, atol=tol)


def rnn_loss(w, c0, xs):
    """A small recurrence: the carry is a pytree, the ys a dict; the body closes over w."""
    def step(carry, x):
        h, n = carry["h"], carry["n"]
        h = fnp.tanh(h * w + x)
        return {"h": h, "n": n + 1}, {"out": fnp.sin(h) * x}
    carry, ys = lax.scan(step, {"h": c0, "n": 0}, xs)
    return fnp.sum(carry["h"]) + fnp.sum(ys["out"] ** 2)


def rnn_loss_reference(w, c0, xs):
    h, total = c0, 0.0
    for x in xs:
        h = np.tanh(h * w + x)
        total += np.sum((np.sin(h) * x) ** 2)
    return np.sum(h) + total


# --- each construct against a Python reference --------------------------------------------------


def test_scan_matches_python_loop_with_pytrees_and_reverse():
    _close(rnn_loss(W64, X064, XS64), rnn_loss_reference(W, X0, XS))
    carry, ys = lax.scan(lambda c, x: (c * 0.5 + x, c), X0, XS, reverse=True)
    c, expected = X0, [None] * len(XS)
    for i in reversed(range(len(XS))):
        expected[i], c = c, c * 0.5 + XS[i]
    _close(carry, c)
    _close(ys, np.stack(expected))


def test_scan_with_length_only_and_no_ys():
    carry, ys = lax.scan(lambda c, _: (c * 2.0, None), np.float64(1.0), length=5)
    assert ys is None and float(carry) == 32.0
    carry, ys = lax.scan(lambda c, _: (c, c), X0, length=0)
    assert ys.shape == (0, 3)


def test_cond_and_switch_pick_the_branch_with_pytree_operands():
    ops = {"a": X0, "b": (W, 2.0)}
    got = lax.cond(True, lambda o: o["a"] * o["b"][1], lambda o: o["b"][0], ops)
    _close(got, X0 * 2.0)
    _close(lax.cond(fnp.array(0), lambda o: o["a"], lambda o: o["b"][0], ops), W)
    branches = [lambda x: x + 1.0, lambda x: x * 3.0, lambda x: -x]
    for index, expected in [(-5, X0 + 1.0), (1, X0 * 3.0), (2, -X0), (7, -X0)]:
        _close(lax.switch(index, branches, X0), expected)


def test_while_loop_and_fori_loop_match_python():
    x, n = lax.while_loop(lambda c: fnp.sum(c[0] ** 2) < 100.0,
                          lambda c: (c[0] * 1.5 + 0.1, c[1] + 1), (X0, 0))
    rx, rn = X0, 0
    while np.sum(rx ** 2) < 100.0:
        rx, rn = rx * 1.5 + 0.1, rn + 1
    _close(x, rx)
    assert int(n) == rn
    total = 0.0
    for i in range(3, 11):
        total = total * 0.5 + i
    _close(lax.fori_loop(3, 11, lambda i, t: t * 0.5 + i, np.float64(0.0)), total)
    traced_bounds = flamefx.jit(lambda lo, hi: lax.fori_loop(lo, hi, lambda i, t: t * 0.5 + i,
                                                              np.float64(0.0)))
    _close(traced_bounds(3, 11), total)
    assert int(lax.fori_loop(5, 2, lambda i, t: t + 1, 0)) == 0


# --- differentiation ------------------------------------------------------------------------


def test_check_grads_order_2_through_scan():
    check_grads(rnn_loss, (W, X0, XS), order=2)


def test_check_grads_order_2_through_fori_loop():
    def f(w, x):
        return lax.fori_loop(0, 4, lambda i, x: fnp.sin(x * w) + 0.1 * i, x)
    check_grads(f, (W, X0), order=2)


def test_check_grads_order_2_through_cond_and_switch():
    def f(x, y):
        return lax.cond(fnp.sum(x) > 0, lambda a, b: fnp.sin(a) * b, lambda a, b: a * a - b,
                        x, y)
    check_grads(f, (np.abs(X0), W), order=2)
    check_grads(f, (-np.abs(X0), W), order=2)
    check_grads(lambda x: lax.switch(1, [fnp.sin, fnp.exp, fnp.cos], x), (X0,), order=2)


def test_nested_loops_and_cond_inside_scan_are_differentiable():
    def f(w, xs):
        def outer(c, x):
            inner = lax.fori_loop(0, 2, lambda i, h: fnp.tanh(h * w + x), c)
            c = lax.cond(fnp.sum(x) > 0, lambda h: h * 0.5, lambda h: fnp.sin(h), inner)
            return c, fnp.sum(c)
        c, ys = lax.scan(outer, fnp.zeros(3, dtype="float64"), xs)
        return fnp.sum(c) + fnp.sum(ys)
    check_grads(f, (W, XS[:3]), order=2)


def test_jvp_through_while_loop_and_reverse_mode_error():
    def f(x):
        return lax.while_loop(lambda c: c[1] < 3, lambda c: (fnp.sin(c[0]) * W, c[1] + 1),
                              (x, 0))[0]
    check_grads(f, (X0,), order=2, modes=("fwd",))
    with pytest.raises(FlamefxError, match="fori_loop .* or flamefx.lax.scan"):
        flamefx.grad(lambda x: fnp.sum(f(x)))(X0)


def test_tangent_only_on_a_const_reaches_the_carry():
    # The carry starts with a zero tangent; the body makes it nonzero (a fixed point).
    def f(w):
        return lax.scan(lambda c, x: (c * w + x, c), np.zeros(3), XS)
    check_grads(f, (W,), order=2)


# --- vmap ------------------------------------------------------------------------------------


def test_vmap_scan_batched_xs_unbatched_carry_and_per_example_grads():
    batch = RNG.standard_normal((4, 6, 3))
    got = flamefx.vmap(rnn_loss, in_axes=(None, None, 0))(W, X0, batch)
    _close(got, [rnn_loss_reference(W, X0, b) for b in batch])
    grads = flamefx.vmap(flamefx.grad(rnn_loss), in_axes=(None, None, 0))(W, X0, batch)
    for g, b in zip(grads, batch):
        _close(g, flamefx.grad(rnn_loss)(W, X0, b))
    ws = RNG.uniform(0.5, 1.0, (4, 3))
    _close(flamefx.vmap(rnn_loss, in_axes=(0, None, None))(ws, X0, XS),
           [rnn_loss_reference(w, X0, XS) for w in ws])
    _close(flamefx.grad(lambda ws: fnp.sum(flamefx.vmap(rnn_loss, (0, None, None))(ws, X0, XS)))
           (ws), [flamefx.grad(rnn_loss)(w, X0, XS) for w in ws])


def test_vmap_cond_batched_and_unbatched_predicates():
    def f(p, x):
        return lax.cond(p > 0, lambda x: fnp.sin(x), lambda x: x * 10.0, x)
    ps, xs = np.array([1.0, -1.0, 2.0]), RNG.standard_normal((3, 3))
    _close(flamefx.vmap(f)(ps, xs), [f(p, x) for p, x in zip(ps, xs)])
    _close(flamefx.vmap(f, in_axes=(None, 0))(-1.0, xs), xs * 10.0)
    index = np.array([0, 2, 5], np.int32)
    g = flamefx.vmap(lambda i, x: lax.switch(i, [fnp.sin, fnp.cos, fnp.exp], x))
    _close(g(index, xs), [np.sin(xs[0]), np.exp(xs[1]), np.exp(xs[2])])


def test_vmap_while_batched_predicate_runs_until_every_example_is_done():
    def doublings(x):
        return lax.while_loop(lambda c: c[0] < 10.0, lambda c: (c[0] * 2.0, c[1] + 1), (x, 0))
    xs = np.array([1.0, 3.0, 11.0, 0.5])
    values, counts = flamefx.vmap(doublings)(xs)
    _close(values, [16.0, 12.0, 11.0, 16.0])
    assert np.asarray(counts).tolist() == [4, 2, 0, 5]
    # An unbatched predicate (a shared counter) with a batched carry stays one loop.
    def steps(x):
        return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0 + c[0]),
                              (0, x))[1]
    _close(flamefx.vmap(steps)(xs), [steps(x) for x in xs])
    # Batched trip counts: fori_loop with traced bounds is a while_loop.
    ns = np.array([0, 3, 1, 2], np.int32)
    halvings = flamefx.vmap(lambda n, x: lax.fori_loop(0, n, lambda i, c: c * 0.5, x))
    _close(halvings(ns, xs), xs * 0.5 ** ns)


def test_loop_bodies_are_traced_and_compiled_once():
    from flamefx.primitives import sub_jaxprs
    traced = []

    def body(i, x):
        traced.append(i)
        return x * 0.5 + 1.0

    misses = sub_jaxprs._executable.cache_info().misses
    f = flamefx.jit(lambda x: lax.fori_loop(0, 50, body, x))
    f(X0)
    f(X0 + 1.0)
    assert len(traced) == 1
    assert sub_jaxprs._executable.cache_info().misses - misses == 1


# --- jit -------------------------------------------------------------------------------------


def test_jit_equals_eager_and_grad_of_jit():
    _close(flamefx.jit(rnn_loss)(W64, X064, XS64), rnn_loss(W64, X064, XS64))
    g_eager = flamefx.grad(rnn_loss, argnums=(0, 1))(W64, X064, XS64)
    g_jit = flamefx.jit(flamefx.grad(rnn_loss, argnums=(0, 1)))(W64, X064, XS64)
    for a, b in zip(g_jit, g_eager):
        _close(a, b)


def _products_in_scan_bodies(closed):
    """dot_generals per step of each scan after jit's passes (which also run on bodies)."""
    from flamefx.transforms import passes
    bodies = [e.params["jaxpr"] for e in passes.optimize(closed).jaxpr.eqns
              if e.prim.name == "scan"]
    return [sum(e.prim.name == "dot_general" for e in passes.optimize(
        _closed(b)).jaxpr.eqns) for b in bodies]


def _closed(jaxpr):
    from flamefx.jaxpr import ClosedJaxpr
    return ClosedJaxpr(jaxpr, [])


def test_scan_grad_saves_residuals_and_skips_the_unread_xs_cotangent():
    # An RNN: 2 products a step forward, 1 backward (of h; not of xs, which grad does not
    # differentiate): the forward runs once and saves what the backward reads. The weights'
    # gradients, sums over the steps, are one product each over all the steps' rows,
    # after the loop (hoist_accumulators).
    wx, wh = (fnp.asarray(RNG.standard_normal((3, 3)) * 0.5, np.float64) for _ in range(2))

    def loss(params, xs):
        def cell(h, x):
            h = fnp.tanh(x @ params[0] + h @ params[1])
            return h, h
        return fnp.sum(lax.scan(cell, fnp.zeros((2, 3), np.float64), xs)[1] ** 2)

    xs = fnp.asarray(RNG.standard_normal((6, 2, 3)), np.float64)  # a batch of 2 sequences
    closed = flamefx.make_jaxpr(flamefx.grad(loss))((wx, wh), xs)
    # One forward scan (the primal one, also stacking the residuals) and one reverse scan,
    # which skips the cotangent of xs before jit's passes too (eager grad).
    assert _products_in_scan_bodies(closed) == [2, 1]
    backward = [e for e in closed.jaxpr.eqns if e.prim.name == "scan"][-1]
    assert backward.params["num_carry"] == 1  # the cotangent of h; no weight accumulators
    after = closed.jaxpr.eqns[closed.jaxpr.eqns.index(backward):]
    assert [e.outvars[0].aval.shape for e in after if e.prim.name == "dot_general"] == \
        [(3, 3), (3, 3)]

    def reference(params, xs):
        h, total = np.zeros((2, 3)), 0.0
        for x in np.asarray(xs):
            h = np.tanh(x @ np.asarray(params[0]) + h @ np.asarray(params[1]))
            total += np.sum(h ** 2)
        return total

    eps, w = 1e-6, [np.asarray(wx), np.asarray(wh)]
    for g in (flamefx.grad(loss)((wx, wh), xs), flamefx.jit(flamefx.grad(loss))((wx, wh), xs)):
        for k in range(2):
            for index in np.ndindex(3, 3):
                bump = [np.zeros((3, 3)), np.zeros((3, 3))]
                bump[k][index] = eps
                numeric = (reference([a + b for a, b in zip(w, bump)], xs)
                           - reference([a - b for a, b in zip(w, bump)], xs)) / (2 * eps)
                _close(np.asarray(g[k])[index], numeric, tol=1e-6)


def test_scan_grad_sums_over_the_steps_after_the_loop():
    # A matrix RNN: wh read twice (two product terms, one transposed twice), a bias (a
    # reduction), and a scale s read through sin (its term is not a product or a sum: s
    # keeps its accumulator carry). Both directions, to order 2, and under vmap.
    params = tuple(fnp.asarray(a, np.float64) for a in (
        RNG.standard_normal((3, 4)) * 0.5, RNG.standard_normal((4, 4)) * 0.5,
        RNG.standard_normal(4) * 0.1, 0.7))
    xs = RNG.standard_normal((5, 2, 3))

    def loss(params, xs, reverse):
        wx, wh, b, s = params

        def cell(h, x):
            h = fnp.tanh(x @ wx + h @ wh + (h * fnp.sin(s)) @ wh.T + b)
            return h, h
        return fnp.sum(lax.scan(cell, fnp.zeros((2, 4), np.float64), xs,
                                reverse=reverse)[1] ** 2)

    for reverse in (False, True):
        closed = flamefx.make_jaxpr(flamefx.grad(lambda p: loss(p, xs, reverse)))(params)
        backward = [e for e in closed.jaxpr.eqns if e.prim.name == "scan"][-1]
        assert backward.params["num_carry"] == 2  # s's accumulator and h's cotangent
        check_grads(lambda p: loss(p, xs, reverse), (params,), order=2)
        batch = RNG.standard_normal((3, 5, 2, 3))
        per_example = flamefx.vmap(flamefx.grad(lambda p, x: loss(p, x, reverse)),
                                   (None, 0))(params, batch)
        for k, x in enumerate(batch):
            for a, b in zip(per_example, flamefx.grad(loss)(params, x, reverse)):
                _close(np.asarray(a)[k], b)


def _saved_per_step(fun, *args, n_ys=1):
    """The shapes the forward scan of grad(fun) stacks after its carries and ``n_ys`` ys:
    its residuals."""
    closed = flamefx.make_jaxpr(flamefx.grad(fun))(*args)
    forward = [e for e in closed.jaxpr.eqns if e.prim.name == "scan"][0]
    return [v.aval.shape for v in forward.outvars[forward.params["num_carry"] + n_ys:]]


def test_scan_grad_saves_per_step_values_not_loop_invariant_ones():
    # cos(w) (sin's derivative at a const) is computed once per backward step, not stacked;
    # under checkpoint only the carry entering each step is saved.
    def body(c, x, w):
        return c * fnp.sin(w) + fnp.tanh(c * x), c

    def loss(w, xs, remat=False):
        step = lambda c, x: body(c, x, w)
        step = flamefx.checkpoint(step) if remat else step
        return fnp.sum(lax.scan(step, fnp.ones(3, np.float64), xs)[1])

    # Saved: the carry entering each step and 1 - tanh(c * x)**2 (not cos(w)).
    assert _saved_per_step(loss, W64, XS64) == [(6, 3), (6, 3)]
    assert _saved_per_step(lambda w, xs: loss(w, xs, remat=True), W64, XS64) == [(6, 3)]
    g, g_remat = (flamefx.grad(loss)(W64, XS64, r) for r in (False, True))
    _close(g, g_remat)
    check_grads(lambda w: loss(w, XS64, True), (W64,), order=2)


def test_grad_through_scan_over_a_vector_of_scalars():
    # 0-d slices of xs (and 0-d stacked residuals) reach the body as arrays.
    f = lambda w: lax.scan(lambda c, x: (c * w + fnp.sin(x * c), c), 1.0, XS64[:, 0])[0]
    check_grads(f, (W64[0],), order=2)


def test_jaxpr_of_fori_loop_does_not_grow_with_the_trip_count():
    def eqns(n):
        return flamefx.make_jaxpr(lambda x: lax.fori_loop(0, n, lambda i, x: x * 0.5 + 1.0,
                                                          x))(X0).eqns
    short, long = eqns(10), eqns(1000)
    assert len(short) == len(long) == 1
    assert long[0].prim.name == "scan" and long[0].params["length"] == 1000


def test_jitted_200_step_sampling_loop_traces_fast():
    noise = RNG.standard_normal((200, 256)).astype(np.float32)

    def sample(x, noise):
        return lax.fori_loop(0, 200, lambda i, x: x - 0.01 * fnp.tanh(x) + noise[i], x)

    x0 = np.ones(256, np.float32)
    start = time.perf_counter()
    lowered = flamefx.jit(sample).lower(x0, noise)
    assert time.perf_counter() - start < 1.0
    assert [e.prim.name for e in lowered.jaxpr.eqns].count("scan") == 1
    expected = x0
    for i in range(200):
        expected = expected - 0.01 * np.tanh(expected) + noise[i]
    _close(flamefx.jit(sample)(x0, noise), expected, tol=1e-4)


# --- errors --------------------------------------------------------------------------------------


def test_branches_that_disagree_name_both_types():
    with pytest.raises(FlamefxTypeError, match=r"true_fun returns f32\[3\] but false_fun "
                                               r"returns f32\[4\]"):
        lax.cond(True, lambda: fnp.zeros(3), lambda: fnp.zeros(4))
    with pytest.raises(FlamefxTypeError, match="true_fun returns .* but false_fun returns"):
        lax.cond(True, lambda: (fnp.zeros(3), fnp.zeros(3)), lambda: fnp.zeros(3))
    with pytest.raises(FlamefxTypeError, match=r"branch 1 returns i32\[\] but branch 0"):
        lax.switch(0, [lambda: fnp.zeros((), "float32"), lambda: fnp.zeros((), "int32")])
    # A weak-typed Python scalar in one branch takes the other branch's dtype.
    out = lax.cond(False, lambda: np.float64(1.0), lambda: 2.0)
    assert out.dtype == np.float64 and float(out) == 2.0


def test_a_carry_that_changes_type_names_both_types():
    with pytest.raises(FlamefxTypeError, match=r"body_fun returns carry f32\[3\] but the "
                                               r"initial carry is f32\[\]"):
        lax.while_loop(lambda x: True, lambda x: fnp.zeros(3) + x, fnp.zeros(()))
    with pytest.raises(FlamefxTypeError, match=r"scan's f returns carry f64\[3\] but the "
                                               r"initial carry is f32\[3\]"):
        lax.scan(lambda c, x: (c + x, None), fnp.zeros(3), XS)
    with pytest.raises(FlamefxTypeError, match="structure"):
        lax.fori_loop(0, 2, lambda i, c: (c, c), X0)
    with pytest.raises(FlamefxTypeError, match="boolean scalar"):
        lax.while_loop(lambda x: x, lambda x: x, X0)
    with pytest.raises(FlamefxTypeError, match="pair"):
        lax.scan(lambda c, x: c, X0, XS)
    with pytest.raises(FlamefxTypeError, match="one length"):
        lax.scan(lambda c, x: (c, x), X0, (XS, XS[:2]))
    # A weak Python-scalar carry takes the body's dtype instead of failing.
    one = fnp.asarray(1.0, dtype=np.float64)
    assert lax.fori_loop(0, 3, lambda i, c: c + one, 0.0).dtype == np.float64
    with pytest.raises(FlamefxTypeError, match=r"body_fun returns carry f64\[3\] but the "
                                               r"initial carry is f32\[\]"):
        lax.fori_loop(0, 3, lambda i, c: c + X064, 0.0)


# --- GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_matches_cpu():
    cpu, gpu = flamefx.devices("cpu")[0], flamefx.devices("gpu")[0]
    args = [W.astype(np.float32), X0.astype(np.float32), XS.astype(np.float32)]

    def run(device, fn):
        return fn(*[flamefx.device_put(a, device) for a in args])

    def loops(w, x0, xs):
        a = rnn_loss(w, x0, xs)
        b = lax.while_loop(lambda c: c[1] < 4, lambda c: (c[0] * w + 0.1, c[1] + 1), (x0, 0))[0]
        c = lax.cond(fnp.sum(x0) > 0, lambda x: fnp.sin(x), lambda x: fnp.cos(x), x0)
        return a, b, c

    for fn in [loops, flamefx.jit(loops), flamefx.grad(rnn_loss, argnums=(0, 1, 2))]:
        out_gpu, out_cpu = run(gpu, fn), run(cpu, fn)
        for g, c in zip(out_gpu, out_cpu):
            assert g.device.platform == "gpu"
            _close(g, c, tol=2e-4)
