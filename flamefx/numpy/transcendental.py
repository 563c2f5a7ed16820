"""Inverse hyperbolic functions, sinc, and angle-unit conversions.

The exponential, logarithmic and trigonometric basics are in ``flamefx.numpy.math``.

>>> import flamefx.numpy as fnp
>>> f"{fnp.arcsinh(1.0).item():.5f}"
'0.88137'
"""

from __future__ import annotations

import math as _pymath

from flamefx import lax
from flamefx.numpy.promotion import constant_like, promote_dtypes_inexact


def _inexact(x):
    return promote_dtypes_inexact(x)[0]


def arcsinh(x):
    """The inverse hyperbolic sine.

    >>> f"{arcsinh(1.0).item():.5f}"
    '0.88137'
    """
    return lax.asinh(_inexact(x))


def arccosh(x):
    """The inverse hyperbolic cosine, for x >= 1 (NaN below).

    >>> arccosh(1.0).item()
    0.0
    """
    return lax.acosh(_inexact(x))


def arctanh(x):
    """The inverse hyperbolic tangent, for -1 < x < 1 (+-inf at +-1).

    >>> arctanh(0.0).item()
    0.0
    """
    return lax.atanh(_inexact(x))


# The array API's spellings (JAX has them too).
asinh = arcsinh
acosh = arccosh
atanh = arctanh

# Taylor coefficients of sin(z)/z up to z^8 (error below 3e-18 for |z| < 0.1).
_SINC_TAYLOR = (1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)
_SINC_TAYLOR_RADIUS = 0.1


def sinc(x):
    """The normalized sinc, ``sin(pi x) / (pi x)``, with ``sinc(0) = 1``.

    Near 0 it is computed as its Taylor polynomial, so that derivatives are smooth there (to
    order 8; JAX's are smooth to every order): ``grad(sinc)(0.0) == 0`` and the second
    derivative at 0 is ``-pi**2 / 3``.

    >>> sinc(0.0).item()
    1.0
    """
    x = _inexact(x)
    z = lax.mul(x, constant_like(x, _pymath.pi))
    magnitude = lax.abs(z)  # real for complex z too
    near_zero = lax.lt(magnitude, constant_like(magnitude, _SINC_TAYLOR_RADIUS))
    z2 = lax.mul(z, z)
    taylor = constant_like(z, _SINC_TAYLOR[-1])
    for coefficient in reversed(_SINC_TAYLOR[:-1]):
        taylor = lax.add(lax.mul(taylor, z2), constant_like(z, coefficient))
    # Double where: the far branch divides by a z that is never near 0, so its (unused)
    # derivative is finite where the Taylor branch is taken.
    safe_z = lax.select_n(near_zero, z, constant_like(z, 1))
    return lax.select_n(near_zero, lax.div(lax.sin(safe_z), safe_z), taylor)


def deg2rad(x):
    """Degrees to radians.

    >>> f"{deg2rad(180.0).item():.5f}"
    '3.14159'
    """
    x = _inexact(x)
    return lax.mul(x, constant_like(x, _pymath.pi / 180))


def rad2deg(x):
    """Radians to degrees.

    >>> f"{rad2deg(3.141592653589793).item():.3f}"
    '180.000'
    """
    x = _inexact(x)
    return lax.mul(x, constant_like(x, 180 / _pymath.pi))


radians = deg2rad
degrees = rad2deg
