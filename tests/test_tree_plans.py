"""The code tree_util generates per structure (PyTreeDef.leaves_if_same and builder), which
a jitted call uses instead of tree_flatten / tree_unflatten: for every kind of node it gives
what tree_flatten and tree_unflatten give, and it refuses (None) every tree that
tree_flatten would give another structure."""

import collections
import dataclasses
from typing import Any

import numpy as np
import pytest

import flamefx.numpy as fnp
from flamefx import nn, tree_util
from flamefx import random as frandom

Point = collections.namedtuple("Point", "x y")
Other = collections.namedtuple("Other", "x y")


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Layer:  # children then a static field: rebuilt by a positional call
    w: Any
    b: Any
    n: int = dataclasses.field(default=0, metadata={"static": True})


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _StaticFirst:  # a static field first: rebuilt by keyword
    name: str = dataclasses.field(metadata={"static": True})
    w: Any = None


class _Box:
    def __init__(self, items, tag):
        self.items, self.tag = items, tag

    def __eq__(self, other):
        return type(other) is _Box and (self.items, self.tag) == (other.items, other.tag)


tree_util.register_pytree_node(_Box, lambda b: (b.items, b.tag), lambda tag, c: _Box(c, tag))


def _every_kind():
    """One tree with every kind of node: dict (keys unsorted), list, tuple, empty ones, None,
    namedtuple, both dataclass layouts, a registered node with a variable child count, a
    Partial, a layer of nn, arrays and Python scalars."""
    return {"z": [1.0, (2, None)], "a": Point(fnp.ones(2), {}), "m": (), "e": [],
            "layer": _Layer(np.float32(3), fnp.zeros(1), n=4), "s": _StaticFirst("k", 5.0),
            "box": _Box([6, 7, 8], "t"), "p": tree_util.Partial(max, 9),
            "lin": nn.Linear.init(frandom.key(0), 2, 2), "none": None, "str": "leaf"}


def test_leaves_if_same_gives_tree_flattens_leaves_for_every_kind_of_node():
    tree = _every_kind()
    leaves, treedef = tree_util.tree_flatten(tree)
    got = treedef.leaves_if_same(tree)
    assert len(got) == len(leaves) and all(g is w for g, w in zip(got, leaves))
    # Another tree of the same structure: its own leaves.
    other = tree_util.tree_map(lambda x: x, tree)
    assert all(g is w for g, w in zip(treedef.leaves_if_same(other),
                                      tree_util.tree_leaves(other)))


def test_builder_gives_tree_unflattens_tree_for_every_kind_of_node():
    tree = _every_kind()
    leaves, treedef = tree_util.tree_flatten(tree)
    built = treedef.builder()(leaves)
    want = tree_util.tree_unflatten(treedef, leaves)
    assert tree_util.tree_structure(built) is treedef
    assert all(a is b for a, b in zip(tree_util.tree_leaves(built), leaves))
    assert type(built["layer"]) is _Layer and built["layer"].n == 4
    assert built["s"].name == "k" and built["box"] == want["box"]
    assert list(built) == list(want)  # dict entries in the same (sorted) order


@pytest.mark.parametrize("change", [
    lambda t: t.update(extra=1),                        # a dict key more
    lambda t: t.pop("m"),                               # one less
    lambda t: t.update(z=[1.0, (2, None), 3]),          # a longer list
    lambda t: t.update(z=(1.0, (2, None))),             # a tuple for a list
    lambda t: t.update(z=[1.0, (2, 0.5)]),              # a leaf where None was
    lambda t: t.update(none=1.0),                       # and the other way
    lambda t: t.update(a=Other(fnp.ones(2), {})),       # another namedtuple type
    lambda t: t.update(a=Point(fnp.ones(2), {"q": 1})),  # a non-empty dict for an empty one
    lambda t: t.update(m=(1,)),                         # a non-empty tuple for ()
    lambda t: t.update(layer=_Layer(1.0, 2.0, n=5)),   # a static field changed
    lambda t: t.update(s=_StaticFirst("j", 5.0)),
    lambda t: t.update(box=_Box([6, 7], "t")),          # a registered node's child count
    lambda t: t.update(box=_Box([6, 7, 8], "u")),       # and its aux data
    lambda t: t.update(p=tree_util.Partial(min, 9)),
    lambda t: t.update(z=collections.OrderedDict(b=1.0)),  # a dict subclass is another node
    lambda t: t.update(e=[[]]),                         # a subtree where nothing was
    lambda t: t.update(lin=5.0),                        # a leaf where a layer was
], ids=["key-more", "key-less", "longer-list", "tuple-for-list", "leaf-for-None",
        "None-for-leaf", "namedtuple-type", "dict-size", "tuple-size", "static-field",
        "static-first", "child-count", "aux-data", "partial-func", "dict-subclass", "subtree",
        "leaf-for-layer"])
def test_leaves_if_same_refuses_every_other_structure(change):
    tree = _every_kind()
    treedef = tree_util.tree_structure(tree)
    changed = dict(tree)
    change(changed)
    assert tree_util.tree_structure(changed) != treedef
    assert treedef.leaves_if_same(changed) is None


def test_a_subtree_where_a_leaf_was_is_refused():
    treedef = tree_util.tree_structure({"a": 1.0, "b": 2.0})
    assert treedef.leaves_if_same({"a": [1.0], "b": 2.0}) is None
    assert treedef.leaves_if_same({"a": None, "b": 2.0}) is None
    assert tree_util.LEAF.leaves_if_same((1.0,)) is None
    assert tree_util.LEAF.leaves_if_same(1.0) == [1.0]


def test_a_leaf_type_not_met_before_is_a_leaf():
    class Fresh:  # never flattened: tree_flatten decides, and learns it
        pass

    treedef = tree_util.tree_structure([1.0, 2.0])
    leaf = Fresh()
    assert treedef.leaves_if_same([1.0, leaf]) == [1.0, leaf]


def test_registering_a_type_after_the_code_was_generated_makes_it_a_node():
    class Later:
        def __init__(self, v):
            self.v = v

    treedef = tree_util.tree_structure([1.0, 2.0])
    first = Later(1.0)
    assert treedef.leaves_if_same([1.0, first]) == [1.0, first]
    tree_util.register_pytree_node(Later, lambda x: ((x.v,), None), lambda _, c: Later(*c))
    assert treedef.leaves_if_same([1.0, Later(2.0)]) is None


def test_past_the_size_limit_the_tree_functions_are_used(monkeypatch):
    monkeypatch.setattr(tree_util, "_MAX_GENERATED_NODES", 3)
    tree = {"a": [1.0, 2.0, (3.0,)], "b": None}
    leaves, treedef = tree_util.tree_flatten(tree)
    treedef._leaves_fn = treedef._build_fn = None  # interned: forget earlier generated code
    assert treedef.leaves_if_same(tree) == leaves
    assert treedef.leaves_if_same({"a": [1.0, 2.0, 3.0], "b": None}) is None
    assert treedef.builder()(leaves) == tree
    treedef._leaves_fn = treedef._build_fn = None


def test_a_thousand_leaf_tree_round_trips():
    tree = {f"k{i:04d}": [float(i), (np.float32(i), None)] for i in range(500)}
    leaves, treedef = tree_util.tree_flatten(tree)
    assert len(leaves) == 1000
    assert treedef.leaves_if_same(tree) == leaves
    assert treedef.builder()(leaves) == tree
