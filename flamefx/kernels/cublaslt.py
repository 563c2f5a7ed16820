"""GEMMs with a fused epilogue (bias, bias + ReLU, bias + tanh-GELU, bias gradient) through
cuBLASLt, called through ctypes as flamefx/kernels/cublas.py calls cuBLAS, so that CUDA
graphs capture them.

A ``LtGemm`` is prepared once per (shapes, transposes, dtype, epilogue, precision): the
matmul descriptor, the four matrix layouts and the algorithm the heuristic picked. A call
is then one ``cublasLtMatmulDescSetAttribute`` (the bias pointer) and one
``cublasLtMatmul``. Preparing returns None (and logs why) where the library is missing or
the heuristic has no algorithm; the planner then keeps today's unfused path.

Row-major operands are passed as cuBLAS sees them (see cublas.py): the row-major product
``out (M, n) = lhs (M, k) @ rhs (k, n)`` is the column-major ``D (n x M) = A (n x k) @ B
(k x M)`` with A the rhs and B the lhs. So a bias along the output's last axis (one value
per column) is cuBLASLt's bias over D's rows, and the sum over k of the rhs is BGRADA, of
the lhs BGRADB. Enum values and struct layouts are those of CUDA 13's cublasLt.h.

>>> column_major_shapes(m=512, n=10, k=1024, lhs_trans=False, rhs_trans=False)
((10, 1024), (1024, 512), (10, 512))
>>> column_major_shapes(m=1024, n=1024, k=512, lhs_trans=True, rhs_trans=False)  # lhs^T @ rhs
((1024, 512), (1024, 512), (1024, 1024))
"""

from __future__ import annotations

import ctypes
import functools
import logging

import numpy as np

from flamefx.kernels import cublas

log = logging.getLogger("flamefx.cublaslt")

# cublasLtEpilogue_t (cublasLt.h).
EPILOGUES = {"bias": 4, "relu_bias": 6, "gelu_bias": 36, "bgrada": 256, "bgradb": 512}
# cublasLtMatmulDescAttributes_t, cublasLtMatmulPreferenceAttributes_t.
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
_PREF_MAX_WORKSPACE_BYTES = 1
_PREF_MIN_ALIGNMENT = (5, 6, 7, 8)  # A, B, C, D
# Operands must start this many bytes apart from 0 for the chosen algorithm (CuPy's pool
# hands out 512-byte aligned blocks; a view at an offset is copied first).
ALIGNMENT = 256
_CUDA_R_32F = 0

_P, _I, _U64, _I64, _SZ = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int64,
                           ctypes.c_size_t)


class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspaceSize", _SZ), ("state", _I),
                ("wavesCount", ctypes.c_float), ("reserved", _I * 4)]


_SIGNATURES = {
    "cublasLtCreate": (ctypes.POINTER(_P),),
    "cublasLtMatmulDescCreate": (ctypes.POINTER(_P), _I, _I),
    "cublasLtMatmulDescSetAttribute": (_P, _I, _P, _SZ),
    "cublasLtMatrixLayoutCreate": (ctypes.POINTER(_P), _I, _U64, _U64, _I64),
    "cublasLtMatmulPreferenceCreate": (ctypes.POINTER(_P),),
    "cublasLtMatmulPreferenceSetAttribute": (_P, _I, _P, _SZ),
    "cublasLtMatmulAlgoGetHeuristic": (_P, _P, _P, _P, _P, _P, _P, _I,
                                       ctypes.POINTER(_HeuristicResult), ctypes.POINTER(_I)),
    "cublasLtMatmul": (_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                       ctypes.POINTER(_Algo), _P, _SZ, _P),
}


def column_major_shapes(m: int, n: int, k: int, lhs_trans: bool, rhs_trans: bool) -> tuple:
    """(rows, cols) of the stored A (the rhs), B (the lhs) and D (the output) as cuBLASLt
    sees them (column-major; each leading dimension is its rows, the operands being
    C-contiguous). The lhs is stored (M, k), or (k, M) with ``lhs_trans``; the rhs (k, n),
    or (n, k) with ``rhs_trans``; a row-major (r, c) array is the column-major (c x r)."""
    a = (k, n) if rhs_trans else (n, k)
    b = (m, k) if lhs_trans else (k, m)
    return a, b, (n, m)


@functools.cache
def library():
    """libcublasLt with typed entry points, or None (then no epilogue GEMMs)."""
    try:
        from cupy.cuda import device
        device.get_cublas_handle()  # CuPy's libcublas loads the libcublasLt it goes with
    except Exception as e:  # noqa: BLE001  (no CuPy, no GPU: nothing to load)
        log.info("no cuBLAS handle, so no cuBLASLt epilogues: %s", e)
        return None
    lib = cublas.load_library("cublasLt", ("nvidia.cublas", "nvidia.cu13"), _SIGNATURES,
                              "cuBLASLt", log)
    if lib is None:
        log.warning("libcublasLt not found: GEMM epilogues stay unfused")
    return lib


class LtError(RuntimeError):
    pass


def _check(status: int, name: str) -> None:
    if status != 0:
        raise LtError(f"{name} failed with cublasStatus_t {status}")


_handles: dict[int, int] = {}
_workspaces: dict[int, int] = {}


def _handle(lib, device_id: int) -> int:
    """One cuBLASLt handle per device, made with that device current."""
    handle = _handles.get(device_id)
    if handle is None:
        made = _P()
        _check(lib.cublasLtCreate(ctypes.byref(made)), "cublasLtCreate")
        handle = _handles[device_id] = made.value
    return handle


def _workspace(device_id: int) -> int:
    """cuBLASLt's own workspace (cuBLAS's stays cuBLAS's: the two may be queued on
    different streams), allocated outside any pool, kept for captured graphs."""
    ptr = _workspaces.get(device_id)
    if ptr is None:
        ptr = _workspaces[device_id] = cublas._cp().cuda.runtime.malloc(cublas.WORKSPACE_BYTES)
    return ptr


def _set(setter, obj, attr: int, value) -> None:
    _check(setter(obj, attr, ctypes.byref(value), ctypes.sizeof(value)), setter.__name__)


class LtGemm:
    """One prepared epilogue GEMM: ``out (M, n) = op(lhs) @ op(rhs)`` plus the epilogue.

    ``lhs_trans``: the lhs is stored (k, M) and used transposed; ``rhs_trans``: the rhs is
    stored (n, k). The bias (or bias-gradient output) is a contiguous vector of the output
    dtype: n long for 'bias', 'relu_bias', 'gelu_bias' and 'bgrada' (the sum over k of the
    rhs), M long for 'bgradb' (of the lhs).
    """

    def __init__(self, lib, device_id: int, m: int, n: int, k: int, lhs_trans: bool,
                 rhs_trans: bool, dtype: np.dtype, epilogue: str, precision: str):
        self.lib, self.device_id = lib, device_id
        self.handle = _handle(lib, device_id)
        self.workspace = _workspace(device_id)
        dtype = np.dtype(dtype)
        data_type = cublas._CUDA_DATA_TYPE[dtype.name]
        compute = (cublas._COMPUTE_32F if dtype.name in cublas._HALF_TYPES
                   else cublas._PRECISION_COMPUTE[precision])
        desc = _P()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(desc), compute, _CUDA_R_32F),
               "cublasLtMatmulDescCreate")
        self.desc = desc.value
        set_desc = lib.cublasLtMatmulDescSetAttribute
        # A is the rhs, B the lhs (column-major view, see the module docstring).
        _set(set_desc, self.desc, _DESC_TRANSA, ctypes.c_int32(cublas._OP_T if rhs_trans
                                                               else cublas._OP_N))
        _set(set_desc, self.desc, _DESC_TRANSB, ctypes.c_int32(cublas._OP_T if lhs_trans
                                                               else cublas._OP_N))
        _set(set_desc, self.desc, _DESC_EPILOGUE, ctypes.c_uint32(EPILOGUES[epilogue]))
        # The bias (or bias gradient) has D's type, cuBLASLt's default for these types.
        self.layouts = [self._layout(data_type, rows, cols) for rows, cols in
                        column_major_shapes(m, n, k, lhs_trans, rhs_trans)]
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.bias_ptr = _P(0)
        self.algo = self._pick_algo()

    def _layout(self, data_type: int, rows: int, cols: int) -> int:
        layout = _P()
        _check(self.lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), data_type, rows, cols,
                                                   rows), "cublasLtMatrixLayoutCreate")
        return layout.value

    def _pick_algo(self) -> _Algo | None:
        lib = self.lib
        pref = _P()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)),
               "cublasLtMatmulPreferenceCreate")
        set_pref = lib.cublasLtMatmulPreferenceSetAttribute
        _set(set_pref, pref.value, _PREF_MAX_WORKSPACE_BYTES,
             ctypes.c_uint64(cublas.WORKSPACE_BYTES))
        for attr in _PREF_MIN_ALIGNMENT:
            _set(set_pref, pref.value, attr, ctypes.c_uint32(ALIGNMENT))
        # The heuristic reads the bias pointer's alignment (never the memory): any aligned
        # device address will do; the workspace's is one.
        self._set_bias(self.workspace)
        result, returned = _HeuristicResult(), _I(0)
        a, b, d = self.layouts
        _check(lib.cublasLtMatmulAlgoGetHeuristic(self.handle, self.desc, a, b, d, d, pref.value,
                                                  1, ctypes.byref(result), ctypes.byref(returned)),
               "cublasLtMatmulAlgoGetHeuristic")
        if returned.value < 1 or result.state != 0:
            return None
        return result.algo

    def _set_bias(self, ptr: int) -> None:
        self.bias_ptr.value = ptr
        _check(self.lib.cublasLtMatmulDescSetAttribute(
            self.desc, _DESC_BIAS_POINTER, ctypes.byref(self.bias_ptr),
            ctypes.sizeof(self.bias_ptr)), "cublasLtMatmulDescSetAttribute")

    def __call__(self, lhs_ptr: int, rhs_ptr: int, out_ptr: int, bias_ptr: int,
                 stream: int) -> None:
        """Queues the GEMM on ``stream``; every pointer ``ALIGNMENT``-aligned."""
        self._set_bias(bias_ptr)
        a, b, d = self.layouts
        _check(self.lib.cublasLtMatmul(
            self.handle, self.desc, ctypes.byref(self.alpha), rhs_ptr, a, lhs_ptr, b,
            ctypes.byref(self.beta), out_ptr, d, out_ptr, d, ctypes.byref(self.algo),
            self.workspace, cublas.WORKSPACE_BYTES, stream), "cublasLtMatmul")


_prepared: dict[tuple, LtGemm | None] = {}


def prepare(device_id: int, m: int, n: int, k: int, lhs_trans: bool, rhs_trans: bool, dtype,
            epilogue: str, precision: str) -> LtGemm | None:
    """The prepared GEMM for these shapes (cached), or None where cuBLASLt cannot run it
    (no library, an unsupported dtype, no algorithm): the caller keeps the unfused path.

    >>> prepare(0, 512, 1024, 1024, False, False, "float32", "relu_bias",
    ...         "highest")   # doctest: +SKIP
    <flamefx.kernels.cublaslt.LtGemm object at ...>
    """
    dtype = np.dtype(dtype)
    key = (device_id, m, n, k, lhs_trans, rhs_trans, dtype, epilogue, precision)
    if key in _prepared:
        return _prepared[key]
    gemm = None
    if dtype.name not in ("float32", "float16", "bfloat16"):
        log.info("no cuBLASLt epilogue for %s GEMMs", dtype.name)
    elif min(m, n, k) < 1:
        log.info("no cuBLASLt epilogue for an empty GEMM (%d, %d, %d)", m, n, k)
    else:
        lib = library()
        if lib is not None:
            try:
                with cublas._cp().cuda.Device(device_id):
                    gemm = LtGemm(lib, device_id, m, n, k, lhs_trans, rhs_trans, dtype,
                                  epilogue, precision)
                if gemm.algo is None:
                    log.info("cuBLASLt has no algorithm for %s (M=%d n=%d k=%d %s): unfused",
                             epilogue, m, n, k, dtype.name)
                    gemm = None
            except Exception as e:  # noqa: BLE001  (any failure here keeps the unfused path)
                log.warning("cuBLASLt refused %s (M=%d n=%d k=%d %s): %s: %s; unfused",
                            epilogue, m, n, k, dtype.name, type(e).__name__, e)
                gemm = None
    _prepared[key] = gemm
    return gemm
