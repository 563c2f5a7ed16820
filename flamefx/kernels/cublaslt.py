"""cuBLASLt matrix products: one descriptor set per product shape, the algorithms its
heuristic offers, and a timer that picks the fastest of several launches.

cublasGemmEx ignores its algorithm argument on sm_80 and newer, so a shape it runs poorly
(the H100's float32 GEMMs of a 512x1024x1024 layer ran at half the SGEMM rate) stays slow.
cuBLASLt lists candidate kernels for a shape; timing them once and keeping the fastest is
what XLA's autotuner does. flamefx/kernels/cublas.py decides when to use this module.

Calls go through ctypes into the libcublasLt that libcublas itself loaded. The layout follows
cublas.py: a row-major (m, k) array is a column-major (k, m) one, so C = A @ B runs as
C^T = B^T @ A^T; Lt's "A" is our ``b`` and its "B" our ``a``.

>>> _column_major_shape(_OP_N, rows=4, cols=3)    # a C-contiguous (4, 3) array
(3, 4)
>>> _column_major_shape(_OP_T, rows=4, cols=3)    # the transposed view of a (3, 4) array
(4, 3)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import math
import os
import time

log = logging.getLogger("flamefx.cublaslt")

_OP_N, _OP_T = 0, 1
# Enum values from cublasLt.h (stable across CUDA 11-13).
_DESC_COMPUTE_TYPE, _DESC_SCALE_TYPE, _DESC_TRANSA, _DESC_TRANSB = 0, 1, 3, 4
_LAYOUT_BATCH_COUNT, _LAYOUT_STRIDED_BATCH_OFFSET = 5, 6
_PREF_MAX_WORKSPACE_BYTES = 1
_PREF_MIN_ALIGNMENT_BYTES = (5, 6, 7, 8)  # A, B, C, D
# Candidates asked of the heuristic: its first few cover what timing can tell apart.
MAX_CANDIDATES = 8


class MatmulAlgo(ctypes.Structure):
    """cublasLtMatmulAlgo_t: semi-opaque, eight 64-bit words."""
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class HeuristicResult(ctypes.Structure):
    """cublasLtMatmulHeuristicResult_t."""
    _fields_ = [("algo", MatmulAlgo), ("workspace_size", ctypes.c_size_t),
                ("state", ctypes.c_int), ("waves_count", ctypes.c_float),
                ("reserved", ctypes.c_int * 4)]


_P, _I, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_PP = ctypes.POINTER(ctypes.c_void_p)
_SIGNATURES = {
    "cublasLtCreate": (_PP,),
    "cublasLtMatmulDescCreate": (_PP, _I, _I),
    "cublasLtMatmulDescSetAttribute": (_P, _I, _P, _SZ),
    "cublasLtMatrixLayoutCreate": (_PP, _I, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64),
    "cublasLtMatrixLayoutSetAttribute": (_P, _I, _P, _SZ),
    "cublasLtMatmulPreferenceCreate": (_PP,),
    "cublasLtMatmulPreferenceSetAttribute": (_P, _I, _P, _SZ),
    "cublasLtMatmulAlgoGetHeuristic": (_P, _P, _P, _P, _P, _P, _P, _I,
                                       ctypes.POINTER(HeuristicResult), ctypes.POINTER(_I)),
    "cublasLtMatmul": (_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                       ctypes.POINTER(MatmulAlgo), _P, _SZ, _P),
}


class CublasLtError(RuntimeError):
    pass


def _check(status: int, name: str) -> None:
    if status != 0:
        raise CublasLtError(f"{name} failed with cublasStatus_t {status}")


def _candidate_paths() -> list[str]:
    """Where libcublasLt may be: mapped into this process already (libcublas needs it), next
    to a mapped libcublas, in the nvidia-cublas wheel, on the linker's search path."""
    paths, folders = [], []
    try:
        with open("/proc/self/maps") as maps:
            mapped = {line.split()[-1] for line in maps if "libcublas" in line}
    except OSError:  # no /proc (not Linux): the other places remain
        mapped = set()
    paths += sorted(p for p in mapped if "libcublasLt.so" in p)
    folders += sorted({os.path.dirname(p) for p in mapped})
    try:
        import nvidia.cublas
        folders += [os.path.join(p, "lib") for p in nvidia.cublas.__path__]
    except ImportError:
        pass
    for folder in folders:
        paths += sorted(glob.glob(os.path.join(folder, "libcublasLt.so.*")), reverse=True)
    found = ctypes.util.find_library("cublasLt")
    if found:
        paths.append(found)
    return paths


@functools.cache
def library():
    """libcublasLt with typed entry points, or None (then products stay on cublasGemmEx)."""
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
        except (OSError, AttributeError) as e:
            log.info("cannot use %s for cuBLASLt calls: %s", path, e)
            continue
        return lib
    log.info("libcublasLt not found; matrix products use cublasGemmEx only")
    return None


_handles: dict[int, int] = {}


def handle(lib, device_id: int) -> int:
    """One cuBLASLt handle per device, created on first use and kept."""
    found = _handles.get(device_id)
    if found is None:
        created = ctypes.c_void_p()
        _check(lib.cublasLtCreate(ctypes.byref(created)), "cublasLtCreate")
        found = _handles[device_id] = created.value
    return found


def _column_major_shape(op: int, rows: int, cols: int) -> tuple[int, int]:
    """(rows, cols) of the column-major matrix cuBLAS reads for a row-major (rows, cols)
    operand passed with transpose flag ``op``."""
    return (cols, rows) if op == _OP_N else (rows, cols)


def _set(setter, obj, attribute: int, value: ctypes._SimpleCData, name: str) -> None:
    _check(setter(obj, attribute, ctypes.byref(value), ctypes.sizeof(value)), name)


class LtMatmul:
    """The descriptors of one product shape and the algorithms cuBLASLt's heuristic offers
    for it. ``launch(i, ...)`` runs candidate ``i`` on the given pointers; descriptors and
    the alpha/beta scalars live as long as this object (captured graphs refer to them only
    through the values copied at launch).

    ``a``/``b`` are (transpose flag, leading dimension) of the row-major (batch, m, k) and
    (batch, k, n) operands; the output is a C-contiguous (batch, m, n) array.
    """

    def __init__(self, lib, lt_handle: int, *, in_type: int, out_type: int, compute: int,
                 scale_type: int, scale_ctype, batch: int, m: int, n: int, k: int,
                 a: tuple[int, int], b: tuple[int, int], alignment: int,
                 workspace_bytes: int):
        self.lib, self.handle = lib, lt_handle
        self.alpha, self.beta = scale_ctype(1), scale_ctype(0)
        self.alpha_ptr = ctypes.addressof(self.alpha)
        self.beta_ptr = ctypes.addressof(self.beta)
        self.workspace_bytes = workspace_bytes
        self.desc = ctypes.c_void_p()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), compute, scale_type),
               "cublasLtMatmulDescCreate")
        (a_op, lda), (b_op, ldb) = a, b
        set_desc = lib.cublasLtMatmulDescSetAttribute
        _set(set_desc, self.desc, _DESC_TRANSA, ctypes.c_int32(b_op), "TRANSA")
        _set(set_desc, self.desc, _DESC_TRANSB, ctypes.c_int32(a_op), "TRANSB")
        # Column-major view: C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m).
        self.layout_lt_a = self._layout(in_type, *_column_major_shape(b_op, k, n), ldb,
                                        batch, k * n)
        self.layout_lt_b = self._layout(in_type, *_column_major_shape(a_op, m, k), lda,
                                        batch, m * k)
        self.layout_out = self._layout(out_type, n, m, n, batch, m * n)
        self.algos = self._heuristic(alignment)
        self.algo_ptrs = [ctypes.pointer(algo) for algo in self.algos]

    def _layout(self, data_type, rows, cols, ld, batch, batch_stride) -> ctypes.c_void_p:
        layout = ctypes.c_void_p()
        _check(self.lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), data_type, rows, cols,
                                                   ld), "cublasLtMatrixLayoutCreate")
        if batch > 1:
            set_layout = self.lib.cublasLtMatrixLayoutSetAttribute
            _set(set_layout, layout, _LAYOUT_BATCH_COUNT, ctypes.c_int32(batch), "BATCH_COUNT")
            _set(set_layout, layout, _LAYOUT_STRIDED_BATCH_OFFSET, ctypes.c_int64(batch_stride),
                 "STRIDED_BATCH_OFFSET")
        return layout

    def _heuristic(self, alignment: int) -> list[MatmulAlgo]:
        lib = self.lib
        preference = ctypes.c_void_p()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(preference)),
               "cublasLtMatmulPreferenceCreate")
        set_pref = lib.cublasLtMatmulPreferenceSetAttribute
        _set(set_pref, preference, _PREF_MAX_WORKSPACE_BYTES,
             ctypes.c_uint64(self.workspace_bytes), "MAX_WORKSPACE_BYTES")
        # Algorithms chosen for 256-byte aligned buffers may fault on less aligned views.
        for attribute in _PREF_MIN_ALIGNMENT_BYTES:
            _set(set_pref, preference, attribute, ctypes.c_uint32(alignment), "MIN_ALIGNMENT")
        results = (HeuristicResult * MAX_CANDIDATES)()
        count = ctypes.c_int(0)
        _check(lib.cublasLtMatmulAlgoGetHeuristic(
            self.handle, self.desc, self.layout_lt_a, self.layout_lt_b, self.layout_out,
            self.layout_out, preference, MAX_CANDIDATES, results, ctypes.byref(count)),
            "cublasLtMatmulAlgoGetHeuristic")
        return [MatmulAlgo.from_buffer_copy(r.algo) for r in results[:count.value]
                if r.state == 0 and r.workspace_size <= self.workspace_bytes]

    def launch(self, index: int, a_ptr: int, b_ptr: int, out_ptr: int, stream: int,
               workspace: int) -> None:
        """Queues ``out = a @ b`` with candidate ``index`` on ``stream``."""
        _check(self.lib.cublasLtMatmul(
            self.handle, self.desc, self.alpha_ptr, b_ptr, self.layout_lt_a, a_ptr,
            self.layout_lt_b, self.beta_ptr, out_ptr, self.layout_out, out_ptr,
            self.layout_out, self.algo_ptrs[index], workspace, self.workspace_bytes, stream),
            "cublasLtMatmul")


def alignment_of(*addresses: int) -> int:
    """The largest power of two up to 256 that divides every address (bytes).

    >>> alignment_of(512, 1024 + 16)
    16
    """
    combined = 256
    for address in addresses:
        combined |= address
    return combined & -combined


def time_candidates(cp, launches: list, max_reps: int = 10, rounds: int = 2) -> list[float]:
    """Milliseconds per call of each launch (a callable queuing work on the current stream),
    math.inf for one that raises; the best of ``rounds`` interleaved rounds, so that a clock
    change during one candidate does not decide. Each launch is timed between CUDA events
    queued behind a hold of the stream long enough for the host to queue every repetition:
    the events then measure GPU time, not the host's queuing (cublasGemmEx costs the host
    twice what cublasLtMatmul does, which would otherwise decide tiny products)."""
    try:
        from flamefx.kernels.executor import hold_gpu
    except ImportError:  # timing without the hold only overstates tiny kernels
        def hold_gpu(ms):
            pass
    stream = cp.cuda.get_current_stream()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = [math.inf] * len(launches)
    settings: list[tuple[int, float] | None] = [None] * len(launches)  # (reps, host ms)
    for _ in range(rounds):
        for i, launch in enumerate(launches):
            try:
                if settings[i] is None:  # first use: lazy kernel loading, then the rep count
                    launch()
                    stream.synchronize()
                    before = time.perf_counter()
                    launch()
                    host_ms = (time.perf_counter() - before) * 1e3
                    single = _elapsed(cp, stream, start, stop, launch, 1, host_ms, hold_gpu)
                    settings[i] = max(1, min(max_reps, int(0.5 / max(single, 1e-3)))), host_ms
                elif times[i] == math.inf:
                    continue  # failed in an earlier round
                times[i] = min(times[i], _elapsed(cp, stream, start, stop, launch, *settings[i],
                                                  hold_gpu))
            except Exception as e:  # noqa: BLE001  (a candidate that fails is not chosen)
                log.info("GEMM candidate %d failed while timing: %s", i, e)
                stream.synchronize()
                times[i], settings[i] = math.inf, (0, 0.0)
    return times


def _elapsed(cp, stream, start, stop, launch, count: int, host_ms: float, hold_gpu) -> float:
    hold_gpu(0.05 + 2.0 * count * host_ms)
    start.record(stream)
    for _ in range(count):
        launch()
    stop.record(stream)
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / count
