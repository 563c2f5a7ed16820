"""Samples for the factorizations (cholesky, triangular_solve, lu, qr, eigh, svd).

Inputs are well conditioned: SPD matrices with eigenvalues well away from 0, triangular
matrices with a dominant diagonal, and matrices built as U diag(s) V^T with distinct,
well-separated singular values / eigenvalues, so that order-2 finite differences are
exact. References are NumPy/SciPy float64 calls on explicit matrices, with the sign
convention flamefx documents (each eigenvector / left singular vector has its largest-
magnitude entry positive) applied by a loop here. Those references call the same LAPACK
routines the impls do, so each sample also carries ``properties``: what any correct output
satisfies (Q R = A with Q orthonormal, L L^T = A, A V = V diag(w), ...), in float64.
"""

import numpy as np
import scipy.linalg

from tests.samples import Sample


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _spectral(rng, m, n, values):
    """An m x n matrix with singular values (or, square and symmetric, eigenvalues)."""
    k = min(m, n)
    u, v = _orthogonal(rng, m)[:, :k], _orthogonal(rng, n)[:, :k]
    return (u * np.asarray(values[:k])) @ v.T


def _stack(make_one, batch):
    def make(rng):
        if not batch:
            return make_one(rng)
        parts = [make_one(rng) for _ in range(int(np.prod(batch)))]
        return [np.stack([p[i] for p in parts]).reshape(batch + parts[0][i].shape)
                for i in range(len(parts[0]))]
    return make


def _loop_batch(reference_one):
    """A reference over a stack, one matrix at a time."""
    def reference(*args):
        batch = args[0].shape[:-2]
        if not batch:
            return reference_one(*args)
        flat = [a.reshape((-1,) + a.shape[len(batch):]) for a in args]
        outs = [reference_one(*mats) for mats in zip(*flat)]
        if not isinstance(outs[0], (list, tuple)):
            return np.stack(outs).reshape(batch + outs[0].shape)
        return [np.stack(o).reshape(batch + o[0].shape) for o in zip(*outs)]
    return reference


def _tolerance(outs):
    """Residual tolerance, relative to the matrices' scale: float64 outputs (the CPU) or
    float32 ones (the GPU test)."""
    worst = min(np.finfo(np.asarray(o).dtype).eps for o in outs
                if np.issubdtype(np.asarray(o).dtype, np.floating))
    return 1e-10 if worst < 1e-10 else 2e-4


def _mT(x):
    return np.swapaxes(x, -1, -2)


def _assert_small(what, residual, scale, tol):
    worst = float(np.max(np.abs(residual), initial=0.0))
    assert worst <= tol * max(1.0, float(np.max(np.abs(scale), initial=0.0))), (
        f"{what}: residual {worst:.3g} above {tol:g}")


def _assert_orthonormal_columns(what, q, tol):
    q = np.asarray(q, np.float64)
    _assert_small(f"{what}^T {what} = I", _mT(q) @ q - np.eye(q.shape[-1]), 1.0, tol)


def _assert_signs_fixed(what, columns):
    """flamefx's documented convention: each column's largest-magnitude entry is positive."""
    biggest = np.take_along_axis(columns, np.argmax(np.abs(columns), axis=-2)[..., None, :],
                                 axis=-2)
    assert np.all(biggest > 0), f"{what}: a column's largest-magnitude entry is negative"


def _symmetric_from(a, lower):
    """The symmetric matrix an impl reading only the ``lower`` (or upper) triangle sees."""
    half = np.tril(a) if lower else np.triu(a)
    strict = np.tril(a, -1) if lower else np.triu(a, 1)
    return half + _mT(strict)


def _signed(columns):
    out = columns.copy()
    for j in range(out.shape[1]):
        if out[np.argmax(np.abs(out[:, j])), j] < 0:
            out[:, j] = -out[:, j]
    return out


# --- cholesky ----------------------------------------------------------------------------------


def _spd(n, junk_upper=False):
    def make_one(rng):
        q = _orthogonal(rng, n)
        a = (q * np.linspace(1.0, 3.0, n)) @ q.T
        if junk_upper:  # cholesky reads only the lower triangle
            a = a + np.triu(rng.standard_normal((n, n)), 1)
        return [a]
    return make_one


def _cholesky_properties(args, outs):
    a, (l,) = np.asarray(args[0], np.float64), outs
    tol = _tolerance(outs)
    assert np.all(np.triu(l, 1) == 0), "cholesky: L has entries above the diagonal"
    assert np.all(np.diagonal(l, axis1=-2, axis2=-1) > 0), "cholesky: L's diagonal is not > 0"
    l = np.asarray(l, np.float64)
    _assert_small("cholesky: L L^T = A", l @ _mT(l) - _symmetric_from(a, True), a, tol)


def _cholesky_sample(n, batch=(), junk_upper=False, name=""):
    return Sample(_stack(_spd(n, junk_upper), batch), {},
                  _loop_batch(lambda a: np.linalg.cholesky(np.tril(a) + np.tril(a, -1).T)),
                  (0,), name=name, properties=_cholesky_properties)


# --- triangular_solve --------------------------------------------------------------------------


def _solve_sample(m, n, batch=(), name="", **params):
    params = {"left_side": False, "lower": False, "transpose_a": False, "conjugate_a": False,
              "unit_diagonal": False, **params}

    def make_one(rng):
        a = rng.standard_normal((m, m)) + 4 * np.eye(m)
        b = rng.standard_normal((m, n) if params["left_side"] else (n, m))
        return [a, b]

    def reference_one(a, b):
        t = np.tril(a) if params["lower"] else np.triu(a)
        if params["unit_diagonal"]:
            t = t - np.diag(np.diag(t)) + np.eye(m)
        op = t.T if params["transpose_a"] else t
        return np.linalg.solve(op, b) if params["left_side"] else np.linalg.solve(op.T, b.T).T

    def properties(args, outs):
        a, b = (np.asarray(x, np.float64) for x in args)
        x = np.asarray(outs[0], np.float64)
        t = np.tril(a) if params["lower"] else np.triu(a)
        if params["unit_diagonal"]:
            t = t * (1 - np.eye(m)) + np.eye(m)
        op = _mT(t) if params["transpose_a"] else t
        residual = op @ x - b if params["left_side"] else x @ op - b
        _assert_small("triangular_solve: op(A) X = B", residual, b, _tolerance(outs))

    return Sample(_stack(make_one, batch), params, _loop_batch(reference_one), (0, 1),
                  name=name, properties=properties)


# --- lu ----------------------------------------------------------------------------------------


def _lu_reference(a):
    p, l, u = scipy.linalg.lu(a)
    m, n = a.shape
    k = min(m, n)
    packed = np.tril(l, -1)[:, :k] @ np.eye(k, n) + np.eye(m, k) @ np.triu(u)[:k]
    permutation = np.argmax(p, axis=0)  # a = p @ l @ u, so a[permutation] = l @ u
    # LAPACK's pivots: row i was swapped with row pivots[i], replayed on the permutation.
    pivots, order = np.zeros(k, np.int32), list(range(m))
    for i in range(k):
        j = order.index(permutation[i])
        pivots[i] = j
        order[i], order[j] = order[j], order[i]
    return [packed, pivots, permutation.astype(np.int32)]


def _lu_properties(args, outs):
    a = np.asarray(args[0], np.float64)
    packed, pivots, permutation = (np.asarray(o) for o in outs)
    m, n = a.shape[-2:]
    k = min(m, n)
    tol = _tolerance(outs[:1])
    packed = packed.astype(np.float64)
    l = np.tril(packed, -1)[..., :, :k] + np.eye(m, k)
    u = np.triu(packed)[..., :k, :]
    assert np.all(np.abs(l) <= 1 + tol), "lu: partial pivoting leaves |L| <= 1"
    rows = np.take_along_axis(a, permutation[..., :, None].astype(np.intp), axis=-2)
    _assert_small("lu: A[permutation] = L U", rows - l @ u, a, tol)
    flat_pivots, flat_perm = pivots.reshape(-1, k), permutation.reshape(-1, m)
    for piv, perm in zip(flat_pivots, flat_perm):
        order = list(range(m))  # LAPACK's swaps, replayed, give the permutation
        for i, j in enumerate(piv):
            order[i], order[j] = order[j], order[i]
        assert list(perm) == order, f"lu: permutation {perm} is not pivots {piv} replayed"


def _lu_sample(m, n, batch=(), name=""):
    make_one = (lambda rng: [_spectral(rng, m, n, np.linspace(3.0, 1.0, min(m, n)))])
    return Sample(_stack(make_one, batch), {}, _loop_batch(_lu_reference), (0,), name=name,
                  properties=_lu_properties)


# --- qr ----------------------------------------------------------------------------------------


def _qr_sample(m, n, batch=(), full_matrices=False, grad=True, name=""):
    make_one = (lambda rng: [_spectral(rng, m, n, np.linspace(3.0, 1.0, min(m, n)))])

    def reference_one(a):
        return list(np.linalg.qr(a, mode="complete" if full_matrices else "reduced"))

    def properties(args, outs):
        a = np.asarray(args[0], np.float64)
        q, r = outs
        k = m if full_matrices else min(m, n)
        assert q.shape[-2:] == (m, k) and r.shape[-2:] == (k, n), (q.shape, r.shape)
        assert np.all(np.tril(r, -1) == 0), "qr: R has entries below the diagonal"
        tol = _tolerance(outs)
        _assert_orthonormal_columns("qr: Q", q, tol)
        _assert_small("qr: Q R = A", np.asarray(q, np.float64) @ np.asarray(r, np.float64) - a,
                      a, tol)

    return Sample(_stack(make_one, batch), {"full_matrices": full_matrices},
                  _loop_batch(reference_one), (0,) if grad else (), name=name,
                  properties=properties)


# --- eigh --------------------------------------------------------------------------------------


def _eigh_sample(n, batch=(), lower=True, name=""):
    def make_one(rng):
        q = _orthogonal(rng, n)
        a = (q * np.linspace(-2.0, 3.0, n)) @ q.T  # Q diag(w) Q^T, distinct w
        junk = rng.standard_normal((n, n))  # the triangle eigh does not read
        return [a + (np.triu(junk, 1) if lower else np.tril(junk, -1))]

    def reference_one(a):
        w, v = np.linalg.eigh(a, UPLO="L" if lower else "U")
        return [_signed(v), w]

    def properties(args, outs):
        a = _symmetric_from(np.asarray(args[0], np.float64), lower)
        v, w = (np.asarray(o, np.float64) for o in outs)
        tol = _tolerance(outs)
        assert np.all(np.diff(w, axis=-1) > 0), f"eigh: eigenvalues {w} do not ascend"
        _assert_orthonormal_columns("eigh: V", v, tol)
        _assert_small("eigh: A V = V diag(w)", a @ v - v * w[..., None, :], a, tol)
        _assert_signs_fixed("eigh: V", v)

    return Sample(_stack(make_one, batch), {"lower": lower, "sort_eigenvalues": True},
                  _loop_batch(reference_one), (0,), name=name, properties=properties)


# --- svd ---------------------------------------------------------------------------------------


def _svd_sample(m, n, batch=(), full_matrices=False, compute_uv=True, grad=True, name=""):
    make_one = (lambda rng: [_spectral(rng, m, n, np.linspace(3.0, 1.0, min(m, n)))])

    def reference_one(a):
        if not compute_uv:
            return [np.linalg.svd(a, compute_uv=False)]
        u, s, vt = np.linalg.svd(a, full_matrices=full_matrices)
        k = len(s)
        signed = _signed(u)
        flips = np.sign(np.sum(signed[:, :k] * u[:, :k], axis=0))
        vt = vt.copy()
        vt[:k] *= flips[:, None]
        return [s, signed, vt]

    def properties(args, outs):
        a = np.asarray(args[0], np.float64)
        s = np.asarray(outs[0], np.float64)
        tol = _tolerance(outs)
        assert np.all(s >= 0) and np.all(np.diff(s, axis=-1) <= 0), f"svd: s = {s}"
        # sum of s^2 is |A|_F^2 whatever the vectors
        _assert_small("svd: sum s^2 = |A|_F^2", np.sum(s * s, -1) - np.sum(a * a, (-2, -1)),
                      a * a, tol)
        if not compute_uv:
            return
        u, vt = (np.asarray(o, np.float64) for o in outs[1:])
        k = min(m, n)
        assert u.shape[-2:] == ((m, m) if full_matrices else (m, k)), u.shape
        assert vt.shape[-2:] == ((n, n) if full_matrices else (k, n)), vt.shape
        _assert_orthonormal_columns("svd: U", u, tol)
        _assert_orthonormal_columns("svd: V", _mT(vt), tol)
        _assert_small("svd: U diag(s) V^T = A", (u[..., :k] * s[..., None, :]) @ vt[..., :k, :]
                      - a, a, tol)
        _assert_signs_fixed("svd: U", u)

    return Sample(_stack(make_one, batch),
                  {"full_matrices": full_matrices, "compute_uv": compute_uv},
                  _loop_batch(reference_one), (0,) if grad else (), name=name,
                  properties=properties)


SAMPLES = {
    "cholesky": [
        _cholesky_sample(3, name="3x3"),
        _cholesky_sample(3, batch=(2,), name="batched"),
        _cholesky_sample(4, junk_upper=True, name="upper triangle unread"),
        _cholesky_sample(1, name="1x1"),
    ],
    "triangular_solve": [
        _solve_sample(3, 2, left_side=True, lower=True, name="left lower"),
        _solve_sample(3, 2, left_side=False, lower=False, transpose_a=True,
                      name="right upper transposed"),
        _solve_sample(3, 2, left_side=True, lower=False, transpose_a=True, unit_diagonal=True,
                      name="left upper transposed unit diagonal"),
        _solve_sample(3, 2, batch=(2,), left_side=False, lower=True, unit_diagonal=True,
                      name="batched right lower unit diagonal"),
    ],
    "lu": [
        _lu_sample(4, 4, name="4x4"),
        _lu_sample(3, 3, batch=(2,), name="batched"),
        _lu_sample(5, 3, name="tall"),
        _lu_sample(3, 5, name="wide"),
    ],
    "qr": [
        _qr_sample(4, 3, name="tall reduced"),
        _qr_sample(3, 3, full_matrices=True, name="square complete"),
        _qr_sample(4, 3, batch=(2,), name="batched"),
        _qr_sample(4, 3, full_matrices=True, grad=False, name="tall complete"),
        _qr_sample(3, 4, grad=False, name="wide"),
    ],
    "eigh": [
        _eigh_sample(4, name="lower"),
        _eigh_sample(3, lower=False, name="upper"),
        _eigh_sample(3, batch=(2,), name="batched"),
    ],
    "svd": [
        _svd_sample(4, 3, name="tall"),
        _svd_sample(3, 4, name="wide"),
        _svd_sample(3, 3, full_matrices=True, name="square full"),
        _svd_sample(4, 3, batch=(2,), name="batched"),
        _svd_sample(4, 3, compute_uv=False, name="values only"),
        _svd_sample(4, 3, full_matrices=True, grad=False, name="tall full"),
    ],
}
