"""How jitted GPU calls reuse memory: CUDA-graph replay with staged and in-place arguments,
and single-kernel calls writing again into outputs nobody holds (GPU only)."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from tests.test_jit import _executable


@pytest.mark.gpu
def test_gpu_graph_copy_in_of_odd_sized_and_strided_arguments():
    # Buffers of 7 floats (28 bytes: one 16-byte word and a tail), int8 of 13 bytes, a
    # transposed (non-contiguous) argument and a scalar go through the one-launch copy
    # kernel; every replay must equal the plain executable.
    rng = np.random.default_rng(0)
    gpu = flamefx.devices("gpu")[0]
    a = flamefx.device_put(rng.standard_normal(7).astype(np.float32), gpu)
    m = flamefx.device_put(rng.standard_normal((5, 3)).astype(np.float32), gpu)
    i8 = flamefx.device_put(rng.integers(-5, 5, 13).astype(np.int8), gpu)
    s = flamefx.device_put(np.float32(0.5), gpu)

    def step(a, m, i8, s, t):
        return (a * s + fnp.sum(t), m @ t + 1.0, i8 * 2, s + 1.0,
                fnp.sum(m * m) + fnp.sum(i8.astype(np.float32)))

    def loop(jitted, n=6):
        outs, carry = [], (a, m, i8, s)
        for k in range(n):
            out = jitted(*carry, fnp.transpose(m)[:, :2] * (k + 1.0))
            outs.append([np.asarray(o) for o in out])
            carry = (out[0], carry[1], out[2], out[3])
        return outs

    with flamefx.config.override("cuda_graphs", False):
        want = loop(flamefx.jit(step))
    jitted = flamefx.jit(step)
    got = loop(jitted)
    for g, w in zip(got, want):
        for x, y in zip(g, w):
            np.testing.assert_allclose(x, y, rtol=1e-6)
    exe = _executable(jitted)
    assert exe.capture_error is None, exe.capture_error
    assert sum(g.replays for g in exe.graphs) >= 3
    assert any(g.copy_kernel is not None for g in exe.graphs)


@pytest.mark.gpu
def test_gpu_single_kernel_call_reuses_only_outputs_nobody_holds():
    gpu = flamefx.devices("gpu")[0]
    x = flamefx.device_put(np.arange(1000, dtype=np.float32), gpu)
    f = flamefx.jit(lambda x: x * 2 + 1)
    a = f(x)
    a_ptr = a.buffer.data.ptr
    b = f(x + 1.0)
    assert b.buffer.data.ptr != a_ptr  # a is held
    del a
    c = f(x + 2.0)  # a's buffer is free again: written in place
    assert c.buffer.data.ptr == a_ptr
    view = c[:10]  # an alias of c's memory keeps it from being reused
    dlpack = c.buffer.__dlpack__()  # so does an exported capsule
    del c
    d = f(x + 3.0)
    e = f(x + 4.0)
    assert a_ptr not in (d.buffer.data.ptr, e.buffer.data.ptr)
    want = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(view), (want[:10] + 2) * 2 + 1)
    for got, shift in ((b, 1), (d, 3), (e, 4)):
        np.testing.assert_array_equal(np.asarray(got), (want + shift) * 2 + 1)
    del dlpack
