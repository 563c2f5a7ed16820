"""Student's t distribution with ``df`` degrees of freedom (jax.scipy.stats.t).

>>> from flamefx.scipy.stats import t
>>> round(float(t.pdf(0.0, 1.0)), 6)
0.31831
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx.numpy.promotion import promote_args_inexact
from flamefx.scipy import special


def logpdf(x, df, loc=0, scale=1):
    """log of the t density.

    >>> round(float(logpdf(0.0, 1.0)), 6)
    -1.14473
    """
    x, df, loc, scale = promote_args_inexact(x, df, loc, scale)
    z = (x - loc) / scale
    half_df = df / 2.0
    half_df_plus_half = half_df + 0.5
    normalizer = (special.gammaln(half_df) + fnp.log(scale * scale * math.pi * df) / 2.0
                  - special.gammaln(half_df_plus_half))
    return -(normalizer + half_df_plus_half * fnp.log1p(z * z / df))


def pdf(x, df, loc=0, scale=1):
    """The t density.

    >>> round(float(pdf(0.0, 1.0, 0.0, 2.0)), 6)
    0.159155
    """
    return fnp.exp(logpdf(x, df, loc, scale))
