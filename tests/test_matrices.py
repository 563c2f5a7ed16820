"""flamefx.numpy's matrix helpers (diag, diagonal, diagflat, trace, kron, cross, vander)
against NumPy in float64, with gradients to order 2, jit, vmap and bad input."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError
from flamefx.test_util import check_grads

RNG = np.random.default_rng(0)


def _normal(*shape):
    """Float64 samples as a flamefx array (NumPy float64 arrays would canonicalize to f32)."""
    return fnp.array(RNG.normal(size=shape), dtype=fnp.float64)


def _check(got, want, rtol=1e-12, atol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (2, 3, 4), (0, 3), (3, 3)])
@pytest.mark.parametrize("offset", [-4, -1, 0, 2, 5])
def test_diagonal_and_trace_match_numpy(shape, offset):
    a = _normal(*shape)
    for axes in [(0, 1), (1, 0), (-1, 0)] if len(shape) == 3 else [(0, 1), (1, 0)]:
        _check(fnp.diagonal(a, offset, *axes), np.diagonal(a, offset, *axes))
        _check(fnp.trace(a, offset, *axes), np.trace(a, offset, *axes))


@pytest.mark.parametrize("k", [-2, 0, 1])
def test_diag_and_diagflat_match_numpy(k):
    v = _normal(3)
    _check(fnp.diag(v, k), np.diag(v, k))
    _check(fnp.diag(fnp.zeros(0, fnp.float64), k), np.diag(fnp.zeros(0, fnp.float64), k))
    m = _normal(3, 4)
    _check(fnp.diag(m, k), np.diag(m, k))
    _check(fnp.diagflat(m[:2], k), np.diagflat(m[:2], k))
    assert fnp.diag(np.array([1, 2], np.int32)).dtype == np.int32


def test_trace_of_integers_and_dtype():
    m = np.arange(9, dtype=np.int32).reshape(3, 3)
    assert fnp.trace(m).item() == 12
    assert fnp.trace(m, dtype=fnp.float32).dtype == np.float32


@pytest.mark.parametrize("shapes", [((2, 3), (4, 5)), ((3,), (2, 2)), ((2, 1, 2), (3,)),
                                    ((), (3,)), ((2, 0), (3, 2))])
def test_kron_matches_numpy(shapes):
    a, b = _normal(*shapes[0]), _normal(*shapes[1])
    _check(fnp.kron(a, b), np.kron(a, b))


@pytest.mark.filterwarnings("ignore:Arrays of 2-dimensional vectors")
@pytest.mark.parametrize("na,nb", [(3, 3), (2, 3), (3, 2)])
def test_cross_matches_numpy(na, nb):
    a, b = _normal(4, na), _normal(nb,)
    _check(fnp.cross(a, b), np.cross(a, b))
    a, b = _normal(na, 2, 5), _normal(5, nb)
    _check(fnp.cross(a, b, axisa=0, axisb=-1, axisc=1),
           np.cross(a, b, axisa=0, axisb=-1, axisc=1))


def test_cross_of_2_vectors_is_the_z_component():
    a, b = _normal(4, 2), _normal(4, 2)
    _check(fnp.cross(a, b), a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    _check(fnp.cross(a.T, b.T, axis=0), a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])


@pytest.mark.parametrize("n_cols", [None, 0, 1, 4])
@pytest.mark.parametrize("increasing", [False, True])
def test_vander_matches_numpy(n_cols, increasing):
    x = fnp.array([2.0, -1.5, 0.0, 3.0], dtype=fnp.float64)
    _check(fnp.vander(x, n_cols, increasing), np.vander(x, n_cols, increasing))
    xi = np.array([2, 3, -1], np.int32)
    got = fnp.vander(xi, n_cols, increasing)
    assert got.dtype == np.int32
    _check(got, np.vander(xi, n_cols, increasing).astype(np.int32))


def test_gradients_to_order_2():
    m = _normal(3, 4)
    v = _normal(3)
    check_grads(lambda m: fnp.diagonal(m, 1), (m,))
    check_grads(lambda m: fnp.trace(m, -1), (m,))
    check_grads(lambda v: fnp.diag(v, -1), (v,))
    check_grads(lambda m: fnp.diagflat(m, 2), (m,))
    check_grads(fnp.kron, (m, v))
    check_grads(fnp.cross, (_normal(2, 3), _normal(3)))
    # At x = 0 too: the powers are running products, not pow.
    check_grads(lambda x: fnp.vander(x, 4), (fnp.array([0.0, 0.7, -1.3], dtype=fnp.float64),))


def test_jit_and_vmap():
    m = _normal(5, 3, 3)
    _check(flamefx.jit(lambda m: fnp.trace(m, axis1=1, axis2=2))(m), np.trace(m, axis1=1, axis2=2))
    _check(flamefx.vmap(fnp.diagonal)(m), np.diagonal(m, axis1=1, axis2=2))
    _check(flamefx.vmap(fnp.diag)(m[:, 0]), np.stack([np.diag(r) for r in m[:, 0]]))
    a, b = _normal(5, 3), _normal(5, 3)
    _check(flamefx.vmap(fnp.cross)(a, b), np.cross(a, b))
    _check(flamefx.jit(fnp.vander, static_argnums=1)(a[0], 3), np.vander(a[0], 3))


def test_bad_input_errors():
    with pytest.raises(FlamefxValueError, match="2 or 3 components"):
        fnp.cross(np.ones(4), np.ones(3))
    with pytest.raises(FlamefxValueError, match="at least 2 dimensions"):
        fnp.diagonal(np.ones(3))
    with pytest.raises(FlamefxValueError, match="axis1 and axis2"):
        fnp.diagonal(np.ones((2, 2)), axis1=1, axis2=-1)
    with pytest.raises(FlamefxValueError, match="1-D or 2-D"):
        fnp.diag(np.ones((2, 2, 2)))
    with pytest.raises(FlamefxValueError, match="1-D"):
        fnp.vander(np.ones((2, 2)))
