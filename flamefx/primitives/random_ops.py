"""The PRNG primitives: Threefry-2x32 (Salmon et al. 2011, Random123), 20 rounds, and
``random_gamma_grad``, the implicit-reparameterization derivative of gamma samples.

Every random function of flamefx.random is built on ``threefry2x32``, a counter-based
block cipher: two 32-bit key words and two 32-bit counter words in, two 32-bit words
out. It is a pure function, so the same key and counters give the same bits on the CPU
and on the GPU, under jit and under vmap.

>>> import numpy as np
>>> y0, y1 = threefry2x32(np.uint32(0x13198a2e), np.uint32(0x03707344),
...                       np.array([0x243f6a88], np.uint32), np.array([0x85a308d3], np.uint32))
>>> hex(int(y0[0])), hex(int(y1[0]))
('0xc4923a9c', '0x483df7a0')
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.special

from flamefx import dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.devices import cupy
from flamefx.errors import FlamefxTypeError
from flamefx.primitives.elementwise import (
    FLOAT, declare_elementwise, div, full_like, log, mul, neg, same_type_rule, sub)
from flamefx.primitives.special import central_difference_in_a, digamma, gammainc_grad_a

# Random123's rotation constants for Threefry-2x32: rounds alternate between the two rows.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA  # Threefish's key-schedule constant


def _abstract_eval(k0, k1, x0, x1):
    for name, aval in (("k0", k0), ("k1", k1), ("x0", x0), ("x1", x1)):
        if aval.dtype != dtypes.uint32:
            raise FlamefxTypeError(f"{name} must be uint32, got {aval.dtype}")
    if x0.shape != x1.shape:
        raise FlamefxTypeError(f"counters x0 {x0.shape} and x1 {x1.shape} must have one shape")
    for name, aval in (("k0", k0), ("k1", k1)):
        if aval.shape not in ((), x0.shape):
            raise FlamefxTypeError(f"key word {name} {aval.shape} must be 0-d or have the "
                                   f"counters' shape {x0.shape}")
    return [ShapedArray(x0.shape, dtypes.uint32), ShapedArray(x0.shape, dtypes.uint32)]


def _rotate_left(v, r: int):
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def _threefry_numpy(k0, k1, x0, x1):
    """The 20 rounds on uint32 NumPy arrays (wrapping arithmetic, as in C)."""
    k0, k1 = np.asarray(k0, np.uint32), np.asarray(k1, np.uint32)
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(_KEY_PARITY))
    with np.errstate(over="ignore"):
        v0 = np.asarray(x0, np.uint32) + ks[0]
        v1 = np.asarray(x1, np.uint32) + ks[1]
        for block in range(5):
            for r in _ROTATIONS[block % 2]:
                v0 = v0 + v1
                v1 = _rotate_left(v1, r) ^ v0
            # Key injection after every four rounds: rotate the schedule, add the block number.
            v0 = v0 + ks[(block + 1) % 3]
            v1 = v1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return [v0.astype(np.uint32), v1.astype(np.uint32)]


def _impl(k0, k1, x0, x1):
    y0, y1 = _threefry_numpy(k0, k1, x0, x1)
    return [np.broadcast_to(y0, x0.shape).copy(), np.broadcast_to(y1, x0.shape).copy()]


def _cuda_source() -> str:
    rounds = []
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            rounds.append(f"v0 += v1; v1 = ((v1 << {r}) | (v1 >> {32 - r})) ^ v0;")
        rounds.append(f"v0 += ks[{(block + 1) % 3}]; v1 += ks[{(block + 2) % 3}] + {block + 1}u;")
    body = "\n".join(rounds)
    return (f"unsigned int ks[3] = {{k0, k1, k0 ^ k1 ^ {_KEY_PARITY:#x}u}};\n"
            f"unsigned int v0 = x0 + ks[0];\nunsigned int v1 = x1 + ks[1];\n"
            f"{body}\ny0 = v0;\ny1 = v1;\n")


@functools.cache
def _cuda_kernel():
    cp = cupy()
    return cp.ElementwiseKernel(
        "uint32 k0, uint32 k1, uint32 x0, uint32 x1", "uint32 y0, uint32 y1",
        _cuda_source(), "flamefx_threefry2x32")


def _cuda_impl(k0, k1, x0, x1):
    cp = cupy()
    y0 = cp.empty(x0.shape, cp.uint32)
    y1 = cp.empty(x0.shape, cp.uint32)
    _cuda_kernel()(k0, k1, x0, x1, y0, y1)
    return [y0, y1]


def _batch(axis_size, args, bdims):
    """Elementwise batching: every operand gets the batch axis in front, except unbatched
    0-d key words, which the kernel broadcasts itself."""
    from flamefx.primitives.structural import broadcast_in_dim
    from flamefx.transforms.batching import to_front

    x, x_bdim = args[2], bdims[2]
    x_shape = x.shape if x_bdim is None else x.shape[:x_bdim] + x.shape[x_bdim + 1:]
    out_shape = (axis_size,) + tuple(x_shape)
    moved = []
    for i, (arg, bdim) in enumerate(zip(args, bdims)):
        if i < 2 and bdim is None and arg.ndim == 0:
            moved.append(arg)
            continue
        arg = to_front(arg, bdim, axis_size)
        if arg.shape != out_shape:  # a batched 0-d key word: one key per example
            arg = broadcast_in_dim(arg, out_shape, (0,))
        moved.append(arg)
    return threefry2x32(*moved), [0, 0]


threefry2x32_p = Primitive(
    "threefry2x32", abstract_eval=_abstract_eval, impl=_impl, cuda_impl=_cuda_impl,
    batch=_batch, multiple_results=True, differentiable=False)


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 of counters ``(x0, x1)`` under key ``(k0, k1)``; returns ``[y0, y1]``.

    All operands are uint32; ``x0`` and ``x1`` have one shape, the key words are 0-d or
    of that shape.
    """
    return threefry2x32_p.bind(k0, k1, x0, x1)


# --- random_gamma_grad ---------------------------------------------------------------------


def _gamma_grad_on(xp, special, a, x):
    """dx/da at fixed P(a, x) (P the regularized lower incomplete gamma), in float64:
    ``-(dP/da) / (dP/dx)``. dP/da is special.gammainc_grad_a's central difference; dP/dx
    is the gamma density, taken in logs so that tiny densities and tiny dP/da do not under-
    or overflow before they divide."""
    out_dtype = x.dtype
    dp_da = gammainc_grad_a(xp, special, a, x)
    a, x = a.astype(np.float64), x.astype(np.float64)
    log_density = (a - 1) * xp.log(x) - x - special.gammaln(a)
    magnitude = xp.exp(xp.log(xp.abs(dp_da)) - log_density)
    grad = xp.where(dp_da == 0, 0.0, -xp.sign(dp_da) * magnitude)
    return grad.astype(out_dtype)


def _gamma_grad_numpy(a, x):
    with np.errstate(all="ignore"):
        return _gamma_grad_on(np, scipy.special, a, x)


def _gamma_grad_cuda(a, x):
    import cupyx.scipy.special as cupy_special
    return [_gamma_grad_on(cupy(), cupy_special, a, x)]


def _gamma_grad_partials(a, x, out):
    """d/dx in closed form: with p the density, d(dP/da)/dx = p (log x - digamma(a)) and
    (dp/dx)/p = (a-1)/x - 1. d/da has no closed form: special.central_difference_in_a of
    the primitive itself, so that every order traces."""
    one = full_like(a, 1)
    dx = sub(neg(sub(log(x), digamma(a))), mul(out, sub(div(sub(a, one), x), one)))
    return [central_difference_in_a(lambda b: random_gamma_grad(b, x), a), dx]


random_gamma_grad_p = declare_elementwise(
    "random_gamma_grad", same_type_rule(FLOAT), _gamma_grad_numpy,
    cuda_impl=_gamma_grad_cuda, partials=_gamma_grad_partials)


def random_gamma_grad(a, x):
    """The derivative of a Gamma(``a``) sample ``x`` with respect to ``a`` at a fixed
    quantile (implicit reparameterization; lax.random_gamma_grad). Same-typed float operands.

    >>> import numpy as np
    >>> round(float(random_gamma_grad(np.float64(1.0), np.float64(1.0))), 6)
    1.173563
    """
    return random_gamma_grad_p.bind(a, x)
