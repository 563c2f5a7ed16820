"""flamefx.numpy against NumPy: table-driven over functions, shapes, scalars and empties,
plus JAX's promotion table and a few gradients through fnp functions."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import dtypes

RNG = np.random.default_rng(0)


def _rand(shape, dtype=np.float32, low=-2.0, high=2.0):
    if np.dtype(dtype) == np.bool_:
        return RNG.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        lo = 0 if np.issubdtype(dtype, np.unsignedinteger) else -5
        return RNG.integers(lo, 6, size=shape).astype(dtype)
    return RNG.uniform(low, high, size=shape).astype(dtype)


def _check(got, want, rtol=1e-5, atol=1e-5):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                               atol=atol, equal_nan=True)


# --- elementwise -----------------------------------------------------------------------------

SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 1), (4,)), ((), (2, 3)), ((0, 3), (3,)), ((2, 1, 3), (4, 1))]

BINARY = [
    ("add", np.add, "float"), ("subtract", np.subtract, "float"),
    ("multiply", np.multiply, "float"), ("divide", np.divide, "positive"),
    ("true_divide", np.true_divide, "positive"), ("maximum", np.maximum, "float"),
    ("minimum", np.minimum, "float"), ("arctan2", np.arctan2, "float"),
    ("hypot", np.hypot, "float"), ("power", np.power, "positive"),
    ("floor_divide", np.floor_divide, "nonzero"), ("remainder", np.remainder, "nonzero"),
    ("mod", np.mod, "nonzero"), ("fmod", np.fmod, "nonzero"),
    ("logaddexp", np.logaddexp, "float"),
    ("equal", np.equal, "int"), ("not_equal", np.not_equal, "int"), ("less", np.less, "float"),
    ("less_equal", np.less_equal, "int"), ("greater", np.greater, "float"),
    ("greater_equal", np.greater_equal, "int"),
    ("logical_and", np.logical_and, "int"), ("logical_or", np.logical_or, "int"),
    ("logical_xor", np.logical_xor, "int"), ("bitwise_and", np.bitwise_and, "int"),
    ("bitwise_or", np.bitwise_or, "int"), ("bitwise_xor", np.bitwise_xor, "int"),
]


def _binary_inputs(kind, shape_x, shape_y):
    if kind == "int":
        return _rand(shape_x, np.int32), _rand(shape_y, np.int32)
    if kind == "positive":
        return _rand(shape_x, low=0.5, high=2.0), _rand(shape_y, low=0.5, high=2.0)
    if kind == "nonzero":
        y = _rand(shape_y, low=0.5, high=3.0) * np.where(_rand(shape_y, np.bool_), 1, -1)
        return _rand(shape_x, low=-5, high=5), y.astype(np.float32)
    return _rand(shape_x), _rand(shape_y)


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name,np_fn,kind", BINARY, ids=[b[0] for b in BINARY])
def test_binary_matches_numpy(name, np_fn, kind, shapes):
    x, y = _binary_inputs(kind, *shapes)
    _check(getattr(fnp, name)(x, y), np_fn(x, y), rtol=2e-5)


@pytest.mark.parametrize("name", ["floor_divide", "remainder", "power"])
def test_integer_division_and_power_follow_numpy(name):
    x = np.array([-7, 7, -7, 7, 0, 5], np.int32)
    y = np.array([2, -2, -2, 2, 3, 1], np.int32)
    if name == "power":
        x, y = np.array([2, -3, 5, 0, 1, -1], np.int32), np.array([10, 3, 0, 2, 7, 5], np.int32)
    got = getattr(fnp, name)(x, y)
    assert got.dtype == np.int32
    _check(got, getattr(np, name)(x, y))


UNARY = [
    ("negative", np.negative, "float"), ("positive", np.positive, "float"),
    ("abs", np.abs, "float"), ("absolute", np.absolute, "int"), ("sign", np.sign, "float"),
    ("sign", np.sign, "int"), ("exp", np.exp, "float"), ("exp2", np.exp2, "float"),
    ("log", np.log, "positive"), ("log2", np.log2, "positive"),
    ("log10", np.log10, "positive"), ("log1p", np.log1p, "positive"),
    ("expm1", np.expm1, "float"), ("sqrt", np.sqrt, "positive"), ("cbrt", np.cbrt, "float"),
    ("square", np.square, "float"), ("square", np.square, "int"),
    ("reciprocal", np.reciprocal, "positive"), ("sin", np.sin, "float"),
    ("cos", np.cos, "float"), ("tan", np.tan, "unit"), ("arcsin", np.arcsin, "unit"),
    ("arccos", np.arccos, "unit"), ("arctan", np.arctan, "float"), ("tanh", np.tanh, "float"),
    ("sinh", np.sinh, "float"), ("cosh", np.cosh, "float"), ("floor", np.floor, "float"),
    ("ceil", np.ceil, "float"), ("trunc", np.trunc, "float"), ("rint", np.rint, "halves"),
    ("round", np.round, "halves"), ("logical_not", np.logical_not, "int"),
    ("invert", np.invert, "int"), ("isfinite", np.isfinite, "special"),
    ("isnan", np.isnan, "special"), ("isinf", np.isinf, "special"),
    ("nan_to_num", np.nan_to_num, "special"), ("exp", np.exp, "int"),
]


def _unary_input(kind, shape):
    if kind == "int":
        return _rand(shape, np.int32)
    if kind == "positive":
        return _rand(shape, low=0.1, high=3.0)
    if kind == "unit":
        return _rand(shape, low=-0.9, high=0.9)
    if kind == "halves":
        return (RNG.integers(-6, 6, size=shape) * 0.5).astype(np.float32)
    if kind == "special":
        values = np.array([0.0, np.nan, np.inf, -np.inf, 1.5, -2.0], np.float32)
        return RNG.choice(values, size=shape)
    return _rand(shape)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (0, 4)], ids=str)
@pytest.mark.parametrize("name,np_fn,kind", UNARY, ids=[f"{u[0]}-{u[2]}" for u in UNARY])
def test_unary_matches_numpy(name, np_fn, kind, shape):
    x = _unary_input(kind, shape)
    got = getattr(fnp, name)(x)
    want = np_fn(x)
    if kind == "int" and np.issubdtype(want.dtype, np.floating):
        want = want.astype(np.float32)  # int -> default float (float32), not NumPy's float64
    assert got.dtype == want.dtype or name == "nan_to_num", (got.dtype, want.dtype)
    _check(got, want, rtol=3e-5 if name != "nan_to_num" else 1e-6)


def test_round_decimals_and_clip():
    x = _rand((4, 5), low=-10, high=10)
    _check(fnp.round(x, 2), np.round(x, 2), atol=1e-4)
    _check(fnp.clip(x, -1.0, 2.5), np.clip(x, -1.0, 2.5))
    _check(fnp.clip(x, max=0.0), np.minimum(x, 0.0))


def test_where_broadcasts_and_promotes():
    cond = _rand((3, 1), np.bool_)
    x, y = _rand((4,)), np.int32(7)
    got = fnp.where(cond, x, y)
    _check(got, np.where(cond, x, y).astype(np.float32))
    assert got.dtype == np.float32
    [idx] = fnp.where(np.array([0, 2, 0, 3]))
    assert idx.tolist() == [1, 3]


# --- promotion ---------------------------------------------------------------------------------

PROMOTION_TABLE = [
    ("int32", "float32", "float32"), ("int32", "float16", "float16"),
    ("bfloat16", "float16", "float32"), ("uint8", "int8", "int16"),
    ("uint32", "int32", "int64"), ("bool", "int8", "int8"), ("bool", "float16", "float16"),
    ("int64", "float16", "float16"), ("float32", "float64", "float64"),
    ("uint8", "uint32", "uint32"), ("int8", "bfloat16", "bfloat16"), ("bool", "bool", "bool"),
]


@pytest.mark.parametrize("a,b,want", PROMOTION_TABLE)
def test_promotion_table(a, b, want):
    assert fnp.promote_types(a, b) == np.dtype(dtypes.canonicalize(want))
    x = fnp.ones(2, dtype=a)
    y = fnp.ones(2, dtype=b)
    assert fnp.add(x, y).dtype == np.dtype(dtypes.canonicalize(want))


WEAK_CASES = [
    ("float32", 2.0, "float32", False), ("int32", 2.0, "float32", True),
    ("bfloat16", 2.0, "bfloat16", False), ("float16", 3, "float16", False),
    ("int8", 3, "int8", False), ("uint8", 3, "uint8", False), ("bool", 1, "int32", True),
    ("bool", 1.5, "float32", True),
]


@pytest.mark.parametrize("dtype,scalar,want,weak", WEAK_CASES)
def test_weak_python_scalars(dtype, scalar, want, weak):
    out = fnp.ones(3, dtype=dtype) * scalar if dtype != "bool" else fnp.add(
        fnp.ones(3, dtype=bool), scalar)
    assert out.dtype == np.dtype(dtypes.canonicalize(want))
    assert out.weak_type == weak
    assert fnp.result_type(np.dtype(dtypes.canonicalize(dtype)), type(scalar)) == out.dtype


def test_scalar_only_operations_stay_weak():
    out = fnp.add(1.0, 2)
    assert out.dtype == np.float32 and out.weak_type
    assert fnp.array(2.0).weak_type is False
    assert fnp.true_divide(fnp.arange(3), 2).dtype == np.float32


# --- creation ----------------------------------------------------------------------------------


def test_creation_functions():
    assert fnp.zeros((2, 3)).dtype == np.float32
    assert fnp.ones(3, int).dtype == np.int32
    _check(fnp.full((2, 2), 7.5), np.full((2, 2), 7.5))
    _check(fnp.arange(2, 11, 3), np.arange(2, 11, 3))
    assert fnp.arange(5).dtype == np.int32 and fnp.arange(0.0, 1.0, 0.25).dtype == np.float32
    _check(fnp.linspace(-1, 1, 7), np.linspace(-1, 1, 7))
    _check(fnp.linspace(0, 1, 4, endpoint=False), np.linspace(0, 1, 4, endpoint=False))
    _check(fnp.eye(3, 4, k=1), np.eye(3, 4, k=1))
    _check(fnp.identity(3, dtype=int), np.identity(3, dtype=int))
    _check(fnp.tri(3, 4, k=-1), np.tri(3, 4, k=-1))
    m = _rand((2, 4, 3))
    _check(fnp.tril(m, 1), np.tril(m, 1))
    _check(fnp.triu(m, -1), np.triu(m, -1))
    like = fnp.ones((2, 3), fnp.int8)
    assert fnp.zeros_like(like).dtype == np.int8 and fnp.ones_like(like).shape == (2, 3)
    _check(fnp.full_like(like, 4), np.full((2, 3), 4))
    assert fnp.empty((0, 2)).shape == (0, 2) and fnp.empty_like(like, float).dtype == np.float32
    for indexing in ("xy", "ij"):
        for got, want in zip(fnp.meshgrid(np.arange(3), np.arange(4), indexing=indexing),
                             np.meshgrid(np.arange(3), np.arange(4), indexing=indexing)):
            _check(got, want)


def test_array_and_asarray():
    assert fnp.array([[1, 2], [3, 4]]).dtype == np.int32
    assert fnp.array([1.5, 2]).dtype == np.float32
    assert fnp.asarray(np.arange(3, dtype=np.int64)).dtype == np.int32  # x64 off, as in JAX
    assert fnp.array([1, 2], dtype=fnp.float16).dtype == np.float16
    source = np.arange(3.0)
    copied = fnp.array(source)
    source[0] = 99.0  # the caller's buffer is theirs; ours must not change
    assert copied.tolist() == [0.0, 1.0, 2.0]
    x = fnp.arange(3.0)
    assert fnp.asarray(x) is x
    assert fnp.array(3.0, ndmin=2).shape == (1, 1)
    with pytest.raises(TypeError):
        fnp.array("abc")


# --- reductions ----------------------------------------------------------------------------------

REDUCTIONS = [
    ("sum", np.sum), ("mean", np.mean), ("var", np.var), ("std", np.std), ("max", np.max),
    ("min", np.min), ("prod", np.prod), ("all", np.all), ("any", np.any),
]
AXES = [None, 0, -1, (0, 2), (), (-1, 0)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name,np_fn", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
def test_reductions_match_numpy(name, np_fn, axis, keepdims):
    x = _rand((2, 3, 4), low=0.5, high=1.5) if name == "prod" else _rand((2, 3, 4))
    _check(getattr(fnp, name)(x, axis=axis, keepdims=keepdims),
           np_fn(x, axis=axis, keepdims=keepdims), rtol=1e-5, atol=1e-5)


def test_reduction_dtypes_and_edge_cases():
    assert fnp.sum(np.array([True, True, False])).dtype == np.int32
    assert fnp.sum(np.array([True, True, False])).item() == 2
    assert fnp.sum(np.ones(3, np.int8)).dtype == np.int32
    assert fnp.sum(np.ones(3, np.float16)).dtype == np.float16
    assert fnp.mean(np.arange(4, dtype=np.int32)).dtype == np.float32
    assert fnp.sum(np.zeros((0, 3), np.float32), axis=0).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(fnp.mean(np.zeros((0,), np.float32)).item())
    x = _rand((5, 4))
    _check(fnp.var(x, axis=0, ddof=1), np.var(x, axis=0, ddof=1))
    _check(fnp.std(x, ddof=1), np.std(x, ddof=1))
    with pytest.raises(ValueError):
        fnp.max(np.zeros((0,), np.float32))
    with pytest.raises(ValueError):
        fnp.sum(x, axis=2)
    half = fnp.ones(4096, fnp.float16)
    assert fnp.sum(half).item() == 4096.0  # float32 accumulation: 2048 + 1 would stall in f16


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("name", ["argmax", "argmin", "cumsum", "cumprod"])
def test_arg_and_cumulative(name, axis):
    x = _rand((3, 5), low=0.5, high=1.5)
    got = getattr(fnp, name)(x, axis=axis)
    want = getattr(np, name)(x, axis=axis)
    _check(got, want, rtol=1e-5)
    if name.startswith("arg"):
        assert got.dtype == np.int32
        kept = getattr(fnp, name)(x, axis=axis, keepdims=True)
        assert kept.shape == getattr(np, name)(x, axis=axis, keepdims=True).shape


def test_integer_cumsum_and_logsumexp():
    _check(fnp.cumsum(np.array([[1, 2], [3, 4]], np.int8), axis=0), [[1, 2], [4, 6]])
    x = _rand((3, 4)) * 50
    want = np.log(np.sum(np.exp(x.astype(np.float64)), axis=1))
    _check(fnp.logsumexp(x, axis=1), want, rtol=1e-5)
    _check(fnp.logsumexp(np.array([-np.inf, -np.inf], np.float32)), -np.inf)
    _check(fnp.logsumexp(x, axis=0, b=np.full((3, 4), 2.0, np.float32), keepdims=True),
           np.log(2 * np.sum(np.exp(x.astype(np.float64)), axis=0, keepdims=True)), rtol=1e-5)


# --- shape -------------------------------------------------------------------------------------


def test_shape_functions():
    x = _rand((2, 3, 4))
    _check(fnp.reshape(x, (4, -1)), np.reshape(x, (4, -1)))
    _check(fnp.reshape(x, (4, 6), order="F"), np.reshape(x, (4, 6), order="F"))
    _check(fnp.ravel(x), np.ravel(x))
    _check(fnp.transpose(x), np.transpose(x))
    _check(fnp.transpose(x, (1, 0, 2)), np.transpose(x, (1, 0, 2)))
    _check(fnp.swapaxes(x, 0, -1), np.swapaxes(x, 0, -1))
    _check(fnp.moveaxis(x, [0, 1], [-1, 0]), np.moveaxis(x, [0, 1], [-1, 0]))
    _check(fnp.expand_dims(x, (0, -1)), np.expand_dims(x, (0, -1)))
    _check(fnp.squeeze(np.ones((1, 3, 1))), np.ones(3))
    _check(fnp.squeeze(np.ones((1, 3, 1)), axis=-1), np.ones((1, 3)))
    _check(fnp.broadcast_to(np.arange(3), (2, 3)), np.broadcast_to(np.arange(3), (2, 3)))
    a, b = fnp.broadcast_arrays(np.ones((2, 1)), np.ones(3))
    assert a.shape == b.shape == (2, 3)
    _check(fnp.concatenate([x, x], axis=1), np.concatenate([x, x], axis=1))
    _check(fnp.concatenate([x, x], axis=None), np.concatenate([x, x], axis=None))
    _check(fnp.stack([x, x], axis=-1), np.stack([x, x], axis=-1))
    _check(fnp.hstack([x, x]), np.hstack([x, x]))
    _check(fnp.vstack([np.arange(3), np.arange(3)]), np.vstack([np.arange(3), np.arange(3)]))
    for got, want in zip(fnp.split(x, 2, axis=0), np.split(x, 2, axis=0)):
        _check(got, want)
    for got, want in zip(fnp.split(x, [1, 3], axis=2), np.split(x, [1, 3], axis=2)):
        _check(got, want)
    for got, want in zip(fnp.array_split(x, 3, axis=2), np.array_split(x, 3, axis=2)):
        _check(got, want)
    _check(fnp.tile(x, (2, 1, 3)), np.tile(x, (2, 1, 3)))
    _check(fnp.tile(np.arange(3), (2, 2)), np.tile(np.arange(3), (2, 2)))
    _check(fnp.repeat(x, 2, axis=1), np.repeat(x, 2, axis=1))
    _check(fnp.repeat(np.arange(3), [1, 0, 2]), np.repeat(np.arange(3), [1, 0, 2]))
    _check(fnp.flip(x, (0, 2)), np.flip(x, (0, 2)))
    _check(fnp.flip(x), np.flip(x))
    _check(fnp.roll(x, -5), np.roll(x, -5))
    _check(fnp.roll(x, (1, 2), axis=(0, 2)), np.roll(x, (1, 2), axis=(0, 2)))
    assert fnp.atleast_1d(1.0).shape == (1,) and fnp.atleast_2d(np.ones(3)).shape == (1, 3)
    assert fnp.atleast_3d(np.ones((2, 3))).shape == (2, 3, 1)
    assert fnp.shape(x) == (2, 3, 4) and fnp.ndim(x) == 3 and fnp.size(x) == 24


@pytest.mark.parametrize("pad_width", [1, (1, 2), ((0, 1), (2, 0), (1, 1))], ids=str)
@pytest.mark.parametrize("mode", ["constant", "edge", "wrap", "reflect"])
def test_pad_matches_numpy(mode, pad_width):
    x = _rand((3, 4, 5))
    kwargs = {"constant_values": 1.5} if mode == "constant" else {}
    _check(fnp.pad(x, pad_width, mode=mode, **kwargs), np.pad(x, pad_width, mode=mode, **kwargs))


# --- linear algebra ----------------------------------------------------------------------------

MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((2, 3), (5, 3, 4)), ((5, 1, 2, 3), (4, 3, 2)), ((0, 3), (3, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_and_dot(shapes):
    a, b = _rand(shapes[0]), _rand(shapes[1])
    _check(fnp.matmul(a, b), np.matmul(a, b), rtol=1e-4, atol=1e-5)
    _check(fnp.asarray(a) @ b, a @ b, rtol=1e-4, atol=1e-5)
    if len(shapes[1]) <= 2:
        _check(fnp.dot(a, b), np.dot(a, b), rtol=1e-4, atol=1e-5)


def test_other_products():
    a, b = _rand((2, 3, 4)), _rand((4, 3, 5))
    c = _rand((3, 4, 2))
    _check(fnp.dot(a, c), np.dot(a, c), rtol=1e-4, atol=1e-5)
    _check(fnp.tensordot(a, b, axes=([1, 2], [1, 0])), np.tensordot(a, b, axes=([1, 2], [1, 0])),
           rtol=1e-4, atol=1e-5)
    m, n = _rand((3, 4)), _rand((4, 2))
    _check(fnp.tensordot(m, n, axes=1), np.tensordot(m, n, axes=1), rtol=1e-4, atol=1e-5)
    v, w = _rand((4,)), _rand((4,))
    _check(fnp.vdot(v, w), np.vdot(v, w), rtol=1e-5)
    c = _rand((6, 4))
    _check(fnp.inner(a, c), np.inner(a, c), rtol=1e-4, atol=1e-5)
    _check(fnp.outer(v, w), np.outer(v, w))
    _check(fnp.dot(2.0, v), 2.0 * v)


EINSUM_CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ii", [(3, 3)]), ("ii->i", [(3, 3)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i,j->ij", [(3,), (4,)]), ("ij->", [(3, 4)]), ("ijk,kj,i->", [(2, 3, 4), (4, 3), (2,)]),
    ("ij,jk,kl->li", [(2, 3), (3, 4), (4, 5)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("i,i", [(3,), (3,)]), ("ji", [(2, 3)]), ("ij,ij->i", [(2, 3), (2, 3)]),
    ("b...,...->...b", [(2, 3, 4), (3, 4)]),
]


@pytest.mark.parametrize("subscripts,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_matches_numpy(subscripts, shapes):
    operands = [_rand(s) for s in shapes]
    _check(fnp.einsum(subscripts, *operands), np.einsum(subscripts, *operands), rtol=1e-4,
           atol=1e-5)


def test_einsum_errors():
    with pytest.raises(ValueError, match="operands"):
        fnp.einsum("ij,jk->ik", np.ones((2, 3)))
    with pytest.raises(ValueError, match="sizes"):
        fnp.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((4, 2)))


NORM_CASES = [
    ((5,), None, None), ((5,), 1, None), ((5,), np.inf, None), ((5,), -np.inf, None),
    ((5,), 0, None), ((5,), 3, None), ((3, 4), None, None), ((3, 4), "fro", None),
    ((3, 4), 1, None), ((3, 4), np.inf, None), ((3, 4), -1, None), ((2, 3, 4), None, 1),
    ((2, 3, 4), 2, -1), ((2, 3, 4), "fro", (0, 2)), ((2, 3, 4), np.inf, (2, 1)),
]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,ord,axis", NORM_CASES, ids=str)
def test_norm_matches_numpy(shape, ord, axis, keepdims):
    x = _rand(shape)
    _check(fnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims),
           np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims), rtol=1e-5)


# --- indexing helpers ----------------------------------------------------------------------------


def test_take_and_take_along_axis():
    x = _rand((3, 4, 5))
    idx = np.array([[0, -1], [2, 1]])
    for axis in (None, 0, 1, -1):
        _check(fnp.take(x, idx, axis=axis), np.take(x, idx, axis=axis))
    order = np.argsort(x, axis=1)
    _check(fnp.take_along_axis(x, order, axis=1), np.take_along_axis(x, order, axis=1))
    first = np.zeros((3, 1, 5), np.int64)
    _check(fnp.take_along_axis(x, first, axis=1), np.take_along_axis(x, first, axis=1))
    _check(fnp.take_along_axis(x, np.array([[[1]]]), axis=2),
           np.take_along_axis(x, np.broadcast_to(np.array([[[1]]]), (3, 4, 1)), axis=2))


# --- gradients through fnp ------------------------------------------------------------------------


def test_gradients_through_numpy_functions():
    x = fnp.array([0.3, -1.2, 2.0, 0.7])
    g = flamefx.grad(lambda v: fnp.sum(fnp.hypot(v, 1.0) + fnp.sinh(v) * fnp.arctan(v)))(x)
    v = np.asarray(x, np.float64)
    want = v / np.hypot(v, 1) + np.cosh(v) * np.arctan(v) + np.sinh(v) / (1 + v * v)
    _check(g, want, rtol=1e-4)
    g = flamefx.grad(lambda v: fnp.logsumexp(v * 100.0))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    _check(g, 100 * np.exp(100 * v - np.log(np.sum(np.exp(100 * v - 200))) - 200), rtol=1e-4)
    g = flamefx.grad(lambda v: fnp.sum(fnp.where(v > 0, fnp.sqrt(fnp.abs(v)), 0.0)))(x)
    _check(g, np.where(v > 0, 0.5 / np.sqrt(np.abs(v)), 0.0), rtol=1e-4)
    g = flamefx.grad(lambda v: fnp.linalg.norm(v))(x)
    _check(g, v / np.linalg.norm(v), rtol=1e-5)


def test_numpy_functions_under_jit_and_vmap():
    x = _rand((4, 3))

    def f(v):
        return fnp.einsum("i,i->", v, v) + fnp.mean(v[::-1] * 2) + fnp.max(fnp.cumsum(v))

    want = np.stack([np.dot(r, r) + np.mean(r[::-1] * 2) + np.max(np.cumsum(r)) for r in x])
    _check(flamefx.vmap(f)(x), want, rtol=1e-5)
    if hasattr(flamefx, "jit"):
        _check(flamefx.jit(flamefx.vmap(f))(x), want, rtol=1e-5)
