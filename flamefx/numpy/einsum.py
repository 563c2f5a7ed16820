"""einsum: Einstein summation, parsed here into diagonals, sums, dot_generals and a transpose.

Operands are contracted left to right; each pairwise contraction is one dot_general whose
batch dims are the labels both share and still need (in the output or a later operand).
'...' broadcasts like NumPy; repeated labels in one operand take its diagonal.

>>> import flamefx.numpy as fnp
>>> fnp.einsum("ij,jk->ik", fnp.ones((2, 3)), fnp.ones((3, 4))).shape
(2, 4)
>>> fnp.einsum("ii", fnp.eye(3)).item()
3.0
"""

from __future__ import annotations

import string

import numpy as np

from flamefx import dtypes, lax
from flamefx.errors import FlamefxValueError, user_frame
from flamefx.numpy.promotion import constant_like, convert, promote_dtypes

_ELLIPSIS_LABELS = "0123456789"  # stand-ins for '...' dims; never valid user labels
_LETTERS = string.ascii_letters  # the labels of the interleaved form's ints 0..51


def _error(message: str):
    return FlamefxValueError(f"einsum: {message}\n  at {user_frame()}")


def _parse(subscripts: str, ndims: list) -> tuple[list, list]:
    """Per-operand label lists and the output label list, with '...' expanded."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        inputs_spec, output_spec = subscripts.split("->")
    else:
        inputs_spec, output_spec = subscripts, None
    terms = inputs_spec.split(",")
    if len(terms) != len(ndims):
        raise _error(f"{len(terms)} input terms in {subscripts!r} but {len(ndims)} operands")
    for ch in subscripts:
        if not (ch.isalpha() or ch in ".,->"):
            raise _error(f"invalid character {ch!r} in subscripts {subscripts!r}")
    n_ellipsis = 0
    for term, ndim in zip(terms, ndims):
        if "..." in term:
            n_ellipsis = max(n_ellipsis, ndim - (len(term) - 3))
    if n_ellipsis > len(_ELLIPSIS_LABELS):
        raise _error("'...' stands for too many dimensions")
    ellipsis = list(_ELLIPSIS_LABELS[:n_ellipsis])
    inputs = []
    for term, ndim in zip(terms, ndims):
        if "..." in term:
            before, after = term.split("...")
            n = ndim - len(before) - len(after)
            labels = list(before) + ellipsis[n_ellipsis - n:] + list(after) if n >= 0 else None
        else:
            labels = list(term)
        if labels is None or len(labels) != ndim:
            raise _error(f"term {term!r} does not fit an operand of {ndim} dimension(s)")
        inputs.append(labels)
    if output_spec is None:
        counts = {}
        for labels in inputs:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        once = [label for label, count in counts.items() if count == 1 and label.isalpha()]
        output = ellipsis + sorted(once)
    else:
        before, _, after = output_spec.partition("...")
        output = list(before) + (ellipsis if "..." in output_spec else []) + list(after)
        if len(set(output)) != len(output):
            raise _error(f"output {output_spec!r} repeats a label")
        known = {label for labels in inputs for label in labels}
        if any(label not in known for label in output):
            raise _error(f"output {output_spec!r} has a label no input has")
    return inputs, output


def _drop_broadcast_dims(operands):
    """Size-1 dims whose label is larger elsewhere are squeezed out (NumPy broadcasting)."""
    sizes = {}  # the size of each label where it is not 1
    for x, labels in operands:
        for label, n in zip(labels, x.shape):
            if n != 1 and sizes.setdefault(label, n) != n:
                raise _error(f"label {label!r} has sizes {sizes[label]} and {n}")
    out = []
    for x, labels in operands:
        keep = [i for i, (label, n) in enumerate(zip(labels, x.shape))
                if not (n == 1 and sizes.get(label, 1) > 1)]
        if len(keep) != len(labels):
            x = lax.reshape(x, tuple(x.shape[i] for i in keep))
            labels = [labels[i] for i in keep]
        out.append((x, labels))
    return out


def _take_diagonals(x, labels):
    """Repeated labels in one operand: keep the diagonal, one dim per label."""
    while len(set(labels)) != len(labels):
        label = next(label for label in labels if labels.count(label) > 1)
        first = labels.index(label)
        second = labels.index(label, first + 1)
        n = x.shape[first]
        eye = lax.eq(lax.iota(dtypes.int32, (n, n), 0), lax.iota(dtypes.int32, (n, n), 1))
        mask = lax.broadcast_in_dim(eye, x.shape, (first, second))
        x = lax.reduce_sum(lax.select_n(mask, constant_like(x, 0), x), (second,))
        labels = labels[:second] + labels[second + 1:]
    return x, labels


def _sum_out(x, labels, needed):
    axes = tuple(i for i, label in enumerate(labels) if label not in needed)
    if not axes:
        return x, labels
    return lax.reduce_sum(x, axes), [label for label in labels if label in needed]


def _contract(a, a_labels, b, b_labels, needed, precision):
    shared = [label for label in a_labels if label in b_labels]
    batch = [label for label in shared if label in needed]
    contracted = [label for label in shared if label not in needed]

    def positions(labels, wanted):
        return tuple(labels.index(label) for label in wanted)

    dimension_numbers = ((positions(a_labels, contracted), positions(b_labels, contracted)),
                         (positions(a_labels, batch), positions(b_labels, batch)))
    out = lax.dot_general(a, b, dimension_numbers, precision=precision)
    out_labels = (batch + [label for label in a_labels if label not in shared]
                  + [label for label in b_labels if label not in shared])
    return out, out_labels


def _sublist_letters(sublist) -> str:
    """An interleaved-form sublist ([0, 1], [..., 2]) as subscript letters ('ab', '...c')."""
    letters = []
    for label in sublist:
        if label is Ellipsis:
            letters.append("...")
        elif isinstance(label, (int, np.integer)) and 0 <= label < len(_LETTERS):
            letters.append(_LETTERS[int(label)])
        else:
            raise _error(f"sublist labels must be Ellipsis or ints in [0, {len(_LETTERS)}), "
                         f"got {label!r}")
    return "".join(letters)


def _from_interleaved(args: tuple) -> tuple[str, tuple]:
    """NumPy's ``einsum(op0, sublist0, op1, sublist1, ..., [sublist_out])`` as
    (subscripts, operands)."""
    operands, sublists = args[0::2], args[1::2]
    output = None
    if len(args) % 2:  # an odd count ends with the output sublist
        operands, output = operands[:-1], args[-1]
    subscripts = ",".join(_sublist_letters(s) for s in sublists)
    if output is not None:
        subscripts += "->" + _sublist_letters(output)
    return subscripts, operands


def einsum(subscripts, *operands, optimize=None, precision=None):
    """Einstein summation over ``operands`` as described by ``subscripts`` ('ij,jk->ik').

    NumPy's interleaved form ``einsum(a, [0, 1], b, [1, 2], [0, 2])`` works too.

    >>> einsum("i,i->", [1.0, 2.0], [3.0, 4.0]).item()
    11.0
    >>> einsum([1.0, 2.0], [0], [3.0, 4.0], [0], []).item()
    11.0
    """
    del optimize  # contraction order is left to right
    if not isinstance(subscripts, str):
        subscripts, operands = _from_interleaved((subscripts,) + operands)
    arrays = promote_dtypes(*operands) if len(operands) > 1 else promote_dtypes(operands[0])
    if arrays and arrays[0].dtype == dtypes.bool_:
        arrays = [convert(a, dtypes.default_int()) for a in arrays]
    inputs, output = _parse(subscripts, [a.ndim for a in arrays])
    pending = _drop_broadcast_dims(list(zip(arrays, inputs)))
    pending = [_take_diagonals(x, labels) for x, labels in pending]

    def still_needed(rest):
        return set(output).union(*[set(labels) for _, labels in rest])

    pending = [_sum_out(x, labels, still_needed(pending[:i] + pending[i + 1:]))
               for i, (x, labels) in enumerate(pending)]
    x, labels = pending[0]
    for i, (y, y_labels) in enumerate(pending[1:], start=1):
        x, labels = _contract(x, labels, y, y_labels, still_needed(pending[i + 1:]), precision)
    x, labels = _sum_out(x, labels, set(output))
    perm = tuple(labels.index(label) for label in output)
    if perm != tuple(range(len(perm))):
        x = lax.transpose(x, perm)
    return x


def vecdot(x1, x2, /, *, axis: int = -1, precision=None):
    """The dot product of vectors along ``axis`` of ``x1`` and ``x2``, broadcasting the
    other axes (the array API's ``vecdot``: ``x1`` is conjugated, as in NumPy and JAX).

    >>> vecdot([[1.0, 2.0], [3.0, 4.0]], [1.0, 1.0]).tolist()
    [3.0, 7.0]
    >>> vecdot(np.array([1j]), np.array([1j])).item()
    (1+0j)
    """
    from flamefx.numpy.promotion import broadcast_shapes, broadcast_to, canonical_axis
    from flamefx.numpy.shape import moveaxis
    x1, x2 = promote_dtypes(x1, x2)
    if x1.ndim == 0 or x2.ndim == 0:
        raise _error(f"vecdot needs arrays of at least one dimension, got shapes {x1.shape} "
                     f"and {x2.shape}")
    ax1, ax2 = canonical_axis(axis, x1.ndim), canonical_axis(axis, x2.ndim)
    if x1.shape[ax1] != x2.shape[ax2]:
        raise _error(f"vecdot: the axis {axis} has size {x1.shape[ax1]} in x1 {x1.shape} but "
                     f"{x2.shape[ax2]} in x2 {x2.shape}")
    if dtypes.is_complex(x1.dtype):
        from flamefx.numpy.complex_numbers import conjugate
        x1 = conjugate(x1)
    x1, x2 = moveaxis(x1, ax1, -1), moveaxis(x2, ax2, -1)
    batch = broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    x1 = broadcast_to(x1, batch + x1.shape[-1:])
    x2 = broadcast_to(x2, batch + x2.shape[-1:])
    return einsum("...i,...i->...", x1, x2, precision=precision)
