"""flamefx.numpy.fft: jax.numpy.fft's transforms, built on the ``fft`` primitive.

Each transform moves its axes to the end, crops or zero-pads them to ``n``/``s``, runs one
``lax.fft`` over the trailing axes and scales by ``norm`` ("backward", the default, scales
only the inverse by 1/n; "ortho" both by 1/sqrt(n); "forward" only the forward by 1/n).
Real inputs of fft/ifft become complex; float32 (and integer) inputs give complex64, float64
give complex128. Unlike NumPy, repeated axes raise (as in JAX).

>>> import flamefx.numpy as fnp
>>> fnp.fft.fft(fnp.array([1.0, 0.0, 0.0, 0.0])).tolist()
[(1+0j), (1+0j), (1+0j), (1+0j)]
"""

from __future__ import annotations

import math
import operator

import numpy as np

from flamefx import dtypes
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.creation import asarray
from flamefx.numpy.promotion import as_operand, canonical_axis, is_python_scalar
from flamefx.numpy.shape import moveaxis, pad, roll
from flamefx.primitives import complex_ops
from flamefx.primitives.fft import FftType
from flamefx.primitives.fft import fft as _lax_fft

_NORMS = (None, "backward", "ortho", "forward")


def _norm_factor(norm, size: int, inverse: bool) -> float:
    if norm not in _NORMS:
        raise FlamefxValueError(f'invalid norm {norm!r}; use "backward", "ortho" or "forward"'
                                f"\n  at {user_frame()}")
    if norm in (None, "backward"):
        return 1.0
    if norm == "ortho":
        return math.sqrt(size) if inverse else 1 / math.sqrt(size)
    return float(size) if inverse else 1 / size


def _crop_or_pad(x, axes, sizes):
    """``x`` cut down or zero-padded at the end of each of ``axes`` to ``sizes``."""
    index = [slice(None)] * x.ndim
    widths = [(0, 0)] * x.ndim
    for axis, size in zip(axes, sizes):
        index[axis] = slice(0, size)
        widths[axis] = (0, max(0, size - x.shape[axis]))
    if any(x.shape[a] > s for a, s in zip(axes, sizes)):
        x = x[tuple(index)]
    if any(w != (0, 0) for w in widths):
        x = pad(x, widths)
    return x


def _fft_core(name, fft_type, a, s, axes, norm):
    """JAX's _fft_core: the transform of ``a`` over ``axes`` with lengths ``s``."""
    x = as_operand(a)
    if s is not None:
        s = tuple(operator.index(n) for n in s)
        if axes is not None and len(s) != len(axes):
            raise FlamefxValueError(f"{name}: s={s} and axes={tuple(axes)} differ in length\n"
                                    f"  at {user_frame()}")
    given_axes = axes
    if axes is None:
        axes = range(x.ndim) if s is None else range(x.ndim - len(s), x.ndim)
    axes = tuple(canonical_axis(ax, x.ndim) for ax in axes)
    if len(set(axes)) != len(axes):
        raise FlamefxValueError(f"{name} does not support repeated axes, got {axes}\n"
                                f"  at {user_frame()}")
    trailing = tuple(range(x.ndim - len(axes), x.ndim))
    if given_axes is not None:
        x = moveaxis(x, axes, trailing)
    if s is None:
        s = tuple(x.shape[ax] for ax in trailing)
        if fft_type == FftType.IRFFT and s:
            s = s[:-1] + (max(0, 2 * (s[-1] - 1)),)
    else:
        in_sizes = list(s)
        if fft_type == FftType.IRFFT:
            in_sizes[-1] = s[-1] // 2 + 1
        x = _crop_or_pad(x, trailing, in_sizes)
    if any(n < 1 for n in s):
        raise FlamefxValueError(f"{name}: invalid number of FFT data points {s} (each must be "
                                f"at least 1)\n  at {user_frame()}")
    out = _lax_fft(x, fft_type, s)
    factor = _norm_factor(norm, math.prod(s), name.startswith("i"))
    if factor != 1.0:
        out = out * factor
    if given_axes is not None:
        out = moveaxis(out, trailing, axes)
    return out


def _one_axis(name, fft_type, a, n, axis, norm):
    return _fft_core(name, fft_type, a, None if n is None else (n,), (axis,), norm)


def fft(a, n=None, axis: int = -1, norm=None):
    """The 1-d discrete Fourier transform along ``axis`` (``n``: crop or zero-pad to n).

    >>> fft(asarray([1.0, 1.0])).tolist()
    [(2+0j), 0j]
    """
    return _one_axis("fft", FftType.FFT, a, n, axis, norm)


def ifft(a, n=None, axis: int = -1, norm=None):
    """The inverse of fft along ``axis``.

    >>> ifft(asarray([2.0, 0.0])).tolist()
    [(1+0j), (1+0j)]
    """
    return _one_axis("ifft", FftType.IFFT, a, n, axis, norm)


def rfft(a, n=None, axis: int = -1, norm=None):
    """The transform of a real input: its n // 2 + 1 non-negative frequencies.

    >>> rfft(asarray([1.0, 2.0, 3.0, 4.0])).shape
    (3,)
    """
    return _one_axis("rfft", FftType.RFFT, a, n, axis, norm)


def irfft(a, n=None, axis: int = -1, norm=None):
    """The inverse of rfft: a real signal of length ``n`` (default 2 (m - 1)).

    >>> irfft(asarray([4.0, 0.0, 0.0])).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    return _one_axis("irfft", FftType.IRFFT, a, n, axis, norm)


def hfft(a, n=None, axis: int = -1, norm=None):
    """The transform of a Hermitian-symmetric signal given by its first half: real output
    of length ``n`` (default 2 (m - 1)).

    >>> hfft(asarray([1.0, 0.0, 0.0])).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    conj_a = complex_ops.conj(_as_complex(a))
    size = (conj_a.shape[canonical_axis(axis, conj_a.ndim)] - 1) * 2 if n is None else n
    return _one_axis("hfft", FftType.IRFFT, conj_a, n, axis, norm) * float(size)


def ihfft(a, n=None, axis: int = -1, norm=None):
    """The inverse of hfft: the first n // 2 + 1 entries of a real signal's inverse DFT.

    >>> ihfft(asarray([1.0, 1.0, 1.0, 1.0])).tolist()
    [(1+0j), 0j, 0j]
    """
    x = as_operand(a)
    size = x.shape[canonical_axis(axis, x.ndim)] if n is None else n
    out = _one_axis("ihfft", FftType.RFFT, x, n, axis, norm)
    return complex_ops.conj(out) * (1 / size)


def _as_complex(a):
    x = as_operand(a)
    if dtypes.is_complex(x.dtype):
        return x
    return x.astype(dtypes.complex_dtype(x.dtype if dtypes.is_inexact(x.dtype)
                                         else dtypes.default_float()))


def fft2(a, s=None, axes=(-2, -1), norm=None):
    """The 2-d transform over ``axes`` (the last two by default).

    >>> fft2(asarray([[1.0, 0.0], [0.0, 0.0]])).tolist()
    [[(1+0j), (1+0j)], [(1+0j), (1+0j)]]
    """
    return _fft_core("fft2", FftType.FFT, a, s, axes, norm)


def ifft2(a, s=None, axes=(-2, -1), norm=None):
    """The inverse of fft2.

    >>> ifft2(asarray([[4.0, 0.0], [0.0, 0.0]])).tolist()
    [[(1+0j), (1+0j)], [(1+0j), (1+0j)]]
    """
    return _fft_core("ifft2", FftType.IFFT, a, s, axes, norm)


def rfft2(a, s=None, axes=(-2, -1), norm=None):
    """The 2-d transform of a real input (the last axis halved).

    >>> rfft2(asarray([[1.0, 0.0], [0.0, 0.0]])).shape
    (2, 2)
    """
    return _fft_core("rfft2", FftType.RFFT, a, s, axes, norm)


def irfft2(a, s=None, axes=(-2, -1), norm=None):
    """The inverse of rfft2.

    >>> irfft2(asarray([[4.0, 0.0], [0.0, 0.0]])).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    return _fft_core("irfft2", FftType.IRFFT, a, s, axes, norm)


def fftn(a, s=None, axes=None, norm=None):
    """The n-d transform over ``axes`` (all by default, or the last len(s)).

    >>> fftn(asarray([[1.0, 0.0], [0.0, 0.0]])).shape
    (2, 2)
    """
    return _fft_core("fftn", FftType.FFT, a, s, axes, norm)


def ifftn(a, s=None, axes=None, norm=None):
    """The inverse of fftn.

    >>> ifftn(asarray([[4.0, 0.0], [0.0, 0.0]])).tolist()
    [[(1+0j), (1+0j)], [(1+0j), (1+0j)]]
    """
    return _fft_core("ifftn", FftType.IFFT, a, s, axes, norm)


def rfftn(a, s=None, axes=None, norm=None):
    """The n-d transform of a real input (the last axis halved).

    >>> rfftn(asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])).shape
    (2, 2)
    """
    return _fft_core("rfftn", FftType.RFFT, a, s, axes, norm)


def irfftn(a, s=None, axes=None, norm=None):
    """The inverse of rfftn.

    >>> irfftn(asarray([[4.0, 0.0], [0.0, 0.0]])).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    return _fft_core("irfftn", FftType.IRFFT, a, s, axes, norm)


def _frequencies(n: int, d, dtype, device, half: bool):
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise FlamefxValueError(f"the number of samples n must be a positive int, got {n!r}\n"
                                f"  at {user_frame()}")
    cycles = (np.arange(n // 2 + 1) if half else
              np.concatenate([np.arange((n - 1) // 2 + 1), np.arange(-(n // 2), 0)]))
    dtype = dtypes.default_float() if dtype is None else dtypes.canonicalize(dtype)
    if is_python_scalar(d):   # exact in float64 before the cast (a weak d would be float32)
        return asarray(cycles / (d * n), dtype, device=device)
    return asarray(cycles, dtype, device=device) / (as_operand(d) * float(n))


def fftfreq(n: int, d=1.0, *, dtype=None, device=None):
    """The sample frequencies of an n-point fft with spacing ``d``: [0, 1, ..., -1] / (d n).

    >>> fftfreq(4).tolist()
    [0.0, 0.25, -0.5, -0.25]
    """
    return _frequencies(n, d, dtype, device, half=False)


def rfftfreq(n: int, d=1.0, *, dtype=None, device=None):
    """The sample frequencies of an n-point rfft: [0, 1, ..., n // 2] / (d n).

    >>> rfftfreq(4).tolist()
    [0.0, 0.25, 0.5]
    """
    return _frequencies(n, d, dtype, device, half=True)


def _shift(x, axes, sign):
    x = as_operand(x)
    axes = tuple(range(x.ndim)) if axes is None else (
        (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes))
    axes = tuple(canonical_axis(ax, x.ndim) for ax in axes)
    if not axes:
        return x
    return roll(x, tuple(sign * (x.shape[ax] // 2) for ax in axes), axes)


def fftshift(x, axes=None):
    """The spectrum reordered so the zero frequency is in the middle.

    >>> fftshift(asarray([0, 1, 2, -2, -1])).tolist()
    [-2, -1, 0, 1, 2]
    """
    return _shift(x, axes, 1)


def ifftshift(x, axes=None):
    """The inverse of fftshift.

    >>> ifftshift(asarray([-2, -1, 0, 1, 2])).tolist()
    [0, 1, 2, -2, -1]
    """
    return _shift(x, axes, -1)

