"""Mixed precision end to end: the dtype policy, loss scaling for float16, every primitive
in bfloat16 and float16 against float32, float32 accumulation, JAX's promotion lattice,
matmul precision control, and the diffusion example in bfloat16."""

import functools
import itertools
import json
import os
import sys

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core, dtypes, nn, optim, test_util
from flamefx.core import Primitive
from flamefx.jaxpr import ClosedJaxpr, Jaxpr
from tests.samples import all_samples

BF16, F16, F32 = dtypes.bfloat16, dtypes.float16, dtypes.float32
LOW_PRECISION = [pytest.param(BF16, 2e-2, id="bfloat16"), pytest.param(F16, 2e-3, id="float16")]


# --- the policy ----------------------------------------------------------------------------


def test_get_policy_parses_jmp_style_strings():
    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    assert (policy.param_dtype, policy.compute_dtype, policy.output_dtype) == (F32, BF16, F32)
    assert optim.get_policy("p=f32,c=f16,o=f32") == optim.Policy(F32, F16, F32)
    assert optim.get_policy("bf16") == optim.Policy(BF16, BF16, BF16)
    assert optim.get_policy("params=float32,compute=bfloat16").output_dtype == F32
    assert str(policy) == "params=float32,compute=bfloat16,output=float32"
    for bad in ("compute=bf16", "params=float32,speed=fast", "params=int32",
                "params=f32,params=f16"):
        with pytest.raises((ValueError, flamefx.errors.FlamefxTypeError)):
            optim.get_policy(bad)


def test_policy_casts_floats_only():
    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    tree = {"w": fnp.ones((2, 2)), "step": fnp.zeros((), dtype=fnp.int32),
            "mask": fnp.asarray([True, False]), "lr": 0.5, "none": None}
    low = policy.cast_to_compute(tree)
    assert low["w"].dtype == BF16
    assert low["step"].dtype == fnp.int32 and low["mask"].dtype == fnp.bool_
    assert low["lr"] == 0.5 and low["none"] is None
    assert policy.cast_to_param(low)["w"].dtype == F32
    assert policy.cast_to_output(low)["w"].dtype == F32


def _mlp_params(seed=0, sizes=(8, 16, 4)):
    rng = np.random.default_rng(seed)
    return [{"w": fnp.asarray(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32)),
             "b": fnp.zeros(b)} for a, b in itertools.pairwise(sizes)]


def _mlp_loss(policy):
    def loss(params, x, y):
        h = policy.cast_to_compute(x)
        for i, layer in enumerate(policy.cast_to_compute(params)):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = nn.relu(h)
        logits = policy.cast_to_output(h)
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(logits, y))
    return loss


def _mlp_batch(seed=1):
    rng = np.random.default_rng(seed)
    return (fnp.asarray(rng.normal(size=(32, 8)).astype(np.float32)),
            fnp.asarray(rng.integers(0, 4, 32).astype(np.int32)))


def test_bf16_compute_keeps_float32_master_params_and_optimizer_state():
    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    params, (x, y) = _mlp_params(), _mlp_batch()
    opt = optim.adamw(1e-2, weight_decay=1e-4)
    opt_state = opt.init(params)

    @flamefx.jit
    def step(params, opt_state):
        loss, grads = flamefx.value_and_grad(_mlp_loss(policy))(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss, grads

    losses = []
    for _ in range(30):
        params, opt_state, loss, grads = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert loss.dtype == F32
    for tree in (params, opt_state, grads):
        floats = [leaf for leaf in flamefx.tree_util.tree_leaves(tree)
                  if dtypes.is_float(leaf.dtype)]
        assert floats and all(leaf.dtype == F32 for leaf in floats)


def test_bf16_gradients_match_float32_gradients():
    params, (x, y) = _mlp_params(), _mlp_batch()
    full = flamefx.grad(_mlp_loss(optim.get_policy("float32")))(params, x, y)
    mixed = flamefx.grad(_mlp_loss(optim.get_policy("p=f32,c=bf16,o=f32")))(params, x, y)
    for a, b in zip(flamefx.tree_util.tree_leaves(mixed), flamefx.tree_util.tree_leaves(full)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=5e-2, atol=5e-2 * np.abs(b).max())


# --- loss scaling ------------------------------------------------------------------------------


def _scaled_step(opt, loss_fn):
    """One float16 step with loss scaling; skips the update when the gradients overflow."""
    @flamefx.jit
    def step(params, opt_state, loss_scale, *batch):
        grads = flamefx.grad(lambda p: loss_scale.scale(loss_fn(p, *batch)))(params)
        grads = loss_scale.unscale(grads)
        finite = optim.all_finite(grads)
        updates, new_opt_state = opt.update(grads, opt_state, params)
        new_params = optim.apply_updates(params, updates)
        return (optim.select_tree(finite, new_params, params),
                optim.select_tree(finite, new_opt_state, opt_state),
                loss_scale.adjust(finite), grads)
    return step


def _leaves_bits(tree):
    return [np.asarray(leaf).tobytes() for leaf in flamefx.tree_util.tree_leaves(tree)]


def test_overflow_halves_the_scale_and_leaves_params_and_state_bit_identical():
    policy = optim.get_policy("params=float32,compute=float16,output=float32")
    params, (x, y) = _mlp_params(), _mlp_batch()
    opt = optim.adam(1e-2)
    step = _scaled_step(opt, _mlp_loss(policy))
    opt_state = opt.init(params)
    loss_scale = optim.DynamicLossScale(2.0 ** 10, period=5)
    params, opt_state, loss_scale, _ = step(params, opt_state, loss_scale, x, y)  # a good step
    assert float(loss_scale.loss_scale) == 2.0 ** 10 and int(loss_scale.counter) == 1

    # An input of 1e4 overflows float16 (grads of ~1e4 * 2**10 > 65504).
    huge = x * 1e4
    before = _leaves_bits((params, opt_state))
    with np.errstate(over="ignore"):
        params, opt_state, loss_scale, grads = step(params, opt_state, loss_scale, huge, y)
    assert not bool(optim.all_finite(grads))
    assert float(loss_scale.loss_scale) == 2.0 ** 9 and int(loss_scale.counter) == 0
    assert _leaves_bits((params, opt_state)) == before, "a skipped step changed the state"
    # The next good step trains again at the halved scale.
    params, opt_state, loss_scale, _ = step(params, opt_state, loss_scale, x, y)
    assert _leaves_bits((params, opt_state)) != before
    assert float(loss_scale.loss_scale) == 2.0 ** 9


def test_dynamic_loss_scale_grows_after_period_finite_steps_and_respects_its_bounds():
    loss_scale = optim.DynamicLossScale(fnp.asarray(8.0), period=3, factor=2, min_scale=2.0)
    adjust = flamefx.jit(lambda ls, finite: ls.adjust(finite))
    seen = []
    for _ in range(7):
        loss_scale = adjust(loss_scale, fnp.asarray(True))
        seen.append((float(loss_scale.loss_scale), int(loss_scale.counter)))
    assert seen == [(8, 1), (8, 2), (16, 0), (16, 1), (16, 2), (32, 0), (32, 1)]
    for _ in range(6):
        loss_scale = adjust(loss_scale, fnp.asarray(False))
    assert float(loss_scale.loss_scale) == 2.0, "never below min_scale"
    # It never grows to inf (every step would overflow forever after).
    top = optim.DynamicLossScale(fnp.asarray(float(np.finfo(np.float32).max)), period=1)
    assert float(top.adjust(fnp.asarray(True)).loss_scale) == float(np.finfo(np.float32).max)


def test_loss_scales_are_pytrees_with_static_settings():
    loss_scale = optim.DynamicLossScale(2.0 ** 15, period=10)
    leaves, treedef = flamefx.tree_util.tree_flatten(loss_scale)
    assert [np.asarray(v).dtype for v in leaves] == [np.float32, np.int32]
    rebuilt = flamefx.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.period == 10 and float(rebuilt.loss_scale) == 2.0 ** 15
    assert flamefx.tree_util.tree_leaves(optim.NoOpLossScale()) == []
    static = optim.StaticLossScale(4.0)
    assert static.unscale(static.scale(fnp.asarray(3.0, dtype=F16))).dtype == F16
    assert float(static.adjust(fnp.asarray(False)).loss_scale) == 4.0


def test_all_finite_and_select_tree():
    good = {"a": fnp.ones(3, dtype=F16), "n": fnp.arange(3)}
    assert bool(optim.all_finite(good))
    assert not bool(optim.all_finite({"a": fnp.asarray([1.0, float("nan")])}))
    picked = optim.select_tree(fnp.asarray(False), good, {"a": fnp.zeros(3, F16),
                                                          "n": fnp.zeros(3, fnp.int32)})
    assert picked["a"].dtype == F16 and picked["a"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="structure"):
        optim.select_tree(fnp.asarray(True), good, {"a": good["a"]})


def _tiny_regression():
    """Inputs near 1e-4, so the float16 gradients (~1e-8) fall below float16's smallest
    subnormal (6e-8) and flush to zero unless the loss is scaled."""
    rng = np.random.default_rng(0)
    w_true = (0.25 * rng.normal(size=(8,))).astype(np.float32)
    x = (1e-4 * rng.normal(size=(64, 8))).astype(np.float32)
    policy = optim.get_policy("params=float32,compute=float16,output=float32")

    def loss_fn(params, x, y):
        predicted = policy.cast_to_compute(x) @ policy.cast_to_compute(params["w"])
        residual = policy.cast_to_output(predicted) - y
        return fnp.mean(residual * residual)
    return loss_fn, fnp.asarray(x), fnp.asarray(x @ w_true)


@pytest.mark.parametrize("loss_scale", [optim.NoOpLossScale(),
                                        optim.DynamicLossScale(2.0 ** 15, period=50)],
                         ids=["unscaled", "dynamic"])
def test_float16_training_needs_loss_scaling(loss_scale):
    loss_fn, x, y = _tiny_regression()
    # Adam is scale-free; its eps must sit below these tiny gradients.
    opt = optim.adam(0.05, eps=1e-20)
    step = _scaled_step(opt, loss_fn)
    params = {"w": fnp.zeros(8)}
    opt_state = opt.init(params)
    first_loss = float(loss_fn(params, x, y))
    params, opt_state, loss_scale, first_grads = step(params, opt_state, loss_scale, x, y)
    for _ in range(150):
        params, opt_state, loss_scale, _ = step(params, opt_state, loss_scale, x, y)
    final_loss = float(loss_fn(params, x, y))
    if isinstance(loss_scale, optim.NoOpLossScale):
        assert not np.any(np.asarray(first_grads["w"])), "float16 gradients flushed to zero"
        assert final_loss == first_loss, "no gradient, no progress"
    else:
        assert np.all(np.asarray(first_grads["w"]) != 0)
        assert final_loss < 1e-3 * first_loss


# --- every primitive in bfloat16 and float16 against float32 ---------------------------------


SAMPLES = all_samples()
# Arguments that stay float32 by contract in low precision: flash attention's log-sum-exp
# rows and their cotangent.
FLOAT32_ARGS = {"flash_attention_bwd": (-3, -1)}
# Primitives that take float32 and float64 only, as JAX's do (complex parts are float32/64;
# LAPACK/cuSOLVER factorizations and cuFFT have no half-precision routines; fma is the FMA
# XLA forms in float32/float64, it computes the half types op by op).
SINGLE_OR_DOUBLE_ONLY = {"complex", "nextafter", "cholesky", "eigh", "fft", "fma", "lu", "qr",
                         "svd", "triangular_solve"}


def _holds_program(value) -> bool:
    if isinstance(value, tuple):
        return any(_holds_program(v) for v in value)
    return isinstance(value, (Jaxpr, ClosedJaxpr)) or (callable(value) and not isinstance(
        value, (type, np.dtype))) or type(value).__name__ == "Program"


def _is_float_array(a) -> bool:
    return isinstance(a, (np.ndarray, np.generic)) and dtypes.is_float(a.dtype)


def _low_precision_cases():
    cases = []
    for name in sorted(set(SAMPLES) - SINGLE_OR_DOUBLE_ONLY):
        for i, sample in enumerate(SAMPLES[name]):
            if any(_holds_program(v) for v in sample.params.values()):
                continue  # control flow and transforms: their bodies are covered op by op
            if sample.params.get("keep_probs"):
                continue  # attention keeps probabilities in float32/float64 only
            args = sample.make(np.random.default_rng(i))
            if any(_is_float_array(a) for a in args):
                cases.append(pytest.param(name, i, id=f"{name}-{i}"))
    return cases


def _cast_args(name, args, dtype):
    with np.errstate(over="ignore"):  # samples beyond float16's range are skipped
        out = [a.astype(np.float32).astype(dtype) if _is_float_array(a) else a for a in args]
    for k in FLOAT32_ARGS.get(name, ()):
        out[k] = args[k].astype(np.float32)
    return out


def _low_precision_args(name, i, dtype):
    """Sample ``i`` of ``name`` and its arguments cast to ``dtype``; skips the test when a
    finite input overflows ``dtype``."""
    sample = SAMPLES[name][i]
    args = sample.make(np.random.default_rng(i))
    low_args = _cast_args(name, args, dtype)
    for a, low in zip(args, low_args):
        if _is_float_array(a) and low.dtype == dtype and np.any(
                np.isfinite(a) & ~np.isfinite(low.astype(np.float32))):
            pytest.skip(f"the sample's inputs lie beyond {dtype}'s range")
    return sample, low_args


def _run(name, args, params, device=None):
    arrays = [core.to_array(a, device=device) if isinstance(a, (np.ndarray, np.generic)) else a
              for a in args]
    return [np.asarray(o) for o in core.bind_list(Primitive.registry[name], *arrays, **params)]


def _assert_matches_float32(name, low_outs, f32_outs, rtol):
    for k, (low, ref) in enumerate(zip(low_outs, f32_outs)):
        if not (dtypes.is_float(low.dtype) and dtypes.is_float(ref.dtype)):
            np.testing.assert_array_equal(low, ref, err_msg=f"{name} output {k}")
            continue
        ref64 = ref.astype(np.float64)
        finite = np.abs(ref64[np.isfinite(ref64)])
        # Sums and normalization backward cancel: their errors are relative to the output's
        # scale, not to each entry.
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(low.astype(np.float64), ref64, rtol=rtol, atol=rtol * scale,
                                   equal_nan=True, err_msg=f"{name} output {k} vs float32")


@pytest.mark.parametrize("dtype,rtol", LOW_PRECISION)
@pytest.mark.parametrize("name,i", _low_precision_cases())
def test_primitive_in_low_precision_matches_float32(name, i, dtype, rtol):
    sample, low_args = _low_precision_args(name, i, dtype)
    # float32 on the same (rounded) inputs: the comparison measures the op, not the inputs.
    f32_outs = _run(name, _cast_args(name, low_args, np.float32), sample.params)
    low_outs = _run(name, low_args, sample.params)
    for out, ref in zip(low_outs, f32_outs):
        if dtypes.is_float(ref.dtype) and ref.dtype != F32 and out.dtype != ref.dtype:
            pytest.fail(f"{name}: output dtype {out.dtype} in {dtype} vs {ref.dtype}")
    _assert_matches_float32(name, low_outs, f32_outs, rtol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", LOW_PRECISION)
@pytest.mark.parametrize("name,i", _low_precision_cases())
def test_gpu_primitive_in_low_precision_matches_float32_on_cpu(name, i, dtype, rtol):
    sample, low_args = _low_precision_args(name, i, dtype)
    f32_outs = _run(name, _cast_args(name, low_args, np.float32), sample.params)
    gpu_outs = _run(name, low_args, sample.params, device=flamefx.devices("gpu")[0])
    _assert_matches_float32(name, gpu_outs, f32_outs, rtol)


SMOOTH_OPS = {"sin": fnp.sin, "tanh": fnp.tanh, "silu": nn.silu, "softmax": nn.softmax,
              "square": lambda x: x * x, "exp": fnp.exp, "log": fnp.log,
              "sum_of_squares": lambda x: fnp.sum(fnp.square(x)),
              "matmul": lambda x: fnp.reshape(x, (2, 3)) @ fnp.reshape(x, (3, 2))}


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("op", sorted(SMOOTH_OPS))
def test_check_grads_in_low_precision(op, dtype):
    x = fnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (6,)).astype(dtype))
    # Second-order finite differences in 8 mantissa bits are noise for the fast-growing ops.
    order = 1 if op in ("exp", "log", "sum_of_squares", "matmul") else 2
    test_util.check_grads(SMOOTH_OPS[op], [x], order=order, atol=1e-1, rtol=1e-1)


# --- float32 accumulation ---------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_reductions_and_products_accumulate_in_float32(dtype, jit):
    # A sum of ones accumulated in bfloat16 stalls at 256 (256 + 1 rounds back to 256);
    # in float16 at 2048. 4096 is exact in both.
    ones = fnp.ones(4096, dtype=dtype)
    wrap = flamefx.jit if jit else (lambda f: f)
    results = {
        "sum": wrap(fnp.sum)(ones),
        "mean * n": wrap(lambda x: fnp.mean(x) * 4096)(ones),
        "cumsum[-1]": wrap(lambda x: fnp.cumsum(x)[-1])(ones),
        "dot": wrap(fnp.dot)(ones, ones),
        "matmul": wrap(lambda x: (x[None, :] @ x[:, None])[0, 0])(ones),
        "einsum": wrap(lambda x: fnp.einsum("i,i->", x, x))(ones),
        "conv": wrap(lambda x: nn.conv(fnp.reshape(x, (1, 4096, 1)),
                                       fnp.reshape(x, (1, 4096, 1)), padding="VALID"))(ones),
    }
    for what, value in results.items():
        assert value.dtype == dtype, what
        assert float(np.asarray(value).ravel()[0]) == 4096.0, what


def test_preferred_element_type_returns_float32_from_bf16():
    ones = fnp.ones((4, 4096), dtype=BF16)
    out = flamefx.lax.dot_general(ones, ones, (((1,), (1,)), ((), ())),
                                  preferred_element_type=F32)
    assert out.dtype == F32 and np.all(np.asarray(out) == 4096.0)


# --- promotion: JAX's lattice ---------------------------------------------------------------

# (a, b, a + b) from JAX's type-promotion table (jax.readthedocs.io, "Type promotion
# semantics"); "weak float" / "weak int" are Python scalars.
PROMOTION_TABLE = [
    ("bfloat16", "float16", "float32"),
    ("bfloat16", "float32", "float32"),
    ("float16", "float32", "float32"),
    ("bfloat16", "float64", "float64"),
    ("bfloat16", "bfloat16", "bfloat16"),
    ("int32", "bfloat16", "bfloat16"),
    ("int64", "bfloat16", "bfloat16"),
    ("int8", "float16", "float16"),
    ("uint8", "bfloat16", "bfloat16"),
    ("uint32", "float16", "float16"),
    ("int32", "float16", "float16"),
    ("bool", "bfloat16", "bfloat16"),
    ("bool", "float16", "float16"),
    ("bfloat16", "weak float", "bfloat16"),
    ("float16", "weak float", "float16"),
    ("bfloat16", "weak int", "bfloat16"),
    ("float16", "weak int", "float16"),
]


def _operand(kind):
    if kind == "weak float":
        return 2.0
    if kind == "weak int":
        return 2
    return fnp.ones(3, dtype=kind)


@pytest.mark.parametrize("a,b,expected", PROMOTION_TABLE)
def test_promotion_matches_jax_lattice(a, b, expected):
    assert (_operand(a) + _operand(b)).dtype == np.dtype(expected)
    assert (_operand(b) + _operand(a)).dtype == np.dtype(expected)
    if "weak" not in b:
        dtype, weak = dtypes.result_type((np.dtype(a), False), (np.dtype(b), False))
        assert dtype == np.dtype(expected) and not weak


def test_weak_float_scalar_keeps_low_precision_through_ops():
    x = fnp.ones(3, dtype=BF16)
    assert (x * 0.5 + 1).dtype == BF16
    assert fnp.maximum(x, 0.0).dtype == BF16
    assert fnp.where(x > 0, x, 0.0).dtype == BF16
    assert (fnp.ones(3, dtype=F16) / 3).dtype == F16


# --- matmul precision control -------------------------------------------------------------------


def test_precision_option_and_per_call_keyword():
    assert flamefx.config.read("default_matmul_precision") == "highest"
    with flamefx.config.override("default_matmul_precision", "bf16"):
        assert flamefx.config.read("default_matmul_precision") == "bf16"
    assert flamefx.config.read("default_matmul_precision") == "highest"
    with pytest.raises(ValueError, match="default_matmul_precision"):
        flamefx.config.update("default_matmul_precision", "fast")

    a = fnp.asarray(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32))
    x, w, w_transpose = fnp.ones((1, 2, 5, 5)), fnp.ones((3, 2, 3, 3)), fnp.ones((2, 3, 3, 3))
    calls = {"matmul": lambda p: fnp.matmul(a, a, precision=p),
             "dot": lambda p: fnp.dot(a, a, precision=p),
             "einsum": lambda p: fnp.einsum("ij,jk->ik", a, a, precision=p),
             "conv": lambda p: nn.conv(x, w, precision=p),
             "conv_transpose": lambda p: nn.conv_transpose(x, w_transpose, stride=2,
                                                                precision=p)}
    for what, call in calls.items():
        jaxpr = str(flamefx.make_jaxpr(functools.partial(call, "tf32"))())
        assert "tf32" in jaxpr, f"{what} does not pass precision= to its primitive"
        # On the CPU every precision computes in full float32 (the NumPy reference).
        np.testing.assert_array_equal(np.asarray(call("bf16")), np.asarray(call(None)))
        with pytest.raises(flamefx.errors.FlamefxTypeError, match="precision"):
            call("fastest")


@pytest.mark.gpu
def test_gpu_precision_controls_float32_matmul():
    gpu = flamefx.devices("gpu")[0]
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.normal(size=(256, 256)).astype(np.float32) for _ in range(2))
    a, b = (flamefx.device_put(v, gpu) for v in (a_np, b_np))
    exact = a_np.astype(np.float64) @ b_np.astype(np.float64)
    scale = np.abs(exact).max()

    def error(precision):
        return np.abs(np.asarray(fnp.matmul(a, b, precision=precision)) - exact).max() / scale

    assert error("highest") < 1e-5
    assert error("bf16") > 1e-4, "bf16 precision should round the float32 inputs"
    assert error("bf16") < 3e-2
    with flamefx.config.override("default_matmul_precision", "bf16"):
        assert error(None) == error("bf16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_gpu_reductions_and_products_accumulate_in_float32(dtype):
    gpu = flamefx.devices("gpu")[0]
    ones = flamefx.device_put(np.ones(4096, dtype=dtype), gpu)
    for what, f in {"sum": fnp.sum, "dot": lambda x: fnp.dot(x, x),
                    "jit sum": flamefx.jit(lambda x: fnp.sum(x * 1.0)),
                    "cumsum[-1]": lambda x: fnp.cumsum(x)[-1],
                    "conv": lambda x: nn.conv(fnp.reshape(x, (1, 4096, 1)),
                                              fnp.reshape(x, (1, 4096, 1)), padding="VALID")
                    }.items():
        value = f(ones)
        assert value.dtype == dtype, what
        assert float(np.asarray(value).ravel()[0]) == 4096.0, what


@pytest.mark.gpu
def test_gpu_bf16_training_step_matches_cpu():
    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    opt = optim.adam(1e-2)

    def run(device):
        params = flamefx.device_put(_mlp_params(), device)
        x, y = flamefx.device_put(_mlp_batch(), device)
        opt_state = opt.init(params)

        @flamefx.jit
        def step(params, opt_state):
            loss, grads = flamefx.value_and_grad(_mlp_loss(policy))(params, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optim.apply_updates(params, updates), opt_state, loss

        losses = []
        for _ in range(10):
            params, opt_state, loss = step(params, opt_state)
            losses.append(float(loss))
        return np.asarray(losses)

    cpu, gpu = run(flamefx.devices("cpu")[0]), run(flamefx.devices("gpu")[0])
    np.testing.assert_allclose(gpu, cpu, rtol=3e-2)
    assert gpu[-1] < gpu[0]


# --- the diffusion example in bfloat16 ---------------------------------------------------------


def test_diffusion_example_trains_in_bfloat16(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
    import train_diffusion
    import train_mlp
    judge = tmp_path / "mlp"
    train_mlp.train(steps=20, batch_size=64, learning_rate=2e-3, hidden=32, seed=0,
                    out=str(judge), log_every=100)
    out = tmp_path / "run"
    results = train_diffusion.train(
        steps=4, batch_size=8, channels=8, image_size=8, timesteps=10, warmup_steps=1,
        num_samples=2, log_every=1, checkpoint_every=4, dtype="bfloat16",
        judge_path=str(judge / "mlp_params.safetensors"), out=str(out))
    losses = [loss for _, loss in results["losses"]]
    assert results["final_step"] == 4 and np.all(np.isfinite(losses))
    # The checkpoint's safetensors header lists every saved tensor's dtype.
    with open(out / "checkpoint.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    saved = {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}
    assert saved & {"F32"} and not saved & {"BF16", "F16", "F64"}, \
        f"master parameters, optimizer state and EMA stay float32; saved {saved}"
