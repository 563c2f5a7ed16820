"""flamefx.tree and the key-path half of flamefx.tree_util: paths and keystr against the
strings JAX 0.10 prints for the same trees; transpose, Partial, all_leaves."""

import collections
import dataclasses
import functools
import operator

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import tree, tree_util
from flamefx.tree_util import (DictKey, FlattenedIndexKey, GetAttrKey, Partial, SequenceKey,
                               keystr)

Point = collections.namedtuple("Point", "x y")


@functools.partial(tree_util.register_dataclass, data_fields=["w", "b"], meta_fields=["n"])
@dataclasses.dataclass
class Layer:
    w: object
    b: object
    n: int


class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b


tree_util.register_pytree_node(Pair, lambda p: ((p.a, p.b), None), lambda _, c: Pair(*c))


class Box:
    def __init__(self, v):
        self.v = v


tree_util.register_pytree_with_keys(Box, lambda b: (((GetAttrKey("v"), b.v),), None),
                                    lambda _, c: Box(*c))


def test_paths_print_as_jax():
    t = [Point(1, 2), {"k": (3,)}, None]
    got = [(p, keystr(p)) for p, _ in tree_util.tree_flatten_with_path(t)[0]]
    assert got == [((SequenceKey(0), GetAttrKey("x")), "[0].x"),
                   ((SequenceKey(0), GetAttrKey("y")), "[0].y"),
                   ((SequenceKey(1), DictKey("k"), SequenceKey(0)), "[1]['k'][0]")]
    t = {"layers": [Layer(1.0, 2.0, 3)], "p": Pair(4.0, {"z": 5.0}), "n": None}
    assert [keystr(p) for p, _ in tree.leaves_with_path(t)] == [
        "['layers'][0].w", "['layers'][0].b", "['p'][<flat index 0>]",
        "['p'][<flat index 1>]['z']"]  # JAX's strings for this tree


def test_key_classes_print_as_jax():
    assert repr(GetAttrKey("b")) == "GetAttrKey(name='b')"
    assert [str(k) for k in (GetAttrKey("b"), FlattenedIndexKey(3), DictKey("a"),
                             SequenceKey(1))] == [".b", "[<flat index 3>]", "['a']", "[1]"]
    assert keystr((DictKey("a"), SequenceKey(0)), simple=True, separator="/") == "a/0"
    assert keystr((DictKey("a"), SequenceKey(0), GetAttrKey("b"))) == "['a'][0].b"


def test_registered_with_keys_and_leaves_match_flatten():
    t = {"b": Box(fnp.ones(2)), "a": [1.0, (2.0, None)]}
    pairs, treedef = tree.flatten_with_path(t)
    leaves, treedef2 = tree.flatten(t)
    assert treedef == treedef2 and [leaf for _, leaf in pairs] == leaves
    assert [keystr(p) for p, _ in pairs] == ["['a'][0]", "['a'][1][0]", "['b'].v"]
    rebuilt = tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt["b"], Box)


def test_map_with_path_and_is_leaf():
    out = tree.map_with_path(lambda p, x, y: keystr(p, simple=True, separator=".") + str(x + y),
                             {"a": (1, 2)}, {"a": (10, 20)})
    assert out == {"a": ("a.011", "a.122")}  # JAX's result
    paths = tree_util.tree_leaves_with_path({"a": (1, 2)}, is_leaf=lambda x: isinstance(x, tuple))
    assert paths == [((DictKey("a"),), (1, 2))]


def test_short_names():
    t = {"a": 1, "b": [2, 3]}
    assert tree.map(lambda x: x * 10, t) == {"a": 10, "b": [20, 30]}
    assert tree.leaves(t) == [1, 2, 3]
    assert tree.structure(t) == tree_util.tree_structure(t)
    assert tree.reduce(operator.add, [1, 2], 10) == 13
    assert tree.all([True, (1, 2)]) and not tree.all([True, (1, 0)])
    assert tree.transpose(tree.structure([0, 0]), tree.structure((0, 0)),
                          [(1, 2), (3, 4)]) == ([1, 3], [2, 4])
    assert tree.transpose(tree.structure([0, 0]), None, [{"u": 1}, {"u": 2}]) == {"u": [1, 2]}


def test_transpose_mismatch_is_an_error():
    with pytest.raises(ValueError, match="structure"):
        tree.transpose(tree.structure([0, 0]), tree.structure((0, 0)), [(1, 2), (3,)])


def test_all_leaves_and_treedef_helpers():
    assert tree_util.all_leaves([1.0, "a"]) and not tree_util.all_leaves([1.0, None])
    assert not tree_util.all_leaves([1.0, (2.0,)])
    assert tree_util.treedef_is_leaf(tree.structure(None))  # one node, as JAX
    assert [str(c) for c in tree_util.treedef_children(tree.structure((1, [2, 3])))] == [
        "PyTreeDef(*)", "PyTreeDef([*, *])"]


def test_partial_is_a_pytree_through_jit():
    scale = Partial(operator.mul, fnp.float32(3.0))
    assert len(tree.leaves(scale)) == 1

    @flamefx.jit
    def apply(f, x):
        return f(x)
    np.testing.assert_allclose(apply(scale, fnp.ones(2)), [3.0, 3.0])
    # the bound argument is traced (a leaf), not baked in
    np.testing.assert_allclose(apply(Partial(operator.mul, fnp.float32(5.0)), fnp.ones(2)),
                               [5.0, 5.0])
    inner = functools.partial(operator.add, 1.0)
    p = Partial(inner)
    assert tree.leaves(p) == [] and p(2.0) == 3.0
