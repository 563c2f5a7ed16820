"""flamefx.scipy.linalg: jax.scipy.linalg on the factorization primitives — cholesky,
cho_factor, cho_solve, solve_triangular, lu, lu_factor, lu_solve, solve (assume_a 'gen'
or 'pos'), inv, det, eigh, svd, qr, expm (Pade with scaling and squaring, as JAX) and
block_diag.

As in JAX (and unlike SciPy), cho_factor returns a clean triangle (zeros in the other
one) and nothing checks for finite input; singular input gives inf/NaN, no exception.

>>> import numpy as np
>>> from flamefx.scipy import linalg
>>> linalg.solve_triangular(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([2.0, 3.0]),
...                         lower=True).tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import lax, lax_linalg
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy import decompositions
from flamefx.numpy.promotion import as_operand, broadcast_to, promote_dtypes_inexact


def _fnp():
    import flamefx.numpy as fnp
    return fnp


def _inexact(*xs):
    return promote_dtypes_inexact(*[as_operand(x) for x in xs])


def _square(a, who):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise FlamefxValueError(f"{who}: expected a (stack of) square matrices, got shape "
                                f"{a.shape}\n  at {user_frame()}")


def _left_solve_operands(a, b, who):
    """SciPy's rule (as JAX's): b is a vector when it has one dim fewer than a."""
    return decompositions.left_solve_operands(a, b, who, vector=b.ndim == a.ndim - 1)


# --- triangular and Cholesky solves ------------------------------------------------------------


def solve_triangular(a, b, trans=0, lower: bool = False, unit_diagonal: bool = False,
                     overwrite_b: bool = False, debug=None, check_finite: bool = True):
    """Solves ``op(a) @ x = b`` for triangular ``a`` (``trans``: 0/'N', 1/'T', 2/'C').

    >>> solve_triangular(np.array([[1.0, 1.0], [0.0, 2.0]]), np.array([3.0, 2.0])).tolist()
    [2.0, 1.0]
    """
    if trans not in (0, 1, 2, "N", "T", "C"):
        raise FlamefxValueError(f"solve_triangular: trans must be 0, 1, 2, 'N', 'T' or 'C', "
                                f"got {trans!r}")
    transpose_a = trans in (1, 2, "T", "C")
    a, b = _inexact(a, b)
    _square(a, "solve_triangular")
    a, b, vector = _left_solve_operands(a, b, "solve_triangular")
    x = lax_linalg.triangular_solve(a, b, left_side=True, lower=lower, transpose_a=transpose_a,
                                    unit_diagonal=unit_diagonal)
    return decompositions.unvector(x, vector)


def cholesky(a, lower: bool = False, overwrite_a: bool = False, check_finite: bool = True):
    """The Cholesky factor, upper by default (SciPy's convention): ``a = U^T U``. Reads only
    that triangle of ``a`` (no symmetrization, as JAX's scipy.linalg.cholesky).

    >>> cholesky(np.array([[4.0, 2.0], [2.0, 5.0]])).tolist()
    [[2.0, 1.0], [0.0, 2.0]]
    """
    a, = _inexact(a)
    _square(a, "cholesky")
    fnp = _fnp()
    if lower:
        return lax_linalg.cholesky(a, symmetrize_input=False)
    return fnp.swapaxes(lax_linalg.cholesky(fnp.swapaxes(a, -1, -2), symmetrize_input=False),
                        -1, -2)


def cho_factor(a, lower: bool = False, overwrite_a: bool = False, check_finite: bool = True):
    """``(c, lower)`` for ``cho_solve``: the Cholesky factor and which triangle it is.

    >>> c, lower = cho_factor(np.array([[4.0, 2.0], [2.0, 5.0]]), lower=True)
    >>> c.tolist()
    [[2.0, 0.0], [1.0, 2.0]]
    """
    return cholesky(a, lower=lower), lower


def cho_solve(c_and_lower, b, overwrite_b: bool = False, check_finite: bool = True):
    """Solves ``a @ x = b`` from ``cho_factor(a)``.

    >>> cho_solve(cho_factor(np.array([[4.0, 2.0], [2.0, 5.0]])), np.array([6.0, 7.0])).tolist()
    [1.0, 1.0]
    """
    c, lower = c_and_lower
    c, b = _inexact(c, b)
    _square(c, "cho_solve")
    c, b, vector = _left_solve_operands(c, b, "cho_solve")
    # a = L L^T: solve L y = b, then L^T x = y (for upper c = L^T: c^T y = b, c x = y).
    y = lax_linalg.triangular_solve(c, b, left_side=True, lower=lower, transpose_a=not lower)
    x = lax_linalg.triangular_solve(c, y, left_side=True, lower=lower, transpose_a=lower)
    return decompositions.unvector(x, vector)


# --- LU ----------------------------------------------------------------------------------------


def lu_factor(a, overwrite_a: bool = False, check_finite: bool = True):
    """``(lu, piv)``: packed LU factors and LAPACK's 0-based row swaps (int32).

    >>> lu_, piv = lu_factor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> piv.tolist()
    [1, 1]
    """
    a, = _inexact(a)
    lu, pivots, _ = lax_linalg.lu(a)
    return lu, pivots


def _permutation_matrix(permutation, dtype):
    """P with ``P @ x == x[permutation]`` (a one-hot float matrix per batch element)."""
    fnp = _fnp()
    m = permutation.shape[-1]
    return (fnp.expand_dims(permutation, -1) == fnp.arange(m, dtype=permutation.dtype)
            ).astype(dtype)


def lu_solve(lu_and_piv, b, trans: int = 0, overwrite_b: bool = False,
             check_finite: bool = True):
    """Solves ``op(a) @ x = b`` from ``lu_factor(a)`` (``trans`` 0: a, 1 or 2: a^T).

    >>> lu_solve(lu_factor(np.array([[1.0, 2.0], [3.0, 4.0]])), np.array([5.0, 11.0])).tolist()
    [1.0, 2.0]
    """
    if trans not in (0, 1, 2):
        raise FlamefxValueError(f"lu_solve: trans must be 0, 1 or 2, got {trans!r}")
    fnp = _fnp()
    lu, pivots = lu_and_piv
    lu, b = _inexact(lu, b)
    _square(lu, "lu_solve")
    permutation = lax_linalg.lu_pivots_to_permutation(as_operand(pivots), lu.shape[-1])
    lu, b, vector = _left_solve_operands(lu, b, "lu_solve")
    perm = _permutation_matrix(broadcast_to(permutation, lu.shape[:-1]), lu.dtype)
    if trans == 0:  # a = P^T L U
        y = lax_linalg.triangular_solve(lu, fnp.matmul(perm, b), left_side=True, lower=True,
                                        unit_diagonal=True)
        x = lax_linalg.triangular_solve(lu, y, left_side=True, lower=False)
    else:  # a^T = U^T L^T P
        y = lax_linalg.triangular_solve(lu, b, left_side=True, lower=False, transpose_a=True)
        y = lax_linalg.triangular_solve(lu, y, left_side=True, lower=True, transpose_a=True,
                                        unit_diagonal=True)
        x = fnp.matmul(fnp.swapaxes(perm, -1, -2), y)
    return decompositions.unvector(x, vector)


def lu(a, permute_l: bool = False, overwrite_a: bool = False, check_finite: bool = True):
    """``(p, l, u)`` with ``a = p @ l @ u`` (or ``(p @ l, u)`` with ``permute_l``); l is
    unit lower (m, k), u upper (k, n), k = min(m, n).

    >>> p, l, u = lu(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> (p @ l @ u).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    fnp = _fnp()
    a, = _inexact(a)
    packed, _, permutation = lax_linalg.lu(a)
    m, n = a.shape[-2:]
    k = min(m, n)
    lower = fnp.tril(packed[..., :, :k], -1) + fnp.eye(m, k, dtype=a.dtype)
    upper = fnp.triu(packed[..., :k, :])
    p = fnp.swapaxes(_permutation_matrix(permutation, a.dtype), -1, -2)
    if permute_l:
        return fnp.matmul(p, lower), upper
    return p, lower, upper


# --- solve, inv, det ---------------------------------------------------------------------------


def solve(a, b, lower: bool = False, overwrite_a: bool = False, overwrite_b: bool = False,
          debug: bool = False, check_finite: bool = True, assume_a: str = "gen"):
    """Solves ``a @ x = b``: through LU (``assume_a`` 'gen', 'sym', 'her') or Cholesky
    ('pos', reading the ``lower`` or upper triangle of ``a``, so its gradient with respect
    to ``a`` lands on that triangle). ``b`` is a vector when it has one dim fewer than a.

    >>> solve(np.array([[4.0, 2.0], [2.0, 5.0]]), np.array([6.0, 7.0]), assume_a="pos").tolist()
    [1.0, 1.0]
    """
    if assume_a not in ("gen", "sym", "her", "pos"):
        raise FlamefxValueError(f"solve: assume_a must be 'gen', 'sym', 'her' or 'pos', got "
                                f"{assume_a!r}")
    a, b = _inexact(a, b)
    _square(a, "solve")
    if assume_a == "pos":
        return cho_solve(cho_factor(a, lower=lower), b)
    a, b, vector = _left_solve_operands(a, b, "solve")
    return decompositions.unvector(decompositions.solve(a, b), vector)


def inv(a, overwrite_a: bool = False, check_finite: bool = True):
    """The inverse of a (stack of) square matrices.

    >>> inv(np.array([[2.0, 0.0], [0.0, 4.0]])).tolist()
    [[0.5, 0.0], [0.0, 0.25]]
    """
    return decompositions.inv(a)


def det(a, overwrite_a: bool = False, check_finite: bool = True):
    """The determinant (through LU).

    >>> det(np.array([[2.0, 0.0], [0.0, 3.0]])).item()
    6.0
    """
    return decompositions.det(a)


# --- eigh, svd, qr -----------------------------------------------------------------------------


def eigh(a, b=None, lower: bool = True, eigvals_only: bool = False, overwrite_a: bool = False,
         overwrite_b: bool = False, turbo: bool = True, eigvals=None, type: int = 1,
         check_finite: bool = True):
    """``(w, v)``: eigenvalues (ascending) and eigenvectors of a symmetric matrix, reading
    its ``lower`` (or upper) triangle after symmetrizing as JAX; ``w`` alone with
    ``eigvals_only``. The generalized problem (``b``) is not supported, as in JAX.

    >>> eigh(np.array([[2.0, 1.0], [1.0, 2.0]]), eigvals_only=True).tolist()
    [1.0, 3.0]
    """
    if b is not None or eigvals is not None or type != 1:
        raise FlamefxValueError("eigh: only the standard problem (b=None, eigvals=None, "
                                "type=1) is supported, as in JAX")
    a, = _inexact(a)
    _square(a, "eigh")
    v, w = lax_linalg.eigh(a, lower=lower)
    return w if eigvals_only else (w, v)


def svd(a, full_matrices: bool = True, compute_uv: bool = True, overwrite_a: bool = False,
        check_finite: bool = True, lapack_driver: str = "gesdd"):
    """``(u, s, vh)`` with ``a = u @ diag(s) @ vh`` (s descending), or ``s``.

    >>> svd(np.array([[0.0, 3.0], [2.0, 0.0]]), compute_uv=False).tolist()
    [3.0, 2.0]
    """
    result = decompositions.svd(a, full_matrices=full_matrices, compute_uv=compute_uv)
    return tuple(result) if compute_uv else result


def qr(a, overwrite_a: bool = False, lwork=None, mode: str = "full", pivoting: bool = False,
       check_finite: bool = True):
    """``(q, r)`` (mode 'full' or 'economic') or ``(r,)`` (mode 'r'), as SciPy and JAX.

    >>> q, r = qr(np.array([[3.0], [4.0]]), mode="economic")
    >>> abs(r[0, 0].item())
    5.0
    """
    if pivoting:
        raise FlamefxValueError("qr: pivoting=True is not supported by flamefx")
    if mode not in ("full", "economic", "r"):
        raise FlamefxValueError(f"qr: mode must be 'full', 'economic' or 'r', got {mode!r}")
    a, = _inexact(a)
    q, r = lax_linalg.qr(a, full_matrices=mode != "economic")
    return (r,) if mode == "r" else (q, r)


# --- expm: Pade approximants with scaling and squaring (JAX's algorithm) -----------------------

_PADE = {
    3: (120., 60., 12., 1.),
    5: (30240., 15120., 3360., 420., 30., 1.),
    7: (17297280., 8648640., 1995840., 277200., 25200., 1512., 56., 1.),
    9: (17643225600., 8821612800., 2075673600., 302702400., 30270240., 2162160., 110880.,
        3960., 90., 1.),
    13: (64764752532480000., 32382376266240000., 7771770303897600., 1187353796428800.,
         129060195264000., 10559470521600., 670442572800., 33522128640., 1323241920.,
         40840800., 960960., 16380., 182., 1.),
}
# Per dtype: the largest 1-norm for the top degree, the 1-norm bounds picking each lower
# degree, and the degrees (Higham 2005, as JAX and SciPy).
_PADE_PLAN = {
    np.dtype(np.float64): (5.371920351148152, (1.495585217958292e-002, 2.539398330063230e-001,
                                               9.504178996162932e-001, 2.097847961257068e+000),
                           (3, 5, 7, 9, 13)),
    np.dtype(np.float32): (3.925724783138660, (4.258730016922831e-001, 1.880152677804762e+000),
                           (3, 5, 7)),
}


def _pade(degree, a):
    """(U, V): the odd and even parts of the degree-``degree`` Pade numerator at ``a``."""
    fnp = _fnp()
    b = _PADE[degree]
    ident = fnp.eye(a.shape[-1], dtype=a.dtype)
    powers = [ident, fnp.matmul(a, a)]  # A^0, A^2, A^4, ...
    top = 3 if degree == 13 else degree // 2
    while len(powers) <= top:
        powers.append(fnp.matmul(powers[-1], powers[1]))
    if degree == 13:  # A^8 .. A^12 through A^6, as JAX
        a2, a4, a6 = powers[1], powers[2], powers[3]
        odd = fnp.matmul(a6, b[13] * a6 + b[11] * a4 + b[9] * a2) + (
            b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * ident)
        even = fnp.matmul(a6, b[12] * a6 + b[10] * a4 + b[8] * a2) + (
            b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * ident)
        return fnp.matmul(a, odd), even
    odd = sum(b[2 * i + 1] * powers[i] for i in range(len(powers)))
    even = sum(b[2 * i] * powers[i] for i in range(len(powers)))
    return fnp.matmul(a, odd), even


def _expm_matrix(a, upper_triangular, max_squarings):
    fnp = _fnp()
    maxnorm, bounds, degrees = _PADE_PLAN[a.dtype]
    norm_1 = fnp.max(fnp.sum(fnp.abs(a), axis=0))
    n_squarings = fnp.maximum(0, fnp.floor(fnp.log2(norm_1 / maxnorm)))
    scaled = a / (2 ** n_squarings).astype(a.dtype)
    degree_index = fnp.sum(norm_1 >= fnp.asarray(bounds, dtype=a.dtype)).astype(np.int32)
    odd, even = lax.switch(degree_index,
                           [functools.partial(_pade, d) for d in degrees], scaled)
    numerator, denominator = odd + even, even - odd
    if upper_triangular:
        r = solve_triangular(denominator, numerator)
    else:
        r = decompositions.solve(denominator, numerator)

    def square_while_needed(x, i):
        return lax.cond(i < n_squarings, lambda y: fnp.matmul(y, y), lambda y: y, x), None

    r, _ = lax.scan(square_while_needed, r, fnp.arange(max_squarings, dtype=a.dtype))
    # Past max_squarings the scaling cannot be undone: NaN, as in JAX.
    return fnp.where(n_squarings > max_squarings, np.nan, r)


def expm(A, *, upper_triangular: bool = False, max_squarings: int = 16):
    """The matrix exponential: Pade approximant (degree by the 1-norm, up to 13 in float64
    and 7 in float32) with scaling and squaring, as JAX; differentiable through those ops.

    >>> round(expm(np.array([[0.0, 1.0], [0.0, 0.0]]))[0, 1].item(), 6)
    1.0
    """
    fnp = _fnp()
    A, = _inexact(A)
    _square(A, "expm")
    if A.dtype not in _PADE_PLAN:
        raise FlamefxValueError(f"expm: A must be float32 or float64, got {A.dtype}")
    if A.ndim == 2:
        return _expm_matrix(A, upper_triangular, max_squarings)
    from flamefx.transforms.batching import vmap
    n = A.shape[-1]
    flat = fnp.reshape(A, (-1, n, n))
    out = vmap(lambda m: _expm_matrix(m, upper_triangular, max_squarings))(flat)
    return fnp.reshape(out, A.shape)


def block_diag(*arrs):
    """The block-diagonal matrix of the arrays (each made at least 2-d), as JAX.

    >>> block_diag(np.ones((1, 1)), 2 * np.ones((1, 2))).tolist()
    [[1.0, 0.0, 0.0], [0.0, 2.0, 2.0]]
    """
    fnp = _fnp()
    if not arrs:
        return fnp.zeros((1, 0))
    blocks = [fnp.atleast_2d(as_operand(a)) for a in arrs]
    bad = [b.shape for b in blocks if b.ndim != 2]
    if bad:
        raise FlamefxValueError(f"block_diag: arguments must be at most 2-d, got shapes {bad}"
                                f"\n  at {user_frame()}")
    dtype = fnp.result_type(*blocks)
    total_cols = sum(b.shape[1] for b in blocks)
    rows, col = [], 0
    for b in blocks:
        cols = b.shape[1]
        rows.append(fnp.pad(b.astype(dtype), ((0, 0), (col, total_cols - col - cols))))
        col += cols
    return fnp.concatenate(rows, axis=0)
