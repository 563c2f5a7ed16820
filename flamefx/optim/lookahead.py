"""Lookahead (Zhang et al. 2019): a fast optimizer explores, and every ``sync_period``
steps slow weights move a fraction of the way to the fast ones, which restart from there.

The parameters are a :class:`LookaheadParams` pair (fast, slow); the update returned is a
pair too, so ``apply_updates`` moves both.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.lookahead(optim.sgd(0.1), sync_period=5, slow_step_size=0.5)
>>> params = optim.LookaheadParams.init_synced({"w": fnp.zeros(2)})
>>> state = opt.init(params)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flamefx.numpy as fnp
from flamefx import tree_util
from flamefx.errors import FlamefxTypeError, FlamefxValueError, where
from flamefx.optim.base import GradientTransformation, zeros_count


class LookaheadState(NamedTuple):
    fast_state: Any  # the fast optimizer's state
    steps_since_sync: Any  # int32 in [0, sync_period)


class LookaheadParams(NamedTuple):
    """The fast parameters (the ones to evaluate gradients at) and the slow ones."""

    fast: Any
    slow: Any

    @classmethod
    def init_synced(cls, params) -> LookaheadParams:
        """Fast and slow both start at ``params``.

        >>> LookaheadParams.init_synced({"w": 1.0}).slow
        {'w': 1.0}
        """
        return cls(fast=params, slow=params)


def lookahead(fast_optimizer: GradientTransformation, sync_period: int,
              slow_step_size: float, reset_state: bool = False) -> GradientTransformation:
    """Wraps ``fast_optimizer`` in Lookahead: on every ``sync_period``-th step the slow
    params move ``slow_step_size`` of the way to the fast ones and the fast params are set
    to the new slow ones (with ``reset_state``, the fast optimizer's state restarts too).

    Gradients go in for the fast params: ``opt.update(grads_at_fast, state, params)``
    with ``params`` a :class:`LookaheadParams`.

    >>> from flamefx.optim import adam
    >>> opt = lookahead(adam(1e-3), sync_period=6, slow_step_size=0.5)
    """
    if sync_period < 1:
        raise FlamefxValueError(f"lookahead: sync_period must be >= 1, got {sync_period}"
                                + where())

    def init(params):
        fast = params.fast if isinstance(params, LookaheadParams) else params
        return LookaheadState(fast_optimizer.init(fast), zeros_count())

    def update(updates, state, params=None):
        if not isinstance(params, LookaheadParams):
            raise FlamefxTypeError(f"lookahead: update needs the params as a LookaheadParams "
                                   f"(fast, slow), got {type(params).__name__}" + where())
        updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast)
        sync = state.steps_since_sync == sync_period - 1
        # Where the fast params would land, minus the slow ones: the slow step's direction.
        differences = tree_util.tree_map(lambda f, u, s: f + u - s, params.fast, updates,
                                         params.slow)
        slow_updates = tree_util.tree_map(
            lambda d: fnp.where(sync, slow_step_size * d, fnp.zeros_like(d)), differences)
        fast_updates = tree_util.tree_map(
            lambda u, d: fnp.where(sync, u - (1 - slow_step_size) * d, u), updates,
            differences)
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = tree_util.tree_map(lambda now, new: fnp.where(sync, new, now),
                                            fast_state, fresh)
        steps = ((state.steps_since_sync + 1) % sync_period).astype(state.steps_since_sync.dtype)
        return LookaheadParams(fast=fast_updates, slow=slow_updates), LookaheadState(
            fast_state, steps)

    return GradientTransformation(init, update)
