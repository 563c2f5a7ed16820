"""Samples for the host-callback primitives (debug_callback, pure_callback, io_callback)."""

import numpy as np

from flamefx.core import ShapedArray
from flamefx.primitives.callbacks import HostCallback
from tests.samples import Sample

# What the sample debug callback saw, so that tests can look (the registry suite checks
# only that it runs everywhere: eager, jit, vmap, GPU).
SEEN: list = []


def _record(*bufs):
    SEEN.append([np.array(b) for b in bufs])
    return []


def _f32(*shapes):
    return lambda rng: [rng.normal(size=s).astype(np.float32) for s in shapes]


def _sin_mul(x, y):
    return [np.sin(x) * y]


def _sin_mul_ref(x, y):
    return [np.sin(x) * y]


def _pure(shape, vmap_method):
    return Sample(_f32(shape, shape),
                  dict(callback=HostCallback(_sin_mul, "sin_mul"),
                       result_avals=(ShapedArray(shape, np.float32),), vmap_method=vmap_method),
                  _sin_mul_ref, name=f"pure-{vmap_method}")


SAMPLES = {
    "debug_callback": [
        Sample(_f32((3,), (2, 2)), dict(callback=HostCallback(_record, "record"), ordered=False),
               lambda x, y: []),
        Sample(_f32(()), dict(callback=HostCallback(_record, "record"), ordered=True),
               lambda x: []),
    ],
    "pure_callback": [_pure((3,), "sequential"), _pure((3,), "expand_dims"),
                      _pure((3,), "broadcast_all"), _pure((3,), "legacy_vectorized"),
                      _pure((), "sequential")],
    "io_callback": [
        Sample(_f32((3,), (3,)),
               dict(callback=HostCallback(_sin_mul, "sin_mul"),
                    result_avals=(ShapedArray((3,), np.float32),), ordered=False), _sin_mul_ref),
        Sample(_f32((), ()),
               dict(callback=HostCallback(_sin_mul, "sin_mul"),
                    result_avals=(ShapedArray((), np.float32),), ordered=False), _sin_mul_ref),
    ],
}
