"""Samples for the control-flow primitives: sub-jaxprs traced from small lax functions, with
plain Python loops as references."""

import numpy as np

from flamefx import lax
from flamefx.core import ShapedArray
from flamefx.jaxpr import hoist_consts, trace_to_jaxpr
from tests.samples import Sample

F64_3 = ShapedArray((3,), np.float64)
F64 = ShapedArray((), np.float64)
I32 = ShapedArray((), np.int32)


def _jaxpr(fn, *avals):
    jaxpr, consts = hoist_consts(trace_to_jaxpr(fn, list(avals)))
    assert not consts, "sample jaxprs must not capture constants"
    return jaxpr


def _one(x):
    return lax.full_like(x, 1)


# --- cond: three branches over (x, y), picked by an int32 index (clamped into range) ----------

_BRANCHES = (
    _jaxpr(lambda x, y: [lax.mul(x, y), lax.sin(x)], F64_3, F64_3),
    _jaxpr(lambda x, y: [lax.sub(lax.exp(x), y), lax.mul(x, x)], F64_3, F64_3),
    _jaxpr(lambda x, y: [lax.mul(lax.mul(x, x), y), lax.cos(y)], F64_3, F64_3),
)
_BRANCH_REFS = (
    lambda x, y: [x * y, np.sin(x)],
    lambda x, y: [np.exp(x) - y, x * x],
    lambda x, y: [x * x * y, np.cos(y)],
)


_BRANCHES_0D = tuple(_jaxpr(branch, F64, F64) for branch in (
    lambda x, y: [lax.mul(x, y), lax.sin(x)],
    lambda x, y: [lax.sub(lax.exp(x), y), lax.mul(x, x)],
    lambda x, y: [lax.mul(lax.mul(x, x), y), lax.cos(y)],
))


def _cond_reference(index, x, y):
    return _BRANCH_REFS[min(max(int(index), 0), len(_BRANCH_REFS) - 1)](x, y)


def _cond_args(index_of, shape=(3,)):
    return lambda rng: [np.array(index_of(rng), np.int32), np.array(rng.standard_normal(shape)),
                        np.array(rng.standard_normal(shape))]


# --- while: count k up to a limit (a cond const), stepping x with a weight (a body const) ------

_WHILE_COND = _jaxpr(lambda limit, x, k: [lax.lt(k, limit)], I32, F64_3, I32)
_WHILE_BODY = _jaxpr(lambda w, x, k: [lax.add(lax.mul(lax.sin(x), w), x), lax.add(k, _one(k))],
                     F64_3, F64_3, I32)


_WHILE_COND_0D = _jaxpr(lambda limit, x, k: [lax.lt(k, limit)], I32, F64, I32)
_WHILE_BODY_0D = _jaxpr(lambda w, x, k: [lax.add(lax.mul(lax.sin(x), w), x), lax.add(k, _one(k))],
                        F64, F64, I32)


def _while_reference(limit, w, x, k):
    while k < limit:
        x, k = np.sin(x) * w + x, k + 1
    return [x, np.array(k, np.int32)]


def _while_args(rng, shape=(3,)):
    return [np.array(4, np.int32), np.array(rng.uniform(0.5, 1.0, shape)),
            np.array(rng.standard_normal(shape)), np.array(rng.integers(0, 4), np.int32)]


# --- scan: a recurrence over xs with a const weight; the second one counts and runs reversed --

_SCAN_BODY = _jaxpr(
    lambda w, c, x: [lax.add(lax.sin(lax.mul(c, w)), x), lax.mul(lax.cos(c), x)],
    F64_3, F64_3, F64_3)
_SCAN_COUNTING_BODY = _jaxpr(
    lambda w, c, k, x: [lax.add(lax.tanh(lax.mul(c, w)), x), lax.add(k, _one(k)),
                        lax.mul(c, lax.broadcast_in_dim(lax.convert_element_type(k, np.float64),
                                                        (3,), ()))],
    F64_3, F64_3, I32, F64_3)


_SCAN_BODY_0D = _jaxpr(
    lambda w, c, x: [lax.add(lax.sin(lax.mul(c, w)), x), lax.mul(lax.cos(c), x)], F64, F64, F64)


def _scan_reference(w, c, xs):
    ys = []
    for x in xs:
        ys.append(np.cos(c) * x)
        c = np.sin(c * w) + x
    return [c, np.stack(ys)]


def _scan_counting_reference(w, c, k, xs):
    ys = [None] * len(xs)
    for i in reversed(range(len(xs))):
        ys[i] = c * float(k)
        c, k = np.tanh(c * w) + xs[i], k + 1
    return [c, np.array(k, np.int32), np.stack(ys)]


SAMPLES = {
    "cond": [
        Sample(_cond_args(lambda rng: rng.integers(0, 3)), {"branches": _BRANCHES},
               _cond_reference, grad_argnums=(1, 2), name="random branch"),
        Sample(_cond_args(lambda rng: -2), {"branches": _BRANCHES}, _cond_reference,
               grad_argnums=(1, 2), name="index below range clamps to branch 0"),
        Sample(_cond_args(lambda rng: rng.integers(0, 3), shape=()), {"branches": _BRANCHES_0D},
               _cond_reference, grad_argnums=(1, 2), name="0-d operands"),
    ],
    "while": [
        Sample(_while_args, {"cond_jaxpr": _WHILE_COND, "body_jaxpr": _WHILE_BODY,
                             "cond_nconsts": 1, "body_nconsts": 1},
               _while_reference, grad_argnums=(), name="data-dependent trip count"),
        Sample(lambda rng: _while_args(rng, shape=()),
               {"cond_jaxpr": _WHILE_COND_0D, "body_jaxpr": _WHILE_BODY_0D,
                "cond_nconsts": 1, "body_nconsts": 1},
               _while_reference, grad_argnums=(), name="0-d carry"),
    ],
    "scan": [
        Sample(lambda rng: [rng.uniform(0.5, 1.0, 3), rng.standard_normal(3),
                            rng.standard_normal((4, 3))],
               {"jaxpr": _SCAN_BODY, "num_consts": 1, "num_carry": 1, "length": 4,
                "reverse": False},
               _scan_reference, grad_argnums=(0, 1, 2), name="recurrence"),
        Sample(lambda rng: [rng.uniform(0.5, 1.0, 3), rng.standard_normal(3),
                            np.array(rng.integers(0, 3), np.int32), rng.standard_normal((3, 3))],
               {"jaxpr": _SCAN_COUNTING_BODY, "num_consts": 1, "num_carry": 2, "length": 3,
                "reverse": True},
               _scan_counting_reference, grad_argnums=(0, 1, 3), name="reversed, int carry"),
        Sample(lambda rng: [np.array(rng.uniform(0.5, 1.0)), np.array(rng.standard_normal()),
                            rng.standard_normal(4)],
               {"jaxpr": _SCAN_BODY_0D, "num_consts": 1, "num_carry": 1, "length": 4,
                "reverse": False},
               _scan_reference, grad_argnums=(0, 1, 2), name="0-d carry and slices"),
    ],
}
