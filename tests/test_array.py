"""The Array as users hold it: properties, repr, immutability, NumPy interop, every
indexing form against NumPy, functional ``.at`` updates, and the errors for misuse."""

import pickle

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.errors import ConcretizationError

BASE = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.float32)
MASK = BASE[:, :, 0, 0] > 20

INDICES = [
    0, -1, (1, 2), (1, -1, 3, 4), slice(None, None, -1), (slice(1, None, 2), None, 0),
    (Ellipsis, 1), (None, Ellipsis, None), (Ellipsis,), ([0, 1],), np.array([1, 0, 1]),
    (slice(None), [0, 2], [1, 3]), ([1, 0], slice(None), [0, 2]), (0, slice(None), [1, 2]),
    (np.array([[0, 1], [1, 0]]), None, [0, 2]), (Ellipsis, [0, -1]), (MASK,),
    (slice(None), np.array([True, False, True])), (slice(3, 0, -2),),
    (1, slice(None, None, -2), Ellipsis, slice(4, 1, -1)), (slice(5, 10),), ([],),
    (slice(None), None, [2, 0], None), (np.int64(1), np.array(2)), (slice(-100, 100),),
    ([[0], [1]], [[0, 1, 2]]), (slice(None), slice(None), slice(None), slice(None, None, 3)),
]


@pytest.mark.parametrize("index", INDICES, ids=[repr(i)[:40] for i in INDICES])
def test_getitem_matches_numpy(index):
    got = fnp.asarray(BASE)[index]
    want = BASE[index]
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("index", INDICES[:18], ids=[repr(i)[:40] for i in INDICES[:18]])
def test_getitem_under_jit_and_vmap(index):
    want = BASE[index]
    if hasattr(flamefx, "jit") and not _has_mask(index):
        got = flamefx.jit(lambda x: x[index])(BASE)
        np.testing.assert_array_equal(np.asarray(got), want)
    batched = flamefx.vmap(lambda x: x[index])(np.stack([BASE, BASE + 1]))
    np.testing.assert_array_equal(np.asarray(batched), np.stack([want, want + 1]))


def _has_mask(index):
    index = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, np.ndarray) and i.dtype == bool for i in index)


def test_traced_integer_index():
    x = fnp.arange(10.0)
    f = flamefx.vmap(lambda i: x[i])
    np.testing.assert_array_equal(np.asarray(f(fnp.array([3, -1, 0]))), [3.0, 9.0, 0.0])
    if hasattr(flamefx, "jit"):
        assert flamefx.jit(lambda i: x[i])(4).item() == 4.0


def test_index_errors():
    x = fnp.asarray(BASE)
    with pytest.raises(IndexError, match="out of bounds"):
        x[2]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0, 0, 0]
    with pytest.raises(IndexError, match="integer or boolean"):
        x[np.array([0.5])]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., 0, ...]
    with pytest.raises(ConcretizationError, match="fnp.where"):
        flamefx.vmap(lambda v: v[v > 0])(np.ones((2, 3), np.float32))


# --- .at ---------------------------------------------------------------------------------------

AT_CASES = [
    ((0, 1), 5.0), (slice(None, None, 2), -1.0), ((Ellipsis, 0), np.arange(4.0)),
    (([0, 1, 1], [2, 0, 0]), 3.0), ((MASK,), 7.0), ((slice(None), [2, 0]), 1.5),
]


@pytest.mark.parametrize("mode", ["set", "add", "multiply", "min", "max"])
@pytest.mark.parametrize("index,value", AT_CASES, ids=[repr(c[0])[:30] for c in AT_CASES])
def test_at_updates_match_numpy(index, value, mode):
    x = fnp.asarray(BASE)
    got = getattr(x.at[index], mode)(value)
    want = BASE.copy()
    ufunc = {"add": np.add, "multiply": np.multiply, "min": np.minimum, "max": np.maximum}
    if mode == "set":
        want[index] = value
    else:
        ufunc[mode].at(want, index, value)  # unbuffered: duplicates accumulate
    np.testing.assert_allclose(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(x), BASE)  # the original is untouched
    np.testing.assert_array_equal(np.asarray(x.at[index].get()), BASE[index])


def test_at_keeps_dtype_and_is_differentiable():
    x = fnp.zeros(4, fnp.int32)
    assert x.at[1].set(2.7).dtype == np.int32
    g = flamefx.grad(lambda v: fnp.sum(v.at[1:3].set(v[:2] * 3.0) ** 2))(fnp.arange(4.0))
    # out = [v0, 3 v0, 3 v1, v3]: d/dv0 = 2 v0 + 18 v0, d/dv1 = 18 v1, d/dv3 = 2 v3
    np.testing.assert_allclose(np.asarray(g), [0.0, 18.0, 0.0, 6.0])
    per_row = flamefx.vmap(lambda row, i: row.at[i].add(10.0))(np.zeros((3, 4), np.float32),
                                                                np.array([0, 2, 3]))
    np.testing.assert_array_equal(np.asarray(per_row), np.eye(4, dtype=np.float32)[[0, 2, 3]] * 10)


# --- the Array object --------------------------------------------------------------------------


def test_array_properties():
    x = fnp.asarray(BASE)
    assert x.shape == (2, 3, 4, 5) and x.ndim == 4 and x.size == 120 and len(x) == 2
    assert x.dtype == np.float32 and not x.weak_type
    assert x.T.shape == (5, 4, 3, 2) and x.mT.shape == (2, 3, 5, 4)
    assert x.device == flamefx.default_device()
    assert [row.shape for row in fnp.arange(6).reshape(2, 3)] == [(3,), (3,)]
    assert x.reshape(6, -1).shape == (6, 20) and x.reshape((6, 20)).shape == (6, 20)
    assert x.transpose(1, 0, 2, 3).shape == (3, 2, 4, 5) and x.flatten().shape == (120,)
    assert x.astype(fnp.bfloat16).dtype == fnp.bfloat16
    np.testing.assert_allclose(x.sum(axis=(1, 2)), BASE.sum(axis=(1, 2)))
    np.testing.assert_allclose(x.mean(), BASE.mean(), rtol=1e-6)
    assert x.argmax() == BASE.argmax() and x.max(axis=0).shape == (3, 4, 5)
    np.testing.assert_allclose(x.clip(3, 8), BASE.clip(3, 8))


def test_repr_item_tolist_and_numpy_interop():
    x = fnp.array([[1.5, 2.0]])
    assert repr(x) == "Array([[1.5, 2. ]], dtype=float32)"
    assert fnp.array(3).item() == 3 and isinstance(fnp.array(3).item(), int)
    assert x.tolist() == [[1.5, 2.0]]
    as_numpy = np.asarray(x)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    with pytest.raises(ValueError):
        as_numpy[0, 0] = 9.0  # a read-only view: nobody writes through to our buffer
    assert float(fnp.array(2.5)) == 2.5 and int(fnp.array(7)) == 7
    assert f"{fnp.array(0.25):.2f}" == "0.25"
    assert bool(fnp.array(True)) and range(10)[fnp.array(3)] == 3
    assert pickle.loads(pickle.dumps(x)).tolist() == x.tolist()
    mixed = np.ones(2, np.float32) + fnp.ones(2)  # NumPy defers to our reflected operators
    assert isinstance(mixed, flamefx.Array)


def test_operators():
    a, b = fnp.array([6, -7]), fnp.array([4, 2])
    assert (a + b).tolist() == [10, -5] and (a - 1).tolist() == [5, -8]
    assert (a * b).tolist() == [24, -14] and (a / b).tolist() == [1.5, -3.5]
    assert (a // b).tolist() == [1, -4] and (a % b).tolist() == [2, 1]
    assert (b ** 2).tolist() == [16, 4] and (2 ** b).tolist() == [16, 4]
    assert (-a).tolist() == [-6, 7] and abs(a).tolist() == [6, 7] and (+a).tolist() == [6, -7]
    assert (a & b).tolist() == [4, 0] and (a | b).tolist() == [6, -5] and (~b).tolist() == [-5, -3]
    assert (a ^ b).tolist() == [2, -5]
    assert (a > b).tolist() == [True, False] and (a == 6).tolist() == [True, False]
    assert (a != b).tolist() == [True, True] and (a <= -7).tolist() == [False, True]
    assert (1.0 - fnp.ones(2)).tolist() == [0.0, 0.0] and (3 / fnp.array(2.0)).item() == 1.5


def test_immutability():
    x = fnp.zeros(3)
    with pytest.raises(TypeError, match=r"\.at\[idx\]\.set"):
        x[0] = 1
    with pytest.raises(TypeError):
        hash(x)
    y = x.at[0].set(1.0)
    assert x.tolist() == [0.0, 0.0, 0.0] and y.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [np.array([1, 2], np.float16).astype(object),
                                 np.array(["a", "b"]), "text", {"a": 1}, object()], ids=repr)
def test_unsupported_inputs_raise_type_errors(bad):
    with pytest.raises(TypeError):
        fnp.asarray(bad)


@pytest.mark.parametrize("bad", ["text", None, {"a": 1}], ids=repr)
def test_non_array_operands_raise_type_errors(bad):
    with pytest.raises(TypeError):
        fnp.add(fnp.ones(2), bad)


def test_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        fnp.ones((2, 3)) + fnp.ones(4)
    with pytest.raises(ValueError, match="contracted"):
        fnp.ones((2, 3)) @ fnp.ones((4, 5))
