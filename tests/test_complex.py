"""Complex numbers: values against NumPy's complex128, derivatives against finite differences
in the complex plane and against numbers taken from JAX (jax 0.10.2, x64 on), JAX's autodiff
conventions (grad's conjugate convention, holomorphic=True, its errors), and complex arrays
through reductions, matmul, structural ops, jit and vmap. The registry suite checks every
complex-capable primitive on its complex128 samples (tests/samples/elementwise.py).
"""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxTypeError
from flamefx.test_util import check_grads

Z = np.array([1 + 2j, -0.5 + 0.3j, 0.7 - 1.1j])
W = np.array([0.4 - 0.9j, 1.3 + 0.2j, -0.8 - 0.6j])


# complex128 throughout (NumPy complex128 data would otherwise become complex64).
pytestmark = pytest.mark.usefixtures("x64")


def _close(actual, expected, tol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn,reference", [
    (fnp.exp, np.exp), (fnp.log, np.log), (fnp.sqrt, np.sqrt), (fnp.sin, np.sin),
    (fnp.cos, np.cos), (fnp.tan, np.tan), (fnp.tanh, np.tanh), (fnp.sinh, np.sinh),
    (fnp.cosh, np.cosh), (fnp.log1p, np.log1p), (fnp.expm1, np.expm1),
    (fnp.arcsin, np.arcsin), (fnp.arccos, np.arccos), (fnp.arctan, np.arctan),
    (fnp.arcsinh, np.arcsinh), (fnp.arccosh, np.arccosh), (fnp.arctanh, np.arctanh),
    (fnp.abs, np.abs), (fnp.sign, np.sign), (fnp.square, np.square),
    (fnp.reciprocal, np.reciprocal), (fnp.negative, np.negative), (fnp.exp2, np.exp2),
    (fnp.log10, np.log10), (fnp.real, np.real), (fnp.imag, np.imag), (fnp.conj, np.conj),
    (fnp.angle, np.angle), (fnp.isfinite, np.isfinite), (fnp.isnan, np.isnan),
    (fnp.sinc, np.sinc), (fnp.rad2deg, lambda z: z * (180 / np.pi)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_unary_values_match_numpy(fn, reference):
    out = fn(Z)
    expected = reference(Z)
    assert out.dtype == expected.dtype, (out.dtype, expected.dtype)
    _close(out, expected)


@pytest.mark.parametrize("fn,reference", [
    (fnp.add, np.add), (fnp.subtract, np.subtract), (fnp.multiply, np.multiply),
    (fnp.divide, np.divide), (fnp.power, np.power), (fnp.equal, np.equal),
    (fnp.not_equal, np.not_equal),
], ids=lambda v: getattr(v, "__name__", ""))
def test_binary_values_match_numpy(fn, reference):
    _close(fn(Z, W), reference(Z, W))
    _close(fn(Z, 2.5), reference(Z, 2.5))
    _close(fn(1.5j, Z), reference(1.5j, Z))


def test_parts_tests_and_array_methods():
    z = fnp.asarray(Z)
    _close(z.real, Z.real)
    _close(z.imag, Z.imag)
    _close(z.conj(), Z.conj())
    _close(z.conjugate(), Z.conj())
    _close(fnp.angle(Z, deg=True), np.angle(Z, deg=True))
    _close(lax.complex(fnp.asarray(Z.real), fnp.asarray(Z.imag)), Z)
    assert fnp.iscomplex(np.array([1 + 0j, 1j])).tolist() == [False, True]
    assert fnp.isreal(np.array([1 + 0j, 1j])).tolist() == [True, False]
    assert fnp.imag(fnp.ones(2)).tolist() == [0.0, 0.0] and fnp.real(2.0).item() == 2.0
    assert fnp.conjugate(np.arange(3)).dtype == fnp.asarray(np.arange(3)).dtype
    inf = lax.complex(fnp.asarray(np.array([np.inf])), fnp.asarray(np.array([0.0])))
    assert np.asarray(inf).tolist() == [complex(np.inf, 0.0)]  # not inf + nan j
    assert fnp.isinf(np.array([complex(np.inf, 1), 1j])).tolist() == [True, False]


def test_rounding_nan_to_num_and_isclose_take_parts():
    z = np.array([1.26 + 2.5j, complex(np.nan, np.inf), -0.5 - 1.51j])
    _close(fnp.round(z), np.round(z))
    _close(fnp.round(z, 1), np.round(z, 1))
    _close(fnp.nan_to_num(z), np.nan_to_num(z))
    assert fnp.isclose(z, z + 1e-9).tolist() == np.isclose(z, z + 1e-9).tolist()
    assert bool(fnp.allclose(Z, Z * (1 + 1e-9))) and not bool(fnp.allclose(Z, W))
    for fn in (fnp.floor, fnp.ceil, fnp.trunc, fnp.fabs):
        with pytest.raises(FlamefxTypeError, match="not defined for complex"):
            fn(Z)


def test_casts_to_and_from_complex():
    z = fnp.asarray(Z)
    _close(z.astype(fnp.float64), Z.real)  # JAX keeps the real part
    assert z.astype(fnp.int32).tolist() == [1, 0, 0]
    assert fnp.asarray(np.array([0j, 1j, 1])).astype(fnp.bool_).tolist() == [False, True, True]
    assert fnp.arange(3.0).astype(fnp.complex128).tolist() == [0j, 1 + 0j, 2 + 0j]
    assert fnp.ones(2, fnp.bfloat16).astype(fnp.complex64).dtype == fnp.complex64
    assert z.astype(fnp.complex64).dtype == fnp.complex64


def test_reductions_and_matmul_match_numpy():
    m = (np.arange(12).reshape(3, 4) - 5.5) * (0.3 - 0.7j)
    for fn, reference in ((fnp.sum, np.sum), (fnp.prod, np.prod), (fnp.mean, np.mean)):
        _close(fn(m), reference(m))
        _close(fn(m, axis=1), reference(m, axis=1))
    _close(fnp.cumsum(m, axis=1), np.cumsum(m, axis=1))
    _close(lax.cumsum(fnp.asarray(m), 0, reverse=True), np.cumsum(m[::-1], axis=0)[::-1])
    check_grads(lambda x: fnp.cumsum(x, axis=0) * fnp.prod(x, axis=0) + fnp.mean(x),
                (fnp.asarray(m[:, :2] / 4),), order=2)
    for fn, reference in ((fnp.var, np.var), (fnp.std, np.std)):
        assert fn(m).dtype == fnp.float64  # real, as NumPy and JAX
        _close(fn(m, axis=0), reference(m, axis=0))
    _close(fnp.asarray(m) @ fnp.asarray(m.T), m @ m.T)
    _close(fnp.matmul(m.T, Z), m.T @ Z)
    _close(fnp.einsum("ij,j->i", m, np.arange(4.0)), m @ np.arange(4.0))
    _close(fnp.dot(Z, W), np.dot(Z, W))
    _close(fnp.vdot(Z, W), np.vdot(Z, W))  # conjugates its first argument
    for order in (None, 1, 2, np.inf):
        _close(fnp.linalg.norm(Z, order), np.linalg.norm(Z, order))
    _close(fnp.linalg.norm(m), np.linalg.norm(m))
    _close(fnp.linalg.vector_norm(m, axis=1), np.linalg.norm(m, axis=1))
    _close(flamefx.grad(fnp.linalg.norm)(Z), Z.conj() / np.linalg.norm(Z))


def test_structural_and_indexing_ops_keep_the_dtype():
    z = fnp.asarray(Z)
    _close(fnp.reshape(z, (3, 1)).T, Z.reshape(3, 1).T)
    _close(fnp.concatenate([z, z[:2]]), np.concatenate([Z, Z[:2]]))
    _close(fnp.stack([z, z]), np.stack([Z, Z]))
    _close(z[::-1], Z[::-1])
    _close(fnp.take(z, np.array([2, 0])), Z[[2, 0]])
    _close(fnp.pad(z, 1), np.pad(Z, 1))
    _close(fnp.where(np.array([True, False, True]), z, 1j), np.where([1, 0, 1], Z, 1j))
    _close(z.at[1].set(5j), np.array([Z[0], 5j, Z[2]]))
    _close(z.at[np.array([0, 0])].add(1j), Z + np.array([2j, 0, 0]))
    _close(fnp.broadcast_to(z, (2, 3)), np.broadcast_to(Z, (2, 3)))
    _close(lax.dynamic_slice(z, (1,), (2,)), Z[1:3])


# --- derivatives: JAX's conventions --------------------------------------------------------------


def _fd_real_gradient(f, z, h=1e-6):
    """JAX's gradient of a real-valued f at complex z: df/dx - i df/dy (central differences)."""
    out = np.zeros_like(z)
    for k in range(z.size):
        e = np.zeros_like(z)
        e[k] = 1
        dx = (f(z + h * e) - f(z - h * e)) / (2 * h)
        dy = (f(z + 1j * h * e) - f(z - 1j * h * e)) / (2 * h)
        out[k] = dx - 1j * dy
    return out


def _real_valued(z):
    return fnp.real(fnp.sum(fnp.sin(z) * fnp.conj(z) + fnp.abs(z) ** 3 / (1 + z * z)))


def test_grad_of_real_valued_function_is_jax_conjugate_convention():
    g = flamefx.grad(_real_valued)(fnp.asarray(Z))
    _close(g, _fd_real_gradient(lambda z: float(_real_valued(fnp.asarray(z))), Z), tol=1e-7)
    # JAX's own numbers for the first term alone and for |z|.
    g1 = flamefx.grad(lambda z: fnp.real(fnp.sum(fnp.sin(z) * fnp.conj(z))))(Z[:2])
    _close(g1, [-0.90529408 - 9.07694485j, -0.91604896 - 0.61545036j], tol=1e-8)
    assert complex(flamefx.grad(fnp.abs)(3 + 4j)) == pytest.approx(0.6 - 0.8j)
    assert complex(flamefx.grad(lambda z: fnp.real(z) ** 2 + fnp.imag(z) ** 2)(3 + 4j)) == \
        pytest.approx(6 - 8j)
    assert complex(flamefx.grad(fnp.angle)(1 + 1j)) == pytest.approx(-0.5 - 0.5j)
    assert complex(flamefx.grad(lambda z: fnp.imag(1 / z))(1 + 2j)) == pytest.approx(0.16 - 0.12j)


def test_holomorphic_grad_and_jacobians():
    def g(z):
        return z ** 3 + fnp.exp(z)
    z0, h = 0.3 + 0.7j, 1e-6
    expected = (complex(g(z0 + h)) - complex(g(z0 - h))) / (2 * h)
    got = complex(flamefx.grad(g, holomorphic=True)(z0))
    assert got == pytest.approx(expected, rel=1e-8)
    assert got == pytest.approx(-0.16757103708833831 + 2.12960291911404j, rel=1e-12)  # JAX

    def h_fn(z):
        return z * fnp.sum(z)
    jac = [[4 + 1j, 1 + 1j], [2 - 1j, 5 - 1j]]  # JAX's jacrev/jacfwd, holomorphic=True
    zz = np.array([1 + 1j, 2 - 1j])
    _close(flamefx.jacrev(h_fn, holomorphic=True)(zz), jac)
    _close(flamefx.jacfwd(h_fn, holomorphic=True)(zz), jac)
    hess = flamefx.hessian(lambda z: fnp.sum(z ** 3), holomorphic=True)(zz)
    _close(hess, np.diag(6 * zz))


def test_vjp_and_jvp_follow_jax_transposes():
    zz = np.array([1 + 1j, 2 - 1j])
    _, pullback = flamefx.vjp(lambda z: z ** 2, zz)
    _close(pullback(np.array([1j, 2.0 + 0j]))[0], [-2 + 2j, 8 - 4j])
    _close(flamefx.vjp(fnp.conj, zz)[1](np.array([1j, 1 + 0j]))[0], [-1j, 1])
    _close(flamefx.vjp(fnp.real, zz)[1](np.array([1.0, 2.0]))[0], [1, 2])
    _close(flamefx.vjp(fnp.imag, zz)[1](np.array([1.0, 2.0]))[0], [-1j, -2j])
    _, t = flamefx.jvp(fnp.abs, (zz,), (np.array([1 + 0j, 1j]),))
    _close(t, [0.70710678118654752, -0.44721359549995794])
    grads = flamefx.grad(lambda x, y: fnp.abs(lax.complex(x, y)) ** 2, argnums=(0, 1))(3.0, 4.0)
    assert [float(g) for g in grads] == pytest.approx([6.0, 8.0])
    assert float(flamefx.grad(lambda x: fnp.real(fnp.exp(1j * x)))(1.0)) == \
        pytest.approx(-np.sin(1.0))
    assert float(flamefx.grad(lambda x: fnp.real(fnp.asarray(x).astype(fnp.complex128)
                                                 * (1 + 2j)))(1.5)) == 1.0


def test_gradients_through_reductions_and_matmul():
    zz = np.array([1 + 1j, 2 - 1j])
    _close(flamefx.grad(lambda z: fnp.real(fnp.prod(z)))(zz), [2 - 1j, 1 + 1j])
    _close(flamefx.grad(lambda z: fnp.imag(fnp.mean(z * z)))(zz), [1 - 1j, -1 - 2j])
    a = np.array([[1 + 1j, 2 - 0.5j], [0.3j, -1 + 0.2j]])
    b = np.array([[0.5, 1j], [2 - 1j, 1]])

    def power(a):
        product = a @ b
        return fnp.real(fnp.sum(product * fnp.conj(product)))
    _close(flamefx.grad(power)(a), [[5 + 4.5j, 23 + 1j], [-1.4 - 4.15j, -12.9 - 3j]])


def test_check_grads_in_the_complex_plane():
    z, w = fnp.asarray(Z), fnp.asarray(W)
    check_grads(lambda z, w: fnp.exp(z) * w / (1 + z * z) + fnp.sqrt(w), (z, w), order=2)
    check_grads(lambda z: fnp.abs(z) * fnp.conj(z) + fnp.real(z) * fnp.imag(z), (z,), order=2)
    check_grads(lambda z: fnp.sum(fnp.reshape(z, (3, 1)) @ fnp.reshape(z, (1, 3)), axis=0),
                (z,), order=2)
    check_grads(lambda x, y: lax.complex(x, y) ** 2,
                (fnp.asarray(Z.real), fnp.asarray(Z.imag)), order=2)


def test_check_grads_through_structural_and_indexing_ops():
    z = fnp.asarray(np.concatenate([Z, [2 + 0.1j]]))
    check_grads(lambda z: fnp.take(z, np.array([2, 0, 2])) * z[1:].sum(), (z,), order=2)
    check_grads(lambda z: z.at[np.array([0, 0])].add(z[2]) * fnp.flip(z), (z,), order=2)
    check_grads(lambda z: fnp.pad(fnp.concatenate([z, z[::2]]), 1) ** 2, (z,), order=2)
    check_grads(lambda z: lax.dynamic_slice(z, (1,), (2,))
                * fnp.transpose(fnp.reshape(z, (2, 2))).ravel()[:2], (z,), order=2)
    check_grads(lambda z: fnp.where(fnp.abs(z) > 1, z * z, fnp.conj(z)), (z,), order=2)
    check_grads(lambda z: fnp.einsum("i,j->ij", z, fnp.conj(z)), (z,), order=2)


def test_complex_outputs_need_holomorphic_and_holomorphic_needs_complex():
    with pytest.raises(TypeError, match="real-valued outputs.*complex128.*holomorphic=True"):
        flamefx.grad(lambda z: z * z)(1j)
    with pytest.raises(FlamefxTypeError, match="holomorphic=True requires inputs with complex"):
        flamefx.grad(lambda x: x * x, holomorphic=True)(1.0)
    with pytest.raises(FlamefxTypeError, match="holomorphic=True requires outputs with complex"):
        flamefx.grad(lambda z: fnp.real(z), holomorphic=True)(1j)
    with pytest.raises(FlamefxTypeError, match="jacrev requires real-valued outputs"):
        flamefx.jacrev(lambda z: z * z)(np.array([1j]))
    with pytest.raises(FlamefxTypeError, match="jacfwd requires real-valued inputs"):
        flamefx.jacfwd(lambda z: fnp.real(z))(np.array([1j]))
    # Complex inputs with a real output are fine without holomorphic=True, as in JAX.
    _close(flamefx.jacrev(lambda z: fnp.abs(z))(np.array([3 + 4j])), [[0.6 - 0.8j]])


def test_unsupported_complex_ops_raise():
    with pytest.raises(FlamefxTypeError, match="max.*complex128"):
        fnp.maximum(Z, W)
    with pytest.raises(FlamefxTypeError, match="lt.*complex128"):
        fnp.less(Z, W)
    with pytest.raises(FlamefxTypeError, match="complex needs float32 or float64"):
        lax.complex(fnp.ones(2, fnp.float16), fnp.ones(2, fnp.float16))
    with pytest.raises(FlamefxTypeError, match="real needs a complex operand"):
        lax.real(fnp.ones(2))


# --- transforms --------------------------------------------------------------------------------


def test_jit_vmap_and_fusion_leave_complex_unfused():
    from flamefx.kernels import fusion

    def f(z, w):
        return fnp.exp(z) * w + fnp.abs(z) + fnp.sum(z * w)
    _close(flamefx.jit(f)(Z, W), f(Z, W))
    _close(flamefx.vmap(f, in_axes=(0, None))(np.stack([Z, W]), W),
           np.stack([np.asarray(f(Z, W)), np.asarray(f(W, W))]))

    def mixed(x, z):  # a real chain feeding complex work
        y = fnp.exp(x) * 2 + 1
        return fnp.sum(y * z * z + 1j), fnp.sum(y)
    plan = fusion.plan(flamefx.make_jaxpr(mixed)(np.ones(4), Z[:1].repeat(4)).jaxpr)
    fused = [s for s in plan.steps if isinstance(s, fusion.FusedKernel)]
    assert [e.prim.name for e in fused[0].eqns].count("exp") == 1  # the real chain still fuses
    for kernel in fused:
        for eqn in kernel.eqns + kernel.reductions + kernel.epilogue:
            assert not any(v.aval.dtype.kind == "c" for v in (*eqn.invars, *eqn.outvars))
    complex_steps = [s for s in plan.steps if not isinstance(s, fusion.FusedKernel)]
    assert {s.eqn.prim.name for s in complex_steps} >= {"convert_element_type", "mul", "add"}
    grad_jit = flamefx.jit(flamefx.grad(_real_valued))
    _close(grad_jit(Z), flamefx.grad(_real_valued)(Z))


def test_gradients_through_jit_checkpoint_and_control_flow():
    def cube(z):
        return fnp.real(fnp.sum(z * fnp.conj(z) * z))
    expected = flamefx.grad(cube)(Z)
    _close(flamefx.grad(flamefx.jit(cube))(Z), expected)
    _close(flamefx.grad(flamefx.checkpoint(cube))(Z), expected)
    _close(flamefx.jvp(flamefx.jit(lambda z: z * z), (Z,), (W,))[1], 2 * Z * W)

    def looped(z):
        return fnp.real(lax.fori_loop(0, 2, lambda i, c: c * z, z).sum())
    _close(flamefx.grad(looped)(Z), 3 * Z ** 2)  # grad of Re g(z) is g'(z) in JAX's convention

    def scanned(z):
        carry, _ = lax.scan(lambda c, x: (c * x, c), z[0], z)
        return fnp.real(carry)
    _close(flamefx.grad(scanned)(Z), flamefx.grad(lambda z: fnp.real(z[0] ** 2 * z[1] * z[2]))(Z))

    def branched(z):
        return fnp.real(lax.cond(True, lambda z: z * z, lambda z: z, z).sum())
    _close(flamefx.grad(branched)(Z), 2 * Z)


def test_complex64_without_x64():
    flamefx.config.update("enable_x64", False)
    z = fnp.asarray(Z)
    assert z.dtype == fnp.complex64 and (z * 2.0).dtype == fnp.complex64
    assert fnp.abs(z).dtype == fnp.float32 and fnp.real(z).dtype == fnp.float32
    assert flamefx.grad(lambda z: fnp.real(fnp.sum(z * z)))(z).dtype == fnp.complex64
    np.testing.assert_allclose(np.asarray(fnp.exp(z)), np.exp(Z), rtol=1e-6)


# --- GPU: the CuPy paths for complex operands -----------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_on_the_gpu_matches_the_cpu(dtype):
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]

    def f(z, w):
        product = fnp.exp(z) * w - z / w + fnp.sqrt(z) * fnp.sin(z) + fnp.cos(w) * fnp.tanh(z)
        picked = fnp.where(fnp.abs(z) > 1, product ** 2, fnp.conj(product) ** 1.5)
        parts = lax.complex(fnp.real(picked), fnp.imag(picked) + fnp.abs(w))
        pairs = fnp.reshape(parts, (3, 1)) @ fnp.reshape(w, (1, 3))
        return fnp.sum(pairs, axis=0), fnp.log(parts).astype(fnp.float32), parts == z
    z, w = Z.astype(dtype), W.astype(dtype)
    for fn in (f, flamefx.jit(f)):
        on_gpu = fn(flamefx.device_put(z, gpu), flamefx.device_put(w, gpu))
        on_cpu = fn(flamefx.device_put(z, cpu), flamefx.device_put(w, cpu))
        for g, c in zip(on_gpu, on_cpu):
            assert g.device.platform == "gpu" and g.dtype == c.dtype
            np.testing.assert_allclose(np.asarray(g), np.asarray(c), rtol=1e-4, atol=1e-5)
    grads = [flamefx.grad(_real_valued)(flamefx.device_put(z, d)) for d in (gpu, cpu)]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-4, atol=1e-5)
    table = flamefx.device_put(np.arange(6).reshape(3, 2) * (1 + 1j), gpu).astype(dtype)
    picked = table[np.array([2, 0, 2])].at[np.array([0, 0])].add(1j)
    expected = (np.arange(6).reshape(3, 2) * (1 + 1j))[[2, 0, 2]]
    expected[0] += 2j
    np.testing.assert_allclose(np.asarray(picked), expected)
