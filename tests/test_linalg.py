"""flamefx.numpy.linalg, flamefx.scipy.linalg and flamefx.lax.linalg: values against NumPy /
SciPy in float64, gradients to order 2 (check_grads, both modes), jit and vmap, singular
input (NaN/inf, no exception) and bad shapes (flamefx errors naming shapes and the line).

The primitives themselves are checked by the registry suite (tests/samples/factorizations.py).
"""

import shutil

import numpy as np
import pytest
import scipy.linalg

import flamefx
import flamefx.numpy as fnp
from flamefx import config
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError
from flamefx.scipy import linalg as fsl
from flamefx.test_util import check_grads
from tests.emulated_kernels import EMULATOR, compile_kernel, run_kernel

RNG = np.random.default_rng(20)


@pytest.fixture(autouse=True)
def _x64():
    with config.override("enable_x64", True):
        yield


def _orthogonal(n):
    q, r = np.linalg.qr(RNG.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _general(m, n, values=None):
    """A well-conditioned m x n matrix with distinct singular values."""
    k = min(m, n)
    values = np.linspace(3.0, 1.0, k) if values is None else np.asarray(values)
    return (_orthogonal(m)[:, :k] * values) @ _orthogonal(n)[:, :k].T


def _spd(n):
    q = _orthogonal(n)
    return (q * np.linspace(1.0, 3.0, n)) @ q.T


def _symmetric(n):
    q = _orthogonal(n)
    return (q * np.linspace(-2.0, 3.0, n)) @ q.T


A = _general(3, 3)
SPD = _spd(3)
SYM = _symmetric(3)
TALL = _general(4, 3)
B = RNG.standard_normal((3, 2))
VEC = RNG.standard_normal(3)


def _close(actual, expected, tol=1e-9):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


# --- values against NumPy / SciPy --------------------------------------------------------------

VALUE_CASES = [
    ("solve matrix", lambda: fnp.linalg.solve(A, B), lambda: np.linalg.solve(A, B)),
    ("solve vector", lambda: fnp.linalg.solve(A, VEC), lambda: np.linalg.solve(A, VEC)),
    ("solve batched", lambda: fnp.linalg.solve(np.stack([A, SPD]), B),
     lambda: np.linalg.solve(np.stack([A, SPD]), B)),
    ("inv", lambda: fnp.linalg.inv(A), lambda: np.linalg.inv(A)),
    ("det", lambda: fnp.linalg.det(A), lambda: np.linalg.det(A)),
    ("det batched", lambda: fnp.linalg.det(np.stack([A, -SPD])),
     lambda: np.linalg.det(np.stack([A, -SPD]))),
    ("slogdet", lambda: tuple(fnp.linalg.slogdet(-A)), lambda: tuple(np.linalg.slogdet(-A))),
    ("cholesky", lambda: fnp.linalg.cholesky(SPD), lambda: np.linalg.cholesky(SPD)),
    ("cholesky upper", lambda: fnp.linalg.cholesky(SPD, upper=True),
     lambda: np.linalg.cholesky(SPD).T),
    ("eigvalsh", lambda: fnp.linalg.eigvalsh(SYM), lambda: np.linalg.eigvalsh(SYM)),
    ("eigh values", lambda: fnp.linalg.eigh(SYM, UPLO="U").eigenvalues,
     lambda: np.linalg.eigh(SYM, UPLO="U").eigenvalues),
    ("svdvals", lambda: fnp.linalg.svdvals(TALL), lambda: np.linalg.svd(TALL, compute_uv=False)),
    ("svd hermitian values", lambda: fnp.linalg.svd(SYM, hermitian=True).S,
     lambda: np.linalg.svd(SYM, hermitian=True).S),
    ("qr r", lambda: fnp.abs(fnp.linalg.qr(TALL, mode="r")),
     lambda: np.abs(np.linalg.qr(TALL, mode="r"))),
    ("lstsq", lambda: fnp.linalg.lstsq(TALL, RNG.standard_normal(4) * 0 + 1.0)[0],
     lambda: np.linalg.lstsq(TALL, np.ones(4), rcond=None)[0]),
    ("pinv", lambda: fnp.linalg.pinv(TALL), lambda: np.linalg.pinv(TALL)),
    ("pinv hermitian", lambda: fnp.linalg.pinv(SYM, hermitian=True),
     lambda: np.linalg.pinv(SYM, hermitian=True)),
    ("matrix_power 3", lambda: fnp.linalg.matrix_power(A, 3),
     lambda: np.linalg.matrix_power(A, 3)),
    ("matrix_power -2", lambda: fnp.linalg.matrix_power(A, -2),
     lambda: np.linalg.matrix_power(A, -2)),
    ("matrix_power 0", lambda: fnp.linalg.matrix_power(A, 0), lambda: np.eye(3)),
    ("matrix_rank", lambda: fnp.linalg.matrix_rank(np.outer(VEC, VEC)),
     lambda: np.linalg.matrix_rank(np.outer(VEC, VEC))),
    ("cond", lambda: fnp.linalg.cond(A), lambda: np.linalg.cond(A)),
    ("cond fro", lambda: fnp.linalg.cond(A, "fro"), lambda: np.linalg.cond(A, "fro")),
    ("cond -2", lambda: fnp.linalg.cond(A, -2), lambda: np.linalg.cond(A, -2)),
    ("tensorsolve", lambda: fnp.linalg.tensorsolve(_general(6, 6).reshape(2, 3, 6),
                                                   np.arange(6.0).reshape(2, 3)), None),
    ("tensorinv", lambda: fnp.linalg.tensorinv(_general(6, 6).reshape(6, 2, 3), ind=1), None),
    ("multi_dot", lambda: fnp.linalg.multi_dot([VEC, A, B]),
     lambda: np.linalg.multi_dot([VEC, A, B])),
    ("vecdot", lambda: fnp.linalg.vecdot(A, VEC), lambda: A @ VEC),
    ("diagonal", lambda: fnp.linalg.diagonal(TALL, offset=-1),
     lambda: np.diagonal(TALL, -1, -2, -1)),
    ("trace", lambda: fnp.linalg.trace(TALL, offset=1), lambda: np.trace(TALL, 1)),
    ("cross", lambda: fnp.linalg.cross(A, B[:, 0][::-1].copy() * np.ones((3, 1))),
     lambda: np.cross(A, B[:, 0][::-1] * np.ones((3, 1)))),
    ("matrix_transpose", lambda: fnp.linalg.matrix_transpose(TALL), lambda: TALL.T),
    ("outer", lambda: fnp.linalg.outer(VEC, VEC), lambda: np.outer(VEC, VEC)),
    ("tensordot", lambda: fnp.linalg.tensordot(A, B, axes=1), lambda: A @ B),
    ("matmul", lambda: fnp.linalg.matmul(A, B), lambda: A @ B),
    ("vector_norm axes", lambda: fnp.linalg.vector_norm(TALL, axis=(0, 1), ord=3),
     lambda: np.sum(np.abs(TALL) ** 3) ** (1 / 3)),
    ("vector_norm keepdims", lambda: fnp.linalg.vector_norm(TALL, ord=1, keepdims=True),
     lambda: np.sum(np.abs(TALL)).reshape(1, 1)),
    ("scipy solve_triangular trans", lambda: fsl.solve_triangular(A, B, trans="T", lower=True),
     lambda: scipy.linalg.solve_triangular(A, B, trans="T", lower=True)),
    ("scipy solve_triangular vector unit", lambda: fsl.solve_triangular(A, VEC,
                                                                        unit_diagonal=True),
     lambda: scipy.linalg.solve_triangular(A, VEC, unit_diagonal=True)),
    ("scipy cholesky upper", lambda: fsl.cholesky(SPD), lambda: scipy.linalg.cholesky(SPD)),
    ("scipy cho_solve", lambda: fsl.cho_solve(fsl.cho_factor(SPD), B),
     lambda: scipy.linalg.cho_solve(scipy.linalg.cho_factor(SPD), B)),
    ("scipy cho_solve lower vector", lambda: fsl.cho_solve(fsl.cho_factor(SPD, lower=True), VEC),
     lambda: scipy.linalg.cho_solve(scipy.linalg.cho_factor(SPD, lower=True), VEC)),
    ("scipy lu_factor", lambda: fsl.lu_factor(A), lambda: scipy.linalg.lu_factor(A)),
    ("scipy lu_solve", lambda: fsl.lu_solve(fsl.lu_factor(A), B),
     lambda: scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), B)),
    ("scipy lu_solve trans", lambda: fsl.lu_solve(fsl.lu_factor(A), VEC, trans=1),
     lambda: scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), VEC, trans=1)),
    ("scipy lu", lambda: fsl.lu(TALL), lambda: scipy.linalg.lu(TALL)),
    ("scipy lu wide permute_l", lambda: fsl.lu(TALL.T, permute_l=True),
     lambda: scipy.linalg.lu(TALL.T, permute_l=True)),
    ("scipy solve gen", lambda: fsl.solve(A, VEC), lambda: scipy.linalg.solve(A, VEC)),
    ("scipy solve pos", lambda: fsl.solve(SPD, B, assume_a="pos"),
     lambda: scipy.linalg.solve(SPD, B, assume_a="pos")),
    ("scipy inv", lambda: fsl.inv(A), lambda: scipy.linalg.inv(A)),
    ("scipy det", lambda: fsl.det(A), lambda: scipy.linalg.det(A)),
    ("scipy eigh values", lambda: fsl.eigh(SYM, eigvals_only=True),
     lambda: scipy.linalg.eigh(SYM, eigvals_only=True)),
    ("scipy svd values", lambda: fsl.svd(TALL, compute_uv=False),
     lambda: scipy.linalg.svd(TALL, compute_uv=False)),
    ("scipy qr r", lambda: fnp.abs(fsl.qr(TALL, mode="r")[0]),
     lambda: np.abs(scipy.linalg.qr(TALL, mode="r")[0])),
    ("scipy expm small", lambda: fsl.expm(0.01 * A), lambda: scipy.linalg.expm(0.01 * A)),
    ("scipy expm", lambda: fsl.expm(A), lambda: scipy.linalg.expm(A)),
    ("scipy expm squaring", lambda: fsl.expm(20 * A), lambda: scipy.linalg.expm(20 * A)),
    ("scipy expm upper", lambda: fsl.expm(np.triu(A), upper_triangular=True),
     lambda: scipy.linalg.expm(np.triu(A))),
    ("scipy expm batched", lambda: fsl.expm(np.stack([A, 3 * SPD])),
     lambda: np.stack([scipy.linalg.expm(A), scipy.linalg.expm(3 * SPD)])),
    ("scipy block_diag", lambda: fsl.block_diag(A, VEC, 2.0),
     lambda: scipy.linalg.block_diag(A, VEC, 2.0)),
]


@pytest.mark.parametrize("name,ours,reference", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_match_numpy_and_scipy(name, ours, reference):
    got = ours()
    if reference is None:
        return
    expected = reference()
    if isinstance(expected, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            _close(g, e, 1e-7)
    else:
        _close(got, expected, 1e-7)


def test_tensorsolve_and_tensorinv_invert_tensordot():
    a = _general(6, 6).reshape(2, 3, 6)
    x = fnp.linalg.tensorsolve(a, np.arange(6.0).reshape(2, 3))
    _close(np.tensordot(a, np.asarray(x), axes=1), np.arange(6.0).reshape(2, 3))
    t = _general(6, 6).reshape(6, 2, 3)
    _close(np.tensordot(np.asarray(fnp.linalg.tensorinv(t, ind=1)), t, axes=1),
           np.eye(6).reshape(2, 3, 2, 3))


def test_decompositions_reconstruct_their_input():
    u, s, vh = fnp.linalg.svd(TALL, full_matrices=False)
    _close((np.asarray(u) * np.asarray(s)) @ np.asarray(vh), TALL)
    u, s, vh = fnp.linalg.svd(SYM, hermitian=True)
    _close((np.asarray(u) * np.asarray(s)) @ np.asarray(vh), SYM)
    w, v = fnp.linalg.eigh(SYM)
    _close((np.asarray(v) * np.asarray(w)) @ np.asarray(v).T, SYM)
    q, r = fnp.linalg.qr(TALL, mode="complete")
    _close(np.asarray(q) @ np.asarray(r), TALL)
    _close(np.asarray(q).T @ np.asarray(q), np.eye(4))
    p, l, u = fsl.lu(A)
    _close(np.asarray(p) @ np.asarray(l) @ np.asarray(u), A)
    q, r = fsl.qr(TALL, mode="economic")
    _close(np.asarray(q) @ np.asarray(r), TALL)


def test_norms_with_every_ord():
    x = RNG.standard_normal((2, 3, 4))
    for ord in (None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf):
        _close(fnp.linalg.norm(x, ord=ord, axis=(1, 2)), np.linalg.norm(x, ord=ord, axis=(1, 2)))
        _close(fnp.linalg.norm(x, ord=ord, axis=(2, 0), keepdims=True),
               np.linalg.norm(x, ord=ord, axis=(2, 0), keepdims=True))
        _close(fnp.linalg.matrix_norm(x, ord=ord or "fro"),
               np.linalg.norm(x, ord=ord, axis=(-2, -1)))
    for ord in (None, 1, 2, 3.5, 0, np.inf, -np.inf):
        _close(fnp.linalg.norm(x[0, 0], ord=ord), np.linalg.norm(x[0, 0], ord=ord))
        _close(fnp.linalg.vector_norm(x, axis=1, ord=2 if ord is None else ord),
               np.linalg.norm(x, axis=1, ord=ord))


# --- gradients (order 2, both modes) -----------------------------------------------------------

GRAD_CASES = [
    ("solve", lambda a, b: fnp.linalg.solve(a, b), (A, B)),
    ("inv", fnp.linalg.inv, (A,)),
    ("det", fnp.linalg.det, (A,)),
    ("det 5x5 batched", fnp.linalg.det, (np.stack([_general(5, 5), -_general(5, 5)]),)),
    ("slogdet", lambda a: fnp.linalg.slogdet(a).logabsdet, (-A,)),
    ("cholesky", fnp.linalg.cholesky, (SPD,)),
    ("eigh", lambda a: (fnp.linalg.eigh(a).eigenvalues, fnp.linalg.eigh(a).eigenvectors), (SYM,)),
    ("eigvalsh", fnp.linalg.eigvalsh, (SYM,)),
    ("svd", lambda a: tuple(fnp.linalg.svd(a, full_matrices=False)), (TALL,)),
    ("svdvals", fnp.linalg.svdvals, (TALL.T,)),
    ("svd hermitian", lambda a: tuple(fnp.linalg.svd(a, hermitian=True)), (SYM,)),
    ("qr", lambda a: tuple(fnp.linalg.qr(a)), (TALL,)),
    ("lstsq", lambda a, b: fnp.linalg.lstsq(a, b)[0], (TALL, RNG.standard_normal((4, 2)))),
    ("pinv", fnp.linalg.pinv, (TALL,)),
    ("matrix_power", lambda a: fnp.linalg.matrix_power(a, -3), (A,)),
    ("norm 2 and nuc", lambda a: (fnp.linalg.norm(a, 2), fnp.linalg.norm(a, "nuc")), (TALL,)),
    ("cond", fnp.linalg.cond, (A,)),
    ("tensorsolve", lambda a, b: fnp.linalg.tensorsolve(a, b),
     (_general(6, 6).reshape(2, 3, 6), RNG.standard_normal((2, 3)))),
    ("multi_dot", lambda a, b: fnp.linalg.multi_dot([a, b, a]), (A, A.T)),
    ("solve_triangular", lambda a, b: fsl.solve_triangular(a, b, trans=1, lower=True),
     (A + 3 * np.eye(3), B)),
    ("cho_solve", lambda a, b: fsl.cho_solve(fsl.cho_factor(a), b), (SPD, B)),
    ("solve pos", lambda a, b: fsl.solve(a, b, assume_a="pos", lower=True), (SPD, VEC)),
    ("lu_solve", lambda a, b: fsl.lu_solve(fsl.lu_factor(a), b, trans=1), (A, B)),
    ("lu", lambda a: fsl.lu(a)[1:], (TALL,)),
    ("expm", fsl.expm, (A,)),
    ("expm squaring", fsl.expm, (8 * A,)),
    ("block_diag", lambda a, b: fsl.block_diag(a, b), (A, B)),
]


@pytest.mark.parametrize("name,fn,args", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_order_2(name, fn, args):
    check_grads(fn, args, order=2, modes=("fwd", "rev"))


def test_cholesky_and_eigh_gradients_are_symmetric_as_in_jax():
    # The numpy-level functions symmetrize their input, so a gradient splits evenly.
    g = flamefx.grad(lambda a: fnp.sum(fnp.linalg.cholesky(a) ** 2))(SPD)
    _close(g, np.asarray(g).T)
    g = flamefx.grad(lambda a: fnp.linalg.eigvalsh(a)[-1])(SYM)
    v = np.linalg.eigh(SYM)[1][:, -1]
    _close(g, np.outer(v, v))  # d lambda_max / dA = v v^T


# --- jit and vmap ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda a: fnp.linalg.solve(a, a[:, :1]), fnp.linalg.det, fnp.linalg.inv,
    lambda a: fnp.linalg.svd(a)[1], lambda a: fnp.linalg.eigh(a + a.T)[1], fsl.expm,
    lambda a: fsl.lu_solve(fsl.lu_factor(a), a[0]), lambda a: fnp.linalg.norm(a, 2),
], ids=["solve", "det", "inv", "svd", "eigh", "expm", "lu_solve", "norm2"])
def test_jit_and_vmap_match_eager(fn):
    stack = np.stack([A, SPD, _general(3, 3)])
    eager = [np.asarray(fn(m)) for m in stack]
    _close(flamefx.jit(fn)(A), eager[0])
    _close(flamefx.vmap(fn)(stack), np.stack(eager))
    _close(flamefx.vmap(fn, in_axes=2)(np.moveaxis(stack, 0, 2)), np.stack(eager))


def test_per_example_gradients_of_logdet():
    stack = np.stack([SPD, 2 * SPD])
    grads = flamefx.vmap(flamefx.grad(lambda a: fnp.linalg.slogdet(a)[1]))(stack)
    _close(grads, np.stack([np.linalg.inv(SPD).T, np.linalg.inv(2 * SPD).T]))


# --- singular input and bad shapes -------------------------------------------------------------

SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])


def test_singular_input_gives_nan_or_inf_not_an_exception():
    assert not np.all(np.isfinite(np.asarray(fnp.linalg.solve(SINGULAR, np.ones(2)))))
    assert not np.all(np.isfinite(np.asarray(fnp.linalg.inv(SINGULAR))))
    assert float(fnp.linalg.det(SINGULAR)) == 0.0
    sign, logabsdet = fnp.linalg.slogdet(SINGULAR)
    assert float(sign) == 0.0 and float(logabsdet) == -np.inf
    nan_lower = np.where(np.tri(3, dtype=bool), np.nan, 0.0)  # JAX's failed factor
    np.testing.assert_array_equal(np.asarray(fnp.linalg.cholesky(-SPD)), nan_lower)
    batch = fnp.linalg.cholesky(np.stack([SPD, -SPD]))  # only the indefinite one fails
    _close(batch[0], np.linalg.cholesky(SPD))
    np.testing.assert_array_equal(np.asarray(batch[1]), nan_lower)
    assert float(fnp.linalg.det(np.zeros((0, 0)))) == 1.0  # the empty product
    assert not np.all(np.isfinite(np.asarray(
        fsl.solve_triangular(np.zeros((2, 2)), np.ones(2)))))
    assert float(fnp.linalg.cond(np.diag([1.0, 0.0]))) == np.inf
    assert float(fnp.linalg.cond(np.zeros((2, 2)))) == np.inf  # 0 / 0 is no NaN input
    assert int(fnp.linalg.matrix_rank(SINGULAR)) == 1
    _close(fnp.linalg.pinv(SINGULAR), np.linalg.pinv(SINGULAR))


def test_bad_shapes_raise_flamefx_errors_naming_shapes_and_line():
    with pytest.raises(FlamefxError, match=r"\(2, 3\)[\s\S]*test_linalg.py"):
        fnp.linalg.cholesky(np.ones((2, 3)))
    with pytest.raises(FlamefxTypeError, match=r"f64\[2,3\][\s\S]*test_linalg.py"):
        flamefx.lax.linalg.cholesky(np.ones((2, 3)))
    with pytest.raises(FlamefxTypeError, match=r"batch dims[\s\S]*test_linalg.py"):
        flamefx.lax.linalg.triangular_solve(np.ones((2, 3, 3)), np.ones((4, 3, 1)),
                                            left_side=True)
    with pytest.raises(FlamefxValueError, match=r"\(3, 3\)[\s\S]*test_linalg.py"):
        fnp.linalg.solve(np.eye(3), np.ones((2, 1)))
    with pytest.raises(FlamefxValueError, match="square"):
        fnp.linalg.det(np.ones((2, 3)))
    with pytest.raises(FlamefxValueError, match="qr"):
        flamefx.grad(lambda a: fnp.sum(fnp.linalg.qr(a)[0]))(TALL.T)  # m < n: no derivative
    with pytest.raises(FlamefxTypeError, match="float32 or float64"):
        flamefx.lax.linalg.lu(np.ones((2, 2), np.float16))


def test_integer_input_is_promoted_as_jax_does():
    with config.override("enable_x64", False):
        assert fnp.linalg.det(np.array([[2, 0], [0, 3]], np.int32)).dtype == np.float32
        assert fnp.linalg.inv(np.eye(2, dtype=np.int32)).dtype == np.float32
    assert fnp.linalg.matrix_power(np.eye(2, dtype=np.int32), 2).dtype == np.int32


def test_lax_linalg_is_importable_both_ways():
    import flamefx.lax.linalg as by_import
    from flamefx.lax import linalg as by_attribute
    assert by_import is by_attribute is flamefx.lax.linalg
    _, w = by_import.eigh(SYM)
    _close(w, np.linalg.eigvalsh(SYM))
    _close(by_import.lu_pivots_to_permutation(np.array([2, 2, 2], np.int32), 4), [2, 0, 1, 3])


def _cofactors(a):
    n = a.shape[0]
    return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(a, i, 0), j, 1))
                      for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("n,rank", [(2, 1), (3, 2), (4, 3), (4, 2), (5, 4)])
def test_det_gradient_is_the_cofactor_matrix_also_when_singular(n, rank):
    # JAX's rule: closed forms for 2x2 and 3x3, else tr(adj(a) da) through LU.
    a = RNG.standard_normal((n, rank)) @ RNG.standard_normal((rank, n))
    _close(flamefx.grad(fnp.linalg.det)(a), _cofactors(a), 1e-8)
    check_grads(fnp.linalg.det, (a,), order=1, modes=("fwd", "rev"))


def test_degenerate_eigenvalues_give_finite_gradients():
    # Gaps of 0 are masked (as JAX): the trace's gradient at the identity is the identity.
    _close(flamefx.grad(lambda a: fnp.sum(fnp.linalg.eigvalsh(a)))(np.eye(3)), np.eye(3))
    g = flamefx.grad(lambda a: fnp.sum(fnp.linalg.svdvals(a)))(np.eye(3))
    assert np.all(np.isfinite(np.asarray(g)))


# --- the GPU lu's pivots-to-permutation kernel, run on the CPU ---------------------------------

PIVOTS_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int batch = atoi(argv[2]), k = atoi(argv[3]), m = atoi(argv[4]);
  std::vector<int> pivots(batch * k), perms(batch * m);
  FILE* in = fopen((dir + "/in.bin").c_str(), "rb");
  if (fread(pivots.data(), sizeof(int), pivots.size(), in) != pivots.size()) return 1;
  fclose(in);
  launch(Dim3{(unsigned)((batch + 127) / 128), 1, 1}, Dim3{128, 1, 1},
         [&] { pivots_to_permutation(pivots.data(), perms.data(), batch, k, m); });
  FILE* out = fopen((dir + "/out.bin").c_str(), "wb");
  fwrite(perms.data(), sizeof(int), perms.size(), out);
  fclose(out);
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
def test_pivots_to_permutation_kernel_matches_numpy(tmp_path):
    from flamefx.primitives import factorizations
    batch, k, m = 130, 3, 5  # two blocks of 128 threads, the second mostly idle
    pivots = np.stack([RNG.integers(np.arange(k), m) for _ in range(batch)]).astype(np.int32)
    source = f'#include "{EMULATOR}"\n' + factorizations._PIVOTS_TO_PERMUTATION + PIVOTS_MAIN
    raw = run_kernel(compile_kernel(tmp_path, source), tmp_path, [batch, k, m], pivots.tobytes())
    got = np.frombuffer(raw, np.int32).reshape(batch, m)
    np.testing.assert_array_equal(got, factorizations.permutation_of_pivots(pivots, m))


# --- triangular_solve's batched cuBLAS path (trsmBatched on row-major buffers) ---------------

SOLVE_VARIANTS = [dict(left_side=s, lower=lo, transpose_a=t, unit_diagonal=u)
                  for s in (False, True) for lo in (False, True) for t in (False, True)
                  for u in (False, True)]


def _triangular_operands(batch, m, k, left_side, dtype=np.float64):
    """Full (both triangles) well-conditioned a and a b with k right-hand sides."""
    a = RNG.standard_normal((batch, m, m)) + 4 * np.eye(m)
    b = RNG.standard_normal((batch, m, k) if left_side else (batch, k, m))
    return a.astype(dtype), b.astype(dtype)


def _cublas_trsm_on_cpu(arguments, a, b):
    """What cuBLAS's column-major ``<t>trsm`` makes of the raw row-major buffers of one
    matrix ``a`` and ``b``, given ``trsm_arguments``; returns the buffer it leaves in b."""
    side, uplo, trans, diag, m, n, lda, ldb = arguments
    k = m if side == 0 else n  # A is k x k
    a_flat, b_flat = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel().copy()
    a_cm = a_flat[:lda * k].reshape(k, lda).T[:k]  # column j starts at j * lda
    b_cm = b_flat[:ldb * n].reshape(n, ldb).T[:m]
    x_cm = scipy.linalg.blas.dtrsm(1.0, np.asfortranarray(a_cm), np.asfortranarray(b_cm),
                                   side=side, lower=int(uplo == 0), trans_a=trans, diag=diag)
    b_flat.reshape(n, ldb).T[:m] = x_cm
    return b_flat.reshape(b.shape)


@pytest.mark.parametrize("flags", SOLVE_VARIANTS, ids=str)
def test_trsm_arguments_solve_row_major_buffers_as_the_numpy_impl(flags):
    from flamefx.primitives import factorizations
    a, b = _triangular_operands(1, 4, 3, flags["left_side"])
    want = np.asarray(flamefx.lax.linalg.triangular_solve(a, b, **flags))[0]
    arguments = factorizations.trsm_arguments(a.shape, b.shape, **flags)
    _close(_cublas_trsm_on_cpu(arguments, a[0], b[0]), want, tol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-12)])
def test_batched_triangular_solve_on_the_gpu_matches_the_cpu(dtype, tol):
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    for flags in SOLVE_VARIANTS:
        a, b = _triangular_operands(5, 6, 2, flags["left_side"], dtype)
        solve = flamefx.jit(lambda a, b, flags=flags: flamefx.lax.linalg.triangular_solve(
            a, b, **flags))
        on_gpu = solve(flamefx.device_put(a, gpu), flamefx.device_put(b, gpu))
        on_cpu = solve(flamefx.device_put(a, cpu), flamefx.device_put(b, cpu))
        assert on_gpu.device.platform == "gpu" and on_gpu.dtype == dtype, flags
        _close(on_gpu, on_cpu, tol=tol)
    # L1 of issue 20: cholesky, then two solves, on a stack of SPD matrices.
    x = RNG.standard_normal((64, 32, 32))
    spd = (x @ np.swapaxes(x, -1, -2) + 32 * np.eye(32)).astype(dtype)
    rhs = RNG.standard_normal((64, 32, 1)).astype(dtype)

    def cho_solve(a, b):
        factor = flamefx.lax.linalg.cholesky(a)
        y = flamefx.lax.linalg.triangular_solve(factor, b, left_side=True, lower=True)
        return flamefx.lax.linalg.triangular_solve(factor, y, left_side=True, lower=True,
                                                   transpose_a=True)
    on_gpu = flamefx.jit(cho_solve)(flamefx.device_put(spd, gpu), flamefx.device_put(rhs, gpu))
    _close(on_gpu, np.linalg.solve(spd.astype(np.float64), rhs.astype(np.float64)), tol=tol)


# --- svd of one matrix on the GPU (cuSOLVER gesvdj, as JAX) -----------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("m, n, full_matrices", [(512, 512, False), (300, 120, False),
                                                 (120, 300, False), (41, 40, True)])
def test_svd_of_one_matrix_on_the_gpu_matches_the_cpu(m, n, full_matrices):
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    a = _general(m, n)
    svd = flamefx.jit(lambda a: tuple(fnp.linalg.svd(a, full_matrices=full_matrices)))
    # float64: the sign-fixed vectors agree with LAPACK's (distinct singular values; a full
    # u of a 41x40 matrix has a one-column complement, unique up to the fixed sign).
    for g, c in zip(svd(flamefx.device_put(a, gpu)), svd(flamefx.device_put(a, cpu))):
        assert g.device.platform == "gpu"
        _close(g, c, tol=1e-8)
    # float32 (the benchmark's dtype): values and the reconstruction.
    u, s, vh = svd(flamefx.device_put(a.astype(np.float32), gpu))
    k = min(m, n)
    _close(s, np.linalg.svd(a, compute_uv=False), tol=1e-5)
    _close((np.asarray(u)[:, :k] * np.asarray(s)) @ np.asarray(vh)[:k], a, tol=1e-4)


def test_vecdot_conjugates_its_first_argument_as_numpy():
    z = np.array([1 + 2j, 3 - 1j], np.complex64)
    w = np.array([2 - 1j, 1 + 1j], np.complex64)
    expected = np.vecdot(z, w) if hasattr(np, "vecdot") else np.sum(np.conj(z) * w)
    np.testing.assert_allclose(np.asarray(fnp.linalg.vecdot(z, w)), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fnp.vecdot(z, w)), expected, rtol=1e-6)


def test_lax_eigh_sorts_ascending_and_keeps_a_subset_by_index():
    # JAX: sort_eigenvalues=True promises ascending eigenvalues; False leaves the order to
    # the backend, which is ascending on CPU/GPU. The spectrum is built unsorted.
    from flamefx.lax import linalg as lax_linalg
    q = _orthogonal(4)
    spectrum = np.array([2.5, -1.0, 4.0, 0.5])
    a = (q * spectrum) @ q.T
    for sort in (True, False):
        for fn in (lambda a, s=sort: lax_linalg.eigh(a, sort_eigenvalues=s),
                   flamefx.jit(lambda a, s=sort: lax_linalg.eigh(a, sort_eigenvalues=s))):
            v, w = (np.asarray(o) for o in fn(a))
            np.testing.assert_allclose(w, np.sort(spectrum), atol=1e-12)
            np.testing.assert_allclose(a @ v, v * w, atol=1e-12)
    stack = np.stack([a, (q * spectrum[::-1] * 2) @ q.T])
    v, w = flamefx.vmap(lambda a: lax_linalg.eigh(a, subset_by_index=(1, 3)))(stack)
    assert v.shape == (2, 4, 2) and w.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(w), [[0.5, 2.5], [1.0, 5.0]], atol=1e-12)
    v = np.asarray(v)
    np.testing.assert_allclose(stack @ v, v * np.asarray(w)[:, None, :], atol=1e-12)
    check_grads(lambda a: lax_linalg.eigh(a, subset_by_index=(2, 4))[1], (a,), order=2)
    with pytest.raises(FlamefxValueError, match=r"0 <= start < end <= 4, got \(3, 5\)"):
        lax_linalg.eigh(a, subset_by_index=(3, 5))
    with pytest.raises(FlamefxValueError, match="implementation 'jacobi'"):
        lax_linalg.eigh(a, implementation="jacobi")


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 3), (2, 3, 0), (0, 0)])
def test_empty_matrices_give_jax_shapes(shape):
    # Shapes and identity fills taken from jax 0.10.2.
    a = np.zeros(shape)
    m, n = shape[-2:]
    batch, k = shape[:-2], min(m, n)
    for svd in (fnp.linalg.svd, flamefx.jit(fnp.linalg.svd, static_argnums=1)):
        u, s, vh = svd(a, False)
        assert (u.shape, s.shape, vh.shape) == (batch + (m, k), batch + (k,), batch + (k, n))
        u, s, vh = svd(a, True)
        np.testing.assert_array_equal(np.asarray(u), np.broadcast_to(np.eye(m), batch + (m, m)))
        np.testing.assert_array_equal(np.asarray(vh), np.broadcast_to(np.eye(n), batch + (n, n)))
    grad = flamefx.grad(lambda a: fnp.linalg.svd(a, full_matrices=False)[0].sum())(a)
    assert grad.shape == shape
    assert fnp.linalg.pinv(a).shape == batch + (n, m)
    q, r = fnp.linalg.qr(a, mode="complete")
    np.testing.assert_array_equal(np.asarray(q), np.broadcast_to(np.eye(m), batch + (m, m)))
    assert r.shape == shape
    for ord in (2, 1, np.inf, "fro", "nuc"):
        np.testing.assert_array_equal(np.asarray(fnp.linalg.norm(a, ord, axis=(-2, -1))),
                                      np.zeros(batch))
    with pytest.raises(FlamefxValueError, match=r"cond: the matrix must not be empty"):
        fnp.linalg.cond(a)
    if not batch:
        b = np.full((m, 2), 1.5)
        x, resid, rank, s = fnp.linalg.lstsq(a, b)
        assert (x.shape, s.shape, int(rank)) == ((n, 2), (0,), 0)
        np.testing.assert_array_equal(np.asarray(x), np.zeros((n, 2)))
        np.testing.assert_allclose(np.asarray(resid), np.full(2, 2.25 * m))
