"""flamefx (development import: modules still landing are skipped; strict before release)."""
import importlib as _importlib

for _name in ["elementwise", "reductions", "structural", "indexing", "linalg", "nn_ops",
              "random_ops"]:
    try:
        _importlib.import_module(f"flamefx.primitives.{_name}")
    except ModuleNotFoundError:
        pass

from flamefx import config  # noqa: E402
from flamefx.core import Array  # noqa: E402
from flamefx.devices import Device, default_device  # noqa: E402
from flamefx import devices  # noqa: E402,F401  (callable: flamefx.devices("gpu"))
from flamefx.jaxpr import make_jaxpr, eval_jaxpr  # noqa: E402
from flamefx.transforms.ad import (grad, hessian, jacfwd, jacrev, jvp, linearize,  # noqa: E402
                                   stop_gradient, value_and_grad, vjp)
from flamefx.transforms.batching import vmap  # noqa: E402
from flamefx.transforms.checkpoint import checkpoint, remat  # noqa: E402
from flamefx.transforms.custom import custom_jvp, custom_vjp  # noqa: E402
from flamefx.transfer import block_until_ready, device_get, device_put, from_dlpack  # noqa: E402
from flamefx import test_util, tree_util  # noqa: E402,F401

for _mod, _names in [("flamefx.transforms.jit", ["jit"]),
                     ("flamefx.serialization", ["load", "save"])]:
    try:
        _m = _importlib.import_module(_mod)
        for _n in _names:
            globals()[_n] = getattr(_m, _n)
    except (ModuleNotFoundError, ImportError):
        pass
