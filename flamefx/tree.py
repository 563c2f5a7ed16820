"""``flamefx.tree``: the pytree functions under JAX's short names (``jax.tree``).

>>> import flamefx
>>> flamefx.tree.map(lambda x: x * 2, {"a": 1, "b": (2, 3)})
{'a': 2, 'b': (4, 6)}
"""

from __future__ import annotations

from typing import Any, Callable

from flamefx import tree_util
from flamefx.tree_util import PyTreeDef


def map(f: Callable, tree, *rest, is_leaf=None):  # noqa: A001 (JAX's name)
    """``f`` applied leaf-wise over ``tree`` and ``rest`` (trees of its structure).

    >>> map(lambda a, b: a - b, [3, 4], [1, 1])
    [2, 3]
    """
    return tree_util.tree_map(f, tree, *rest, is_leaf=is_leaf)


def leaves(tree, is_leaf=None) -> list:
    """The leaves, left to right (dict entries in key order).

    >>> leaves({"b": 2, "a": [1, None]})
    [1, 2]
    """
    return tree_util.tree_leaves(tree, is_leaf)


def structure(tree, is_leaf=None) -> PyTreeDef:
    """The tree's structure without its leaves.

    >>> structure((1, [2]))
    PyTreeDef((*, [*]))
    """
    return tree_util.tree_structure(tree, is_leaf)


def flatten(tree, is_leaf=None) -> tuple[list, PyTreeDef]:
    """``(leaves, treedef)``.

    >>> flatten([1, (2,)])[0]
    [1, 2]
    """
    return tree_util.tree_flatten(tree, is_leaf)


def unflatten(treedef: PyTreeDef, leaves) -> Any:
    """The tree of structure ``treedef`` holding ``leaves``.

    >>> unflatten(structure((0, 0)), [5, 6])
    (5, 6)
    """
    return tree_util.tree_unflatten(treedef, leaves)


def reduce(function: Callable, tree, initializer=tree_util._SENTINEL, is_leaf=None):  # noqa: A001
    """``functools.reduce`` over the leaves.

    >>> reduce(max, [3, (7, 1)])
    7
    """
    return tree_util.tree_reduce(function, tree, initializer, is_leaf)


def all(tree, *, is_leaf=None) -> bool:  # noqa: A001 (JAX's name)
    """Whether every leaf is truthy.

    >>> all([True, (1, 0)])
    False
    """
    return tree_util.tree_all(tree, is_leaf=is_leaf)


def transpose(outer_treedef: PyTreeDef, inner_treedef: PyTreeDef | None, pytree_to_transpose):
    """Swaps the outer and inner levels of a tree of trees.

    >>> transpose(structure([0, 0]), structure((0, 0)), [(1, 2), (3, 4)])
    ([1, 3], [2, 4])
    """
    return tree_util.tree_transpose(outer_treedef, inner_treedef, pytree_to_transpose)


def leaves_with_path(tree, is_leaf=None) -> list:
    """``[(key path, leaf), ...]``.

    >>> [tree_util.keystr(p) for p, _ in leaves_with_path({"a": [1, 2]})]
    ["['a'][0]", "['a'][1]"]
    """
    return tree_util.tree_leaves_with_path(tree, is_leaf)


def map_with_path(f: Callable, tree, *rest, is_leaf=None):
    """``f(path, leaf, *others)`` applied leaf-wise.

    >>> map_with_path(lambda p, x: len(p) * x, {"a": (1, 1)})
    {'a': (2, 2)}
    """
    return tree_util.tree_map_with_path(f, tree, *rest, is_leaf=is_leaf)


def flatten_with_path(tree, is_leaf=None) -> tuple[list, PyTreeDef]:
    """``([(key path, leaf), ...], treedef)``.

    >>> flatten_with_path([7])[0]
    [((SequenceKey(idx=0),), 7)]
    """
    return tree_util.tree_flatten_with_path(tree, is_leaf)


__all__ = ["all", "flatten", "flatten_with_path", "leaves", "leaves_with_path", "map",
           "map_with_path", "reduce", "structure", "transpose", "unflatten"]
