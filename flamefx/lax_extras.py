"""The composite names of JAX's ``lax``: windowed and monoid reductions over a recognized
``computation``, the parallel prefix scan and the cumulative ops built on it, ``map``,
``select``, the ``*_in_dim`` slicing helpers, ``broadcast``/``collapse``/``full``/``clamp``,
``dot``/``batch_matmul``. All are composed of flamefx primitives (so every transform
follows) and re-exported from ``flamefx.lax``.

>>> import numpy as np
>>> from flamefx import lax
>>> lax.cummax(np.array([1.0, 3.0, 2.0, 5.0])).tolist()
[1.0, 3.0, 3.0, 5.0]
"""

from __future__ import annotations

import builtins

import numpy as np

from flamefx import core, dtypes, tree_util
from flamefx.errors import FlamefxTypeError, FlamefxValueError, where
from flamefx.lax_conv import canonicalize_precision, padtype_to_pads
from flamefx.primitives import elementwise as ew
from flamefx.primitives import reductions, structural, windowed
from flamefx.primitives import dynamic_slicing
from flamefx.primitives.linalg import dot_general as _dot_general
from flamefx.transforms.ad import stop_gradient

reduce_window_shape_tuple = windowed.reduce_window_shape_tuple


def _shape(x) -> tuple:
    return core.get_aval(x).shape


def _dtype(x):
    return core.get_aval(x).dtype


def _scalar_like(value, x):
    """``value`` as a 0-d array of ``x``'s dtype (a traced value is cast, not read)."""
    if core.is_array(value) or isinstance(value, core.Tracer):
        return value if _dtype(value) == _dtype(x) else ew.convert_element_type(value,
                                                                                 _dtype(x))
    return core.to_array(np.asarray(value, _dtype(x)), weak=False)


def _concrete_value(value):
    """The value of a Python/NumPy scalar or a concrete Array, else None (traced)."""
    if isinstance(value, core.Tracer):
        return None
    return np.asarray(value).item() if np.ndim(value) == 0 else None


# --- monoid reductions ---------------------------------------------------------------------


def _monoid(computation, dtype, what):
    """The monoid a ``computation`` names: 'sum', 'max', 'min', 'prod', 'and' or 'or'."""
    kinds = {ew.add: "sum", ew.max: "max", ew.min: "min", ew.mul: "prod"}
    if computation in kinds:
        return kinds[computation]
    if np.dtype(dtype) == np.bool_ and computation in (ew.bitwise_and, ew.bitwise_or):
        return "and" if computation is ew.bitwise_and else "or"
    raise FlamefxValueError(
        f"{what}: computation {getattr(computation, '__name__', computation)!r} is not "
        f"supported; flamefx recognizes lax.add, lax.max, lax.min, lax.mul, and "
        f"lax.bitwise_and/bitwise_or on bool (operand dtype {np.dtype(dtype)})")


def _single_operand(operands, init_values, what):
    if isinstance(operands, (tuple, list)) or isinstance(init_values, (tuple, list)):
        raise FlamefxValueError(f"{what}: variadic (tuple) operands are not supported; reduce "
                                f"each array separately")
    return core.ensure_array(operands)


def reduce(operands, init_values, computation, dimensions, out_sharding=None):
    """Reduces ``operands`` over ``dimensions`` with a monoid ``computation`` (JAX's
    ``lax.reduce``). ``init_values`` joins the result as one more element: JAX gives the
    same when it is the monoid's identity, which it must be for JAX's fast path.

    >>> import numpy as np
    >>> from flamefx import lax
    >>> lax.reduce(np.arange(6.0).reshape(2, 3), 0.0, lax.add, (1,)).tolist()
    [3.0, 12.0]
    """
    del out_sharding  # flamefx has no sharding
    x = _single_operand(operands, init_values, "reduce")
    kind = _monoid(computation, _dtype(x), "reduce")
    ndim = len(_shape(x))
    axes = tuple(sorted(int(d) % ndim if ndim else int(d) for d in dimensions))
    out = getattr(reductions, f"reduce_{kind}")(x, axes)
    identity = {"prod": 1, "and": True, "or": False}.get(kind)
    if identity is None:
        identity = windowed.identity_element(kind, _dtype(x))
    if _concrete_value(init_values) == identity:
        return out
    init = structural.broadcast_in_dim(_scalar_like(init_values, x), _shape(out), ())
    return computation(out, init)


def reduce_window(operand, init_value, computation, window_dimensions, window_strides=None,
                  padding="VALID", base_dilation=None, window_dilation=None):
    """JAX's ``lax.reduce_window`` for the monoids add, max and min.

    ``padding``: 'SAME', 'VALID' or ``(lo, hi)`` pairs. Padding and base-dilation holes
    contribute nothing; ``init_value`` starts every window (as JAX computes it: an add
    with init ``c`` gives ``c + window sum``).

    >>> import numpy as np
    >>> from flamefx import lax
    >>> x = np.arange(16.0).reshape(4, 4)
    >>> lax.reduce_window(x, -np.inf, lax.max, (2, 2), (2, 2), "VALID").tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    x = _single_operand(operand, init_value, "reduce_window")
    kind = _monoid(computation, _dtype(x), "reduce_window")
    if kind not in ("sum", "max", "min"):
        raise FlamefxValueError(f"reduce_window supports lax.add, lax.max and lax.min, got "
                                f"the {kind} monoid")
    ndim = len(_shape(x))
    window_strides = tuple(window_strides or (1,) * ndim)
    window_dilation = tuple(window_dilation or (1,) * ndim)
    base_dilation = tuple(base_dilation or (1,) * ndim)
    if isinstance(padding, str):
        spans = [windowed.dilate_dim(w, d) for w, d in zip(window_dimensions, window_dilation)]
        dilated = [windowed.dilate_dim(s, d) for s, d in zip(_shape(x), base_dilation)]
        padding = padtype_to_pads(dilated, spans, window_strides, padding)
    args = (window_dimensions, window_strides, padding, base_dilation, window_dilation)
    out = getattr(windowed, f"reduce_window_{kind}")(x, *args)
    init = _concrete_value(init_value)
    if init is not None and init == windowed.identity_element(kind, _dtype(x)):
        return out
    # init_value starts every window (JAX on XLA: it adds once, and max/min absorb it).
    return computation(out, structural.broadcast_in_dim(_scalar_like(init_value, x),
                                                        _shape(out), ()))


# --- the parallel prefix scan ----------------------------------------------------------------


def slice_in_dim(operand, start_index, limit_index, stride: int = 1, axis: int = 0):
    """``operand[..., start:limit:stride, ...]`` along ``axis`` (JAX's ``lax.slice_in_dim``).

    >>> import numpy as np
    >>> slice_in_dim(np.arange(6.0), 1, None, 2).tolist()
    [1.0, 3.0, 5.0]
    """
    shape = _shape(operand)
    axis = _axis(axis, len(shape), "slice_in_dim")
    size = shape[axis]
    start = 0 if start_index is None else int(start_index)
    limit = size if limit_index is None else int(limit_index)
    start, limit = start + size if start < 0 else start, limit + size if limit < 0 else limit
    starts, limits, strides = [0] * len(shape), list(shape), [1] * len(shape)
    starts[axis], limits[axis], strides[axis] = start, limit, int(stride)
    return structural.slice(operand, starts, limits, strides)


def _axis(axis, ndim, what) -> int:
    if not -ndim <= int(axis) < builtins.max(ndim, 1):
        raise FlamefxValueError(f"{what}: axis {axis} is out of range for rank {ndim}")
    return int(axis) % builtins.max(ndim, 1)


def _interleave(a, b, axis):
    """a[0], b[0], a[1], b[1], ... along ``axis`` (``a`` as long as ``b`` or one longer)."""
    na, nb = _shape(a)[axis], _shape(b)[axis]
    a_pad, b_pad = [(0, 0, 0)] * len(_shape(a)), [(0, 0, 0)] * len(_shape(b))
    a_pad[axis] = (0, 1 if na == nb else 0, 1)
    b_pad[axis] = (1, 0 if na == nb else 1, 1)
    op = ew.bitwise_or if _dtype(a) == np.bool_ else ew.add
    return op(structural.pad(a, _scalar_like(0, a), a_pad),
              structural.pad(b, _scalar_like(0, b), b_pad))


def associative_scan(fn, elems, reverse: bool = False, axis: int = 0):
    """Inclusive scan of an associative ``fn`` over ``axis`` by the parallel prefix algorithm
    (JAX's ``lax.associative_scan``): ``fn`` runs on whole strided slices, O(log n) times,
    so the result differentiates and batches through ordinary ops. ``elems`` may be a pytree.

    >>> import numpy as np
    >>> from flamefx import lax
    >>> associative_scan(lax.add, np.arange(5.0)).tolist()
    [0.0, 1.0, 3.0, 6.0, 10.0]
    """
    leaves, tree = tree_util.tree_flatten(elems)
    if not leaves:
        raise FlamefxValueError("associative_scan: elems has no arrays")
    leaves = [core.ensure_array(leaf) for leaf in leaves]
    axis = _axis(axis, len(_shape(leaves[0])), "associative_scan")
    n = _shape(leaves[0])[axis]
    if any(_shape(leaf)[axis] != n for leaf in leaves):
        raise FlamefxValueError(f"associative_scan: every array needs {n} elements along axis "
                                f"{axis}, got shapes {[_shape(leaf) for leaf in leaves]}")
    if reverse:
        leaves = [structural.rev(leaf, (axis,)) for leaf in leaves]

    def combine(a, b):
        out = fn(tree_util.tree_unflatten(tree, a), tree_util.tree_unflatten(tree, b))
        return tree_util.tree_leaves(out)

    def scan(xs):
        count = _shape(xs[0])[axis]
        if count < 2:
            return xs
        pairs = combine([slice_in_dim(x, 0, -1, 2, axis) for x in xs],
                        [slice_in_dim(x, 1, None, 2, axis) for x in xs])
        odd = scan(pairs)
        rest = [slice_in_dim(x, 2, None, 2, axis) for x in xs]
        if count % 2 == 0:
            even = combine([slice_in_dim(o, 0, -1, 1, axis) for o in odd], rest)
        else:
            even = combine(odd, rest)
        even = [structural.concatenate([slice_in_dim(x, 0, 1, 1, axis), e], axis)
                for x, e in zip(xs, even)]
        return [_interleave(e, o, axis) for e, o in zip(even, odd)]

    scanned = scan(leaves)
    if reverse:
        scanned = [structural.rev(s, (axis,)) for s in scanned]
    return tree_util.tree_unflatten(tree, scanned)


def _logaddexp(a, b):
    # Shifted by the max, held constant: the result's derivative does not depend on it.
    m = ew.max(a, b)
    m = stop_gradient(ew.select_n(ew.is_finite(m), ew.full_like(m, 0), m))
    total = ew.add(ew.exp(ew.sub(a, m)), ew.exp(ew.sub(b, m)))
    return ew.add(ew.log(total), m)


def _cumulative(combine, name):
    def cumulative(operand, axis: int = 0, reverse: bool = False):
        return associative_scan(combine, core.ensure_array(operand), reverse=reverse,
                                axis=axis)

    cumulative.__name__ = name
    return cumulative


def cumsum(operand, axis: int = 0, reverse: bool = False):
    """Cumulative sum along ``axis`` (JAX's ``lax.cumsum``: one ``cumsum`` primitive;
    negative axes count from the end).

    >>> cumsum(np.array([1.0, 2.0, 3.0]), reverse=True).tolist()
    [6.0, 5.0, 3.0]
    """
    operand = core.ensure_array(operand)
    return reductions.cumsum(operand, _axis(axis, len(_shape(operand)), "cumsum"), reverse)


cumprod = _cumulative(ew.mul, "cumprod")
cumprod.__doc__ = """Cumulative product along ``axis`` (JAX's ``lax.cumprod``).

    >>> cumprod(np.array([1.0, 2.0, 3.0])).tolist()
    [1.0, 2.0, 6.0]
    """
cummax = _cumulative(ew.max, "cummax")
cummax.__doc__ = """Cumulative maximum along ``axis`` (JAX's ``lax.cummax``).

    >>> cummax(np.array([1.0, 0.0, 3.0]), reverse=True).tolist()
    [3.0, 3.0, 3.0]
    """
cummin = _cumulative(ew.min, "cummin")
cummin.__doc__ = """Cumulative minimum along ``axis`` (JAX's ``lax.cummin``).

    >>> cummin(np.array([2.0, 1.0, 3.0])).tolist()
    [2.0, 1.0, 1.0]
    """
cumlogsumexp = _cumulative(_logaddexp, "cumlogsumexp")
cumlogsumexp.__doc__ = """Cumulative ``log(sum(exp(x)))`` along ``axis`` (JAX's
    ``lax.cumlogsumexp``), stable for large inputs.

    >>> [round(v, 4) for v in cumlogsumexp(np.array([0.0, 0.0])).tolist()]
    [0.0, 0.6931]
    """


# --- map and select ------------------------------------------------------------------------


def map(f, xs, *, batch_size: int | None = None):  # noqa: A001  (JAX's name)
    """``f`` over the leading axis of ``xs`` (a pytree), one slice at a time through
    ``lax.scan``; ``batch_size`` runs ``vmap(f)`` over chunks of that many (JAX's ``lax.map``).

    >>> import numpy as np
    >>> map(lambda x: x * 2, np.arange(3.0)).tolist()
    [0.0, 2.0, 4.0]
    """
    from flamefx.primitives.scan import scan
    from flamefx.transforms.batching import vmap

    if batch_size is None:
        return scan(lambda carry, x: (carry, f(x)), (), xs)[1]
    leaves, tree = tree_util.tree_flatten(xs)
    n = _shape(leaves[0])[0]
    batch_size = int(batch_size)
    if batch_size < 1:
        raise FlamefxValueError(f"lax.map: batch_size must be positive, got {batch_size}")
    chunks, remainder = divmod(n, batch_size)
    outs = []
    if chunks:
        main = [structural.reshape(slice_in_dim(leaf, 0, chunks * batch_size),
                                   (chunks, batch_size) + _shape(leaf)[1:]) for leaf in leaves]
        ys = scan(lambda carry, x: (carry, vmap(f)(x)), (),
                  tree_util.tree_unflatten(tree, main))[1]
        outs.append(tree_util.tree_map(
            lambda y: structural.reshape(y, (chunks * batch_size,) + _shape(y)[2:]), ys))
    if remainder:
        tail = [slice_in_dim(leaf, chunks * batch_size, None) for leaf in leaves]
        outs.append(vmap(f)(tree_util.tree_unflatten(tree, tail)))
    if len(outs) == 1:
        return outs[0]
    return tree_util.tree_map(lambda a, b: structural.concatenate([a, b], 0), *outs)


def select(pred, on_true, on_false):
    """``on_true`` where ``pred`` else ``on_false`` (JAX's ``lax.select``: equal shapes).

    >>> import numpy as np
    >>> select(np.array([True, False]), np.ones(2), np.zeros(2)).tolist()
    [1.0, 0.0]
    """
    return ew.select_n(pred, on_false, on_true)


# --- indexing along one dimension ------------------------------------------------------------


def index_in_dim(operand, index: int, axis: int = 0, keepdims: bool = True):
    """Element ``index`` along ``axis`` (JAX's ``lax.index_in_dim``).

    >>> import numpy as np
    >>> index_in_dim(np.arange(6.0).reshape(2, 3), -1, axis=1, keepdims=False).tolist()
    [2.0, 5.0]
    """
    shape = _shape(operand)
    axis = _axis(axis, len(shape), "index_in_dim")
    index = int(index) + shape[axis] if int(index) < 0 else int(index)
    if not 0 <= index < shape[axis]:
        raise FlamefxValueError(f"index_in_dim: index {index} is out of bounds for axis {axis} "
                                f"of size {shape[axis]}")
    out = slice_in_dim(operand, index, index + 1, 1, axis)
    return out if keepdims else structural.squeeze(out, (axis,))


def _start_list(start_indices, ndim, what):
    """The start indices as a list of scalars: a sequence as given, a 1-D array split."""
    if isinstance(start_indices, (list, tuple)):
        starts = list(start_indices)
    else:
        start_indices = core.ensure_array(start_indices)
        if len(_shape(start_indices)) != 1:
            raise FlamefxValueError(f"{what}: start_indices must be a sequence or a 1-D array, "
                                    f"got shape {_shape(start_indices)}{where()}")
        starts = [structural.squeeze(structural.slice(start_indices, (i,), (i + 1,)), (0,))
                  for i in range(_shape(start_indices)[0])]
    if len(starts) != ndim:
        raise FlamefxValueError(f"{what}: {len(starts)} start indices for an operand of rank "
                                f"{ndim} (one per axis){where()}")
    return starts


def _wrapped_starts(shape, start_indices, allow_negative_indices, what):
    """JAX's start-index normalization: a negative start counts once from the end of its axis
    (``i + dim``) where allowed; the primitive then clamps the window into bounds. A static
    negative start where not allowed is an error; a traced one is left to the clamp (as JAX)."""
    starts = _start_list(start_indices, len(shape), what)
    allow = ([bool(allow_negative_indices)] * len(shape)
             if isinstance(allow_negative_indices, (bool, np.bool_))
             else [bool(a) for a in allow_negative_indices])
    wrapped = []
    for i, dim, allowed in zip(starts, shape, allow):
        if isinstance(i, (int, np.integer)):
            if i < 0 and not allowed:
                raise FlamefxValueError(f"{what}: index {int(i)} is out of bounds for an axis "
                                        f"of size {dim} with allow_negative_indices=False"
                                        f"{where()}")
            wrapped.append(type(i)(i + dim) if i < 0 else i)
            continue
        i = core.ensure_array(i)
        if allowed and not np.issubdtype(_dtype(i), np.unsignedinteger):
            i = ew.select_n(ew.lt(i, ew.full_like(i, 0)), i, ew.add(i, ew.full_like(i, dim)))
        wrapped.append(i)
    return wrapped


def dynamic_slice(operand, start_indices, slice_sizes, *, allow_negative_indices=True):
    """A ``slice_sizes`` window of ``operand`` at traced ``start_indices`` (JAX's
    ``lax.dynamic_slice``): a negative start counts once from the end of its axis (where
    ``allow_negative_indices``), then the window is clamped to stay in bounds.

    >>> import numpy as np
    >>> dynamic_slice(np.arange(5.0), [-1], (2,)).tolist()  # -1 -> 4, clamped to 3
    [3.0, 4.0]
    """
    starts = _wrapped_starts(_shape(operand), start_indices, allow_negative_indices,
                             "dynamic_slice")
    return dynamic_slicing.dynamic_slice(operand, starts, slice_sizes)


def dynamic_update_slice(operand, update, start_indices, *, allow_negative_indices=True):
    """``operand`` with ``update`` written at traced ``start_indices`` (JAX's
    ``lax.dynamic_update_slice``): a negative start counts once from the end of its axis
    (where ``allow_negative_indices``), then the window is clamped to stay in bounds.

    >>> import numpy as np
    >>> dynamic_update_slice(np.zeros(4), np.ones(2), [-3]).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    starts = _wrapped_starts(_shape(operand), start_indices, allow_negative_indices,
                             "dynamic_update_slice")
    return dynamic_slicing.dynamic_update_slice(operand, update, starts)


def _starts(shape, axis, index):
    """Start indices: ``index`` on ``axis``, zeros (of its type) elsewhere, as JAX builds them."""
    if isinstance(index, (int, np.integer)):
        zero = type(index)(0)
    else:
        index = core.ensure_array(index)
        zero = ew.full_like(index, 0)
    return [index if i == axis else zero for i in range(len(shape))]


def dynamic_slice_in_dim(operand, start_index, slice_size: int, axis: int = 0, *,
                         allow_negative_indices: bool = True):
    """``slice_size`` elements from a traced ``start_index`` along ``axis`` (a negative
    start counts from the end, as JAX; then clamped to stay in bounds).

    >>> import numpy as np
    >>> dynamic_slice_in_dim(np.arange(5.0), -2, 2).tolist()
    [3.0, 4.0]
    """
    shape = _shape(operand)
    axis = _axis(axis, len(shape), "dynamic_slice_in_dim")
    sizes = list(shape)
    sizes[axis] = int(slice_size)
    return dynamic_slice(operand, _starts(shape, axis, start_index), tuple(sizes),
                         allow_negative_indices=allow_negative_indices)


def dynamic_index_in_dim(operand, index, axis: int = 0, keepdims: bool = True, *,
                         allow_negative_indices: bool = True):
    """Element at a traced ``index`` along ``axis`` (JAX's ``lax.dynamic_index_in_dim``).

    >>> import numpy as np
    >>> dynamic_index_in_dim(np.arange(4.0), 2, keepdims=False).tolist()
    2.0
    """
    out = dynamic_slice_in_dim(operand, index, 1, axis,
                               allow_negative_indices=allow_negative_indices)
    axis = _axis(axis, len(_shape(operand)), "dynamic_index_in_dim")
    return out if keepdims else structural.squeeze(out, (axis,))


def dynamic_update_slice_in_dim(operand, update, start_index, axis: int, *,
                                allow_negative_indices: bool = True):
    """``operand`` with ``update`` written from a traced ``start_index`` along ``axis``.

    >>> import numpy as np
    >>> dynamic_update_slice_in_dim(np.zeros(4), np.ones(2), 1, 0).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    shape = _shape(operand)
    axis = _axis(axis, len(shape), "dynamic_update_slice_in_dim")
    return dynamic_update_slice(operand, update, _starts(shape, axis, start_index),
                                allow_negative_indices=allow_negative_indices)


def dynamic_update_index_in_dim(operand, update, index, axis: int, *,
                                allow_negative_indices: bool = True):
    """``operand`` with the slice at a traced ``index`` along ``axis`` replaced by ``update``
    (which may lack that axis).

    >>> import numpy as np
    >>> dynamic_update_index_in_dim(np.zeros((2, 2)), np.ones(2), 1, 0).tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    ndim = len(_shape(operand))
    axis = _axis(axis, ndim, "dynamic_update_index_in_dim")
    update = core.ensure_array(update)
    if len(_shape(update)) == ndim - 1:
        update = structural.expand_dims(update, (axis,))
    return dynamic_update_slice_in_dim(operand, update, index, axis,
                                       allow_negative_indices=allow_negative_indices)


# --- shapes and constants ------------------------------------------------------------------


def broadcast(operand, sizes, *, out_sharding=None):
    """Adds leading dims ``sizes`` (JAX's ``lax.broadcast``; ``out_sharding`` is ignored).

    >>> import numpy as np
    >>> broadcast(np.ones(3), (2,)).shape
    (2, 3)
    """
    del out_sharding
    operand = core.ensure_array(operand)
    ndim, sizes = len(_shape(operand)), tuple(int(s) for s in sizes)
    return structural.broadcast_in_dim(operand, sizes + _shape(operand),
                                       tuple(range(len(sizes), len(sizes) + ndim)))


def collapse(operand, start_dimension: int, stop_dimension: int | None = None):
    """Merges dims ``start_dimension:stop_dimension`` into one (JAX's ``lax.collapse``).

    >>> import numpy as np
    >>> collapse(np.ones((2, 3, 4)), 1).shape
    (2, 12)
    """
    shape = _shape(operand)
    ndim = len(shape)
    start = int(start_dimension) % builtins.max(ndim, 1) if start_dimension < 0 else int(
        start_dimension)
    stop = ndim if stop_dimension is None else (
        int(stop_dimension) + ndim if stop_dimension < 0 else int(stop_dimension))
    if not 0 <= start <= stop <= ndim:
        raise FlamefxValueError(f"collapse: dimensions {start_dimension}:{stop_dimension} are "
                                f"out of range for shape {shape}")
    size = int(np.prod(shape[start:stop], dtype=np.int64))
    return structural.reshape(operand, shape[:start] + (size,) + shape[stop:])


def full(shape, fill_value, dtype=None, *, sharding=None):
    """An array of ``shape`` filled with ``fill_value`` (JAX's ``lax.full``; ``sharding`` is
    accepted and ignored).

    >>> full((2,), 3.0).tolist()
    [3.0, 3.0]
    """
    del sharding
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    if dtype is None:
        if core.is_array(fill_value) or isinstance(fill_value, core.Tracer):
            dtype = _dtype(fill_value)
        else:
            dtype = dtypes.canonicalize(np.asarray(fill_value).dtype)
    dtype = dtypes.canonicalize(dtype)
    if core.is_array(fill_value) or isinstance(fill_value, core.Tracer):
        if _shape(fill_value) != ():
            raise FlamefxTypeError(f"full: fill_value must be a scalar, got shape "
                                   f"{_shape(fill_value)}")
        value = fill_value if _dtype(fill_value) == dtype else ew.convert_element_type(
            fill_value, dtype)
    else:
        value = core.to_array(np.asarray(fill_value, dtype), weak=False)
    return structural.broadcast_in_dim(value, shape, ())


def zeros_like_array(x):
    """Zeros of ``x``'s shape and dtype.

    >>> import numpy as np
    >>> zeros_like_array(np.ones(2)).tolist()
    [0.0, 0.0]
    """
    return ew.full_like(core.ensure_array(x), 0)


def clamp(min, x, max):  # noqa: A002  (JAX's argument names)
    """``x`` limited to ``[min, max]``; the bounds may be scalars (JAX's ``lax.clamp``).
    The gradient passes to ``x`` strictly inside the interval.

    >>> import numpy as np
    >>> clamp(0.0, np.array([-1.0, 0.5, 2.0]), 1.0).tolist()
    [0.0, 0.5, 1.0]
    """
    x = core.ensure_array(x)
    shape = _shape(x)

    def bound(b, name):
        b = _scalar_like(b, x) if np.ndim(b) == 0 or _shape(core.ensure_array(b)) == () \
            else core.ensure_array(b)
        if _shape(b) not in ((), shape):
            raise FlamefxTypeError(f"clamp: {name} must be a scalar or of x's shape {shape}, "
                                   f"got {_shape(b)}")
        if _dtype(b) != _dtype(x):
            raise FlamefxTypeError(f"clamp: {name} dtype {_dtype(b)} differs from x's "
                                   f"{_dtype(x)}")
        return structural.broadcast_in_dim(b, shape, ()) if _shape(b) == () else b

    lo, hi = bound(min, "min"), bound(max, "max")
    inside = ew.bitwise_and(ew.gt(x, lo), ew.lt(x, hi))
    edge = ew.select_n(ew.le(x, lo), hi, lo)
    return ew.select_n(inside, edge, x)


# --- products -------------------------------------------------------------------------------


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
    """JAX's ``lax.dot_general``; ``precision`` takes ``lax.Precision`` as well
    (``out_sharding`` is accepted and ignored).

    >>> import numpy as np
    >>> dot_general(np.ones((2, 3)), np.ones((3,)), (((1,), (0,)), ((), ()))).tolist()
    [3.0, 3.0]
    """
    del out_sharding  # flamefx has no sharding
    return _dot_general(lhs, rhs, dimension_numbers, canonicalize_precision(precision),
                        preferred_element_type)


def dot(lhs, rhs, *, dimension_numbers=None, precision=None, preferred_element_type=None,
        out_sharding=None):
    """Vector/matrix product of rank-1 or rank-2 operands, or ``dot_general`` when
    ``dimension_numbers`` is given (JAX's ``lax.dot``; ``out_sharding`` is ignored).

    >>> import numpy as np
    >>> dot(np.ones((2, 3)), np.ones(3)).tolist()
    [3.0, 3.0]
    """
    del out_sharding
    if dimension_numbers is not None:
        return dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    lhs_shape, rhs_shape = _shape(core.ensure_array(lhs)), _shape(core.ensure_array(rhs))
    if len(lhs_shape) not in (1, 2) or len(rhs_shape) not in (1, 2) \
            or lhs_shape[-1] != rhs_shape[0]:
        raise FlamefxTypeError(f"dot: incompatible shapes for dot: got {lhs_shape} and "
                               f"{rhs_shape} (rank 1 or 2, contracting lhs's last dim with "
                               f"rhs's first; give dimension_numbers for anything else)")
    dims = (((len(lhs_shape) - 1,), (0,)), ((), ()))
    return dot_general(lhs, rhs, dims, precision, preferred_element_type)


def batch_matmul(lhs, rhs, precision=None):
    """Matrix products batched over every leading dim (JAX's ``lax.batch_matmul``).

    >>> import numpy as np
    >>> batch_matmul(np.ones((4, 2, 3)), np.ones((4, 3, 5))).shape
    (4, 2, 5)
    """
    lhs_shape, rhs_shape = _shape(core.ensure_array(lhs)), _shape(core.ensure_array(rhs))
    if len(lhs_shape) < 2 or len(lhs_shape) != len(rhs_shape) \
            or lhs_shape[:-2] != rhs_shape[:-2]:
        raise FlamefxValueError(f"batch_matmul: operands need equal rank >= 2 and equal batch "
                                f"dims, got {lhs_shape} and {rhs_shape}")
    batch = tuple(range(len(lhs_shape) - 2))
    dims = (((len(lhs_shape) - 1,), (len(rhs_shape) - 2,)), (batch, batch))
    return dot_general(lhs, rhs, dims, precision)
