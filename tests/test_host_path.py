"""The host path of a jitted call with a large pytree: the flattening, the one-pass leaf
signature and the output rebuild (flamefx/tree_util.py, flamefx/transforms/jit.py) give the
same values and structure as the function run eagerly, on a cache miss and on every hit;
and a call with the last call's structure and signature (the plan: code generated for the
structure, leaves checked as whole lists) gives what the general path gives, which takes
over whenever anything differs."""

import collections
import dataclasses
from typing import Any

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, nn, tree_util
from flamefx import random as frandom
from flamefx.errors import DeletedArrayError

Pair = collections.namedtuple("Pair", ["a", "b"])


def _big_tree(rng, layers: int = 250):
    """About 1000 leaves: dicts of arrays, lists, tuples, None, a namedtuple, a layer
    dataclass, NumPy leaves and Python scalars."""
    tree = {f"layer{i:03d}": {"w": fnp.asarray(rng.standard_normal((3, 2)).astype(np.float32)),
                              "b": [fnp.asarray(rng.standard_normal(2).astype(np.float32)),
                                    None],
                              "stats": (np.float32(i), np.arange(i % 4, dtype=np.int32))}
            for i in range(layers)}
    tree["pair"] = Pair(fnp.ones(2), 2.5)
    tree["linear"] = nn.Linear.init(frandom.key(0), 3, 4)
    return tree


def _step(tree):
    return flamefx.tree_util.tree_map(lambda x: x * 2 + 1, tree)


def _assert_same(got, want):
    got_leaves, got_tree = tree_util.tree_flatten(got)
    want_leaves, want_tree = tree_util.tree_flatten(want)
    assert got_tree == want_tree
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        # Python scalars come back as (weak) 0-d arrays, in JAX's canonical dtypes.
        assert np.asarray(g).dtype == np.asarray(fnp.asarray(w)).dtype
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_thousand_leaf_tree_matches_eager_on_miss_and_hits():
    rng = np.random.default_rng(0)
    tree = _big_tree(rng)
    assert len(tree_util.tree_leaves(tree)) >= 1000
    step = flamefx.jit(_step)
    want = _step(tree)
    for _ in range(3):  # the miss, then cache hits
        _assert_same(step(tree), want)
    assert len(step._cache) == 1
    # The outputs fed back (Arrays where there were NumPy leaves; Python scalars are weak
    # float32 either way) have the same signature: hits again.
    again = step(step(tree))
    _assert_same(again, _step(want))
    assert len(step._cache) == 1


def test_numpy_leaves_take_canonical_dtypes_and_python_scalars_stay_weak():
    step = flamefx.jit(lambda t: t)
    out = step({"f": np.ones(3), "i": np.arange(2), "s": 2.0, "x": fnp.ones(2)})
    assert out["f"].dtype == np.float32 and out["i"].dtype == np.int32
    assert out["s"].aval.weak_type and not out["x"].aval.weak_type


def test_a_new_structure_or_dtype_retraces():
    step = flamefx.jit(lambda t: tree_util.tree_map(lambda x: x + 1, t))
    step({"a": fnp.ones(2), "b": [fnp.ones(1)]})
    step({"a": fnp.ones(2), "b": [fnp.ones(1)]})
    assert len(step._cache) == 1
    step({"a": fnp.ones(2), "b": (fnp.ones(1),)})
    step({"a": fnp.ones(2, dtype=fnp.int32), "b": [fnp.ones(1)]})
    assert len(step._cache) == 3


def test_deleted_leaf_in_a_tree_raises():
    step = flamefx.jit(lambda t: t["a"] + 1, donate_argnums=0)
    tree = {"a": fnp.ones(2), "b": [fnp.zeros(1)]}
    step(tree)
    with pytest.raises(DeletedArrayError):
        step(tree)


def test_tracer_leaves_go_through_the_primitive():
    step = flamefx.jit(lambda t: fnp.sum(t["a"] * t["b"][0]))
    grads = flamefx.grad(step)({"a": fnp.arange(3.0), "b": [fnp.ones(3)]})
    np.testing.assert_allclose(np.asarray(grads["a"]), np.ones(3))
    np.testing.assert_allclose(np.asarray(grads["b"][0]), np.arange(3.0))


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _StaticFirst:  # a static field before the children: rebuilt by keyword
    name: str = dataclasses.field(metadata={"static": True})
    w: Any = None


@tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class _KeywordOnly:
    w: Any
    scale: float = dataclasses.field(default=1.0, metadata={"static": True})


def test_registered_dataclasses_of_any_field_order_round_trip_through_jit():
    tree = [_StaticFirst("a", fnp.ones(2)), _KeywordOnly(w=fnp.arange(3.0), scale=2.0),
            nn.Linear.init(frandom.key(1), 2, 3)]
    leaves, treedef = tree_util.tree_flatten(tree)
    assert tree_util.tree_unflatten(treedef, leaves) == tree
    out = flamefx.jit(_step)(tree)
    _assert_same(out, _step(tree))
    assert out[0].name == "a" and out[1].scale == 2.0


def _array_tree(rng, layers: int = 250):
    """About 1000 Array leaves (a training step's state): dicts, lists, tuples, None, a
    namedtuple, layers, a 0-d int step."""
    def array(*shape):
        return fnp.asarray(rng.standard_normal(shape).astype(np.float32))
    tree = {f"layer{i:03d}": {"w": array(3, 2), "b": [array(2), None], "s": (array(1), array())}
            for i in range(layers)}
    tree["pair"] = Pair(array(2), fnp.asarray(0, dtype=fnp.int32))
    tree["linear"] = nn.Linear.init(frandom.key(0), 3, 4)
    return tree


def test_thousand_arrays_through_the_plan_match_eager_call_after_call():
    rng = np.random.default_rng(1)
    tree = _array_tree(rng)
    assert len(tree_util.tree_leaves(tree)) >= 1000
    step = flamefx.jit(_step)
    eager = tree
    for i in range(4):  # the miss, then hits through the plan, each on the last outputs
        tree = step(tree)
        eager = _step(eager)
        _assert_same(tree, eager)
        assert step._last_plan is not None and len(step._cache) == 1
    assert type(tree["linear"]) is nn.Linear and type(tree["pair"]) is Pair


def test_a_call_through_the_plan_neither_flattens_nor_unflattens(monkeypatch):
    tree = _array_tree(np.random.default_rng(3), layers=20)
    step = flamefx.jit(_step)
    out = step(tree)  # the miss; the plan is made for this signature
    want = _step(out)

    def refuse(*args, **kwargs):
        raise AssertionError("the generic tree functions ran")
    monkeypatch.setattr(tree_util, "tree_flatten", refuse)
    monkeypatch.setattr(tree_util, "tree_unflatten", refuse)
    got = step(out)
    monkeypatch.undo()
    _assert_same(got, want)


@pytest.mark.parametrize("change", [
    lambda t: t.update(linear=nn.Linear.init(frandom.key(1), 3, 5)),
    lambda t: t.update(x=fnp.ones(2)),
    lambda t: t.update(pair=t["pair"]._replace(b=fnp.asarray(0.0))),
    lambda t: t.update(pair=t["pair"]._replace(a=t["pair"].a + 0.0)),
    lambda t: t.update(pair=t["pair"]._replace(a=2.0)),
    lambda t: t.update(pair=t["pair"]._replace(a=np.ones(2, np.float32))),
], ids=["shape", "structure", "dtype", "same-signature", "python-scalar", "numpy-leaf"])
def test_any_difference_from_the_last_call_takes_the_general_path(change):
    rng = np.random.default_rng(2)
    tree = _array_tree(rng, layers=5)
    step = flamefx.jit(_step)
    step(tree)
    step(tree)
    changed = dict(tree)
    change(changed)
    _assert_same(step(changed), _step(changed))
    _assert_same(step(changed), _step(changed))  # and its own plan, if it makes one
    _assert_same(step(tree), _step(tree))


def test_weak_type_is_part_of_the_plans_signature():
    step = flamefx.jit(lambda t: t["a"] * t["b"])
    strong = {"a": fnp.ones(2), "b": fnp.asarray(2.0)}
    step(strong)
    step(strong)
    assert not step(strong).aval.weak_type
    weak = {"a": fnp.ones(2), "b": flamefx.jit(lambda: 2.0)()}  # a weak float32 Array
    assert weak["b"].aval.weak_type
    out = step(weak)
    assert len(step._cache) == 2 and not out.aval.weak_type
    np.testing.assert_array_equal(np.asarray(out), [2.0, 2.0])


def test_static_arguments_are_part_of_the_plans_signature():
    step = flamefx.jit(lambda t, n: tree_util.tree_map(lambda x: x * n, t), static_argnums=1)
    tree = {"a": fnp.ones(2), "b": [fnp.ones(3)]}
    step(tree, 2)
    step(tree, 2)
    out = step(tree, 3)
    np.testing.assert_array_equal(np.asarray(out["b"][0]), [3.0, 3.0, 3.0])
    assert len(step._cache) == 2


def test_donated_trees_through_the_plan():
    step = flamefx.jit(lambda t: tree_util.tree_map(lambda x: x + 1, t), donate_argnums=0)
    tree = {"a": fnp.zeros(2), "b": [fnp.zeros(3)]}
    for i in range(3):
        old = tree
        tree = step(tree)
        assert old["a"].is_deleted() and old["b"][0].is_deleted()
    np.testing.assert_array_equal(np.asarray(tree["b"][0]), [3.0, 3.0, 3.0])
    with pytest.raises(DeletedArrayError):
        step(old)


def test_nan_checks_run_on_the_plans_calls():
    step = flamefx.jit(lambda t: fnp.log(t["a"]) + t["b"][0])
    tree = {"a": fnp.ones(2), "b": [fnp.ones(2)]}
    step(tree)
    step(tree)
    try:
        config.update("jax_debug_nans", True)
        with pytest.raises(FloatingPointError, match="encountered in log"):
            step({"a": -fnp.ones(2), "b": [fnp.ones(2)]})
    finally:
        config.update("jax_debug_nans", False)
