"""JAX's convolution API of ``lax`` over flamefx's ``conv_general_dilated`` primitive.

The primitive computes NC(spatial...) x OI(spatial...) -> NC(spatial...) with explicit
``(lo, hi)`` padding. Everything JAX's ``lax`` adds on top lives here and is re-exported
from ``flamefx.lax``: ``dimension_numbers`` (layouts as strings such as
``('NHWC', 'HWIO', 'NHWC')``, moved to the primitive's layout by transposes), string
padding (``'SAME'``, ``'VALID'``, ``'SAME_LOWER'``), ``Precision``, the shape helpers,
``conv``, ``conv_with_general_padding`` and ``conv_transpose``.

>>> import numpy as np
>>> x = np.ones((1, 5, 5, 2), np.float32); w = np.ones((3, 3, 2, 4), np.float32)
>>> conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).shape
(1, 5, 5, 4)
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

from flamefx import core
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.primitives import nn_ops, structural
from flamefx.primitives.windowed import dilate_dim


class Precision(enum.Enum):
    """Matmul/convolution precision, as JAX's ``lax.Precision``.

    On flamefx's GPU path ``DEFAULT`` follows the ``default_matmul_precision`` option,
    ``HIGH`` allows TF32 and ``HIGHEST`` computes in full float32; the NumPy path always
    computes at full precision. Strings JAX accepts ('default', 'high', 'highest',
    'bfloat16', 'tensorfloat32', 'float32') and flamefx's own ('tf32', 'bf16') work too.

    >>> Precision("highest") is Precision.HIGHEST
    True
    """

    DEFAULT = "default"
    HIGH = "high"
    HIGHEST = "highest"

    @classmethod
    def _missing_(cls, value):
        aliases = {"bfloat16": cls.DEFAULT, "tensorfloat32": cls.HIGH, "float32": cls.HIGHEST}
        return aliases.get(str(value).lower()) if isinstance(value, str) else None

    def __str__(self):
        return self.name


_PRIMITIVE_PRECISION = {Precision.DEFAULT: None, Precision.HIGH: "tf32",
                        Precision.HIGHEST: "highest"}
_ORDER = (None, "bf16", "tf32", "highest")


def canonicalize_precision(precision):
    """A ``precision=`` argument as the primitives take it: None, 'bf16', 'tf32' or 'highest'.

    A pair (one per operand, as JAX allows) takes the higher of the two.

    >>> canonicalize_precision(Precision.HIGHEST), canonicalize_precision(None)
    ('highest', None)
    """
    if isinstance(precision, (tuple, list)):
        if len(precision) != 2:
            raise FlamefxTypeError(f"precision must be one value or a pair, got {precision!r}")
        a, b = (canonicalize_precision(p) for p in precision)
        return max(a, b, key=_ORDER.index)
    if precision is None or precision in ("tf32", "bf16"):
        return precision
    try:
        return _PRIMITIVE_PRECISION[Precision(precision)]
    except ValueError:
        raise FlamefxTypeError(f"precision must be None, a lax.Precision, one of "
                               f"{[p.value for p in Precision]} or 'tf32'/'bf16', got "
                               f"{precision!r}") from None


# --- padding and dimension numbers ----------------------------------------------------------


def padtype_to_pads(in_shape, window_shape, window_strides, padding) -> list:
    """Explicit ``(lo, hi)`` pairs for a padding string (JAX's ``lax.padtype_to_pads``).

    'SAME' gives ``ceil(in / stride)`` outputs, the odd pad at the end ('SAME_LOWER': at the
    start); 'VALID' pads nothing. Pairs pass through.

    >>> padtype_to_pads((5, 4), (3, 3), (2, 1), "SAME")
    [(1, 1), (1, 1)]
    """
    if not isinstance(padding, str):
        return [(int(lo), int(hi)) for lo, hi in padding]
    kind = padding.upper()
    if kind == "VALID":
        return [(0, 0)] * len(in_shape)
    if kind not in ("SAME", "SAME_LOWER"):
        raise FlamefxValueError(f"unknown padding {padding!r}: expected 'SAME', 'SAME_LOWER', "
                                f"'VALID' or (lo, hi) pairs")
    pads = []
    for size, w, s in zip(in_shape, window_shape, window_strides):
        total = max((-(-int(size) // int(s)) - 1) * int(s) + int(w) - int(size), 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if kind == "SAME" else (large, small))
    return pads


class ConvDimensionNumbers(NamedTuple):
    """Where each layout's dims sit: ``lhs_spec`` = (batch, feature, spatial...),
    ``rhs_spec`` = (out feature, in feature, spatial...), ``out_spec`` like ``lhs_spec``.

    >>> conv_dimension_numbers((1, 5, 5, 2), (3, 3, 2, 4), ("NHWC", "HWIO", "NHWC")).rhs_spec
    (3, 2, 0, 1)
    """

    lhs_spec: tuple
    rhs_spec: tuple
    out_spec: tuple


def conv_general_permutations(dimension_numbers) -> tuple:
    """The (lhs, rhs, out) permutations of three layout strings, e.g. ('NCHW', 'OIHW', 'NCHW').

    >>> conv_general_permutations(("NHWC", "HWIO", "NHWC"))
    ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    """
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    charpairs = (("N", "C"), ("O", "I"), ("N", "C"))
    for spec, (a, b) in zip(dimension_numbers, charpairs):
        if spec.count(a) != 1 or spec.count(b) != 1:
            raise FlamefxTypeError(f"convolution dimension_numbers {dimension_numbers}: "
                                   f"{spec!r} must contain {a!r} and {b!r} once each")
        if len(spec) != len(set(spec)):
            raise FlamefxTypeError(f"convolution dimension_numbers {dimension_numbers}: "
                                   f"{spec!r} repeats a dimension")
    spatial = set(lhs_spec) - {"N", "C"}
    if spatial != set(rhs_spec) - {"O", "I"} or spatial != set(out_spec) - {"N", "C"}:
        raise FlamefxTypeError(f"convolution dimension_numbers {dimension_numbers} name "
                               f"different spatial dimensions")

    def perm(spec, pair):
        positions = [i for i, c in enumerate(spec) if c not in pair]
        if spec is not rhs_spec:  # spatial dims in the kernel's order
            positions.sort(key=lambda i: rhs_spec.index(spec[i]))
        return (spec.index(pair[0]), spec.index(pair[1])) + tuple(positions)

    return tuple(perm(spec, pair) for spec, pair in zip(dimension_numbers, charpairs))


def conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) -> ConvDimensionNumbers:
    """``dimension_numbers`` (None, three strings or ConvDimensionNumbers) as
    ConvDimensionNumbers (JAX's ``lax.conv_dimension_numbers``).

    >>> conv_dimension_numbers((1, 2, 5), (4, 2, 3), None)
    ConvDimensionNumbers(lhs_spec=(0, 1, 2), rhs_spec=(0, 1, 2), out_spec=(0, 1, 2))
    """
    if len(lhs_shape) != len(rhs_shape):
        raise FlamefxTypeError(f"convolution operands need equal ranks, got lhs shape "
                               f"{tuple(lhs_shape)} and rhs shape {tuple(rhs_shape)}")
    if dimension_numbers is None:
        canonical = tuple(range(len(lhs_shape)))
        return ConvDimensionNumbers(canonical, canonical, canonical)
    if isinstance(dimension_numbers, ConvDimensionNumbers):
        return dimension_numbers
    if len(dimension_numbers) != 3:
        raise FlamefxTypeError(f"dimension_numbers must be None, ConvDimensionNumbers or "
                               f"three layout strings, got {dimension_numbers!r}")
    for spec in dimension_numbers:
        if len(spec) != len(lhs_shape):
            raise FlamefxTypeError(f"dimension_numbers {dimension_numbers}: {spec!r} does "
                                   f"not match operands of rank {len(lhs_shape)}")
    return ConvDimensionNumbers(*conv_general_permutations(dimension_numbers))


def _inverse(perm) -> tuple:
    return tuple(int(i) for i in np.argsort(perm))


def conv_shape_tuple(lhs_shape, rhs_shape, strides, pads, batch_group_count: int = 1) -> tuple:
    """The output shape of an NC.../OI... convolution without dilation.

    >>> conv_shape_tuple((1, 2, 5), (4, 2, 3), (2,), "SAME")
    (1, 4, 3)
    """
    if isinstance(pads, str):
        pads = padtype_to_pads(lhs_shape[2:], rhs_shape[2:], strides, pads)
    space = [max(0, (size + lo + hi - k) // s + 1)
             for size, k, s, (lo, hi) in zip(lhs_shape[2:], rhs_shape[2:], strides, pads)]
    return (lhs_shape[0] // batch_group_count, rhs_shape[0]) + tuple(space)


def conv_general_shape_tuple(lhs_shape, rhs_shape, window_strides, padding,
                             dimension_numbers) -> tuple:
    """The output shape of ``conv_general_dilated`` without dilation, in the out layout.

    >>> conv_general_shape_tuple((1, 5, 5, 2), (3, 3, 2, 4), (1, 1), "VALID",
    ...                          ("NHWC", "HWIO", "NHWC"))
    (1, 3, 3, 4)
    """
    dnums = conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    lhs_trans = tuple(lhs_shape[i] for i in dnums.lhs_spec)
    rhs_trans = tuple(rhs_shape[i] for i in dnums.rhs_spec)
    out = conv_shape_tuple(lhs_trans, rhs_trans, window_strides, padding)
    return tuple(out[i] for i in _inverse(dnums.out_spec))


def _conv_transpose_padding(k: int, s: int, padding) -> tuple:
    """JAX's padding of the dilated input for a transposed convolution, from the forward
    convolution's padding ('SAME', 'VALID' or a (lo, hi) pair)."""
    if not isinstance(padding, str):
        lo, hi = (k - int(p) - 1 for p in padding)
        return lo, hi
    if padding.upper() == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
    elif padding.upper() == "VALID":
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    else:
        raise FlamefxValueError(f"conv_transpose padding must be 'SAME', 'VALID' or (lo, hi) "
                                f"pairs, got {padding!r}")
    return lo, total - lo


def conv_transpose_shape_tuple(lhs_shape, rhs_shape, window_strides, padding,
                               dimension_numbers) -> tuple:
    """The output shape of ``conv_transpose`` (JAX's ``lax.conv_transpose_shape_tuple``).

    >>> conv_transpose_shape_tuple((1, 4, 4, 2), (3, 3, 2, 5), (2, 2), "SAME",
    ...                            ("NHWC", "HWIO", "NHWC"))
    (1, 8, 8, 5)
    """
    dnums = conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    lhs_trans = tuple(lhs_shape[i] for i in dnums.lhs_spec)
    rhs_trans = tuple(rhs_shape[i] for i in dnums.rhs_spec)
    if isinstance(padding, str):
        padding = [_conv_transpose_padding(k, s, padding)
                   for k, s in zip(rhs_trans[2:], window_strides)]
    space = [(i - 1) * s - k + 2 + lo + hi
             for i, k, s, (lo, hi) in zip(lhs_trans[2:], rhs_trans[2:], window_strides,
                                          padding)]
    out = (lhs_trans[0], rhs_trans[0]) + tuple(space)
    return tuple(out[i] for i in _inverse(dnums.out_spec))


# --- the convolutions -------------------------------------------------------------------------


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         out_sharding=None):
    """General N-d convolution with JAX's signature (``lax.conv_general_dilated``;
    ``out_sharding`` is accepted and ignored).

    ``padding``: 'SAME', 'SAME_LOWER', 'VALID' or ``(lo, hi)`` pairs (negative crops);
    ``dimension_numbers``: None (NC.../OI.../NC...), three layout strings or
    ConvDimensionNumbers. ``batch_group_count`` other than 1 is not supported (a flamefx
    ValueError says so).

    >>> x = np.arange(5.0).reshape(1, 1, 5); w = np.ones((1, 1, 2))
    >>> conv_general_dilated(x, w, (2,), "VALID").tolist()
    [[[1.0, 5.0]]]
    """
    del out_sharding  # flamefx has no sharding
    lhs, rhs = core.ensure_array(lhs), core.ensure_array(rhs)
    lhs_shape, rhs_shape = core.get_aval(lhs).shape, core.get_aval(rhs).shape
    dnums = conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    n_spatial = len(lhs_shape) - 2
    if batch_group_count != 1:
        raise FlamefxValueError(f"conv_general_dilated: batch_group_count="
                                f"{batch_group_count} is not supported (only 1)")
    lhs_dilation = tuple(lhs_dilation or (1,) * n_spatial)
    rhs_dilation = tuple(rhs_dilation or (1,) * n_spatial)
    if isinstance(padding, str):
        if any(d != 1 for d in lhs_dilation):
            raise FlamefxValueError("string padding is not implemented for transposed "
                                    "convolution with this op: give explicit (lo, hi) pairs "
                                    "or use lax.conv_transpose")
        kernel = [rhs_shape[i] for i in dnums.rhs_spec[2:]]
        padding = padtype_to_pads([lhs_shape[i] for i in dnums.lhs_spec[2:]],
                                  [dilate_dim(k, d) for k, d in zip(kernel, rhs_dilation)],
                                  window_strides, padding)
    else:
        try:
            padding = [(int(lo), int(hi)) for lo, hi in padding]
        except (TypeError, ValueError):
            raise FlamefxTypeError(f"padding of conv_general_dilated must be a string or "
                                   f"(lo, hi) pairs, got {padding!r}") from None
    out = nn_ops.conv_general_dilated(
        _permuted(lhs, dnums.lhs_spec), _permuted(rhs, dnums.rhs_spec), window_strides,
        padding, lhs_dilation, rhs_dilation, feature_group_count,
        canonicalize_precision(precision), preferred_element_type)
    return _permuted(out, _inverse(dnums.out_spec))


def _permuted(x, perm):
    return x if tuple(perm) == tuple(range(len(perm))) else structural.transpose(x, tuple(perm))


def conv(lhs, rhs, window_strides, padding, precision=None, preferred_element_type=None):
    """``conv_general_dilated`` in NC.../OI... layout without dilation (JAX's ``lax.conv``).

    >>> conv(np.ones((1, 1, 4)), np.ones((1, 1, 3)), (1,), "SAME").tolist()
    [[[2.0, 3.0, 3.0, 2.0]]]
    """
    return conv_general_dilated(lhs, rhs, window_strides, padding, precision=precision,
                                preferred_element_type=preferred_element_type)


def conv_with_general_padding(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                              precision=None, preferred_element_type=None):
    """``conv_general_dilated`` in NC.../OI... layout (JAX's ``lax.conv_with_general_padding``).

    >>> conv_with_general_padding(np.ones((1, 1, 3)), np.ones((1, 1, 2)), (1,), ((1, 1),),
    ...                           (2,), (1,)).tolist()
    [[[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]]
    """
    return conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                precision=precision,
                                preferred_element_type=preferred_element_type)


_TRANSPOSE_DEFAULTS = {2: ("NC", "IO", "NC"), 3: ("NHC", "HIO", "NHC"),
                       4: ("NHWC", "HWIO", "NHWC"), 5: ("NHWDC", "HWDIO", "NHWDC")}


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None, dimension_numbers=None,
                   transpose_kernel: bool = False, precision=None, preferred_element_type=None,
                   use_consistent_padding: bool = False):
    """Transposed convolution as JAX's ``lax.conv_transpose``: a convolution of the
    stride-dilated input. Default layouts are JAX's (NHWC input, HWIO kernel);
    ``transpose_kernel=True`` flips the kernel in space and swaps its I/O dims (the exact
    gradient of a forward convolution). 'SAME'/'VALID' name the forward convolution's
    padding; ``(lo, hi)`` pairs pad the dilated input as given, or, with
    ``use_consistent_padding=True``, are the forward convolution's too (PyTorch's reading).

    >>> conv_transpose(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5)), (2, 2), "SAME").shape
    (1, 8, 8, 5)
    """
    lhs, rhs = core.ensure_array(lhs), core.ensure_array(rhs)
    lhs_shape, rhs_shape = core.get_aval(lhs).shape, core.get_aval(rhs).shape
    if len(lhs_shape) != len(rhs_shape) or len(lhs_shape) not in _TRANSPOSE_DEFAULTS:
        raise FlamefxTypeError(f"conv_transpose needs operands of equal rank 2 to 5, got "
                               f"{tuple(lhs_shape)} and {tuple(rhs_shape)}")
    if dimension_numbers is None:
        dimension_numbers = _TRANSPOSE_DEFAULTS[len(lhs_shape)]
    dnums = conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    n_spatial = len(lhs_shape) - 2
    rhs_dilation = tuple(rhs_dilation or (1,) * n_spatial)
    kernel = [dilate_dim(rhs_shape[i], d) for i, d in zip(dnums.rhs_spec[2:], rhs_dilation)]
    if isinstance(padding, str):
        padding = [_conv_transpose_padding(k, s, padding) for k, s in zip(kernel, strides)]
    elif use_consistent_padding:
        padding = [_conv_transpose_padding(k, s, p) for k, s, p in zip(kernel, strides, padding)]
    if transpose_kernel:
        rhs = structural.rev(rhs, tuple(dnums.rhs_spec[2:]))
        perm = list(range(len(rhs_shape)))
        o, i = dnums.rhs_spec[0], dnums.rhs_spec[1]
        perm[o], perm[i] = perm[i], perm[o]
        rhs = structural.transpose(rhs, tuple(perm))
    return conv_general_dilated(lhs, rhs, (1,) * n_spatial, padding, strides, rhs_dilation,
                                dnums, precision=precision,
                                preferred_element_type=preferred_element_type)
