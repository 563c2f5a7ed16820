"""``flamefx.experimental``: names JAX keeps under ``jax.experimental``.

>>> import numpy as np, flamefx, flamefx.numpy as fnp
>>> out = io_callback(np.cos, flamefx.ShapeDtypeStruct((), fnp.float32), fnp.float32(0.0))
>>> out.item()
1.0
"""

from flamefx.primitives.callbacks import io_callback

__all__ = ["io_callback"]
