"""Reading the values flamefx.numpy needs while tracing (bounds, positions, masks whose
values fix a result's shape): a tracer stands for its concrete value where it has one (an
eager transform's tracer), and raises the caller's error where it does not (under jit).

>>> import numpy as np
>>> concrete_scalar(np.int32(3), "arange stop")
3
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flamefx.core import Array, Tracer


def concrete_value(x, error: Callable[[str], Exception]):
    """``x`` itself, or the concrete Array behind a tracer; a tracer without one (under jit)
    raises ``error(aval)``, where ``aval`` reads like ``f32[3]``: each caller words what it
    needed the values for and what to do instead.

    >>> concrete_value([1, 2], ValueError)
    [1, 2]
    """
    if not isinstance(x, Tracer):
        return x
    value = x.to_concrete()
    if value is None:
        raise error(x.aval.str_short())
    return value


def concrete_scalar(x, what: str):
    """``x`` as a Python scalar (a 1-element array or a tracer with a concrete value is
    read); a traced one raises the ConcretizationError of a tracer used as a Python
    ``what``.

    >>> concrete_scalar(np.float64(0.5), "arange step")
    0.5
    """
    if isinstance(x, Tracer):
        x = x._concrete(what)
    return x.item() if isinstance(x, (Array, np.ndarray, np.generic)) else x
