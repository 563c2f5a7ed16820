"""jit's CPU plan (flamefx/kernels/cpu_plan.py) against the plain executable (every equation
through its primitive's impl): C1-C6-like programs agree, buffers the plan reuses never
reach the caller, arguments are never written, and what the fast calls cannot do falls back
to the impl."""

from __future__ import annotations

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax, nn
from flamefx.kernels import cpu_plan, cpu_steps, cpu_threads
from flamefx.kernels.executor import CpuExecutable


def _both(fn, *args):
    """``fn`` jitted twice, compiled as a plan and as the plain executable; the results of
    calling each on ``args`` (as NumPy, pytrees flattened) and the plan itself."""
    results = []
    for enabled in (True, False):
        previous, cpu_plan.ENABLED = cpu_plan.ENABLED, enabled
        try:
            out = flamefx.jit(fn)(*args)
        finally:
            cpu_plan.ENABLED = previous
        results.append([np.asarray(x) for x in flamefx.tree_util.tree_leaves(out)])
    return results


def _assert_agree(fn, *args, rtol=1e-5, atol=1e-6):
    fast, plain = _both(fn, *args)
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(fnp.asarray(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32)),
             fnp.asarray(rng.normal(0, 0.1, b).astype(np.float32)))
            for a, b in zip(sizes[:-1], sizes[1:])]


def _mlp_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = nn.relu(h)
    return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(h, y))


def _data(n, dim, classes, seed=1):
    rng = np.random.default_rng(seed)
    return (fnp.asarray(rng.normal(size=(n, dim)).astype(np.float32)),
            fnp.asarray(rng.integers(0, classes, n).astype(np.int32)))


def test_adam_step_agrees():  # C1
    from flamefx import optim
    params = _mlp([8, 16, 16, 3])
    x, y = _data(5, 8, 3)
    opt = optim.adam(1e-2)

    def step(params, state, x, y):
        value, grads = flamefx.value_and_grad(_mlp_loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state, value

    _assert_agree(step, params, opt.init(params), x, y)


def test_tanh_matmul_grad_agrees():  # C2
    rng = np.random.default_rng(2)
    x = fnp.asarray(rng.normal(size=(6, 7)).astype(np.float32))
    w = fnp.asarray(rng.normal(size=(7, 5)).astype(np.float32))
    _assert_agree(flamefx.grad(lambda w, x: fnp.sum(fnp.tanh(x @ w))), w, x)


def test_tiny_call_agrees_and_elides_broadcasts():  # C3
    _assert_agree(lambda x: x * 2.0 + 1.0, fnp.arange(5.0))
    closed = flamefx.make_jaxpr(lambda x: x * 2.0 + 1.0)(fnp.ones(5))
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    assert plan.kinds.count("elided") == 2 and plan.kernel_count == 2


def test_per_example_grads_agree():  # C5
    params = _mlp([6, 8, 3])
    x, y = _data(4, 6, 3)

    def loss(params, x, y):
        return _mlp_loss(params, x[None], y[None])

    _assert_agree(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0)), params, x, y)


def test_scan_rnn_grad_agrees():  # C6
    rng = np.random.default_rng(3)
    wx, wh = (fnp.asarray(rng.normal(0, 0.5, s).astype(np.float32)) for s in [(3, 4), (4, 4)])
    xs = fnp.asarray(rng.normal(size=(6, 2, 3)).astype(np.float32))

    def loss(wx, wh, xs):
        def cell(h, x):
            h = fnp.tanh(x @ wx + h @ wh)
            return h, h
        _, hs = lax.scan(cell, fnp.zeros((2, 4)), xs)
        return fnp.mean(hs * hs)

    _assert_agree(flamefx.grad(loss, argnums=(0, 1)), wx, wh, xs)


def test_products_of_every_layout_agree():
    rng = np.random.default_rng(4)
    a = fnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    b = fnp.asarray(rng.normal(size=(4, 5)).astype(np.float32))
    batch_a = fnp.asarray(rng.normal(size=(2, 3, 4)).astype(np.float32))
    batch_b = fnp.asarray(rng.normal(size=(2, 4, 5)).astype(np.float32))
    v = fnp.asarray(rng.normal(size=(4,)).astype(np.float32))
    _assert_agree(lambda a, b: (a @ b, a.T.T @ b, (b.T @ a.T).T, a @ v, v @ b), a, b)
    _assert_agree(lambda x, y: (fnp.einsum("bij,bjk->bik", x, y),
                                fnp.einsum("bji,bjk->bik", fnp.swapaxes(x, 1, 2), y),
                                fnp.einsum("bij,bkj->bik", x, fnp.swapaxes(y, 1, 2))),
                  batch_a, batch_b)


def test_reductions_selects_casts_agree():
    rng = np.random.default_rng(5)
    x = fnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    mask = fnp.asarray(rng.random((3, 4)) > 0.5)

    def f(x, mask):
        return (fnp.sum(x, axis=0), fnp.max(x, axis=1), fnp.min(x), fnp.where(mask, x, -x),
                mask.astype(fnp.float32) * x, x.astype(fnp.float64) if flamefx.config.read(
                    "enable_x64") else x, fnp.maximum(x, 0.0) / (1.0 + fnp.exp(-x)))

    _assert_agree(f, x, mask)


def test_what_the_fast_calls_cannot_do_falls_back():
    # Integer division rounds toward zero in lax (NumPy's floor_divide does not); float16
    # computes in float32; both stay with their primitive's impl.
    a = fnp.asarray(np.array([-7, 7, -8], np.int32))
    b = fnp.asarray(np.array([2, -2, 3], np.int32))
    closed = flamefx.make_jaxpr(lambda a, b: lax.div(a, b))(a, b)
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    assert plan.kinds == ["fallback"]
    assert plan([np.asarray(a), np.asarray(b)])[0].tolist() == [-3, -3, -2]
    h = fnp.asarray(np.array([1.0, 2.0], np.float16))
    closed = flamefx.make_jaxpr(lambda h: fnp.exp(h) + h)(h)
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    assert set(plan.kinds) == {"fallback"}
    out = plan([np.asarray(h)])[0]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, np.exp(np.float32([1, 2])) + [1, 2], rtol=1e-3)
    # A fast call next to a fallback: the cumsum runs its impl between two ufuncs.
    _assert_agree(lambda x: fnp.cumsum(x * 2.0) + 1.0, fnp.arange(6.0))
    kinds = cpu_plan.CpuPlan(flamefx.make_jaxpr(
        lambda x: fnp.cumsum(x * 2.0) + 1.0)(fnp.arange(6.0)).jaxpr).kinds
    assert "fallback" in kinds and "ufunc" in kinds


def test_outputs_are_fresh_and_arguments_untouched():
    # The reshape (an impl returning a view) and the output itself: neither may be a buffer
    # the plan writes again on the next call.
    f = flamefx.jit(lambda x, w: ((fnp.tanh(x @ w) * 2.0).reshape(-1), fnp.sum(x * w.T)))
    rng = np.random.default_rng(6)
    x1, x2 = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2))
    w = rng.normal(size=(4, 3)).astype(np.float32)
    saved = [x1.copy(), x2.copy(), w.copy()]
    first = f(fnp.asarray(x1), fnp.asarray(w))
    kept = [np.asarray(o).copy() for o in first]
    second = f(fnp.asarray(x2), fnp.asarray(w))
    for o, k in zip(first, kept):
        np.testing.assert_array_equal(np.asarray(o), k)
    assert not np.allclose(np.asarray(second[0]), kept[0])
    for a, b in zip([x1, x2, w], saved):
        np.testing.assert_array_equal(a, b)


def test_reused_buffers_never_alias_a_live_value():
    # A long chain of same-shaped temporaries: the plan reuses a few buffers for all of them.
    def chain(x):
        y = x
        for k in range(12):
            y = fnp.sin(y) * (k + 1.0) + fnp.cos(x) * y
        return y, y * x
    x = fnp.asarray(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    _assert_agree(chain, x)
    plan = cpu_plan.CpuPlan(flamefx.make_jaxpr(chain)(x).jaxpr)
    assert 0 < plan.n_buffers <= 4


def test_elementwise_calls_write_over_operands_read_for_the_last_time():
    # exp(a) + 1 overwrites a, then b + b.T reads b through a transposed view as well
    # (NumPy's ufuncs copy when an output overlaps an input in another layout).
    def f(x):
        b = fnp.exp(x * 2.0) + 1.0
        return fnp.sqrt(b + b.T) * 3.0

    x = fnp.asarray(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4))
    _assert_agree(f, x)
    plan = cpu_plan.CpuPlan(flamefx.make_jaxpr(f)(x).jaxpr)
    assert plan.n_buffers == 1  # x * 2, exp, + 1, + b.T, sqrt: one array in place


def test_donated_and_plain_arguments_untouched():
    f = flamefx.jit(lambda p, g: (p - 0.1 * g, g * 2.0), donate_argnums=0)
    p = np.ones((4, 4), np.float32)
    g = np.full((4, 4), 3.0, np.float32)
    p_arr, g_arr = fnp.asarray(p), fnp.asarray(g)
    new_p, twice = f(p_arr, g_arr)
    np.testing.assert_allclose(np.asarray(new_p), 0.7, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g_arr), g)
    again, _ = f(new_p, g_arr)
    np.testing.assert_allclose(np.asarray(again), 0.4, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(twice), 6.0)


def test_reentered_plan_runs_the_plain_executable():
    closed = flamefx.make_jaxpr(lambda x: fnp.exp(x) * 2.0)(fnp.ones(3))
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    x = np.arange(3, dtype=np.float32)
    with plan._lock:  # as if the plan were running already
        busy = plan([x])[0]
    assert isinstance(plan._plain, CpuExecutable)
    np.testing.assert_allclose(busy, plan([x])[0])


def test_plain_path_is_compiled_when_disabled():
    previous, cpu_plan.ENABLED = cpu_plan.ENABLED, False
    try:
        f = flamefx.jit(lambda x: x + 1.0)
        f(fnp.ones(2))
        (entry,) = f._cache.values()
        assert isinstance(entry.executable.run, CpuExecutable)
    finally:
        cpu_plan.ENABLED = previous


def test_blas_thread_count_restored():
    blas = cpu_plan.blas_threads()
    if not blas.available:
        pytest.skip("NumPy does not run OpenBLAS here")
    before = blas.get()
    f = flamefx.jit(lambda a, b: a @ b)
    f(fnp.ones((4, 4)), fnp.ones((4, 4)))
    assert blas.get() == before


def test_select_blend_keeps_every_bit():
    # NaN payloads, -0.0 and infinities pass through the bitwise blend unchanged; an int
    # select and a scalar case (an elided broadcast) too; a 0.0 case (one bitwise and) on
    # either side, and -0.0 (not all bits zero: the full blend).
    x = np.array([np.nan, -0.0, np.inf, -np.inf, 1.5, -2.0], np.float32)
    y = np.array([0.0, 3.0, np.nan, -0.0, np.inf, 7.0], np.float32)
    m = np.array([True, True, False, True, False, False])
    f = lambda m, x, y: (fnp.where(m, x, y), fnp.where(m, x, 0.0),  # noqa: E731
                         fnp.where(m, (x > 0).astype(fnp.int32), 5), fnp.where(m, 0.0, y),
                         fnp.where(m, x, -0.0), fnp.where(m, (x > 0).astype(fnp.int32), 0))
    fast, plain = _both(f, fnp.asarray(m), fnp.asarray(x), fnp.asarray(y))
    for a, b in zip(fast, plain):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    np.testing.assert_array_equal(fast[0].view(np.uint32), np.where(m, x, y).view(np.uint32))


def test_multiplications_by_one_are_dropped():
    # The gradient of a sum multiplies by a broadcast 1.0: on the CPU a pass over the array.
    from flamefx.transforms import passes
    w, x = fnp.ones((3, 3)), fnp.ones((2, 3))
    closed = flamefx.make_jaxpr(flamefx.grad(lambda w, x: fnp.sum(fnp.tanh(x @ w))))(w, x)
    names = [e.prim.name for e in passes.optimize(closed).eqns]
    assert names.count("mul") == 1 and "broadcast_in_dim" in names  # tanh^2 only; 1 - tanh^2
    kept = flamefx.make_jaxpr(lambda x: (x * 1.0, x * 2.0, x * True))(fnp.arange(3.0))
    assert [e.prim.name for e in passes.optimize(kept).eqns] == ["broadcast_in_dim", "mul"]
    _assert_agree(lambda x: (x * 1.0 * fnp.ones(3), -0.0 * fnp.ones(3) * 1.0), fnp.arange(3.0))


def test_floating_point_warnings_are_silent_and_errstate_restored():
    import warnings
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = flamefx.jit(lambda x: (fnp.log(x) / x, fnp.exp(x * 1e30)))(fnp.asarray([0.0, 1.0]))
    assert np.geterr() == before
    assert np.asarray(out[0])[0] == -np.inf and np.asarray(out[1])[1] == np.inf


@pytest.mark.parametrize("strides,padding,lhs_dil,rhs_dil,groups", [
    ((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),
    ((2, 2), ((1, 0), (0, 1)), (1, 1), (1, 1), 2),
    ((1, 2), ((2, 2), (-1, 1)), (2, 1), (1, 2), 1),
])
def test_convolutions_through_blas_agree(strides, padding, lhs_dil, rhs_dil, groups):
    # Forward, input gradient (an lhs-dilated conv for strides) and weight gradient: the
    # im2col products of cpu_conv.py against the primitives' tap-by-tap impls.
    rng = np.random.default_rng(7)
    x = fnp.asarray(rng.normal(size=(2, 4, 7, 6)).astype(np.float32))
    w = fnp.asarray(rng.normal(size=(6, 4 // groups, 3, 2)).astype(np.float32))

    def loss(x, w):
        y = lax.conv_general_dilated(x, w, strides, padding, lhs_dil, rhs_dil,
                                     feature_group_count=groups)
        return fnp.sum(fnp.tanh(y)), y

    f = flamefx.grad(lambda x, w: loss(x, w)[0], argnums=(0, 1))
    _assert_agree(lambda x, w: (loss(x, w)[1], f(x, w)), x, w, rtol=1e-4, atol=1e-5)
    kinds = cpu_plan.CpuPlan(flamefx.make_jaxpr(f)(x, w).jaxpr).kinds
    assert kinds.count("conv") == 3


def test_plans_with_large_products_move_to_more_threads_only_when_clearly_faster(
        monkeypatch):
    monkeypatch.setattr(cpu_threads, "cores_taken", lambda: 0)
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 2)

    def run(choice, calls, seconds):  # seconds: thread count -> the time of a call
        picks = []
        for _ in range(calls):
            picks.append(choice.pick())
            choice.record(picks[-1], seconds[picks[-1]])
        return picks

    # Two threads barely faster: a burst after 8 calls loses at its second call (its first
    # is not judged), the next comes 16 later.
    choice = cpu_threads.PlanThreads(2)
    assert [k for k, p in enumerate(run(choice, 40, {1: 1.0, 2: 0.9})) if p == 2] == \
        [7, 8, 24, 25]
    choice = cpu_threads.PlanThreads(2)  # clearly faster (a quiet machine): kept
    assert run(choice, 40, {1: 1.0, 2: 0.5})[7:] == [2] * 33
    assert run(choice, 10, {1: 1.0, 2: 1.1})[-1] == 2  # a call a little slower: kept
    assert run(choice, 1, {2: 5.0}) + run(choice, 5, {2: 0.5}) == [2] * 6  # a spike: kept
    picks = run(choice, 10, {1: 1.0, 2: 5.0})  # a core got busy: two slow calls, then one
    assert picks == [2, 2] + [1] * 8
    monkeypatch.setattr(cpu_threads, "cores_taken", lambda: 1)  # another process runs
    choice = cpu_threads.PlanThreads(2)
    assert run(choice, 100, {1: 1.0, 2: 0.5}) == [1] * 100  # no burst is tried
    monkeypatch.setattr(cpu_threads, "cores_taken", lambda: 0)  # it stopped: seen soon
    assert run(choice, 20, {1: 1.0, 2: 0.5})[-5:] == [2] * 5
    monkeypatch.undo()
    assert cpu_threads.cores_taken() >= 0  # read from /proc/loadavg (0 without it)
    rng = np.random.default_rng(8)
    a, b = (fnp.asarray(rng.normal(size=(512, 512)).astype(np.float32)) for _ in range(2))
    _assert_agree(lambda a, b: a @ b, a, b, rtol=1e-4, atol=1e-4)


def test_scipy_ufuncs_remainders_and_reshapes_agree():
    x = fnp.asarray(np.linspace(-0.9, 0.9, 12, dtype=np.float32).reshape(3, 4))
    f = lambda x: (nn.sigmoid(x), lax.erf_inv(x), fnp.fmod(x * 7.0, 2.0),  # noqa: E731
                   (x * 2.0).reshape(4, 3).T.reshape(12) + 1.0)
    _assert_agree(f, x)
    kinds = cpu_plan.CpuPlan(flamefx.make_jaxpr(f)(x).jaxpr).kinds
    assert "view" in kinds and "fallback" in kinds  # the transpose stays with its impl


def test_rows_times_a_matrix_is_one_product():
    # vmap of a layer contracts (batch, 1, k) with (k, n): one GEMM over the flattened rows.
    rng = np.random.default_rng(9)
    x = fnp.asarray(rng.normal(size=(5, 1, 4)).astype(np.float32))
    w = fnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))
    f = lambda x, w: (lax.dot_general(x, w, (((2,), (0,)), ((), ()))),  # noqa: E731
                      lax.dot_general(fnp.swapaxes(x, 0, 1), w.T, (((2,), (1,)), ((), ()))))
    _assert_agree(f, x, w)
    assert cpu_plan.CpuPlan(flamefx.make_jaxpr(f)(x, w).jaxpr).kinds.count("matmul") == 2


def test_profile_times_every_step():
    closed = flamefx.make_jaxpr(lambda a, b: fnp.tanh(a @ b) + 1.0)(fnp.ones((3, 3)),
                                                                   fnp.ones((3, 3)))
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    rows = plan.profile([np.ones((3, 3), np.float32)] * 2, repeats=3)
    assert [r["kind"] for r in rows] == ["matmul", "ufunc", "ufunc"]
    assert all(r["seconds"] >= 0 for r in rows) and rows[0]["what"].startswith("dot_general")


def test_large_outputs_keep_one_array_for_the_next_call(monkeypatch):
    monkeypatch.setattr(cpu_steps, "BUFFER_MAX_BYTES", 16)  # (4, 4) float32 counts as large
    closed = flamefx.make_jaxpr(lambda x: x * 2.0)(fnp.ones((4, 4)))
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    x = np.ones((4, 4), np.float32)
    first = plan([x])[0]
    held = plan([x])[0]  # the first is held: a new array, not pooled
    assert held is not first and not np.shares_memory(held, first)
    first_id = id(first)
    del first
    again = plan([x + 1])[0]  # the pooled one came back
    assert id(again) == first_id
    np.testing.assert_array_equal(again, (x + 1) * 2.0)
    np.testing.assert_array_equal(held, x * 2.0)


def test_outputs_nobody_holds_are_recycled_and_held_ones_never():
    closed = flamefx.make_jaxpr(lambda x: (x * 2.0, (x + 1.0).reshape(-1)))(fnp.ones((4, 4)))
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    x = np.ones((4, 4), np.float32)
    held = plan([x])
    held_ids = {id(a) for a in held} | {id(held[1].base)}
    kept = [a.copy() for a in held]
    seen = set()
    for k in range(5):  # each call's outputs dropped: the pool hands them back
        outs = plan([x * k])
        assert not {id(a) for a in outs} & held_ids
        np.testing.assert_array_equal(outs[0], x * k * 2.0)
        seen |= {id(outs[0])}
        del outs
    assert len(seen) <= cpu_steps._Recycled.KEEP
    for a, b in zip(held, kept):
        np.testing.assert_array_equal(a, b)
    view = plan([x])[1][:2]  # a view of an output keeps its memory held
    for _ in range(3):
        plan([x * 0.0])
    np.testing.assert_array_equal(view, 2.0)


def test_values_handed_to_a_callback_are_never_rewritten():
    # A callback may keep what it is given: that value gets fresh memory every call.
    seen = []
    f = flamefx.jit(lambda x: (flamefx.debug.callback(seen.append, x * 2.0), x * 3.0)[1])
    f(fnp.ones(4))
    f(fnp.full(4, 5.0))
    np.testing.assert_array_equal(np.asarray(seen[0]), 2.0)
    np.testing.assert_array_equal(np.asarray(seen[1]), 10.0)


def test_scan_loop_agrees_with_calls_step_by_step():
    # A body with an invariant matrix read transposed, a carry passed through unchanged, a
    # y that is the carry input, and a 0-d xs.
    from flamefx.jaxpr import hoist_consts
    from flamefx.transforms import passes
    rng = np.random.default_rng(11)
    w = rng.normal(size=(4, 4)).astype(np.float32)
    h0, k0 = rng.normal(size=(3, 4)).astype(np.float32), np.float32(7.0)
    xs, ss = rng.normal(size=(5, 3, 4)).astype(np.float32), np.arange(5, dtype=np.float32)

    def body(w, h, k, x, s):
        h_new = fnp.tanh(lax.dot_general(h, w, (((1,), (1,)), ((), ()))) + x * s)  # h @ w.T
        return h_new, k, h, h_new * 2.0, s + k

    jaxpr, consts = hoist_consts(passes.optimize(flamefx.make_jaxpr(body)(w, h0, k0, xs[0],
                                                                          ss[0])))
    assert not consts
    plan = cpu_plan.CpuPlan(jaxpr)
    prologue, _, direct, copied, batched = plan._loop_steps(1, 2)
    assert not batched  # h @ w.T reads the carry, not an x
    assert len(prologue) == 1  # w.T made contiguous once per loop
    # h_new * 2 and s + k are written into their rows; h (an input handed out) is copied.
    assert [j for j, _ in direct] == [1, 2] and [j for j, _ in copied] == [0]
    plain = CpuExecutable(jaxpr)
    before = [a.copy() for a in (w, h0, xs, ss)]
    for reverse in (False, True):
        got = plan.scan([w], [h0, k0], [xs, ss], length=5, reverse=reverse)
        carry, ys = [h0, k0], [[None] * 5 for _ in range(3)]
        for i in (reversed(range(5)) if reverse else range(5)):
            outs = plain([w, *carry, xs[i], ss[i, ...]])
            carry = outs[:2]
            for y, out in zip(ys, outs[2:]):
                y[i] = out
        for a, b in zip(got, carry + [np.stack(y) for y in ys]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip((w, h0, xs, ss), before):
        np.testing.assert_array_equal(a, b)
    with plan._lock:  # running already: the caller goes step by step
        assert plan.scan([w], [h0, k0], [xs, ss], length=5, reverse=False) is None


def test_scan_carry_that_is_a_y_is_its_row_and_comes_back_unshared():
    # An RNN's ``return h, h``: the y's row is the next carry; the final carry is a copy.
    from flamefx.jaxpr import hoist_consts
    from flamefx.transforms import passes
    w = np.full((2, 2), 0.5, np.float32)
    xs = np.arange(6, dtype=np.float32).reshape(3, 2)

    def body(w, h, x):
        h = fnp.tanh(h @ w + x)
        return h, h

    jaxpr, _ = hoist_consts(passes.optimize(flamefx.make_jaxpr(body)(w, xs[0], xs[0])))
    plan = cpu_plan.CpuPlan(jaxpr)
    _, steps, direct, _, batched = plan._loop_steps(1, 1)
    assert [j for j, _ in direct] == [0] and not batched  # h @ w reads the carry
    h, hs = plan.scan([w], [np.zeros(2, np.float32)], [xs], length=3, reverse=False)
    expect, want = np.zeros(2, np.float32), []
    for x in xs:
        expect = np.tanh(expect @ w + x)
        want.append(expect)
    np.testing.assert_allclose(hs, np.stack(want), rtol=1e-6)
    np.testing.assert_allclose(h, want[-1], rtol=1e-6)
    assert not np.shares_memory(h, hs)


def test_scan_products_of_xs_by_invariants_run_once_before_the_loop():
    from flamefx.jaxpr import hoist_consts
    from flamefx.transforms import passes
    rng = np.random.default_rng(12)
    u, v = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    w = rng.normal(size=(4, 4)).astype(np.float32) / 2
    h0, xs = np.zeros((2, 4), np.float32), rng.normal(size=(5, 2, 3)).astype(np.float32)

    def body(u, v, w, h, x):  # x @ u, and x @ v.T (an invariant read transposed)
        xv = lax.dot_general(x, v, (((1,), (1,)), ((), ())))
        h = fnp.tanh(h @ w + x @ u + xv)
        return h, xv * 2.0

    jaxpr, _ = hoist_consts(passes.optimize(flamefx.make_jaxpr(body)(u, v, w, h0, xs[0])))
    plan = cpu_plan.CpuPlan(jaxpr)
    batched = plan._loop_steps(3, 1)[4]
    assert sorted(tw for *_, tw, _ in batched) == [False, True]
    for reverse in (False, True):
        h, xvs = plan.scan([u, v, w], [h0], [xs], length=5, reverse=reverse)
        expect = h0.astype(np.float64)
        for i in (reversed(range(5)) if reverse else range(5)):
            expect = np.tanh(expect @ w + xs[i] @ u + xs[i] @ v.T)
        np.testing.assert_allclose(h, expect, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xvs, 2 * xs @ v.T, rtol=1e-5, atol=1e-5)
    assert [a.shape for a in plan.scan([u, v, w], [h0], [xs[:0]], length=0,
                                       reverse=False)] == [(2, 4), (0, 2, 4)]


def test_scan_inside_a_call_on_many_threads_runs_its_small_products_on_one(monkeypatch):
    class Blas:  # OpenBLAS's thread count, as another plan's call on two threads left it
        available, count, sets = True, 2, []

        def get(self):
            return self.count

        def set(self, n):
            self.sets.append(n)
            self.count = n

    blas = Blas()
    monkeypatch.setattr(cpu_plan, "blas_threads", lambda: blas)
    monkeypatch.setattr(cpu_plan, "_outermost", [True])  # inside the outer call
    w, xs = np.eye(4, dtype=np.float32), np.ones((3, 2, 4), np.float32)
    closed = flamefx.make_jaxpr(lambda w, h, x: (fnp.tanh(h @ w) + x, h))(w, xs[0], xs[0])
    plan = cpu_plan.CpuPlan(closed.jaxpr)
    h, _ = plan.scan([w], [xs[0]], [xs], length=3, reverse=False)
    assert blas.sets == [1, 2] and h.shape == (2, 4)


def test_scan_of_a_running_plan_runs_step_by_step():
    # The body's callback runs the same scan again (once) while its loop is running.
    inner = []

    def again(c):
        if not inner:
            inner.append(None)
            inner[0] = g(c)[0]

    def body(c, x):
        flamefx.debug.callback(again, c)
        return c + x, c

    g = flamefx.jit(lambda c: lax.scan(body, c, fnp.arange(3.0)))
    c, ys = g(fnp.asarray(1.0))
    np.testing.assert_allclose(np.asarray(c), 4.0)
    np.testing.assert_allclose(np.asarray(ys), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(np.asarray(inner[0]), 4.0)


def test_constant_work_runs_once_at_compile_time():
    # An iota read by the computation (C1's take_along_axis builds one) becomes a constant
    # of the plan; one that is an output is made on every call (the caller owns it).
    def f(x):
        index = lax.broadcast_in_dim(lax.iota(fnp.int32, 4), (4, 3), (0,))
        return x * index.astype(fnp.float32) + lax.stop_gradient(x), index

    x = fnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    _assert_agree(f, x)
    plan = cpu_plan.CpuPlan(flamefx.make_jaxpr(lambda x: f(x)[0])(x).jaxpr)
    assert not any(kind == "fallback" for kind, _ in plan.labels)  # no iota, no impl call
    plan = cpu_plan.CpuPlan(flamefx.make_jaxpr(f)(x).jaxpr)
    first, second = plan([np.asarray(x)])[1], plan([np.asarray(x)])[1]
    assert first is not second and [w for _, w in plan.labels if "broadcast_in_dim" in w]
