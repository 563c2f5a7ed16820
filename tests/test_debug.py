"""flamefx.debug (print, callback), pure_callback, io_callback, eval_shape and the tracing
context managers: runtime values under every transform, in program order; the outputs
checked against NumPy and against what JAX 0.10 prints for the same programs."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError
from flamefx.experimental import io_callback


def _lines(capsys):
    return capsys.readouterr().out.splitlines()


# --- debug.print ------------------------------------------------------------------------------


def test_print_formats_like_numpy(capsys):
    flamefx.debug.print("{} and {y} and {:.2f}", fnp.arange(4.0).reshape(2, 2),
                        fnp.float32(1.2345), y=fnp.int32(3))
    assert capsys.readouterr().out == "[[0. 1.]\n [2. 3.]] and 3 and 1.23\n"


def test_print_under_jit_survives_dead_code_and_cse(capsys):
    @flamefx.jit
    def f(x):
        flamefx.debug.print("a {}", x)
        flamefx.debug.print("a {}", x)  # the same equation twice: both print
        return x * 2

    for _ in range(2):  # traced once, printed at every call
        np.testing.assert_allclose(f(fnp.ones(2)), [2.0, 2.0])
    assert _lines(capsys) == ["a [1. 1.]"] * 4
    names = [e.prim.name for e in flamefx.jit(f.fun).lower(fnp.ones(2)).program.jaxpr.eqns]
    assert names.count("debug_callback") == 2


def test_print_under_vmap_once_per_element(capsys):
    flamefx.vmap(lambda x, y: flamefx.debug.print("x={} y={}", x, y),
                 in_axes=(0, None))(fnp.arange(3.0), 5.0)
    assert _lines(capsys) == ["x=0.0 y=5.0", "x=1.0 y=5.0", "x=2.0 y=5.0"]  # JAX's output


def _traced_sin(x):
    flamefx.debug.print("f x={x}", x=x)
    return fnp.sin(x) * 2


@pytest.mark.parametrize("transform", [
    flamefx.grad, lambda f: flamefx.grad(flamefx.jit(f)), lambda f: flamefx.jit(flamefx.grad(f))])
def test_print_under_grad_prints_the_primal_once(capsys, transform):
    g = transform(_traced_sin)(1.0)
    np.testing.assert_allclose(g, 2 * np.cos(1.0), rtol=1e-6)
    assert _lines(capsys) == ["f x=1.0"]


def _scan_body(c, x):
    flamefx.debug.print("c={} x={}", c, x)
    return c + x, c


@pytest.mark.parametrize("jitted", [False, True])
def test_print_in_scan_every_iteration_in_order(capsys, jitted):
    run = lambda: lax.scan(_scan_body, 0.0, fnp.arange(3.0))  # noqa: E731
    (flamefx.jit(run) if jitted else run)()
    assert _lines(capsys) == ["c=0.0 x=0.0", "c=0.0 x=1.0", "c=1.0 x=2.0"]  # JAX's output


def test_print_in_fori_and_while(capsys):
    def body(i, acc):
        flamefx.debug.print("i={}", i)
        return acc + i
    assert int(flamefx.jit(lambda: lax.fori_loop(0, 3, body, 0))()) == 3

    def cond(c):
        return c < 2

    def step(c):
        flamefx.debug.print("c={}", c)
        return c + 1
    lax.while_loop(cond, step, 0)
    assert _lines(capsys) == ["i=0", "i=1", "i=2", "c=0", "c=1"]


def test_print_order_follows_the_program(capsys):
    @flamefx.jit
    def f(x):
        y = fnp.exp(x)
        flamefx.debug.print("second {}", y)
        flamefx.debug.print("first {}", x)  # independent of y, still after it
        return y
    f(fnp.zeros(()))
    assert _lines(capsys) == ["second 1.0", "first 0.0"]


def test_callback_sees_numpy_values():
    seen = []
    flamefx.jit(lambda x: flamefx.debug.callback(lambda a, b: seen.append((a, b)), x,
                                                 b=x + 1))(fnp.arange(2.0))
    (a, b), = seen
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(b, [1.0, 2.0])


def test_gpu_program_with_a_callback_plans_it_in_place():
    def f(x):
        flamefx.debug.print("{}", x)
        return fnp.sin(x) * 2
    lowered = flamefx.jit(f).lower(fnp.ones(3), platform="gpu")
    assert "debug_callback (cuda_impl)" in lowered.as_text()


# --- pure_callback / io_callback ------------------------------------------------------------


def _spec(shape, dtype=np.float32):
    return flamefx.ShapeDtypeStruct(shape, dtype)


def test_pure_callback_values_and_pytrees():
    def host(a, scale):
        return {"s": np.sin(a) * scale, "n": np.int32(a.size)}
    x = fnp.linspace(0.0, 1.0, 5)
    out = flamefx.jit(lambda x: flamefx.pure_callback(
        host, {"s": _spec((5,)), "n": _spec((), np.int32)}, x, scale=2.0))(x)
    np.testing.assert_allclose(out["s"], 2 * np.sin(np.linspace(0, 1, 5)), rtol=1e-6)
    assert int(out["n"]) == 5 and out["n"].dtype == np.int32


def test_pure_callback_shape_mismatch_names_both():
    with pytest.raises(FlamefxTypeError, match=r"returned f32\[4\].*declared f32\[3\]"):
        flamefx.pure_callback(lambda v: v, _spec((3,)), fnp.ones(4))
    with pytest.raises(FlamefxTypeError, match="structure"):
        flamefx.pure_callback(lambda v: (v, v), _spec((3,)), fnp.ones(3))


def test_pure_callback_casts_dtype_as_jax():
    out = flamefx.pure_callback(lambda v: np.asarray(v, np.float64), _spec((3,)), fnp.ones(3))
    assert out.dtype == np.float32


def test_pure_callback_is_not_differentiable():
    f = lambda x: flamefx.pure_callback(np.sin, _spec(()), x)  # noqa: E731
    with pytest.raises(FlamefxError, match="custom_jvp"):
        flamefx.grad(f)(1.0)
    with pytest.raises(FlamefxError, match="custom_jvp"):
        flamefx.jvp(f, (fnp.float32(1.0),), (fnp.float32(1.0),))


@pytest.mark.parametrize("method,calls", [("sequential", 3), ("expand_dims", 1),
                                          ("broadcast_all", 1), ("legacy_vectorized", 1)])
def test_pure_callback_vmap_methods(method, calls):
    shapes = []

    def host(x, y):
        shapes.append((x.shape, y.shape))
        return x * y

    xs, y = fnp.arange(6.0).reshape(3, 2), fnp.array([10.0, 20.0])
    out = flamefx.vmap(lambda x, y: flamefx.pure_callback(host, _spec((2,)), x, y,
                                                          vmap_method=method),
                       in_axes=(0, None))(xs, y)
    np.testing.assert_allclose(out, np.arange(6.0).reshape(3, 2) * [10.0, 20.0])
    assert len(shapes) == calls
    expected_y = {"sequential": (2,), "expand_dims": (1, 2), "broadcast_all": (3, 2),
                  "legacy_vectorized": (2,)}[method]
    assert shapes[0][1] == expected_y


def test_pure_callback_vmap_needs_a_method():
    with pytest.raises(FlamefxValueError, match="vmap_method"):
        flamefx.vmap(lambda x: flamefx.pure_callback(np.sin, _spec(()), x))(fnp.ones(2))


def test_io_callback_runs_even_if_unused():
    log = []

    def record(x):
        log.append(float(x))
        return np.float32(len(log))

    @flamefx.jit
    def f(x):
        io_callback(record, _spec(()), x)  # result unused: still runs
        return x + 1
    f(fnp.float32(2.0))
    f(fnp.float32(3.0))
    assert log == [2.0, 3.0]
    with pytest.raises(FlamefxValueError, match="ordered"):
        flamefx.vmap(lambda x: io_callback(record, _spec(()), x, ordered=True))(fnp.ones(2))


# --- eval_shape and friends -------------------------------------------------------------------


def test_eval_shape_allocates_nothing():
    # 100 GB if it ran.
    def huge(x):
        return {"big": fnp.zeros((100_000, 250_000)) + x, "n": fnp.sum(x).astype(fnp.int32)}
    out = flamefx.eval_shape(huge, flamefx.ShapeDtypeStruct((250_000,), fnp.float32))
    assert out["big"] == flamefx.ShapeDtypeStruct((100_000, 250_000), np.float32)
    assert out["n"].shape == () and out["n"].dtype == np.int32


def test_eval_shape_takes_arrays_and_structs():
    out = flamefx.eval_shape(lambda a, b: (a @ b, a.T), fnp.ones((2, 3)),
                             flamefx.ShapeDtypeStruct((3, 4), np.float32))
    assert [o.shape for o in out] == [(2, 4), (3, 2)]


def test_ensure_compile_time_eval_inside_jit():
    @flamefx.jit
    def f(x):
        with flamefx.ensure_compile_time_eval():
            n = int(fnp.sum(fnp.arange(4)))  # concrete at trace time
            y = x * 2.0  # a traced value stays traced
        return y + n
    np.testing.assert_allclose(f(fnp.ones(2)), [8.0, 8.0])


def test_named_scope_and_devices():
    with flamefx.named_scope("block"):
        y = flamefx.jit(lambda x: x + 1)(fnp.ones(1))
    assert y.tolist() == [2.0]
    assert flamefx.device_count() == len(flamefx.devices()) == flamefx.local_device_count()
    assert flamefx.local_devices() == flamefx.devices()
    assert flamefx.default_backend() == flamefx.default_device().platform


@pytest.mark.parametrize("jitted", [False, True])
def test_print_under_grad_of_loops_and_cond_prints_the_forward_only(capsys, jitted):
    def scanned(x):
        return lax.scan(_scan_body, x, fnp.arange(2.0))[0]

    def branch(x):
        flamefx.debug.print("branch {}", x)
        return fnp.sin(x)

    def conditional(x):
        return lax.cond(x > 0, branch, lambda x: x, x)

    wrap = flamefx.jit if jitted else (lambda f: f)
    assert float(wrap(flamefx.grad(scanned))(1.0)) == 1.0
    np.testing.assert_allclose(wrap(flamefx.grad(conditional))(1.0), np.cos(1.0), rtol=1e-6)
    # JAX's output: the backward passes' recomputations do not print
    assert _lines(capsys) == ["c=1.0 x=0.0", "c=1.0 x=1.0", "branch 1.0"]


class _DeviceArray:
    """A stand-in for a CuPy array: data that reaches NumPy only through ``.get()``."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def get(self):
        return self.data


def test_the_gpu_code_path_on_a_stand_in_for_cupy(monkeypatch):
    """The cuda_impls copy operands to the host, call the callback there and put the
    checked results back on the device; run here on a stand-in, without a GPU."""
    import types

    from flamefx.core import ShapedArray
    from flamefx.primitives import callbacks

    monkeypatch.setattr(callbacks, "cupy", lambda: types.SimpleNamespace(asarray=_DeviceArray))
    seen = []
    host = callbacks.HostCallback(lambda *bufs: seen.append(bufs) or [], "record")
    assert callbacks._debug_cuda(_DeviceArray([1.0, 2.0]), callback=host, ordered=False) == []
    assert isinstance(seen[0][0], np.ndarray)
    double = callbacks.HostCallback(lambda x: [x * 2], "double")
    out, = callbacks._results_cuda(_DeviceArray(np.ones(3, np.float32)), callback=double,
                                   result_avals=(ShapedArray((3,), np.float32),),
                                   vmap_method=None)
    assert isinstance(out, _DeviceArray)
    np.testing.assert_array_equal(out.get(), [2.0, 2.0, 2.0])


def test_programs_calling_the_host_are_marked_for_no_cuda_graphs():
    from flamefx.transforms import passes

    def with_print(x):
        flamefx.debug.print("{}", x)
        return x + 1

    def with_pure(x):
        return flamefx.pure_callback(np.sin, _spec((2,)), x)

    def scanned(x):  # the callback inside a loop body counts too
        return lax.scan(lambda c, _: (with_print(c), None), x, None, length=2)[0]

    for f, calls in [(with_print, True), (with_pure, True), (scanned, True),
                     (lambda x: x * 2, False)]:
        jaxpr = flamefx.jit(f).lower(fnp.ones(2)).program.jaxpr
        assert passes.calls_host(jaxpr) is calls


def test_shape_dtype_structs_lower_and_make_jaxpr():
    spec = flamefx.ShapeDtypeStruct((3,), np.float32)
    text = flamefx.jit(lambda x: fnp.sin(x) * 2).lower(spec).as_text()
    assert "sin" in text and "f32[3]" in text
    jaxpr = flamefx.make_jaxpr(lambda x: x.sum())(spec)
    assert [e.prim.name for e in jaxpr.eqns] == ["reduce_sum"]
    with pytest.raises(FlamefxTypeError, match="ShapeDtypeStruct is not an array"):
        flamefx.jit(lambda x: x)(spec)  # no data to run on, as in JAX


def test_a_jitted_print_inside_a_checkpoint_prints_once_under_grad(capsys):
    # Reverse mode recomputes the checkpointed forward; the nested jit's print must not
    # show again there (JAX prints the forward pass once).
    @flamefx.jit
    def g(x):
        flamefx.debug.print("g sees {x}", x=x)
        return x * 3.0

    flamefx.grad(flamefx.checkpoint(lambda x: g(x) * 2.0))(fnp.float32(1.0))
    assert capsys.readouterr().out.count("g sees") == 1
