"""Dropout: zero a random fraction of activations in training, rescale the rest.

>>> import flamefx.numpy as fnp, flamefx.random as frandom
>>> y = dropout(frandom.key(0), 0.5, fnp.ones(1000))
>>> sorted(set(y.tolist()))
[0.0, 2.0]
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx import random as frandom
from flamefx.errors import FlamefxValueError


def dropout(key, rate: float, x, deterministic: bool = False):
    """Zeros each element with probability ``rate`` and scales the kept ones by
    ``1 / (1 - rate)``, so the expectation is unchanged; identity when ``deterministic``.

    >>> dropout(frandom.key(0), 0.5, fnp.ones(3), deterministic=True).tolist()
    [1.0, 1.0, 1.0]
    """
    if not 0.0 <= rate <= 1.0:
        raise FlamefxValueError(f"dropout rate must be in [0, 1], got {rate}")
    if deterministic or rate == 0.0:
        return x
    if rate == 1.0:
        return fnp.zeros_like(x)
    keep = frandom.bernoulli(key, 1.0 - rate, x.shape)
    return fnp.where(keep, x / (1.0 - rate), fnp.zeros_like(x))
