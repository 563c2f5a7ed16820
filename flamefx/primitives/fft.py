"""fft: the discrete Fourier transform over an array's trailing axes, as lax.fft has it.

``fft_type`` is FFT or IFFT (complex to complex), RFFT (real to the non-negative half of
the spectrum, last axis n // 2 + 1 long) or IRFFT (that half back to a real array of
``fft_lengths``); ``fft_lengths`` are the sizes of the transformed trailing axes. The CPU
runs NumPy's pocketfft, the GPU cuFFT through ``cupy.fft``.

The transform is linear, so its VJP is its transpose (JAX's rules, no conjugation of the
cotangent beyond what they write): the DFT matrix is symmetric, so FFT and IFFT transpose to
themselves; RFFT and IRFFT transpose to each other, with the interior frequencies (those
that stand for a conjugate pair of the full spectrum) weighted by 2 or 1/2.

>>> import numpy as np
>>> fft(np.array([1.0, 0.0, 0.0, 0.0], np.complex128), "fft", (4,)).tolist()
[(1+0j), (1+0j), (1+0j), (1+0j)]
"""

from __future__ import annotations

import enum
import math

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.primitives import elementwise as ew
from flamefx.primitives import structural


class FftType(enum.IntEnum):
    """Which transform ``fft`` computes (lax.FftType)."""

    FFT = 0
    IFFT = 1
    RFFT = 2
    IRFFT = 3


def _fft_type(value) -> FftType:
    if isinstance(value, FftType):
        return value
    if isinstance(value, str) and value.upper() in FftType.__members__:
        return FftType[value.upper()]
    raise FlamefxTypeError(f"unknown fft_type {value!r}: use 'fft', 'ifft', 'rfft', 'irfft' "
                           f"or lax.FftType")


# --- shape rule ----------------------------------------------------------------------------


def _fft_abstract(x, *, fft_type, fft_lengths):
    k = len(fft_lengths)
    if not 1 <= k <= x.ndim:
        raise FlamefxTypeError(f"fft_lengths {fft_lengths} must name 1 to {x.ndim} trailing "
                               f"axes of the operand")
    trailing = x.shape[x.ndim - k:]
    if fft_type == FftType.RFFT:
        if x.dtype not in (dtypes.float32, dtypes.float64):
            raise FlamefxTypeError(f"RFFT needs a float32 or float64 operand, got {x.dtype}")
        if trailing != fft_lengths:
            raise FlamefxTypeError(f"RFFT operand's trailing axes {trailing} must equal "
                                   f"fft_lengths {fft_lengths}")
        shape = x.shape[:x.ndim - k] + fft_lengths[:-1] + (fft_lengths[-1] // 2 + 1,)
        return [ShapedArray(shape, dtypes.complex_dtype(x.dtype))]
    if not dtypes.is_complex(x.dtype):
        raise FlamefxTypeError(f"{fft_type.name} needs a complex64 or complex128 operand, got "
                               f"{x.dtype}")
    if fft_type == FftType.IRFFT:
        if trailing[:-1] != fft_lengths[:-1] or trailing[-1] != fft_lengths[-1] // 2 + 1:
            raise FlamefxTypeError(f"IRFFT operand's trailing axes {trailing} must be "
                                   f"fft_lengths {fft_lengths} with the last one n // 2 + 1")
        shape = x.shape[:x.ndim - k] + fft_lengths
        return [ShapedArray(shape, dtypes.real_dtype(x.dtype))]
    if trailing != fft_lengths:
        raise FlamefxTypeError(f"{fft_type.name} operand's trailing axes {trailing} must equal "
                               f"fft_lengths {fft_lengths}")
    return [ShapedArray(x.shape, x.dtype)]


# --- implementations ---------------------------------------------------------------------


def _run(xp_fft, x, fft_type, fft_lengths):
    """One transform with ``xp_fft`` (numpy.fft or cupy.fft) over the trailing axes."""
    axes = tuple(range(x.ndim - len(fft_lengths), x.ndim))
    if fft_type == FftType.FFT:
        return xp_fft.fftn(x, axes=axes)
    if fft_type == FftType.IFFT:
        return xp_fft.ifftn(x, axes=axes)
    if fft_type == FftType.RFFT:
        return xp_fft.rfftn(x, axes=axes)
    # Multi-axis C2R as an inverse FFT over the outer axes, then a 1-d C2R: cuFFT's n-d C2R
    # assumes Hermitian symmetry on every axis, NumPy (and JAX) only on the last one.
    if len(axes) > 1:
        x = xp_fft.ifftn(x, axes=axes[:-1])
    return xp_fft.irfft(x, n=fft_lengths[-1], axis=-1)


def _out_dtype(x, fft_type):
    if fft_type == FftType.RFFT:
        return dtypes.complex_dtype(x.dtype)
    if fft_type == FftType.IRFFT:
        return dtypes.real_dtype(x.dtype)
    return x.dtype


def _fft_impl(x, *, fft_type, fft_lengths):
    return [np.asarray(_run(np.fft, x, fft_type, fft_lengths), _out_dtype(x, fft_type))]


def _fft_cuda(x, *, fft_type, fft_lengths):
    cp = devices.cupy()
    # cupy.fft keeps single precision (complex64/float32) and runs cuFFT with cached plans.
    out = _run(cp.fft, x, fft_type, fft_lengths)
    return [out.astype(_out_dtype(x, fft_type), copy=False)]


# --- derivatives -------------------------------------------------------------------------


def _weight_interior(z, factor, n_last):
    """``z`` (a half spectrum) with the entries between DC and Nyquist multiplied by
    ``factor``: those stand for two conjugate entries of the full spectrum."""
    m = z.shape[-1]
    end = m - 1 if n_last % 2 == 0 else m   # an even length has a Nyquist entry at m - 1
    if end <= 1:
        return z
    starts, limits = [0] * z.ndim, list(z.shape)

    def part(lo, hi):
        starts[-1], limits[-1] = lo, hi
        return structural.slice(z, tuple(starts), tuple(limits))

    middle = part(1, end)
    pieces = [part(0, 1), ew.mul(middle, ew.full_like(middle, factor))]
    if end < m:
        pieces.append(part(end, m))
    return structural.concatenate(pieces, z.ndim - 1)


def _transpose(ct, fft_type, fft_lengths):
    from flamefx.primitives import complex_ops
    if fft_type in (FftType.FFT, FftType.IFFT):
        return fft(ct, fft_type, fft_lengths)
    size = math.prod(fft_lengths)
    if fft_type == FftType.RFFT:
        halved = _weight_interior(complex_ops.conj(ct), 0.5, fft_lengths[-1])
        full = fft(halved, FftType.IRFFT, fft_lengths)
        return ew.mul(full, ew.full_like(full, size))
    spectrum = fft(ct, FftType.RFFT, fft_lengths)
    doubled = _weight_interior(spectrum, 2.0, fft_lengths[-1])
    return complex_ops.conj(ew.mul(doubled, ew.full_like(doubled, 1 / size)))


def _fft_vjp(cts, primals, outs, *, fft_type, fft_lengths):
    return [None if cts[0] is None else _transpose(cts[0], fft_type, fft_lengths)]


def _fft_jvp(primals, tangents, *, fft_type, fft_lengths):
    out = fft(primals[0], fft_type, fft_lengths)
    t = tangents[0]
    return [out], [None if t is None else fft(t, fft_type, fft_lengths)]


def _fft_batch(axis_size, args, bdims, *, fft_type, fft_lengths):
    from flamefx.transforms import batching
    x = batching.move_axis(args[0], bdims[0], 0)
    return [fft(x, fft_type, fft_lengths)], [0]


fft_p = Primitive("fft", abstract_eval=_fft_abstract, impl=_fft_impl, cuda_impl=_fft_cuda,
                  vjp=_fft_vjp, jvp=_fft_jvp, batch=_fft_batch)


def fft(x, fft_type, fft_lengths):
    """The DFT of ``x`` over its ``len(fft_lengths)`` trailing axes (lax.fft).

    ``fft_type`` is an ``FftType`` or its name; an empty ``fft_lengths`` returns ``x``.
    Operands are converted as JAX does: RFFT takes a real float operand, the others a
    complex one (real operands become complex).

    >>> fft(np.array([1.0, 2.0, 3.0]), "rfft", (3,)).shape
    (2,)
    """
    fft_type = _fft_type(fft_type)
    fft_lengths = tuple(int(n) for n in fft_lengths)
    dtype = core.get_aval(x).dtype
    if fft_type == FftType.RFFT and dtypes.is_complex(dtype):
        raise FlamefxTypeError(f"rfft needs a real operand, got {dtype} (use fft)\n"
                               f"  at {user_frame()}")
    # Integers become the default float; float16/bfloat16 compute in 32 bits (cuFFT and
    # pocketfft have no half-precision transforms).
    target = dtypes.complex_dtype(dtype if dtypes.is_inexact(dtype) else dtypes.default_float())
    if fft_type == FftType.RFFT:
        target = dtypes.real_dtype(target)
    if dtype != target:
        x = ew.convert_element_type(x, target)
    if not fft_lengths:
        return x
    return fft_p.bind(x, fft_type=fft_type, fft_lengths=fft_lengths)
