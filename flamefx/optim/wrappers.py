"""Transformations around other transformations: parameter EMA, gradient accumulation,
skipping non-finite steps, and masked / partitioned optimizers.

Decisions that depend on values (is this the k-th micro-step? are the gradients finite?)
are ``fnp.where`` selections over both outcomes, never Python branches on arrays: a jitted
step stays one trace and never waits for the device to answer a question.

>>> from flamefx import optim
>>> opt = optim.MultiSteps(optim.adam(1e-3), every_k_schedule=4)
>>> opt = optim.apply_if_finite(optim.adam(1e-3), max_consecutive_errors=5)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flamefx.numpy as fnp
from flamefx import tree_util
from flamefx.optim.base import (
    GradientTransformation,
    compute_dtype,
    zeros_count,
    zeros_like_tree,
)


def _select_tree(pred, on_true, on_false):
    """Leaf-wise ``where(pred, a, b)`` over two trees of one structure; ``pred`` is 0-d."""
    return tree_util.tree_map(lambda a, b: fnp.where(pred, a, b), on_true, on_false)


# --- EMA of parameters ---------------------------------------------------------------------


class EmaState(NamedTuple):
    count: Any
    ema: Any  # the (biased, when debias=True) running average, a tree like the params


def ema(decay: float, debias: bool = True) -> GradientTransformation:
    """An exponential moving average of whatever tree is passed to ``update``.

    For an EMA of parameters (diffusion models sample from it) feed it the parameters after
    each step. The average starts from zero (as optax's); with ``debias`` it is
    bias-corrected, so the first output equals the first input.

    >>> ema_tx = ema(0.999)
    >>> ema_state = ema_tx.init(params)                             # doctest: +SKIP
    >>> ema_params, ema_state = ema_tx.update(params, ema_state)    # doctest: +SKIP
    """
    def init(params):
        return EmaState(zeros_count(), zeros_like_tree(params))

    def update(updates, state, params=None):
        average = tree_util.tree_map(lambda new, old: decay * old + (1 - decay) * new,
                                     updates, state.ema)
        count = state.count + 1
        if debias:
            corrections = {}

            def corrected(a):
                dtype = compute_dtype(a)
                if dtype not in corrections:
                    corrections[dtype] = 1 - decay ** count.astype(dtype)
                return (a / corrections[dtype]).astype(a.dtype)

            out = tree_util.tree_map(corrected, average)
        else:
            out = average
        return out, EmaState(count, average)

    return GradientTransformation(init, update)


# --- gradient accumulation ---------------------------------------------------------------


class MultiStepsState(NamedTuple):
    mini_step: Any  # micro-steps accumulated since the last real step
    gradient_step: Any  # real (inner optimizer) steps taken
    inner_opt_state: Any
    acc_grads: Any  # running mean of the gradients of this accumulation window


class MultiSteps:
    """Accumulates gradients over ``every_k_schedule`` micro-steps, then takes one step of
    ``opt`` with their mean; in between it emits zero updates.

    ``every_k_schedule``: an int, or a function of the real step count giving k.

    >>> from flamefx.optim import sgd
    >>> opt = MultiSteps(sgd(0.1), every_k_schedule=4)
    >>> state = opt.init(params)                               # doctest: +SKIP
    >>> updates, state = opt.update(grads, state, params)      # doctest: +SKIP
    """

    def __init__(self, opt: GradientTransformation, every_k_schedule):
        self.inner = opt
        self.every_k_schedule = (every_k_schedule if callable(every_k_schedule)
                                 else lambda step: every_k_schedule)

    def init(self, params) -> MultiStepsState:
        return MultiStepsState(zeros_count(), zeros_count(), self.inner.init(params),
                               zeros_like_tree(params))

    def update(self, updates, state: MultiStepsState, params=None):
        k = self.every_k_schedule(state.gradient_step)
        mini = state.mini_step
        # A running mean, so the step is the same for any k and nothing overflows.
        acc = tree_util.tree_map(
            lambda a, g: (a + (g - a) / (mini + 1).astype(compute_dtype(a))).astype(a.dtype),
            state.acc_grads, updates)
        emit = mini + 1 >= k
        inner_updates, inner_state = self.inner.update(acc, state.inner_opt_state, params)
        out = tree_util.tree_map(lambda u: fnp.where(emit, u, fnp.zeros_like(u)), inner_updates)
        new_state = MultiStepsState(
            mini_step=fnp.where(emit, 0, mini + 1).astype(mini.dtype),
            gradient_step=fnp.where(emit, state.gradient_step + 1, state.gradient_step),
            inner_opt_state=_select_tree(emit, inner_state, state.inner_opt_state),
            acc_grads=tree_util.tree_map(lambda a: fnp.where(emit, fnp.zeros_like(a), a), acc))
        return out, new_state

    def has_updated(self, state: MultiStepsState):
        """True (a bool array) if the last ``update`` took a real step."""
        return state.mini_step == 0

    def gradient_transformation(self) -> GradientTransformation:
        return GradientTransformation(self.init, self.update)


# --- skipping non-finite steps -------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    notfinite_count: Any  # consecutive non-finite steps so far
    last_finite: Any  # whether the last step's updates were finite
    total_notfinite: Any
    inner_state: Any


def apply_if_finite(opt: GradientTransformation,
                    max_consecutive_errors: int) -> GradientTransformation:
    """Skips steps whose updates hold a NaN or Inf: emits zeros and keeps ``opt``'s state.
    After more than ``max_consecutive_errors`` bad steps in a row, applies them anyway (so a
    run that is truly diverging does not silently stall).

    >>> from flamefx.optim import adam
    >>> opt = apply_if_finite(adam(1e-3), max_consecutive_errors=5)
    """
    def init(params):
        return ApplyIfFiniteState(zeros_count(), fnp.asarray(True), zeros_count(),
                                  opt.init(params))

    def update(updates, state, params=None):
        finite = fnp.asarray(True)
        for leaf in tree_util.tree_leaves(updates):
            finite = fnp.logical_and(finite, fnp.all(fnp.isfinite(leaf)))
        notfinite_count = fnp.where(finite, 0, state.notfinite_count + 1).astype(
            state.notfinite_count.dtype)
        accept = fnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        inner_updates, inner_state = opt.update(updates, state.inner_state, params)
        out = tree_util.tree_map(lambda u: fnp.where(accept, u, fnp.zeros_like(u)),
                                 inner_updates)
        return out, ApplyIfFiniteState(
            notfinite_count=notfinite_count, last_finite=finite,
            total_notfinite=state.total_notfinite + fnp.where(finite, 0, 1).astype(
                state.total_notfinite.dtype),
            inner_state=_select_tree(accept, inner_state, state.inner_state))

    return GradientTransformation(init, update)


# --- masked and partitioned transformations ------------------------------------------------


class MaskedNode(NamedTuple):
    """Stands in for a leaf a masked transformation does not see (an empty pytree node)."""


class MaskedState(NamedTuple):
    inner_state: Any


def _mask_leaves(mask, tree) -> list:
    """The mask as one Python bool per leaf of ``tree`` (``mask``: a prefix tree or a
    function tree -> prefix tree)."""
    mask_tree = mask(tree) if callable(mask) else mask
    flags = tree_util.broadcast_prefix(mask_tree, tree, what="mask")
    for flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(f"a mask must hold Python bools (it decides the structure at trace "
                            f"time), got {type(flag).__name__}")
    return flags


def _hide_unmasked(tree, flags: list):
    leaves, treedef = tree_util.tree_flatten(tree)
    return tree_util.tree_unflatten(
        treedef, [leaf if keep else MaskedNode() for leaf, keep in zip(leaves, flags)])


def masked(opt: GradientTransformation, mask) -> GradientTransformation:
    """Applies ``opt`` only to the leaves where ``mask`` is True; the others pass through.

    ``mask``: a tree of Python bools (a prefix of the params) or a function params -> that.

    >>> opt = masked(add_decayed_weights(1e-4), mask={"w": True, "b": False})  # doctest: +SKIP
    """
    def init(params):
        return MaskedState(opt.init(_hide_unmasked(params, _mask_leaves(mask, params))))

    def update(updates, state, params=None):
        flags = _mask_leaves(mask, updates if params is None else params)
        hidden_params = None if params is None else _hide_unmasked(params, flags)
        inner_updates, inner_state = opt.update(_hide_unmasked(updates, flags),
                                                state.inner_state, hidden_params)
        leaves, treedef = tree_util.tree_flatten(updates)
        new_leaves = iter(tree_util.tree_leaves(inner_updates))
        merged = [next(new_leaves) if keep else leaf for leaf, keep in zip(leaves, flags)]
        return tree_util.tree_unflatten(treedef, merged), MaskedState(inner_state)

    return GradientTransformation(init, update)


class PartitionState(NamedTuple):
    inner_states: dict  # label -> the masked state of that label's transformation


def partition(transforms: dict[str, GradientTransformation],
              param_labels: Any | Callable) -> GradientTransformation:
    """Different transformations for different parameter groups.

    ``param_labels``: a tree of labels (a prefix of the params) or a function params ->
    that tree; each leaf is updated by ``transforms[its label]``.

    >>> opt = partition({"adam": adam(1e-3), "frozen": set_to_zero()},
    ...                 {"encoder": "frozen", "head": "adam"})      # doctest: +SKIP
    """
    def label_leaves(tree) -> list:
        labels_tree = param_labels(tree) if callable(param_labels) else param_labels
        labels = tree_util.broadcast_prefix(labels_tree, tree, what="param_labels")
        unknown = sorted(set(labels) - set(transforms), key=str)
        if unknown:
            raise ValueError(f"partition: labels {unknown} have no transformation; "
                             f"transforms are given for {sorted(transforms)}")
        return labels

    def masked_for(label) -> GradientTransformation:
        return masked(transforms[label], lambda tree: _label_mask(label_leaves(tree), label,
                                                                   tree))

    def init(params):
        return PartitionState({label: masked_for(label).init(params) for label in transforms})

    def update(updates, state, params=None):
        new_states = {}
        for label in sorted(transforms):
            updates, new_states[label] = masked_for(label).update(
                updates, state.inner_states[label], params)
        return updates, PartitionState(new_states)

    return GradientTransformation(init, update)


def _label_mask(labels: list, label, tree):
    """A full mask tree of ``tree``'s structure: True where the leaf's label is ``label``."""
    return tree_util.tree_unflatten(tree_util.tree_structure(tree),
                                    [lab == label for lab in labels])


# optax's older name for ``partition``, kept by optax alongside it.
multi_transform = partition
MultiTransformState = PartitionState
