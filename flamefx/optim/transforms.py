"""Building blocks that optimizers are chained from: scaling, momentum, moments, clipping.

Each returns a :class:`GradientTransformation`. Scalar factors shared by every leaf (bias
corrections, learning rates) are computed once per step, outside the per-leaf maps, so
that under jit the per-leaf work is one elementwise chain that fuses into one kernel.

>>> from flamefx import optim
>>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_adam(),
...                   optim.scale_by_learning_rate(1e-3))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flamefx.numpy as fnp
from flamefx import random, tree_util
from flamefx.errors import FlamefxValueError, where
from flamefx.optim.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    compute_dtype,
    global_norm,
    identity,
    zeros_count,
    zeros_like_tree,
)
from flamefx.optim.wrappers import masked


def _scalar(value, like):
    """``value`` (a Python float or a scalar array) in the float dtype ``like`` computes in."""
    if isinstance(value, (int, float)):
        return value  # weak: keeps the leaf's dtype
    return fnp.asarray(value).astype(compute_dtype(like))


# --- scaling -------------------------------------------------------------------------------


def scale(step_size: float) -> GradientTransformation:
    """Multiplies every update by ``step_size``.

    >>> scale(-0.1).update({"w": fnp.ones(2)}, EmptyState())[0]["w"].tolist()  # doctest: +SKIP
    [-0.1, -0.1]
    """
    def update(updates, state, params=None):
        return tree_util.tree_map(lambda u: u * _scalar(step_size, u), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


class ScaleByScheduleState(NamedTuple):
    count: Any  # int32 step count: how many updates this transformation has made


def scale_by_schedule(step_size_fn: Callable) -> GradientTransformation:
    """Multiplies updates by ``step_size_fn(count)``; the count lives in the state.

    >>> opt = scale_by_schedule(lambda count: -0.1 * 0.99 ** count)
    """
    def init(params):
        return ScaleByScheduleState(zeros_count())

    def update(updates, state, params=None):
        step_size = step_size_fn(state.count)
        updates = tree_util.tree_map(lambda u: u * _scalar(step_size, u), updates)
        return updates, ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule | None, *,
                           flip_sign: bool = True) -> GradientTransformation:
    """Scales by ``-learning_rate`` (a float, or a schedule of the step count); ``None``
    gives the identity (as optax).

    >>> opt = scale_by_learning_rate(1e-3)
    """
    if learning_rate is None:
        return identity()
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


# --- momentum and moments ------------------------------------------------------------------


class TraceState(NamedTuple):
    trace: Any  # the momentum buffer, a tree like the params


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: ``t = g + decay * t``; emits ``t`` (or ``g + decay * t`` for Nesterov).

    >>> opt = trace(0.9, nesterov=True)
    """
    def init(params):
        return TraceState(zeros_like_tree(params))

    def update(updates, state, params=None):
        new_trace = tree_util.tree_map(lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            updates = tree_util.tree_map(lambda g, t: g + decay * t, updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(new_trace)

    return GradientTransformation(init, update)


class ScaleByAdamState(NamedTuple):
    count: Any
    mu: Any  # first moment
    nu: Any  # second moment


def bias_corrections(decays: tuple, count, tree, next_count: bool = False) -> dict:
    """``1 - decay ** count`` for each decay, per float dtype the tree's leaves compute in;
    computed once for the whole tree, before any leaf's work. With ``next_count``, the last
    decay is raised to ``count + 1`` instead (Nesterov's look-ahead correction)."""
    out = {}
    for leaf in tree_util.tree_leaves(tree):
        dtype = compute_dtype(leaf)
        if dtype not in out:
            powers = [count.astype(dtype)] * len(decays)
            if next_count:
                powers[-1] = (count + 1).astype(dtype)
            out[dtype] = tuple(1 - d ** n for d, n in zip(decays, powers))
    return out


def update_moment(updates, moments, decay: float, order: int):
    """The exponential moving average of the updates' ``order``-th power (1 or 2), leaf by
    leaf: ``decay * moment + (1 - decay) * g**order`` (optax's tree_update_moment).

    >>> update_moment([fnp.ones(2)], [fnp.zeros(2)], 0.5, 2)[0].tolist()
    [0.5, 0.5]
    """
    if order == 1:
        return tree_util.tree_map(lambda g, m: decay * m + (1 - decay) * g, updates, moments)
    return tree_util.tree_map(lambda g, v: decay * v + (1 - decay) * fnp.square(g),
                              updates, moments)


def adam_bias_corrections(b1: float, b2: float, count, tree, nesterov: bool = False) -> dict:
    """bias_corrections of Adam's two moments, ``(1 - b1**count, 1 - b2**count)``; with
    ``nesterov``, NAdam's ``1 - b1**(count + 1)`` after them (the look-ahead).

    >>> c = adam_bias_corrections(0.5, 0.5, fnp.asarray(1), fnp.zeros(1))
    >>> {str(dtype): [float(x) for x in c[dtype]] for dtype in c}   # per compute dtype
    {'float32': [0.5, 0.5]}
    """
    decays = (b1, b2, b1) if nesterov else (b1, b2)
    return bias_corrections(decays, count, tree, next_count=nesterov)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  eps_root: float = 0.0, *, nesterov: bool = False) -> GradientTransformation:
    """Adam's scaling: bias-corrected ``mu / (sqrt(nu + eps_root) + eps)``.

    ``nesterov``: NAdam's look-ahead first moment (as optax), ``b1 * mu_hat' + (1 - b1) *
    g_hat`` with ``mu`` corrected for the next step and ``g`` for this one.

    >>> opt = scale_by_adam(b1=0.9, b2=0.98)
    """
    def init(params):
        return ScaleByAdamState(zeros_count(), zeros_like_tree(params),
                                zeros_like_tree(params))

    def update(updates, state, params=None):
        count = state.count + 1
        corrections = adam_bias_corrections(b1, b2, count, updates, nesterov)
        leaves, treedef = tree_util.tree_flatten(updates)
        mus = tree_util.flatten_up_to(treedef, state.mu, "scale_by_adam")
        nus = tree_util.flatten_up_to(treedef, state.nu, "scale_by_adam")
        out, new_mu, new_nu = [], [], []
        # Leaf by leaf (not moment by moment) so each leaf's work is one contiguous chain.
        for g, m, v in zip(leaves, mus, nus):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * fnp.square(g)
            c1, c2, *c1_next = corrections[compute_dtype(m)]
            m_hat = b1 * (m / c1_next[0]) + (1 - b1) * (g / c1) if nesterov else m / c1
            out.append(m_hat / (fnp.sqrt(v / c2 + eps_root) + eps))
            new_mu.append(m)
            new_nu.append(v)
        unflatten = tree_util.tree_unflatten
        return unflatten(treedef, out), ScaleByAdamState(count, unflatten(treedef, new_mu),
                                                         unflatten(treedef, new_nu))

    return GradientTransformation(init, update)


class ScaleByLionState(NamedTuple):
    count: Any
    mu: Any


def scale_by_lion(b1: float = 0.9, b2: float = 0.99) -> GradientTransformation:
    """Lion's scaling: ``sign(b1 * mu + (1 - b1) * g)``, then ``mu = b2 * mu + (1 - b2) * g``.

    >>> opt = scale_by_lion(b1=0.95)
    """
    def init(params):
        return ScaleByLionState(zeros_count(), zeros_like_tree(params))

    def update(updates, state, params=None):
        signs = tree_util.tree_map(lambda g, m: fnp.sign(b1 * m + (1 - b1) * g),
                                   updates, state.mu)
        mu = update_moment(updates, state.mu, b2, 1)
        return signs, ScaleByLionState(state.count + 1, mu)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    nu: Any


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8,
                 initial_scale: float = 0.0) -> GradientTransformation:
    """RMSProp's scaling: ``g / sqrt(nu + eps)`` with ``nu`` an EMA of ``g**2``.

    >>> opt = scale_by_rms(decay=0.99)
    """
    def init(params):
        return ScaleByRmsState(tree_util.tree_map(
            lambda p: fnp.full_like(p, initial_scale), params))

    def update(updates, state, params=None):
        nu = update_moment(updates, state.nu, decay, 2)
        updates = tree_util.tree_map(lambda g, v: g / fnp.sqrt(v + eps), updates, nu)
        return updates, ScaleByRmsState(nu)

    return GradientTransformation(init, update)


class ScaleByRStdDevState(NamedTuple):
    mu: Any
    nu: Any


def scale_by_stddev(decay: float = 0.9, eps: float = 1e-8,
                    initial_scale: float = 0.0) -> GradientTransformation:
    """Centered RMSProp's scaling: ``g / sqrt(nu - mu**2 + eps)``.

    >>> opt = scale_by_stddev(decay=0.9)
    """
    def init(params):
        return ScaleByRStdDevState(zeros_like_tree(params), tree_util.tree_map(
            lambda p: fnp.full_like(p, initial_scale), params))

    def update(updates, state, params=None):
        mu = update_moment(updates, state.mu, decay, 1)
        nu = update_moment(updates, state.nu, decay, 2)
        updates = tree_util.tree_map(
            lambda g, m, v: g / fnp.sqrt(v - fnp.square(m) + eps), updates, mu, nu)
        return updates, ScaleByRStdDevState(mu, nu)

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    sum_of_squares: Any


def scale_by_rss(initial_accumulator_value: float = 0.1,
                 eps: float = 1e-7) -> GradientTransformation:
    """Adagrad's scaling: ``g / sqrt(sum of g**2 + eps)`` (0 where the sum is 0).

    >>> opt = scale_by_rss(initial_accumulator_value=0.1)
    """
    def init(params):
        return ScaleByRssState(tree_util.tree_map(
            lambda p: fnp.full_like(p, initial_accumulator_value), params))

    def update(updates, state, params=None):
        sums = tree_util.tree_map(lambda g, s: s + fnp.square(g), updates,
                                  state.sum_of_squares)

        def scaled(g, s):
            return fnp.where(s > 0, g / fnp.sqrt(s + eps), fnp.zeros_like(g))

        return tree_util.tree_map(scaled, updates, sums), ScaleByRssState(sums)

    return GradientTransformation(init, update)


# --- weight decay and clipping -------------------------------------------------------------


class WeightDecayScheduleState(NamedTuple):
    count: Any  # the step count a scheduled weight decay is evaluated at


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0,
                        mask=None) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates (decoupled weight decay, as in AdamW).

    ``weight_decay``: a number, or a schedule of the step count (then the state counts
    steps). ``mask``: a tree of bools (a prefix of the params), or a function params -> that
    tree; only leaves marked True are decayed (e.g. not biases and norm scales).

    >>> opt = add_decayed_weights(1e-4, mask={"w": True, "b": False})
    """
    scheduled = callable(weight_decay)

    def init(params):
        return WeightDecayScheduleState(zeros_count()) if scheduled else EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise FlamefxValueError("add_decayed_weights needs the params: call "
                                    "update(grads, state, params)" + where())
        if scheduled:
            rate, state = weight_decay(state.count), WeightDecayScheduleState(state.count + 1)
        elif isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, state  # as optax: nothing added (a NaN param stays out of it)
        else:
            rate = weight_decay
        return tree_util.tree_map(lambda u, p: u + _scalar(rate, u) * p, updates,
                                  params), state

    decay = GradientTransformation(init, update)
    return decay if mask is None else masked(decay, mask)


def clip(max_delta: float) -> GradientTransformation:
    """Clips every update element into ``[-max_delta, max_delta]``.

    >>> opt = clip(1.0)
    """
    def update(updates, state, params=None):
        return tree_util.tree_map(lambda u: fnp.clip(u, -max_delta, max_delta), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescales all updates together so that their global L2 norm is at most ``max_norm``.

    >>> opt = clip_by_global_norm(1.0)
    """
    def update(updates, state, params=None):
        norm = global_norm(updates)
        # One scalar factor for the whole tree: 1 below the limit, max_norm / norm above.
        factor = fnp.where(norm < max_norm, fnp.ones_like(norm), max_norm / norm)
        return tree_util.tree_map(lambda u: u * _scalar(factor, u), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


class ZeroNansState(NamedTuple):
    found_nan: Any  # per leaf, a bool: whether the last update held a NaN there


def zero_nans() -> GradientTransformation:
    """Replaces NaNs in the updates by 0; the state records which leaves had any.

    >>> zero_nans().update({"w": fnp.array([fnp.nan, 1.0])}, None)[0]["w"].tolist()
    [0.0, 1.0]
    """
    def init(params):
        return ZeroNansState(tree_util.tree_map(lambda p: fnp.asarray(False), params))

    def update(updates, state, params=None):
        found = tree_util.tree_map(lambda u: fnp.any(fnp.isnan(u)), updates)
        updates = tree_util.tree_map(lambda u: fnp.where(fnp.isnan(u), fnp.zeros_like(u), u),
                                     updates)
        return updates, ZeroNansState(found)

    return GradientTransformation(init, update)


class AddNoiseState(NamedTuple):
    count: Any
    rng_key: Any  # the key the next step's noise is split from


def add_noise(eta: float, gamma: float, key=0) -> GradientTransformation:
    """Adds Gaussian noise of variance ``eta / t ** gamma`` at step ``t`` (Neelakantan et
    al. 2015). ``key``: a PRNG key or an int seed. Each step splits the state's key into the
    next one and a sample key, which is split again into one key per leaf (as optax).

    >>> opt = add_noise(0.01, 0.55, key=0)
    """
    def init(params):
        return AddNoiseState(zeros_count(),
                             random.PRNGKey(key) if isinstance(key, int) else key)

    def update(updates, state, params=None):
        count = state.count + 1
        leaves, treedef = tree_util.tree_flatten(updates)
        next_key, sample_key = random.split(state.rng_key)
        leaf_keys = random.split(sample_key, len(leaves))
        noisy = []
        for i, g in enumerate(leaves):
            std = fnp.sqrt(eta / count.astype(compute_dtype(g)) ** gamma)
            noise = random.normal(leaf_keys[i], g.shape, g.dtype)
            noisy.append(g + std.astype(g.dtype) * noise)
        return tree_util.tree_unflatten(treedef, noisy), AddNoiseState(count, next_key)

    return GradientTransformation(init, update)
