"""Moving arrays between devices and frameworks: device_put, device_get, DLPack.

>>> import flamefx, numpy as np
>>> x = flamefx.device_put(np.arange(3.0), flamefx.devices("cpu")[0])
>>> flamefx.device_get(x)
array([0., 1., 2.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from flamefx import core, devices, tree_util
from flamefx.errors import FlamefxTypeError, user_frame


def device_put(x, device: devices.Device | str | None = None):
    """Places every array leaf of ``x`` on ``device`` (a Device, 'cpu', 'gpu' or None).

    NumPy leaves take JAX's canonical dtypes (float64 becomes float32 unless x64 is on).

    >>> device_put(np.zeros(2), "cpu").dtype
    dtype('float32')
    """
    if isinstance(device, str):
        device = devices.devices(device)[0]
    device = device or devices.default_device()

    def put(leaf):
        if isinstance(leaf, core.Tracer):
            return leaf
        # NumPy data takes JAX's canonical dtypes: float64 is float32 unless x64 is on.
        return core.to_canonical_array(leaf, device=device)

    return tree_util.tree_map(put, x)


def device_get(x):
    """Copies every array leaf of ``x`` to a NumPy array on the host."""
    return tree_util.tree_map(lambda leaf: np.asarray(leaf) if core.is_array(leaf) else leaf, x)


def block_until_ready(x):
    """Waits until every array leaf of ``x`` is computed; returns ``x``."""
    for leaf in tree_util.tree_leaves(x):
        if isinstance(leaf, core.Array):
            leaf.block_until_ready()
    return x


def from_dlpack(external) -> core.Array:
    """Wraps a DLPack-capable array (CuPy, PyTorch, JAX, NumPy) without copying.

    The result shares memory with ``external``: flamefx never writes into it, but the other
    framework may, so treat the source as frozen while the flamefx array lives.
    """
    if not hasattr(external, "__dlpack_device__"):
        raise FlamefxTypeError(f"from_dlpack needs an object with __dlpack__ and "
                               f"__dlpack_device__, got {type(external).__name__}"
                               f"\n  at {user_frame()}")
    device_type, device_id = external.__dlpack_device__()
    if int(device_type) == 1:  # kDLCPU
        buf = np.from_dlpack(external)
        return core.Array(buf, devices.devices("cpu")[0])
    cp = devices.cupy()
    if cp is None:
        raise FlamefxTypeError("from_dlpack got a GPU array but CuPy finds no GPU")
    buf = cp.from_dlpack(external)
    core.dtypes.canonicalize(buf.dtype)
    return core.Array(buf, devices.Device("gpu", int(device_id)), committed=True)
