"""GEMM epilogues (flamefx/kernels/gemm_epilogue.py, cublaslt.py): which jaxprs the GPU
planner rewrites into one cuBLASLt GEMM with its bias, activation or bias gradient, which
it leaves alone, that a rewritten program computes what the original does (on the CPU,
through the epilogue step's NumPy impl), and on a GPU that the cuBLASLt GEMMs equal the
unfused plan and NumPy in float64, under jit and graph replay."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax, nn
from flamefx.kernels import fusion, gemm_epilogue
from flamefx.kernels.executor import CpuExecutable

RNG = np.random.default_rng(7)
F32, BF16 = np.dtype(np.float32), np.dtype(fnp.bfloat16)


def _normal(*shape, dtype=F32):
    return fnp.asarray(RNG.standard_normal(shape).astype(np.float32)).astype(dtype)


def _program(fun, *args):
    """(the optimized jaxpr jit hands an executable, its argument buffers)."""
    jitted = flamefx.jit(fun)
    entry, leaves, _ = jitted._lookup(args, {})
    bufs = [np.asarray(c.buffer) for c in entry.consts] + [np.asarray(x) for x in leaves]
    return entry.program.jaxpr, bufs


def _epilogues(jaxpr):
    return sorted(e.params["epilogue"] for e in jaxpr.eqns if e.prim.name == "gemm_epilogue")


def _close(got, want, dtype, steps=1):
    """float32: to rounding (sums of other orders differ by a few ulps of the array's
    scale). bfloat16: the epilogue rounds once where the unfused plan rounds the product
    and then the sum, so elements near zero differ by a few ulps of the array's scale.
    ``steps``: training steps the differences had to compound."""
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        scale = max(float(np.max(np.abs(w))), 1e-30)
        if dtype == BF16:
            np.testing.assert_allclose(g, w, rtol=2e-2 * steps, atol=3e-2 * steps * scale)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5 * steps, atol=1e-5 * steps * scale)


def _gelu_tanh(z):
    return nn.gelu(z, approximate=True)


def _dense(activation):
    return lambda x, w, b: activation(x @ w + b)


FORWARD = {
    # name: (function of (x, w, b), shapes of x and w, epilogues planned)
    "bias": (_dense(lambda z: z), ((8, 4), (4, 16)), ["bias"]),
    "bias_on_the_left": (lambda x, w, b: b + x @ w, ((8, 4), (4, 16)), ["bias"]),
    "relu": (_dense(nn.relu), ((8, 4), (4, 16)), ["relu_bias"]),
    "relu_as_maximum": (_dense(lambda z: fnp.maximum(z, 0.0)), ((8, 4), (4, 16)),
                        ["relu_bias"]),
    "relu_then_scaled": (_dense(lambda z: 2.0 * nn.relu(z)), ((8, 4), (4, 16)),
                         ["relu_bias"]),
    "gelu_tanh": (_dense(_gelu_tanh), ((8, 4), (4, 16)), ["gelu_bias"]),
    # clip(z, 0, 1000) is max(z, 0) then min(., 1000): the ReLU is folded, the min stays.
    "clipped_relu": (_dense(lambda z: fnp.clip(z, 0.0, 1000.0)), ((8, 4), (4, 16)),
                     ["relu_bias"]),
    "tokens": (_dense(nn.relu), ((2, 3, 4), (4, 16)), ["relu_bias"]),
    # vmap of a per-example layer: the product is (B, 1, n), viewed as (B, n).
    "per_example": (lambda x, w, b: flamefx.vmap(lambda r: nn.relu(r @ w + b))(x),
                    ((8, 4), (4, 16)), ["relu_bias"]),
    "transposed_weight": (lambda x, w, b: x @ w.T + b, ((8, 4), (16, 4)), ["bias"]),
}


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_groups_become_one_epilogue_gemm_with_the_same_values(name):
    fun, (x_shape, w_shape), want = FORWARD[name]
    n = 16
    args = (_normal(*x_shape), _normal(*w_shape), _normal(n))
    jaxpr, bufs = _program(fun, *args)
    rewritten = gemm_epilogue.rewrite(jaxpr)
    assert _epilogues(rewritten) == want, rewritten
    # The product and the bias broadcast are gone: only the epilogue GEMM reads the bias.
    assert "dot_general" not in [e.prim.name for e in rewritten.eqns], rewritten
    bias = jaxpr.invars[-1]
    assert [e.prim.name for e in rewritten.eqns if bias in e.invars] == ["gemm_epilogue"]
    _close(CpuExecutable(rewritten)(bufs), CpuExecutable(jaxpr)(bufs), F32)


def test_the_epilogue_gemm_reads_a_transposed_weight_in_place():
    jaxpr, _ = _program(FORWARD["transposed_weight"][0], _normal(8, 4), _normal(16, 4),
                        _normal(16))
    (eqn,) = gemm_epilogue.rewrite(jaxpr).eqns
    assert eqn.params["rhs_trans"] and eqn.invars[1] is jaxpr.invars[1]


def test_rows_of_a_token_batch_flatten_into_the_gemm():
    jaxpr, _ = _program(FORWARD["tokens"][0], _normal(2, 3, 4), _normal(4, 16), _normal(16))
    (eqn,) = gemm_epilogue.rewrite(jaxpr).eqns
    assert (eqn.params["m"], eqn.params["n"], eqn.params["k"]) == (6, 16, 4)
    assert eqn.params["out_shape"] == (2, 3, 16)


LEFT_ALONE = {
    "no_bias": (lambda x, w, b: x @ w, ((8, 4), (4, 16)), (16,)),
    # One value per row, not per column: no cuBLASLt bias of that orientation here.
    "bias_per_row": (lambda x, w, b: x @ w + b[:, None], ((8, 4), (4, 16)), (8,)),
    # The product itself is also an output: it must exist unbiased.
    "product_also_returned": (lambda x, w, b: (x @ w + b, x @ w), ((8, 4), (4, 16)), (16,)),
    "batched_matmul": (lambda x, w, b: x @ w + b, ((3, 8, 4), (3, 4, 16)), (16,)),
    "matrix_bias": (lambda x, w, b: x @ w + b, ((8, 4), (4, 16)), (8, 16)),
    # The erf form of GELU and SiLU have no cuBLASLt epilogue, and the fusion kernel that
    # computes them adds the bias on the way: a bias epilogue would only move a boundary.
    "gelu_erf": (_dense(lambda z: nn.gelu(z, approximate=False)), ((8, 4), (4, 16)), (16,)),
    "silu": (_dense(nn.silu), ((8, 4), (4, 16)), (16,)),
    # Not ReLU, though equal to it on most inputs.
    "thresholded_relu": (_dense(lambda z: fnp.where(z > 1e-4, z, 0.0)), ((8, 4), (4, 16)),
                         (16,)),
    "logits_into_a_loss": (lambda x, w, b: fnp.sum(fnp.exp(x @ w + b)), ((8, 4), (4, 16)),
                           (16,)),
}


@pytest.mark.parametrize("name", sorted(LEFT_ALONE))
def test_other_products_keep_todays_plan(name):
    fun, (x_shape, w_shape), b_shape = LEFT_ALONE[name]
    jaxpr, _ = _program(fun, _normal(*x_shape), _normal(*w_shape), _normal(*b_shape))
    assert gemm_epilogue.rewrite(jaxpr) is jaxpr


def test_integer_products_keep_todays_plan():
    ints = [fnp.asarray(RNG.integers(-3, 3, s).astype(np.int32)) for s in ((8, 4), (4, 16), 16)]
    jaxpr, _ = _program(_dense(nn.relu), *ints)
    assert gemm_epilogue.rewrite(jaxpr) is jaxpr


def test_a_group_cublaslt_refuses_keeps_todays_plan():
    jaxpr, _ = _program(_dense(nn.relu), _normal(8, 4), _normal(4, 16), _normal(16))
    seen = []
    assert gemm_epilogue.rewrite(jaxpr, lambda params: seen.append(params) or False) is jaxpr
    assert [p["epilogue"] for p in seen] == ["relu_bias"]
    assert seen[0]["dtype"] == F32 and (seen[0]["m"], seen[0]["n"], seen[0]["k"]) == (8, 16, 4)


def test_the_environment_switch(monkeypatch):
    monkeypatch.delenv("FLAMEFX_GEMM_EPILOGUES", raising=False)
    assert not gemm_epilogue.enabled()  # off until the cuBLASLt path has run on a GPU
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", "0")
    assert not gemm_epilogue.enabled()
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", "1")
    assert gemm_epilogue.enabled() == set(gemm_epilogue.EPILOGUES)
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", "bias, relu_bias")
    assert gemm_epilogue.enabled() == {"bias", "relu_bias"}
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", "relu")
    with pytest.raises(ValueError, match="unknown.*relu"):
        gemm_epilogue.enabled()


def test_only_the_epilogues_asked_for_are_taken(monkeypatch):
    from flamefx.kernels import cublaslt
    asked = []
    monkeypatch.setattr(cublaslt, "prepare", lambda *a: asked.append(a[7]) or object())
    jaxpr, _ = _program(flamefx.grad(_mlp_loss(nn.relu)), *_mlp_args(F32))
    rewritten = gemm_epilogue.rewrite(jaxpr, gemm_epilogue.lt_acceptor(0, ("relu_bias",)))
    assert _epilogues(rewritten) == ["relu_bias", "relu_bias"]
    assert asked == ["relu_bias", "relu_bias"]  # cuBLASLt is asked about those alone


def _mlp_loss(activation):
    def loss(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = activation(h)
        return fnp.mean((h - y) ** 2)
    return loss


def _mlp_args(dtype, sizes=(16, 32, 32, 8), batch=12):
    params = [((_normal(a, b) / np.sqrt(a)).astype(dtype), _normal(b, dtype=dtype))
              for a, b in zip(sizes[:-1], sizes[1:])]
    return params, _normal(batch, sizes[0], dtype=dtype), _normal(batch, sizes[-1], dtype=dtype)


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("activation", ["relu", "gelu_tanh"])
def test_a_training_step_folds_every_bias_activation_and_bias_gradient(activation, dtype):
    act = nn.relu if activation == "relu" else _gelu_tanh
    step = flamefx.value_and_grad(_mlp_loss(act))
    jaxpr, bufs = _program(step, *_mlp_args(dtype))
    rewritten = gemm_epilogue.rewrite(jaxpr)
    # GELU's backward reads its intermediates (tanh of the inner value...), which the
    # epilogue would not write: under grad GELU stays in the fusion kernel that writes them
    # (and adds the bias), as does the loss on the last layer. ReLU's mask is recomputed
    # from its output.
    forward = ["relu_bias"] * 2 if activation == "relu" else []
    assert _epilogues(rewritten) == sorted(forward + ["bgrada"] * 3), rewritten
    assert fusion.plan(rewritten).kernel_count < fusion.plan(jaxpr).kernel_count
    _close(CpuExecutable(rewritten)(bufs), CpuExecutable(jaxpr)(bufs), dtype)


def test_relu_masks_the_backward_reads_are_recomputed_from_the_relu_output():
    step = flamefx.grad(_mlp_loss(nn.relu))
    jaxpr, _ = _program(step, *_mlp_args(F32))
    rewritten = gemm_epilogue.rewrite(jaxpr)
    made = {v.id: e for e in rewritten.eqns for v in e.outvars}
    relu_outs = {e.outvars[0].id for e in rewritten.eqns
                 if e.prim.name == "gemm_epilogue" and e.params["epilogue"] == "relu_bias"}
    masks = [e for e in rewritten.eqns if e.prim.name == "gt" and e.invars[0].id in relu_outs]
    assert len(masks) == 2
    for mask in masks:  # placed right before the equation that reads it
        position = rewritten.eqns.index(mask)
        reader = rewritten.eqns[position + 1]
        assert any(v is mask.outvars[0] for v in reader.invars)
        assert made[mask.invars[0].id].prim.name == "gemm_epilogue"


def test_bias_gradient_of_the_lhs_is_bgradb():
    def weight_and_bias_grads(ct, x):  # the lhs is summed: its columns are the bias axis
        dims = (((0,), (0,)), ((), ()))
        return lax.dot_general(ct, x, dims), fnp.sum(ct, axis=0)
    ct, x = _normal(12, 5), _normal(12, 7)
    jaxpr, bufs = _program(weight_and_bias_grads, ct, x)
    rewritten = gemm_epilogue.rewrite(jaxpr)
    assert _epilogues(rewritten) == ["bgradb"]
    (eqn,) = rewritten.eqns
    assert (eqn.params["m"], eqn.params["n"], eqn.params["k"]) == (5, 7, 12)
    _close(CpuExecutable(rewritten)(bufs), CpuExecutable(jaxpr)(bufs), F32)


def test_bias_gradient_over_flattened_leading_axes():
    def grads(x, ct):  # (batch, tokens, features): weight and bias gradients of a dense layer
        dims = (((0, 1), (0, 1)), ((), ()))
        return lax.dot_general(x, ct, dims), fnp.sum(ct, axis=(0, 1))
    jaxpr, bufs = _program(grads, _normal(2, 3, 4), _normal(2, 3, 5))
    rewritten = gemm_epilogue.rewrite(jaxpr)
    assert _epilogues(rewritten) == ["bgrada"]
    _close(CpuExecutable(rewritten)(bufs), CpuExecutable(jaxpr)(bufs), F32)


# --- the epilogue step's NumPy impl against float64 ----------------------------------------------


def _reference(a, b, bias, epilogue):
    """float64: a (M, k) @ b (k, n), then the epilogue."""
    product = a @ b
    if epilogue == "bgrada":
        return [product, b.sum(axis=0)]
    if epilogue == "bgradb":
        return [product, a.sum(axis=1)]
    z = product + bias
    return [{"bias": z, "relu_bias": np.maximum(z, 0), "gelu_bias": gemm_epilogue.gelu_tanh(z)}
            [epilogue]]


@pytest.mark.parametrize("epilogue", ["bias", "relu_bias", "gelu_bias", "bgrada", "bgradb"])
@pytest.mark.parametrize("lhs_trans,rhs_trans", [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_numpy_impl_of_each_epilogue_against_float64(epilogue, lhs_trans, rhs_trans):
    m, n, k = 6, 5, 7
    a = RNG.standard_normal((m, k)).astype(np.float32)
    b = RNG.standard_normal((k, n)).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    lhs = np.ascontiguousarray(a.T) if lhs_trans else a
    rhs = np.ascontiguousarray(b.T) if rhs_trans else b
    operands = [lhs, rhs] + ([] if epilogue.startswith("bgrad") else [bias])
    got = gemm_epilogue.gemm_epilogue_p.impl_for("cpu")(
        *operands, epilogue=epilogue, m=m, n=n, k=k, lhs_trans=lhs_trans, rhs_trans=rhs_trans,
        precision="highest", out_shape=(m, n))
    want = _reference(a.astype(np.float64), b.astype(np.float64), bias.astype(np.float64),
                      epilogue)
    _close(got, want, F32)


def _as_cublaslt_computes(lhs, rhs, bias, epilogue, m, n, k, lhs_trans, rhs_trans):
    """What cuBLASLt computes from these row-major buffers with the layouts and flags
    ``LtGemm`` gives it (column-major matrices, leading dimension = rows; TRANSA is the
    rhs's flag, TRANSB the lhs's), read back row-major: its documented semantics, emulated."""
    from flamefx.kernels import cublaslt
    (a_rows, a_cols), (b_rows, b_cols), (d_rows, d_cols) = cublaslt.column_major_shapes(
        m, n, k, lhs_trans, rhs_trans)
    a = rhs.reshape(-1).reshape((a_rows, a_cols), order="F")
    b = lhs.reshape(-1).reshape((b_rows, b_cols), order="F")
    op_a, op_b = (a.T if rhs_trans else a), (b.T if lhs_trans else b)
    d = op_a @ op_b
    assert d.shape == (d_rows, d_cols)
    extra = []
    if epilogue in ("bias", "relu_bias", "gelu_bias"):
        d = d + bias[:, None]  # "bias vector length must match matrix D rows"
        d = {"bias": d, "relu_bias": np.maximum(d, 0), "gelu_bias": gemm_epilogue.gelu_tanh(d)}[
            epilogue]
    elif epilogue == "bgrada":  # D's rows, reduced over k, from A
        extra = [op_a.sum(axis=1)]
    else:  # bgradb: D's columns, reduced over k, from B
        extra = [op_b.sum(axis=0)]
    return [d.reshape(-1, order="F").reshape(m, n)] + extra


@pytest.mark.parametrize("epilogue", ["bias", "relu_bias", "gelu_bias", "bgrada", "bgradb"])
@pytest.mark.parametrize("lhs_trans,rhs_trans", [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_the_column_major_layouts_compute_the_row_major_product(epilogue, lhs_trans,
                                                                 rhs_trans):
    m, n, k = 6, 5, 7
    a, b = RNG.standard_normal((m, k)), RNG.standard_normal((k, n))
    bias = RNG.standard_normal(n)
    lhs = np.ascontiguousarray(a.T) if lhs_trans else a
    rhs = np.ascontiguousarray(b.T) if rhs_trans else b
    got = _as_cublaslt_computes(lhs, rhs, bias, epilogue, m, n, k, lhs_trans, rhs_trans)
    np.testing.assert_allclose(np.concatenate([g.ravel() for g in got]),
                               np.concatenate([w.ravel() for w in
                                               _reference(a, b, bias, epilogue)]), rtol=1e-12)


# --- on a GPU: cuBLASLt against the unfused plan and float64 ------------------------------------


def _gpu(tree):
    gpu = flamefx.devices("gpu")[0]
    return flamefx.tree_util.tree_map(lambda a: flamefx.device_put(a, gpu), tree)


def _jitted_twice(monkeypatch, fun):
    """``fun`` jitted with epilogues, and jitted without (the unfused plan)."""
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", "1")
    with_epilogues = flamefx.jit(lambda *a: fun(*a))
    without = flamefx.jit(lambda *a: fun(*a))
    return with_epilogues, without


def _call(monkeypatch, jitted, args, flag):
    monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", flag)  # read when the executable is built
    return jitted(*args)


def _steps(jitted):
    from tests.test_jit import _executable
    exe = _executable(jitted)
    return exe, [exe.describe_step(k) for k in range(len(exe.plan.steps))]


GPU_CASES = {
    # name: (function, argument shapes, epilogue): a second output keeps the call at two
    # launches or more, so it is replayed as a CUDA graph.
    "bias": (lambda x, w, b: (x @ w + b, fnp.sum(x)), ((256, 192), (192, 320), (320,)),
             "bias"),
    "relu_bias": (lambda x, w, b: (nn.relu(x @ w + b), fnp.sum(x)),
                  ((256, 192), (192, 320), (320,)), "relu_bias"),
    "gelu_bias": (lambda x, w, b: (_gelu_tanh(x @ w + b), fnp.sum(x)),
                  ((256, 192), (192, 320), (320,)), "gelu_bias"),
    "bgrada": (lambda x, ct: (lax.dot_general(x, ct, (((0,), (0,)), ((), ()))),
                              fnp.sum(ct, axis=0), fnp.sum(x)), ((256, 192), (256, 320)),
               "bgrada"),
    "bgradb": (lambda ct, x: (lax.dot_general(ct, x, (((0,), (0,)), ((), ()))),
                              fnp.sum(ct, axis=0), fnp.sum(x)), ((256, 320), (256, 192)),
               "bgradb"),
}


def _gpu_reference(name, args):
    a = [np.asarray(x, np.float64) for x in args]
    if name in ("bias", "relu_bias", "gelu_bias"):
        return _reference(a[0], a[1], a[2], name)[0]
    if name == "bgrada":
        return _reference(a[0].T, a[1], None, "bgrada")
    return _reference(a[0].T, a[1], None, "bgradb")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(GPU_CASES))
def test_gpu_epilogue_gemm_equals_unfused_plan_and_float64(monkeypatch, name, dtype):
    fun, shapes, epilogue = GPU_CASES[name]
    args = _gpu([_normal(*s, dtype=dtype) * 0.5 for s in shapes])
    with_epilogues, without = _jitted_twice(monkeypatch, fun)
    want = [np.asarray(o) for o in _call(monkeypatch, without, args, "0")]
    outs = [np.asarray(o) for o in _call(monkeypatch, with_epilogues, args, "1")]
    exe, steps = _steps(with_epilogues)
    assert any(kind == "gemm" and f"{epilogue} (cuBLASLt)" in details
               for kind, details in steps), steps
    n_checked = 2 if name.startswith("bgrad") else 1
    _close(outs[:n_checked], want[:n_checked], dtype)
    reference = _gpu_reference(name, args)
    reference = reference if isinstance(reference, list) else [reference]
    _close(outs[:n_checked], reference, dtype)
    for _ in range(4):  # the second call captures a graph; the rest replay it
        replayed = [np.asarray(o) for o in with_epilogues(*args)]
        _close(replayed[:n_checked], outs[:n_checked], F32)  # the same kernels: equal
    assert exe.graphs, exe.capture_error


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("activation", ["relu", "gelu_tanh"])
def test_gpu_training_loop_with_epilogues_equals_the_unfused_loop(monkeypatch, activation,
                                                                  dtype):
    act = nn.relu if activation == "relu" else _gelu_tanh
    loss = _mlp_loss(act)

    def sgd(params, x, y):
        value, grads = flamefx.value_and_grad(loss)(params, x, y)
        return flamefx.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grads), value

    params, x, y = _gpu(_mlp_args(dtype, sizes=(64, 128, 128, 16), batch=96))
    with_epilogues, without = _jitted_twice(monkeypatch, sgd)
    runs = []
    for jitted, flag in ((without, "0"), (with_epilogues, "1")):
        monkeypatch.setenv("FLAMEFX_GEMM_EPILOGUES", flag)
        carry, losses = params, []
        for _ in range(6):  # graph capture from the second step, replays after
            carry, value = jitted(carry, x, y)
            losses.append(float(value))
        runs.append((losses, carry))
    exe, steps = _steps(with_epilogues)
    assert sum("bgrada (cuBLASLt)" in d for _, d in steps) == 3, steps
    assert exe.graphs, exe.capture_error
    _close(runs[1][0], runs[0][0], dtype, steps=6)
    _close(flamefx.tree_util.tree_leaves(runs[1][1]), flamefx.tree_util.tree_leaves(runs[0][1]),
           dtype, steps=6)
