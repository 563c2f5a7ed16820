"""Samples for checkpoint_name and for remat equations that save residuals (a policy's
choice: the residuals are extra outputs after the function's own)."""

import numpy as np

import flamefx.numpy as fnp
from flamefx import core
from flamefx.jaxpr import Jaxpr, hoist_consts, trace_to_jaxpr
from flamefx.transforms import checkpoint
from tests.samples import Sample


def _body(x, y):
    return [fnp.sin(x) * y, fnp.tanh(x + y)]


def _saves_sin(prim, *avals, **params):
    return prim.name == "sin"


def _saving_jaxpr(shape):
    avals = [core.ShapedArray(shape, np.float64)] * 2
    jaxpr, _ = hoist_consts(trace_to_jaxpr(_body, avals))
    residuals = checkpoint._residuals(jaxpr, _saves_sin)
    return Jaxpr([], jaxpr.invars, jaxpr.outvars + residuals, jaxpr.eqns), len(residuals)


def _remat_sample(shape):
    jaxpr, num_res = _saving_jaxpr(shape)
    return Sample(lambda rng: [np.asarray(rng.normal(size=shape)),
                               np.asarray(rng.normal(size=shape))],
                  dict(jaxpr=jaxpr, num_res=num_res),
                  lambda x, y: [np.sin(x) * y, np.tanh(x + y), np.sin(x)], grad_argnums=(0, 1),
                  name="remat-saving-sin")


SAMPLES = {
    "checkpoint_name": [
        Sample(lambda rng: [rng.normal(size=(2, 3))], dict(name="h"), lambda x: x,
               grad_argnums=(0,)),
        Sample(lambda rng: [np.float64(rng.normal())], dict(name="h"), lambda x: x,
               grad_argnums=(0,)),
    ],
    "remat": [_remat_sample((3,)), _remat_sample(())],
}
