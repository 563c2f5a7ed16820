"""flamefx: composable function transformations (grad, jit, vmap) over NumPy and CuPy.

>>> import flamefx, flamefx.numpy as fnp
>>> loss = lambda w, x: fnp.sum((x @ w) ** 2)
>>> g = flamefx.jit(flamefx.grad(loss))(fnp.ones((3, 2)), fnp.ones((4, 3)))
>>> g.shape
(3, 2)
"""

from flamefx import config
from flamefx import primitives  # noqa: F401  (registers every primitive)
from flamefx.core import Array
from flamefx.devices import Device, default_device
from flamefx import devices  # noqa: F401  (callable: flamefx.devices("gpu"))
from flamefx.errors import (ConcretizationError, DeletedArrayError, FlamefxError,
                            FlamefxTypeError, UnexpectedTracerError)
from flamefx.jaxpr import ClosedJaxpr, Jaxpr, eval_jaxpr, make_jaxpr
from flamefx.transforms.ad import (grad, hessian, jacfwd, jacrev, jvp, linearize,
                                   stop_gradient, value_and_grad, vjp)
from flamefx.transforms.batching import vmap
from flamefx.transforms.checkpoint import checkpoint, remat
from flamefx.transforms.custom import custom_jvp, custom_vjp
from flamefx.transforms.jit import jit
from flamefx.transforms.pmap import pmap
from flamefx.transfer import block_until_ready, device_get, device_put, from_dlpack
from flamefx.serialization import load, save
from flamefx import lax, nn, numpy, optim, random, tree_util  # noqa: F401
from flamefx import test_util  # noqa: F401
from flamefx import scipy  # noqa: F401  (flamefx.scipy.special, .stats)
from flamefx.devices import default_backend, device_count, local_device_count, local_devices
from flamefx.primitives.callbacks import pure_callback
from flamefx.shapes import ShapeDtypeStruct, ensure_compile_time_eval, eval_shape, named_scope
from flamefx import debug, experimental, tree  # noqa: F401
from flamefx import ad_checkpoint  # noqa: F401
from flamefx.ad_checkpoint import checkpoint_policies

__version__ = "0.1.0"

__all__ = [
    "Array", "ClosedJaxpr", "ConcretizationError", "DeletedArrayError", "Device",
    "FlamefxError", "FlamefxTypeError", "Jaxpr", "UnexpectedTracerError", "block_until_ready",
    "checkpoint", "config", "custom_jvp", "custom_vjp", "default_device", "device_get",
    "device_put", "devices", "eval_jaxpr", "from_dlpack", "grad", "hessian", "jacfwd",
    "jacrev", "jit", "jvp", "lax", "linearize", "load", "make_jaxpr", "nn", "numpy", "optim",
    "random", "remat", "save", "stop_gradient", "test_util", "tree_util", "value_and_grad",
    "vjp", "vmap", "pmap",
    "ShapeDtypeStruct", "debug", "default_backend", "device_count", "ensure_compile_time_eval",
    "eval_shape", "experimental", "local_device_count", "local_devices", "named_scope",
    "pure_callback", "tree", "ad_checkpoint", "checkpoint_policies",
]
