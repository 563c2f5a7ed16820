"""Matrix factorizations: cholesky, triangular_solve, lu and qr (eigh and svd: spectral.py).

Every operand is a stack of matrices: the last two axes are the matrix, the leading ones
batch dims (so batching rules only move the vmapped axis to the front). The NumPy impls
call LAPACK through numpy.linalg / scipy.linalg; the CUDA impls call cuSOLVER / cuBLAS
through CuPy without its host-syncing ``info`` checks. As in JAX, a failed factorization
(an indefinite matrix for cholesky) gives NaN, never an exception; a singular triangular
solve gives inf/NaN.

Derivative rules are the published ones (cholesky: Murray 2016 as in JAX; qr: JAX's rule,
m >= n; lu: JAX's lu_jvp). cholesky reads only the lower triangle of its operand, so its
rules differentiate exactly that function: a tangent's strict lower triangle stands for
both triangles (``flamefx.numpy.linalg.cholesky`` symmetrizes its input first, as JAX).

>>> import numpy as np
>>> cholesky(np.array([[4.0, 2.0], [2.0, 5.0]])).tolist()
[[2.0, 0.0], [1.0, 2.0]]
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from flamefx import core, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.primitives import elementwise as ew
from flamefx.primitives import structural as st
from flamefx.primitives.linalg import dot_general

_LINALG_DTYPES = (dtypes.float32, dtypes.float64)


# --- shape-rule helpers ------------------------------------------------------------------------


def check_matrix(aval, what="operand", square=False):
    """Raises unless ``aval`` is a float32/float64 stack of (square) matrices."""
    if aval.dtype not in _LINALG_DTYPES:
        raise FlamefxTypeError(f"{what} must be float32 or float64, got {aval.dtype} "
                               f"(flamefx.numpy.linalg promotes integers)")
    if aval.ndim < 2:
        raise FlamefxTypeError(f"{what} must have at least 2 dims (a matrix), got shape "
                               f"{aval.shape}")
    if square and aval.shape[-1] != aval.shape[-2]:
        raise FlamefxTypeError(f"{what} must be a (stack of) square matrices, got shape "
                               f"{aval.shape}")


# --- matrix helpers in flamefx ops (for the derivative rules) ----------------------------------


def mT(x):
    """Swaps the last two axes."""
    nd = core.get_aval(x).ndim
    return st.transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def mm(a, b):
    """The matrix product of two stacks with the same batch dims."""
    nd = core.get_aval(a).ndim
    batch = tuple(range(nd - 2))
    return dot_general(a, b, (((nd - 1,), (nd - 2,)), (batch, batch)))


def constant(value, like, dtype=None):
    """A NumPy matrix/vector constant on ``like``'s device, broadcast over its batch dims."""
    aval = core.get_aval(like)
    value = np.asarray(value, aval.dtype if dtype is None else dtype)
    array = core.to_array(value, device=st.device_of(like))
    shape = aval.shape[:aval.ndim - 2] + value.shape
    return st.broadcast_in_dim(array, shape, tuple(range(len(shape) - value.ndim, len(shape))))


def keep(x, mask):
    """``x`` where the (m, n) NumPy bool ``mask`` holds, else 0 (select: NaN-safe)."""
    return ew.select_n(constant(mask, x, dtypes.bool_), ew.full_like(x, 0), x)


def tril(x, k=0):
    m, n = core.get_aval(x).shape[-2:]
    return keep(x, np.tri(m, n, k, dtype=bool))


def triu(x, k=0):
    m, n = core.get_aval(x).shape[-2:]
    return keep(x, ~np.tri(m, n, k - 1, dtype=bool))


def diagonal(x):
    """The diagonal of a stack of square matrices, shape (..., n)."""
    aval = core.get_aval(x)
    from flamefx.primitives import reductions
    return reductions.reduce_sum(keep(x, np.eye(aval.shape[-1], dtype=bool)), (aval.ndim - 1,))


def scale_columns(x, v):
    """``x @ diag(v)``: column j of the (..., m, n) stack times v[..., j]."""
    aval = core.get_aval(x)
    dims = tuple(range(aval.ndim - 2)) + (aval.ndim - 1,)
    return ew.mul(x, st.broadcast_in_dim(v, aval.shape, dims))


def scale_rows(x, v):
    """``diag(v) @ x``: row i of the (..., m, n) stack times v[..., i]."""
    aval = core.get_aval(x)
    dims = tuple(range(aval.ndim - 2)) + (aval.ndim - 2,)
    return ew.mul(x, st.broadcast_in_dim(v, aval.shape, dims))


def diag_matrix(v):
    """The stack of diagonal matrices with diagonals ``v`` (..., n)."""
    aval = core.get_aval(v)
    n = aval.shape[-1]
    full = st.broadcast_in_dim(v, aval.shape + (n,), tuple(range(aval.ndim - 1)) + (aval.ndim,))
    return keep(full, np.eye(n, dtype=bool))


def symmetric_tangent(t, lower):
    """The symmetric matrix a function reading one triangle sees for a tangent ``t``."""
    half = tril(t) if lower else triu(t)
    strict = tril(t, -1) if lower else triu(t, 1)
    return ew.add(half, mT(strict))


def triangle_cotangent(g, lower):
    """The transpose of ``symmetric_tangent``: G + G^T folded onto one triangle."""
    folded = ew.add(g, mT(g))
    half = tril(folded) if lower else triu(folded)
    return ew.sub(half, keep(g, np.eye(core.get_aval(g).shape[-1], dtype=bool)))


def batch_to_front(axis_size, args, bdims):
    """The batching rule's first step: every operand gets its batch axis first."""
    from flamefx.transforms import batching
    return [batching.to_front(x, d, axis_size) for x, d in zip(args, bdims)]


# --- host/device helpers for the impls ---------------------------------------------------------


def per_matrix(fn, *stacks):
    """Applies ``fn`` (2-d arrays -> tuple of arrays) to each matrix of equal-batch stacks
    and restacks the results (LAPACK wrappers in SciPy take one matrix at a time)."""
    batch = stacks[0].shape[:-2]
    flat = [s.reshape((-1,) + s.shape[len(batch):]) for s in stacks]
    results = [fn(*mats) for mats in zip(*flat)]
    return [np.stack(outs).reshape(batch + outs[0].shape) for outs in zip(*results)]


def cupy_modules():
    """(cupy, cupyx) for the CUDA impls."""
    from flamefx import devices
    import cupyx
    return devices.cupy(), cupyx


# --- cholesky ----------------------------------------------------------------------------------


def _cholesky_abstract(a):
    check_matrix(a, square=True)
    return [ShapedArray(a.shape, a.dtype)]


def _cholesky_one(a):
    potrf, = scipy.linalg.lapack.get_lapack_funcs(("potrf",), (a,))
    factor, info = potrf(a, lower=True, clean=True)
    return (factor if info == 0 else np.tril(np.full_like(a, np.nan)),)  # JAX's NaN triangle


def _cholesky_impl(a):
    if a.size == 0:
        return [np.zeros(a.shape, a.dtype)]
    try:  # numpy's stacked LAPACK call first; it raises if any matrix fails
        return [np.linalg.cholesky(a)]
    except np.linalg.LinAlgError:
        return per_matrix(_cholesky_one, a)


def _cholesky_cuda(a):
    cp, _ = cupy_modules()
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas, cusolver
    if a.size == 0:
        return [cp.zeros(a.shape, a.dtype)]
    n = a.shape[-1]
    x = cp.array(a.reshape(-1, n, n), order="C", copy=True)
    batch = x.shape[0]
    pointers = cp.arange(x.data.ptr, x.data.ptr + batch * x.strides[0], x.strides[0],
                         dtype=cp.uintp)
    info = cp.empty(batch, dtype=cp.int32)
    potrf = cusolver.spotrfBatched if a.dtype == np.float32 else cusolver.dpotrfBatched
    # Row-major lower == column-major upper: cuSOLVER writes L^T's column-major upper.
    potrf(device.get_cusolver_handle(), cublas.CUBLAS_FILL_MODE_UPPER, n, pointers.data.ptr, n,
          info.data.ptr, batch)
    factor = cp.tril(cp.where((info == 0)[:, None, None], x, cp.nan)).astype(a.dtype)
    return [factor.reshape(a.shape)]


def _phi(x):
    """The lower triangle with half the diagonal (Murray's Phi)."""
    n = core.get_aval(x).shape[-1]
    return ew.sub(tril(x), ew.mul(keep(x, np.eye(n, dtype=bool)), ew.full_like(x, 0.5)))


def _cholesky_jvp(primals, tangents):
    a, = primals
    factor = cholesky(a)
    t = tangents[0]
    sigma = symmetric_tangent(t, lower=True)
    # L^-1 sigma L^-T, then dL = L Phi(...)
    right = triangular_solve(factor, sigma, left_side=False, lower=True, transpose_a=True)
    middle = triangular_solve(factor, right, left_side=True, lower=True)
    return [factor], [mm(factor, _phi(middle))]


def _cholesky_vjp(cts, primals, outs):
    ct, = cts
    if ct is None:
        return [None]
    factor, = outs
    p = _phi(mm(mT(factor), ct))
    # G = L^-T P L^-1 is the cotangent of the symmetric matrix the factorization reads.
    left = triangular_solve(factor, p, left_side=True, lower=True, transpose_a=True)
    g = triangular_solve(factor, left, left_side=False, lower=True)
    return [triangle_cotangent(g, lower=True)]


def _cholesky_batch(axis_size, args, bdims):
    a, = batch_to_front(axis_size, args, bdims)
    return [cholesky(a)], [0]


cholesky_p = Primitive("cholesky", abstract_eval=_cholesky_abstract, impl=_cholesky_impl,
                       cuda_impl=_cholesky_cuda, vjp=_cholesky_vjp, jvp=_cholesky_jvp,
                       batch=_cholesky_batch)


def cholesky(a):
    """The lower Cholesky factor L of a (stack of) positive definite matrices, A = L L^T.

    Reads only the lower triangle of ``a``; NaN where ``a`` is not positive definite.

    >>> cholesky(np.array([[9.0, 0.0], [3.0, 2.0]])).tolist()
    [[3.0, 0.0], [1.0, 1.0]]
    """
    return cholesky_p.bind(a)


# --- triangular_solve --------------------------------------------------------------------------


def _triangular_solve_abstract(a, b, *, left_side, lower, transpose_a, conjugate_a,
                               unit_diagonal):
    check_matrix(a, "a", square=True)
    check_matrix(b, "b")
    if a.dtype != b.dtype:
        raise FlamefxTypeError(f"a and b must have one dtype, got {a.dtype} and {b.dtype}")
    if a.shape[:-2] != b.shape[:-2]:
        raise FlamefxTypeError(f"a and b must have the same batch dims, got shapes {a.shape} "
                               f"and {b.shape}")
    m = a.shape[-1]
    side_dim = b.shape[-2] if left_side else b.shape[-1]
    if side_dim != m:
        which = "rows" if left_side else "columns"
        raise FlamefxTypeError(f"b must have {m} {which} to solve against a {m}x{m} a "
                               f"(left_side={left_side}), got shapes {a.shape} and {b.shape}")
    return [ShapedArray(b.shape, b.dtype)]


def _triangular_solve_impl(a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal):
    if b.size == 0:
        return [np.zeros(b.shape, b.dtype)]
    trsm, = scipy.linalg.blas.get_blas_funcs(("trsm",), (a, b))

    def solve(a1, b1):
        # BLAS trsm, not scipy's solve_triangular: a zero pivot gives inf/NaN as in JAX.
        return (trsm(1.0, a1, b1, side=0 if left_side else 1, lower=lower,
                     trans_a=int(transpose_a), diag=int(unit_diagonal)),)

    with np.errstate(all="ignore"):
        return [out.astype(b.dtype) for out in per_matrix(solve, a, b)]


# cuBLAS's docs: trsmBatched is for small matrices, where launches dominate; larger ones
# (and a lone matrix) take one cuBLAS trsm per matrix through cupyx's solve_triangular.
_TRSM_BATCHED_MAX_N = 256


def trsm_arguments(a_shape, b_shape, *, left_side, lower, transpose_a, unit_diagonal):
    """cuBLAS ``<t>trsm``'s (side, uplo, trans, diag, m, n, lda, ldb) for C-contiguous
    row-major ``a`` and ``b`` (cublasSideMode/FillMode/Operation/DiagType values).

    cuBLAS is column-major, so it sees each row-major matrix as its transpose:
    ``op(a) x = b`` is ``x^T op(a)^T = b^T``, a solve from the other side against a^T,
    whose stored triangle is the other one; op stays op. Nothing is copied or transposed.

    >>> trsm_arguments((4, 3, 3), (4, 3, 2), left_side=True, lower=True, transpose_a=False,
    ...                unit_diagonal=False)
    (1, 1, 0, 0, 2, 3, 3, 2)
    """
    side = 1 if left_side else 0  # CUBLAS_SIDE_RIGHT : CUBLAS_SIDE_LEFT
    uplo = 1 if lower else 0  # CUBLAS_FILL_MODE_UPPER : CUBLAS_FILL_MODE_LOWER
    rows, cols = b_shape[-2:]
    return (side, uplo, int(transpose_a), int(unit_diagonal), cols, rows, max(a_shape[-1], 1),
            max(cols, 1))


def _batch_pointers(cp, stack):
    """The device array of pointers to each matrix of a C-contiguous (count, r, c) stack."""
    step = stack.strides[0]
    return cp.arange(stack.data.ptr, stack.data.ptr + stack.shape[0] * step, step,
                     dtype=cp.uintp)


def _trsm_batched(cp, a, b, **flags):
    """All the solves of a stack in one cuBLAS trsmBatched call (as XLA does on the GPU)."""
    from cupy.cuda import cublas, device
    m = a.shape[-1]
    flat_a = cp.ascontiguousarray(a.reshape(-1, m, m))  # read only
    x = cp.array(b.reshape((-1,) + b.shape[-2:]), order="C", copy=True)  # trsm solves in place
    side, uplo, trans, diag, rows, cols, lda, ldb = trsm_arguments(a.shape, b.shape, **flags)
    alpha = np.ones((), b.dtype)  # a host scalar: host pointer mode for this call
    trsm = cublas.strsmBatched if b.dtype == np.float32 else cublas.dtrsmBatched
    a_pointers, x_pointers = _batch_pointers(cp, flat_a), _batch_pointers(cp, x)
    handle = device.get_cublas_handle()
    old_mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        trsm(handle, side, uplo, trans, diag, rows, cols, alpha.ctypes.data,
             a_pointers.data.ptr, lda, x_pointers.data.ptr, ldb, x.shape[0])
    finally:
        cublas.setPointerMode(handle, old_mode)
    return x.reshape(b.shape)


def _triangular_solve_cuda(a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal):
    cp, _ = cupy_modules()
    from cupyx.scipy.linalg import solve_triangular
    if b.size == 0:
        return [cp.zeros(b.shape, b.dtype)]
    m = a.shape[-1]
    flat_a = a.reshape(-1, m, m)
    if flat_a.shape[0] > 1 and m <= _TRSM_BATCHED_MAX_N:
        return [_trsm_batched(cp, a, b, left_side=left_side, lower=lower,
                              transpose_a=transpose_a, unit_diagonal=unit_diagonal)]
    flat_b = b.reshape((-1,) + b.shape[-2:])
    outs = []
    for a1, b1 in zip(flat_a, flat_b):
        if left_side:
            outs.append(solve_triangular(a1, b1, trans=int(transpose_a), lower=lower,
                                         unit_diagonal=unit_diagonal, check_finite=False))
        else:  # x op(a) = b  <=>  op(a)^T x^T = b^T
            outs.append(solve_triangular(a1, b1.T, trans=int(not transpose_a), lower=lower,
                                         unit_diagonal=unit_diagonal, check_finite=False).T)
    return [cp.stack(outs).reshape(b.shape).astype(b.dtype)]


def _solve_params(params, **changes):
    return dict(params, **changes)


def _masked_a(t, params):
    """The part of a tangent/cotangent of ``a`` that the solve reads."""
    k = -1 if params["unit_diagonal"] else 0
    if params["lower"]:
        return tril(t, k)
    return triu(t, -k)


def _triangular_solve_jvp(primals, tangents, **params):
    a, b = primals
    ta, tb = tangents
    x = triangular_solve_p.bind(a, b, **params)
    rhs = tb
    if ta is not None:
        da = _masked_a(ta, params)
        op_da = mT(da) if params["transpose_a"] else da
        correction = mm(op_da, x) if params["left_side"] else mm(x, op_da)
        rhs = ew.neg(correction) if rhs is None else ew.sub(rhs, correction)
    return [x], [triangular_solve_p.bind(a, rhs, **params)]


def _triangular_solve_vjp(cts, primals, outs, **params):
    ct, = cts
    if ct is None:
        return [None, None]
    a, _ = primals
    x, = outs
    ct_b = triangular_solve_p.bind(a, ct, **_solve_params(
        params, transpose_a=not params["transpose_a"]))
    if params["left_side"]:  # d(op a) gets -ct_b x^T
        ct_op_a = mm(ct_b, mT(x))
    else:  # d(op a) gets -x^T ct_b
        ct_op_a = mm(mT(x), ct_b)
    ct_a = mT(ct_op_a) if params["transpose_a"] else ct_op_a
    return [ew.neg(_masked_a(ct_a, params)), ct_b]


def _triangular_solve_batch(axis_size, args, bdims, **params):
    a_bdim, b_bdim = bdims
    if a_bdim is None:
        return _solve_with_shared_a(args[0], args[1], b_bdim, params)
    a, b = batch_to_front(axis_size, args, bdims)
    return [triangular_solve_p.bind(a, b, **params)], [0]


def _solve_with_shared_a(a, b, b_bdim, params):
    """One matrix ``a`` for the whole batch: the batch joins b's right-hand sides (columns
    for a left solve, rows for a right solve) instead of copying ``a`` per example."""
    from flamefx.transforms import batching
    nd = core.get_aval(b).ndim  # with the batch axis
    # (..., m, B, n) for a left solve (B*n columns); (..., B, n, m) for a right one.
    bdim_out = nd - 2 if params["left_side"] else nd - 3
    b = batching.move_axis(b, b_bdim, bdim_out)
    shape = core.get_aval(b).shape
    merged = shape[:bdim_out] + (shape[bdim_out] * shape[bdim_out + 1],) + shape[bdim_out + 2:]
    x = triangular_solve_p.bind(a, st.reshape(b, merged), **params)
    return [st.reshape(x, shape)], [bdim_out]


triangular_solve_p = Primitive(
    "triangular_solve", abstract_eval=_triangular_solve_abstract, impl=_triangular_solve_impl,
    cuda_impl=_triangular_solve_cuda, vjp=_triangular_solve_vjp, jvp=_triangular_solve_jvp,
    batch=_triangular_solve_batch)


def triangular_solve(a, b, *, left_side=False, lower=False, transpose_a=False,
                     conjugate_a=False, unit_diagonal=False):
    """Solves ``op(a) @ x = b`` (left_side) or ``x @ op(a) = b`` for triangular ``a``
    (JAX's ``lax.linalg.triangular_solve``; op transposes when ``transpose_a``).

    Reads only the ``lower`` (or upper) triangle of ``a``, and not its diagonal when
    ``unit_diagonal``. ``conjugate_a`` is accepted and has no effect (real dtypes only).

    >>> triangular_solve(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([[2.0], [3.0]]),
    ...                  left_side=True, lower=True).tolist()
    [[1.0], [2.0]]
    """
    return triangular_solve_p.bind(a, b, left_side=bool(left_side), lower=bool(lower),
                                   transpose_a=bool(transpose_a), conjugate_a=bool(conjugate_a),
                                   unit_diagonal=bool(unit_diagonal))


# --- lu ----------------------------------------------------------------------------------------


def _lu_abstract(a):
    check_matrix(a)
    m, n = a.shape[-2:]
    batch = a.shape[:-2]
    return [ShapedArray(a.shape, a.dtype), ShapedArray(batch + (min(m, n),), dtypes.int32),
            ShapedArray(batch + (m,), dtypes.int32)]


def permutation_of_pivots(pivots, m):
    """The row permutation that LAPACK's sequential row swaps ``pivots`` perform (NumPy)."""
    batch = pivots.shape[:-1]
    flat = pivots.reshape(int(np.prod(batch, dtype=np.int64)), pivots.shape[-1])
    perms = np.tile(np.arange(m, dtype=np.int32), (flat.shape[0], 1))
    rows = np.arange(flat.shape[0])
    for i in range(flat.shape[1]):
        j = flat[:, i]
        perms[rows, i], perms[rows, j] = perms[rows, j], perms[rows, i].copy()
    return perms.reshape(batch + (m,))


def _lu_one(a):
    getrf, = scipy.linalg.lapack.get_lapack_funcs(("getrf",), (a,))
    lu, piv, _ = getrf(a)  # info > 0 (singular) still gives the factors, as in JAX
    return lu, piv.astype(np.int32)


def _lu_impl(a):
    m, n = a.shape[-2:]
    batch = a.shape[:-2]
    if a.size == 0:
        pivots = np.zeros(batch + (min(m, n),), np.int32)
        return [np.zeros(a.shape, a.dtype), pivots, permutation_of_pivots(pivots, m)]
    lu, pivots = per_matrix(_lu_one, a)
    return [lu.astype(a.dtype), pivots, permutation_of_pivots(pivots, m)]


_PIVOTS_TO_PERMUTATION = r"""
extern "C" __global__ void pivots_to_permutation(const int* pivots, int* perms, int batch,
                                                 int k, int m) {
    // One thread per matrix: LAPACK's row swaps are sequential.
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch) return;
    int* perm = perms + (long long)b * m;
    for (int i = 0; i < m; ++i) perm[i] = i;
    for (int i = 0; i < k; ++i) {
        int j = pivots[(long long)b * k + i];
        int tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp;
    }
}
"""


def _getrf_batched(cp, flat, pivots, info):
    """Square stacks: one cuBLAS getrfBatched call (as cupy.linalg.solve does)."""
    from cupy.cuda import cublas, device
    count, n, _ = flat.shape
    # Row-major A^T is column-major A; a copy always, since getrf overwrites it.
    x = cp.array(cp.swapaxes(flat, -1, -2), order="C", copy=True)
    pointers = cp.arange(x.data.ptr, x.data.ptr + count * x.strides[0], x.strides[0],
                         dtype=cp.uintp)
    getrf = cublas.sgetrfBatched if flat.dtype == np.float32 else cublas.dgetrfBatched
    getrf(device.get_cublas_handle(), n, pointers.data.ptr, n, pivots.data.ptr, info.data.ptr,
          count)
    return cp.swapaxes(x, -1, -2)


def _getrf_each(cp, flat, pivots, info):
    """Any m x n stack: cuSOLVER getrf one matrix at a time."""
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cusolver
    count, m, n = flat.shape
    single = flat.dtype == np.float32
    bufsize = cusolver.sgetrf_bufferSize if single else cusolver.dgetrf_bufferSize
    getrf = cusolver.sgetrf if single else cusolver.dgetrf
    handle = device.get_cusolver_handle()
    lus = cp.empty(flat.shape, flat.dtype)
    for i in range(count):
        x = cp.array(flat[i], order="F", copy=True)  # cuSOLVER is column-major
        work = cp.empty(bufsize(handle, m, n, x.data.ptr, m), flat.dtype)
        getrf(handle, m, n, x.data.ptr, m, work.data.ptr, pivots[i].data.ptr, info[i:].data.ptr)
        lus[i] = x
    return lus


def _lu_cuda(a):
    cp, _ = cupy_modules()
    m, n = a.shape[-2:]
    k = min(m, n)
    batch = a.shape[:-2]
    count = int(np.prod(batch, dtype=np.int64))
    flat = a.reshape(count, m, n)
    pivots = cp.zeros((count, k), cp.int32)
    perms = cp.empty((count, m), cp.int32)
    if a.size == 0:
        lus = cp.zeros(flat.shape, a.dtype)
    else:
        info = cp.empty((count,), cp.int32)  # singular matrices still factor; not read
        getrf = _getrf_batched if m == n and count > 1 else _getrf_each
        lus = getrf(cp, flat, pivots, info)
        pivots -= 1  # cuBLAS/cuSOLVER count rows from 1
    if count:
        kernel = cp.RawKernel(_PIVOTS_TO_PERMUTATION, "pivots_to_permutation")
        kernel(((count + 127) // 128,), (128,), (pivots, perms, np.int32(count), np.int32(k),
                                                 np.int32(m)))
    return [lus.reshape(a.shape), pivots.reshape(batch + (k,)), perms.reshape(batch + (m,))]


def _lu_factors(lu):
    """The square unit-lower l (m, m) and upper u (n, n) of JAX's lu_jvp: the packed factors
    padded with identity blocks so that both triangular solves are square."""
    m, n = core.get_aval(lu).shape[-2:]
    k = min(m, n)
    zero = st.zeros((), core.get_aval(lu).dtype, st.device_of(lu))
    nb = core.get_aval(lu).ndim - 2
    lower = tril(st.slice(lu, (0,) * (nb + 2), lu.shape[:-2] + (m, k)), -1)
    lower = st.pad(lower, zero, ((0, 0, 0),) * nb + ((0, 0, 0), (0, m - k, 0)))
    lower = ew.add(lower, constant(np.eye(m), lu))
    upper = triu(st.slice(lu, (0,) * (nb + 2), lu.shape[:-2] + (k, n)))
    upper = st.pad(upper, zero, ((0, 0, 0),) * nb + ((0, n - k, 0), (0, 0, 0)))
    identity_tail = np.zeros((n, n))
    identity_tail[k:, k:] = np.eye(n - k)
    return lower, ew.add(upper, constant(identity_tail, lu))


def _permutation_matrix(permutation, like):
    """P with (P @ a) == a[permutation], as a float matrix (rows pick ``permutation``)."""
    aval = core.get_aval(permutation)
    m = aval.shape[-1]
    rows = st.broadcast_in_dim(permutation, aval.shape + (m,), tuple(range(aval.ndim)))
    cols = st.iota_like(dtypes.int32, aval.shape + (m,), aval.ndim, like)
    return ew.convert_element_type(ew.eq(rows, cols), core.get_aval(like).dtype)


def _lu_jvp(primals, tangents):
    a, = primals
    lu, pivots, permutation = lu_p.bind(a)
    lower, upper = _lu_factors(lu)
    pa_dot = mm(_permutation_matrix(permutation, a), tangents[0])
    la = triangular_solve(lower, pa_dot, left_side=True, lower=True, unit_diagonal=True)
    lau = triangular_solve(upper, la, left_side=False, lower=False)
    lu_dot = ew.add(mm(lower, tril(lau, -1)), mm(triu(lau), upper))
    return [lu, pivots, permutation], [lu_dot, None, None]


def _lu_vjp(cts, primals, outs):
    ct = cts[0]
    if ct is None:
        return [None]
    a, = primals
    lu, _, permutation = outs
    lower, upper = _lu_factors(lu)
    # The transpose of lu_jvp: ct_Z = tril(l^T ct, -1) + triu(ct u^T), then
    # ct_a = P^T l^-T ct_Z u^-T.
    ct_z = ew.add(tril(mm(mT(lower), ct), -1), triu(mm(ct, mT(upper))))
    left = triangular_solve(lower, ct_z, left_side=True, lower=True, transpose_a=True,
                            unit_diagonal=True)
    both = triangular_solve(upper, left, left_side=False, lower=False, transpose_a=True)
    return [mm(mT(_permutation_matrix(permutation, a)), both)]


def _lu_batch(axis_size, args, bdims):
    a, = batch_to_front(axis_size, args, bdims)
    return lu_p.bind(a), [0, 0, 0]


lu_p = Primitive("lu", abstract_eval=_lu_abstract, impl=_lu_impl, cuda_impl=_lu_cuda,
                 vjp=_lu_vjp, jvp=_lu_jvp, batch=_lu_batch, multiple_results=True)


def lu(a):
    """LU with partial pivoting (JAX's ``lax.linalg.lu``): returns ``(lu, pivots,
    permutation)`` with ``a[..., permutation, :] == L @ U``, L unit lower (below lu's
    diagonal) and U upper (on and above it). pivots and permutation are int32 and carry no
    derivative. A singular ``a`` gives zeros on U's diagonal, no exception.

    >>> lu_, pivots, permutation = lu(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> permutation.tolist()
    [1, 0]
    """
    return tuple(lu_p.bind(a))


# --- qr ----------------------------------------------------------------------------------------


def _qr_abstract(a, *, full_matrices):
    check_matrix(a)
    m, n = a.shape[-2:]
    k = m if full_matrices else min(m, n)
    batch = a.shape[:-2]
    return [ShapedArray(batch + (m, k), a.dtype), ShapedArray(batch + (k, n), a.dtype)]


def _qr_impl(a, *, full_matrices):
    mode = "complete" if full_matrices else "reduced"
    out_shapes = [s.shape for s in _qr_abstract(core.ShapedArray(a.shape, a.dtype),
                                                full_matrices=full_matrices)]
    if a.size == 0:
        q = np.zeros(out_shapes[0], a.dtype)
        q[...] = np.eye(*out_shapes[0][-2:], dtype=a.dtype)
        return [q, np.zeros(out_shapes[1], a.dtype)]
    q, r = np.linalg.qr(a, mode=mode)
    return [q.astype(a.dtype), r.astype(a.dtype)]


def _qr_cuda(a, *, full_matrices):
    cp, cupyx = cupy_modules()
    mode = "complete" if full_matrices else "reduced"
    m, n = a.shape[-2:]
    k = m if full_matrices else min(m, n)
    batch = a.shape[:-2]
    flat = a.reshape((int(np.prod(batch, dtype=np.int64)), m, n))
    qs, rs = cp.empty((flat.shape[0], m, k), a.dtype), cp.empty((flat.shape[0], k, n), a.dtype)
    with cupyx.errstate(linalg="ignore"):  # no host-syncing info checks
        for i, a1 in enumerate(flat):  # cupy.linalg.qr takes one matrix at a time
            qs[i], rs[i] = cp.linalg.qr(a1, mode=mode)
    return [qs.reshape(batch + (m, k)), rs.reshape(batch + (k, n))]


def _check_qr_differentiable(a, full_matrices):
    m, n = core.get_aval(a).shape[-2:]
    if m < n or (full_matrices and m != n):
        raise FlamefxValueError(f"the derivative of qr is defined for m >= n with "
                                f"full_matrices=False (as in JAX), got a {m}x{n} matrix with "
                                f"full_matrices={full_matrices}")


def _qr_jvp(primals, tangents, *, full_matrices):
    a, = primals
    _check_qr_differentiable(a, full_matrices)
    q, r = qr_p.bind(a, full_matrices=False)
    dx_rinv = triangular_solve(r, tangents[0])  # dA R^-1
    qt_dx_rinv = mm(mT(q), dx_rinv)
    lower = tril(qt_dx_rinv, -1)
    omega = ew.sub(lower, mT(lower))  # skew-symmetric
    dq = ew.add(mm(q, ew.sub(omega, qt_dx_rinv)), dx_rinv)
    dr = mm(ew.sub(qt_dx_rinv, omega), r)
    return [q, r], [dq, dr]


def _qr_vjp(cts, primals, outs, *, full_matrices):
    a, = primals
    _check_qr_differentiable(a, full_matrices)
    ct_q, ct_r = cts
    q, r = outs
    # The transpose of _qr_jvp, with M = ct_R R^T - Q^T ct_Q and C = Q^T dA R^-1:
    # ct_C = M - tril(M - M^T, -1), ct_X = ct_Q + Q ct_C, ct_A = ct_X R^-T.
    terms = []
    if ct_r is not None:
        terms.append(mm(ct_r, mT(r)))
    if ct_q is not None:
        qt_ct_q = mm(mT(q), ct_q)
        terms.append(ew.neg(qt_ct_q))
    if not terms:
        return [None]
    m_mat = terms[0] if len(terms) == 1 else ew.add(*terms)
    ct_c = ew.sub(m_mat, tril(ew.sub(m_mat, mT(m_mat)), -1))
    ct_x = mm(q, ct_c)
    if ct_q is not None:
        ct_x = ew.add(ct_x, ct_q)
    return [triangular_solve(r, ct_x, left_side=False, lower=False, transpose_a=True)]


def _qr_batch(axis_size, args, bdims, *, full_matrices):
    a, = batch_to_front(axis_size, args, bdims)
    return qr_p.bind(a, full_matrices=full_matrices), [0, 0]


qr_p = Primitive("qr", abstract_eval=_qr_abstract, impl=_qr_impl, cuda_impl=_qr_cuda,
                 vjp=_qr_vjp, jvp=_qr_jvp, batch=_qr_batch, multiple_results=True)


def qr(a, *, full_matrices=True):
    """The QR decomposition ``a = q @ r`` (JAX's ``lax.linalg.qr``; Householder, so r's
    diagonal may be negative). Differentiable for m >= n with ``full_matrices=False``.

    >>> q, r = qr(np.array([[3.0], [4.0]]), full_matrices=False)
    >>> np.round(np.abs(r), 6).tolist()
    [[5.0]]
    """
    return tuple(qr_p.bind(a, full_matrices=bool(full_matrices)))
