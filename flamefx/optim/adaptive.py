"""Adam's relatives: per-element adaptive scalings and the optimizers chained from them.

Each ``scale_by_*`` follows optax's update equations and defaults; each optimizer is the
scaling followed by ``scale_by_learning_rate`` (plus decoupled weight decay for the ``*w``
variants), exactly as optax chains them, so states have the same layout.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.radam(1e-3)
>>> state = opt.init({"w": fnp.zeros(3)})
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flamefx.numpy as fnp
from flamefx import tree_util
from flamefx.errors import FlamefxValueError, where
from flamefx.optim.base import (
    GradientTransformation,
    ScalarOrSchedule,
    chain,
    compute_dtype,
    zeros_count,
    zeros_like_tree,
)
from flamefx.optim.transforms import (
    ScaleByAdamState,
    adam_bias_corrections,
    add_decayed_weights,
    bias_corrections,
    scale_by_adam,
    scale_by_learning_rate,
    update_moment,
)


def _first_moment_hat(g, m, b1, corrections, nesterov):
    """The bias-corrected first moment; with ``nesterov``, NAdam's look-ahead form."""
    c1, *rest = corrections
    if nesterov:
        return b1 * (m / rest[-1]) + (1 - b1) * (g / c1)
    return m / c1


# --- moment-based scalings -----------------------------------------------------------------


class ScaleByBeliefState(NamedTuple):
    count: Any
    mu: Any  # first moment
    nu: Any  # second central moment: EMA of (g - mu)**2, plus eps_root


def scale_by_belief(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-16,
                    eps_root: float = 1e-16, *, nesterov: bool = False
                    ) -> GradientTransformation:
    """AdaBelief's scaling: Adam with ``nu`` the EMA of ``(g - mu)**2`` (the "belief").

    >>> opt = scale_by_belief(b1=0.9, b2=0.999)
    """
    def init(params):
        return ScaleByBeliefState(zeros_count(), zeros_like_tree(params),
                                  zeros_like_tree(params))

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = adam_bias_corrections(b1, b2, count, updates, nesterov)
        mu = update_moment(updates, state.mu, b1, 1)
        nu = tree_util.tree_map(
            lambda g, m, v: b2 * v + (1 - b2) * fnp.square(g - m) + eps_root,
            updates, mu, state.nu)

        def scaled(g, m, v):
            c = corrections[compute_dtype(m)]
            m_hat = _first_moment_hat(g, m, b1, (c[0],) + c[2:], nesterov)
            return m_hat / (fnp.sqrt(v / c[1]) + eps)

        return tree_util.tree_map(scaled, updates, mu, nu), ScaleByBeliefState(count, mu, nu)

    return GradientTransformation(init, update)


def scale_by_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   eps_root: float = 0.0, threshold: float = 5.0, *,
                   nesterov: bool = False) -> GradientTransformation:
    """Rectified Adam's scaling: Adam times the variance rectification ``r`` once the
    approximated SMA length ``rho`` reaches ``threshold``; plain momentum before.

    >>> opt = scale_by_radam(threshold=5.0)
    """
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init(params):
        return ScaleByAdamState(zeros_count(), zeros_like_tree(params),
                                zeros_like_tree(params))

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = adam_bias_corrections(b1, b2, count, updates, nesterov)
        mu = update_moment(updates, state.mu, b1, 1)
        nu = update_moment(updates, state.nu, b2, 2)
        rectifications = {}
        for dtype, c in corrections.items():
            b2t = 1 - c[1]
            rho = rho_inf - 2 * count.astype(dtype) * b2t / c[1]
            # Clamped below at 4 so that the unused branch of the where stays finite.
            rho_safe = fnp.maximum(rho, 4.0)
            r = fnp.sqrt((rho_safe - 4.0) * (rho_safe - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_safe))
            rectifications[dtype] = (rho >= threshold, r)

        def scaled(g, m, v):
            dtype = compute_dtype(m)
            c = corrections[dtype]
            rectify, r = rectifications[dtype]
            m_hat = _first_moment_hat(g, m, b1, (c[0],) + c[2:], nesterov)
            return fnp.where(rectify, r * m_hat / (fnp.sqrt(v / c[1] + eps_root) + eps), m_hat)

        return tree_util.tree_map(scaled, updates, mu, nu), ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


def scale_by_yogi(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-3,
                  eps_root: float = 0.0,
                  initial_accumulator_value: float = 1e-6) -> GradientTransformation:
    """Yogi's scaling: ``nu -= (1 - b2) * sign(nu - g**2) * g**2`` (additive, not an EMA),
    both moments starting at ``initial_accumulator_value``.

    >>> opt = scale_by_yogi(eps=1e-3)
    """
    def init(params):
        full = tree_util.tree_map(lambda p: fnp.full_like(p, initial_accumulator_value), params)
        return ScaleByAdamState(zeros_count(), full, full)

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = bias_corrections((b1, b2), count, updates)
        mu = update_moment(updates, state.mu, b1, 1)
        nu = tree_util.tree_map(
            lambda g, v: v - (1 - b2) * fnp.sign(v - fnp.square(g)) * fnp.square(g),
            updates, state.nu)

        def scaled(m, v):
            c1, c2 = corrections[compute_dtype(m)]
            return (m / c1) / (fnp.sqrt(v / c2 + eps_root) + eps)

        return tree_util.tree_map(scaled, mu, nu), ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByAmsgradState(NamedTuple):
    count: Any
    mu: Any
    nu: Any
    nu_max: Any  # the running maximum of the bias-corrected second moment


def scale_by_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                     eps_root: float = 0.0) -> GradientTransformation:
    """AMSGrad's scaling: Adam with the running maximum of the corrected ``nu``.

    >>> opt = scale_by_amsgrad()
    """
    def init(params):
        return ScaleByAmsgradState(zeros_count(), zeros_like_tree(params),
                                   zeros_like_tree(params), zeros_like_tree(params))

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = bias_corrections((b1, b2), count, updates)
        mu = update_moment(updates, state.mu, b1, 1)
        nu = update_moment(updates, state.nu, b2, 2)
        nu_max = tree_util.tree_map(
            lambda v, vmax: fnp.maximum(vmax, (v / corrections[compute_dtype(v)][1]).astype(
                vmax.dtype)),
            nu, state.nu_max)

        def scaled(m, vmax):
            return (m / corrections[compute_dtype(m)][0]) / (fnp.sqrt(vmax + eps_root) + eps)

        return (tree_util.tree_map(scaled, mu, nu_max),
                ScaleByAmsgradState(count, mu, nu, nu_max))

    return GradientTransformation(init, update)


def scale_by_adamax(b1: float = 0.9, b2: float = 0.999,
                    eps: float = 1e-8) -> GradientTransformation:
    """AdaMax's scaling: ``mu_hat / nu`` with ``nu = max(b2 * nu, |g| + eps)``.

    >>> opt = scale_by_adamax()
    """
    def init(params):
        return ScaleByAdamState(zeros_count(), zeros_like_tree(params),
                                zeros_like_tree(params))

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = bias_corrections((b1,), count, updates)
        mu = update_moment(updates, state.mu, b1, 1)
        nu = tree_util.tree_map(lambda g, v: fnp.maximum(fnp.abs(g) + eps, b2 * v),
                                updates, state.nu)
        out = tree_util.tree_map(lambda m, v: m / corrections[compute_dtype(m)][0] / v, mu, nu)
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByNovogradState(NamedTuple):
    count: Any
    mu: Any  # momentum of the normalized gradients, a tree like the params
    nu: Any  # per-leaf EMA of the squared gradient norm, one scalar per leaf


def scale_by_novograd(b1: float = 0.9, b2: float = 0.25, eps: float = 1e-8,
                      eps_root: float = 0.0,
                      weight_decay: float = 0.0) -> GradientTransformation:
    """NovoGrad's scaling: each leaf's gradient divided by the root of an EMA of its squared
    norm (one scalar per leaf), plus weight decay, then momentum; the first step starts
    both averages from that step's values (as optax).

    >>> opt = scale_by_novograd(b1=0.9, b2=0.25)
    """
    def init(params):
        return ScaleByNovogradState(
            zeros_count(), zeros_like_tree(params),
            tree_util.tree_map(lambda p: fnp.zeros((), fnp.asarray(p).dtype), params))

    def update(updates, state, params=None):
        if params is None:
            raise FlamefxValueError("scale_by_novograd needs the params: call "
                                    "update(grads, state, params)" + where())
        count = state.count + 1
        first = count == 1

        def new_nu(g, v):
            squared_norm = fnp.sum(fnp.square(g)).astype(v.dtype)
            return fnp.where(first, squared_norm, b2 * v + (1 - b2) * squared_norm)

        nu = tree_util.tree_map(new_nu, updates, state.nu)

        def new_mu(g, p, m, v):
            step = g / (fnp.sqrt(v + eps_root) + eps) + weight_decay * p
            return fnp.where(first, step, b1 * m + step)

        mu = tree_util.tree_map(new_mu, updates, params, state.mu, nu)
        return mu, ScaleByNovogradState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByAdaDeltaState(NamedTuple):
    e_g: Any  # EMA of squared gradients
    e_x: Any  # EMA of squared updates


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """AdaDelta's scaling: ``g * sqrt(E[dx**2] + eps) / sqrt(E[g**2] + eps)``.

    >>> opt = scale_by_adadelta(rho=0.95)
    """
    def init(params):
        return ScaleByAdaDeltaState(zeros_like_tree(params), zeros_like_tree(params))

    def update(updates, state, params=None):
        e_g = update_moment(updates, state.e_g, rho, 2)
        out = tree_util.tree_map(lambda g, eg, ex: fnp.sqrt(ex + eps) / fnp.sqrt(eg + eps) * g,
                                 updates, e_g, state.e_x)
        e_x = tree_util.tree_map(lambda u, e: rho * e + (1 - rho) * fnp.square(u),
                                 out, state.e_x)
        return out, ScaleByAdaDeltaState(e_g, e_x)

    return GradientTransformation(init, update)


# --- optimizers ----------------------------------------------------------------------------


def nadam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, eps_root: float = 0.0) -> GradientTransformation:
    """NAdam (Dozat): Adam with a Nesterov look-ahead first moment.

    >>> opt = nadam(1e-3)
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root, nesterov=True),
                 scale_by_learning_rate(learning_rate))


def nadamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8, eps_root: float = 0.0, weight_decay: float = 1e-4,
           mask=None) -> GradientTransformation:
    """NAdam with decoupled weight decay (scaled by the learning rate, as AdamW).

    >>> opt = nadamw(1e-3, weight_decay=1e-2)
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root, nesterov=True),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


def adabelief(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-16, eps_root: float = 1e-16, *,
              nesterov: bool = False) -> GradientTransformation:
    """AdaBelief (Zhuang et al. 2020): steps scaled by the belief in the gradient.

    >>> opt = adabelief(1e-3)
    """
    return chain(scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
                 scale_by_learning_rate(learning_rate))


def radam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, eps_root: float = 0.0, threshold: float = 5.0, *,
          nesterov: bool = False) -> GradientTransformation:
    """RAdam (Liu et al. 2020): Adam with its early-step variance rectified.

    >>> opt = radam(1e-3)
    """
    return chain(scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
                 scale_by_learning_rate(learning_rate))


def yogi(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-3) -> GradientTransformation:
    """Yogi (Zaheer et al. 2018): Adam with an additive second-moment update.

    >>> opt = yogi(1e-2)
    """
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


def amsgrad(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8, eps_root: float = 0.0) -> GradientTransformation:
    """AMSGrad (Reddi et al. 2018): Adam whose second moment never decreases.

    >>> opt = amsgrad(1e-3)
    """
    return chain(scale_by_amsgrad(b1, b2, eps, eps_root), scale_by_learning_rate(learning_rate))


def adamax(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8) -> GradientTransformation:
    """AdaMax (Kingma & Ba): Adam with the infinity norm in place of the second moment.

    >>> opt = adamax(2e-3)
    """
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamaxw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8, weight_decay: float = 1e-4,
            mask=None) -> GradientTransformation:
    """AdaMax with decoupled weight decay.

    >>> opt = adamaxw(2e-3, weight_decay=1e-2)
    """
    return chain(scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def novograd(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.25,
             eps: float = 1e-6, eps_root: float = 0.0,
             weight_decay: float = 0.0) -> GradientTransformation:
    """NovoGrad (Ginsburg et al. 2019): layer-wise normalized gradients with momentum.

    >>> opt = novograd(1e-2)
    """
    return chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
                 scale_by_learning_rate(learning_rate))


def adadelta(learning_rate: ScalarOrSchedule | None = None, rho: float = 0.9,
             eps: float = 1e-6, weight_decay: float = 0.0,
             weight_decay_mask=None) -> GradientTransformation:
    """AdaDelta (Zeiler 2012).

    As in optax, ``learning_rate=None`` leaves the scaled gradients as they are, sign
    included (``scale_by_learning_rate(None)`` is the identity): pass a learning rate (the
    paper's rule is 1.0) to descend.

    >>> opt = adadelta(1.0, rho=0.95)
    """
    return chain(add_decayed_weights(weight_decay, weight_decay_mask),
                 scale_by_adadelta(rho, eps), scale_by_learning_rate(learning_rate))
