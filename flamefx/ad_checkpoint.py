"""``flamefx.ad_checkpoint``: checkpoint, checkpoint_name and the saving policies
(``flamefx.checkpoint_policies``), as ``jax.ad_checkpoint`` / ``jax.checkpoint_policies``.

A policy is called as ``policy(prim, *avals, **params)`` for each equation of a
checkpointed function and returns whether its outputs are saved for the backward pass
(True) or recomputed there (False).

>>> import flamefx, flamefx.numpy as fnp
>>> f = flamefx.checkpoint(lambda x: fnp.sin(checkpoint_name(x * 2.0, "h")),
...                        policy=checkpoint_policies.save_only_these_names("h"))
>>> flamefx.grad(lambda x: f(x))(fnp.float32(0.0)).item()
2.0
"""

from __future__ import annotations

import types

from flamefx.transforms.checkpoint import checkpoint, checkpoint_name, name_p, remat


def nothing_saveable(prim, *avals, **params) -> bool:
    """Saves nothing: the whole forward pass is recomputed (checkpoint's default)."""
    return False


def everything_saveable(prim, *avals, **params) -> bool:
    """Saves every intermediate: nothing is recomputed (as without checkpoint)."""
    return True


def dots_saveable(prim, *avals, **params) -> bool:
    """Saves the results of matrix products (``dot_general``); recomputes the rest."""
    return prim.name == "dot_general"


checkpoint_dots = dots_saveable


def dots_with_no_batch_dims_saveable(prim, *avals, **params) -> bool:
    """Saves the results of matrix products without batch dimensions."""
    if prim.name != "dot_general":
        return False
    (_, (lhs_batch, rhs_batch)) = params["dimension_numbers"]
    return not lhs_batch and not rhs_batch


def save_anything_except_these_names(*names):
    """A policy saving everything except the values named (``checkpoint_name``) ``names``.

    >>> policy = save_anything_except_these_names("h")
    >>> policy(name_p, name="h"), policy(name_p, name="g")
    (False, True)
    """
    def policy(prim, *avals, **params):
        return params["name"] not in names if prim is name_p else True
    return policy


def save_only_these_names(*names):
    """A policy saving only the values named (``checkpoint_name``) one of ``names``.

    >>> save_only_these_names("h")(name_p, name="h")
    True
    """
    def policy(prim, *avals, **params):
        return prim is name_p and params["name"] in names
    return policy


save_any_names_but_these = save_anything_except_these_names


def save_from_both_policies(policy_1, policy_2):
    """Saves what either policy saves.

    >>> save_from_both_policies(nothing_saveable, dots_saveable)(name_p, name="h")
    False
    """
    def policy(prim, *avals, **params):
        return policy_1(prim, *avals, **params) or policy_2(prim, *avals, **params)
    return policy


checkpoint_policies = types.SimpleNamespace(
    nothing_saveable=nothing_saveable, everything_saveable=everything_saveable,
    dots_saveable=dots_saveable, checkpoint_dots=checkpoint_dots,
    dots_with_no_batch_dims_saveable=dots_with_no_batch_dims_saveable,
    save_anything_except_these_names=save_anything_except_these_names,
    save_any_names_but_these=save_any_names_but_these,
    save_only_these_names=save_only_these_names,
    save_from_both_policies=save_from_both_policies)

__all__ = ["checkpoint", "checkpoint_name", "checkpoint_policies", "remat"]
