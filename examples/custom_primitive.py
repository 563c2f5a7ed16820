"""How to add a primitive of your own: ``log_cosh``, with every rule in one declaration.

``log_cosh(x) = log(cosh(x))`` is a smooth absolute value (a robust regression loss). Written
with existing ops, ``log(cosh(x))`` overflows for |x| > ~89 in float32; as a primitive it
gets a stable NumPy formula, its own CUDA kernel, and a derivative (``tanh(x)``) written in
flamefx ops, so grad-of-grad, jit and vmap all work on it.

A primitive declares (see ``flamefx.core.Primitive``):
  abstract_eval  the shape/dtype rule, run on abstract values when tracing;
  impl           the NumPy reference (CPU);
  cuda_impl      the GPU kernel (here a CuPy ElementwiseKernel), used for GPU arrays;
  vjp            cotangents of the inputs, in flamefx ops (so it is traceable itself);
  jvp            optional forward-mode rule (cheap for elementwise ops);
  batch          the vmap rule: an elementwise op maps over any batch axis as it is.

    python examples/custom_primitive.py
"""

from __future__ import annotations

import functools
import math

import numpy as np
from absl import app

import flamefx
import flamefx.numpy as fnp
from flamefx import devices, dtypes, lax
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError


def _log_cosh_abstract_eval(x):
    if x.dtype not in (dtypes.float32, dtypes.float64):
        raise FlamefxTypeError(f"log_cosh takes float32 or float64, got {x.dtype}")
    return [ShapedArray(x.shape, x.dtype, x.weak_type)]


def _log_cosh_impl(x):
    # |x| + log1p(exp(-2|x|)) - log 2: no overflow, exact near 0.
    a = np.abs(x)
    return [(a + np.log1p(np.exp(-2.0 * a)) - math.log(2.0)).astype(x.dtype)]


@functools.cache
def _log_cosh_kernel():
    cp = devices.cupy()  # imported lazily: flamefx works without CuPy
    # T is float or double; CUDA's math functions are overloaded for both.
    return cp.ElementwiseKernel(
        "T x", "T y",
        "T a = fabs(x); y = a + log1p(exp(T(-2) * a)) - T(0.6931471805599453);",
        "flamefx_example_log_cosh")


def _log_cosh_cuda_impl(x):
    return [_log_cosh_kernel()(x)]


def _log_cosh_vjp(cts, primals, outs):
    (ct,), (x,) = cts, primals
    if ct is None:
        return [None]
    return [lax.mul(ct, lax.tanh(x))]


def _log_cosh_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    out = log_cosh(x)
    return [out], [None if t is None else lax.mul(t, lax.tanh(x))]


def _log_cosh_batch(axis_size, args, bdims):
    # Elementwise: the batch axis stays where it is.
    return [log_cosh(args[0])], [bdims[0]]


log_cosh_p = Primitive("example_log_cosh", abstract_eval=_log_cosh_abstract_eval,
                       impl=_log_cosh_impl, cuda_impl=_log_cosh_cuda_impl, vjp=_log_cosh_vjp,
                       jvp=_log_cosh_jvp, batch=_log_cosh_batch)


def log_cosh(x):
    """``log(cosh(x))`` elementwise, stable for large |x|.

    >>> log_cosh(fnp.array([0.0, 100.0])).tolist()
    [0.0, 99.30685424804688]
    """
    return log_cosh_p.bind(x)


def demo(device=None) -> dict:
    """Runs the primitive eagerly, under grad, jit and vmap, and checks its gradients to
    second order in both modes; returns what it computed."""
    x = flamefx.device_put(fnp.array([-3.0, -0.5, 0.0, 0.7, 2.0, 120.0]), device)
    value = log_cosh(x)
    naive = fnp.log(fnp.cosh(x))
    print(f"log_cosh {np.round(np.asarray(value), 4)}\n"
          f"log(cosh(x)) naively {np.round(np.asarray(naive), 4)}  (inf at 120: overflow)")
    grad = flamefx.grad(lambda v: fnp.sum(log_cosh(v)))(x)
    print(f"grad = tanh(x): {np.round(np.asarray(grad), 4)}")
    second = flamefx.grad(flamefx.grad(lambda s: log_cosh(s)))(fnp.array(0.3))
    print(f"d2/dx2 at 0.3 = 1 - tanh^2 = {float(second):.6f} ({1 - math.tanh(0.3) ** 2:.6f})")
    jitted = flamefx.jit(lambda v: log_cosh(v) * 2.0)(x)
    batched = flamefx.vmap(lambda row: fnp.sum(log_cosh(row)))(fnp.reshape(x, (2, 3)))
    print(f"jit {np.round(np.asarray(jitted), 4)}\nvmap over rows {np.asarray(batched)}")
    flamefx.test_util.check_grads(log_cosh, (fnp.array([-1.3, 0.2, 0.8], dtype=np.float64),),
                                  order=2)
    print("check_grads (order 2, forward and reverse): ok")
    return {"value": np.asarray(value), "grad": np.asarray(grad), "second": float(second),
            "jit": np.asarray(jitted), "vmap": np.asarray(batched)}


def main(argv):
    del argv
    print(f"flamefx {flamefx.__version__} on {flamefx.default_device()}")
    demo()


if __name__ == "__main__":
    app.run(main)
