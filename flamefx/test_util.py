"""Checking derivatives numerically: ``check_grads`` for users who write custom rules.

>>> import flamefx.numpy as fnp
>>> check_grads(lambda x: fnp.sin(x) * x, (fnp.array([0.3, 1.2], dtype="float64"),), order=2)
"""

from __future__ import annotations

import numpy as np

from flamefx import core, dtypes, tree_util
from flamefx.errors import FlamefxError

_TOL = {np.dtype("float64"): 1e-5, np.dtype("float32"): 2e-2, np.dtype("float16"): 1e-1,
        dtypes.bfloat16: 1e-1, np.dtype("complex128"): 1e-5, np.dtype("complex64"): 2e-2}
_EPS = {np.dtype("float64"): 1e-5, np.dtype("float32"): 3e-3, np.dtype("float16"): 1e-1,
        dtypes.bfloat16: 1e-1, np.dtype("complex128"): 1e-5, np.dtype("complex64"): 3e-3}


def check_grads(f, args, order: int = 2, modes=("fwd", "rev"), atol=None, rtol=None, eps=None,
                seed: int = 0) -> None:
    """Checks ``f``'s derivatives up to ``order`` against finite differences.

    Forward mode: ``jvp`` against a central difference in one random direction. Reverse
    mode: the inner-product identity ``<u, J v> = <J^T u, v>`` with ``J v`` by central
    differences and ``J^T u`` by ``vjp``. Higher orders recurse on the jvp and vjp
    functions, as JAX's check_grads does. Complex arguments take random complex directions
    and the pairing is JAX's ``Re(sum(a * b))``. Raises AssertionError on a mismatch.
    """
    from flamefx.transforms.ad import jvp, vjp
    rng = np.random.default_rng(seed)
    args = tuple(args)

    def check(fun, fun_args, order_left):
        if "fwd" in modes:
            _check_jvp(fun, fun_args, rng, atol, rtol, eps)
            if order_left > 1:
                tangents = _random_like(fun_args, rng)
                _check_next(lambda p, t: jvp(fun, p, t), (fun_args, tangents), order_left - 1)
        if "rev" in modes:
            _check_vjp(fun, fun_args, rng, atol, rtol, eps)
            if order_left > 1:
                def f_vjp(*xs):
                    out, pullback = vjp(fun, *xs)
                    return pullback(out)
                _check_next(f_vjp, fun_args, order_left - 1)

    def _check_next(fun, fun_args, order_left):
        check(fun, fun_args, order_left)

    check(f, args, order)


def _float_leaves_only(tree):
    return [x for x in tree_util.tree_leaves(tree) if dtypes.is_inexact(core.get_aval(x).dtype)]


def _random_like(tree, rng):
    def draw(x):
        aval = core.get_aval(x)
        if not dtypes.is_inexact(aval.dtype):
            return x
        value = rng.standard_normal(aval.shape)
        if dtypes.is_complex(aval.dtype):
            value = value + 1j * rng.standard_normal(aval.shape)
        value = value.astype(aval.dtype)
        device = x.device if isinstance(x, core.Array) else None
        return core.to_array(value, device=device)
    return tree_util.tree_map(draw, tree)


def _axpy(a, t, x):
    """x + a * t over float leaves (integer leaves stay as they are)."""
    def step(xi, ti):
        if not dtypes.is_inexact(core.get_aval(xi).dtype):
            return xi
        return xi + ti * a
    return tree_util.tree_map(step, x, t)


def _numerical_jvp(f, args, tangents, eps):
    plus = f(*_axpy(eps, tangents, args))
    minus = f(*_axpy(-eps, tangents, args))
    return tree_util.tree_map(lambda p, m: (core.ensure_array(p) - core.ensure_array(m))
                              * (0.5 / eps), plus, minus)


def _tolerance(tree, atol, rtol, eps):
    leaves = _float_leaves_only(tree)
    worst = max((core.get_aval(x).dtype for x in leaves), key=lambda d: _TOL.get(d, 1e-5),
                default=np.dtype("float64"))
    return (atol if atol is not None else _TOL.get(worst, 1e-5),
            rtol if rtol is not None else _TOL.get(worst, 1e-5),
            eps if eps is not None else _EPS.get(worst, 1e-5))


def _check_jvp(f, args, rng, atol, rtol, eps):
    from flamefx.transforms.ad import jvp
    atol, rtol, eps = _tolerance(args, atol, rtol, eps)
    tangents = _random_like(args, rng)
    out, t_out = jvp(f, args, tangents)
    expected = _numerical_jvp(f, args, tangents, eps)
    _assert_close(out, f(*args), atol, rtol, "jvp primal output")
    _assert_close(t_out, expected, atol, rtol, "jvp tangent vs. central difference")


def _check_vjp(f, args, rng, atol, rtol, eps):
    from flamefx.transforms.ad import vjp
    atol, rtol, eps = _tolerance(args, atol, rtol, eps)
    out, pullback = vjp(f, *args)
    tangents = _random_like(args, rng)
    jv = _numerical_jvp(f, args, tangents, eps)
    u = _random_like(out, rng)
    ct = pullback(u)
    lhs = _inner(u, jv)
    rhs = _inner(ct, tangents)
    scale = max(1.0, abs(lhs), abs(rhs))
    if not abs(lhs - rhs) <= atol * scale + rtol * scale:  # a NaN on either side fails
        raise AssertionError(f"vjp check failed: <u, J v> = {lhs!r} (finite differences) but "
                             f"<J^T u, v> = {rhs!r} (vjp)")


def _inner(a, b) -> float:
    total = 0.0
    for x, y in zip(tree_util.tree_leaves(a), tree_util.tree_leaves(b)):
        if not dtypes.is_inexact(core.get_aval(x).dtype):
            continue
        # JAX's pairing: bilinear, Re(sum(x * y)), not the Hermitian inner product.
        product = np.asarray(x, dtype=np.complex128) * np.asarray(y, dtype=np.complex128)
        total += float(np.sum(product).real)
    return total


def _assert_close(actual, expected, atol, rtol, what):
    a_leaves = tree_util.tree_leaves(actual)
    e_leaves = tree_util.tree_leaves(expected)
    if len(a_leaves) != len(e_leaves):
        raise FlamefxError(f"{what}: {len(a_leaves)} leaves vs {len(e_leaves)}")
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(e) else np.float64
        a64 = np.asarray(a, dtype=wide)
        e64 = np.asarray(e, dtype=wide)
        if not np.allclose(a64, e64, atol=atol, rtol=rtol, equal_nan=True):
            err = np.max(np.abs(a64 - e64)) if a64.size else 0.0
            raise AssertionError(f"{what}: leaf {i} differs (max abs error {err:.3g}, atol "
                                 f"{atol}, rtol {rtol})\n got      {a64!r}\n expected {e64!r}")
