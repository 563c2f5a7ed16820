"""Matrix products on the GPU through cuBLAS, called directly (no cupy.matmul).

Direct calls work during CUDA-graph capture (CuPy refuses its own matmul there) and let
us choose the compute type: float32 accumulation for float16/bfloat16/float32 operands,
optionally with TF32 or bf16 tensor-core inputs.

cuBLAS is column-major. A row-major (m, k) array is, to cuBLAS, its (k, m) transpose, so
C = A @ B is computed as C^T = B^T @ A^T without moving any data.
"""

from __future__ import annotations

import numpy as np

# cudaDataType and cublasComputeType_t values (stable parts of the CUDA ABI).
_CUDA_DATA_TYPE = {"float16": 2, "float32": 0, "float64": 1, "bfloat16": 14}
_COMPUTE_32F, _COMPUTE_32F_FAST_16BF, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 75, 77, 70
_PRECISION_COMPUTE = {"highest": _COMPUTE_32F, "tf32": _COMPUTE_32F_FAST_TF32,
                      "bf16": _COMPUTE_32F_FAST_16BF}
_OP_N, _POINTER_MODE_HOST, _GEMM_DEFAULT = 0, 0, -1
_HALF_TYPES = ("float16", "bfloat16")


def _cp():
    from flamefx import devices
    return devices.cupy()


def _direct(in_dtype: np.dtype, out_dtype: np.dtype) -> bool:
    """Whether cuBLAS takes these input/output types in one call."""
    if in_dtype.name not in _CUDA_DATA_TYPE:
        return False
    return in_dtype == out_dtype or (in_dtype.name in _HALF_TYPES and out_dtype.name == "float32")


def gemm_into(out, a, b, precision: str = "highest") -> None:
    """Writes ``a @ b`` into the preallocated C-contiguous ``out``, on the current stream.

    ``a``: (batch, m, k) or (m, k); ``b``: (batch, k, n) or (k, n); ``out``: (batch, m, n)
    or (m, n). float16/bfloat16/float32 accumulate in float32 ('tf32' and 'bf16' allow
    tensor-core inputs of that precision for float32); float64 in float64. Other dtypes
    (integers, bool) go through a CuPy matmul in a wide type.

    >>> gemm_into(out, a, b, precision="highest")    # doctest: +SKIP
    """
    cp = _cp()
    if not out.flags.c_contiguous:
        raise ValueError("gemm_into needs a C-contiguous output")
    a3 = a.reshape((1,) + a.shape) if a.ndim == 2 else a
    b3 = b.reshape((1,) + b.shape) if b.ndim == 2 else b
    batch, m, k = a3.shape
    n = b3.shape[2]
    if out.size == 0:
        return
    if k == 0:
        out.fill(0)
        return
    if not _direct(a.dtype, out.dtype):
        _gemm_via_wide_type(cp, out, a3, b3)
        return
    a3, b3 = cp.ascontiguousarray(a3), cp.ascontiguousarray(b3)
    if a.dtype == np.float64:
        compute, scalar_type = _COMPUTE_64F, np.float64
    else:
        compute = _COMPUTE_32F if a.dtype.name in _HALF_TYPES else _PRECISION_COMPUTE[precision]
        scalar_type = np.float32
    alpha, beta = np.ones((), scalar_type), np.zeros((), scalar_type)
    in_type, out_type = _CUDA_DATA_TYPE[a.dtype.name], _CUDA_DATA_TYPE[out.dtype.name]
    from cupy.cuda import cublas, device
    handle = device.get_cublas_handle()
    old_mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, _POINTER_MODE_HOST)
    try:
        # Column-major view: C^T (n x m) = B^T (n x k) @ A^T (k x m).
        if batch == 1:
            cublas.gemmEx(handle, _OP_N, _OP_N, n, m, k, alpha.ctypes.data,
                          b3.data.ptr, in_type, n, a3.data.ptr, in_type, k,
                          beta.ctypes.data, out.data.ptr, out_type, n, compute, _GEMM_DEFAULT)
        else:
            cublas.gemmStridedBatchedEx(
                handle, _OP_N, _OP_N, n, m, k, alpha.ctypes.data,
                b3.data.ptr, in_type, n, k * n, a3.data.ptr, in_type, k, m * k,
                beta.ctypes.data, out.data.ptr, out_type, n, m * n, batch, compute,
                _GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, old_mode)


def _gemm_via_wide_type(cp, out, a3, b3):
    if a3.dtype.kind == "f" or out.dtype.kind == "f":
        wide = cp.float64 if np.dtype(np.float64) in (a3.dtype, out.dtype) else cp.float32
    else:
        wide = cp.int64
    product = cp.matmul(a3.astype(wide), b3.astype(wide))
    if out.dtype == np.bool_:
        product = product != 0
    out[...] = product.reshape(out.shape).astype(out.dtype)
