"""flamefx.lax.linalg: JAX's ``lax.linalg`` — the factorization primitives with JAX's
signatures (cholesky, triangular_solve, eigh, svd, qr, lu) and lu_pivots_to_permutation.

``flamefx/lax.py`` is a module, not a package, so this module lives beside it and lax.py
binds it as its attribute ``linalg`` (``from flamefx.lax import linalg`` and
``flamefx.lax.linalg.cholesky``). ``import flamefx.lax.linalg`` needs an entry in
``sys.modules`` under that dotted name as well, which this module registers for itself:
a package ``flamefx/lax/`` would have meant moving lax.py, which every engineer edits.

>>> import numpy as np
>>> from flamefx.lax import linalg
>>> linalg.cholesky(np.array([[4.0, 2.0], [2.0, 5.0]])).tolist()
[[2.0, 0.0], [1.0, 2.0]]
"""

from __future__ import annotations

import sys

import numpy as np

from flamefx import core, lax_extras
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.primitives import elementwise as ew
from flamefx.primitives import factorizations, spectral
from flamefx.primitives.factorizations import mT, triangular_solve  # noqa: F401 (re-export)

sys.modules.setdefault("flamefx.lax.linalg", sys.modules[__name__])


def symmetrize(x):
    """``(x + x^T) / 2`` over the last two axes.

    >>> symmetrize(np.array([[1.0, 2.0], [0.0, 1.0]])).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    x = core.ensure_array(x)
    return ew.mul(ew.add(x, mT(x)), ew.full_like(x, 0.5))


def cholesky(x, *, symmetrize_input: bool = True):
    """The lower Cholesky factor; NaN where ``x`` is not positive definite.

    >>> cholesky(np.array([[1.0, 0.0], [0.0, 9.0]])).tolist()
    [[1.0, 0.0], [0.0, 3.0]]
    """
    if symmetrize_input:
        x = symmetrize(x)
    return factorizations.cholesky(x)


def eigh(x, *, lower: bool = True, symmetrize_input: bool = True,
         sort_eigenvalues: bool = True, subset_by_index=None, implementation=None):
    """Eigenvectors and eigenvalues ``(v, w)`` of a symmetric matrix.

    ``w`` ascends: with ``sort_eigenvalues=True`` JAX promises it, and with ``False`` JAX
    leaves the order to the backend, which on the CPU (LAPACK syevd) and the GPU (cuSOLVER
    syevd / syevjBatched) is ascending too, as JAX's CPU/GPU lowering relies on. Unlike
    JAX on CPU/GPU (which accepts only the whole range), ``subset_by_index=(start, end)``
    keeps eigenpairs ``start..end-1`` of that ascending order. ``implementation`` may be
    None or ``"qr"`` (the LAPACK/cuSOLVER path; JAX's Jacobi and QDWH are TPU/GPU-only).

    >>> v, w = eigh(np.array([[2.0, 0.0], [0.0, 1.0]]))
    >>> w.tolist()
    [1.0, 2.0]
    >>> eigh(np.diag([3.0, 1.0, 2.0]), subset_by_index=(1, 3))[1].tolist()
    [2.0, 3.0]
    """
    if implementation is not None and str(getattr(implementation, "name", implementation)
                                          ).lower() != "qr":
        raise FlamefxValueError(f"eigh: implementation {implementation!r} is not supported by "
                                f"flamefx (only the QR path, None)\n  at {user_frame()}")
    if symmetrize_input:
        x = symmetrize(x)
    v, w = spectral.eigh(x, lower=lower, sort_eigenvalues=sort_eigenvalues)
    if subset_by_index is None:
        return v, w
    start, end = _eigen_subset(subset_by_index, core.get_aval(w).shape[-1])
    return (lax_extras.slice_in_dim(v, start, end, axis=-1),
            lax_extras.slice_in_dim(w, start, end, axis=-1))


def _eigen_subset(subset_by_index, n):
    """``(start, end)`` checked against ``n`` eigenvalues."""
    try:
        start, end = (int(i) for i in subset_by_index)
    except (TypeError, ValueError):
        start, end = -1, -1
    if not 0 <= start < end <= n:
        raise FlamefxValueError(f"eigh: subset_by_index must be (start, end) with "
                                f"0 <= start < end <= {n}, got {subset_by_index!r}\n  at "
                                f"{user_frame()}")
    return start, end


def svd(x, *, full_matrices: bool = True, compute_uv: bool = True, subset_by_index=None,
        algorithm=None):
    """``(u, s, vh)`` with ``x = u @ diag(s) @ vh``, or ``s`` without ``compute_uv``.

    >>> svd(np.array([[0.0, 2.0], [1.0, 0.0]]), compute_uv=False).tolist()
    [2.0, 1.0]
    """
    if subset_by_index is not None:
        raise FlamefxValueError("svd: subset_by_index is not supported by flamefx")
    return spectral.svd(x, full_matrices=full_matrices, compute_uv=compute_uv)


def qr(x, *, pivoting: bool = False, full_matrices: bool = True, use_magma=None):
    """``(q, r)`` with ``x = q @ r`` (Householder; ``pivoting`` is not supported).

    >>> q, r = qr(np.array([[0.0], [2.0]]), full_matrices=False)
    >>> abs(float(r[0, 0]))
    2.0
    """
    if pivoting:
        raise FlamefxValueError("qr: pivoting=True is not supported by flamefx")
    return factorizations.qr(x, full_matrices=full_matrices)


def lu(x):
    """``(lu, pivots, permutation)``: ``x[..., permutation, :] == L @ U``.

    >>> lu(np.array([[0.0, 1.0], [1.0, 0.0]]))[2].tolist()
    [1, 0]
    """
    return factorizations.lu(x)


def lu_pivots_to_permutation(pivots, permutation_size: int):
    """The row permutation that LAPACK's sequential swaps ``pivots`` (0-based, int32) make
    of ``range(permutation_size)``: one select per swap (pivots are short), no primitive.

    >>> lu_pivots_to_permutation(np.array([2, 2, 2], np.int32), 3).tolist()
    [2, 0, 1]
    """
    import flamefx.numpy as fnp
    pivots = core.ensure_array(pivots)
    if not np.issubdtype(pivots.dtype, np.integer) or pivots.ndim < 1:
        raise FlamefxTypeError(f"lu_pivots_to_permutation: pivots must be an integer array of "
                               f"at least 1 dim, got {pivots.aval.str_short()}\n  at "
                               f"{user_frame()}")
    batch = pivots.shape[:-1]
    positions = fnp.arange(permutation_size, dtype=pivots.dtype)
    permutation = fnp.broadcast_to(positions, batch + (permutation_size,))
    for i in range(pivots.shape[-1]):
        j = pivots[..., i:i + 1]
        at_i = permutation[..., i:i + 1]
        at_j = fnp.take_along_axis(permutation, j, axis=-1)
        permutation = fnp.where(positions == i, at_j, fnp.where(positions == j, at_i,
                                                                permutation))
    return permutation
