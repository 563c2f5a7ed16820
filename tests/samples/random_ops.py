"""Samples for the PRNG primitive, with a scalar pure-Python Threefry as the reference."""

import numpy as np

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


SAMPLES = {
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
    ],
}
