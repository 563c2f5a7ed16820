"""Samples for the reductions, argmax/argmin and cumsum, with loop-based float64 references.

max/min inputs have distinct values (no ties: finite differences are invalid at a tie);
reduce_prod has a sample with exactly one zero per reduced row, where the gradient is the
product of the other elements.
"""

import itertools

import numpy as np

from tests.samples import Sample

SHAPE = (2, 3, 4)


def _normal(rng):
    return [rng.normal(size=SHAPE)]


def _distinct(rng):
    return [rng.permutation(np.arange(24.0)).reshape(SHAPE) / 7 - 1.5]


def _away_from_zero(rng):
    magnitude = rng.uniform(0.5, 1.5, SHAPE)
    return [np.where(rng.random(SHAPE) < 0.5, -magnitude, magnitude)]


def _one_zero_per_row(rng):
    x = _away_from_zero(rng)[0]
    x[:, 1, 2] = 0.0  # one zero in every row reduced over axis 2
    return [x]


def _scalar(rng):
    return [np.array(rng.normal())]


def _bool_scalar(rng):
    return [np.array(rng.random() < 0.5)]


def _bools(rng):
    return [rng.random(SHAPE) < 0.7]


def _ints(rng):
    return [rng.integers(-5, 5, SHAPE).astype(np.int32)]


def _loop_reduce(combine):
    """A reference reduction by an explicit loop over the kept indices."""
    def reference(x, *, axes=None):
        kept = [i for i in range(x.ndim) if i not in axes]
        out_shape = tuple(x.shape[i] for i in kept)
        out = np.empty(out_shape, x.dtype)
        for out_idx in itertools.product(*[range(x.shape[i]) for i in kept]):
            full = [slice(None)] * x.ndim
            for i, v in zip(kept, out_idx):
                full[i] = v
            values = list(np.asarray(x[tuple(full)]).ravel())
            acc = values[0]
            for v in values[1:]:
                acc = combine(acc, v)
            out[out_idx] = acc
        return out
    return reference


def _reduce_samples(combine, make, axes_list, grad=True):
    ref = _loop_reduce(combine)
    return [Sample(make=make, params={"axes": axes},
                   reference=lambda x, axes=axes: ref(x, axes=axes),
                   grad_argnums=(0,) if grad else ())
            for axes in axes_list]


def _arg_reference(better):
    def reference(x, *, axis):
        moved = np.moveaxis(x, axis, -1)
        out = np.empty(moved.shape[:-1], np.int32)
        for idx in np.ndindex(out.shape):
            row = moved[idx]
            best = 0
            for j in range(1, len(row)):
                if better(row[j], row[best]):
                    best = j
            out[idx] = best
        return out
    return reference


def _arg_samples(better):
    ref = _arg_reference(better)
    return [Sample(make=make, params={"axis": axis, "index_dtype": np.dtype(np.int32)},
                   reference=lambda x, axis=axis: ref(x, axis=axis))
            for axis, make in ((1, _distinct), (2, _ints))]


def _cumsum_reference(x, *, axis, reverse):
    moved = np.moveaxis(x, axis, -1)
    out = np.empty_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        row = moved[idx]
        order = range(len(row) - 1, -1, -1) if reverse else range(len(row))
        total = 0.0
        for j in order:
            total += row[j]
            out[idx + (j,)] = total
    return np.moveaxis(out, -1, axis)


def _cumsum_samples():
    return [Sample(make=_normal, params={"axis": axis, "reverse": reverse},
                   reference=lambda x, axis=axis, reverse=reverse: _cumsum_reference(
                       x, axis=axis, reverse=reverse),
                   grad_argnums=(0,))
            for axis, reverse in ((0, False), (2, True))]


SAMPLES = {
    # Each reduction also takes a 0-d operand with no axes (the identity).
    "reduce_sum": _reduce_samples(lambda a, b: a + b, _normal, [(1,), (0, 2), ()])
    + _reduce_samples(lambda a, b: a + b, _scalar, [()]) + [
        Sample(make=_ints, params={"axes": (0, 1, 2)}, reference=lambda x: x.sum(dtype=x.dtype)),
        Sample(make=lambda rng: [rng.normal(size=SHAPE).astype(np.float32)],
               params={"axes": (2,)}, reference=lambda x: x.astype(np.float64).sum(axis=2),
               name="float32")],
    "reduce_max": _reduce_samples(max, _distinct, [(1,), (0, 2)]) + _reduce_samples(
        max, _ints, [(2,)], grad=False) + _reduce_samples(max, _scalar, [()]),
    "reduce_min": _reduce_samples(min, _distinct, [(1,), (0, 2)])
    + _reduce_samples(min, _scalar, [()]),
    "reduce_prod": _reduce_samples(lambda a, b: a * b, _away_from_zero, [(2,), (0, 1)])
    + _reduce_samples(lambda a, b: a * b, _one_zero_per_row, [(2,)])
    + _reduce_samples(lambda a, b: a * b, _scalar, [()]),
    "reduce_and": _reduce_samples(lambda a, b: a and b, _bools, [(1,), (0, 2)], grad=False)
    + _reduce_samples(lambda a, b: a and b, _bool_scalar, [()], grad=False),
    "reduce_or": _reduce_samples(lambda a, b: a or b, _bools, [(1,)], grad=False)
    + _reduce_samples(lambda a, b: a or b, _bool_scalar, [()], grad=False),
    "argmax": _arg_samples(lambda a, b: a > b),
    "argmin": _arg_samples(lambda a, b: a < b),
    "cumsum": _cumsum_samples(),
}
