"""Samples for the fft primitive; the reference is a direct O(n^2) DFT in complex128 (a
matrix product per axis), independent of pocketfft and cuFFT.

check_grads perturbs complex operands and pairs complex outputs as JAX does; tests/test_fft.py
checks every fft_type's derivatives once more through real wrappers.
"""

import numpy as np

from flamefx.primitives.fft import FftType
from tests.samples import Sample


def _dft_matrix(n, sign):
    k = np.arange(n)
    return np.exp(sign * 2j * np.pi * np.outer(k, k) / n)


def _dft(x, axes, sign):
    """sum_n x_n exp(sign 2 pi i k n / N) along each of ``axes``."""
    out = x.astype(np.complex128)
    for axis in axes:
        out = np.moveaxis(np.tensordot(_dft_matrix(out.shape[axis], sign), out, (1, axis)),
                          0, axis)
    return out


def _reference(fft_type, fft_lengths):
    def reference(x):
        axes = tuple(range(x.ndim - len(fft_lengths), x.ndim))
        size = np.prod(fft_lengths)
        if fft_type == FftType.FFT:
            return _dft(x, axes, -1).astype(x.dtype)
        if fft_type == FftType.IFFT:
            return (_dft(x, axes, 1) / size).astype(x.dtype)
        complex_dtype = np.result_type(x.dtype, np.complex64)
        if fft_type == FftType.RFFT:
            full = _dft(x, axes, -1)
            return full[..., : fft_lengths[-1] // 2 + 1].astype(complex_dtype)
        # IRFFT: rebuild the full last axis by Hermitian symmetry (conjugates of the interior,
        # reversed; the imaginary parts of DC and Nyquist dropped), then an inverse DFT.
        outer = _dft(x, axes[:-1], 1) / np.prod(fft_lengths[:-1])
        n = fft_lengths[-1]
        full = np.zeros(outer.shape[:-1] + (n,), np.complex128)
        half = outer[..., : n // 2 + 1]
        full[..., : n // 2 + 1] = half
        full[..., n // 2 + 1:] = np.conj(half[..., 1:(n + 1) // 2][..., ::-1])
        full[..., 0] = full[..., 0].real
        if n % 2 == 0:
            full[..., n // 2] = full[..., n // 2].real
        return np.real(_dft(full, (x.ndim - 1,), 1) / n).astype(np.real(x).dtype)
    return reference


def _sample(fft_type, fft_lengths, in_shape, dtype, name=""):
    def make(rng):
        x = rng.standard_normal(in_shape)
        if np.issubdtype(dtype, np.complexfloating):
            x = x + 1j * rng.standard_normal(in_shape)
        return [x.astype(dtype)]
    return Sample(make, {"fft_type": fft_type, "fft_lengths": fft_lengths},
                  _reference(fft_type, fft_lengths), (0,), name=name or fft_type.name)


SAMPLES = {
    "fft": [
        _sample(FftType.FFT, (8,), (8,), np.complex128),
        _sample(FftType.FFT, (3, 4), (2, 3, 4), np.complex128),
        _sample(FftType.FFT, (5,), (2, 5), np.complex64, "FFT complex64"),
        _sample(FftType.IFFT, (6,), (3, 6), np.complex128),
        _sample(FftType.IFFT, (2, 3, 4), (2, 3, 4), np.complex128),
        _sample(FftType.RFFT, (8,), (3, 8), np.float64),
        _sample(FftType.RFFT, (4, 5), (4, 5), np.float64),
        _sample(FftType.RFFT, (7,), (2, 7), np.float32, "RFFT float32"),
        _sample(FftType.IRFFT, (8,), (3, 5), np.complex128),
        _sample(FftType.IRFFT, (3, 7), (2, 3, 4), np.complex128),
        _sample(FftType.IRFFT, (1,), (1,), np.complex128, "IRFFT of length 1"),
    ],
}
