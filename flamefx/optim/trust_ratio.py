"""Layer-wise scalings: each leaf (a "block": a weight matrix, a bias) is scaled by a ratio
of norms, and the optimizers built on them (LAMB, LARS, Fromage).

The norms are per leaf, so the ratio is one scalar per leaf; zero norms fall back to a
ratio of 1 (as optax), and norms at or below ``min_norm`` are clamped through a ``where``
whose other branch is kept finite, so gradients through these transforms never see 0/0.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.lamb(1e-3, weight_decay=1e-2)
>>> state = opt.init({"w": fnp.ones((2, 2))})
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx import tree_util
from flamefx.errors import FlamefxValueError, where
from flamefx.optim.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    chain,
)
from flamefx.optim.transforms import (
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)
from flamefx.optim.wrappers import masked


def _needs_params(name: str, params):
    if params is None:
        raise FlamefxValueError(f"{name} needs the params: call update(grads, state, params)"
                                + where())


def _safe_norm(x, min_norm):
    """``max(||x||, min_norm)`` as optax's ``safe_norm``: at or below ``min_norm`` the norm
    of a vector of ones is taken instead, so the gradient there is 0, not NaN."""
    norm = fnp.sqrt(fnp.sum(fnp.square(x)))
    small = norm <= min_norm
    safe = fnp.sqrt(fnp.sum(fnp.square(fnp.where(small, fnp.ones_like(x), x))))
    return fnp.where(small, min_norm, safe)


def _safe_rms(x, min_rms):
    """``max(rms(x), min_rms)``, with the same finite-gradient guard as ``_safe_norm``."""
    rms = fnp.sqrt(fnp.mean(fnp.square(x)))
    small = rms <= min_rms
    safe = fnp.sqrt(fnp.mean(fnp.square(fnp.where(small, fnp.ones_like(x), x))))
    return fnp.where(small, min_rms, safe)


def scale_by_trust_ratio(min_norm: float = 0.0, trust_coefficient: float = 1.0,
                         eps: float = 0.0) -> GradientTransformation:
    """Scales each leaf's update by ``trust_coefficient * ||param|| / (||update|| + eps)``
    (1 where either norm is 0): LARS's and LAMB's layer-wise step size.

    >>> opt = scale_by_trust_ratio(trust_coefficient=1e-3)
    """
    def update(updates, state, params=None):
        _needs_params("scale_by_trust_ratio", params)

        def scaled(u, p):
            param_norm = _safe_norm(p, min_norm)
            update_norm = _safe_norm(u, min_norm)
            ratio = trust_coefficient * param_norm / (update_norm + eps)
            zero = fnp.logical_or(param_norm == 0.0, update_norm == 0.0)
            return u * fnp.where(zero, fnp.ones_like(ratio), ratio)

        return tree_util.tree_map(scaled, updates, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


def _scale_by_param_measure(who, measure, min_scale) -> GradientTransformation:
    """Each leaf's update times ``measure(param, min_scale)`` of its parameter."""
    def update(updates, state, params=None):
        _needs_params(who, params)
        return tree_util.tree_map(lambda u, p: u * measure(p, min_scale),
                                  updates, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_param_block_norm(min_scale: float = 1e-3) -> GradientTransformation:
    """Scales each leaf's update by its parameter's L2 norm (at least ``min_scale``).

    >>> opt = scale_by_param_block_norm()
    """
    return _scale_by_param_measure("scale_by_param_block_norm", _safe_norm, min_scale)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Scales each leaf's update by its parameter's root mean square (at least
    ``min_scale``): Adafactor's relative step size.

    >>> opt = scale_by_param_block_rms()
    """
    return _scale_by_param_measure("scale_by_param_block_rms", _safe_rms, min_scale)


def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Divides each leaf's update by ``max(1, rms(update) / threshold)``: no block's RMS
    exceeds ``threshold``.

    >>> opt = clip_by_block_rms(1.0)
    """
    def update(updates, state, params=None):
        def clipped(u):
            return u / fnp.maximum(1.0, fnp.sqrt(fnp.mean(fnp.square(u))) / threshold)

        return tree_util.tree_map(clipped, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


# --- optimizers ----------------------------------------------------------------------------


def lamb(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-6, eps_root: float = 0.0, weight_decay: float = 0.0,
         mask=None) -> GradientTransformation:
    """LAMB (You et al. 2020): Adam plus weight decay, scaled layer-wise by a trust ratio.

    >>> opt = lamb(1e-3, weight_decay=1e-2)
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
                 scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))


def lars(learning_rate: ScalarOrSchedule, weight_decay: float = 0.0,
         weight_decay_mask=True, trust_coefficient: float = 0.001, eps: float = 0.0,
         trust_ratio_mask=True, momentum: float = 0.9,
         nesterov: bool = False) -> GradientTransformation:
    """LARS (You et al. 2017): SGD with momentum on layer-wise trust-ratio-scaled steps.

    ``weight_decay_mask`` / ``trust_ratio_mask``: which leaves get each (a tree of bools,
    a function params -> that tree, or True for all).

    >>> opt = lars(0.1, weight_decay=1e-4, momentum=0.9)
    """
    return chain(add_decayed_weights(weight_decay, weight_decay_mask),
                 masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
                        trust_ratio_mask),
                 scale_by_learning_rate(learning_rate), trace(momentum, nesterov))


def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    """Fromage (Bernstein et al. 2020): trust-ratio steps, parameters shrunk by
    ``1 / sqrt(1 + lr**2)`` so their norms stay put.

    >>> opt = fromage(1e-2)
    """
    if callable(learning_rate):
        def shrink(count):
            return 1 / (1 + learning_rate(count) ** 2) ** 0.5

        return chain(scale_by_trust_ratio(min_norm),
                     scale_by_learning_rate(lambda count: shrink(count) * learning_rate(count)),
                     add_decayed_weights(lambda count: shrink(count) - 1))
    shrink = 1 / (1 + learning_rate ** 2) ** 0.5
    return chain(scale_by_trust_ratio(min_norm),
                 scale_by_learning_rate(learning_rate * shrink),
                 add_decayed_weights(shrink - 1))
