"""GEMMs on the GPU (flamefx/kernels/cublas.py, cublaslt.py): every dtype and operand layout
against NumPy float64, each cuBLASLt candidate, the per-shape choice, graph capture; on the
CPU, cuBLASLt's descriptors checked against a host emulation of its column-major product."""

import ctypes

import ml_dtypes
import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.kernels import cublas, cublaslt

BF16 = ml_dtypes.bfloat16

# --- on the CPU: the descriptors cuBLASLt is given compute the row-major product ----------------

_FLOAT = 0  # CUDA_R_32F


class _FakeLt:
    """Host emulation of the cuBLASLt entry points LtMatmul calls (float32 only): objects are
    dicts behind small integer handles; the product reads and writes host memory as the
    column-major matrices the layouts describe."""

    def __init__(self):
        self.objects: dict[int, dict] = {}
        self.matmuls = 0

    def _new(self, ref, **fields) -> int:
        handle = len(self.objects) + 1
        self.objects[handle] = fields
        ref._obj.value = handle
        return 0

    def _set(self, obj, name, buf) -> int:
        self.objects[obj.value][name] = buf._obj.value
        return 0

    def cublasLtMatmulDescCreate(self, ref, compute, scale_type):
        return self._new(ref, compute=compute, transa=0, transb=0)

    def cublasLtMatmulDescSetAttribute(self, desc, attribute, buf, size):
        return self._set(desc, {3: "transa", 4: "transb"}[attribute], buf)

    def cublasLtMatrixLayoutCreate(self, ref, data_type, rows, cols, ld):
        return self._new(ref, type=data_type, rows=rows, cols=cols, ld=ld, batch=1, stride=0)

    def cublasLtMatrixLayoutSetAttribute(self, layout, attribute, buf, size):
        return self._set(layout, {5: "batch", 6: "stride"}[attribute], buf)

    def cublasLtMatmulPreferenceCreate(self, ref):
        return self._new(ref)

    def cublasLtMatmulPreferenceSetAttribute(self, preference, attribute, buf, size):
        return self._set(preference, attribute, buf)

    def cublasLtMatmulAlgoGetHeuristic(self, handle, desc, la, lb, lc, ld, preference, requested,
                                       results, count):
        # Two candidates; the second needs more workspace than allowed and must be dropped.
        results[0].state, results[0].workspace_size = 0, 0
        results[1].state, results[1].workspace_size = 0, 2**40
        count._obj.value = 2
        return 0

    def _matrices(self, ptr, layout):
        info = self.objects[layout.value]
        extent = (info["batch"] - 1) * info["stride"] + (info["cols"] - 1) * info["ld"] \
            + info["rows"]
        flat = np.ctypeslib.as_array((ctypes.c_float * extent).from_address(ptr))
        return np.lib.stride_tricks.as_strided(
            flat, (info["batch"], info["rows"], info["cols"]),
            (info["stride"] * 4, 4, info["ld"] * 4))

    def cublasLtMatmul(self, handle, desc, alpha, a, la, b, lb, beta, c, lc, d, ld, algo,
                       workspace, workspace_bytes, stream):
        self.matmuls += 1
        info = self.objects[desc.value]
        op_a, op_b = self._matrices(a, la), self._matrices(b, lb)
        op_a = op_a.transpose(0, 2, 1) if info["transa"] else op_a
        op_b = op_b.transpose(0, 2, 1) if info["transb"] else op_b
        self._matrices(d, ld)[...] = op_a @ op_b
        return 0


def _host_lt_product(a3, b3):
    batch, m, k = a3.shape
    n = b3.shape[2]
    layouts = [cublas._operand_layout(x.shape, x.strides, x.itemsize) for x in (a3, b3)]
    assert None not in layouts, "a transposed view must not need a copy"
    lib = _FakeLt()
    plan = cublaslt.LtMatmul(lib, 1, in_type=_FLOAT, out_type=_FLOAT, compute=68,
                             scale_type=_FLOAT, scale_ctype=ctypes.c_float, batch=batch, m=m,
                             n=n, k=k, a=layouts[0], b=layouts[1], alignment=256,
                             workspace_bytes=cublas.WORKSPACE_BYTES)
    assert len(plan.algos) == 1  # the candidate needing too much workspace is dropped
    out = np.full((batch, m, n), np.nan, np.float32)
    plan.launch(0, a3.ctypes.data, b3.ctypes.data, out.ctypes.data, stream=0, workspace=0)
    assert lib.matmuls == 1
    return out


@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("m, k, n", [(5, 4, 3), (1, 1, 1), (1, 6, 2)])
def test_lt_descriptors_compute_the_product(a_transposed, b_transposed, batch, m, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, k, m) if a_transposed else (batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, n, k) if b_transposed else (batch, k, n)).astype(np.float32)
    a3 = a.transpose(0, 2, 1) if a_transposed else a
    b3 = b.transpose(0, 2, 1) if b_transposed else b
    np.testing.assert_allclose(_host_lt_product(a3, b3), a3 @ b3, rtol=1e-5, atol=1e-5)


def test_pick_keeps_the_heuristics_first_candidate_unless_another_is_clearly_faster():
    # times: [cublasGemmEx, Lt candidate 0, 1, ...] in milliseconds
    assert cublas.pick([1.0, 1.0, 0.97]) == 1
    assert cublas.pick([1.0, 1.0, 0.90]) == 2
    assert cublas.pick([0.5, 1.0, 0.99]) == 0
    assert cublas.pick([1.0, float("inf"), 1.2]) == 0


def test_alignment_of_pointers():
    assert cublaslt.alignment_of(0, 512) == 256
    assert cublaslt.alignment_of(1024, 1028) == 4
    assert cublaslt.alignment_of(2) == 2


def test_heuristic_result_layout_matches_cublaslt_h():
    # cublasLtMatmulHeuristicResult_t: algo (8 x uint64), size_t, int, float, int[4].
    assert ctypes.sizeof(cublaslt.MatmulAlgo) == 64
    assert ctypes.sizeof(cublaslt.HeuristicResult) == 96
    assert cublaslt.HeuristicResult.waves_count.offset == 76


# --- on the GPU ----------------------------------------------------------------------------------

def _cp():
    from flamefx import devices
    return devices.cupy()


def _device(host):
    """A CuPy copy of a host array (bfloat16 travels as its uint16 bits)."""
    cp = _cp()
    if host.dtype == BF16:
        return cp.asarray(host.view(np.uint16)).view(BF16)
    return cp.asarray(host)


def _operands(in_dtype, batch, m, k, n, a_transposed, b_transposed, seed=0):
    """Device operands (transposed views where asked) and their float64 host values."""
    rng = np.random.default_rng(seed)
    device, host = [], []
    for rows, cols, transposed in ((m, k, a_transposed), (k, n, b_transposed)):
        shape = (batch, cols, rows) if transposed else (batch, rows, cols)
        values = rng.standard_normal(shape).astype(np.float32).astype(in_dtype)
        x = _device(values)
        x, values = (x.transpose(0, 2, 1), values.transpose(0, 2, 1)) if transposed else (x, values)
        device.append(x[0] if batch == 1 else x)
        host.append((values[0] if batch == 1 else values).astype(np.float64))
    return device, host


def _empty(shape, dtype):
    cp = _cp()
    if dtype == BF16:
        return cp.empty(shape, np.uint16).view(BF16)
    return cp.empty(shape, dtype)


def _check_product(out, host_operands, rtol):
    cp = _cp()
    want = host_operands[0] @ host_operands[1]
    got = cp.asnumpy(out.view(np.uint16)).view(BF16) if out.dtype == BF16 else cp.asnumpy(out)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * scale)


# (input dtype, output dtype, precision, tolerance)
_DTYPES = [(np.float32, np.float32, "highest", 2e-5), (np.float64, np.float64, "highest", 1e-12),
           (np.float16, np.float16, "highest", 3e-3), (BF16, BF16, "highest", 2e-2),
           (np.float16, np.float32, "highest", 2e-5), (BF16, np.float32, "highest", 2e-5),
           (np.float32, np.float32, "tf32", 5e-3), (np.float32, np.float32, "bf16", 3e-2)]


@pytest.mark.gpu
@pytest.mark.parametrize("in_dtype, out_dtype, precision, rtol", _DTYPES)
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("batch, m, k, n", [(1, 1, 1, 1), (1, 3, 5, 7), (3, 3, 5, 7),
                                            (1, 96, 130, 64), (4, 33, 64, 17)])
def test_gemm_into_matches_numpy(in_dtype, out_dtype, precision, rtol, a_transposed,
                                 b_transposed, batch, m, k, n):
    (a, b), host = _operands(in_dtype, batch, m, k, n, a_transposed, b_transposed)
    out = _empty((batch, m, n) if batch > 1 else (m, n), out_dtype)
    for _ in range(2):  # the first call chooses (timing every candidate), the second reuses
        cublas.gemm_into(out, a, b, precision=precision)
        _check_product(out, host, rtol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_gemm_into_with_empty_contraction_writes_zeros(dtype):
    cp = _cp()
    out = cp.full((3, 4), 7, dtype)
    cublas.gemm_into(out, cp.ones((3, 0), dtype), cp.ones((0, 4), dtype))
    assert not cp.asnumpy(out).any()


@pytest.mark.gpu
def test_gemm_into_integer_products_use_a_wide_type():
    cp = _cp()
    a = cp.arange(12, dtype=cp.int32).reshape(3, 4)
    out = cp.empty((3, 2), cp.int32)
    cublas.gemm_into(out, a, a[:2].T)
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(a) @ cp.asnumpy(a[:2]).T)


@pytest.mark.gpu
@pytest.mark.parametrize("a_transposed, b_transposed", [(False, False), (True, False),
                                                        (False, True)])
@pytest.mark.parametrize("batch", [1, 8])
def test_every_lt_candidate_computes_the_product(a_transposed, b_transposed, batch):
    cp = _cp()
    (a, b), host = _operands(np.float32, batch, 128, 96, 160, a_transposed, b_transposed)
    out = cp.empty((batch, 128, 160), np.float32)
    before = set(cublas.timings)
    cublas.gemm_into(out, a, b)
    key = next(iter(set(cublas.timings) - before), None)
    if key is None:
        pytest.skip("shape was tuned by an earlier test")
    assert len(cublas.timings[key]) > 1, "cuBLASLt offered no candidate"
    plan = cublas._lt_plan(key, cublas._workspace(cp.cuda.Device().id))
    a3, b3 = (x if x.ndim == 3 else x[None] for x in (a, b))
    stream = cp.cuda.get_current_stream().ptr
    for index in range(len(plan.algos)):
        out.fill(np.nan)
        plan.launch(index, a3.data.ptr, b3.data.ptr, out.data.ptr, stream,
                    cublas._workspace(cp.cuda.Device().id))
        _check_product(out if batch > 1 else out[0], host, 2e-5)


@pytest.mark.gpu
def test_unaligned_views_get_their_own_choice():
    cp = _cp()
    values = np.random.default_rng(1).standard_normal(65 * 64)
    base = cp.asarray(values.astype(np.float32))
    aligned = base[:64 * 64].reshape(64, 64)
    shifted = base[1:1 + 64 * 64].reshape(64, 64)  # 4-byte aligned
    out = cp.empty((64, 64), np.float32)
    host_of = {id(aligned): cp.asnumpy(aligned).astype(np.float64),
               id(shifted): cp.asnumpy(shifted).astype(np.float64)}
    for a in (aligned, shifted):
        cublas.gemm_into(out, a, aligned)
        _check_product(out, (host_of[id(a)], host_of[id(aligned)]), 2e-5)
    alignments = {key[-1] for key in cublas._choices if key[4:8] == (1, 64, 64, 64)}
    assert {4, 256} <= alignments


@pytest.mark.gpu
def test_without_cublaslt_or_autotuning_gemm_ex_runs(monkeypatch):
    cp = _cp()
    (a, b), host = _operands(np.float32, 2, 7, 9, 11, False, True, seed=3)
    out = cp.empty((2, 7, 11), np.float32)
    monkeypatch.setattr(cublas, "AUTOTUNE", False)
    cublas.gemm_into(out, a, b)
    _check_product(out, host, 2e-5)
    monkeypatch.setattr(cublas, "AUTOTUNE", True)
    monkeypatch.setattr(cublaslt, "library", lambda: None)
    cublas.gemm_into(out, a, b)
    _check_product(out, host, 2e-5)
    chosen = [v for key, v in cublas._choices.items() if key[4:8] == (2, 7, 11, 9)]
    assert chosen == [cublas._GEMM_EX]


@pytest.mark.gpu
def test_capture_of_an_untuned_shape_uses_gemm_ex_and_a_tuned_one_replays():
    cp = _cp()
    (a, b), host_ab = _operands(np.float32, 1, 40, 72, 56, False, False, seed=4)
    (c, d), host_cd = _operands(np.float32, 1, 48, 24, 80, True, False, seed=5)
    out_ab, out_cd = cp.empty((40, 56), np.float32), cp.empty((48, 80), np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        cublas.gemm_into(out_ab, a, b)  # tuned outside the capture
        tuned = len(cublas._choices)
        out_ab.fill(0)
        stream.begin_capture()
        cublas.gemm_into(out_ab, a, b)
        cublas.gemm_into(out_cd, c, d)  # untuned: cublasGemmEx, nothing timed or remembered
        graph = stream.end_capture()
        assert len(cublas._choices) == tuned
        for _ in range(2):
            out_ab.fill(0)
            out_cd.fill(0)
            graph.launch(stream)
    stream.synchronize()
    _check_product(out_ab, host_ab, 2e-5)
    _check_product(out_cd, host_cd, 2e-5)


def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = fnp.tanh(x @ w1 + b1)
    return fnp.mean((h @ w2 + b2 - y) ** 2)


@pytest.mark.gpu
def test_jitted_mlp_step_captures_graphs_equal_to_eager():
    gpu = flamefx.devices("gpu")[0]
    rng = np.random.default_rng(6)

    def array(*shape):
        value = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
        return flamefx.device_put(value, gpu)

    params = (array(256, 512), array(512), array(512, 128), array(128))
    x, y = array(192, 256), array(192, 128)

    def step(params, x, y):
        grads = flamefx.grad(_mlp_loss)(params, x, y)
        return flamefx.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)

    want = [params]
    for _ in range(5):
        want.append(step(want[-1], x, y))
    with flamefx.config.override("cuda_graphs", True):
        jstep = flamefx.jit(step)
        p = params
        for expected in want[1:]:
            p = jstep(p, x, y)
            for got_leaf, want_leaf in zip(p, expected):
                np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf),
                                           rtol=1e-4, atol=1e-5)
        exe = next(iter(next(iter(jstep._cache.values())).program.executables.values()))
    assert exe.capture_error is None, exe.capture_error
    assert exe.graphs, "no CUDA graph was captured"
    assert any(key[4:8] == (1, 192, 512, 256) for key in cublas.timings)
