"""Core: jaxpr listings and checking, tracer hygiene, devices, tree_util, configuration."""

import collections
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import jaxpr as ir
from flamefx import tree_util


def test_make_jaxpr_listing():
    jaxpr = flamefx.make_jaxpr(lambda x, y: fnp.sum(fnp.sin(x) * y))(fnp.ones(3), fnp.ones(3))
    text = str(jaxpr)
    assert text.startswith("{ lambda ; a:f32[3] b:f32[3]. let")
    assert "c:f32[3] = sin a" in text
    assert "d:f32[3] = mul c b" in text
    assert "reduce_sum" in text and "axes=(0,)" in text
    assert text.rstrip().endswith("in (e,) }")


def test_make_jaxpr_of_grad_lists_the_backward_pass():
    text = str(flamefx.make_jaxpr(flamefx.grad(lambda x: fnp.sum(fnp.exp(x))))(fnp.ones(2)))
    assert "exp" in text and "broadcast_in_dim" in text


def test_eval_jaxpr_and_typecheck():
    closed = flamefx.make_jaxpr(lambda x: fnp.tanh(x) * 2.0 + x)(fnp.ones(4))
    ir.typecheck(closed.jaxpr)
    out = flamefx.eval_jaxpr(closed.jaxpr, closed.consts, fnp.arange(4.0))
    np.testing.assert_allclose(np.asarray(out[0]), np.tanh(np.arange(4.0)) * 2 + np.arange(4.0),
                               rtol=1e-6)


def test_typecheck_catches_a_broken_jaxpr():
    closed = flamefx.make_jaxpr(lambda x: fnp.sin(x) + 1.0)(fnp.ones(3))
    eqns = list(closed.jaxpr.eqns)
    eqns.reverse()  # use before definition
    broken = ir.Jaxpr(closed.jaxpr.constvars, closed.jaxpr.invars, closed.jaxpr.outvars, eqns)
    with pytest.raises(flamefx.FlamefxTypeError, match="undefined"):
        ir.typecheck(broken)


def test_closed_over_arrays_become_constants():
    w = fnp.arange(3.0)
    closed = flamefx.make_jaxpr(lambda x: x * w)(fnp.ones(3))
    assert len(closed.consts) == 1 and len(closed.jaxpr.constvars) == 1


def test_shape_error_names_primitive_shapes_and_user_line():
    with pytest.raises(flamefx.FlamefxTypeError) as info:
        flamefx.lax.add(fnp.ones(3), fnp.ones(4))
    message = str(info.value)
    assert "add" in message and "f32[3]" in message and "f32[4]" in message
    assert "test_core.py" in message


def test_traced_value_as_python_bool_has_a_hint():
    def f(x):
        if x > 0:
            return x
        return -x
    with pytest.raises(flamefx.ConcretizationError) as info:
        flamefx.jit(f)(1.0)
    assert "lax.cond" in str(info.value) and "static_argnums" in str(info.value)
    assert "test_core.py" in str(info.value)


def test_grad_of_python_control_flow_on_concrete_values_works():
    def f(x):
        return x * x if x > 0 else -x
    assert float(flamefx.grad(f)(3.0)) == 6.0


def test_leaked_tracer_raises_when_used():
    leaked = []

    def f(x):
        leaked.append(x)
        return x * 2
    flamefx.vmap(f)(fnp.ones(3))
    with pytest.raises(flamefx.UnexpectedTracerError, match="escaped"):
        leaked[0] + 1.0


def test_non_array_inputs_and_unsupported_dtypes_error_clearly():
    with pytest.raises(flamefx.FlamefxTypeError, match="not supported"):
        fnp.asarray(np.array([1, 2], dtype=np.float128 if hasattr(np, "float128") else "U1"))
    with pytest.raises(flamefx.FlamefxTypeError):
        fnp.asarray(np.array(["a", "b"]))
    with pytest.raises(flamefx.FlamefxTypeError, match="object"):
        flamefx.lax.exp(object())


def test_devices_and_device_put():
    cpu = flamefx.devices("cpu")[0]
    assert flamefx.default_device().platform in ("cpu", "gpu")
    x = flamefx.device_put(np.arange(3.0), cpu)
    assert x.device == cpu and isinstance(x, flamefx.Array)
    np.testing.assert_array_equal(flamefx.device_get({"x": x})["x"], np.arange(3.0))


def test_forcing_gpu_without_one_is_a_clear_error():
    code = "import flamefx.numpy as fnp; fnp.ones(3)"
    env = dict(os.environ, FLAMEFX_PLATFORM="gpu", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if result.returncode == 0:
        pytest.skip("a GPU is visible here")
    assert "FLAMEFX_PLATFORM=gpu" in result.stderr


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass(frozen=True)
class Layer:
    w: object
    name: str = dataclasses.field(default="dense", metadata={"static": True})


tree_util.register_dataclass(Layer)


def test_tree_util_round_trips_and_maps():
    tree = {"a": [1, (2, None)], "b": Point(3, 4), "c": Layer(w=5)}
    leaves, treedef = tree_util.tree_flatten(tree)
    assert leaves == [1, 2, 3, 4, 5]
    rebuilt = tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt == tree
    doubled = tree_util.tree_map(lambda a, b: a + b, tree, tree)
    assert doubled["b"] == Point(6, 8) and doubled["c"] == Layer(w=10)
    assert tree_util.tree_structure(tree) == treedef
    assert "Point" in repr(treedef)


def test_tree_util_structures_are_shared_and_leaf_counts_checked():
    a = tree_util.tree_structure({"w": [1.0, 2.0], "b": (3.0, None)})
    b = tree_util.tree_structure({"w": [4.0, 5.0], "b": (6.0, None)})
    assert a is b  # one PyTreeDef per structure: jit's cache compares them by identity
    assert a != tree_util.tree_structure({"w": [1.0, 2.0], "c": (3.0, None)})
    assert a != tree_util.tree_structure({"w": [1.0], "b": (3.0, None)})
    with pytest.raises(ValueError, match="too few leaves"):
        tree_util.tree_unflatten(a, [1.0, 2.0])
    with pytest.raises(ValueError, match="too many leaves"):
        tree_util.tree_unflatten(a, range(4))

    class Later:  # seen as a leaf first, then registered: a node from then on
        def __init__(self, v):
            self.v = v

    assert tree_util.tree_leaves([Later(1)])[0].v == 1
    tree_util.register_pytree_node(Later, lambda x: ((x.v,), None), lambda _, c: Later(*c))
    assert tree_util.tree_leaves([Later(1)]) == [1]


def test_tree_util_register_class():
    @tree_util.register_pytree_node_class
    class Box:
        def __init__(self, v):
            self.v = v

        def tree_flatten(self):
            return (self.v,), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    out = flamefx.grad(lambda b: b.v * b.v)(Box(3.0))
    assert isinstance(out, Box) and float(out.v) == 6.0


def test_config_update_and_override():
    assert flamefx.config.read("default_matmul_precision") == "highest"
    with flamefx.config.override("default_matmul_precision", "tf32"):
        assert flamefx.config.read("default_matmul_precision") == "tf32"
    with pytest.raises(ValueError):
        flamefx.config.update("default_matmul_precision", "fast")


def test_committed_arrays_decide_the_device():
    code = """
import flamefx, flamefx.numpy as fnp
cpu0, cpu1 = flamefx.devices("cpu")
x = flamefx.device_put(fnp.arange(3.0), cpu1)
y = x + fnp.ones(3) * 2.0          # uncommitted operands follow x to cpu1
assert y.device == cpu1, y.device
z = flamefx.jit(lambda a, b: a * b)(fnp.ones(3), x)
assert z.device == cpu1, z.device
try:
    x + flamefx.device_put(fnp.ones(3), cpu0)
except flamefx.FlamefxError as e:
    assert "placed on different devices" in str(e)
else:
    raise AssertionError("mixing committed devices must fail")
print("ok")
"""
    env = dict(os.environ, FLAMEFX_CPU_DEVICES="2", FLAMEFX_PLATFORM="cpu")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
