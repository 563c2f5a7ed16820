"""Matrix products on the GPU through cuBLAS, called directly (no cupy.matmul).

cuBLAS is column-major. A row-major (m, k) array is, to cuBLAS, its (k, m) transpose, so
C = A @ B is computed as C^T = B^T @ A^T without moving any data. An operand that is a
transposed view of a C-contiguous array (what dot_general's VJP produces) is passed with
the transpose flag instead of being copied.

The calls go through ctypes into the libcublas that CuPy itself loaded, with CuPy's handle:
CuPy's own cublas wrappers refuse to run while a stream is being captured into a CUDA
graph, cuBLAS does not. Each call sets the handle's stream to the current stream and a
preallocated workspace (cuBLAS must not allocate during capture). Where the library
cannot be found the CuPy wrappers are the fallback (no graph capture then).

Each product shape (with its dtypes, compute type, layouts and pointer alignment) is timed
once, outside any graph capture, on cublasGemmEx and on cuBLASLt's candidates
(flamefx/kernels/cublaslt.py); the choice is kept in memory. cuBLASLt takes the stream and
workspace per call and costs the host half as much. FLAMEFX_GEMM_AUTOTUNE=0 keeps every
product on cublasGemmEx.

>>> _operand_layout((1, 4, 3), (48, 12, 4), 4)      # C-contiguous (4, 3): no transpose
(0, 3)
>>> _operand_layout((1, 4, 3), (48, 4, 16), 4)      # the transpose of a (3, 4) array
(1, 4)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os

import numpy as np

from flamefx.kernels import cublaslt

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


def _operand_layout(shape, strides, itemsize) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) for a (batch, rows, cols) operand, or None when
    it must be copied: cuBLAS takes row-major matrices and their transposes, each batch
    entry ``rows * cols`` elements after the previous one."""
    batch, rows, cols = shape
    s_batch, s_rows, s_cols = (st // itemsize for st in strides)
    if any(st * itemsize != full for st, full in zip((s_batch, s_rows, s_cols), strides)):
        return None
    if batch > 1 and s_batch != rows * cols:
        return None
    if (cols == 1 or s_cols == 1) and (rows == 1 or s_rows == cols):
        return _OP_N, max(cols, 1)
    if (rows == 1 or s_rows == 1) and (cols == 1 or s_cols == rows):
        return _OP_T, max(rows, 1)
    return None


def gemm_into(out, a, b, precision: str = "highest") -> None:
    """Writes ``a @ b`` into the preallocated C-contiguous ``out``, on the current stream.

    ``a``: (batch, m, k) or (m, k); ``b``: (batch, k, n) or (k, n); ``out``: (batch, m, n)
    or (m, n). float16/bfloat16/float32 accumulate in float32 ('tf32' and 'bf16' allow
    tensor-core inputs of that precision for float32); float64 in float64. Other dtypes
    (integers, bool) go through a CuPy matmul in a wide type. Transposed views need no copy.
    The first product of each shape times cublasGemmEx against cuBLASLt's candidates and
    keeps one (see ``_choose`` and ``pick``).

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
        layout_a = _OP_N, k
    layout_b = _operand_layout(b3.shape, b3.strides, b3.itemsize)
    if layout_b is None:
        b3 = cp.ascontiguousarray(b3)
        layout_b = _OP_N, n
    a_ptr, b_ptr, out_ptr = a3.data.ptr, b3.data.ptr, out.data.ptr
    device_id = cp.cuda.Device().id
    stream = cp.cuda.get_current_stream()
    workspace = _workspace(device_id)
    batch_strides = (m * k * a3.itemsize, k * n * a3.itemsize, m * n * out.itemsize)
    key = (device_id, a3.dtype.name, out.dtype.name, _compute_type(a3.dtype, precision),
           batch, m, n, k, layout_a, layout_b,
           cublaslt.alignment_of(a_ptr, b_ptr, out_ptr, *(batch_strides if batch > 1 else ())))
    choice = _choices.get(key, _UNTUNED) if AUTOTUNE else _GEMM_EX

    def gemm_ex():
        args = gemm_arguments(a3.dtype, out.dtype, precision, batch, m, n, k,
                              (a_ptr, *layout_a), (b_ptr, *layout_b), out_ptr)
        from cupy.cuda import device
        library = _library()
        if library is not None:
            _call_direct(library, device.get_cublas_handle(), stream.ptr, workspace, args)
        else:
            _call_cupy_wrappers(device.get_cublas_handle(), args)

    if choice is _UNTUNED:
        choice = _choose(cp, key, stream, gemm_ex, (a_ptr, b_ptr, out_ptr), workspace)
    if choice is _GEMM_EX:
        gemm_ex()
    else:
        plan, index = choice
        plan.launch(index, a_ptr, b_ptr, out_ptr, stream.ptr, workspace)


def _compute_type(in_dtype: np.dtype, precision: str) -> int:
    if in_dtype == np.float64:
        return _COMPUTE_64F
    return _COMPUTE_32F if in_dtype.name in _HALF_TYPES else _PRECISION_COMPUTE[precision]


def gemm_arguments(in_dtype, out_dtype, precision, batch, m, n, k, a, b, out_ptr) -> tuple:
    """The cublasGemmEx (batch 1) or cublasGemmStridedBatchedEx argument list, after the
    handle. ``a`` and ``b`` are (device pointer, transpose flag, leading dimension); the
    host scalars alpha and beta come last (they must stay alive through the call)."""
    in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
    compute = _compute_type(in_dtype, precision)
    scalar_type = np.float64 if in_dtype == np.float64 else np.float32
    alpha, beta = np.ones((), scalar_type), np.zeros((), scalar_type)
    in_type, out_type = _CUDA_DATA_TYPE[in_dtype.name], _CUDA_DATA_TYPE[out_dtype.name]
    (a_ptr, a_op, lda), (b_ptr, b_op, ldb) = a, b
    # Column-major view: C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m).
    if batch == 1:
        return ("cublasGemmEx", (b_op, a_op, n, m, k, alpha.ctypes.data, b_ptr, in_type, ldb,
                                 a_ptr, in_type, lda, beta.ctypes.data, out_ptr, out_type, n,
                                 compute, _GEMM_DEFAULT), (alpha, beta))
    return ("cublasGemmStridedBatchedEx",
            (b_op, a_op, n, m, k, alpha.ctypes.data, b_ptr, in_type, ldb, k * n,
             a_ptr, in_type, lda, m * k, beta.ctypes.data, out_ptr, out_type, n, m * n, batch,
             compute, _GEMM_DEFAULT), (alpha, beta))


# --- per-shape choice between cublasGemmEx and cuBLASLt's algorithms ---------------------------

# FLAMEFX_GEMM_AUTOTUNE=0 keeps every product on cublasGemmEx (no timing, no cuBLASLt).
AUTOTUNE = os.environ.get("FLAMEFX_GEMM_AUTOTUNE", "1") != "0"
_GEMM_EX, _UNTUNED = "cublasGemmEx", "untuned"
_REQUIRED_SPEEDUP = 1.05
# key -> _GEMM_EX or (cublaslt.LtMatmul, candidate index); the key holds device, dtypes,
# compute type, batch, m, n, k, both operand layouts and the pointers' alignment.
_choices: dict[tuple, object] = {}
# key -> milliseconds of [cublasGemmEx, Lt candidate 0, 1, ...], for profiles and tests.
timings: dict[tuple, list[float]] = {}


def _choose(cp, key: tuple, stream, gemm_ex, pointers: tuple, workspace: int):
    """Times cublasGemmEx and each cuBLASLt candidate on this product (its output is
    overwritten, the real call comes after) and remembers ``pick``'s choice for ``key``. During a
    graph capture nothing may be timed: cublasGemmEx runs and the shape stays untuned."""
    try:
        capturing = stream.is_capturing()
    except Exception:  # noqa: BLE001  (the legacy stream cannot be asked during a capture)
        capturing = True
    if capturing:
        return _GEMM_EX
    plan = _lt_plan(key, workspace)
    if plan is None:
        _choices[key] = _GEMM_EX
        return _GEMM_EX
    a_ptr, b_ptr, out_ptr = pointers
    launches = [gemm_ex] + [functools.partial(plan.launch, i, a_ptr, b_ptr, out_ptr, stream.ptr,
                                              workspace) for i in range(len(plan.algos))]
    times = timings[key] = cublaslt.time_candidates(cp, launches)
    best = pick(times)
    _choices[key] = _GEMM_EX if best == 0 else (plan, best - 1)
    log.debug("GEMM %s: %s ms, candidate %d chosen", key, times, best)
    return _choices[key]


def pick(times: list[float]) -> int:
    """Which of [cublasGemmEx, Lt candidate 0, 1, ...] to keep, from their milliseconds.

    The heuristic's first candidate runs the kernel cublasGemmEx picks (the same GPU time on
    every shape measured) at under half the host cost per call (H100: gemm_into 47 against
    107 us), so it is the default. Another displaces it only when clearly faster: gains of
    3-4% timed alone did not carry over into whole steps (H100: W1 4% slower with them).

    >>> pick([1.0, 1.0, 0.97]), pick([1.0, 1.0, 0.9]), pick([0.5, 1.0])
    (1, 2, 0)
    """
    best = min(range(len(times)), key=times.__getitem__)
    return 1 if times[best] * _REQUIRED_SPEEDUP > times[1] else best


def _lt_plan(key: tuple, workspace: int):
    """cuBLASLt's descriptors and candidates for ``key``, or None (no library, no candidate,
    or the heuristic refused the shape)."""
    lib = cublaslt.library()
    if lib is None:
        return None
    device_id, in_name, out_name, compute, batch, m, n, k, layout_a, layout_b, alignment = key
    wide = compute == _COMPUTE_64F
    try:
        plan = cublaslt.LtMatmul(
            lib, cublaslt.handle(lib, device_id), in_type=_CUDA_DATA_TYPE[in_name],
            out_type=_CUDA_DATA_TYPE[out_name], compute=compute,
            scale_type=_CUDA_DATA_TYPE["float64" if wide else "float32"],
            scale_ctype=ctypes.c_double if wide else ctypes.c_float, batch=batch, m=m, n=n,
            k=k, a=layout_a, b=layout_b, alignment=alignment, workspace_bytes=WORKSPACE_BYTES)
    except cublaslt.CublasLtError as e:
        log.info("cuBLASLt cannot run GEMM %s: %s", key, e)
        return None
    return plan if plan.algos else None


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


def _candidate_paths() -> list[str]:
    """Where the libcublas CuPy uses may be: already mapped into this process (CuPy's
    extension loaded it), CuPy's CUDA path, the nvidia-cublas wheel, the linker's search."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            paths += sorted({line.split()[-1] for line in maps
                             if "libcublas.so" in line and "libcublasLt" not in line})
    except OSError:  # no /proc (not Linux): the other places remain
        log.debug("cannot read /proc/self/maps")
    cp = _cp()
    roots = []
    try:
        roots.append(os.path.join(cp.cuda.get_cuda_path() or "", "lib64"))
    except Exception as e:  # noqa: BLE001  (no CUDA toolkit path: try the others)
        log.debug("no CUDA path from CuPy: %s", e)
    try:
        import nvidia.cublas
        roots += [os.path.join(p, "lib") for p in nvidia.cublas.__path__]
    except ImportError:
        pass
    for root in roots:
        paths += sorted(glob.glob(os.path.join(root, "libcublas.so.*")), reverse=True)
    found = ctypes.util.find_library("cublas")
    if found:
        paths.append(found)
    return paths


@functools.cache
def _library():
    """libcublas with typed entry points, or None (then the CuPy wrappers are used)."""
    from cupy.cuda import device
    device.get_cublas_handle()  # makes CuPy load its libcublas first, so we find that one
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
        except (OSError, AttributeError) as e:
            log.info("cannot use %s for direct cuBLAS calls: %s", path, e)
            continue
        return lib
    log.warning("libcublas not found for direct calls; CUDA graphs cannot capture GEMMs")
    return None


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
