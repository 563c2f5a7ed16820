"""Memory-light second moments: Adafactor's factored RMS (row and column statistics of a
matrix in place of the full matrix) and SM3's per-axis cover accumulators.

Which leaves are factored is decided from static shapes at trace time, so the state's
structure is fixed and a jitted step traces once.

>>> import flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.adafactor(1e-2, min_dim_size_to_factor=2)
>>> state = opt.init({"w": fnp.ones((3, 4))})
>>> state[0].v_row["w"].shape, state[0].v_col["w"].shape
((3,), (4,))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

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
from flamefx.optim.transforms import add_decayed_weights, scale, scale_by_learning_rate
from flamefx.optim.trust_ratio import clip_by_block_rms, scale_by_param_block_rms
from flamefx.optim.wrappers import ema


def decay_rate_pow(step, exponent: float = 0.8):
    """Adafactor's second-moment decay at (0-based) ``step``: ``1 - (step + 1) ** -exponent``
    (0 at the first step, so the first average is that step's value).

    >>> round(float(decay_rate_pow(0)), 6)
    0.0
    """
    return 1.0 - fnp.asarray(step + 1).astype(compute_dtype(1.0)) ** -exponent


def _factored_dims(shape: tuple, factored: bool, min_dim_size_to_factor: int):
    """The (second largest, largest) axes of ``shape`` if it is factored, else None."""
    if not factored or len(shape) < 2:
        return None
    sorted_dims = np.argsort(shape, kind="stable")
    if shape[sorted_dims[-2]] < min_dim_size_to_factor:
        return None
    return int(sorted_dims[-2]), int(sorted_dims[-1])


class FactoredState(NamedTuple):
    count: Any
    v_row: Any  # per factored leaf: the mean of g**2 over its largest axis; else a (1,) dummy
    v_col: Any  # per factored leaf: the mean over its second largest axis; else a dummy
    v: Any  # per unfactored leaf: the full EMA of g**2; else a (1,) dummy


def scale_by_factored_rms(factored: bool = True, decay_rate: float = 0.8,
                          step_offset: int = 0, min_dim_size_to_factor: int = 128,
                          epsilon: float = 1e-30,
                          decay_rate_fn: Callable = decay_rate_pow) -> GradientTransformation:
    """Adafactor's scaling: ``g / sqrt(v)`` with ``v`` the EMA of ``g**2 + epsilon``, stored
    for a matrix (both of its two largest axes at least ``min_dim_size_to_factor``) as
    row and column means whose outer product, over the overall mean, stands for ``v``.

    >>> opt = scale_by_factored_rms(min_dim_size_to_factor=2)
    """
    def dummy(p):
        return fnp.zeros((1,), fnp.asarray(p).dtype)

    def init(params):
        def leaf_state(p):
            p = fnp.asarray(p)
            dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
            if dims is None:
                return dummy(p), dummy(p), fnp.zeros_like(p)
            d1, d0 = dims
            return (fnp.zeros(p.shape[:d0] + p.shape[d0 + 1:], p.dtype),
                    fnp.zeros(p.shape[:d1] + p.shape[d1 + 1:], p.dtype), dummy(p))

        return FactoredState(zeros_count(),
                             *_unzip(params, tree_util.tree_map(leaf_state, params), 3))

    def update(updates, state, params=None):
        if params is None:
            raise FlamefxValueError("scale_by_factored_rms needs the params: call "
                                    "update(grads, state, params)" + where())
        decay = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf_update(g, v_row, v_col, v, p):
            g_sq = fnp.square(g) + epsilon
            dims = _factored_dims(fnp.asarray(p).shape, factored, min_dim_size_to_factor)
            if dims is None:
                v = (decay * v + (1 - decay) * g_sq).astype(v.dtype)
                return g * v ** -0.5, v_row, v_col, v
            d1, d0 = dims
            v_row = (decay * v_row + (1 - decay) * fnp.mean(g_sq, axis=d0)).astype(v_row.dtype)
            v_col = (decay * v_col + (1 - decay) * fnp.mean(g_sq, axis=d1)).astype(v_col.dtype)
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_factor = (v_row / fnp.mean(v_row, axis=reduced_d1, keepdims=True)) ** -0.5
            col_factor = v_col ** -0.5
            out = g * fnp.expand_dims(row_factor, d0) * fnp.expand_dims(col_factor, d1)
            return out, v_row, v_col, v

        results = tree_util.tree_map(leaf_update, updates, state.v_row, state.v_col, state.v,
                                     params)
        out, v_row, v_col, v = _unzip(updates, results, 4)
        return out, FactoredState(state.count + 1, v_row, v_col, v)

    return GradientTransformation(init, update)


def _unzip(like, results, fields: int) -> list:
    """The per-leaf ``fields``-tuples of ``results`` (a tree shaped like ``like``) as one
    tree per tuple field."""
    treedef = tree_util.tree_structure(like)
    tuples = tree_util.flatten_up_to(treedef, results, "scale_by_factored_rms")
    return [tree_util.tree_unflatten(treedef, [t[i] for t in tuples]) for i in range(fields)]


def adafactor(learning_rate: ScalarOrSchedule | None = None,
              min_dim_size_to_factor: int = 128, decay_rate: float = 0.8,
              decay_offset: int = 0, multiply_by_parameter_scale: bool = True,
              clipping_threshold: float | None = 1.0, momentum: float | None = None,
              weight_decay_rate: float | None = None, eps: float = 1e-30,
              factored: bool = True, weight_decay_mask=None) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018), chained as optax chains it: factored RMS scaling,
    block-RMS clipping, the learning rate, the parameter-scale factor, optional momentum
    and weight decay, then the sign flip.

    >>> opt = adafactor(1e-2, min_dim_size_to_factor=2)
    """
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor,
                                   eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    parts.append(scale(-1.0))
    return chain(*parts)


# --- SM3 -----------------------------------------------------------------------------------


class ScaleBySM3State(NamedTuple):
    mu: Any  # per leaf: a list of one accumulator per axis (the full shape for ndim < 2)
    nu: Any  # momentum of the preconditioned updates


def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    """SM3's scaling (Anil et al. 2019): each element's accumulator is the minimum over its
    axes' cover accumulators plus ``g**2``; each axis keeps the maximum over the others.
    A 0-d or 1-d leaf keeps one accumulator of its own shape (optax rejects 0-d leaves).

    >>> opt = scale_by_sm3(b1=0.9)
    """
    coeffs = ((1.0 - b2) if b2 != 1.0 else 1.0, b2)

    def init(params):
        def accumulators(p):
            p = fnp.asarray(p)
            if p.ndim < 2:
                return [fnp.zeros_like(p)]
            return [fnp.zeros((p.shape[i],), p.dtype) for i in range(p.ndim)]

        return ScaleBySM3State(tree_util.tree_map(accumulators, params),
                               zeros_like_tree(params))

    def update(updates, state, params=None):
        treedef = tree_util.tree_structure(updates)
        grads = tree_util.tree_leaves(updates)
        mus = tree_util.flatten_up_to(treedef, state.mu, "scale_by_sm3")
        nus = tree_util.flatten_up_to(treedef, state.nu, "scale_by_sm3")
        new_mu, new_nu = [], []
        for g, accs, m in zip(grads, mus, nus):
            if g.ndim < 2:
                cover = accs[0]
            else:
                expanded = [fnp.reshape(a, [1] * i + [g.shape[i]] + [1] * (g.ndim - i - 1))
                            for i, a in enumerate(accs)]
                cover = expanded[0]
                for a in expanded[1:]:
                    cover = fnp.minimum(cover, a)
            accum = coeffs[0] * fnp.square(g) + coeffs[1] * cover
            preconditioned = g * fnp.where(accum > 0, 1 / fnp.sqrt(accum + eps), 0.0)
            new_nu.append(b1 * m + (1 - b1) * preconditioned)
            if g.ndim < 2:
                new_mu.append([accum])
            else:
                new_mu.append([fnp.max(accum, axis=tuple(j for j in range(g.ndim) if j != i))
                               for i in range(g.ndim)])
        nu = tree_util.tree_unflatten(treedef, new_nu)
        return nu, ScaleBySM3State(tree_util.tree_unflatten(treedef, new_mu), nu)

    return GradientTransformation(init, update)


def sm3(learning_rate: float, momentum: float = 0.9) -> GradientTransformation:
    """SM3: memory-efficient adaptive steps (cover accumulators) with momentum.

    >>> opt = sm3(0.1)
    """
    return chain(scale_by_sm3(momentum), scale(-learning_rate))
