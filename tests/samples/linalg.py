"""Samples for dot_general; np.einsum is the reference."""

import ml_dtypes
import numpy as np

from tests.samples import Sample


def _dot(lhs_shape, rhs_shape, dimension_numbers, subscripts, dtype=np.float64,
         preferred=None, grad=True):
    def make(rng):
        return [rng.standard_normal(lhs_shape).astype(dtype),
                rng.standard_normal(rhs_shape).astype(dtype)]

    def reference(lhs, rhs):
        out = np.einsum(subscripts, lhs.astype(np.float64), rhs.astype(np.float64))
        return out.astype(preferred or dtype)

    params = {"dimension_numbers": dimension_numbers, "precision": None,
                  "preferred_element_type": None if preferred is None else np.dtype(preferred)}
    return Sample(make, params, reference, (0, 1) if grad else (),
                  name=subscripts)


def _int_dot():
    def make(rng):
        return [rng.integers(-3, 4, (2, 3)).astype(np.int32),
                rng.integers(-3, 4, (3, 4)).astype(np.int32)]

    return Sample(make, {"dimension_numbers": (((1,), (0,)), ((), ())), "precision": None,
                             "preferred_element_type": None},
                  lambda a, b: np.einsum("ij,jk->ik", a, b), name="int32 matmul")


SAMPLES = {
    "dot_general": [
        _dot((3, 4), (4, 5), (((1,), (0,)), ((), ())), "ij,jk->ik"),
        _dot((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,))), "bij,bjk->bik"),
        # Batch and contracting axes in unusual places: out = batch, lhs free, rhs free.
        _dot((4, 2, 3), (3, 5, 2), (((2,), (0,)), ((1,), (2,))), "ibk,kjb->bij"),
        _dot((3, 4, 5), (5, 4, 2), (((1, 2), (1, 0)), ((), ())), "ijk,kjl->il"),
        _dot((4,), (4,), (((0,), (0,)), ((), ())), "i,i->"),
        _dot((3,), (2,), (((), ()), ((), ())), "i,j->ij"),
        _dot((2, 3), (4, 3), (((1,), (1,)), ((), ())), "ij,kj->ik"),
        _dot((2, 5), (5, 3), (((1,), (0,)), ((), ())), "ij,jk->ik", dtype=np.float16,
             preferred=np.float32, grad=False),
        _dot((2, 5), (5, 3), (((1,), (0,)), ((), ())), "ij,jk->ik",
             dtype=ml_dtypes.bfloat16, preferred=np.float32, grad=False),
        _int_dot(),
    ],
}
