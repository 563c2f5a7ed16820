"""flamefx.numpy.linalg's factorizations and what is built on them: solve, inv, det,
slogdet, cholesky, eigh, eigvalsh, svd, svdvals, qr, lstsq, pinv, matrix_power,
matrix_rank, cond, tensorsolve, tensorinv. ``flamefx.numpy.linalg`` re-exports them.

Integer and bool inputs become the default float dtype (as jnp.linalg promotes);
float16/bfloat16 are refused by the primitives (LAPACK and cuSOLVER have no half
precision). Singular input gives NaN/inf (solve, inv) or 0/-inf (det, slogdet), never an
exception, as in JAX.

>>> import flamefx.numpy as fnp
>>> fnp.linalg.solve(fnp.array([[2.0, 0.0], [0.0, 4.0]]), fnp.array([2.0, 2.0])).tolist()
[1.0, 0.5]
"""

from __future__ import annotations

import collections
import math
import operator

import numpy as np

from flamefx import dtypes, lax, lax_linalg
from flamefx.transforms.custom import custom_jvp
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import (as_operand, broadcast_shapes, broadcast_to,
                                     promote_dtypes_inexact)

EighResult = collections.namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = collections.namedtuple("SVDResult", ["U", "S", "Vh"])
QRResult = collections.namedtuple("QRResult", ["Q", "R"])
SlogdetResult = collections.namedtuple("SlogdetResult", ["sign", "logabsdet"])


def _fnp():
    import flamefx.numpy as fnp
    return fnp


def _inexact(*xs):
    return promote_dtypes_inexact(*[as_operand(x) for x in xs])


def _check_matrix(a, who, square=False):
    if a.ndim < 2 or (square and a.shape[-1] != a.shape[-2]):
        kind = "a square matrix" if square else "a matrix"
        raise FlamefxValueError(f"{who}: the argument must be {kind} (or a stack of them) in "
                                f"its last two axes, got shape {a.shape}\n  at {user_frame()}")


def _swap(x):
    return _fnp().swapaxes(x, -1, -2)


def _eye_like(a):
    """Identity matrices with ``a``'s (square) shape and dtype."""
    n = a.shape[-1]
    return broadcast_to(_fnp().eye(n, dtype=a.dtype), a.shape)


# --- solve, inv, det, slogdet (through lu) -----------------------------------------------------


def left_solve_operands(a, b, who, *, vector):
    """``a`` and ``b`` of ``a @ x = b`` as matrix stacks with their batch dims broadcast
    together; a ``vector`` b (NumPy's and SciPy's rules differ: the caller says) becomes one
    column. scipy.linalg's solvers share it.

    >>> a, b, _ = left_solve_operands(np.eye(2), np.ones(2), "solve", vector=True)
    >>> b.shape
    (2, 1)
    """
    if vector:
        b = lax.reshape(b, b.shape + (1,))
    if b.ndim < 2 or b.shape[-2] != a.shape[-1]:
        raise FlamefxValueError(f"{who}: b of shape {b.shape[:-1] if vector else b.shape} does "
                                f"not fit a of shape {a.shape}\n  at {user_frame()}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return broadcast_to(a, batch + a.shape[-2:]), broadcast_to(b, batch + b.shape[-2:]), vector


def unvector(x, vector):
    """``x`` back to a vector stack where ``left_solve_operands`` made b a column.

    >>> unvector(np.ones((2, 1)), True).shape
    (2,)
    """
    return lax.reshape(x, x.shape[:-1]) if vector else x


def _lu_solve(lu, permutation, b):
    """Solves ``a x = b`` from a's lu factors; ``b`` (..., n, k) with lu's batch dims."""
    fnp = _fnp()
    rows = broadcast_to(fnp.expand_dims(permutation, -1), b.shape)
    pb = fnp.take_along_axis(b, rows, axis=-2)
    y = lax_linalg.triangular_solve(lu, pb, left_side=True, lower=True, unit_diagonal=True)
    return lax_linalg.triangular_solve(lu, y, left_side=True, lower=False)


def solve(a, b):
    """Solves ``a @ x = b``; ``b`` is a vector when 1-d (NumPy 2 and JAX), else a stack of
    matrices; batch dims broadcast. Singular ``a`` gives inf/NaN.

    >>> solve([[1.0, 1.0], [0.0, 2.0]], [3.0, 2.0]).tolist()
    [2.0, 1.0]
    """
    a, b = _inexact(a, b)
    _check_matrix(a, "solve", square=True)
    a, b, vector = left_solve_operands(a, b, "solve", vector=b.ndim == 1)
    lu, _, permutation = lax_linalg.lu(a)
    return unvector(_lu_solve(lu, permutation, b), vector)


def inv(a):
    """The inverse of a (stack of) square matrices; inf/NaN where singular.

    >>> inv([[2.0, 0.0], [0.0, 4.0]]).tolist()
    [[0.5, 0.0], [0.0, 0.25]]
    """
    a, = _inexact(a)
    _check_matrix(a, "inv", square=True)
    return solve(a, _eye_like(a))


def slogdet(a, *, method=None):
    """``(sign, logabsdet)`` of the determinant, through LU (JAX's default method).
    A singular matrix gives sign 0 and logabsdet -inf.

    >>> slogdet([[2.0, 0.0], [0.0, -3.0]]).sign.item()
    -1.0
    """
    if method not in (None, "lu"):
        raise FlamefxValueError(f"slogdet: method {method!r} is not supported (only 'lu')"
                                f"\n  at {user_frame()}")
    fnp = _fnp()
    a, = _inexact(a)
    _check_matrix(a, "slogdet", square=True)
    lu, pivots, _ = lax_linalg.lu(a)
    diag = fnp.diagonal(lu, 0, -2, -1)
    is_zero = fnp.any(diag == 0, axis=-1)
    swaps = fnp.sum(pivots != fnp.arange(a.shape[-1], dtype=pivots.dtype), axis=-1)
    parity = swaps + fnp.sum(diag < 0, axis=-1)
    sign = fnp.where(is_zero, 0, 1 - 2 * (parity % 2)).astype(a.dtype)
    logabsdet = fnp.where(is_zero, -np.inf, fnp.sum(fnp.log(fnp.abs(diag)), axis=-1))
    return SlogdetResult(sign, logabsdet.astype(a.dtype))


def _det_2x2(a):
    return a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]


def _det_3x3(a):
    def m(i, j):
        return a[..., i, j]
    return (m(0, 0) * m(1, 1) * m(2, 2) + m(0, 1) * m(1, 2) * m(2, 0)
            + m(0, 2) * m(1, 0) * m(2, 1) - m(0, 2) * m(1, 1) * m(2, 0)
            - m(0, 0) * m(1, 2) * m(2, 1) - m(0, 1) * m(1, 0) * m(2, 2))


def _cofactor_solve(a, b):
    """``(det(a), adj(a) @ b)``, finite also for singular ``a`` (JAX's _cofactor_solve).

    With a = P^T L U: rank n-1 leaves only U's last pivot 0, so that pivot is replaced by
    1 / (product of the others) and the other rows of L^-1 P b are scaled by det(a) (0);
    rank < n-1 gives adj(a) = 0, detected by U^-1 1 not being finite.
    """
    fnp = _fnp()
    n = a.shape[-1]
    if n == 1:
        return a[..., 0, 0], b
    lu, pivots, permutation = lax_linalg.lu(a)
    diag = fnp.diagonal(lu, 0, -2, -1)
    parity = fnp.sum(pivots != fnp.arange(n, dtype=pivots.dtype), axis=-1)
    sign = (1 - 2 * (parity % 2)).astype(a.dtype)
    partial_det = fnp.cumprod(diag, axis=-1) * fnp.expand_dims(sign, -1)
    corner = np.zeros((n, n), bool)
    corner[-1, -1] = True
    lu = fnp.where(corner, (1.0 / partial_det[..., -2])[..., None, None], lu)
    ones = fnp.ones(a.shape[:-1] + (1,), a.dtype)
    probe = lax_linalg.triangular_solve(lu, ones, left_side=True, lower=False)
    low_rank = fnp.any(~fnp.isfinite(probe), axis=(-2, -1))[..., None, None]
    x = fnp.where(low_rank, 0.0, b)
    rows = broadcast_to(fnp.expand_dims(permutation, -1), x.shape)
    x = lax_linalg.triangular_solve(lu, fnp.take_along_axis(x, rows, axis=-2), left_side=True,
                                    lower=True, unit_diagonal=True)
    x = fnp.concatenate([x[..., :-1, :] * partial_det[..., -1, None, None], x[..., -1:, :]],
                        axis=-2)
    x = lax_linalg.triangular_solve(lu, x, left_side=True, lower=False)
    return partial_det[..., -1], fnp.where(low_rank, 0.0, x)


def _det_through_lu(a):
    sign, logabsdet = slogdet(a)
    return sign * _fnp().exp(logabsdet)


_det_custom = custom_jvp(_det_through_lu)


@_det_custom.defjvp
def _det_jvp(primals, tangents):
    (a,), (t,) = primals, tangents
    det_a, adj_t = _cofactor_solve(a, t)
    return det_a, _fnp().trace(adj_t, axis1=-2, axis2=-1)  # Jacobi: tr(adj(a) da)


def det(a):
    """The determinant, as JAX computes it: closed forms for 2x2 and 3x3 matrices, else
    ``sign * exp(logabsdet)`` through LU with JAX's derivative tr(adj(a) da), which stays
    finite at singular matrices.

    >>> round(det([[1.0, 2.0], [3.0, 4.0]]).item(), 5)
    -2.0
    """
    a, = _inexact(a)
    _check_matrix(a, "det", square=True)
    if a.shape[-1] == 2:
        return _det_2x2(a)
    if a.shape[-1] == 3:
        return _det_3x3(a)
    return _det_custom(a)


# --- factorizations ----------------------------------------------------------------------------


def cholesky(a, *, upper: bool = False, symmetrize_input: bool = True):
    """The Cholesky factor: lower L with ``a = L @ L^T`` (or upper ``L^T`` with ``upper``).
    ``a`` is symmetrized first, as in JAX; NaN where it is not positive definite.

    >>> cholesky([[4.0, 2.0], [2.0, 5.0]]).tolist()
    [[2.0, 0.0], [1.0, 2.0]]
    """
    a, = _inexact(a)
    _check_matrix(a, "cholesky", square=True)
    factor = lax_linalg.cholesky(a, symmetrize_input=symmetrize_input)
    return _swap(factor) if upper else factor


def _lower(UPLO, who):
    if UPLO not in (None, "L", "U"):
        raise FlamefxValueError(f"{who}: UPLO must be 'L' or 'U', got {UPLO!r}\n  at "
                                f"{user_frame()}")
    return UPLO != "U"


def eigh(a, UPLO=None, symmetrize_input: bool = True):
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, as
    ``EighResult(eigenvalues, eigenvectors)``. Each eigenvector's largest-magnitude entry
    is positive (flamefx fixes the sign so CPU and GPU agree).

    >>> eigh([[2.0, 1.0], [1.0, 2.0]]).eigenvalues.tolist()
    [1.0, 3.0]
    """
    a, = _inexact(a)
    _check_matrix(a, "eigh", square=True)
    v, w = lax_linalg.eigh(a, lower=_lower(UPLO, "eigh"), symmetrize_input=symmetrize_input)
    return EighResult(w, v)


def eigvalsh(a, UPLO="L", *, symmetrize_input: bool = True):
    """The eigenvalues (ascending) of a symmetric matrix.

    >>> eigvalsh([[2.0, 0.0], [0.0, 1.0]]).tolist()
    [1.0, 2.0]
    """
    return eigh(a, UPLO, symmetrize_input).eigenvalues


def _hermitian_svd(a, compute_uv):
    """SVD of a symmetric matrix from its eigendecomposition: s = |w| in descending order
    (ranked by pairwise comparison: no sort needed), u the eigenvectors in that order."""
    fnp = _fnp()
    v, w = lax_linalg.eigh(a)
    s = fnp.abs(w)
    n = a.shape[-1]
    bigger = fnp.expand_dims(s, -2) > fnp.expand_dims(s, -1)  # [i, j]: |w_j| > |w_i|
    tie_before = (fnp.expand_dims(s, -2) == fnp.expand_dims(s, -1)) & (
        fnp.arange(n)[None, :] < fnp.arange(n)[:, None])
    rank = fnp.sum(bigger | tie_before, axis=-1)  # where |w_i| goes in descending order
    order = (fnp.expand_dims(rank, -2) == fnp.arange(n)[:, None]).astype(a.dtype)  # [r, i]
    s_sorted = fnp.sum(order * fnp.expand_dims(s, -2), axis=-1)
    if not compute_uv:
        return s_sorted
    u = fnp.matmul(v, _swap(order))
    signs = fnp.sum(order * fnp.expand_dims(fnp.sign(w), -2), axis=-1)
    return SVDResult(u, s_sorted, _swap(u * fnp.expand_dims(signs, -2)))


def svd(a, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False):
    """``SVDResult(U, S, Vh)`` with ``a = U @ diag(S) @ Vh`` and S descending (or S alone
    without ``compute_uv``); ``hermitian`` computes it from ``eigh``. Gradients need
    ``full_matrices=False`` for non-square input, as in JAX.

    >>> svd([[3.0, 0.0], [0.0, -4.0]], compute_uv=False).tolist()
    [4.0, 3.0]
    """
    a, = _inexact(a)
    _check_matrix(a, "svd")
    if hermitian:
        _check_matrix(a, "svd(hermitian=True)", square=True)
        return _hermitian_svd(a, compute_uv)
    if not compute_uv:
        return lax_linalg.svd(a, compute_uv=False)
    return SVDResult(*lax_linalg.svd(a, full_matrices=full_matrices))


def svdvals(x):
    """The singular values, descending.

    >>> svdvals([[0.0, 2.0], [1.0, 0.0]]).tolist()
    [2.0, 1.0]
    """
    return svd(x, compute_uv=False)


def qr(a, mode: str = "reduced"):
    """``QRResult(Q, R)`` (modes 'reduced', 'complete') or R alone (mode 'r'); Householder
    QR, so R's diagonal may be negative. Gradients need m >= n and mode 'reduced'.

    >>> abs(qr([[3.0], [4.0]], mode="r")[0, 0].item())
    5.0
    """
    a, = _inexact(a)
    _check_matrix(a, "qr")
    if mode not in ("reduced", "complete", "r"):
        raise FlamefxValueError(f"qr: mode must be 'reduced', 'complete' or 'r', got "
                                f"{mode!r}\n  at {user_frame()}")
    q, r = lax_linalg.qr(a, full_matrices=mode == "complete")
    return r if mode == "r" else QRResult(q, r)


# --- least squares and pseudo-inverse (through svd) --------------------------------------------


def lstsq(a, b, rcond=None, *, numpy_resid: bool = False):
    """The least-squares solution of ``a @ x = b`` through the SVD, as JAX: returns
    ``(x, resid, rank, s)``; singular values below ``rcond * s[0]`` count as zero (default
    rcond: eps * max(m, n)). ``resid`` is always computed (``numpy_resid=True``: empty
    where NumPy leaves it empty).

    >>> x, resid, rank, s = lstsq([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [1.0, 2.0, 3.0])
    >>> x.tolist(), int(rank)
    ([1.0, 2.0], 2)
    """
    fnp = _fnp()
    a, b = _inexact(a, b)
    if a.ndim != 2:
        raise FlamefxValueError(f"lstsq: a must be 2-d, got shape {a.shape}\n  at "
                                f"{user_frame()}")
    if b.ndim not in (1, 2) or a.shape[0] != b.shape[0]:
        raise FlamefxValueError(f"lstsq: b must be 1- or 2-d with a's {a.shape[0]} rows, got "
                                f"shapes {a.shape} and {b.shape}\n  at {user_frame()}")
    vector = b.ndim == 1
    if vector:
        b = b[:, None]
    m, n = a.shape
    eps = float(dtypes.finfo(a.dtype).eps)
    rcond = eps * max(m, n) if rcond is None else fnp.where(fnp.asarray(rcond) < 0, eps, rcond)
    u, s, vt = lax_linalg.svd(a, full_matrices=False)
    mask = s >= fnp.asarray(rcond, dtype=s.dtype) * s[:1]  # [:1]: s may be empty
    rank = fnp.sum(mask)
    s_inv = fnp.where(mask, 1 / fnp.where(mask, s, 1), 0)[:, None]
    x = fnp.matmul(vt.T, s_inv * fnp.matmul(u.T, b))
    if numpy_resid and (int(rank) < n or m <= n):
        resid = fnp.zeros((0,), a.dtype)
    else:
        resid = fnp.sum((b - fnp.matmul(a, x)) ** 2, axis=0)
    if vector:
        x, resid = x[:, 0], resid.reshape(-1)
    return x, resid, rank, s


def pinv(a, rtol=None, hermitian: bool = False, *, rcond=None):
    """The Moore-Penrose pseudo-inverse through the SVD: singular values at or below
    ``rtol * s_max`` (default 10 * max(m, n) * eps) count as zero. ``rcond`` is the older
    name of ``rtol``.

    >>> pinv([[2.0, 0.0], [0.0, 0.0]]).tolist()
    [[0.5, 0.0], [0.0, 0.0]]
    """
    fnp = _fnp()
    a, = _inexact(a)
    _check_matrix(a, "pinv")
    if rcond is not None:
        if rtol is not None:
            raise FlamefxValueError("pinv: give rtol or rcond, not both")
        rtol = rcond
    m, n = a.shape[-2:]
    if rtol is None:
        rtol = 10.0 * max(m, n) * float(dtypes.finfo(a.dtype).eps)
    u, s, vh = svd(a, full_matrices=False, hermitian=hermitian)
    rtol = fnp.asarray(rtol, dtype=s.dtype)
    cutoff = fnp.expand_dims(rtol, -1) * s[..., :1]
    s = fnp.where(s > cutoff, s, np.inf)
    return fnp.matmul(_swap(vh), _swap(u) / fnp.expand_dims(s, -1))


# --- powers, rank, condition number, tensor solves ---------------------------------------------


def matrix_power(a, n: int):
    """``a`` multiplied by itself ``n`` times (binary powering); ``n < 0`` inverts first,
    ``n == 0`` gives identities of ``a``'s dtype.

    >>> matrix_power([[1, 1], [0, 1]], 3).tolist()
    [[1, 3], [0, 1]]
    """
    fnp = _fnp()
    a = as_operand(a)
    _check_matrix(a, "matrix_power", square=True)
    n = operator.index(n)
    if n == 0:
        return _eye_like(a)
    if n < 0:
        a, n = inv(a), -n
    result = None
    while n:
        if n & 1:
            result = a if result is None else fnp.matmul(result, a)
        n >>= 1
        if n:
            a = fnp.matmul(a, a)
    return result


def matrix_rank(M, rtol=None, *, tol=None, hermitian: bool = False):
    """The number of singular values above a threshold. As in JAX, the default threshold is
    ``s_max * max(m, n) * eps`` and a given ``rtol`` (or ``tol``) is compared with the
    singular values as it is (an absolute threshold).

    >>> int(matrix_rank([[1.0, 0.0], [0.0, 0.0]]))
    1
    """
    fnp = _fnp()
    if tol is not None:
        if rtol is not None:
            raise FlamefxValueError("matrix_rank: give rtol or tol, not both")
        rtol = tol
    M, = _inexact(M)
    if M.ndim < 2:
        return fnp.any(M != 0).astype(dtypes.int32)
    s = svd(M, compute_uv=False, hermitian=hermitian)
    if rtol is None:
        rtol = fnp.max(s, axis=-1) * (max(M.shape[-2:]) * float(dtypes.finfo(s.dtype).eps))
    rtol = fnp.expand_dims(fnp.asarray(rtol, dtype=s.dtype), -1)
    return fnp.sum(s > rtol, axis=-1)


def cond(x, p=None):
    """The condition number in norm ``p`` (None/2/-2 through the singular values; 'fro',
    'nuc', 1, -1, inf, -inf through ``norm(x) * norm(inv(x))``); inf where x is singular.

    >>> cond([[2.0, 0.0], [0.0, 1.0]]).item()
    2.0
    """
    fnp = _fnp()
    x, = _inexact(x)
    _check_matrix(x, "cond")
    if 0 in x.shape[-2:]:
        raise FlamefxValueError(f"cond: the matrix must not be empty, got shape {x.shape}\n  at "
                                f"{user_frame()}")
    if p is None or p == 2:
        s = svd(x, compute_uv=False)
        r = s[..., 0] / s[..., -1]
    elif p == -2:
        s = svd(x, compute_uv=False)
        r = s[..., -1] / s[..., 0]
    else:
        _check_matrix(x, f"cond(p={p!r})", square=True)
        norm = fnp.linalg.norm
        r = norm(x, ord=p, axis=(-2, -1)) * norm(inv(x), ord=p, axis=(-2, -1))
    # NaN from a singular x (not from NaN input) means an infinite condition number.
    return fnp.where(fnp.isnan(r) & ~fnp.any(fnp.isnan(x), axis=(-2, -1)), np.inf, r)


def tensorsolve(a, b, axes=None):
    """Solves ``tensordot(a, x, axes=x.ndim) = b`` for x (``axes``: a's axes to move to
    the end first).

    >>> tensorsolve(np.eye(4).reshape(2, 2, 2, 2), np.ones((2, 2))).shape
    (2, 2)
    """
    fnp = _fnp()
    a, b = _inexact(a, b)
    if axes is not None:
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        a = fnp.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    out_shape = a.shape[b.ndim:]
    if a.shape[:b.ndim] != b.shape or math.prod(out_shape) != b.size:
        raise FlamefxValueError(f"tensorsolve: a of shape {a.shape} does not fit b of shape "
                                f"{b.shape}\n  at {user_frame()}")
    x = solve(a.reshape(b.size, math.prod(out_shape)), b.reshape(-1))
    return x.reshape(out_shape)


def tensorinv(a, ind: int = 2):
    """The inverse of ``a`` under ``tensordot(., ., ind)``: shape a.shape[ind:] +
    a.shape[:ind].

    >>> tensorinv(np.eye(4).reshape(4, 2, 2), ind=1).shape
    (2, 2, 4)
    """
    a, = _inexact(a)
    ind = operator.index(ind)
    if ind <= 0:
        raise FlamefxValueError(f"tensorinv: ind must be a positive integer, got {ind}")
    contracted, kept = a.shape[:ind], a.shape[ind:]
    rows, cols = math.prod(contracted), math.prod(kept)
    if rows != cols:
        raise FlamefxValueError(f"tensorinv: a of shape {a.shape} with ind={ind} is not "
                                f"square ({rows} x {cols})\n  at {user_frame()}")
    return inv(a.reshape(rows, cols)).reshape(kept + contracted)


__all__ = ["EighResult", "QRResult", "SVDResult", "SlogdetResult", "cholesky", "cond", "det",
           "eigh", "eigvalsh", "inv", "lstsq", "matrix_power", "matrix_rank", "pinv", "qr",
           "slogdet", "solve", "svd", "svdvals", "tensorinv", "tensorsolve"]
