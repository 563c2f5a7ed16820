"""How jitted GPU calls reuse memory: CUDA-graph replay with staged and in-place arguments,
and single-kernel calls writing again into outputs nobody holds (GPU only)."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.kernels.executor import MAX_GRAPHS
from tests.test_jit import (
    _assert_trees_close,
    _executable,
    _mlp_args,
    _mlp_sgd_step,
    _on_gpu,
    _plain_sgd_steps,
    mlp_loss,
)

N_PARAMS = 3  # _mlp_args: (w1, b1, w2), then x and y


def _plain_steps_over(params, xs, y):
    """The SGD steps over the batches ``xs``, jitted without CUDA graphs."""
    with flamefx.config.override("cuda_graphs", False):
        step, steps = flamefx.jit(_mlp_sgd_step), [params]
        for x in xs:
            steps.append(step(steps[-1], x, y))
    return steps


@pytest.mark.gpu
@pytest.mark.parametrize("keep_outputs", [True, False])
def test_gpu_graph_copy_in_of_odd_sized_and_strided_arguments(keep_outputs):
    # Buffers of 7 floats (28 bytes: one 16-byte word and a tail), int8 of 13 bytes, a
    # transposed (non-contiguous) argument and a scalar go through the one-launch copy
    # kernel; every replay must equal the plain executable. Kept outputs leave only the
    # graph that stages every argument ready; outputs handed back let the two
    # output-owning graphs read each other's outputs in place (the first one recaptured,
    # writing into its old output buffers), except the scalar: scalar outputs are copied
    # out on every replay, so it comes back in a fresh array and is staged.
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
        outs, carry, kept = [], (a, m, i8, s), []
        for k in range(n):
            out = jitted(*carry, fnp.transpose(m)[:, :2] * (k + 1.0))
            outs.append([np.asarray(o) for o in out])
            carry = (out[0], carry[1], out[2], out[3])
            if keep_outputs:
                kept.append(out)
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
    if keep_outputs:
        assert exe.graphs[-1].copy_out and exe.graphs[-1].copy_kernel is not None
    else:
        assert len(exe.graphs) == 2
        assert all([i for i, _ in g.direct] == [0, 2] for g in exe.graphs), [
            g.direct for g in exe.graphs]


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


@pytest.mark.gpu
@pytest.mark.parametrize("batches", ["kept", "fresh"])
def test_gpu_loop_with_a_new_x_every_call_replays_and_matches_the_plain_path(batches):
    # "kept": every batch is a live array at its own address, so x is always staged.
    # "fresh": each batch is made for its call and dropped after it, so it usually lands at
    # the address of the last one and is read in place, with new contents every call.
    params, x0, y = _on_gpu(_mlp_args())
    rng = np.random.default_rng(1)
    host = [rng.standard_normal(x0.shape).astype(np.float32) for _ in range(10)]
    gpu = flamefx.devices("gpu")[0]
    want = _plain_steps_over(params, [flamefx.device_put(h, gpu) for h in host], y)
    jstep = flamefx.jit(_mlp_sgd_step)
    kept = [flamefx.device_put(h, gpu) for h in host] if batches == "kept" else None
    p = params
    for k, expected in enumerate(want[1:]):
        p = jstep(p, kept[k] if kept else flamefx.device_put(host[k], gpu), y)
        _assert_trees_close(p, expected, rtol=1e-5)
    exe = _executable(jstep)
    assert exe.capture_error is None, exe.capture_error
    # Every call after the first replays a graph, and the two graphs read each other's
    # outputs in place: no parameter is copied in once both exist.
    assert len(exe.graphs) == 2, [(g.replays, g.copy_out) for g in exe.graphs]
    assert sum(g.replays for g in exe.graphs) == len(host) - 1, [g.replays for g in exe.graphs]
    for g in exe.graphs:
        assert [i for i, _ in g.direct] == list(range(N_PARAMS)), g.direct
    if kept:
        assert all(N_PARAMS in {i for i, _, _ in g.copies} for g in exe.graphs)


@pytest.mark.gpu
def test_gpu_stable_arguments_are_read_in_place_and_a_moved_one_is_not():
    params, x, y = _on_gpu(_mlp_args())
    grad = flamefx.jit(flamefx.grad(mlp_loss))
    with flamefx.config.override("cuda_graphs", False):
        plain = flamefx.jit(flamefx.grad(mlp_loss))
        want = plain(params, x, y)
        x2 = x * 3.0
        want2 = plain(params, x2, y)
    for _ in range(4):
        _assert_trees_close(grad(params, x, y), want, rtol=1e-5)
    exe = _executable(grad)
    first = exe.graphs[0]
    assert first.copies == [] and len(first.stable) >= N_PARAMS + 2, (first.copies,
                                                                        first.stable)
    assert first.replays >= 2
    for _ in range(4):  # x elsewhere: the graph reading x in place must not replay
        _assert_trees_close(grad(params, x2, y), want2, rtol=1e-5)
    _assert_trees_close(grad(params, x, y), want, rtol=1e-5)
    assert len(exe.graphs) <= MAX_GRAPHS


@pytest.mark.gpu
def test_gpu_an_old_output_kept_and_passed_back_is_never_overwritten():
    params, x, y = _on_gpu(_mlp_args())
    want = _plain_sgd_steps(params, x, y, 8)
    jstep = flamefx.jit(_mlp_sgd_step)
    p = params
    for _ in range(3):  # the plain call, then both graphs
        p = jstep(p, x, y)
    old = p  # an output of one of the graphs, kept and passed back again and again
    snapshot = [np.asarray(a).copy() for a in old]
    _assert_trees_close(old, want[3], rtol=1e-5)
    for _ in range(5):
        _assert_trees_close(jstep(old, x, y), want[4], rtol=1e-5)
        p = jstep(p, x, y)
    for a, s in zip(old, snapshot):
        np.testing.assert_array_equal(np.asarray(a), s)
    _assert_trees_close(p, want[8], rtol=1e-5)
    assert _executable(jstep).capture_error is None


@pytest.mark.gpu
def test_gpu_single_kernel_calls_replay_a_graph_and_keep_held_outputs():
    gpu = flamefx.devices("gpu")[0]
    host = np.arange(1000, dtype=np.float32)
    x = flamefx.device_put(host, gpu)
    x2 = flamefx.device_put(host + 100.0, gpu)
    f = flamefx.jit(lambda x: x * 2 + 1)
    out = None
    for _ in range(6):  # like a timing loop: the previous output is held during each call
        out = f(x)
        np.testing.assert_array_equal(np.asarray(out), host * 2 + 1)
    exe = _executable(f)
    assert exe.single_replays >= 2 and exe.capture_error is None, exe.capture_error
    del out
    kept = f(x)  # held from here on: no later call may write into it
    replays = exe.single_replays
    last = None
    for _ in range(6):
        last = f(x2)
        np.testing.assert_array_equal(np.asarray(last), (host + 100.0) * 2 + 1)
    assert exe.single_replays > replays  # a graph captured for x2's address
    np.testing.assert_array_equal(np.asarray(kept), host * 2 + 1)
    assert kept.buffer.data.ptr != last.buffer.data.ptr


@pytest.mark.gpu
def test_gpu_a_replay_on_another_stream_waits_for_the_last_replay():
    # Replays launch on the caller's stream, and the graphs of one executable share their
    # intermediates: a replay on another stream than the last one must wait for it, or the
    # two could overlap. A delay kernel holds the first stream; the replay queued on the
    # second may not finish before the hold ends.
    import time

    import cupy

    from flamefx.kernels.executor import hold_gpu
    params, x, y = _on_gpu(_mlp_args())
    want = _plain_steps_over(params, [x], y)[1]
    jstep = flamefx.jit(_mlp_sgd_step)
    for _ in range(4):  # the plain call, then both graphs captured and replayed
        out = jstep(params, x, y)
    del out
    exe = _executable(jstep)
    replays = sum(g.replays for g in exe.graphs)
    first, second = (cupy.cuda.Stream(non_blocking=True) for _ in range(2))
    with first:
        hold_gpu(200.0)
        a = jstep(params, x, y)
    with second:
        b = jstep(params, x, y)
        finished = second.record()
    time.sleep(0.05)
    assert not finished.done, "the replay on the second stream did not wait for the first"
    first.synchronize()
    second.synchronize()
    assert sum(g.replays for g in exe.graphs) == replays + 2, [g.replays for g in exe.graphs]
    _assert_trees_close(a, want, rtol=1e-5)
    _assert_trees_close(b, want, rtol=1e-5)
