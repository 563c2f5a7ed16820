"""Samples for the structural primitives, with references written without the impls' tricks."""

import numpy as np

from tests.samples import Sample


def _normal(*shape):
    return lambda rng: [rng.standard_normal(shape)]


def _padded_reference(x, value, config):
    """Pads by mapping each output position back to its source (or to the padding)."""
    sources = []
    for (lo, hi, interior), n in zip(config, x.shape):
        size = lo + hi + n + max(n - 1, 0) * interior
        offset = np.arange(size) - lo
        on_grid = (offset >= 0) & (offset % (interior + 1) == 0)
        src = np.where(on_grid, offset // (interior + 1), -1)
        sources.append(np.where(src < n, src, -1))
    grids = np.meshgrid(*sources, indexing="ij")
    valid = np.logical_and.reduce([g >= 0 for g in grids]) if grids else np.bool_(True)
    picked = x[tuple(np.maximum(g, 0) for g in grids)]
    return np.where(valid, picked, value)


def _clamped(starts, shape, sizes):
    return [min(max(int(s), 0), n - k) for s, n, k in zip(starts, shape, sizes)]


def _dynamic_slice_reference(x, *starts, sizes):
    s = _clamped(starts, x.shape, sizes)
    return x[s[0]:s[0] + sizes[0], s[1]:s[1] + sizes[1]]


def _dynamic_update_slice_reference(x, update, *starts):
    s = _clamped(starts, x.shape, update.shape)
    out = x.copy()
    out[s[0]:s[0] + update.shape[0], s[1]:s[1] + update.shape[1]] = update
    return out


def _starts(rng, low=-2, high=7):
    return [np.int32(rng.integers(low, high)) for _ in range(2)]


def _scalar(rng):
    return [np.array(rng.standard_normal())]


# Every op that allows a 0-d operand has a 0-d sample (squeeze and concatenate do not).
SAMPLES = {
    "reshape": [
        Sample(_scalar, {"new_sizes": (1, 1)}, lambda x: np.full((1, 1), x), (0,)),
        Sample(_normal(2, 3, 4), {"new_sizes": (6, 4)}, lambda x: x.reshape(6, 4), (0,)),
        Sample(_normal(6), {"new_sizes": (1, 2, 3)}, lambda x: x.reshape(1, 2, 3), (0,)),
    ],
    "broadcast_in_dim": [
        Sample(_normal(3, 1), {"shape": (2, 3, 4), "broadcast_dimensions": (1, 2)},
               lambda x: np.tile(x[None], (2, 1, 4)), (0,)),
        Sample(lambda rng: [np.array(rng.standard_normal())],
               {"shape": (2, 3), "broadcast_dimensions": ()},
               lambda x: np.full((2, 3), x), (0,)),
        Sample(_normal(4), {"shape": (4, 3), "broadcast_dimensions": (0,)},
               lambda x: np.stack([x, x, x], axis=1), (0,)),
    ],
    "transpose": [
        Sample(_scalar, {"permutation": ()}, lambda x: x, (0,)),
        Sample(_normal(2, 3, 4), {"permutation": (2, 0, 1)},
               lambda x: np.einsum("abc->cab", x), (0,)),
    ],
    "squeeze": [
        Sample(_normal(2, 1, 3, 1), {"dimensions": (1, 3)}, lambda x: x[:, 0, :, 0], (0,)),
    ],
    "expand_dims": [
        Sample(_scalar, {"dimensions": (0, 1)}, lambda x: np.full((1, 1), x), (0,)),
        Sample(_normal(2, 3), {"dimensions": (0, 2)}, lambda x: x[None, :, None, :], (0,)),
    ],
    "slice": [
        Sample(_scalar, {"start_indices": (), "limit_indices": (), "strides": ()},
               lambda x: x, (0,)),
        Sample(_normal(5, 6), {"start_indices": (1, 0), "limit_indices": (5, 6), "strides": (2, 3)},
               lambda x: x[1:5:2, 0:6:3], (0,)),
        Sample(_normal(4, 3), {"start_indices": (1, 1), "limit_indices": (3, 3), "strides": (1, 1)},
               lambda x: x[1:3, 1:3], (0,)),
    ],
    "pad": [
        Sample(lambda rng: [np.array(rng.standard_normal()), np.array(0.5)],
               {"padding_config": ()}, lambda x, v: x, (0, 1)),
        Sample(lambda rng: [rng.standard_normal((3, 4)), np.array(rng.standard_normal())],
               {"padding_config": ((1, 2, 1), (-1, 0, 2))},
               lambda x, v: _padded_reference(x, v, ((1, 2, 1), (-1, 0, 2))), (0, 1)),
        Sample(lambda rng: [rng.standard_normal((5,)), np.array(0.5)],
               {"padding_config": ((-2, -1, 0),)},
               lambda x, v: x[2:4], (0,)),
    ],
    "concatenate": [
        Sample(lambda rng: [rng.standard_normal((2, 3)), rng.standard_normal((2, 1)),
                            rng.standard_normal((2, 2))], {"dimension": 1},
               lambda *xs: np.concatenate(xs, axis=1), (0, 1, 2)),
    ],
    "iota": [
        Sample(lambda rng: [], {"dtype": np.dtype(np.int32), "shape": (2, 3), "dimension": 1},
               lambda: np.tile(np.arange(3, dtype=np.int32), (2, 1))),
        Sample(lambda rng: [], {"dtype": np.dtype(np.float32), "shape": (4,), "dimension": 0},
               lambda: np.arange(4.0)),
    ],
    "rev": [
        Sample(_scalar, {"dimensions": ()}, lambda x: x, (0,)),
        Sample(_normal(3, 4, 2), {"dimensions": (0, 2)}, lambda x: x[::-1, :, ::-1], (0,)),
    ],
    "copy": [
        Sample(_scalar, {}, lambda x: x, (0,)),
        Sample(_normal(3, 2), {}, lambda x: x, (0,)),
    ],
    "dynamic_slice": [
        Sample(_scalar, {"slice_sizes": ()}, lambda x: x, (0,)),
        Sample(lambda rng: [rng.standard_normal((5, 6))] + _starts(rng),
               {"slice_sizes": (2, 3)},
               lambda x, *s: _dynamic_slice_reference(x, *s, sizes=(2, 3)), (0,)),
        Sample(lambda rng: [rng.standard_normal((4, 4)), np.int32(9), np.int32(-3)],
               {"slice_sizes": (1, 4)},
               lambda x, *s: _dynamic_slice_reference(x, *s, sizes=(1, 4)), (0,)),
    ],
    "dynamic_update_slice": [
        Sample(lambda rng: [np.array(rng.standard_normal()), np.array(rng.standard_normal())],
               {}, lambda x, u: u, (0, 1)),
        Sample(lambda rng: [rng.standard_normal((5, 6)), rng.standard_normal((2, 3))]
               + _starts(rng), {}, _dynamic_update_slice_reference, (0, 1)),
    ],
}
