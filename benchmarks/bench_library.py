"""L1-L6: the vendor-library operations (cuSOLVER, cuFFT, CUB) side by side with JAX.

    python benchmarks/bench_library.py          # on the GPU machine; JAX if importable

Both systems call the same vendor libraries, so the distance between them is overhead
(dispatch, layout copies, workspace queries). Each workload is one jitted function:

L1 batched Cholesky + solve: 1024 SPD matrices of 64x64 and a right-hand side each.
L2 eigh of one 256x256 symmetric matrix.
L3 svd of one 512x512 matrix (singular values and vectors).
L4 rfft over 2^22 float32.
L5 sort of 2^24 float32.
L6 top_k over (4096, 32000) float32, k = 50.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness

CHOL_BATCH, CHOL_N = 1024, 64
EIGH_N, SVD_N = 256, 512
RFFT_N, SORT_N = 1 << 22, 1 << 24
TOPK_ROWS, TOPK_COLS, TOPK_K = 4096, 32000, 50


def _inputs() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((CHOL_BATCH, CHOL_N, CHOL_N)).astype(np.float32)
    spd = a @ a.transpose(0, 2, 1) / CHOL_N + np.eye(CHOL_N, dtype=np.float32)
    rhs = rng.standard_normal((CHOL_BATCH, CHOL_N, 1)).astype(np.float32)
    sym = rng.standard_normal((EIGH_N, EIGH_N)).astype(np.float32)
    return {
        "L1": [spd, rhs],
        "L2": [(sym + sym.T) / 2],
        "L3": [rng.standard_normal((SVD_N, SVD_N)).astype(np.float32)],
        "L4": [rng.standard_normal(RFFT_N).astype(np.float32)],
        "L5": [rng.standard_normal(SORT_N).astype(np.float32)],
        "L6": [rng.standard_normal((TOPK_ROWS, TOPK_COLS)).astype(np.float32)],
    }


def _workloads(xnp, scipy_linalg, lax) -> dict:
    """The six functions written once against a JAX-like namespace (flamefx's or JAX's)."""
    def cholesky_solve(a, b):
        factor = xnp.linalg.cholesky(a)
        y = scipy_linalg.solve_triangular(factor, b, lower=True)
        return scipy_linalg.solve_triangular(factor, y, lower=True, trans="T")

    return {
        "L1": cholesky_solve,
        "L2": lambda a: xnp.linalg.eigh(a),
        "L3": lambda a: xnp.linalg.svd(a, full_matrices=False),
        "L4": lambda x: xnp.fft.rfft(x),
        "L5": lambda x: xnp.sort(x),
        "L6": lambda x: lax.top_k(x, TOPK_K),
    }


NAMES = {
    "L1": f"batched cholesky + solve ({CHOL_BATCH} x {CHOL_N}x{CHOL_N})",
    "L2": f"eigh ({EIGH_N}x{EIGH_N})",
    "L3": f"svd ({SVD_N}x{SVD_N})",
    "L4": "rfft (2^22 float32)",
    "L5": "sort (2^24 float32)",
    "L6": f"top_k ({TOPK_ROWS}x{TOPK_COLS}, k={TOPK_K})",
}


def _runs(jit, to_device, xnp, scipy_linalg, lax, inputs) -> dict:
    """Each workload jitted through one library (flamefx or JAX, the same code), its inputs
    on the device: key -> a function that runs it once."""
    runs = {}
    for key, fn in _workloads(xnp, scipy_linalg, lax).items():
        args = [to_device(a) for a in inputs[key]]
        step = jit(fn)
        runs[key] = (lambda step=step, args=args: step(*args))
    return runs


def _flamefx_runs(inputs) -> dict:
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import lax
    from flamefx.scipy import linalg as scipy_linalg
    return _runs(flamefx.jit, fnp.asarray, fnp, scipy_linalg, lax, inputs)


def _jax_runs(inputs) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy import linalg as scipy_linalg
    return _runs(jax.jit, jax.device_put, jnp, scipy_linalg, lax, inputs)


def _check_agreement(flamefx_runs, jax_runs) -> None:
    """Sorted values and top-k values must agree; factorizations are compared by what is
    unique about them (solutions, eigenvalues, singular values), not by sign conventions."""
    for key, index in (("L1", None), ("L2", 0), ("L3", 1), ("L4", None), ("L5", None),
                       ("L6", 0)):
        ours, theirs = flamefx_runs[key](), jax_runs[key]()
        if index is not None:
            ours, theirs = ours[index], theirs[index]
        err = float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))
        scale = float(np.max(np.abs(np.asarray(theirs)))) or 1.0
        print(f"  {key}: max |flamefx - JAX| / max|JAX| = {err / scale:.2e}")


def main() -> None:
    harness.configure_precision()
    inputs = _inputs()
    table = harness.Table()
    ours = harness.safe(lambda: _flamefx_runs(inputs)) or {}
    jax = harness.try_import("jax")
    theirs = (harness.safe(lambda: _jax_runs(inputs)) or {}) if jax is not None else {}
    if ours and theirs:
        harness.safe(lambda: _check_agreement(ours, theirs))
    for key, name in NAMES.items():
        print(name)
        ours_ms = harness.safe(lambda: harness.time_calls(ours[key], harness.flamefx_sync))
        theirs_ms = (harness.safe(lambda: harness.time_calls(theirs[key], harness.jax_sync))
                     if key in theirs else None)
        table.add(f"{key} {name}", ours_ms, theirs_ms)
    print(table.render())


if __name__ == "__main__":
    main()
