"""Samples for gather and scatter, with element-by-element loop references."""

import numpy as np

from tests.samples import Sample


def _full_index(operand_shape, axes, index_vector, rest):
    """The operand position for one index vector (clamped) and one carried position."""
    position, rest = [], iter(rest)
    for d, n in enumerate(operand_shape):
        if d in axes:
            position.append(min(max(int(index_vector[axes.index(d)]), 0), n - 1))
        else:
            position.append(next(rest))
    return tuple(position)


def _rest_shape(operand_shape, axes):
    return tuple(n for d, n in enumerate(operand_shape) if d not in axes)


def _gather_reference(operand, indices, axes):
    batch = indices.shape[:-1]
    rest_shape = _rest_shape(operand.shape, axes)
    out = np.zeros(batch + rest_shape, operand.dtype)
    for b in np.ndindex(*batch):
        for r in np.ndindex(*rest_shape):
            out[b + r] = operand[_full_index(operand.shape, axes, indices[b], r)]
    return out


_COMBINE = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "min": min, "max": max,
            "set": lambda a, b: b}


def _scatter_reference(operand, indices, updates, axes, mode):
    out = operand.copy()
    rest_shape = _rest_shape(operand.shape, axes)
    for b in np.ndindex(*indices.shape[:-1]):
        for r in np.ndindex(*rest_shape):
            position = _full_index(operand.shape, axes, indices[b], r)
            out[position] = _COMBINE[mode](out[position], updates[b + r])
    return out


def _gather_sample(operand_shape, index_batch, axes, low=-1, high=None):
    axes = tuple(axes)

    def make(rng):
        high_ = max(operand_shape[a] for a in axes) + 1 if high is None else high
        indices = rng.integers(low, high_, index_batch + (len(axes),)).astype(np.int32)
        return [rng.standard_normal(operand_shape), indices]

    return Sample(make, {"axes": axes}, lambda x, i: _gather_reference(x, i, list(axes)), (0,))


def _scatter_sample(mode, unique):
    def make(rng):
        if unique:
            indices = rng.permutation(5)[:3].reshape(3, 1).astype(np.int32)
        else:
            indices = np.array([[1], [3], [1], [-2], [7]], np.int32)  # repeats, clamped
        updates = rng.standard_normal((len(indices), 2))
        if mode == "mul":
            updates = 0.5 + rng.random(updates.shape)
        return [rng.standard_normal((5, 2)), indices, updates]

    return Sample(make, {"axes": (0,), "mode": mode},
                  lambda x, i, u: _scatter_reference(x, i, u, [0], mode), (0, 2))


def _scatter_2d_sample():
    def make(rng):
        indices = np.array([[[0, 2], [1, 1]], [[0, 2], [2, 0]]], np.int32)
        return [rng.standard_normal((3, 4, 3)), indices, rng.standard_normal((2, 2, 4))]

    return Sample(make, {"axes": (0, 2), "mode": "add"},
                  lambda x, i, u: _scatter_reference(x, i, u, [0, 2], "add"), (0, 2))


def _scatter_one_index_sample():
    """A 0-d index batch: one index vector, updates of the operand's other dims."""
    def make(rng):
        return [rng.standard_normal((4, 2)), np.array([2], np.int32), rng.standard_normal(2)]

    return Sample(make, {"axes": (0,), "mode": "add"},
                  lambda x, i, u: _scatter_reference(x, i, u, [0], "add"), (0, 2))


# Gather and scatter index at least one axis, so their operands are never 0-d; their 0-d
# cases are a 0-d batch of indices (one index vector), with 0-d results for gather.
SAMPLES = {
    "gather": [
        _gather_sample((5,), (), (0,)),
        _gather_sample((3, 6), (), (1,)),
        _gather_sample((4, 3, 5), (2, 3), (0, 2)),
        _gather_sample((3, 6), (4,), (1,)),
        _gather_sample((4, 2), (3,), (0,), low=0, high=4),
    ],
    "scatter": [
        _scatter_sample("add", unique=False),
        _scatter_sample("set", unique=True),
        _scatter_sample("mul", unique=True),
        _scatter_sample("min", unique=False),
        _scatter_sample("max", unique=False),
        _scatter_2d_sample(),
        _scatter_one_index_sample(),
    ],
}
