"""jax_debug_nans / jax_debug_infs: the first operation that makes a NaN (inf) raises
FloatingPointError naming the primitive and the user's source line, eagerly and under jit."""

import inspect

import ml_dtypes
import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, devices
from flamefx.kernels.executor import nonfinite_outputs


def _line_of(fun, text: str) -> str:
    """'file:line' of the line of ``fun``'s source holding ``text``."""
    lines, first = inspect.getsourcelines(fun)
    offset = next(i for i, line in enumerate(lines) if text in line)
    return f"{__file__}:{first + offset}"


def _model(x):
    h = x * 2.0
    bad = fnp.log(h - 3.0)  # NaN for x < 1.5
    return fnp.sum(bad + 1.0)


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    return devices.devices(request.param)[0]


@pytest.fixture(autouse=True)
def _checks_off_afterwards():
    yield
    config.update("jax_debug_nans", False)
    config.update("jax_debug_infs", False)


def test_eager_nan_names_the_primitive_and_line(device):
    x = flamefx.device_put(fnp.ones(3), device)
    config.update("jax_debug_nans", True)
    with pytest.raises(FloatingPointError, match=r"invalid value \(nan\) encountered in log") as e:
        _model(x)
    assert _line_of(_model, "fnp.log") in str(e.value)
    assert float(_model(x + 1.0)) == pytest.approx(3 * (np.log(1.0) + 1.0))


def test_jit_reruns_op_by_op_to_find_the_equation(device):
    x = flamefx.device_put(fnp.ones(3), device)
    jitted = flamefx.jit(_model)
    config.update("jax_debug_nans", True)
    with pytest.raises(FloatingPointError, match=r"nan\) encountered in log inside jit\(_model\)"
                       ) as e:
        jitted(x)
    assert _line_of(_model, "fnp.log") in str(e.value)
    assert "already held" not in str(e.value)
    # The fast path (a second call with the same signature) checks too.
    with pytest.raises(FloatingPointError, match="encountered in log"):
        jitted(x)
    assert np.isfinite(float(jitted(x + 1.0)))


def test_nested_jit_names_the_inner_line():
    @flamefx.jit
    def inner(v):
        return fnp.sqrt(v - 5.0)

    def outer(v):
        return inner(v * 2.0) + 1.0

    config.update("jax_debug_nans", True)
    with pytest.raises(FloatingPointError, match="encountered in sqrt") as e:
        flamefx.jit(outer)(fnp.ones(2))
    assert _line_of(inner, "fnp.sqrt") in str(e.value)


def test_infs_are_checked_separately():
    def f(x):
        return 1.0 / x

    x = fnp.zeros(2)
    config.update("jax_debug_nans", True)
    assert np.isinf(np.asarray(flamefx.jit(f)(x))).all()  # NaN checks let infs through
    config.update("jax_debug_infs", True)
    for fun in (f, flamefx.jit(f)):
        with pytest.raises(FloatingPointError, match=r"invalid value \(inf\) encountered in div"
                           ) as e:
            fun(x)
        assert _line_of(f, "1.0 / x") in str(e.value)


def test_gradients_are_checked_under_jit():
    config.update("jax_debug_infs", True)
    with pytest.raises(FloatingPointError, match=r"\(inf\)"):
        flamefx.jit(flamefx.grad(lambda x: fnp.sqrt(x)))(0.0)


def test_a_nan_argument_is_reported_as_coming_from_the_inputs():
    config.update("jax_debug_nans", True)
    with pytest.raises(FloatingPointError, match="came in with the inputs"):
        flamefx.jit(lambda x: x * 2.0)(np.array([np.nan, 1.0], np.float32))


def test_off_means_no_check_and_integers_are_never_checked():
    def f(x):
        return fnp.log(x)

    out = flamefx.jit(f)(-fnp.ones(2))
    assert np.isnan(np.asarray(out)).all()
    assert np.isnan(np.asarray(f(-fnp.ones(2)))).all()
    config.update("jax_debug_nans", True)
    config.update("jax_debug_infs", True)
    assert flamefx.jit(lambda i: i // 1)(fnp.arange(3)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_output_check_reads_every_float_width(dtype):
    finite = np.array([0.0, -1.5, 3.0], dtype)
    nan = np.array([0.0, np.nan], dtype)
    inf = np.array([-np.inf, 1.0], dtype)
    ints = np.arange(3)
    assert nonfinite_outputs([finite, nan, inf, ints], True, False) == [False, True, False, False]
    assert nonfinite_outputs([finite, nan, inf, ints], False, True) == [False, False, True, False]
    assert nonfinite_outputs([finite[::2], nan[::-1]], True, True) == [False, True]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_output_check_reads_both_parts_of_complex(dtype):
    values = np.array([1 + 1j, 2 - 1j, 3j], dtype)
    nan_imag, inf_real = values.copy(), values.copy()
    nan_imag[1] = complex(1.0, np.nan)
    inf_real[2] = complex(np.inf, 0.0)
    bufs = [values, nan_imag[::-1], inf_real]
    assert nonfinite_outputs(bufs, True, False) == [False, True, False]
    assert nonfinite_outputs(bufs, False, True) == [False, False, True]
