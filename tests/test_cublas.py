"""jit's direct cuBLAS GEMMs (flamefx.kernels.cublas): argument marshalling, transposed
views, and an operand shared by every batch entry (batch stride 0).

The CPU part checks the layouts and the argument lists by what they compute through a
host stand-in for libcublas (_FakeCublas); the ``gpu`` part runs ``gemm_into`` against
NumPy float64 and fails if the shared operand is copied.
"""

import ml_dtypes
import numpy as np
import pytest

from flamefx.kernels import cublas

BATCH, M, K, N = 5, 7, 6, 4


# --- a host stand-in for libcublas --------------------------------------------------------------


class _FakeCublas:
    """Stands in for libcublas: records calls and runs GemmEx/GemmStridedBatchedEx on host
    memory with cuBLAS's column-major semantics, so the marshalled arguments are checked
    by what they compute."""

    def __init__(self, status=0):
        self.calls, self.status = [], status

    def cublasSetStream_v2(self, handle, stream):
        self.calls.append(("stream", stream))
        return 0

    def cublasSetWorkspace_v2(self, handle, ptr, size):
        self.calls.append(("workspace", ptr, size))
        return 0

    def cublasSetPointerMode_v2(self, handle, mode):
        self.calls.append(("pointer_mode", mode))
        return 0

    @staticmethod
    def _matrix(ptr, op, rows, cols, ld, stride, batch):
        """op(X) (rows x cols) of each batch entry, read column-major from host memory."""
        import ctypes
        stored_rows, stored_cols = (rows, cols) if op == 0 else (cols, rows)
        count = stride * (batch - 1) + ld * (stored_cols - 1) + stored_rows
        flat = np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr))
        out = np.empty((batch, rows, cols), np.float32)
        for b in range(batch):
            stored = np.array([[flat[b * stride + i + j * ld] for j in range(stored_cols)]
                               for i in range(stored_rows)])
            out[b] = stored if op == 0 else stored.T
        return out

    def _gemm(self, transa, transb, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, batch):
        import ctypes
        op_a = self._matrix(a, transa, m, k, lda, sa, batch)
        op_b = self._matrix(b, transb, k, n, ldb, sb, batch)
        flat = np.ctypeslib.as_array((ctypes.c_float * (sc * (batch - 1) + ldc * n)
                                      ).from_address(c))
        for i in range(batch):
            product = op_a[i] @ op_b[i]
            for j in range(n):
                flat[i * sc + j * ldc: i * sc + j * ldc + m] = product[:, j]
        return self.status

    def cublasGemmEx(self, handle, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c,
                     ct, ldc, compute, algo):
        self.calls.append(("gemm", ta, tb))
        return self._gemm(ta, tb, m, n, k, a, lda, 0, b, ldb, 0, c, ldc, 0, 1)

    def cublasGemmStridedBatchedEx(self, handle, ta, tb, m, n, k, alpha, a, at, lda, sa, b, bt,
                                   ldb, sb, beta, c, ct, ldc, sc, batch, compute, algo):
        self.calls.append(("gemm_batched", ta, tb))
        return self._gemm(ta, tb, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, batch)


def _host_gemm(library, a3, b3):
    batch, m, k = a3.shape
    n = b3.shape[2]
    out = np.zeros((batch, m, n), np.float32)
    operands = []
    for x in (a3, b3):
        layout = cublas._operand_layout(x.shape, x.strides, x.itemsize)
        assert layout is not None, "a transposed view must not need a copy"
        operands.append((x.ctypes.data, *layout))
    args = cublas.gemm_arguments(np.float32, np.float32, "highest", batch, m, n, k,
                                 operands[0], operands[1], out.ctypes.data)
    cublas._call_direct(library, 7, 1234, 5678, args)
    return out


@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_cublas_arguments_compute_the_product_with_transposed_views(a_transposed,
                                                                    b_transposed, batch):
    rng = np.random.default_rng(0)
    m, k, n = 5, 4, 3
    a = rng.standard_normal((batch, k, m) if a_transposed else (batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, n, k) if b_transposed else (batch, k, n)).astype(np.float32)
    a3 = a.transpose(0, 2, 1) if a_transposed else a
    b3 = b.transpose(0, 2, 1) if b_transposed else b
    library = _FakeCublas()
    got = _host_gemm(library, a3, b3)
    np.testing.assert_allclose(got, a3 @ b3, rtol=1e-5, atol=1e-5)
    # The stream and the workspace are set before every product (capture needs both).
    assert library.calls[:3] == [("stream", 1234), ("workspace", 5678, 32 * 2**20),
                                 ("pointer_mode", 0)]
    assert library.calls[3] == ("gemm" if batch == 1 else "gemm_batched",
                                int(b_transposed), int(a_transposed))


def test_cublas_operand_layouts_that_need_a_copy():
    x = np.zeros((4, 6, 8), np.float32)
    assert cublas._operand_layout(x[:, :, ::2].shape, x[:, :, ::2].strides, 4) is None
    assert cublas._operand_layout(x[:, :3].shape, x[:, :3].strides, 4) is None  # batch gap
    assert cublas._operand_layout((1, 1, 1), (4, 4, 4), 4) == (0, 1, 1)


def test_cublas_failure_status_raises():
    a = np.ones((1, 2, 2), np.float32)
    with pytest.raises(cublas.CublasError, match="cublasGemmEx failed"):
        _host_gemm(_FakeCublas(status=13), a, a)


# --- an operand shared by every batch entry ----------------------------------------------------


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
