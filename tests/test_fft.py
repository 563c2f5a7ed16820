"""flamefx.numpy.fft against numpy.fft in float64 / complex128, and the fft primitive's
derivatives (its transposes) through real-valued wrappers that check_grads can perturb:
complex operands enter as lax.complex(re, im) and leave as their real and imaginary parts."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core, lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.primitives import complex_ops
from flamefx.primitives.fft import FftType, fft
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


def _arr(a):
    """A flamefx array keeping float64/complex128 whatever the x64 setting."""
    return core.to_array(np.asarray(a))


def _real(shape):
    return RNG.standard_normal(shape)


def _complex(shape):
    return RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)


def _close(got, want):
    got = np.asarray(got)
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    assert got.dtype == np.asarray(want).dtype, (got.dtype, np.asarray(want).dtype)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


NORMS = [None, "backward", "ortho", "forward"]

# (name, input maker, keyword arguments)
ONE_AXIS = [
    ("fft", _complex, {}), ("fft", _real, {"n": 5}), ("fft", _complex, {"n": 9, "axis": 0}),
    ("ifft", _complex, {}), ("ifft", _complex, {"n": 4, "axis": 0}),
    ("rfft", _real, {}), ("rfft", _real, {"n": 5, "axis": 0}), ("rfft", _real, {"n": 10}),
    ("irfft", _complex, {}), ("irfft", _complex, {"n": 7}), ("irfft", _complex, {"axis": 0}),
    ("hfft", _complex, {}), ("hfft", _complex, {"n": 5}),
    ("ihfft", _real, {}), ("ihfft", _real, {"n": 5, "axis": 0}),
]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name,make,kwargs", ONE_AXIS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(ONE_AXIS)])
def test_one_axis_transforms_match_numpy(name, make, kwargs, norm):
    x = make((6, 8))
    got = getattr(fnp.fft, name)(_arr(x), norm=norm, **kwargs)
    _close(got, getattr(np.fft, name)(x, norm=norm, **kwargs))


MULTI_AXIS = [
    ("fft2", _complex, {}), ("fft2", _real, {"s": (3, 5)}), ("fft2", _complex, {"axes": (0, 2)}),
    ("ifft2", _complex, {}), ("ifft2", _complex, {"s": (4, 4), "axes": (2, 0)}),
    ("rfft2", _real, {}), ("rfft2", _real, {"s": (5, 6), "axes": (1, 0)}),
    ("irfft2", _complex, {}), ("irfft2", _complex, {"s": (3, 7)}),
    ("fftn", _complex, {}), ("fftn", _real, {"axes": (1,)}), ("fftn", _complex, {"s": (2, 9)}),
    ("ifftn", _complex, {}), ("ifftn", _complex, {"axes": (0, 2), "s": (5, 3)}),
    ("rfftn", _real, {}), ("rfftn", _real, {"axes": (2, 0)}),
    ("irfftn", _complex, {}), ("irfftn", _complex, {"s": (4, 6, 5)}),
    ("irfftn", _complex, {"axes": (0, 1)}),
]


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("name,make,kwargs", MULTI_AXIS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MULTI_AXIS)])
def test_multi_axis_transforms_match_numpy(name, make, kwargs, norm):
    x = make((4, 3, 6))
    got = getattr(fnp.fft, name)(_arr(x), norm=norm, **kwargs)
    # s without axes means the last len(s) axes (NumPy 2 deprecates leaving them implicit).
    ref_kwargs = dict(kwargs)
    if "s" in kwargs and "axes" not in kwargs:
        ref_kwargs["axes"] = tuple(range(-len(kwargs["s"]), 0))
    _close(got, getattr(np.fft, name)(x, norm=norm, **ref_kwargs))


def test_single_precision_and_integers():
    assert fnp.fft.fft(fnp.ones(4, fnp.float32)).dtype == np.complex64
    assert fnp.fft.rfft(fnp.arange(4)).dtype == np.complex64
    assert fnp.fft.irfft(fnp.fft.rfft(fnp.ones(4, fnp.float32))).dtype == np.float32
    x = RNG.standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(fnp.fft.rfft(_arr(x))), np.fft.rfft(x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("n", [1, 4, 7])
@pytest.mark.parametrize("d", [1.0, 0.1])
def test_frequencies_and_shifts(n, d):
    _close(fnp.fft.fftfreq(n, d, dtype=np.float64), np.fft.fftfreq(n, d))
    _close(fnp.fft.rfftfreq(n, d, dtype=np.float64), np.fft.rfftfreq(n, d))
    assert fnp.fft.fftfreq(n).dtype == np.float32
    cpu = flamefx.devices("cpu")[0]
    assert fnp.fft.rfftfreq(n, device=cpu).device == cpu
    x = RNG.standard_normal((n, 5))
    for axes in (None, 0, (1,), (0, 1)):
        _close(fnp.fft.fftshift(_arr(x), axes), np.fft.fftshift(x, axes))
        _close(fnp.fft.ifftshift(_arr(x), axes), np.fft.ifftshift(x, axes))


def test_round_trips():
    x = _real((5, 6))
    _close(fnp.fft.irfftn(fnp.fft.rfftn(_arr(x)), s=x.shape), x)
    _close(np.real(np.asarray(fnp.fft.ifft2(fnp.fft.fft2(_arr(x))))), x)


def test_bad_arguments_raise():
    with pytest.raises(FlamefxValueError, match="norm"):
        fnp.fft.fft(_arr(_real(4)), norm="sideways")
    with pytest.raises(FlamefxValueError, match="repeated axes"):
        fnp.fft.fftn(_arr(_real((4, 4))), axes=(0, 0))
    with pytest.raises(FlamefxValueError, match="differ in length"):
        fnp.fft.fftn(_arr(_real((4, 4))), s=(4,), axes=(0, 1))
    with pytest.raises(FlamefxValueError, match="invalid number of FFT data points"):
        fnp.fft.irfft(_arr(_complex(1)))
    with pytest.raises(FlamefxValueError, match="invalid number of FFT data points"):
        fnp.fft.fft(_arr(_real(4)), n=0)
    with pytest.raises(FlamefxTypeError, match="real operand"):
        fnp.fft.rfft(_arr(_complex(4)))
    with pytest.raises(FlamefxTypeError, match="trailing axes"):
        fft(_arr(_complex((3, 4))), "fft", (5,))


# --- derivatives: every fft_type, through real wrappers ----------------------------------


def _parts(z):
    return complex_ops.real(z), complex_ops.imag(z)


def _complex_in(f):
    return lambda re, im: f(complex_ops.complex_(re, im))


@pytest.mark.parametrize("lengths", [(8,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("fft_type", [FftType.FFT, FftType.IFFT])
def test_complex_transform_gradients(fft_type, lengths):
    shape = (2,) + lengths
    f = _complex_in(lambda z: _parts(fft(z, fft_type, lengths)))
    check_grads(f, [_arr(_real(shape)), _arr(_real(shape))], order=2)


@pytest.mark.parametrize("lengths", [(1,), (2,), (7,), (8,), (3, 6), (4, 5)])
def test_rfft_gradients(lengths):
    f = lambda x: _parts(fft(x, FftType.RFFT, lengths))  # noqa: E731
    check_grads(f, [_arr(_real((2,) + lengths))], order=2)


@pytest.mark.parametrize("lengths", [(1,), (2,), (7,), (8,), (3, 6), (4, 5)])
def test_irfft_gradients(lengths):
    shape = (2,) + lengths[:-1] + (lengths[-1] // 2 + 1,)
    f = _complex_in(lambda z: fft(z, FftType.IRFFT, lengths))
    check_grads(f, [_arr(_real(shape)), _arr(_real(shape))], order=2)


def test_public_function_gradients():
    x = _arr(_real((4, 6)))
    check_grads(lambda v: _parts(fnp.fft.rfft2(v, norm="ortho")), [x], order=2)
    check_grads(lambda v: fnp.fft.irfft(fnp.fft.rfft(v, n=8), n=5, axis=0), [x], order=2)
    check_grads(_complex_in(lambda z: fnp.fft.hfft(z, n=7)), [x, _arr(_real((4, 6)))],
                order=1)


def test_grad_of_a_spectral_loss_matches_the_closed_form():
    # Parseval: sum |fft(x)|^2 = N sum x^2, whose gradient is 2 N x.
    x = _real(8)

    def loss(v):
        spectrum = fnp.fft.fft(v)
        return fnp.sum(complex_ops.real(spectrum) ** 2 + complex_ops.imag(spectrum) ** 2)

    np.testing.assert_allclose(np.asarray(flamefx.grad(loss)(_arr(x))), 2 * 8 * x, rtol=1e-10)


def test_jit_and_vmap():
    x = _complex((3, 4, 6))
    got = flamefx.vmap(lambda v: flamefx.jit(fnp.fft.fft2)(v), in_axes=1)(_arr(x))
    _close(got, np.stack([np.fft.fft2(x[:, i]) for i in range(4)]))
    got = flamefx.jit(lambda v: fnp.fft.irfft(v, n=10, axis=0))(_arr(x))
    _close(got, np.fft.irfft(x, n=10, axis=0))
    assert lax.fft is fft
