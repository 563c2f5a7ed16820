"""Samples for the PRNG primitives: a scalar pure-Python Threefry as threefry2x32's reference,
and for random_gamma_grad the derivative of SciPy's inverse incomplete gamma."""

import numpy as np
import scipy.special

from tests.samples import Sample

_MASK = 0xFFFFFFFF


def _threefry_scalar(k0: int, k1: int, x0: int, x1: int) -> tuple[int, int]:
    """Random123's threefry2x32_20, one counter pair at a time, on Python ints."""
    rotations = (13, 15, 26, 6, 17, 29, 16, 24)
    ks = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (x0 + ks[0]) & _MASK, (x1 + ks[1]) & _MASK
    for i in range(20):
        r = rotations[i % 8]
        x0 = (x0 + x1) & _MASK
        x1 = (((x1 << r) | (x1 >> (32 - r))) & _MASK) ^ x0
        if i % 4 == 3:
            s = i // 4 + 1
            x0 = (x0 + ks[s % 3]) & _MASK
            x1 = (x1 + ks[(s + 1) % 3] + s) & _MASK
    return x0, x1


# Random123's known-answer vector (kat_vectors: threefry2x32_20, "pi" key and counter).
assert _threefry_scalar(0x13198A2E, 0x03707344, 0x243F6A88, 0x85A308D3) == (0xC4923A9C,
                                                                             0x483DF7A0)


def _reference(k0, k1, x0, x1):
    k0, k1 = np.broadcast_to(k0, x0.shape), np.broadcast_to(k1, x0.shape)
    y0, y1 = np.zeros(x0.shape, np.uint32), np.zeros(x0.shape, np.uint32)
    for idx in np.ndindex(x0.shape):
        y0[idx], y1[idx] = _threefry_scalar(int(k0[idx]), int(k1[idx]), int(x0[idx]),
                                            int(x1[idx]))
    return [y0, y1]


def _words(rng, shape):
    return rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)


def _gamma_grad_reference(a, x):
    """d/da gammaincinv(a, q) at q = gammainc(a, x): a central difference of the inverse
    CDF (flamefx differentiates the CDF instead, so the two routes are independent)."""
    a, x = np.asarray(a, np.float64), np.asarray(x, np.float64)
    q = scipy.special.gammainc(a, x)
    h = 1e-5 * a
    return (scipy.special.gammaincinv(a + h, q) - scipy.special.gammaincinv(a - h, q)) / (2 * h)


# Gradient checks here differentiate in x only: the a-derivative is a finite difference of
# the primitive, whose ~1e-12 noise the suite's order-2 check (eps 1e-5, rtol 1e-5) would
# amplify past its tolerance; tests/test_random_distributions.py checks it at rtol 2e-3.


def _gamma_pairs(rng, shape):
    a = rng.uniform(0.5, 4.0, size=shape)
    # x at moderate quantiles of Gamma(a), where the inverse CDF is well conditioned.
    x = scipy.special.gammaincinv(a, rng.uniform(0.1, 0.9, size=shape))
    return [a, x]


SAMPLES = {
    "random_gamma_grad": [
        Sample(lambda rng: [np.float64(1.5), np.float64(0.8)], reference=_gamma_grad_reference,
               grad_argnums=(1,), name="0-d"),
        Sample(lambda rng: _gamma_pairs(rng, (4,)), reference=_gamma_grad_reference,
               grad_argnums=(1,), name="vector"),
        Sample(lambda rng: [np.array([0.1, 0.01, 30.0]), np.array([0.05, 1e-30, 28.0])],
               reference=_gamma_grad_reference, name="small_and_large_a"),
    ],
    "threefry2x32": [
        Sample(lambda rng: [np.uint32(0x13198A2E), np.uint32(0x03707344),
                            np.array([0x243F6A88, 0], np.uint32),
                            np.array([0x85A308D3, 0], np.uint32)],
               reference=_reference, name="known_answer"),
        Sample(lambda rng: [np.uint32(7), np.uint32(0xDEADBEEF), _words(rng, (3, 4)),
                            _words(rng, (3, 4))],
               reference=_reference, name="scalar_key"),
        Sample(lambda rng: [_words(rng, (5,)), _words(rng, (5,)), _words(rng, (5,)),
                            _words(rng, (5,))],
               reference=_reference, name="per_element_key"),
        Sample(lambda rng: [np.uint32(0x13198A2E), np.uint32(0x03707344), np.uint32(0x243F6A88),
                            np.uint32(0x85A308D3)],
               reference=_reference, name="0-d"),
    ],
}
