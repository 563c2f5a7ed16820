"""The optimizer interface: a GradientTransformation is a pair of pure functions.

``init(params) -> state`` and ``update(updates, state, params=None) -> (updates, state)``,
over pytrees, with states that are NamedTuples of arrays (pytrees themselves), so that a
whole training step can be jitted, vmapped or checkpointed.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.sgd(0.1)
>>> params = {"w": fnp.ones(2)}
>>> state = opt.init(params)
>>> updates, state = opt.update({"w": fnp.ones(2)}, state)
>>> optim.apply_updates(params, updates)["w"].tolist()
[0.8999999761581421, 0.8999999761581421]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Union

import flamefx.numpy as fnp
from flamefx import dtypes, tree_util

Params = Any  # a pytree of arrays
Updates = Any  # a pytree of the same structure as Params
OptState = Any  # a pytree (usually NamedTuples) holding what an optimizer remembers
Schedule = Callable[[Any], Any]  # step count (an int32 array) -> scalar value
ScalarOrSchedule = Union[float, Schedule]  # noqa: UP007 (a runtime alias, not an annotation)


class GradientTransformation(NamedTuple):
    """An optimizer or a building block of one: ``init`` and ``update``, both pure.

    >>> opt = GradientTransformation(lambda params: (), lambda u, s, p=None: (u, s))
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def identity() -> GradientTransformation:
    """Passes updates through unchanged.

    >>> identity().update({"w": 1.0}, EmptyState())
    ({'w': 1.0}, EmptyState())
    """
    return GradientTransformation(lambda params: EmptyState(),
                                  lambda updates, state, params=None: (updates, state))


def set_to_zero() -> GradientTransformation:
    """Turns every update into zeros (freezes parameters, e.g. inside ``partition``).

    >>> opt = partition({"train": sgd(0.1), "frozen": set_to_zero()}, labels)  # doctest: +SKIP
    """
    def update(updates, state, params=None):
        return zeros_like_tree(updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies ``transforms`` one after another; the state is the tuple of their states.

    >>> opt = chain(clip_by_global_norm(1.0), scale_by_adam(), scale_by_learning_rate(1e-3))
    ... # doctest: +SKIP
    """
    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        new_states = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_states.append(s)
        return updates, tuple(new_states)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``params + updates``, leaf by leaf, keeping each parameter's dtype.

    >>> apply_updates({"w": fnp.ones(2)}, {"w": fnp.full(2, 0.5)})["w"].tolist()
    [1.5, 1.5]
    """
    return tree_util.tree_map(lambda p, u: (p + u).astype(fnp.asarray(p).dtype), params, updates)


def global_norm(tree) -> Any:
    """The L2 norm of all leaves of ``tree`` together (a scalar array).

    >>> global_norm({"a": fnp.array([3.0]), "b": fnp.array([4.0])}).item()
    5.0
    """
    squares = [fnp.sum(fnp.square(leaf)) for leaf in tree_util.tree_leaves(tree)]
    total = squares[0]
    for s in squares[1:]:
        total = total + s
    return fnp.sqrt(total)


def zeros_like_tree(tree):
    """Zeros shaped like each leaf of ``tree``: a fresh moment or trace state.

    >>> zeros_like_tree({"w": fnp.ones(2)})["w"].tolist()
    [0.0, 0.0]
    """
    return tree_util.tree_map(fnp.zeros_like, tree)


def zeros_count():
    """A fresh step counter: a 0-d int32 array (kept in states, so it works under jit)."""
    return fnp.zeros((), dtype=dtypes.int32)


def compute_dtype(x) -> Any:
    """The float dtype scalar factors (bias corrections, learning rates) use for ``x``."""
    return dtypes.float64 if fnp.asarray(x).dtype == dtypes.float64 else dtypes.float32


def evaluate(value: ScalarOrSchedule, count):
    """``value(count)`` for a schedule, ``value`` itself for a constant."""
    return value(count) if callable(value) else value
