"""The array-API and JAX surface of flamefx.numpy beyond gradients: index results, grids,
``size=`` under jit, devices, the inspection namespace and the errors of bad input.

Values are compared with NumPy, or with constants taken from JAX where JAX deviates from
NumPy (clamped indices, ``size=`` padding). Gradients are in test_numpy_functions.py.
"""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.errors import ConcretizationError, FlamefxValueError


def _same(got, want):
    if isinstance(want, tuple) or (isinstance(want, list) and want
                                   and isinstance(want[0], np.ndarray)):  # several arrays
        assert isinstance(got, (list, tuple)) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --- linspace: gradients in start/stop (issue 19's bug), values as JAX ---------------------


def test_linspace_gradient_in_start_and_stop_is_jaxs():
    grad = flamefx.grad(lambda a, b: fnp.sum(fnp.linspace(a, b, 5) * fnp.arange(1.0, 6.0)),
                        argnums=(0, 1))
    d_start, d_stop = grad(0.5, 2.0)
    # d/dstart of sum(w * linspace) with w = 1..5 is w @ [1, .75, .5, .25, 0] (JAX: 5.0, 10.0)
    assert float(d_start) == pytest.approx(5.0) and float(d_stop) == pytest.approx(10.0)


def test_linspace_under_jit_and_with_array_bounds():
    f = flamefx.jit(lambda a: fnp.linspace(a, 1.0, 3))
    _same(f(0.0), [0.0, 0.5, 1.0])
    start, stop = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([5.0, 7.0])
    for axis in (0, 1, -1):
        _same(fnp.linspace(start, stop, 4, axis=axis), np.linspace(start, stop, 4, axis=axis))
    out, step = fnp.linspace(0.0, 1.0, 5, endpoint=False, retstep=True)
    _same(out, np.linspace(0.0, 1.0, 5, endpoint=False))
    assert float(step) == pytest.approx(0.2)
    assert fnp.linspace(0, 10, 4, dtype=int).tolist() == [0, 3, 6, 10]  # floor, as JAX
    assert fnp.linspace(0.0, 1.0, 0).shape == (0,)
    # An explicit dtype is the computation dtype from the start: no float32 rounding first.
    assert fnp.linspace(16777217.0, 0.0, 1, dtype=np.float64).tolist() == [16777217.0]
    _same(fnp.geomspace(-1.0, -100.0, 3), [-1.0, -10.0, -100.0])
    _same(fnp.logspace(0.0, 3.0, 4, base=2.0), np.logspace(0.0, 3.0, 4, base=2.0))


# --- creation ---------------------------------------------------------------------------------


def test_shapes_from_concrete_arrays_and_the_jit_error():
    assert fnp.zeros(fnp.array(3)).shape == (3,)
    assert fnp.ones((fnp.array(2), 3)).shape == (2, 3)
    with pytest.raises(ConcretizationError, match="static_argnums"):
        flamefx.jit(lambda n: fnp.zeros(n))(3)
    assert flamefx.jit(lambda n: fnp.zeros(n), static_argnums=0)(3).shape == (3,)


def test_eye_and_tri_with_huge_offsets():
    assert not fnp.eye(3, k=2**31).tolist()[0][0]
    assert float(fnp.sum(fnp.eye(3, k=-2**40))) == 0.0
    assert float(fnp.sum(fnp.tri(3, 4, k=2**33))) == 12.0
    _same(fnp.eye(3, 4, k=1), np.eye(3, 4, k=1))


def test_device_keyword_of_creation_functions():
    cpu = flamefx.devices("cpu")[0]
    for make in (lambda d: fnp.zeros(2, device=d), lambda d: fnp.full((2,), 1.0, device=d),
                 lambda d: fnp.arange(3, device=d), lambda d: fnp.eye(2, device=d),
                 lambda d: fnp.asarray([1.0], device=d), lambda d: fnp.linspace(0, 1, 3, device=d),
                 lambda d: fnp.ones_like(fnp.zeros(2), device=d)):
        assert make(cpu).device == cpu and make(None).device == fnp.zeros(1).device


def test_grids_and_index_tricks():
    _same(fnp.mgrid[0:3, 0:2], np.mgrid[0:3, 0:2])
    _same(fnp.mgrid[0:1:3j], np.mgrid[0:1:3j])
    _same(fnp.ogrid[0:2, 0:3], np.ogrid[0:2, 0:3])
    for key in [(slice(1, 3), 5, [7, 8]), ("0,2", [1, 2], [3, 4]), ("1,2,0", [1, 2], [3, 4])]:
        _same(fnp.r_[key], np.r_[key])
    # 'r' and 'c' make a row or a column (NumPy: a np.matrix; JAX and flamefx: an array)
    assert fnp.r_["r", [1, 2]].shape == (1, 2) and fnp.r_["c", [1, 2]].shape == (2, 1)
    _same(fnp.c_[np.ones((2, 2)), [5, 6]], np.c_[np.ones((2, 2)), [5, 6]])
    _same(fnp.indices((2, 3)), np.indices((2, 3)))
    _same(fnp.indices((2, 3), sparse=True), np.indices((2, 3), sparse=True))
    _same(fnp.tril_indices(3, -1, 4), np.tril_indices(3, -1, 4))
    _same(fnp.triu_indices(3, 1), np.triu_indices(3, 1))
    _same(fnp.tril_indices_from(np.ones((2, 3))), np.tril_indices_from(np.ones((2, 3))))
    _same(fnp.triu_indices_from(np.ones((3, 2)), k=-1), np.triu_indices_from(np.ones((3, 2)), -1))
    _same(fnp.diag_indices(3, ndim=3), np.diag_indices(3, ndim=3))
    _same(fnp.copy(np.arange(3.0)), np.arange(3.0))
    _same(fnp.from_dlpack(np.arange(3.0)), np.arange(3.0))


# --- shape ------------------------------------------------------------------------------------


def test_shape_functions_match_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    for k in range(-1, 5):
        for axes in [(0, 1), (1, 2), (2, 0)]:
            _same(fnp.rot90(a, k, axes), np.rot90(a, k, axes))
    for axis in range(-3, 3):
        for start in range(-3, 4):
            _same(fnp.rollaxis(a, axis, start), np.rollaxis(a, axis, start))
    _same(fnp.block([1.0, np.array([2.0, 3.0])]), np.block([1.0, np.array([2.0, 3.0])]))
    _same(fnp.dsplit(a, [1, 3]), np.dsplit(a, [1, 3]))
    _same(fnp.hsplit(np.arange(6.0), 3), np.hsplit(np.arange(6.0), 3))
    for obj in [0, -1, [0, 2], slice(1, None), [], [1, 1]]:
        _same(fnp.delete(a, obj, axis=1), np.delete(a, obj, axis=1))
        _same(fnp.delete(a, obj), np.delete(a, obj))
    _same(fnp.delete(a, np.array([True, False, True]), axis=1),
          np.delete(a, np.array([True, False, True]), axis=1))
    for obj, values in [(1, 9.0), (0, [7.0, 8.0]), ([0, 3], [7.0, 8.0]), (-1, 9.0),
                        ([2, 1, 2], [1.0, 2.0, 3.0]), (slice(0, 3), [5.0, 6.0, 7.0])]:
        _same(fnp.insert(np.arange(3.0), obj, values), np.insert(np.arange(3.0), obj, values))
    b = np.arange(6.0).reshape(2, 3)
    for obj, values, axis in [(1, [7.0, 8.0], 1), (1, [[7.0], [8.0]], 1), ([0, 2], 9.0, 0)]:
        _same(fnp.insert(b, obj, values, axis=axis), np.insert(b, obj, values, axis=axis))
    _same(fnp.reshape(b, newshape=(3, 2)), b.reshape(3, 2))
    _same(fnp.unstack(a, axis=2), tuple(np.moveaxis(a, 2, 0)))


def test_shape_errors():
    with pytest.raises(IndexError, match="out of bounds"):
        fnp.expand_dims(np.zeros(2), 5)
    with pytest.raises(FlamefxValueError, match="at least 2"):
        fnp.matrix_transpose(np.zeros(3))
    with pytest.raises(FlamefxValueError, match="traced"):
        flamefx.jit(lambda x, i: fnp.delete(x, i))(np.zeros(3), np.array([1]))
    with pytest.raises(TypeError, match="exactly one"):
        fnp.reshape(np.zeros(4), (2, 2), newshape=(4,))


# --- indexing ---------------------------------------------------------------------------------


def test_nonzero_with_size_under_jit_pads_as_jax():
    x = np.array([[0, 2, 0], [3, 0, 4]])
    _same(fnp.nonzero(x, size=5, fill_value=-1), ([0, 1, 1, -1, -1], [1, 0, 2, -1, -1]))
    _same(flamefx.jit(lambda x: fnp.nonzero(x, size=4))(x), ([0, 1, 1, 0], [1, 0, 2, 0]))
    _same(fnp.nonzero(x, size=2), ([0, 1], [1, 0]))
    _same(fnp.argwhere(x, size=4, fill_value=9), [[0, 1], [1, 0], [1, 2], [9, 9]])
    _same(flamefx.jit(lambda x: fnp.flatnonzero(x, size=4))(x), [1, 3, 5, 0])
    _same(fnp.where(np.array([0, 1, 1]), size=4, fill_value=7), ([1, 2, 7, 7],))
    assert fnp.argwhere(np.array(3.0)).shape == (1, 0)
    with pytest.raises(ConcretizationError):
        flamefx.jit(fnp.nonzero)(x)


def test_index_arithmetic_and_select():
    for indices in [5, [0, 11, -1], np.array([[3, 4], [7, 8]])]:
        _same(fnp.unravel_index(indices, (3, 4)),
              np.unravel_index(np.asarray(indices) % 12, (3, 4)))
    _same(fnp.unravel_index([13, -14], (3, 4)), ([2, 0], [3, 0]))  # clamped, as in JAX
    multi = (np.array([1, 2, 0]), np.array([3, 0, 1]))
    for order in "CF":
        _same(fnp.ravel_multi_index(multi, (3, 4), order=order),
              np.ravel_multi_index(multi, (3, 4), order=order))
    far = (np.array([5, -1]), np.array([1, 9]))
    for mode in ("clip", "wrap"):
        _same(fnp.ravel_multi_index(far, (3, 4), mode=mode),
              np.ravel_multi_index(far, (3, 4), mode=mode))
    with pytest.raises(FlamefxValueError, match="out of bounds"):
        fnp.ravel_multi_index(far, (3, 4))
    x = np.arange(6.0)
    _same(fnp.select([x < 2, x > 4], [x, x ** 2], 42.0),
          np.select([x < 2, x > 4], [x, x ** 2], 42.0))
    with pytest.raises(FlamefxValueError, match="inplace=False"):
        fnp.put_along_axis(np.zeros((2, 2)), np.zeros((2, 1), int), 1.0, axis=1)


def test_zero_d_boolean_mask():
    x = fnp.array(3.0)
    assert x[x > 0].tolist() == [3.0] and x[x < 0].shape == (0,)
    assert fnp.zeros((2,))[fnp.array(True)].shape == (1, 2)
    with pytest.raises(IndexError, match="does not match"):
        fnp.zeros((0,))[fnp.array([True])]  # a mask must have the shape of the dims it indexes


def test_vectorize_apply_along_and_over_axes():
    f = fnp.vectorize(lambda a, b: a * b + 1)
    column = np.arange(4.0)[:, None]
    _same(f(np.ones((2, 1, 3)), column), np.ones((2, 1, 3)) * column + 1)
    power = fnp.vectorize(lambda x, p: x ** p, excluded={1})
    _same(power(np.arange(3.0), 2), np.arange(3.0) ** 2)
    keyword = fnp.vectorize(lambda x, p=1: x ** p, excluded={"p"})
    _same(keyword(np.arange(3.0), p=3), np.arange(3.0) ** 3)
    _same(fnp.vectorize(lambda x: (x, 2 * x))(np.ones((2, 3))),
          (np.ones((2, 3)), 2 * np.ones((2, 3))))
    with pytest.raises(FlamefxValueError, match="inconsistent"):
        fnp.vectorize(fnp.dot, signature="(n),(n)->()")(np.ones(3), np.ones(4))
    b = np.random.default_rng(0).random((2, 3, 4))
    for axis in range(3):
        _same(fnp.apply_along_axis(lambda r: fnp.stack([r.max(), r.min()]), axis, b),
              np.apply_along_axis(lambda r: np.stack([r.max(), r.min()]), axis, b))


def test_einsum_interleaved_vecdot_and_correction():
    a, b = np.random.default_rng(1).random((2, 3, 4)), np.random.default_rng(2).random((4, 5))
    _same(fnp.einsum(a, [0, 1, 2], b, [2, 3], [0, 3, 1]),
          np.einsum(a, [0, 1, 2], b, [2, 3], [0, 3, 1]))
    _same(fnp.einsum(a, [Ellipsis, 2], b, [2, 3]), np.einsum(a, [Ellipsis, 2], b, [2, 3]))
    _same(fnp.vecdot(np.ones((3, 2)), np.arange(3.0)[:, None], axis=0), [3.0, 3.0])
    _same(fnp.std(a, axis=1, correction=1), np.std(a, axis=1, ddof=1))
    with pytest.raises(FlamefxValueError, match="not both"):
        fnp.var(a, ddof=1, correction=1)


# --- the array API's namespace ---------------------------------------------------------------


def test_array_namespace_and_inspection():
    x = fnp.ones(2)
    assert x.__array_namespace__() is fnp and fnp.__array_api_version__ == "2023.12"
    cpu = flamefx.devices("cpu")[0]
    assert x.to_device(cpu).device == cpu and x.astype(np.int32, copy=True).dtype == np.int32
    info = fnp.__array_namespace_info__()
    assert info.default_device() == flamefx.default_device()
    assert cpu in info.devices()
    assert info.capabilities()["boolean indexing"] is False  # as JAX: not under jit
    assert info.default_dtypes()["indexing"] == np.int32
    assert set(info.dtypes(kind="signed integer")) == {"int8", "int16", "int32"}  # x64 off
    assert "float64" not in info.dtypes(kind="real floating")
    with pytest.raises(FlamefxValueError, match="unknown dtype kind"):
        info.dtypes(kind="strings")
    assert core.to_array(np.arange(2)).__array_namespace__() is fnp
