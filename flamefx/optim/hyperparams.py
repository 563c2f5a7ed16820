"""``inject_hyperparams``: an optimizer's numeric hyperparameters kept in its state, where
they can be read, changed between steps, or driven by schedules.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.inject_hyperparams(optim.adam)(learning_rate=1e-3)
>>> state = opt.init({"w": fnp.zeros(2)})
>>> round(float(state.hyperparams["learning_rate"]), 6)
0.001
>>> state.hyperparams["learning_rate"] = fnp.asarray(3e-4)   # takes effect next update
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

import flamefx.numpy as fnp
from flamefx import dtypes, tree_util
from flamefx.core import ArrayMethods  # concrete arrays and tracers alike
from flamefx.errors import FlamefxValueError, where
from flamefx.optim.base import GradientTransformation, compute_dtype, zeros_count


class InjectHyperparamsState(NamedTuple):
    count: Any  # int32 step count; schedules are evaluated at it
    hyperparams: dict  # name -> the 0-d array used by the last update (or set by the user)
    inner_state: Any


def _hyperparam_dtype(params, requested):
    """The float dtype hyperparameters are stored in: ``requested``, else the widest float
    dtype among the params (float32 unless some leaf is float64)."""
    if requested is not None:
        return requested
    leaves = tree_util.tree_leaves(params)
    return dtypes.float64 if any(compute_dtype(leaf) == dtypes.float64 for leaf in leaves) \
        else dtypes.float32


def _as_hyperparam(value, dtype):
    """Python floats and NumPy float arrays become ``dtype`` arrays; a flamefx array keeps
    its dtype (as a strongly typed JAX array does in optax); ints stay ints."""
    if isinstance(value, float) or (isinstance(value, (np.ndarray, np.floating))
                                    and np.issubdtype(value.dtype, np.floating)):
        return fnp.asarray(value, dtype=dtype)
    return fnp.asarray(value)


def inject_hyperparams(inner_factory: Callable[..., GradientTransformation],
                       static_args: str | Iterable[str] = (),
                       hyperparam_dtype=None) -> Callable[..., GradientTransformation]:
    """Wraps an optimizer factory so that its numeric arguments live in the state.

    Calling the result with the factory's arguments gives a transformation whose state
    holds ``hyperparams``: a dict of 0-d arrays, one per numeric argument, plus one per
    schedule argument (a callable, evaluated at the step count each update). Change a
    value with ``state.hyperparams[name] = value`` between updates. Bools, ``None``,
    non-numeric values and the names in ``static_args`` stay Python values (pass an
    argument the factory branches on in ``static_args``).

    >>> from flamefx import optim
    >>> opt = inject_hyperparams(optim.sgd)(learning_rate=optim.linear_schedule(0.1, 0.0, 10),
    ...                                     momentum=0.9)
    """
    static_args = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static_args <= set(signature.parameters):
        raise FlamefxValueError(f"inject_hyperparams: static_args {sorted(static_args)} must "
                                f"name parameters of {inner_factory.__name__}, which are "
                                f"{list(signature.parameters)}" + where())

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules, numeric, other = {}, {}, {}
        for name, value in bound.arguments.items():
            if name in static_args or isinstance(value, bool):
                other[name] = value
            elif callable(value):
                schedules[name] = value
            elif isinstance(value, (int, float, np.ndarray, np.number, ArrayMethods)):
                numeric[name] = value
            else:
                other[name] = value

        def current(hyperparams: dict, count, dtype) -> dict:
            values = {name: _as_hyperparam(value, dtype) for name, value in hyperparams.items()
                      if name not in schedules}
            values.update({name: _as_hyperparam(schedule(count), dtype)
                           for name, schedule in schedules.items()})
            return values

        def init(params):
            dtype = _hyperparam_dtype(params, hyperparam_dtype)
            count = zeros_count()
            hyperparams = current(numeric, count, dtype)
            return InjectHyperparamsState(count, hyperparams,
                                          inner_factory(**other, **hyperparams).init(params))

        def update(updates, state, params=None):
            dtype = _hyperparam_dtype(updates if params is None else params, hyperparam_dtype)
            hyperparams = current(state.hyperparams, state.count, dtype)
            updates, inner_state = inner_factory(**other, **hyperparams).update(
                updates, state.inner_state, params)
            return updates, InjectHyperparamsState(state.count + 1, hyperparams, inner_state)

        return GradientTransformation(init, update)

    return wrapped
