"""Sorting: ``sort`` (several operands ordered together by their first keys) and ``top_k``.

``sort`` orders as JAX does: ascending, -0.0 equal to 0.0, every NaN last (equal to each
other, so a stable sort keeps their order). ``top_k`` orders as XLA's TopK does, by the
float total order (NaN first, 0.0 before -0.0, -NaN last), ties to the lower index.

Both backends compare integer keys made from the float bits, so they agree on NaNs and
signed zeros whatever the sort routine does with floats. On the GPU, one real operand is
sorted by its keys alone (a radix sort, no argsort): the same values, but among equal ones
-0.0 comes before 0.0 and NaNs order by their bits instead of by position. top_k on the GPU
selects by a radix select per row (kernels/cuda_topk.py) for k <= 256 and 8 to 32-bit
dtypes, with the same results as the sort.

Sorting permutes, so the derivatives are permutations too: the JVP sorts the tangents
alongside the operands, and the VJP sorts the cotangents by the permutation (an iota sorted
alongside the keys), which puts each one back where its operand came from.

>>> import numpy as np
>>> keys, vals = sort([np.array([2.0, 1.0, 2.0]), np.array([0, 1, 2])])
>>> keys.tolist(), vals.tolist()
([1.0, 2.0, 2.0], [1, 0, 2])
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.kernels import cuda_topk
from flamefx.primitives import indexing, structural

_INDEX_DTYPE = np.dtype(np.int32)


def _batching():
    from flamefx.transforms import batching
    return batching


# --- integer keys with the order each primitive promises ---------------------------------------


def _order_key(xp, x, canonical: bool):
    """Integer keys that order like ``x``: floats by their total order (-NaN < -inf < ... <
    -0.0 < 0.0 < ... < inf < NaN). ``canonical`` first makes -0.0 into 0.0 and every NaN one
    positive NaN, which is the order ``sort`` promises."""
    if x.dtype == np.bool_:
        return x.view(np.uint8)
    if not dtypes.is_float(x.dtype):
        return x
    int_dtype = np.dtype(f"int{8 * x.dtype.itemsize}")
    bits = x.view(int_dtype)
    magnitude_mask = int_dtype.type(np.iinfo(int_dtype).max)
    if canonical:
        inf_bits = int_dtype.type(np.array(np.inf, x.dtype).view(int_dtype))
        magnitude = bits & magnitude_mask
        bits = xp.where(magnitude == 0, int_dtype.type(0), bits)
        bits = xp.where(magnitude > inf_bits, int_dtype.type(inf_bits + 1), bits)
    # Negative floats order backwards in their bits: flip their magnitude.
    return xp.where(bits < 0, bits ^ magnitude_mask, bits).astype(int_dtype, copy=False)


def _order_keys(xp, x, canonical: bool) -> list:
    """The integer keys of one operand: complex numbers order by (real, imag), as in JAX."""
    if np.issubdtype(x.dtype, np.complexfloating):
        return [_order_key(xp, xp.ascontiguousarray(part), canonical) for part in (x.real, x.imag)]
    return [_order_key(xp, x, canonical)]


def _stable_argsort(xp, key, axis):
    if xp is np:
        return np.argsort(key, axis=axis, kind="stable")
    return xp.argsort(key, axis=axis)  # CuPy's sorts are always stable (CUB/Thrust)


def _ascending_permutation(xp, keys, axis):
    """The stable order of ``keys`` along ``axis``, the first key the most significant."""
    if xp is np and len(keys) > 1:
        return np.lexsort(keys[::-1], axis=axis)
    # One stable pass per key, least significant first.
    perm = _stable_argsort(xp, keys[-1], axis)
    for key in reversed(keys[:-1]):
        order = _stable_argsort(xp, xp.take_along_axis(key, perm, axis=axis), axis)
        perm = xp.take_along_axis(perm, order, axis=axis)
    return perm


def _permute(xp, x, perm, axis):
    if xp is not np and x.dtype == dtypes.bfloat16:
        # CuPy has no bfloat16 kernels of its own to rely on: move the raw bits.
        return xp.take_along_axis(x.view(np.uint16), perm, axis=axis).view(x.dtype)
    return xp.take_along_axis(x, perm, axis=axis)


# --- sort ------------------------------------------------------------------------------------


def _sort_abstract(*operands, dimension, is_stable, num_keys):
    if not operands:
        raise FlamefxTypeError("sort needs at least one operand")
    shape = operands[0].shape
    if any(op.shape != shape for op in operands):
        raise FlamefxTypeError(f"all operands must have one shape, got "
                               f"{[op.shape for op in operands]}")
    if not 0 <= dimension < len(shape):
        raise FlamefxTypeError(f"dimension {dimension} is out of range for {len(shape)}-d "
                               f"operands (sort needs at least one axis)")
    if not 1 <= num_keys <= len(operands):
        raise FlamefxTypeError(f"num_keys must be between 1 and the number of operands "
                               f"({len(operands)}), got {num_keys}")
    return [ShapedArray(shape, op.dtype, op.weak_type) for op in operands]


def _sort_with(xp, operands, dimension, num_keys):
    keys = [key for op in operands[:num_keys] for key in _order_keys(xp, op, canonical=True)]
    perm = _ascending_permutation(xp, keys, dimension)
    return [_permute(xp, op, perm, dimension) for op in operands]


def _sort_impl(*operands, dimension, is_stable, num_keys):
    return _sort_with(np, operands, dimension, num_keys)


# The GPU's fast path for one real operand: a radix sort of unsigned keys alone (no argsort,
# no gather). The keys are the float's bits in total order, rotated so that every NaN (of
# either sign) comes last; the rotation is a bijection, so the sorted keys map back to the
# exact bits. Among values that compare equal this path orders by the bits, not by position:
# -0.0 comes before 0.0 and NaNs order by their payloads; the stable path keeps the input
# order there. The values are the same either way.

_KEY_FORWARD = "y = (U)((x >> {shift}) ? (U)~x : (U)(x | {sign})) - (U){rot};"
_KEY_INVERSE = "U f = (U)(y + (U){rot}); x = (f >> {shift}) ? (U)(f ^ {sign}) : (U)~f;"


def _key_constants(dtype) -> tuple:
    """The shift to the sign bit, the sign bit and the rotation (the mantissa mask: -inf's
    flipped bits, which become key 0) of the float ``dtype``."""
    dtype = np.dtype(dtype)
    bits = 8 * dtype.itemsize
    rot = ~np.array(-np.inf, dtype).view(f"uint{bits}")[()]
    return bits - 1, 1 << (bits - 1), int(rot)


def radix_key_snippets(dtype) -> tuple:
    """The CUDA bodies of the forward and inverse key maps of ``dtype`` (``U x``, ``U y``)."""
    shift, sign, rot = _key_constants(dtype)
    suffix = "ull" if shift == 63 else "u"
    literals = {"shift": shift, "sign": f"{sign:#x}{suffix}", "rot": f"{rot:#x}{suffix}"}
    return _KEY_FORWARD.format(**literals), _KEY_INVERSE.format(**literals)


def _radix_keys_numpy(bits, dtype, inverse: bool):
    """What the CUDA snippets compute, in NumPy (the tests compare the two)."""
    shift, sign, rot = (bits.dtype.type(c) for c in _key_constants(dtype))
    with np.errstate(over="ignore"):
        if inverse:
            f = bits + rot
            return np.where((f >> shift).astype(bool), f ^ sign, ~f)
        return np.where((bits >> shift).astype(bool), ~bits, bits | sign) - rot


@functools.cache
def _radix_key_kernel(dtype, inverse: bool):
    body = radix_key_snippets(dtype)[inverse]
    args = ("U y", "U x") if inverse else ("U x", "U y")
    name = f"flamefx_sort_key_{'inverse' if inverse else 'forward'}"
    return devices.cupy().ElementwiseKernel(*args, body, name)


def _radix_keys(xp, bits, dtype, inverse: bool):
    """The forward or inverse key map of the float ``dtype`` on its raw ``bits``: one
    elementwise kernel on the GPU."""
    if xp is np:
        return _radix_keys_numpy(bits, dtype, inverse)
    return _radix_key_kernel(np.dtype(dtype), inverse)(bits)


def _sort_values_alone(xp, x, dimension):
    """One real operand sorted by a radix sort of its keys (see above)."""
    if x.dtype == np.bool_:
        return xp.sort(x.view(np.uint8), axis=dimension).view(np.bool_)
    if not dtypes.is_float(x.dtype):
        return xp.sort(x, axis=dimension)
    unsigned = np.dtype(f"uint{8 * x.dtype.itemsize}")
    keys = xp.sort(_radix_keys(xp, x.view(unsigned), x.dtype, inverse=False), axis=dimension)
    return _radix_keys(xp, keys, x.dtype, inverse=True).view(x.dtype)


def _sort_cuda(*operands, dimension, is_stable, num_keys):
    cupy = devices.cupy()
    if len(operands) == 1 and not np.issubdtype(operands[0].dtype, np.complexfloating):
        return [_sort_values_alone(cupy, operands[0], dimension)]
    return _sort_with(cupy, operands, dimension, num_keys)


def _is_inexact(x) -> bool:
    return dtypes.is_inexact(core.get_aval(x).dtype)


def _sort_vjp(cts, primals, outs, *, dimension, is_stable, num_keys):
    diff = [i for i, (ct, x) in enumerate(zip(cts, primals)) if ct is not None and _is_inexact(x)]
    result = [None] * len(primals)
    if not diff:
        return result
    keys = primals[:num_keys]
    iota = structural.iota_like(_INDEX_DTYPE, core.get_aval(keys[0]).shape, dimension, keys[0])
    perm = sort_p.bind(*keys, iota, dimension=dimension, is_stable=True, num_keys=num_keys)[-1]
    # Sorting by the permutation undoes it: each cotangent goes back to its operand's place.
    unsorted = sort_p.bind(perm, *[cts[i] for i in diff], dimension=dimension,
                           is_stable=True, num_keys=1)[1:]
    for i, ct in zip(diff, unsorted):
        result[i] = ct
    return result


def _sort_jvp(primals, tangents, *, dimension, is_stable, num_keys):
    diff = [i for i, (t, x) in enumerate(zip(tangents, primals)) if t is not None
            and _is_inexact(x)]
    n = len(primals)
    # The tangents ride along as non-key operands: the same permutation moves them.
    outs = sort_p.bind(*primals, *[tangents[i] for i in diff], dimension=dimension,
                       is_stable=is_stable, num_keys=num_keys)
    tangents_out = [None] * n
    for j, i in enumerate(diff):
        tangents_out[i] = outs[n + j]
    return outs[:n], tangents_out


def _sort_batch(axis_size, args, bdims, *, dimension, is_stable, num_keys):
    params = {"is_stable": is_stable, "num_keys": num_keys}
    if len(set(bdims)) == 1:  # every operand batched at one axis: sort beside it
        bdim = bdims[0]
        outs = sort_p.bind(*args, dimension=dimension + (dimension >= bdim), **params)
        return outs, [bdim] * len(args)
    batching = _batching()
    args = [batching.to_front(x, b, axis_size) for x, b in zip(args, bdims)]
    return sort_p.bind(*args, dimension=dimension + 1, **params), [0] * len(args)


sort_p = Primitive(
    "sort",
    abstract_eval=_sort_abstract,
    impl=_sort_impl,
    cuda_impl=_sort_cuda,
    vjp=_sort_vjp,
    jvp=_sort_jvp,
    batch=_sort_batch,
    multiple_results=True,
)


def _canonical_dimension(dimension, ndim):
    """Negative dimensions count from the end; out-of-range ones go on to the shape rule,
    which names the operands and the user's line."""
    dimension = int(dimension)
    return dimension + ndim if -ndim <= dimension < 0 else dimension


def sort(operand, dimension: int = -1, is_stable: bool = True, num_keys: int = 1):
    """Sorts one array, or several of one shape ordered together by their first ``num_keys``
    (lexicographically), along ``dimension`` (JAX's ``lax.sort``).

    NaNs sort last and -0.0 equals 0.0. Returns an array for an array, a tuple for a sequence.

    >>> sort(np.array([3.0, np.nan, 1.0])).tolist()
    [1.0, 3.0, nan]
    >>> [x.tolist() for x in sort((np.array([1, 0, 1]), np.array([2, 5, 1])), num_keys=2)]
    [[0, 1, 1], [5, 1, 2]]
    """
    several = isinstance(operand, (list, tuple))
    operands = list(operand) if several else [operand]
    if not operands:
        raise FlamefxTypeError("sort needs at least one operand")
    ndim = core.get_aval(operands[0]).ndim
    outs = sort_p.bind(*operands, dimension=_canonical_dimension(dimension, ndim),
                       is_stable=bool(is_stable), num_keys=int(num_keys))
    return tuple(outs) if several else outs[0]


def sort_key_val(keys, values, dimension: int = -1, is_stable: bool = True):
    """Sorts ``keys`` along ``dimension`` and moves ``values`` with them (JAX's
    ``lax.sort_key_val``); returns ``(sorted_keys, values_in_that_order)``.

    >>> [x.tolist() for x in sort_key_val(np.array([2, 1]), np.array([10.0, 20.0]))]
    [[1, 2], [20.0, 10.0]]
    """
    return sort((keys, values), dimension=dimension, is_stable=is_stable, num_keys=1)


# --- top_k -----------------------------------------------------------------------------------


def _top_k_abstract(operand, *, k):
    if operand.ndim < 1:
        raise FlamefxTypeError("top_k needs an operand of at least one axis")
    if not (dtypes.is_float(operand.dtype) or dtypes.is_int(operand.dtype)
            or operand.dtype == dtypes.bool_):
        raise FlamefxTypeError(f"top_k needs a real numeric or bool operand, got "
                               f"{operand.dtype}")
    if not 0 <= k <= operand.shape[-1]:
        raise FlamefxTypeError(f"k must be between 0 and the size of the last axis "
                               f"({operand.shape[-1]}), got k={k}")
    shape = operand.shape[:-1] + (k,)
    return [ShapedArray(shape, operand.dtype, operand.weak_type),
            ShapedArray(shape, _INDEX_DTYPE)]


def _top_k_with(xp, operand, k):
    key = _order_key(xp, operand, canonical=False)
    n = operand.shape[-1]
    # A stable ascending sort of the reversed row, read backwards, is descending with ties
    # in their original order; indices in the reversed row count from the end.
    ascending = _stable_argsort(xp, xp.flip(key, axis=-1), -1)
    indices = (n - 1) - xp.flip(ascending, axis=-1)[..., :k]
    indices = xp.ascontiguousarray(indices.astype(_INDEX_DTYPE))
    return [_permute(xp, operand, indices, -1), indices]


def _top_k_impl(operand, *, k):
    return _top_k_with(np, operand, k)


def top_k_row_keys(xp, operand):
    """uint32 keys, ``(rows, n)``, that order like ``operand``'s last axis as top_k does, or
    None for 64-bit dtypes (those keep the sorting path)."""
    if operand.dtype.itemsize > 4:
        return None
    key = _order_key(xp, operand, canonical=False)
    if np.issubdtype(key.dtype, np.signedinteger):  # flip the sign bit: unsigned order
        key = key.astype(np.int32, copy=False).view(np.uint32) ^ np.uint32(1 << 31)
    key = key.astype(np.uint32, copy=False).reshape(-1, operand.shape[-1])
    return xp.ascontiguousarray(key)


def _top_k_cuda(operand, *, k):
    cupy = devices.cupy()
    n = operand.shape[-1]
    if not 0 < k <= cuda_topk.MAX_K or operand.size == 0 or n >= 2**31:
        return _top_k_with(cupy, operand, k)
    keys = top_k_row_keys(cupy, operand)
    if keys is None:
        return _top_k_with(cupy, operand, k)
    indices = cuda_topk.top_k_indices(keys, k).reshape(operand.shape[:-1] + (k,))
    return [_permute(cupy, operand, indices, -1), indices]


def last_axis_index_vectors(indices, like):
    """Full index vectors ``(..., k, ndim)`` (for gather/scatter over every axis) for picks
    ``indices`` ``(..., k)`` along the last axis of an array on the device of ``like``."""
    shape = core.get_aval(indices).shape
    columns = [structural.iota_like(_INDEX_DTYPE, shape, d, like) for d in range(len(shape) - 1)]
    columns.append(indices)
    return structural.concatenate([structural.reshape(c, shape + (1,)) for c in columns],
                                  len(shape))


def _top_k_vjp(cts, primals, outs, *, k):
    operand, ct = primals[0], cts[0]
    if ct is None or not _is_inexact(operand):
        return [None]
    vectors = last_axis_index_vectors(outs[1], operand)
    axes = tuple(range(core.get_aval(operand).ndim))
    return [indexing.scatter(structural.zeros_like(operand), vectors, ct, axes, "add")]


def _top_k_jvp(primals, tangents, *, k):
    operand, t = primals[0], tangents[0]
    values, indices = top_k_p.bind(operand, k=k)
    if t is None or not _is_inexact(operand):
        return [values, indices], [None, None]
    ndim = core.get_aval(operand).ndim
    t_out = indexing.gather(t, last_axis_index_vectors(indices, operand), tuple(range(ndim)))
    return [values, indices], [t_out, None]


def _top_k_batch(axis_size, args, bdims, *, k):
    (operand,), (bdim,) = args, bdims
    if bdim == core.get_aval(operand).ndim - 1:  # the batch axis is in the way: move it
        operand, bdim = _batching().move_axis(operand, bdim, 0), 0
    return top_k_p.bind(operand, k=k), [bdim, bdim]


top_k_p = Primitive(
    "top_k",
    abstract_eval=_top_k_abstract,
    impl=_top_k_impl,
    cuda_impl=_top_k_cuda,
    vjp=_top_k_vjp,
    jvp=_top_k_jvp,
    batch=_top_k_batch,
    multiple_results=True,
)


def top_k(operand, k: int, *, axis: int = -1):
    """The ``k`` largest entries along ``axis`` (the last by default), largest first, and
    their int32 indices (JAX's ``lax.top_k``): ties go to the lower index, NaN counts as the
    largest value.

    >>> [x.tolist() for x in top_k(np.array([1.0, 3.0, 2.0, 3.0]), 2)]
    [[3.0, 3.0], [1, 3]]
    >>> top_k(np.array([[1, 5], [4, 2]]), 1, axis=0)[1].tolist()
    [[1, 0]]
    """
    ndim = core.get_aval(operand).ndim
    axis = int(axis)
    if ndim and not -ndim <= axis < ndim:
        raise FlamefxTypeError(f"top_k: axis {axis} is out of range for a {ndim}-d operand\n"
                               f"  at {user_frame()}")
    last = ndim - 1
    if ndim == 0 or axis % ndim == last:
        return top_k_p.bind(operand, k=int(k))
    # The primitive works on the last axis: swap the chosen one there and back.
    perm = list(range(ndim))
    perm[axis % ndim], perm[last] = last, axis % ndim
    outs = top_k_p.bind(structural.transpose(operand, tuple(perm)), k=int(k))
    return [structural.transpose(out, tuple(perm)) for out in outs]
