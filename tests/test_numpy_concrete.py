"""flamefx.numpy's functions that need values while tracing (arange's bounds, mgrid's
slices, nonzero, boolean masks, unique without size=, delete's positions, bincount's bin
count, polymul's trimming, shape dimensions) all go through flamefx/numpy/concrete.py: under
jit each raises its own error class and message; under an eager transform the tracer's
concrete value is read."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.errors import ConcretizationError, FlamefxTypeError, FlamefxValueError

X = np.array([0.0, 2.0, 0.0, 3.0])

CASES = [
    ("arange", lambda x: fnp.arange(x[1]), ConcretizationError,
     r"used as a Python arange start \(it must be known while tracing\)"),
    ("mgrid", lambda x: fnp.mgrid[0:x[1]], ConcretizationError, r"slice stop of mgrid"),
    ("zeros", lambda x: fnp.zeros((x[1].astype(int), 2)), ConcretizationError,
     r"array shapes must be concrete"),
    ("nonzero", lambda x: fnp.nonzero(x), ConcretizationError,
     r"(?s)nonzero has a result whose shape depends on the values of a traced array \(f64\[4\]\)"
     r".*fnp.where"),
    ("mask", lambda x: x[x > 1], ConcretizationError,
     r"boolean mask indexing has a result whose shape depends"),
    ("unique", lambda x: fnp.unique(x), ConcretizationError,
     r"(?s)unique without size= returns an array whose size depends on the values of a traced "
     r"array \(f64\[4\]\).*static size="),
    ("delete", lambda x: fnp.delete(X, x.astype(int)[1:2]), FlamefxValueError,
     r"delete: the positions must be concrete \(static\), got a traced array i\d+\[1\]"),
    ("bincount", lambda x: fnp.bincount(x.astype(int)), ConcretizationError,
     r"bincount's number of bins depends on the values of a traced array"),
    ("polymul", lambda x: fnp.polymul(x, x, trim_leading_zeros=True), FlamefxTypeError,
     r"polymul\(trim_leading_zeros=True\) needs concrete values, but got a traced array "
     r"\(f64\[4\]\)"),
]


@pytest.fixture(autouse=True)
def _x64():
    with flamefx.config.override("jax_enable_x64", True):
        yield


@pytest.mark.parametrize("name,fn,error,message", CASES, ids=[c[0] for c in CASES])
def test_traced_values_raise_the_callers_error_under_jit(name, fn, error, message):
    with pytest.raises(error, match=message) as info:
        flamefx.jit(fn)(X)
    assert __file__ in str(info.value), "the message names the user's line"


@pytest.mark.parametrize("name,fn,error,message", CASES, ids=[c[0] for c in CASES])
def test_eager_transform_tracers_are_read(name, fn, error, message):
    # Under eager vmap the tracer's concrete value is not there either, but under eager jvp
    # (forward mode, values known) it is: the function runs as on plain arrays.
    want = fn(X)
    got = flamefx.jvp(lambda x: fn(x), (X,), (np.ones_like(X),))[0]
    for g, w in zip(flamefx.tree_util.tree_leaves(got), flamefx.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
