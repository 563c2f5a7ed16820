"""jit: caching, statics, donation, errors, composition with AD and vmap, GPU fusion.

The direct cuBLAS calls' argument marshalling is tested in test_cublas.py."""

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import (
    ConcretizationError,
    DeletedArrayError,
    FlamefxValueError,
    UnexpectedTracerError,
)
from flamefx.transforms import jit as jit_module

RNG = np.random.default_rng(0)


def _x(*shape):
    return fnp.asarray(RNG.standard_normal(shape).astype(np.float32))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + fnp.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def w4_loss(x):
    return fnp.sum(gelu_tanh(1.5 * x + 0.25))


def mlp_loss(params, x, y):
    w1, b1, w2 = params
    h = fnp.tanh(x @ w1 + b1)
    logits = h @ w2
    logits = logits - fnp.max(logits, axis=1, keepdims=True)
    logp = logits - fnp.log(fnp.sum(fnp.exp(logits), axis=1, keepdims=True))
    return -fnp.mean(fnp.sum(logp * y, axis=1))


def _mlp_args():
    params = (_x(4, 8), _x(8), _x(8, 3))
    y = fnp.asarray(np.eye(3, dtype=np.float32)[RNG.integers(0, 3, 5)])
    return params, _x(5, 4), y


def _mlp_sgd_step(params, x, y):
    grads = flamefx.grad(mlp_loss)(params, x, y)
    return flamefx.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)


def _plain_sgd_steps(params, x, y, n):
    """``[params, then after each of n SGD steps]``, jitted without CUDA graphs."""
    with flamefx.config.override("cuda_graphs", False):
        steps = [params]
        for _ in range(n):
            steps.append(flamefx.jit(_mlp_sgd_step)(steps[-1], x, y))
    return steps


def _executable(jitted):
    """The executable of a jitted function's only cache entry and device."""
    entry = next(iter(jitted._cache.values()))
    return next(iter(entry.program.executables.values()))


def layer_norm(x):
    centred = x - fnp.mean(x, axis=-1, keepdims=True)
    return centred / fnp.sqrt(fnp.mean(centred * centred, axis=-1, keepdims=True) + 1e-5)


def softmax_weighted_sum(s, v):
    from flamefx import nn
    return fnp.sum(nn.softmax(s / 8.0, axis=-1) * v)


PROGRAMS = {
    "elementwise": (lambda x: fnp.exp(fnp.sin(x) * 2.0 + 1.0) - x, lambda: (_x(7, 3),)),
    "w4": (w4_loss, lambda: (_x(1000),)),
    "softmax": (lambda x: fnp.exp(x) / fnp.sum(fnp.exp(x), axis=-1, keepdims=True),
                lambda: (_x(4, 6),)),
    "matmul_bias": (lambda a, b, c: fnp.maximum(a @ b + c, 0.0),
                    lambda: (_x(3, 4), _x(4, 5), _x(5))),
    "reductions": (lambda x: (fnp.max(x, axis=0), fnp.mean(x), fnp.min(x * x, axis=1)),
                   lambda: (_x(5, 6),)),
    "mlp": (mlp_loss, _mlp_args),
    "indexing": (lambda x: x[1:, ::2].T + x[0, 0], lambda: (_x(4, 6),)),
    "pytree_out": (lambda x: {"a": x * 2.0, "b": [x.sum(), (x - 1.0,)]}, lambda: (_x(3),)),
    # rows longer than a block, each walked several times by one kernel
    "layer_norm": (layer_norm, lambda: (_x(5, 300),)),
    "softmax_grad": (flamefx.grad(softmax_weighted_sum, argnums=(0, 1)),
                     lambda: (_x(3, 300) * 4.0, _x(3, 300))),
}


def _assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    got_leaves, got_tree = flamefx.tree_util.tree_flatten(got)
    want_leaves, want_tree = flamefx.tree_util.tree_flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_jit_equals_eager(name):
    fun, make_args = PROGRAMS[name]
    args = make_args()
    _assert_trees_close(flamefx.jit(fun)(*args), fun(*args))


def test_body_runs_once_per_signature():
    calls = []

    def f(x, y):
        calls.append(1)
        return x * y + 1.0

    jf = flamefx.jit(f)
    for _ in range(3):
        jf(_x(3), _x(3))
    assert len(calls) == 1
    jf(_x(4), _x(4))  # a new shape retraces
    assert len(calls) == 2
    jf(_x(3).astype(np.float16), _x(3).astype(np.float16))  # a new dtype too
    assert len(calls) == 3
    jf(_x(3), 2.0)  # a weak scalar is its own signature
    jf(_x(3), 3.0)  # ... and its value is not part of it
    assert len(calls) == 4


def test_static_arguments_retrace_on_new_values():
    calls = []

    def f(x, n, *, mode):
        calls.append((n, mode))
        return x * n if mode == "mul" else x + n

    jf = flamefx.jit(f, static_argnums=(1,), static_argnames=("mode",))
    x = fnp.arange(3.0)
    assert jf(x, 2, mode="mul").tolist() == [0.0, 2.0, 4.0]
    assert jf(x, 2, mode="mul").tolist() == [0.0, 2.0, 4.0]
    assert jf(x, 3, mode="mul").tolist() == [0.0, 3.0, 6.0]
    assert jf(x, 3, mode="add").tolist() == [3.0, 4.0, 5.0]
    assert calls == [(2, "mul"), (3, "mul"), (3, "add")]


def test_static_argument_by_name_or_position():
    jf = flamefx.jit(lambda x, n: x * n, static_argnames=("n",))
    assert jf(fnp.ones(2), 4).tolist() == [4.0, 4.0]
    assert jf(fnp.ones(2), n=5).tolist() == [5.0, 5.0]


def test_unhashable_static_argument_error_names_it():
    jf = flamefx.jit(lambda x, sizes: x * len(sizes), static_argnums=(1,))
    with pytest.raises(FlamefxValueError, match="'sizes'.*unhashable.*list"):
        jf(fnp.ones(2), [1, 2])


def test_donated_argument_is_deleted_and_reading_it_raises():
    jf = flamefx.jit(lambda p, g: p - 0.1 * g, donate_argnums=(0,))
    p, g = fnp.ones(3), fnp.ones(3)
    new_p = jf(p, g)
    np.testing.assert_allclose(np.asarray(new_p), 0.9)
    assert p.is_deleted() and not g.is_deleted()
    with pytest.raises(DeletedArrayError, match="donated"):
        np.asarray(p)
    with pytest.raises(DeletedArrayError):
        jf(p, g)


def test_donated_pytree_leaves_are_all_deleted():
    jf = flamefx.jit(lambda params: flamefx.tree_util.tree_map(lambda a: a * 2.0, params),
                     donate_argnums=0)
    params = {"w": fnp.ones(2), "b": fnp.zeros(1)}
    out = jf(params)
    assert out["w"].tolist() == [2.0, 2.0]
    assert params["w"].is_deleted() and params["b"].is_deleted()


def test_closed_over_arrays_become_constants():
    table = fnp.arange(4.0)
    jf = flamefx.jit(lambda x: x * table)
    assert jf(fnp.ones(4)).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert "f32[4]" in jf.lower(fnp.ones(4)).as_text()


def test_python_control_flow_on_traced_value_points_at_user_line():
    def f(x):
        if fnp.sum(x) > 0:  # the line the error must name
            return x
        return -x

    with pytest.raises(ConcretizationError) as info:
        flamefx.jit(f)(fnp.ones(3))
    message = str(info.value)
    assert f"test_jit.py:{f.__code__.co_firstlineno + 1}" in message
    assert "lax.cond" in message and "static_argnums" in message


def test_leaked_tracer_used_later_raises():
    leaked = []

    @flamefx.jit
    def f(x):
        leaked.append(x * 2.0)
        return x

    f(fnp.ones(2))
    with pytest.raises(UnexpectedTracerError, match="escaped"):
        leaked[0] + 1.0


def test_log_compiles_names_the_changed_argument(caplog):
    jf = flamefx.jit(lambda x, y: fnp.sum(x) + fnp.sum(y))
    with flamefx.config.override("log_compiles", True), caplog.at_level(logging.WARNING,
                                                                         "flamefx.jit"):
        jf(fnp.ones(3), fnp.ones(3))
        jf(fnp.ones(3), fnp.ones(3))
        jf(fnp.ones(3), fnp.ones(4))
    messages = [r.getMessage() for r in caplog.records if r.name == "flamefx.jit"]
    assert len(messages) == 2, messages
    assert "first call" in messages[0]
    assert "'y' changed from f32[3] to f32[4]" in messages[1]


def test_disable_jit_runs_eagerly():
    calls = []

    def f(x):
        calls.append(1)
        return x + 1.0

    jf = flamefx.jit(f)
    with flamefx.config.override("disable_jit", True):
        jf(fnp.ones(1))
        jf(fnp.ones(1))
    assert len(calls) == 2


# --- composition --------------------------------------------------------------------------


def test_grad_of_jit_and_jit_of_grad():
    params, x, y = _mlp_args()
    want = flamefx.grad(mlp_loss)(params, x, y)
    _assert_trees_close(flamefx.grad(flamefx.jit(mlp_loss))(params, x, y), want, rtol=1e-4)
    _assert_trees_close(flamefx.jit(flamefx.grad(mlp_loss))(params, x, y), want, rtol=1e-4)
    _assert_trees_close(flamefx.jit(flamefx.grad(flamefx.jit(mlp_loss)))(params, x, y), want,
                        rtol=1e-4)


def test_grad_of_jit_runs_a_compiled_backward():
    calls = []

    def f(x):
        calls.append(1)
        return fnp.sum(fnp.sin(x) * x)

    g = flamefx.grad(flamefx.jit(f))
    x = _x(5)
    g(x)
    g(x)
    # The backward program is derived from the cached jaxpr, not from the Python body.
    assert len(calls) == 1
    np.testing.assert_allclose(np.asarray(g(x)), np.asarray(fnp.cos(x) * x + fnp.sin(x)),
                               rtol=1e-5)


def test_grad_of_grad_through_jit():
    f = flamefx.jit(lambda x: fnp.sum(x ** 3))
    x = fnp.asarray([1.0, 2.0])
    hvp = flamefx.grad(lambda x: fnp.sum(flamefx.grad(f)(x)))(x)
    np.testing.assert_allclose(np.asarray(hvp), 6.0 * np.asarray(x), rtol=1e-6)


def test_jvp_of_jit():
    def f(x):
        return fnp.sin(x) * 2.0

    x, t = _x(4), _x(4)
    _assert_trees_close(flamefx.jvp(flamefx.jit(f), (x,), (t,)), flamefx.jvp(f, (x,), (t,)))


def test_vmap_of_jit_and_jit_of_vmap():
    def f(a, b):
        return fnp.sum(fnp.tanh(a) * b) + a[0]

    a, b = _x(6, 3), _x(3)
    want = flamefx.vmap(f, in_axes=(0, None))(a, b)
    _assert_trees_close(flamefx.vmap(flamefx.jit(f), in_axes=(0, None))(a, b), want)
    _assert_trees_close(flamefx.jit(flamefx.vmap(f, in_axes=(0, None)))(a, b), want)


def test_per_example_grads_jit_vmap_grad():
    params, x, y = _mlp_args()

    def loss(params, xi, yi):
        return mlp_loss(params, xi[None], yi[None])

    per_example = flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0))
    _assert_trees_close(flamefx.jit(per_example)(params, x, y), per_example(params, x, y),
                        rtol=1e-4)


def test_jit_of_jit():
    inner = flamefx.jit(lambda x: fnp.exp(x) * 2.0)
    outer = flamefx.jit(lambda x: inner(x) + inner(x + 1.0))
    x = _x(3)
    _assert_trees_close(outer(x), fnp.exp(x) * 2.0 + fnp.exp(x + 1.0) * 2.0)
    assert "jit_call" not in str(outer.lower(x).jaxpr)


@pytest.mark.skipif(not hasattr(lax, "fori_loop"), reason="lax control flow not there yet")
def test_jit_inside_lax_control_flow():
    body = flamefx.jit(lambda i, x: x * 1.5 + 1.0)
    out = lax.fori_loop(0, 3, body, fnp.ones(2))
    np.testing.assert_allclose(np.asarray(out), [((1.0 * 1.5 + 1) * 1.5 + 1) * 1.5 + 1] * 2)


# --- lowering and the GPU plan (planning and code generation need no GPU) ------------------


def test_lower_shows_the_optimized_jaxpr():
    lowered = flamefx.jit(lambda x: x * 2.0 + x * 2.0).lower(fnp.ones(3))
    text = lowered.as_text()
    assert text.count("mul") == 1 and "add" in text
    assert lowered.kernel_count == len(lowered.jaxpr.eqns)


def test_gpu_plan_fuses_w4_and_its_gradient():
    x = fnp.ones(1 << 12)
    forward = flamefx.jit(w4_loss).lower(x, platform="gpu")
    backward = flamefx.jit(flamefx.grad(w4_loss)).lower(x, platform="gpu")
    assert 1 <= forward.kernel_count <= 2, forward.as_text()
    assert backward.kernel_count == 1, backward.as_text()
    assert "__global__" in forward.as_text()


def test_gpu_plan_keeps_matmuls_and_fuses_around_them():
    params, x, y = _mlp_args()
    lowered = flamefx.jit(flamefx.grad(mlp_loss)).lower(params, x, y, platform="gpu")
    steps = lowered.plan.steps
    assert any(getattr(s, "eqn", None) is not None and s.eqn.prim.name == "dot_general"
               for s in steps)
    assert len(lowered.plan.kernels()) < len(lowered.jaxpr.eqns) // 2


def _run_plan_on_cpu(plan, args):
    """Runs a GPU plan's steps with NumPy impls; a fused kernel sees only its declared inputs
    and publishes only its declared outputs, as the generated kernel does."""
    from flamefx.jaxpr import Literal
    from flamefx.kernels.fusion import FusedKernel

    env = {v.id: np.asarray(a) for v, a in zip(plan.jaxpr.invars, args)}

    def read(scope, v):
        return np.asarray(v.val) if isinstance(v, Literal) else scope[v.id]

    for step in plan.steps:
        fused = isinstance(step, FusedKernel)
        scope = {v.id: env[v.id] for v in step.inputs} if fused else env
        for eqn in step.eqns if fused else [step.eqn]:
            outs = eqn.prim.impl_for("cpu")(*[read(scope, v) for v in eqn.invars], **eqn.params)
            scope.update({v.id: np.asarray(o) for v, o in zip(eqn.outvars, outs)})
        if fused:
            env.update({v.id: scope[v.id] for v in step.outputs})
    return [read(env, v) for v in plan.jaxpr.outvars]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_gpu_plan_dataflow_is_complete(name):
    fun, make_args = PROGRAMS[name]
    args = make_args()
    for f in (fun, flamefx.grad(lambda *a: sum(fnp.sum(leaf) for leaf in
                                               flamefx.tree_util.tree_leaves(fun(*a))))):
        lowered = flamefx.jit(f).lower(*args, platform="gpu")
        flat_args = flamefx.tree_util.tree_leaves(args)
        got = _run_plan_on_cpu(lowered.plan, flat_args)
        want = flamefx.tree_util.tree_leaves(f(*args))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile-check")
def test_generated_kernels_compile_with_nvcc(tmp_path):
    def mixed(x, h):
        y = (x.astype(np.float16) * 2.0).astype(np.float32) + fnp.sum(x, axis=1, keepdims=True)
        z = h.astype(np.float32) * fnp.max(x)
        return y, fnp.sum(z * z, axis=0), (x > 0).astype(np.int32) * 3
    args = (_x(64, 300), _x(64, 300).astype(flamefx.dtypes.bfloat16))
    sources = []
    for fun, fargs in ((mixed, args), (w4_loss, (_x(1 << 20),)),
                       (flamefx.grad(mlp_loss), _mlp_args())):
        sources += flamefx.jit(fun).lower(*fargs, platform="gpu").kernel_sources
    assert sources
    for i, src in enumerate(sources):
        path = tmp_path / f"k{i}.cu"
        path.write_text(src)
        result = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", "-o", "/dev/null", str(path)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr + src


def _gpu_plan(fun, args):
    return flamefx.jit(fun).lower(*args, platform="gpu").plan


@pytest.mark.parametrize("name, passes", [("layer_norm", [3]), ("softmax_grad", [4])])
def test_row_work_after_a_row_reduction_is_a_later_pass_of_its_kernel(name, passes):
    """The mean, the variance of the centred rows, the normalized rows: one kernel that
    walks each row three times, instead of three kernels passing row-sized arrays."""
    fun, make_args = PROGRAMS[name]
    plan = _gpu_plan(fun, make_args())
    assert [k.passes for k in plan.kernels()] == passes, plan.describe()


def _single_kernel(fun, args):
    (kernel,) = _gpu_plan(fun, args).kernels()
    return kernel


# --- on the GPU ------------------------------------------------------------------------------


def _on_gpu(tree):
    gpu = flamefx.devices("gpu")[0]
    return flamefx.tree_util.tree_map(lambda a: flamefx.device_put(a, gpu), tree)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_gpu_jit_equals_cpu(name):
    fun, make_args = PROGRAMS[name]
    args = make_args()
    _assert_trees_close(flamefx.jit(fun)(*_on_gpu(args)), fun(*args), rtol=2e-4, atol=2e-5)


@pytest.mark.gpu
def test_gpu_w4_fused_kernel_count_and_values():
    x = _x(1 << 20)
    gx = _on_gpu(x)
    forward = flamefx.jit(w4_loss)
    backward = flamefx.jit(flamefx.grad(w4_loss))
    assert 1 <= forward.lower(gx).kernel_count <= 2
    assert 1 <= backward.lower(gx).kernel_count <= 2
    np.testing.assert_allclose(float(forward(gx)), float(w4_loss(x)), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(backward(gx)), np.asarray(flamefx.grad(w4_loss)(x)),
                               rtol=1e-4, atol=1e-5)  # -ftz and fused vs. unfused rounding

@pytest.mark.gpu
def test_gpu_half_precision_fusion():
    def f(x):
        return fnp.sum((x * 2.0 + 1.0).astype(np.float32), axis=1)

    for dtype in (np.float16, flamefx.dtypes.bfloat16):
        x = _x(8, 512).astype(dtype)
        np.testing.assert_allclose(np.asarray(flamefx.jit(f)(_on_gpu(x))), np.asarray(f(x)),
                                   rtol=2e-2)


@pytest.mark.gpu
def test_gpu_softmax_gradient_in_row_passes_half_precision():
    """The softmax form's gradient in bfloat16 and float16, one kernel walking each row four
    times (rows longer than a block), against the CPU backend's step-by-step result."""
    fun, make_args = PROGRAMS["softmax_grad"]
    for dtype in (np.float16, flamefx.dtypes.bfloat16):
        args = tuple(a.astype(dtype) for a in make_args())
        assert [k.passes for k in _gpu_plan(fun, args).kernels()] == [4]
        got = flamefx.jit(fun)(*_on_gpu(args))
        for g, w in zip(got, fun(*args)):
            np.testing.assert_allclose(np.asarray(g).astype(np.float32),
                                       np.asarray(w).astype(np.float32), rtol=3e-2, atol=3e-3)


@pytest.mark.gpu
def test_gpu_grad_of_jit_and_donation():
    cpu_args = _mlp_args()
    params, x, y = _on_gpu(cpu_args)
    want = flamefx.grad(mlp_loss)(*cpu_args)
    _assert_trees_close(flamefx.grad(flamefx.jit(mlp_loss))(params, x, y), want, rtol=1e-3,
                        atol=1e-5)

    step_donating = flamefx.jit(_mlp_sgd_step, donate_argnums=0)
    expected = flamefx.jit(_mlp_sgd_step)(params, x, y)
    copied = flamefx.tree_util.tree_map(lambda a: a * 1.0, params)
    got = step_donating(copied, x, y)
    _assert_trees_close(got, expected, rtol=1e-5)
    assert all(a.is_deleted() for a in flamefx.tree_util.tree_leaves(copied))


def test_jit_call_is_a_primitive_with_every_rule():
    p = jit_module.jit_call_p
    assert p.vjp and p.jvp and p.batch and p.impls["cpu"] and p.impls["gpu"]


@pytest.mark.gpu
def test_gpu_cuda_graph_replay_matches_plain_and_respects_held_outputs():
    params, x, y = _on_gpu(_mlp_args())
    want = _plain_sgd_steps(params, x, y, 4)
    with flamefx.config.override("cuda_graphs", True):
        jstep = flamefx.jit(_mlp_sgd_step)
        held = [params]
        for _ in range(4):  # outputs all held: every replay must leave earlier ones intact
            held.append(jstep(held[-1], x, y))
        for got, expected in zip(held, want):
            _assert_trees_close(got, expected, rtol=1e-5)
        donating = flamefx.jit(_mlp_sgd_step, donate_argnums=0)
        p = flamefx.tree_util.tree_map(lambda a: a * 1.0, params)
        for _ in range(4):  # steady state of a training loop: outputs donated back in
            p = donating(p, x, y)
        _assert_trees_close(p, want[-1], rtol=1e-5)
        assert _executable(donating).capture_error is None


def test_grad_and_jvp_of_jit_with_integer_inputs_and_outputs():
    def f(x, idx):
        return fnp.sum(x[idx] ** 2), idx * 2

    x, idx = _x(5), fnp.asarray(np.array([0, 2, 2], np.int32))

    def loss(x, idx):
        return f(x, idx)[0]

    np.testing.assert_allclose(np.asarray(flamefx.grad(lambda x: flamefx.jit(f)(x, idx)[0])(x)),
                               np.asarray(flamefx.grad(loss)(x, idx)), rtol=1e-6)
    (_, i_out), (t_loss, _) = flamefx.jvp(lambda x: flamefx.jit(f)(x, idx), (x,), (fnp.ones(5),))
    assert i_out.tolist() == [0, 4, 4]
    np.testing.assert_allclose(float(t_loss), float(2 * (x[0] + 2 * x[2])), rtol=1e-5)


# --- fused reductions over leading axes -------------------------------------------------------


def test_bias_gradient_reduction_uses_the_column_layout():
    from flamefx.kernels import fusion
    closed = flamefx.make_jaxpr(lambda g: fnp.sum(g * 2.0, axis=0))(fnp.ones((512, 1024)))
    (kernel,) = fusion.plan(closed.jaxpr).kernels()
    assert kernel.layout == "columns" and kernel.tiles == 32 and kernel.split > 1
    assert "threadIdx.y" in kernel.source
    closed = flamefx.make_jaxpr(lambda g: fnp.sum(g * 2.0, axis=1))(fnp.ones((512, 1024)))
    assert fusion.plan(closed.jaxpr).kernels()[0].layout == "rows"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_column_reduction_kernels_compile_with_nvcc(tmp_path):
    from flamefx.kernels import fusion
    sources = []
    for shape, axes, dtype in [((512, 1024), (0,), np.float32), ((3, 70, 5), (0, 1), np.float64),
                               ((300, 7), (0,), np.int32), ((64, 33), (0,), np.float16)]:
        x = fnp.ones(shape, dtype=dtype)
        closed = flamefx.make_jaxpr(lambda g, axes=axes: fnp.sum(g * g, axis=axes))(x)
        sources += [k.source for k in fusion.plan(closed.jaxpr).kernels()
                    if k.layout == "columns"]
    assert len(sources) == 4
    for i, src in enumerate(sources):
        path = tmp_path / f"k{i}.cu"
        path.write_text(src)
        build = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", "-o", "/dev/null", str(path)],
                               capture_output=True, text=True, check=False)
        assert build.returncode == 0, build.stderr[-2000:]


# --- on the GPU: graphs with GEMMs, column reductions, the per-launch profile ------------------


@pytest.mark.gpu
def test_gpu_column_reductions_match_numpy():
    rng = np.random.default_rng(3)
    for shape, axes in [((512, 1024), (0,)), ((3, 70, 5), (0, 1)), ((2000, 10), (0,)),
                        ((7, 33), (0,))]:
        x = rng.standard_normal(shape).astype(np.float32)

        def f(g, axes=axes):
            return fnp.sum(g * 2.0 + 1.0, axis=axes), fnp.max(g, axis=axes)

        got = flamefx.jit(f)(_on_gpu(fnp.asarray(x)))
        np.testing.assert_allclose(np.asarray(got[0]), (x * 2 + 1).sum(axis=axes), rtol=1e-4,
                                   atol=1e-3)
        np.testing.assert_allclose(np.asarray(got[1]), x.max(axis=axes))


@pytest.mark.gpu
def test_gpu_mlp_step_replayed_as_graphs_equals_the_plain_executable():
    params, x, y = _on_gpu(_mlp_args())
    want = _plain_sgd_steps(params, x, y, 6)
    with flamefx.config.override("cuda_graphs", True):
        jstep = flamefx.jit(_mlp_sgd_step)
        p = params
        for expected in want[1:]:  # params = step(params): the two graphs take turns
            p = jstep(p, x, y)
            _assert_trees_close(p, expected, rtol=1e-5)
        exe = _executable(jstep)
        assert exe.capture_error is None, exe.capture_error
        # A loop that hands each step's outputs back in alternates between two graphs (the
        # copying third one is never needed), and the second reads the first one's
        # outputs in place: no parameter is copied into it.
        assert len(exe.graphs) == 2, [(g.replays, g.copy_out) for g in exe.graphs]
        assert all(g.replays >= 2 for g in exe.graphs), [g.replays for g in exe.graphs]
        assert len(exe.graphs[1].direct) == len(flamefx.tree_util.tree_leaves(params))


@pytest.mark.gpu
def test_gpu_single_kernel_fast_path_and_profile():
    x = _on_gpu(fnp.asarray(_x(1000)))
    f = flamefx.jit(lambda x: x * 2 + 1)
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(x) * 2 + 1, rtol=1e-6)
    exe = _executable(f)
    assert exe.single is not None
    params, xs, ys = _on_gpu(_mlp_args())
    jgrad = flamefx.jit(flamefx.grad(mlp_loss))
    report = jgrad.profile(params, xs, ys)
    assert {r["kind"] for r in report} >= {"fused", "gemm"}
    assert all(r["gpu_ms"] >= 0 and r["host_us"] >= 0 for r in report)
    # The stream is held while the host queues: no launch waits for the GPU.
    assert all(r["exact"] for r in report), [r for r in report if not r["exact"]]
    assert jgrad.profile(params, xs, ys, graph=True) is None  # no graph captured yet
    for _ in range(3):
        jgrad(params, xs, ys)
    replay = jgrad.profile(params, xs, ys, graph=True)
    assert replay["replay_ms"] > 0 and replay["copy_in_ms"] >= 0


@pytest.mark.gpu
def test_gpu_training_loop_returns_to_its_two_graphs_after_keeping_a_step():
    """A loop that keeps one step's parameters a while (a checkpoint) leaves the two
    output-owning graphs unready, and the graph that copies its outputs out takes over;
    once the kept parameters are dropped, the loop goes back to alternating between the
    two (the moved arguments are copied where one of them reads them in place), and the
    kept parameters were never written."""
    params, x, y = _on_gpu(_mlp_args())
    want = _plain_sgd_steps(params, x, y, 14)
    with flamefx.config.override("cuda_graphs", True):
        jstep = flamefx.jit(_mlp_sgd_step)
        p, kept = params, None
        for n in range(1, 15):
            p = jstep(p, x, y)
            _assert_trees_close(p, want[n], rtol=1e-5)
            if n == 4:
                kept = p
            elif n == 8:
                _assert_trees_close(kept, want[4], rtol=0)
                kept = None
            elif n == 10:
                exe = _executable(jstep)
                before = [(g.replays, g.copy_out) for g in exe.graphs]
        after = [(g.replays, g.copy_out) for g in exe.graphs]
    assert len(after) == 3 and after[2][1] and before[2][0] >= 1, after
    assert after[2][0] == before[2][0], (before, after)  # no copying replay any more
    assert after[0][0] >= before[0][0] + 2 and after[1][0] >= before[1][0] + 2, (before, after)


def _mlp_sgd_step_and_loss(params, x, y):
    loss, grads = flamefx.value_and_grad(mlp_loss)(params, x, y)
    return flamefx.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), loss


@pytest.mark.gpu
def test_gpu_training_loop_keeping_every_loss_alternates_two_graphs():
    """A loop that keeps each step's loss to read later (logging without waiting for the
    GPU) still alternates between the two output-owning graphs: scalar outputs are
    copied out on every replay, so keeping them holds no graph's buffers."""
    params, x, y = _on_gpu(_mlp_args())
    with flamefx.config.override("cuda_graphs", False):
        plain = flamefx.jit(_mlp_sgd_step_and_loss)
        p, want = params, []
        for _ in range(8):
            p, loss = plain(p, x, y)
            want.append((p, loss))
    with flamefx.config.override("cuda_graphs", True):
        jstep = flamefx.jit(_mlp_sgd_step_and_loss)
        p, losses = params, []
        for expected, _ in want:
            p, loss = jstep(p, x, y)
            losses.append(loss)
            _assert_trees_close(p, expected, rtol=1e-5)
        exe = _executable(jstep)
    np.testing.assert_allclose([float(v) for v in losses], [float(v) for _, v in want],
                               rtol=1e-5)
    assert len({v.buffer.data.ptr for v in losses}) == len(losses)  # each its own
    assert [g.copy_out for g in exe.graphs] == [False, False], [
        (g.replays, g.copy_out) for g in exe.graphs]
    assert all(g.replays >= 3 for g in exe.graphs), [g.replays for g in exe.graphs]


@pytest.mark.gpu
def test_gpu_graph_replays_when_every_earlier_output_is_kept():
    # Holding every step's outputs leaves neither output-owning graph ready; the third
    # graph copies its outputs out, so calls still replay and earlier results stay intact.
    params, x, y = _on_gpu(_mlp_args())
    jgrad = flamefx.jit(flamefx.grad(mlp_loss))
    with flamefx.config.override("cuda_graphs", False):
        want = jgrad(params, x, y)
    kept = [jgrad(params, x, y) for _ in range(8)]
    for got in kept:
        _assert_trees_close(got, want, rtol=1e-5)
    exe = _executable(jgrad)
    assert len(exe.graphs) == 3 and exe.graphs[-1].copy_out
    assert exe.graphs[-1].replays >= 5, [g.replays for g in exe.graphs]


_W1_LIKE_STEP = """
import flamefx, flamefx.numpy as fnp
from flamefx import nn, optim
rng = flamefx.random.key(0)
params = [(flamefx.random.normal(k, (64, 64)) * 0.1, fnp.zeros(64))
          for k in flamefx.random.split(rng, 3)]
x = flamefx.random.normal(rng, (32, 64))
y = fnp.arange(32) % 10
opt = optim.adam(1e-3)
def loss(params, x, y):
    h = x
    for w, b in params:
        h = nn.relu(h @ w + b)
    return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(h, y))
@flamefx.jit
def step(params, state, x, y):
    value, grads = flamefx.value_and_grad(loss)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state, value
state = opt.init(params)
for _ in range(4):  # the plain call, then the graph captures
    params, state, value = step(params, state, x, y)
print(float(value))
"""


@pytest.mark.gpu
def test_gpu_second_process_with_a_warm_kernel_cache_compiles_nothing(tmp_path):
    # What makes a warm start fast (benchmarks/bench_training.py times it): every kernel a
    # training step needs, eager and jitted, comes from the disk cache (one file per
    # compiled kernel), none from NVRTC.
    env = dict(os.environ, FLAMEFX_PLATFORM="gpu", CUPY_CACHE_DIR=str(tmp_path))
    losses, cached = [], []
    for _ in range(2):
        losses.append(subprocess.run([sys.executable, "-c", _W1_LIKE_STEP], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()[-1])
        cached.append(sorted(p.name for p in tmp_path.rglob("*") if p.is_file()))
    assert len(cached[0]) > 10 and cached[1] == cached[0], (len(cached[0]), len(cached[1]))
    assert losses[0] == losses[1]
