"""Direct cuBLAS GEMMs with an operand shared by every batch entry (batch stride 0).

The CPU part checks the layouts and the argument lists by what they compute through the
host stand-in for libcublas (tests/test_jit.py's _FakeCublas); the ``gpu`` part runs
``gemm_into`` against NumPy float64 and fails if the shared operand is copied.
"""

import ml_dtypes
import numpy as np
import pytest

from flamefx.kernels import cublas
from tests.test_jit import _FakeCublas, _host_gemm

BATCH, M, K, N = 5, 7, 6, 4


def _layout(x):
    return cublas._operand_layout(x.shape, x.strides, x.itemsize)


def test_operand_layout_of_a_matrix_broadcast_over_the_batch():
    w = np.zeros((M, K), np.float32)
    assert _layout(np.broadcast_to(w, (BATCH, M, K))) == (cublas._OP_N, K, 0)
    w_t = np.zeros((K, M), np.float32).T  # a transposed view, then broadcast
    assert _layout(np.broadcast_to(w_t, (BATCH, M, K))) == (cublas._OP_T, M, 0)
    dense = np.zeros((BATCH, M, K), np.float32)
    assert _layout(dense) == (cublas._OP_N, K, M * K)
    # Still copied: a strided matrix broadcast, rows broadcast within a matrix.
    assert _layout(np.broadcast_to(np.zeros((M, 2 * K), np.float32)[:, ::2],
                                   (BATCH, M, K))) is None
    assert _layout(np.broadcast_to(np.zeros((1, K), np.float32), (BATCH, M, K))) is None


@pytest.mark.parametrize("shared", ["a", "b"])
@pytest.mark.parametrize("transposed", [False, True])
def test_gemm_arguments_pass_the_shared_operand_with_batch_stride_0(shared, transposed):
    rng = np.random.default_rng(0)

    def operand(name, rows, cols):
        if name != shared:
            return rng.standard_normal((BATCH, rows, cols)).astype(np.float32)
        matrix = rng.standard_normal((cols, rows) if transposed else (rows, cols))
        matrix = matrix.astype(np.float32)
        return np.broadcast_to(matrix.T if transposed else matrix, (BATCH, rows, cols))
    a, b = operand("a", M, K), operand("b", K, N)
    library = _FakeCublas()
    got = _host_gemm(library, a, b)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert library.calls[3] == ("gemm_batched",) + (int(transposed and shared == "b"),
                                                    int(transposed and shared == "a"))
    _, args, _ = cublas.gemm_arguments(np.float32, np.float32, "highest", BATCH, M, N, K,
                                       (0, *_layout(a)), (0, *_layout(b)), 0)
    b_stride, a_stride = args[9], args[13]  # cuBLAS's A is our B (column-major view)
    assert (a_stride, b_stride) == ((0, K * N) if shared == "a" else (M * K, 0))


# --- on the GPU, against NumPy float64 ---------------------------------------------------------


def _to_gpu(cp, x):
    from flamefx.kernels.cuda_scalar import raw_view
    return cp.asarray(raw_view(np.ascontiguousarray(x))).view(x.dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("in_dtype, out_dtype, tol", [
    (np.float32, np.float32, 1e-5),
    (ml_dtypes.bfloat16, ml_dtypes.bfloat16, 1e-2),
    (ml_dtypes.bfloat16, np.float32, 1e-5),
])
@pytest.mark.parametrize("shared", ["a", "b"])
@pytest.mark.parametrize("transposed", [False, True])
def test_gpu_gemm_into_with_a_shared_operand_matches_numpy(in_dtype, out_dtype, tol, shared,
                                                           transposed, monkeypatch):
    from flamefx import devices
    from flamefx.kernels.cuda_scalar import empty, raw_view
    cp = devices.cupy()
    batch, m, k, n = 6, 33, 70, 17
    rng = np.random.default_rng(1)
    host, device = {}, {}
    for name, shape in (("a", (batch, m, k)), ("b", (batch, k, n))):
        if name != shared:
            stored = rng.standard_normal(shape).astype(in_dtype)
            host[name], device[name] = stored.astype(np.float64), _to_gpu(cp, stored)
            continue
        rows, cols = shape[1:]
        stored = rng.standard_normal((cols, rows) if transposed else (rows, cols))
        stored = stored.astype(in_dtype)
        words = raw_view(_to_gpu(cp, stored))
        words = words.T if transposed else words
        device[name] = cp.broadcast_to(words, shape).view(in_dtype)
        host[name] = np.broadcast_to((stored.T if transposed else stored).astype(np.float64),
                                     shape)
    assert device[shared].strides[0] == 0
    out = empty((batch, m, n), out_dtype)

    def no_copy(*args, **kwargs):
        raise AssertionError("gemm_into copied an operand")
    with monkeypatch.context() as patch:
        patch.setattr(cp, "ascontiguousarray", no_copy)
        cublas.gemm_into(out, device["a"], device["b"])
    want = host["a"] @ host["b"]
    got = cp.asnumpy(raw_view(out)).view(out_dtype).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
