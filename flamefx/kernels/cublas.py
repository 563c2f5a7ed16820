"""Matrix products on the GPU through cuBLAS, called directly (no cupy.matmul).

cuBLAS is column-major. A row-major (m, k) array is, to cuBLAS, its (k, m) transpose, so
C = A @ B is computed as C^T = B^T @ A^T without moving any data. An operand that is a
transposed view of a C-contiguous array (what dot_general's VJP produces) is passed with
the transpose flag instead of being copied, and so is an operand broadcast over the batch
(batch stride 0: cuBLAS reads the same matrix for every batch entry).

The calls go through ctypes into the libcublas that CuPy itself loaded, with CuPy's handle:
CuPy's own cublas wrappers refuse to run while a stream is being captured into a CUDA
graph, cuBLAS does not. Each call sets the handle's stream to the current stream and a
preallocated workspace (cuBLAS must not allocate during capture). Where the library
cannot be found the CuPy wrappers are the fallback (no graph capture then).

>>> _operand_layout((1, 4, 3), (48, 12, 4), 4)      # C-contiguous (4, 3): no transpose
(0, 3, 12)
>>> _operand_layout((1, 4, 3), (48, 4, 16), 4)      # the transpose of a (3, 4) array
(1, 4, 12)
>>> _operand_layout((5, 4, 3), (0, 12, 4), 4)       # one (4, 3) array for all 5 entries
(0, 3, 0)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os

import numpy as np

log = logging.getLogger("flamefx.cublas")

# cudaDataType and cublasComputeType_t values (stable parts of the CUDA ABI).
_CUDA_DATA_TYPE = {"float16": 2, "float32": 0, "float64": 1, "bfloat16": 14}
_COMPUTE_32F, _COMPUTE_32F_FAST_16BF, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 75, 77, 70
_PRECISION_COMPUTE = {"highest": _COMPUTE_32F, "tf32": _COMPUTE_32F_FAST_TF32,
                      "bf16": _COMPUTE_32F_FAST_16BF}
_OP_N, _OP_T, _POINTER_MODE_HOST, _GEMM_DEFAULT = 0, 1, 0, -1
_HALF_TYPES = ("float16", "bfloat16")
# cuBLAS's recommended workspace for Hopper (its docs: 32 MiB; smaller GPUs need less).
WORKSPACE_BYTES = 32 * 2**20


def _cp():
    from flamefx import devices
    return devices.cupy()


def _direct(in_dtype: np.dtype, out_dtype: np.dtype) -> bool:
    """Whether cuBLAS takes these input/output types in one call."""
    if in_dtype.name not in _CUDA_DATA_TYPE:
        return False
    return in_dtype == out_dtype or (in_dtype.name in _HALF_TYPES and out_dtype.name == "float32")


def _operand_layout(shape, strides, itemsize) -> tuple[int, int, int] | None:
    """(transpose flag, leading dimension, batch stride in elements) for a (batch, rows,
    cols) operand, or None when it must be copied: cuBLAS takes row-major matrices and
    their transposes, each batch entry ``rows * cols`` elements after the previous one or
    all of them the same matrix (batch stride 0, a broadcast operand)."""
    batch, rows, cols = shape
    s_batch, s_rows, s_cols = (st // itemsize for st in strides)
    if any(st * itemsize != full for st, full in zip((s_batch, s_rows, s_cols), strides)):
        return None
    if batch == 1:
        s_batch = rows * cols  # never read (cublasGemmEx); the dense stride, for a clear value
    elif s_batch not in (0, rows * cols):
        return None
    if (cols == 1 or s_cols == 1) and (rows == 1 or s_rows == cols):
        return _OP_N, max(cols, 1), s_batch
    if (rows == 1 or s_rows == 1) and (cols == 1 or s_cols == rows):
        return _OP_T, max(rows, 1), s_batch
    return None


def gemm_into(out, a, b, precision: str = "highest") -> None:
    """Writes ``a @ b`` into the preallocated C-contiguous ``out``, on the current stream.

    ``a``: (batch, m, k) or (m, k); ``b``: (batch, k, n) or (k, n); ``out``: (batch, m, n)
    or (m, n). float16/bfloat16/float32 accumulate in float32 ('tf32' and 'bf16' allow
    tensor-core inputs of that precision for float32); float64 in float64. Other dtypes
    (integers, bool) go through a CuPy matmul in a wide type. Transposed views and operands
    broadcast over the batch (stride 0, e.g. ``cupy.broadcast_to(w, (batch, m, k))``) need
    no copy.

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
    layout_a = _operand_layout(a3.shape, a3.strides, a3.itemsize)
    if layout_a is None:
        a3 = cp.ascontiguousarray(a3)
        layout_a = _OP_N, k, m * k
    layout_b = _operand_layout(b3.shape, b3.strides, b3.itemsize)
    if layout_b is None:
        b3 = cp.ascontiguousarray(b3)
        layout_b = _OP_N, n, k * n
    args = gemm_arguments(a3.dtype, out.dtype, precision, batch, m, n, k,
                          (a3.data.ptr, *layout_a), (b3.data.ptr, *layout_b), out.data.ptr)
    from cupy.cuda import device
    handle = device.get_cublas_handle()
    stream = cp.cuda.get_current_stream().ptr
    library = _library()
    if library is not None:
        _call_direct(library, handle, stream, _workspace(cp.cuda.Device().id), args)
    else:
        _call_cupy_wrappers(handle, args)


def gemm_arguments(in_dtype, out_dtype, precision, batch, m, n, k, a, b, out_ptr) -> tuple:
    """The cublasGemmEx (batch 1) or cublasGemmStridedBatchedEx argument list, after the
    handle. ``a`` and ``b`` are (device pointer, transpose flag, leading dimension, batch
    stride in elements: 0 for one matrix shared by every batch entry); the host scalars
    alpha and beta come last (they must stay alive through the call).

    >>> name, args, _ = gemm_arguments("float32", "float32", "highest", 8, 4, 3, 2,
    ...                                (1000, 0, 2, 0), (2000, 0, 3, 6), 3000)
    >>> name, args[9], args[13], args[18]   # B's stride, A's (shared), the output's
    ('cublasGemmStridedBatchedEx', 6, 0, 12)
    """
    in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
    if in_dtype == np.float64:
        compute, scalar_type = _COMPUTE_64F, np.float64
    else:
        compute = (_COMPUTE_32F if in_dtype.name in _HALF_TYPES
                   else _PRECISION_COMPUTE[precision])
        scalar_type = np.float32
    alpha, beta = np.ones((), scalar_type), np.zeros((), scalar_type)
    in_type, out_type = _CUDA_DATA_TYPE[in_dtype.name], _CUDA_DATA_TYPE[out_dtype.name]
    (a_ptr, a_op, lda, a_stride), (b_ptr, b_op, ldb, b_stride) = a, b
    # Column-major view: C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m).
    if batch == 1:
        return ("cublasGemmEx", (b_op, a_op, n, m, k, alpha.ctypes.data, b_ptr, in_type, ldb,
                                 a_ptr, in_type, lda, beta.ctypes.data, out_ptr, out_type, n,
                                 compute, _GEMM_DEFAULT), (alpha, beta))
    return ("cublasGemmStridedBatchedEx",
            (b_op, a_op, n, m, k, alpha.ctypes.data, b_ptr, in_type, ldb, b_stride,
             a_ptr, in_type, lda, a_stride, beta.ctypes.data, out_ptr, out_type, n, m * n, batch,
             compute, _GEMM_DEFAULT), (alpha, beta))


# --- the direct path: libcublas through ctypes -------------------------------------------------

_P, _I, _LL, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_size_t
_SIGNATURES = {
    "cublasSetStream_v2": (_P, _P),
    "cublasSetWorkspace_v2": (_P, _P, _SZ),
    "cublasSetPointerMode_v2": (_P, _I),
    "cublasGemmEx": (_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _I, _I, _I,
                     _I),
    "cublasGemmStridedBatchedEx": (_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _LL, _P, _I, _I,
                                   _LL, _P, _P, _I, _I, _LL, _I, _I, _I),
}


def _candidate_paths(stem: str, packages: tuple[str, ...]) -> list[str]:
    """Where the ``lib<stem>`` CuPy uses may be: already mapped into this process (CuPy's
    extension loaded it), CuPy's CUDA path, the nvidia wheels ``packages``, the linker's
    search."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            paths += sorted({line.split()[-1] for line in maps if f"lib{stem}.so" in line})
    except OSError:  # no /proc (not Linux): the other places remain
        log.debug("cannot read /proc/self/maps")
    roots = []
    try:
        roots.append(os.path.join(_cp().cuda.get_cuda_path() or "", "lib64"))
    except Exception as e:  # noqa: BLE001  (no CUDA toolkit path: try the others)
        log.debug("no CUDA path from CuPy: %s", e)
    for package in packages:
        try:
            module = __import__(package, fromlist=["__path__"])
            roots += [os.path.join(p, "lib") for p in module.__path__]
        except ImportError:
            pass
    for root in roots:
        paths += sorted(glob.glob(os.path.join(root, f"lib{stem}.so.*")), reverse=True)
    found = ctypes.util.find_library(stem)
    if found:
        paths.append(found)
    return paths


def load_library(stem: str, packages: tuple[str, ...], signatures: dict, purpose: str,
                 logger: logging.Logger):
    """The first ``lib<stem>`` found (``_candidate_paths``) that loads and has every entry
    point of ``signatures`` (name -> argtypes; each returns a status int), typed; None
    when none does. Used for libcublas here and libcublasLt in cublaslt.py.

    >>> load_library("no_such_lib", (), {}, "nothing", log) is None
    True
    """
    for path in _candidate_paths(stem, packages):
        try:
            lib = ctypes.CDLL(path)
            for name, argtypes in signatures.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
        except (OSError, AttributeError) as e:
            logger.info("cannot use %s for %s: %s", path, purpose, e)
            continue
        return lib
    return None


@functools.cache
def _library():
    """libcublas with typed entry points, or None (then the CuPy wrappers are used)."""
    from cupy.cuda import device
    device.get_cublas_handle()  # makes CuPy load its libcublas first, so we find that one
    lib = load_library("cublas", ("nvidia.cublas",), _SIGNATURES, "direct cuBLAS calls", log)
    if lib is None:
        log.warning("libcublas not found for direct calls; CUDA graphs cannot capture GEMMs")
    return lib


_workspaces: dict[int, int] = {}


def _workspace(device_id: int) -> int:
    """One workspace per device, allocated once outside any memory pool (a pool active
    during a graph capture must not own it) and kept for the life of the process: captured
    graphs keep using it."""
    ptr = _workspaces.get(device_id)
    if ptr is None:
        ptr = _workspaces[device_id] = _cp().cuda.runtime.malloc(WORKSPACE_BYTES)
    return ptr


class CublasError(RuntimeError):
    pass


def _check(status: int, name: str) -> None:
    if status != 0:
        raise CublasError(f"{name} failed with cublasStatus_t {status}")


def _call_direct(library, handle: int, stream: int, workspace: int, args: tuple) -> None:
    name, fn_args, _scalars = args  # _scalars keeps alpha and beta alive through the call
    # SetStream resets the workspace to cuBLAS's own pool, so the workspace comes after it.
    _check(library.cublasSetStream_v2(handle, stream), "cublasSetStream_v2")
    _check(library.cublasSetWorkspace_v2(handle, workspace, WORKSPACE_BYTES),
           "cublasSetWorkspace_v2")
    _check(library.cublasSetPointerMode_v2(handle, _POINTER_MODE_HOST),
           "cublasSetPointerMode_v2")
    _check(getattr(library, name)(handle, *fn_args), name)


def _call_cupy_wrappers(handle: int, args: tuple) -> None:
    from cupy.cuda import cublas
    name, fn_args, _scalars = args
    fn = cublas.gemmEx if name == "cublasGemmEx" else cublas.gemmStridedBatchedEx
    old_mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, _POINTER_MODE_HOST)
    try:
        fn(handle, *fn_args)
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
