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


# --- NumPy's 64-bit data meets flamefx: JAX's canonical dtypes ------------------------------


def test_numpy_64_bit_data_becomes_32_bit_unless_x64():
    f64, i64, u64 = np.ones(3), np.arange(3), np.arange(3, dtype=np.uint64)
    entries = {
        "asarray": lambda a: fnp.asarray(a),
        "array": lambda a: fnp.array(a),
        "list": lambda a: fnp.array([a[0], a[1]]),
        "device_put": lambda a: flamefx.device_put(a),
        "jit argument": lambda a: flamefx.jit(lambda v: v)(a),
        "numpy scalar": lambda a: fnp.asarray(a[0]),
    }
    for name, enter in entries.items():
        assert [enter(a).dtype for a in (f64, i64, u64)] == [np.float32, np.int32, np.uint32], \
            name
        with flamefx.config.override("jax_enable_x64", True):
            assert [enter(a).dtype for a in (f64, i64, u64)] == [np.float64, np.int64,
                                                                np.uint64], name
    # An explicit dtype and a flamefx array already float64 are kept (flamefx's extension).
    assert fnp.asarray(f64, dtype=np.float64).dtype == np.float64
    kept = fnp.asarray(f64, dtype=np.float64)
    assert flamefx.jit(lambda v: v)(kept).dtype == np.float64


def test_array_likes_read_as_numpy_take_jax_dtypes():
    class Frame:  # what pandas frames and other array-likes look like to flamefx
        def __array__(self, dtype=None, copy=None):
            return np.arange(6.0).reshape(2, 3)

    assert fnp.asarray(Frame()).dtype == np.float32
    assert (fnp.ones(3) + Frame()).dtype == np.float32
    assert fnp.asarray(Frame()).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_numpy_operands_of_flamefx_ops_take_jax_dtypes():
    # Values and dtypes taken from JAX 0.10 (x64 off): f32 @ np_f64 is f32, and NumPy
    # scalars are strongly typed 32-bit values (bf16 * np.float64 -> f32, int8 * np.int64
    # -> int32), while Python scalars stay weak (bf16 * 2.0 -> bf16).
    x = fnp.ones(3)
    assert (x @ np.ones((3, 2))).dtype == np.float32
    assert (np.ones((2, 3)) @ x).dtype == np.float32
    assert (x * np.float64(2.0)).dtype == np.float32
    assert (fnp.ones(3, fnp.bfloat16) * np.float64(2.0)).dtype == np.float32
    assert (fnp.ones(3, fnp.int8) * np.int64(2)).dtype == np.int32
    assert (fnp.ones(3, fnp.bfloat16) * 2.0).dtype == fnp.bfloat16
    assert fnp.result_type(np.ones(2)) == np.float32
    with flamefx.config.override("jax_enable_x64", True):
        assert (fnp.ones(3) @ np.ones((3, 2))).dtype == np.float64


def test_sklearn_float64_data_trains_in_float32_unless_x64():
    datasets = pytest.importorskip("sklearn.datasets")
    features, labels = datasets.load_digits(return_X_y=True)  # float64 and int64
    assert features.dtype == np.float64 and labels.dtype == np.int64
    features, labels = features[:200] / 16.0, labels[:200]

    def loss(w, x, y):
        logits = x @ w
        logp = logits - fnp.log(fnp.sum(fnp.exp(logits), axis=1, keepdims=True))
        return -fnp.mean(fnp.take_along_axis(logp, y[:, None], axis=1))

    @flamefx.jit
    def step(w, x, y):
        value, g = flamefx.value_and_grad(loss)(w, x, y)
        return w - 0.5 * g, value

    def train(w):
        for _ in range(3):
            w, value = step(w, features, labels)
        return w, value

    w, value = train(np.zeros((64, 10)))  # sklearn-style float64 weights too
    assert w.dtype == np.float32 and value.dtype == np.float32
    lowered = step.lower(np.zeros((64, 10)), features, labels)  # (hoisted constants first)
    assert [a.dtype for a in lowered.jaxpr.in_avals[-3:]] \
        == [np.float32, np.float32, np.int32]
    with flamefx.config.override("jax_enable_x64", True):
        w64, value64 = train(np.zeros((64, 10)))
        assert w64.dtype == np.float64 and value64.dtype == np.float64
    # The same numbers, to float32's precision, and the loss went down from log(10).
    np.testing.assert_allclose(np.asarray(w), np.asarray(w64), rtol=1e-4, atol=1e-5)
    assert float(value64) < np.log(10.0)


def test_traced_shape_says_to_make_it_static():
    with pytest.raises(flamefx.ConcretizationError,
                       match=r"shapes must be concrete(.|\n)*static_argnums") as e:
        flamefx.jit(lambda n: fnp.zeros(n))(3)
    assert __file__ in str(e.value)
    with pytest.raises(flamefx.ConcretizationError, match=r"the shape \(2, Traced"):
        flamefx.jit(lambda n: fnp.ones((2, n)))(3)
    for make in (lambda n: fnp.eye(n), lambda n: fnp.full(n, 1.0), lambda n: fnp.empty(n),
                 lambda n: fnp.ones(6).reshape(n), lambda n: fnp.reshape(fnp.ones(6), (2, n))):
        with pytest.raises(flamefx.ConcretizationError, match="shapes must be concrete"):
            flamefx.jit(make)(3)
    assert flamefx.jit(lambda n: fnp.zeros(n), static_argnums=0)(3).shape == (3,)
    assert fnp.ones(6).reshape(np.int64(6)).shape == (6,)
