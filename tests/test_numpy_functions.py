"""Every differentiable public function of flamefx.numpy, checked like a primitive.

The registry suite checks primitives; the functions of flamefx.numpy built on them
(linspace, logaddexp, var, insert, ...) had no gradient checks, which let wrong gradients
through (linspace's was zero in start/stop). Here each one is a line of ``CASES``: how to
call it, on arguments of which shapes and domain, and its NumPy/SciPy float64 reference.
Each case is checked for values against the reference and for gradients to order 2 in both
modes (``check_grads``), on its shapes and, where the function allows, on 0-d arguments;
and ``jit`` of it against the eager call.

``test_every_public_function_is_listed`` fails when a public function of flamefx.numpy is
neither in ``CASES`` nor in ``NOT_DIFFERENTIABLE`` / ``LISTED_ELSEWHERE`` (with a reason):
adding a name to flamefx.numpy means adding its line here.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Callable

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.test_util import check_grads

DOMAINS = {
    "real": lambda rng, shape: rng.uniform(-2.0, 2.0, shape),
    "positive": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "unit": lambda rng, shape: rng.uniform(-0.9, 0.9, shape),
    "above1": lambda rng, shape: rng.uniform(1.2, 3.0, shape),
    "nonzero": lambda rng, shape: rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape),
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    shapes: tuple  # the shapes of the (float64) array arguments
    reference: Callable  # NumPy/SciPy on float64 arrays
    call: Callable | None  # how to call flamefx (default: fnp.<name>(*args, **kwargs))
    kwargs: dict
    domain: str
    scalar: bool | dict  # also checked with every argument 0-d (a dict: with these kwargs)

    def _kwargs(self, zero_d: bool) -> dict:
        return {**self.kwargs, **self.scalar} if zero_d and isinstance(self.scalar, dict) \
            else self.kwargs

    def function(self, zero_d: bool = False):
        if self.call is not None:
            return self.call
        fn, kwargs = getattr(fnp, self.name), self._kwargs(zero_d)
        return lambda *args: fn(*args, **kwargs)

    def reference_function(self, zero_d: bool = False):
        if self.call is not None:
            return self.reference
        kwargs = self._kwargs(zero_d)
        return lambda *args: self.reference(*args, **kwargs)


def C(name, shapes, reference, *, call=None, domain="real", scalar=False, **kwargs) -> Case:
    """One table line. ``shapes``: a tuple of argument shapes; ``reference``: NumPy's
    function (called with the same kwargs) or a lambda; ``call``: a lambda for flamefx when
    fnp.<name>(*args, **kwargs) is not how to call it; ``scalar``: also check 0-d args (a
    dict: with these kwargs replacing the others, e.g. ``{"axis": None}``)."""
    return Case(name, tuple(shapes), reference, call, kwargs, domain, scalar)


M = (2, 3)  # a small matrix: every check is order 2 in both modes, on two cores
V = (3,)
ONE = [M]
TWO = [M, M]

CASES = [
    # --- math.py: elementwise ----------------------------------------------------------------
    C("abs", ONE, np.abs, domain="nonzero", scalar=True),
    C("absolute", ONE, np.absolute, domain="nonzero", scalar=True),
    C("add", [M, V], np.add, scalar=True),
    C("arccos", ONE, np.arccos, domain="unit", scalar=True),
    C("arcsin", ONE, np.arcsin, domain="unit", scalar=True),
    C("arctan", ONE, np.arctan, scalar=True),
    C("arctan2", [M, V], np.arctan2, domain="nonzero", scalar=True),
    C("around", ONE, np.around, scalar=True),
    C("cbrt", ONE, np.cbrt, domain="nonzero", scalar=True),
    C("ceil", ONE, np.ceil, scalar=True),
    C("clip", ONE, lambda x: np.clip(x, -1.0, 1.0), call=lambda x: fnp.clip(x, -1.0, 1.0),
      scalar=True),
    C("cos", ONE, np.cos, scalar=True),
    C("cosh", ONE, np.cosh, scalar=True),
    C("divide", [M, V], np.divide, domain="nonzero", scalar=True),
    C("exp", ONE, np.exp, scalar=True),
    C("exp2", ONE, np.exp2, scalar=True),
    C("expm1", ONE, np.expm1, scalar=True),
    C("fix", ONE, np.fix, scalar=True),
    C("float_power", TWO, np.float_power, domain="positive", scalar=True),
    C("floor", ONE, np.floor, scalar=True),
    C("floor_divide", TWO, np.floor_divide, domain="nonzero", scalar=True),
    C("fmod", TWO, np.fmod, domain="nonzero", scalar=True),
    C("hypot", TWO, np.hypot, domain="nonzero", scalar=True),
    C("log", ONE, np.log, domain="positive", scalar=True),
    C("log10", ONE, np.log10, domain="positive", scalar=True),
    C("log1p", ONE, np.log1p, domain="positive", scalar=True),
    C("log2", ONE, np.log2, domain="positive", scalar=True),
    C("logaddexp", [M, V], np.logaddexp, scalar=True),
    C("maximum", [M, V], np.maximum, scalar=True),
    C("minimum", [M, V], np.minimum, scalar=True),
    C("mod", TWO, np.mod, domain="nonzero", scalar=True),
    C("multiply", [M, V], np.multiply, scalar=True),
    C("nan_to_num", ONE, np.nan_to_num, scalar=True),
    C("negative", ONE, np.negative, scalar=True),
    C("positive", ONE, np.positive, scalar=True),
    C("power", TWO, np.power, domain="positive", scalar=True),
    C("reciprocal", ONE, np.reciprocal, domain="nonzero", scalar=True),
    C("remainder", TWO, np.remainder, domain="nonzero", scalar=True),
    C("rint", ONE, np.rint, scalar=True),
    C("round", ONE, np.round, scalar=True, decimals=1),
    C("sign", ONE, np.sign, domain="nonzero", scalar=True),
    C("sin", ONE, np.sin, scalar=True),
    C("sinh", ONE, np.sinh, scalar=True),
    C("sqrt", ONE, np.sqrt, domain="positive", scalar=True),
    C("square", ONE, np.square, scalar=True),
    C("subtract", [M, V], np.subtract, scalar=True),
    C("tan", ONE, np.tan, domain="unit", scalar=True),
    C("tanh", ONE, np.tanh, scalar=True),
    C("true_divide", [M, V], np.true_divide, domain="nonzero", scalar=True),
    C("trunc", ONE, np.trunc, scalar=True),
    C("where", TWO, lambda x, y: np.where(x > 0, x, y), call=lambda x, y: fnp.where(x > 0, x, y),
      scalar=True),
    # --- reductions.py -----------------------------------------------------------------------
    C("sum", ONE, np.sum, axis=1, scalar={"axis": None}),
    C("prod", ONE, np.prod, axis=0, scalar={"axis": None}),
    C("mean", ONE, np.mean, axis=(0, 1), scalar={"axis": None}),
    C("var", ONE, np.var, axis=1, ddof=1),
    C("std", ONE, np.std, axis=0, keepdims=True),  # 0-d: sqrt at 0, nan as in JAX
    C("max", ONE, np.max, axis=1, scalar={"axis": None}),
    C("min", ONE, np.min, axis=0, scalar={"axis": None}),
    C("amax", ONE, np.amax, scalar=True),
    C("amin", ONE, np.amin, axis=-1, scalar={"axis": None}),
    C("logsumexp", ONE, lambda x: np.log(np.sum(np.exp(x), axis=1)),
      call=lambda x: fnp.logsumexp(x, axis=1)),
    C("cumsum", ONE, np.cumsum, axis=1, scalar={"axis": None}),
    C("cumprod", ONE, np.cumprod, axis=0, scalar={"axis": None}),
    # --- shape.py ----------------------------------------------------------------------------
    C("append", [M, V], np.append),
    C("array_split", [(5, 2)], np.array_split, indices_or_sections=2),
    C("astype", ONE, lambda x: x, call=lambda x: fnp.astype(x, np.float64), scalar=True),
    C("atleast_1d", ONE, np.atleast_1d, scalar=True),
    C("atleast_2d", ONE, np.atleast_2d, scalar=True),
    C("atleast_3d", ONE, np.atleast_3d, scalar=True),
    C("block", [M, (2, 1)], lambda a, b: np.block([[a, b]]), call=lambda a, b: fnp.block([[a, b]])),
    C("broadcast_arrays", [M, V], np.broadcast_arrays, scalar=True),
    C("broadcast_to", ONE, np.broadcast_to, shape=(4, 2, 3)),
    C("column_stack", [V, V], lambda a, b: np.column_stack([a, b]),
      call=lambda a, b: fnp.column_stack([a, b])),
    C("concat", [M, M], lambda a, b: np.concatenate([a, b], axis=1),
      call=lambda a, b: fnp.concat([a, b], axis=1)),
    C("concatenate", [M, M], lambda a, b: np.concatenate([a, b]),
      call=lambda a, b: fnp.concatenate([a, b])),
    C("delete", ONE, np.delete, obj=[0, 2], axis=1),
    C("dsplit", [(1, 2, 4)], np.dsplit, indices_or_sections=2),
    C("dstack", [M, M], lambda a, b: np.dstack([a, b]), call=lambda a, b: fnp.dstack([a, b]),
      scalar=True),
    C("expand_dims", ONE, np.expand_dims, axis=(0, 3), scalar={"axis": (0, 1)}),
    C("flip", ONE, np.flip, axis=1),
    C("fliplr", ONE, np.fliplr),
    C("flipud", ONE, np.flipud),
    C("hsplit", [(2, 4)], np.hsplit, indices_or_sections=[1]),
    C("hstack", [M, M], lambda a, b: np.hstack([a, b]), call=lambda a, b: fnp.hstack([a, b]),
      scalar=True),
    C("insert", [M, (2,)], lambda x, v: np.insert(x, 1, v, axis=1),
      call=lambda x, v: fnp.insert(x, 1, v, axis=1)),
    C("matrix_transpose", [(4, 2, 3)], lambda x: np.swapaxes(x, -1, -2)),
    C("moveaxis", [(2, 3, 4)], np.moveaxis, source=0, destination=-1),
    C("pad", ONE, np.pad, pad_width=((1, 0), (2, 1)), mode="reflect"),
    C("permute_dims", [(2, 3, 4)], lambda x: np.transpose(x, (2, 0, 1)),
      call=lambda x: fnp.permute_dims(x, (2, 0, 1))),
    C("ravel", ONE, np.ravel, scalar=True),
    C("repeat", ONE, np.repeat, repeats=2, axis=0, scalar={"axis": None}),
    C("reshape", ONE, np.reshape, shape=(3, 2)),
    C("roll", ONE, np.roll, shift=1, axis=1),
    C("rollaxis", [(2, 3, 4)], np.rollaxis, axis=2, start=1),
    C("rot90", ONE, np.rot90, k=3),
    C("row_stack", [M, V], lambda a, b: np.vstack([a, b]),
      call=lambda a, b: fnp.row_stack([a, b])),
    C("split", [(4, 2)], np.split, indices_or_sections=2),
    C("squeeze", [(1, 3, 1)], np.squeeze, scalar=True),
    C("stack", [M, M], lambda a, b: np.stack([a, b], axis=-1),
      call=lambda a, b: fnp.stack([a, b], axis=-1), scalar=True),
    C("swapaxes", ONE, np.swapaxes, axis1=0, axis2=1),
    C("tile", ONE, np.tile, reps=(2, 1), scalar=True),
    C("transpose", ONE, np.transpose, scalar=True),
    C("unstack", ONE, lambda x: tuple(np.moveaxis(x, 1, 0)), call=lambda x: fnp.unstack(x, axis=1)),
    C("vsplit", [(4, 2)], np.vsplit, indices_or_sections=2),
    C("vstack", [M, V], lambda a, b: np.vstack([a, b]), call=lambda a, b: fnp.vstack([a, b]),
      scalar=True),
    # --- creation.py -------------------------------------------------------------------------
    C("array", ONE, np.array, scalar=True),
    C("asarray", ONE, np.asarray, scalar=True),
    C("copy", ONE, np.copy, scalar=True),
    C("full", [()], lambda v: np.full((2, 3), v), call=lambda v: fnp.full((2, 3), v)),
    C("full_like", [()], lambda v: np.full((2, 3), v),
      call=lambda v: fnp.full_like(np.zeros((2, 3)), v, dtype=np.float64)),
    C("linspace", [(), ()], lambda a, b: np.linspace(a, b, 5),
      call=lambda a, b: fnp.linspace(a, b, 5)),
    C("linspace", [V, (2, 1)], lambda a, b: np.linspace(a, b, 4, endpoint=False, axis=-1),
      call=lambda a, b: fnp.linspace(a, b, 4, endpoint=False, axis=-1)),
    C("logspace", [(), ()], lambda a, b: np.logspace(a, b, 4, base=2.0),
      call=lambda a, b: fnp.logspace(a, b, 4, base=2.0)),
    C("geomspace", [V, V], lambda a, b: np.geomspace(a, b, 3, axis=1),
      call=lambda a, b: fnp.geomspace(a, b, 3, axis=1), domain="positive"),
    C("meshgrid", [V, (2,)], lambda a, b: np.meshgrid(a, b), call=lambda a, b: fnp.meshgrid(a, b)),
    C("tril", [(3, 3)], np.tril, k=-1),
    C("triu", [(2, 3, 3)], np.triu, k=1),
    # --- indexing.py -------------------------------------------------------------------------
    C("take", ONE, lambda x: np.take(x, [2, 0, 0], axis=1),
      call=lambda x: fnp.take(x, np.array([2, 0, 0]), axis=1)),
    C("take_along_axis", ONE, lambda x: np.take_along_axis(x, np.array([[1], [2]]), axis=1),
      call=lambda x: fnp.take_along_axis(x, np.array([[1], [2]]), axis=1)),
    C("put_along_axis", [M, (2, 1)], lambda x, v: _np_put_along_axis(x, v),
      call=lambda x, v: fnp.put_along_axis(x, np.array([[1], [2]]), v, axis=1, inplace=False)),
    C("select", TWO, lambda x, y: np.select([x > 1, x < -1], [x, y], 0.5),
      call=lambda x, y: fnp.select([x > 1, x < -1], [x, y], 0.5), scalar=True),
    # --- einsum.py, linalg.py's products -----------------------------------------------------
    C("einsum", [M, (3, 4)], lambda a, b: np.einsum("ij,jk->ki", a, b),
      call=lambda a, b: fnp.einsum("ij,jk->ki", a, b)),
    C("einsum", [M, (3, 4)], lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [2, 0]),
      call=lambda a, b: fnp.einsum(a, [0, 1], b, [1, 2], [2, 0])),
    C("vecdot", [M, V], lambda a, b: np.sum(a * b, axis=-1)),
    C("dot", [M, (3, 2)], np.dot),
    C("inner", [M, (4, 3)], np.inner),
    C("matmul", [(2, 2, 3), (3, 2)], np.matmul),
    C("outer", [V, (2,)], np.outer),
    C("tensordot", [M, (3, 2)], np.tensordot, axes=1),
    C("vdot", [V, V], np.vdot),
    # --- vectorize.py ------------------------------------------------------------------------
    C("vectorize", [M, V], lambda a, b: a * np.sin(b),
      call=lambda a, b: fnp.vectorize(lambda u, w: u * fnp.sin(w))(a, b), scalar=True),
    C("vectorize", [(2, 2, 3), V], lambda m, v: m @ v,
      call=lambda m, v: fnp.vectorize(fnp.dot, signature="(m,n),(n)->(m)")(m, v)),
    C("apply_along_axis", ONE, lambda x: np.apply_along_axis(lambda r: np.sum(r ** 2), 1, x),
      call=lambda x: fnp.apply_along_axis(lambda r: fnp.sum(r ** 2), 1, x)),
    C("apply_over_axes", [(2, 3, 2)], lambda x: np.apply_over_axes(np.sum, x, [0, 2]),
      call=lambda x: fnp.apply_over_axes(fnp.sum, x, [0, 2])),
    # --- promotion.py ------------------------------------------------------------------------
]


def _np_put_along_axis(x, v):
    out = x.copy()
    np.put_along_axis(out, np.array([[1], [2]]), v, axis=1)
    return out


# Public functions with nothing to differentiate: integer, boolean or shape results,
# arrays made from shapes alone, and functions of dtypes.
NOT_DIFFERENTIABLE = {
    "all", "any", "argmax", "argmin", "argwhere", "flatnonzero", "nonzero", "ndim", "shape",
    "size", "arange", "empty", "empty_like", "eye", "identity", "ones", "ones_like", "tri",
    "zeros", "zeros_like", "indices", "diag_indices", "tril_indices", "tril_indices_from",
    "triu_indices", "triu_indices_from", "unravel_index", "ravel_multi_index", "from_dlpack",
    "broadcast_shapes", "promote_types", "result_type",
    # logic.py: comparisons, predicates and bitwise operations give bool or integer results
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "logical_and",
    "logical_or", "logical_xor", "logical_not", "isfinite", "isinf", "isnan", "bitwise_and",
    "bitwise_or", "bitwise_xor", "bitwise_not", "invert",
}

# Functions added by the statistics, sorting, set, linalg, signal, complex and elementwise
# work of issues 19-21: their engineers add their lines to CASES with their functions. The
# names are spelled out so that any function added later without a line fails the check.
LISTED_ELSEWHERE = {
    "acos", "acosh", "allclose", "angle", "arccosh", "arcsinh", "arctanh", "argpartition",
    "argsort", "array_equal", "array_equiv", "asin", "asinh", "atan", "atan2", "atanh",
    "average", "bincount", "bitwise_invert", "bitwise_left_shift", "bitwise_right_shift",
    "can_cast", "conj", "conjugate", "convolve", "copysign", "corrcoef", "correlate",
    "count_nonzero", "cov", "cross", "cumulative_prod", "cumulative_sum", "deg2rad", "degrees",
    "diag", "diagflat", "diagonal", "diff", "digitize", "ediff1d", "fabs", "fmax", "fmin",
    "gradient", "histogram", "histogram2d", "histogram_bin_edges", "histogramdd", "iinfo",
    "imag", "interp", "intersect1d",
    "isclose", "iscomplex", "iscomplexobj", "isdtype", "isin", "isreal", "isrealobj", "isscalar",
    "issubdtype", "kron", "left_shift", "lexsort", "logaddexp2", "median", "nanargmax",
    "nanargmin", "nancumprod", "nancumsum", "nanmax", "nanmean", "nanmedian", "nanmin",
    "nanpercentile", "nanprod", "nanquantile", "nanstd", "nansum", "nanvar", "nextafter",
    "partition", "percentile", "polyadd", "polyder", "polyfit", "polyint", "polymul", "polysub",
    "polyval", "pow", "ptp", "quantile", "rad2deg", "radians", "real", "right_shift",
    "searchsorted",
    "setdiff1d", "setxor1d", "signbit", "sinc", "sort", "sort_complex", "trace", "trapezoid",
    "union1d",
    "unique", "unique_all", "unique_counts", "unique_inverse", "unique_values", "vander",
}


def _case_id(case: Case) -> str:
    same_name = [c for c in CASES if c.name == case.name]
    return case.name if len(same_name) == 1 else f"{case.name}-{same_name.index(case)}"


def _variants():
    for case in CASES:
        yield pytest.param(case, False, id=_case_id(case))
        if case.scalar:
            yield pytest.param(case, True, id=_case_id(case) + "-0d")


def _arguments(case: Case, zero_d: bool, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [DOMAINS[case.domain](rng, () if zero_d else shape) for shape in case.shapes]


def _leaves(x) -> list:
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _leaves(item)]
    return [x]


@pytest.mark.parametrize("case,zero_d", list(_variants()))
def test_values_match_numpy_float64(case, zero_d):
    args = _arguments(case, zero_d)
    got = _leaves(case.function(zero_d)(*[core.to_array(a) for a in args]))
    want = _leaves(case.reference_function(zero_d)(*args))
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == np.float64, f"{case.name} lost float64: {g.dtype}"
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case,zero_d", list(_variants()))
def test_gradients_order_2(case, zero_d):
    args = [core.to_array(a) for a in _arguments(case, zero_d, seed=1)]
    check_grads(case.function(zero_d), args, order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_jit_matches_eager(case):
    args = [core.to_array(a) for a in _arguments(case, zero_d=False, seed=2)]
    eager = _leaves(case.function()(*args))
    jitted = _leaves(flamefx.jit(case.function())(*args))
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-12, atol=1e-12)


def test_every_public_function_is_listed():
    public = {name for name in dir(fnp) if not name.startswith("_")
              and callable(getattr(fnp, name))
              and not isinstance(getattr(fnp, name), (type, np.dtype, types.ModuleType))}
    listed = {c.name for c in CASES} | NOT_DIFFERENTIABLE | LISTED_ELSEWHERE
    missing = sorted(public - listed)
    assert not missing, (f"public flamefx.numpy functions without a line in CASES (or a reason "
                         f"in NOT_DIFFERENTIABLE): {missing}")
    stale = sorted(listed - public)
    assert not stale, f"listed here but not in flamefx.numpy: {stale}"
