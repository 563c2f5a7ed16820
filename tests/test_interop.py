"""DLPack exchange with NumPy, CuPy, PyTorch and JAX (zero-copy on the GPU), bf16 included."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp


def test_numpy_dlpack_round_trip_on_cpu():
    x = fnp.arange(6.0).reshape(2, 3)
    back = np.from_dlpack(x)
    np.testing.assert_array_equal(back, np.arange(6.0).reshape(2, 3))
    assert not back.flags.writeable  # nobody can write through to flamefx's buffer
    y = flamefx.from_dlpack(np.arange(4, dtype=np.float32))
    assert isinstance(y, flamefx.Array) and y.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_from_dlpack_rejects_non_dlpack_objects():
    with pytest.raises(flamefx.FlamefxTypeError, match="__dlpack__"):
        flamefx.from_dlpack([1, 2, 3])


def test_torch_cpu_exchange():
    torch = pytest.importorskip("torch")
    t = torch.arange(5, dtype=torch.float32)
    x = flamefx.from_dlpack(t)
    assert (x * 2).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    back = torch.from_dlpack(fnp.ones(3))
    assert back.tolist() == [1.0, 1.0, 1.0]


def _gpu():
    return flamefx.devices("gpu")[0]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cupy_zero_copy(dtype):
    import cupy
    src = cupy.arange(8, dtype=np.float32).astype(np.dtype(getattr(fnp, dtype)))
    x = flamefx.from_dlpack(src)
    assert x.device.platform == "gpu" and x.dtype == src.dtype
    assert x.buffer.data.ptr == src.data.ptr  # the same memory
    back = cupy.from_dlpack(x)
    assert back.data.ptr == src.data.ptr


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_gpu_zero_copy(dtype):
    torch = pytest.importorskip("torch")
    t = torch.arange(8, device="cuda", dtype=getattr(torch, dtype))
    x = flamefx.from_dlpack(t)
    assert x.device.platform == "gpu" and x.dtype == np.dtype(getattr(fnp, dtype))
    assert x.buffer.data.ptr == t.data_ptr()
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.arange(8, dtype=np.float32))
    y = flamefx.device_put(fnp.arange(4.0).astype(getattr(fnp, dtype)), _gpu()) * 2
    back = torch.from_dlpack(y)
    assert back.device.type == "cuda" and back.data_ptr() == y.buffer.data.ptr
    assert back.float().tolist() == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_gpu_zero_copy(dtype):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    a = jnp.arange(8, dtype=getattr(jnp, dtype))
    x = flamefx.from_dlpack(a)
    assert x.device.platform == "gpu"
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.arange(8, dtype=np.float32))
    y = flamefx.device_put(fnp.arange(4.0).astype(getattr(fnp, dtype)), _gpu()) + 1
    back = jax.dlpack.from_dlpack(y)
    assert np.asarray(back, np.float32).tolist() == [1.0, 2.0, 3.0, 4.0]
