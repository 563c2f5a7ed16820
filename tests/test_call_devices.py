"""Call-like primitives (custom_jvp, custom_vjp, checkpoint) run their jaxpr on their
operands' device. Checked here on a stand-in GPU: NumPy arrays of a marker subclass, whose
primitives run their NumPy impls and give marked results, so a result computed on the CPU
shows as an unmarked array (the H100 run of 2026-12-06: random.gamma's gradient in a jitted
GPU program handed NumPy arrays from its custom_jvp to random_gamma_grad's cuda_impl)."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core, devices

GPU = devices.Device("gpu", 0)


class _OnGpu(np.ndarray):
    """A buffer of the stand-in GPU."""


def _plain(b):
    return b.view(np.ndarray) if isinstance(b, np.ndarray) else b


@pytest.fixture
def stand_in_gpu(monkeypatch):
    def device_of_buffer(buf):
        return GPU if isinstance(buf, _OnGpu) else devices.devices("cpu")[0]

    def move_buffer(buf, device):
        buf = np.asarray(_plain(buf))
        return buf.view(_OnGpu) if device.platform == "gpu" else buf

    cpu_impl_for = core.Primitive.impl_for

    def impl_for(prim, platform):
        impl = cpu_impl_for(prim, "cpu")
        if platform == "cpu" or prim.impls.get("gpu") is impl:  # call-like: one impl
            return impl

        def on_gpu(*bufs, **params):
            outs = impl(*[_plain(b) for b in bufs], **params)
            return [np.asarray(o).view(_OnGpu) for o in outs]
        return on_gpu

    monkeypatch.setattr(devices, "device_of_buffer", device_of_buffer)
    monkeypatch.setattr(devices, "move_buffer", move_buffer)
    monkeypatch.setattr(core.Primitive, "impl_for", impl_for)


def _on_gpu(x):
    return core.Array(np.asarray(x, np.float32).view(_OnGpu), GPU, False, True)


def _constant_first(x):
    # Each equation before the add reads only literals: it runs on the default device (the
    # CPU), and the add reads that result first.
    return fnp.ones(3) * 2.0 + x


def test_custom_jvp_runs_on_its_operands_device(stand_in_gpu):
    f = flamefx.custom_jvp(_constant_first)
    f.defjvp(lambda primals, tangents: (f(*primals), tangents[0]))
    out = f(_on_gpu([1.0, 2.0, 3.0]))
    assert isinstance(out.buffer, _OnGpu)
    np.testing.assert_array_equal(np.asarray(_plain(out.buffer)), [3.0, 4.0, 5.0])


def test_custom_vjp_and_checkpoint_run_on_their_operands_device(stand_in_gpu):
    g = flamefx.custom_vjp(_constant_first)
    g.defvjp(lambda x: (g(x), None), lambda _, ct: (ct,))
    for fun in (g, flamefx.checkpoint(_constant_first)):
        out = fun(_on_gpu([0.0, 1.0, 2.0]))
        assert isinstance(out.buffer, _OnGpu)
        np.testing.assert_array_equal(np.asarray(_plain(out.buffer)), [2.0, 3.0, 4.0])
