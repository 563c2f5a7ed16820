"""Samples for sort (several operands, num_keys, stability) and top_k, with references that
sort Python lists of rows, so they share nothing with the primitives' integer keys.

Gradient samples have distinct keys (finite differences are invalid at a tie); samples with
ties check stability and differentiate only the non-key operands, which a sort moves
without looking at. There is no 0-d case: both need an axis to sort along (fnp.sort of a
0-d array with axis=None is tested in tests/test_sorting.py).
"""

import functools
import math

import numpy as np

from tests.samples import Sample


def _sort_key(value):
    """JAX's sort order: NaNs last (all equal), -0.0 equal to 0.0; complex by (real, imag)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, complex):
        return _sort_key(value.real) + _sort_key(value.imag)
    if isinstance(value, float) and math.isnan(value):
        return (1, 0.0)
    return (0, value)


def _total_order_key(value):
    """XLA's TopK order: -NaN < -inf < ... < -0.0 < 0.0 < ... < inf < NaN."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        if math.isnan(value):
            return (2 if math.copysign(1.0, value) > 0 else 0, 0.0, 0.0)
        return (1, value, math.copysign(1.0, value))
    return (1, value, 0.0)


def _sort_reference(*operands, dimension, is_stable, num_keys):
    del is_stable  # the reference is stable, as flamefx's sorts always are
    moved = [np.moveaxis(op, dimension, -1) for op in operands]
    rows = [m.reshape(-1, m.shape[-1]) for m in moved]
    outs = [np.empty_like(r) for r in rows]
    for r in range(rows[0].shape[0]):
        n = rows[0].shape[1]
        order = sorted(range(n), key=lambda i: tuple(_sort_key(rows[j][r, i])
                                                     for j in range(num_keys)) + (i,))
        for out, table in zip(outs, rows):
            out[r] = table[r, order]
    return [np.moveaxis(out.reshape(m.shape), -1, dimension) for out, m in zip(outs, moved)]


def _top_k_reference(x, *, k):
    rows = x.reshape(-1, x.shape[-1])
    values = np.empty((rows.shape[0], k), x.dtype)
    indices = np.empty((rows.shape[0], k), np.int32)
    for r, row in enumerate(rows):
        order = sorted(range(len(row)), key=lambda i: (_negated(_total_order_key(row[i])), i))
        indices[r] = order[:k]
        values[r] = row[order[:k]]
    shape = x.shape[:-1] + (k,)
    return [values.reshape(shape), indices.reshape(shape)]


def _negated(key):
    return tuple(-part for part in key)


def _distinct(shape):
    def make(rng):
        return [rng.permutation(np.arange(float(np.prod(shape)))).reshape(shape) / 5 - 1.0]
    return make


def _special_floats(rng):
    x = np.array([1.5, np.nan, -0.0, 0.0, -np.inf, 2.0, -np.nan, np.inf, 0.0, -0.0, 1.5,
                  np.nan], np.float32)
    return [x[rng.permutation(len(x))]]


def _tied_int_keys(rng):
    return [rng.integers(0, 3, (3, 8)).astype(np.int32), rng.normal(size=(3, 8))]


def _two_tied_keys(rng):
    return [rng.integers(0, 2, (2, 9)).astype(np.int32), rng.integers(0, 3, (2, 9)).astype(
        np.int8), rng.normal(size=(2, 9))]


def _float_keys_tied_first(rng):
    first = rng.integers(0, 3, (4, 5)).astype(np.float64)
    return [first, rng.permutation(np.arange(20.0)).reshape(4, 5), rng.normal(size=(4, 5))]


def _complex_distinct_real(rng):
    real = rng.permutation(np.arange(12.0)).reshape(3, 4) / 3
    return [real + 1j * rng.normal(size=(3, 4))]


def _complex_ties(rng):
    z = np.array([1 + 2j, 1 - 1j, np.nan + 0j, complex(0, np.nan), -1 + 5j, 1 - 1j, 2j, -0.0])
    return [z[rng.permutation(len(z))], rng.normal(size=len(z))]


def _sort(make, dimension, num_keys=1, grad_argnums=(), name=""):
    params = {"dimension": dimension, "is_stable": True, "num_keys": num_keys}
    return Sample(make, params, functools.partial(_sort_reference, **params),
                  grad_argnums=grad_argnums, name=name)


def _top_k(make, k, grad_argnums=(), name=""):
    return Sample(make, {"k": k}, functools.partial(_top_k_reference, k=k),
                  grad_argnums=grad_argnums, name=name)


def _sort_samples():
    return [
        _sort(_distinct((2, 3, 4)), 1, grad_argnums=(0,), name="one float operand, middle axis"),
        _sort(_distinct((2, 5)), 1, grad_argnums=(0,), name="last axis"),
        _sort(lambda rng: [rng.normal(size=(1,))], 0, grad_argnums=(0,), name="one element"),
        _sort(_special_floats, 0, name="NaNs last, -0.0 == 0.0, stable"),
        _sort(_tied_int_keys, 1, grad_argnums=(1,),
              name="int keys with ties carry float values, stably"),
        _sort(_two_tied_keys, 1, num_keys=2, grad_argnums=(2,),
              name="num_keys=2 over int32/int8 keys"),
        _sort(_float_keys_tied_first, 1, num_keys=2, grad_argnums=(1, 2),
              name="float keys, ties in the first broken by the second"),
        _sort(lambda rng: [rng.random((3, 4)) < 0.5, rng.integers(0, 9, (3, 4))], 0,
              name="bool keys"),
        _sort(_complex_distinct_real, 1, grad_argnums=(0,), name="complex by real part"),
        _sort(_complex_ties, 0,
              name="complex ties in the real part broken by the imaginary, NaNs last"),
    ]


def _top_k_samples():
    return [
        _top_k(_distinct((3, 6)), 3, grad_argnums=(0,), name="rows"),
        _top_k(_distinct((2, 2, 5)), 5, grad_argnums=(0,), name="k = n"),
        _top_k(lambda rng: [rng.normal(size=(1,))], 1, grad_argnums=(0,), name="one element"),
        _top_k(lambda rng: [rng.integers(0, 4, (2, 9)).astype(np.int32)], 6,
               name="int ties go to the lower index"),
        _top_k(_special_floats, 7, name="total order: NaN first, 0.0 before -0.0"),
        _top_k(_distinct((4,)), 0, name="k = 0"),
        _top_k(lambda rng: [rng.random((3, 5)) < 0.5], 2, name="bool: True first, in order"),
    ]


SAMPLES = {
    "sort": _sort_samples(),
    "top_k": _top_k_samples(),
}
