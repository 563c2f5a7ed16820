"""Complex numbers: real and imaginary parts, conjugates, angles, and the complex tests.

>>> import flamefx.numpy as fnp
>>> z = fnp.array([1 + 1j, 2.0])
>>> fnp.real(z).tolist(), fnp.imag(z).tolist()
([1.0, 2.0], [1.0, 0.0])
"""

from __future__ import annotations

import math as _pymath

from flamefx import dtypes, lax
from flamefx.numpy.promotion import as_operand, constant_like, promote_dtypes_inexact


def _is_complex(x) -> bool:
    return dtypes.is_complex(x.dtype)


def real(x):
    """The real part (``x`` itself for real arrays).

    >>> real(3 - 4j).item()
    3.0
    """
    x = as_operand(x)
    return lax.real(x) if _is_complex(x) else x


def imag(x):
    """The imaginary part (zeros for real arrays).

    >>> imag(3 - 4j).item()
    -4.0
    """
    x = as_operand(x)
    return lax.imag(x) if _is_complex(x) else constant_like(x, 0)


def conjugate(x):
    """The complex conjugate (``x`` itself for real arrays).

    >>> conjugate(3 - 4j).item()
    (3+4j)
    """
    x = as_operand(x)
    return lax.conj(x) if _is_complex(x) else x


conj = conjugate


def angle(z, deg: bool = False):
    """The argument of ``z``, ``atan2(imag(z), real(z))``, in radians or degrees.

    >>> f"{angle(1j).item():.5f}"
    '1.57080'
    """
    z = as_operand(z)
    re, im = promote_dtypes_inexact(real(z), imag(z))
    result = lax.atan2(im, re)
    return lax.mul(result, constant_like(result, 180 / _pymath.pi)) if deg else result


def iscomplex(x):
    """True where the imaginary part is nonzero.

    >>> iscomplex(1 + 0j).item()
    False
    """
    im = imag(x)
    return lax.ne(im, constant_like(im, 0))


def isreal(x):
    """True where the imaginary part is zero.

    >>> isreal(1 + 0j).item()
    True
    """
    im = imag(x)
    return lax.eq(im, constant_like(im, 0))


def iscomplexobj(x) -> bool:
    """Whether ``x`` has a complex dtype (whatever its values).

    >>> iscomplexobj(1 + 0j)
    True
    """
    if x is None:
        return False
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = as_operand(x).dtype
    return dtypes.is_complex(dtype)


def isrealobj(x) -> bool:
    """Whether ``x`` has a real (not complex) dtype.

    >>> isrealobj(1.0)
    True
    """
    return not iscomplexobj(x)
