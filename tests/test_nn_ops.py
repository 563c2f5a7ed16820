"""Convolution, attention and normalization: what the registry-driven tests do not cover.

The CPU part checks errors, composed transforms (per-example conv gradients, grad of
masked attention), and numerics (half types accumulate in float32). The ``gpu`` part runs
every kernel — forward and backward — against the CPU on awkward sizes, in all four float
dtypes, and checks that attention at sequence 8192 never allocates the seq x seq matrix.
"""

import ml_dtypes
import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.errors import FlamefxTypeError
from flamefx.primitives.attention import flash_attention_bwd_p, flash_attention_p
from flamefx.primitives.nn_ops import conv_general_dilated, dot_product_attention
from flamefx.primitives.normalization import group_norm, layer_norm, normalization_bwd_p, rms_norm
from tests.samples.nn_ops import attention_reference, conv_reference


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- errors ------------------------------------------------------------------------------------


def test_conv_channel_mismatch_names_both_sizes():
    x, w = np.ones((1, 3, 5, 5), np.float32), np.ones((4, 2, 3, 3), np.float32)
    with pytest.raises(FlamefxTypeError, match=r"3 channels.*expects 2"):
        conv_general_dilated(x, w, (1, 1), ((0, 0), (0, 0)))


def test_norm_and_attention_errors_say_what_is_wrong():
    with pytest.raises(FlamefxTypeError, match="num_groups=4 must divide the 6 channels"):
        group_norm(np.ones((2, 6, 3)), np.ones(6), np.zeros(6), num_groups=4)
    with pytest.raises(FlamefxTypeError, match=r"scale has shape \(4,\)"):
        layer_norm(np.ones((2, 5)), np.ones(4), np.zeros(5))
    with pytest.raises(FlamefxTypeError, match="head dim 8 differs from k's 4"):
        dot_product_attention(np.ones((1, 1, 2, 8)), np.ones((1, 1, 2, 4)),
                              np.ones((1, 1, 2, 4)))


# --- composed transforms on the CPU ---------------------------------------------------------------


def test_per_example_conv_weight_grads_match_a_loop():
    rng = _rng(1)
    x = rng.standard_normal((3, 2, 6, 5))
    w = rng.standard_normal((4, 1, 3, 3))  # 2 groups
    params = {"window_strides": (2, 1), "padding": ((1, 1), (0, 1)), "feature_group_count": 2}

    def loss(w, x):
        y = conv_general_dilated(x[None], w, **params)
        return fnp.sum(fnp.sin(y))
    # float64 flamefx arrays: jit would make NumPy float64 arguments float32 (x64 off).
    batched = flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0)))(
        core.to_array(w), core.to_array(x))
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]),
                                   np.asarray(flamefx.grad(loss)(w, x[i])), rtol=1e-10)


@pytest.mark.parametrize("groups", [1, 3])
def test_conv_gemm_shares_the_kernel_across_examples_for_one_group(groups):
    """The example-major GEMM's kernel operand, entry n * G + g holding w[g]: with one group
    a batch-stride-0 view (cuBLAS reads it in place), with several a copy per example."""
    from flamefx.kernels import cuda_conv
    weights = np.arange(groups * 4 * 5).astype(ml_dtypes.bfloat16).reshape(groups, 4, 5)
    per_example = cuda_conv._kernel_per_example(np, weights, 3)
    assert per_example.dtype == weights.dtype and per_example.shape == (3 * groups, 4, 5)
    np.testing.assert_array_equal(per_example.astype(np.float32),
                                  np.tile(weights, (3, 1, 1)).astype(np.float32))
    assert (per_example.strides[0] == 0) == (groups == 1)


def test_conv_matches_loop_reference_for_transposed_and_strided_cases():
    rng = _rng(2)
    x, w = rng.standard_normal((2, 3, 7, 4)), rng.standard_normal((6, 1, 2, 3))
    cases = [{"strides": (2, 3), "padding": ((1, 2), (0, 0)), "lhs": (1, 1), "rhs": (2, 1)},
             {"strides": (1, 1), "padding": ((1, 1), (2, 2)), "lhs": (2, 3), "rhs": (1, 1)}]
    for c in cases:
        got = conv_general_dilated(x, w, c["strides"], c["padding"], c["lhs"], c["rhs"], 3)
        want = conv_reference(x, w, c["strides"], c["padding"], c["lhs"], c["rhs"], 3)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def _naive_masked_attention(q, k, v, mask, scale):
    s = fnp.einsum("bhqd,bhkd->bhqk", q, k) * scale
    s = fnp.where(mask, s, float(np.finfo(np.float64).min))  # weak: stays float64
    out = fnp.einsum("bhqk,bhkd->bhqd", flamefx.nn.softmax(s, axis=-1), v)
    return out * np.any(mask, axis=-1, keepdims=True)  # a query that sees no key: zeros


def test_masked_attention_grads_match_the_naive_formula():
    rng = _rng(3)
    # float64 flamefx arrays: NumPy float64 operands of fnp functions are float32 (x64 off).
    q, k, v = (core.to_array(rng.standard_normal((2, 2, 5, 4))) for _ in range(3))
    mask = rng.random((2, 1, 5, 5)) > 0.4
    mask[0, 0, 2] = False  # a query that sees no key gets zeros, as in cuDNN

    def loss(attend):
        return lambda q, k, v: fnp.sum(fnp.cos(attend(q, k, v)))
    fused = loss(lambda q, k, v: dot_product_attention(q, k, v, mask=mask, scale=0.7))
    naive = loss(lambda q, k, v: _naive_masked_attention(q, k, v, mask, 0.7))
    np.testing.assert_allclose(float(fused(q, k, v)), float(naive(q, k, v)), rtol=1e-12)
    for g_fused, g_naive in zip(flamefx.grad(fused, argnums=(0, 1, 2))(q, k, v),
                                flamefx.grad(naive, argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(g_fused), np.asarray(g_naive), atol=1e-10)


def test_attention_hessian_vector_product_through_the_naive_formula():
    rng = _rng(4)
    q, k, v = (rng.standard_normal((1, 1, 3, 2)) for _ in range(3))

    def f(q):
        return fnp.sum(dot_product_attention(q, k, v, is_causal=True) ** 2)
    flamefx.test_util.check_grads(f, [q], order=2, modes=("rev",))


def test_half_precision_norms_accumulate_in_float32():
    rng = _rng(5)
    x = (rng.standard_normal((4, 4096)) + 300.0).astype(ml_dtypes.bfloat16)
    scale, bias = np.ones(4096, ml_dtypes.bfloat16), np.zeros(4096, ml_dtypes.bfloat16)
    y, mean, _ = layer_norm(x, scale, bias, return_stats=True)
    assert mean.dtype == np.float32 and y.dtype == ml_dtypes.bfloat16
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / x64.std(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, atol=0.05)


# --- GPU against CPU ---------------------------------------------------------------------------

DTYPE_TOLERANCE = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9,
                   np.dtype(np.float16): 2e-2, np.dtype(ml_dtypes.bfloat16): 8e-2}


def _on(device, *arrays):
    return [core.to_array(a, device=device) for a in arrays]


def _compare_gpu_cpu(fn, arrays, dtype, scale_tol=1.0):
    cpu, gpu = flamefx.devices("cpu")[0], flamefx.devices("gpu")[0]
    got = fn(*_on(gpu, *arrays))
    want = fn(*_on(cpu, *arrays))
    got, want = (list(x) if isinstance(x, (list, tuple)) else [x] for x in (got, want))
    tol = DTYPE_TOLERANCE[np.dtype(dtype)] * scale_tol
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.device.platform == "gpu"
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        magnitude = np.abs(w64[np.isfinite(w64)]).max(initial=1.0)
        np.testing.assert_allclose(g64, w64, rtol=tol, atol=tol * magnitude,
                                   err_msg=f"output {k}")


FLOAT_DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]

CONV_GPU_CASES = [
    {"x": (2, 3, 9, 7), "w": (5, 3, 3, 3), "strides": (2, 2), "padding": ((1, 1), (1, 0))},
    {"x": (1, 6, 8), "w": (4, 3, 5), "strides": (1,), "padding": ((2, 2),), "groups": 2,
     "rhs": (2,)},
    {"x": (2, 4, 5, 5), "w": (4, 1, 3, 3), "strides": (1, 1), "padding": ((1, 1), (1, 1)),
     "groups": 4},
    {"x": (1, 2, 4, 5, 3), "w": (3, 2, 2, 3, 2), "strides": (1, 2, 1),
         "padding": ((0, 1), (1, 1), (0, 0)), "lhs": (2, 1, 1)},
    {"x": (4, 33, 16, 16), "w": (35, 33, 3, 3), "strides": (1, 1), "padding": ((1, 1), (1, 1))},
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", range(len(CONV_GPU_CASES)))
def test_gpu_conv_forward_and_grads(case, dtype):
    c = CONV_GPU_CASES[case]
    rng = _rng(case)
    x = rng.standard_normal(c["x"]).astype(dtype)
    w = (rng.standard_normal(c["w"]) / np.sqrt(np.prod(c["w"][1:]))).astype(dtype)
    n = len(c["strides"])

    def conv(x, w):
        return conv_general_dilated(x, w, c["strides"], c["padding"], c.get("lhs", (1,) * n),
                                    c.get("rhs", (1,) * n), c.get("groups", 1))
    _compare_gpu_cpu(conv, [x, w], dtype)
    ct = rng.standard_normal(conv(x, w).shape).astype(dtype)
    _compare_gpu_cpu(lambda x, w, ct: flamefx.vjp(conv, x, w)[1](ct), [x, w, ct], dtype,
                     scale_tol=4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_gpu_conv_w2_block_shapes(dtype):
    """The benchmark's 3x3 conv: forward and input gradient take the example-major patch
    layout (1024 positions), the weight gradient sums per-example partials (576 patch rows
    per example)."""
    rng = _rng(7)
    x = rng.standard_normal((32, 64, 32, 32)).astype(dtype)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(dtype)
    ct = rng.standard_normal((32, 64, 32, 32)).astype(dtype)

    def conv(x, w):
        return conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)))
    _compare_gpu_cpu(conv, [x, w], dtype)
    _compare_gpu_cpu(lambda x, w, ct: flamefx.vjp(conv, x, w)[1](ct), [x, w, ct], dtype,
                     scale_tol=4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_gpu_conv_forward_reads_the_kernel_without_per_example_copies(dtype, monkeypatch):
    """One feature group, example-major patches (256 positions): the GEMM takes the kernel
    with batch stride 0, so the forward copies nothing."""
    from flamefx import devices
    from flamefx.kernels import cuda_conv
    from flamefx.kernels.cuda_scalar import raw_view
    cp = devices.cupy()
    rng = _rng(8)
    x = rng.standard_normal((4, 8, 16, 16)).astype(dtype)
    w = (rng.standard_normal((6, 8, 3, 3)) / 8).astype(dtype)
    assert cuda_conv._example_major(4, 16 * 16, 8 * 9)
    x_gpu, w_gpu = (cp.asarray(raw_view(a)).view(dtype) for a in (x, w))

    def no_copy(*args, **kwargs):
        raise AssertionError("conv_forward copied an array")
    with monkeypatch.context() as patch:
        patch.setattr(cp, "ascontiguousarray", no_copy)
        got = cuda_conv.conv_forward(
            x_gpu, w_gpu, window_strides=(1, 1), padding=((1, 1), (1, 1)),
            lhs_dilation=(1, 1), rhs_dilation=(1, 1), feature_group_count=1, precision=None,
            preferred_element_type=None)
    got = cp.asnumpy(raw_view(got)).view(dtype).astype(np.float64)
    want = np.asarray(conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))), np.float64)
    tol = DTYPE_TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


# x, w, strides, padding, lhs dilation, rhs dilation, groups: batches of 5 cut in chunks
CONV_CHUNK_CASES = [
    ((5, 4, 16, 16), (6, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 2),  # 256 pos.
    ((5, 6, 9, 7), (4, 3, 3, 2), (2, 1), ((1, 2), (-1, 1)), (1, 2), (2, 1), 2),
    ((5, 3, 300), (4, 3, 5), (1,), ((2, 2),), (1,), (1,), 1),  # 300 positions
    ((5, 2, 4, 5, 6), (3, 2, 2, 3, 2), (1, 2, 1), ((0, 1), (1, 1), (0, 0)), (2, 1, 1),
     (1, 1, 2), 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, ml_dtypes.bfloat16])
@pytest.mark.parametrize("wide_index", [False, True])
@pytest.mark.parametrize("case", range(len(CONV_CHUNK_CASES)))
def test_gpu_conv_in_batch_chunks_and_with_64_bit_indices(case, wide_index, dtype,
                                                          monkeypatch):
    from flamefx.kernels import cuda_conv
    from flamefx.primitives.nn_ops import conv_output_spatial

    x_shape, w_shape, strides, padding, lhs, rhs, groups = CONV_CHUNK_CASES[case]
    out_spatial = conv_output_spatial(x_shape[2:], w_shape[2:], strides, padding, lhs, rhs)
    per_example = (x_shape[1] * int(np.prod(w_shape[2:]) * np.prod(out_spatial))
                   * np.dtype(dtype).itemsize)
    monkeypatch.setattr(cuda_conv, "_COL_BYTES_LIMIT", 2 * per_example)  # chunks 2, 2, 1
    if wide_index:
        monkeypatch.setattr(cuda_conv, "_INT32_LIMIT", 0)
    rng = _rng(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)

    def conv(x, w):
        return conv_general_dilated(x, w, strides, padding, lhs, rhs, groups)
    _compare_gpu_cpu(conv, [x, w], dtype)
    # The weight gradient's chunks carry a float32/float64 running sum between them.
    ct = rng.standard_normal(conv(x, w).shape).astype(dtype)
    _compare_gpu_cpu(lambda x, w, ct: flamefx.vjp(conv, x, w)[1](ct), [x, w, ct], dtype,
                     scale_tol=4)


ATTENTION_GPU_CASES = [
    {"b": 2, "h": 3, "sq": 77, "sk": 130, "d": 40, "dv": 24},
    {"b": 1, "h": 2, "sq": 129, "sk": 129, "d": 64, "dv": 64, "is_causal": True},
    {"b": 2, "h": 2, "sq": 65, "sk": 33, "d": 16, "dv": 16, "bias": (1, 2, 65, 33)},
    {"b": 2, "h": 1, "sq": 50, "sk": 70, "d": 8, "dv": 8, "bias": (2, 1, 50, 70),
     "is_causal": True},
    {"b": 1, "h": 1, "sq": 1, "sk": 1, "d": 3, "dv": 5},
    {"b": 1, "h": 2, "sq": 100, "sk": 90, "d": 128, "dv": 128},
]


def _attention_inputs(case, dtype, rng):
    shapes = [(case["b"], case["h"], case["sq"], case["d"]),
              (case["b"], case["h"], case["sk"], case["d"]),
              (case["b"], case["h"], case["sk"], case["dv"])]
    if "bias" in case:
        shapes.append(case["bias"])
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", range(len(ATTENTION_GPU_CASES)))
def test_gpu_flash_attention_forward_and_backward(case, dtype):
    c = ATTENTION_GPU_CASES[case]
    if np.dtype(dtype) == np.float64 and c["d"] > 64:
        pytest.skip("float64 GPU attention supports head dims up to 64")
    rng = _rng(10 + case)
    inputs = _attention_inputs(c, dtype, rng)
    params = {"is_causal": c.get("is_causal", False), "scale": 1.0 / np.sqrt(c["d"])}
    _compare_gpu_cpu(lambda *a: flash_attention_p.bind(*a, **params), inputs, dtype)
    out, lse = attention_reference(*[a.astype(np.float64) for a in inputs], **params)
    acc = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    bwd_inputs = inputs + [out.astype(dtype), lse.astype(acc),
                           rng.standard_normal(out.shape).astype(dtype),
                           rng.standard_normal(lse.shape).astype(acc)]
    _compare_gpu_cpu(lambda *a: flash_attention_bwd_p.bind(*a, **params), bwd_inputs, dtype,
                     scale_tol=4)


@pytest.mark.gpu
def test_gpu_attention_grad_end_to_end_matches_cpu():
    rng = _rng(20)
    q, k, v = (rng.standard_normal((2, 4, 96, 32)).astype(np.float32) for _ in range(3))

    def loss(q, k, v):
        return fnp.sum(fnp.sin(dot_product_attention(q, k, v, is_causal=True)))
    _compare_gpu_cpu(flamefx.jit(flamefx.grad(loss, argnums=(0, 1, 2))), [q, k, v],
                     np.float32, scale_tol=4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, flamefx.dtypes.bfloat16])  # flash, mma kernels
def test_gpu_attention_at_sequence_8192_stays_linear_in_memory(dtype):
    import cupy
    seq, heads, dim = 8192, 2, 64
    score_bytes = heads * seq * seq * 4
    rng = _rng(21)
    gpu = flamefx.devices("gpu")[0]
    q, k, v = _on(gpu, *(rng.standard_normal((1, heads, seq, dim)).astype(dtype)
                        for _ in range(3)))
    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()
    before = pool.total_bytes()

    def loss(q, k, v):
        return fnp.sum(dot_product_attention(q, k, v, is_causal=True).astype(np.float32))
    grads = flamefx.grad(loss, argnums=(0, 1, 2))(q, k, v)
    for g in grads:
        g.block_until_ready()
        assert np.isfinite(np.asarray(g, np.float32)).all()
    peak = pool.total_bytes() - before
    assert peak < score_bytes / 8, f"attention held {peak / 2**20:.0f} MiB; the score " \
                                   f"matrix alone is {score_bytes / 2**20:.0f} MiB"


NORM_GPU_CASES = [
    ("layer", (7, 33), {"axes": -1}),
    ("layer", (3, 5, 4096), {"axes": -1}),
    ("layer", (2, 3, 10, 6), {"axes": (2, 3)}),
    ("group", (32, 64, 32, 32), {"num_groups": 32}),
    ("group", (3, 10, 7), {"num_groups": 5}),
    ("group", (2, 6), {"num_groups": 3}),
    ("rms", (5, 300), {"axes": -1}),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", range(len(NORM_GPU_CASES)))
def test_gpu_norms_forward_and_backward(case, dtype):
    kind, shape, params = NORM_GPU_CASES[case]
    rng = _rng(30 + case)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    param_shape = ((shape[1],) if kind == "group" else
                   shape[-len(params["axes"]):] if isinstance(params["axes"], tuple)
                   else shape[-1:])
    scale = rng.standard_normal(param_shape).astype(dtype)
    bias = rng.standard_normal(param_shape).astype(dtype)
    if kind == "rms":
        def norm(x, scale, bias):
            return rms_norm(x, scale, return_stats=True, **params)
    else:
        fn = layer_norm if kind == "layer" else group_norm

        def norm(x, scale, bias):
            return fn(x, scale, bias, return_stats=True, **params)
    _compare_gpu_cpu(norm, [x, scale, bias], dtype)
    outs = norm(*_on(flamefx.devices("cpu")[0], x, scale, bias))
    cts = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]

    def pullback(x, scale, bias, *cts):
        return flamefx.vjp(norm, x, scale, bias)[1](list(cts))
    _compare_gpu_cpu(pullback, [x, scale, bias] + cts, dtype, scale_tol=4)


@pytest.mark.gpu
def test_gpu_normalization_bwd_primitive_matches_cpu():
    rng = _rng(40)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    _, mean, rstd = layer_norm(x, np.ones(40, np.float32), np.zeros(40, np.float32),
                               return_stats=True)
    args = [x, rng.standard_normal(40).astype(np.float32),
            rng.standard_normal(x.shape).astype(np.float32), np.asarray(mean),
            np.asarray(rstd), rng.standard_normal(6).astype(np.float32),
            rng.standard_normal(6).astype(np.float32)]
    _compare_gpu_cpu(lambda *a: normalization_bwd_p.bind(*a, centered=True, num_groups=0,
                                                          n_axes=1), args, np.float32)
