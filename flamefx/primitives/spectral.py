"""Spectral factorizations: eigh (symmetric eigendecomposition) and svd.

Like factorizations.py: stacks of matrices, LAPACK through numpy.linalg on the CPU,
cuSOLVER through CuPy on the GPU (syevjBatched / gesvdjBatched for stacks; gesvdj for one
matrix's singular vectors, as JAX), JAX's derivative rules. One deliberate difference from
JAX: eigenvectors and singular vectors come with a fixed sign (each eigenvector / left
singular vector has its largest-magnitude entry positive; the right singular vector
follows), so that the CPU and the GPU return the same vectors. Eigenvalues come sorted
ascending, singular values descending.

>>> import numpy as np
>>> v, w = eigh(np.array([[2.0, 1.0], [1.0, 2.0]]))
>>> w.tolist()
[1.0, 3.0]
"""

from __future__ import annotations

import numpy as np

from flamefx import core
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxValueError
from flamefx.primitives import elementwise as ew
from flamefx.primitives.factorizations import (batch_to_front, check_matrix, cupy_modules,
                                               diag_matrix, diagonal, mm, mT, scale_columns,
                                               scale_rows, symmetric_tangent,
                                               triangle_cotangent)


def fix_signs(xp, vectors):
    """Flips each column so that its largest-magnitude entry is positive; returns the
    flipped columns and the signs (..., n) used."""
    biggest = xp.argmax(xp.abs(vectors), axis=-2)[..., None, :]
    pivot = xp.take_along_axis(vectors, biggest, axis=-2)[..., 0, :]
    signs = xp.where(pivot < 0, -1, 1).astype(vectors.dtype)
    return vectors * signs[..., None, :], signs


def _nan_on_failure(fn, a):
    """numpy's stacked call, or per matrix with NaN outputs where LAPACK does not converge
    (numpy raises for the whole stack; JAX returns NaN for the matrix that failed)."""
    try:
        return fn(a)
    except np.linalg.LinAlgError:
        flat = a.reshape((-1,) + a.shape[-2:])
        results = []
        for a1 in flat:
            try:
                results.append(fn(a1))
            except np.linalg.LinAlgError:
                results.append(tuple(np.full_like(o, np.nan) for o in fn(np.eye(*a1.shape))))
        return tuple(np.stack(outs).reshape(a.shape[:-2] + outs[0].shape)
                     for outs in zip(*results))


# --- eigh --------------------------------------------------------------------------------------


def _eigh_abstract(a, *, lower, sort_eigenvalues):
    check_matrix(a, square=True)
    return [ShapedArray(a.shape, a.dtype), ShapedArray(a.shape[:-1], a.dtype)]


def _eigh_impl(a, *, lower, sort_eigenvalues):
    if a.size == 0:
        return [np.zeros(a.shape, a.dtype), np.zeros(a.shape[:-1], a.dtype)]
    w, v = _nan_on_failure(lambda x: tuple(np.linalg.eigh(x, UPLO="L" if lower else "U")), a)
    v, _ = fix_signs(np, v)
    return [v.astype(a.dtype), w.astype(a.dtype)]


def _eigh_cuda(a, *, lower, sort_eigenvalues):
    cp, cupyx = cupy_modules()
    if a.size == 0:
        return [cp.zeros(a.shape, a.dtype), cp.zeros(a.shape[:-1], a.dtype)]
    # Rebuild the full symmetric matrix from the triangle we promise to read, so that the
    # result does not hang on which triangle cuSOLVER's row/column-major view reads.
    half = cp.tril(a) if lower else cp.triu(a)
    strict = cp.tril(a, -1) if lower else cp.triu(a, 1)
    a = half + cp.swapaxes(strict, -1, -2)
    with cupyx.errstate(linalg="ignore"):  # stacks go to syevjBatched; no info sync
        w, v = cp.linalg.eigh(a, UPLO="L")
    v, _ = fix_signs(cp, v)
    return [v.astype(a.dtype), w.astype(a.dtype)]


def _inverse_gaps(w):
    """F[i, j] = 1 / (w[j] - w[i]), 0 where the gap is 0 (the diagonal, degenerate pairs),
    as JAX masks degenerate eigenvalues."""
    aval = core.get_aval(w)
    n = aval.shape[-1]
    shape = aval.shape + (n,)
    nd = aval.ndim
    from flamefx.primitives import structural as st
    w_j = st.broadcast_in_dim(w, shape, tuple(range(nd - 1)) + (nd,))
    w_i = st.broadcast_in_dim(w, shape, tuple(range(nd)))
    gaps = ew.sub(w_j, w_i)
    zero, one = ew.full_like(gaps, 0), ew.full_like(gaps, 1)
    degenerate = ew.eq(gaps, zero)
    safe = ew.select_n(degenerate, gaps, one)
    return ew.select_n(degenerate, ew.div(one, safe), zero)


def _eigh_jvp(primals, tangents, *, lower, sort_eigenvalues):
    a, = primals
    v, w = eigh_p.bind(a, lower=lower, sort_eigenvalues=sort_eigenvalues)
    da = symmetric_tangent(tangents[0], lower)
    vt_da_v = mm(mT(v), mm(da, v))
    dv = mm(v, ew.mul(_inverse_gaps(w), vt_da_v))
    return [v, w], [dv, diagonal(vt_da_v)]


def _eigh_vjp(cts, primals, outs, *, lower, sort_eigenvalues):
    ct_v, ct_w = cts
    v, w = outs
    # The transpose of the JVP: G = V (F o (V^T ct_V) + diag(ct_w)) V^T.
    inner = []
    if ct_v is not None:
        inner.append(ew.mul(_inverse_gaps(w), mm(mT(v), ct_v)))
    if ct_w is not None:
        inner.append(diag_matrix(ct_w))
    if not inner:
        return [None]
    middle = inner[0] if len(inner) == 1 else ew.add(*inner)
    g = mm(v, mm(middle, mT(v)))
    return [triangle_cotangent(g, lower)]


def _eigh_batch(axis_size, args, bdims, **params):
    a, = batch_to_front(axis_size, args, bdims)
    return eigh_p.bind(a, **params), [0, 0]


eigh_p = Primitive("eigh", abstract_eval=_eigh_abstract, impl=_eigh_impl,
                   cuda_impl=_eigh_cuda, vjp=_eigh_vjp, jvp=_eigh_jvp, batch=_eigh_batch,
                   multiple_results=True)


def eigh(a, *, lower=True, sort_eigenvalues=True):
    """Eigenvectors and eigenvalues ``(v, w)`` of a symmetric matrix, reading only its
    ``lower`` (or upper) triangle (JAX's ``lax.linalg.eigh`` without symmetrize_input: see
    flamefx.lax.linalg). Eigenvalues ascend (also when ``sort_eigenvalues=False``).

    >>> v, w = eigh(np.array([[1.0, 0.0], [0.0, -1.0]]))
    >>> w.tolist(), v.tolist()
    ([-1.0, 1.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    return tuple(eigh_p.bind(a, lower=bool(lower), sort_eigenvalues=bool(sort_eigenvalues)))


# --- svd ---------------------------------------------------------------------------------------


def _svd_shapes(shape, full_matrices, compute_uv):
    m, n = shape[-2:]
    k = min(m, n)
    batch = shape[:-2]
    if not compute_uv:
        return [batch + (k,)]
    if full_matrices:
        return [batch + (k,), batch + (m, m), batch + (n, n)]
    return [batch + (k,), batch + (m, k), batch + (k, n)]


def _svd_abstract(a, *, full_matrices, compute_uv):
    check_matrix(a)
    return [ShapedArray(s, a.dtype) for s in _svd_shapes(a.shape, full_matrices, compute_uv)]


def _svd_signs(xp, s, u, vt):
    u_fixed, signs = fix_signs(xp, u)
    k = s.shape[-1]
    # Only the first k columns of u pair with rows of vt; flip those rows alike.
    row_signs = signs[..., :k, None]
    vt = xp.concatenate([vt[..., :k, :] * row_signs, vt[..., k:, :]], axis=-2)
    return [s, u_fixed, vt]


def _empty_svd(xp, shapes, dtype):
    """The outputs for an empty matrix: no singular values; u and vt identity where square
    (full_matrices), else empty ((m, 0) and (0, n) with full_matrices=False), as JAX."""
    outs = [xp.zeros(s, dtype) for s in shapes]
    for o in outs[1:]:
        o[...] = xp.eye(*o.shape[-2:], dtype=dtype)
    return outs


def _svd_impl(a, *, full_matrices, compute_uv):
    shapes = _svd_shapes(a.shape, full_matrices, compute_uv)
    if a.size == 0:
        return _empty_svd(np, shapes, a.dtype)
    if not compute_uv:
        s, = _nan_on_failure(lambda x: (np.linalg.svd(x, compute_uv=False),), a)
        return [s.astype(a.dtype)]
    u, s, vt = _nan_on_failure(
        lambda x: tuple(np.linalg.svd(x, full_matrices=full_matrices)), a)
    return [o.astype(a.dtype) for o in _svd_signs(np, s, u, vt)]


# JAX's default on CUDA: Jacobi (gesvdj) up to 1024x1024, QR-iteration gesvd beyond (NVIDIA's
# GTC 2019 talk s9226, slide 5, which JAX's lowering cites: gesvdj is faster up to there).
_GESVDJ_MAX_N = 1024


def _svd_cuda(a, *, full_matrices, compute_uv):
    cp, cupyx = cupy_modules()
    shapes = _svd_shapes(a.shape, full_matrices, compute_uv)
    if a.size == 0:
        return _empty_svd(cp, shapes, a.dtype)
    with cupyx.errstate(linalg="ignore"):  # no host-syncing info checks
        if not compute_uv:  # gesvd without vectors: bidiagonalization and values only
            return [cp.linalg.svd(a, compute_uv=False).astype(a.dtype)]
        if a.ndim == 2 and max(a.shape) <= _GESVDJ_MAX_N:
            u, s, vt = _gesvdj(a, full_matrices)
        else:  # stacks: gesvdjBatched up to 32x32, else one gesvd per matrix (CuPy's choice)
            u, s, vt = cp.linalg.svd(a, full_matrices=full_matrices)
    return [o.astype(a.dtype) for o in _svd_signs(cp, s, u, vt)]


def _gesvdj(a, full_matrices):
    """One matrix through cuSOLVER gesvdj (econ for reduced vectors), as JAX does; CuPy's
    own svd of one matrix calls the slower gesvd (QR iteration) at every size."""
    from cupyx import cusolver
    u, s, v = cusolver.gesvdj(a, full_matrices=full_matrices, compute_uv=True)
    return u, s, v.T


def _check_svd_differentiable(a, full_matrices):
    m, n = core.get_aval(a).shape[-2:]
    if full_matrices and m != n:
        raise FlamefxValueError(f"the derivative of svd needs full_matrices=False for a "
                                f"non-square ({m}x{n}) matrix, as in JAX")


def _safe_reciprocal(x):
    zero, one = ew.full_like(x, 0), ew.full_like(x, 1)
    is_zero = ew.eq(x, zero)
    return ew.select_n(is_zero, ew.div(one, ew.select_n(is_zero, x, one)), zero)


def _squared_gaps(s):
    """F[i, j] = 1 / (s[j]^2 - s[i]^2), 0 where that is 0 (JAX's svd rule)."""
    from flamefx.primitives import structural as st
    aval = core.get_aval(s)
    k = aval.shape[-1]
    nd = aval.ndim
    s_j = st.broadcast_in_dim(s, aval.shape + (k,), tuple(range(nd - 1)) + (nd,))
    s_i = st.broadcast_in_dim(s, aval.shape + (k,), tuple(range(nd)))
    return _safe_reciprocal(ew.mul(ew.add(s_j, s_i), ew.sub(s_j, s_i)))


def _reduced_svd(a):
    s, u, vt = svd_p.bind(a, full_matrices=False, compute_uv=True)
    return s, u, vt


def _svd_jvp(primals, tangents, *, full_matrices, compute_uv):
    a, = primals
    outs = svd_p.bind(a, full_matrices=full_matrices, compute_uv=compute_uv)
    if compute_uv:
        _check_svd_differentiable(a, full_matrices)
    s, u, vt = _reduced_svd(a) if not compute_uv else outs
    v = mT(vt)
    da = tangents[0]
    ds_mat = mm(mT(u), mm(da, v))
    ds = diagonal(ds_mat)
    if not compute_uv:
        return outs, [ds]
    f = _squared_gaps(s)
    ds_s = scale_columns(ds_mat, s)  # dS diag(s)
    s_ds = scale_rows(ds_mat, s)     # diag(s) dS
    du = mm(u, ew.mul(f, ew.add(ds_s, mT(ds_s))))
    dv = mm(v, ew.mul(f, ew.add(s_ds, mT(s_ds))))
    m, n = core.get_aval(a).shape[-2:]
    s_inv = ew.div(ew.full_like(s, 1), s)
    if m > n:
        da_v = mm(da, v)
        du = ew.add(du, scale_columns(ew.sub(da_v, mm(u, mm(mT(u), da_v))), s_inv))
    if n > m:
        dat_u = mm(mT(da), u)
        dv = ew.add(dv, scale_columns(ew.sub(dat_u, mm(v, mm(vt, dat_u))), s_inv))
    return outs, [ds, du, mT(dv)]


def _svd_vjp(cts, primals, outs, *, full_matrices, compute_uv):
    a, = primals
    if compute_uv:
        _check_svd_differentiable(a, full_matrices)
        s, u, vt = outs
        ct_s, ct_u, ct_vt = cts
    else:
        s, u, vt = _reduced_svd(a)
        ct_s, ct_u, ct_vt = cts[0], None, None
    if ct_s is None and ct_u is None and ct_vt is None:
        return [None]
    v = mT(vt)
    # The transpose of the JVP: ct_dS = diag(ct_s) + (J + J^T) S + S (K + K^T) with
    # J = F o (U^T ct_U), K = F o (V^T ct_V); ct_A = U ct_dS V^T plus the parts of ct_U
    # (ct_V) outside U's (V's) column space when m > n (n > m).
    f = _squared_gaps(s)
    terms = []
    if ct_s is not None:
        terms.append(diag_matrix(ct_s))
    if ct_u is not None:
        j = ew.mul(f, mm(mT(u), ct_u))
        terms.append(scale_columns(ew.add(j, mT(j)), s))
    ct_v = None if ct_vt is None else mT(ct_vt)
    if ct_v is not None:
        k = ew.mul(f, mm(mT(v), ct_v))
        terms.append(scale_rows(ew.add(k, mT(k)), s))
    ct_ds = terms[0]
    for t in terms[1:]:
        ct_ds = ew.add(ct_ds, t)
    ct_a = mm(u, mm(ct_ds, vt))
    m, n = core.get_aval(a).shape[-2:]
    s_inv = ew.div(ew.full_like(s, 1), s)
    if m > n and ct_u is not None:
        ct_u_s = scale_columns(ct_u, s_inv)
        ct_a = ew.add(ct_a, mm(ew.sub(ct_u_s, mm(u, mm(mT(u), ct_u_s))), vt))
    if n > m and ct_v is not None:
        s_ct_vt = scale_rows(mT(ct_v), s_inv)
        ct_a = ew.add(ct_a, mm(u, ew.sub(s_ct_vt, mm(mm(s_ct_vt, v), vt))))
    return [ct_a]


def _svd_batch(axis_size, args, bdims, **params):
    a, = batch_to_front(axis_size, args, bdims)
    outs = svd_p.bind(a, **params)
    return outs, [0] * len(outs)


svd_p = Primitive("svd", abstract_eval=_svd_abstract, impl=_svd_impl, cuda_impl=_svd_cuda,
                  vjp=_svd_vjp, jvp=_svd_jvp, batch=_svd_batch, multiple_results=True)


def svd(a, *, full_matrices=True, compute_uv=True):
    """The singular value decomposition ``a = u @ diag(s) @ vh`` (JAX's
    ``lax.linalg.svd``): returns ``(u, s, vh)``, or ``s`` alone without ``compute_uv``.
    Singular values descend. Differentiable with ``full_matrices=False`` (or square input).

    >>> svd(np.array([[3.0, 0.0], [0.0, -4.0]]), compute_uv=False).tolist()
    [4.0, 3.0]
    """
    outs = svd_p.bind(a, full_matrices=bool(full_matrices), compute_uv=bool(compute_uv))
    if not compute_uv:
        return outs[0]
    s, u, vt = outs
    return u, s, vt
