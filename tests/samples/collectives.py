"""Samples for the collectives. The registry applies a primitive eagerly, outside any named
axis, so these use ``axis_name=()`` (no axes: an axis of size 1, as in JAX); under the
registry's unnamed vmap they take the rules' other-axis path. tests/test_pmap.py checks
real named axes (vmap and pmap over 4 CPU devices) against NumPy."""

import numpy as np

from tests.samples import Sample


def _normal(*shape):
    return lambda rng: [rng.normal(size=shape)]


def _distinct(*shape):  # pmax's gradient is defined away from ties
    return lambda rng: [rng.permutation(np.arange(np.prod(shape), dtype=np.float64))
                        .reshape(shape) * 0.5 + 0.1]


SAMPLES = {
    "psum": [Sample(_normal(2, 3), {"axis_name": ()}, lambda x: x, grad_argnums=(0,)),
             Sample(lambda rng: [rng.integers(-5, 5, (4,)).astype(np.int32)],
                    {"axis_name": ()}, lambda x: x)],
    "pmean": [Sample(_normal(3,), {"axis_name": ()}, lambda x: x, grad_argnums=(0,))],
    "pmax": [Sample(_distinct(2, 3), {"axis_name": ()}, lambda x: x, grad_argnums=(0,))],
    "all_gather": [
        Sample(_normal(2, 3), {"axis_name": (), "axis_size": 1, "axis": 1, "tiled": False},
               lambda x: x[:, None, :], grad_argnums=(0,)),
        Sample(_normal(2, 3), {"axis_name": (), "axis_size": 1, "axis": 0, "tiled": True},
               lambda x: x, grad_argnums=(0,))],
    "psum_scatter": [
        Sample(_normal(2, 1, 3), {"axis_name": (), "axis_size": 1, "scatter_dimension": 1,
                                      "tiled": False},
               lambda x: x[:, 0, :], grad_argnums=(0,)),
        Sample(_normal(4, 2),
               {"axis_name": (), "axis_size": 1, "scatter_dimension": 0, "tiled": True},
               lambda x: x, grad_argnums=(0,))],
}
