"""Convolutions in NC[D]HW layout on ``conv_general_dilated``: 1-D, 2-D or 3-D by rank.

>>> import flamefx.numpy as fnp
>>> x = fnp.ones((1, 3, 8, 8))                 # N, C, H, W
>>> w = fnp.ones((4, 3, 3, 3))                 # O, I, kH, kW
>>> conv(x, w, stride=2, padding="SAME").shape
(1, 4, 4, 4)
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.lax_conv import canonicalize_precision
from flamefx.primitives import structural
from flamefx.primitives.nn_ops import conv_general_dilated


def per_dim(value, n: int, name: str) -> tuple:
    """An int or one entry per spatial dim (strides, dilations, window sizes) as ``n`` ints.

    >>> per_dim(2, 3, "strides")
    (2, 2, 2)
    """
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise FlamefxValueError(f"{name} needs {n} entries (one per spatial dim), got {value}")
    return value


def _check_ranks(x, w, what: str) -> int:
    if w.ndim not in (3, 4, 5) or x.ndim != w.ndim:
        raise FlamefxTypeError(
            f"{what}: x (N, C, spatial...) and w (O, I, kernel...) need the same rank, 3 to "
            f"5 (1-D to 3-D); got x {tuple(x.shape)} and w {tuple(w.shape)}")
    return w.ndim - 2


def _effective_kernel(w, dilation) -> tuple:
    return tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation))


def conv_padding(padding, in_sizes, kernel_sizes, strides) -> tuple:
    """Explicit ``((lo, hi), ...)`` padding of a forward convolution.

    ``'SAME'`` gives ``ceil(in / stride)`` outputs (the extra pad goes at the end, as
    TensorFlow and JAX); ``'VALID'`` pads nothing; an int or ``(lo, hi)`` pairs are taken
    as they are.

    >>> conv_padding("SAME", (5,), (3,), (2,))
    ((1, 1),)
    """
    n = len(in_sizes)
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0),) * n
        if padding.upper() != "SAME":
            raise FlamefxValueError(f"padding must be 'SAME', 'VALID', an int or (lo, hi) "
                                    f"pairs, got {padding!r}")
        pads = []
        for size, k, s in zip(in_sizes, kernel_sizes, strides):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding),) * n
    pairs = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)
    if len(pairs) != n:
        raise FlamefxValueError(f"padding needs {n} entries (one per spatial dim), got {padding}")
    return pairs


def conv(x, w, stride=1, padding="SAME", dilation=1, groups: int = 1, precision=None):
    """Cross-correlation of ``x`` (N, C, spatial...) with ``w`` (O, C / groups, kernel...).

    ``precision``: None (the ``default_matmul_precision`` option) | 'highest' | 'tf32' |
    'bf16' | a ``lax.Precision``, for float32 operands on the GPU (as ``fnp.matmul``'s).

    >>> conv(fnp.ones((2, 1, 5)), fnp.ones((1, 1, 3)), padding="VALID").tolist()[0]
    [[3.0, 3.0, 3.0]]
    """
    n = _check_ranks(x, w, "conv")
    strides = per_dim(stride, n, "stride")
    dilation = per_dim(dilation, n, "dilation")
    pads = conv_padding(padding, x.shape[2:], _effective_kernel(w, dilation), strides)
    return conv_general_dilated(x, w, window_strides=strides, padding=pads,
                                lhs_dilation=(1,) * n, rhs_dilation=dilation,
                                feature_group_count=groups,
                                precision=canonicalize_precision(precision))


def _transpose_padding(padding, kernel_sizes, strides, output_padding) -> tuple:
    """Padding of the stride-1 convolution over the dilated input that conv_transpose is."""
    pads = []
    for i, (k, s) in enumerate(zip(kernel_sizes, strides)):
        if isinstance(padding, str) and padding.upper() == "SAME":
            # Output = input * stride (JAX's conv_transpose 'SAME').
            total = k + s - 2
            lo = k - 1 if s > k - 1 else -(-total // 2)
            pads.append((lo, total - lo))
        elif isinstance(padding, str) and padding.upper() == "VALID":
            # Output = (input - 1) * stride + k: every input touches the whole kernel.
            pads.append((k - 1, k - 1))
        elif isinstance(padding, str):
            raise FlamefxValueError(f"padding must be 'SAME', 'VALID' or ints, got {padding!r}")
        else:
            p = padding if isinstance(padding, int) else int(padding[i])
            pads.append((k - 1 - p, k - 1 - p + output_padding[i]))
    return tuple(pads)


def conv_transpose(x, w, stride=1, padding="SAME", dilation=1, groups: int = 1,
                   output_padding=0, precision=None):
    """The transpose (input gradient) of ``conv``: upsamples by ``stride``.

    ``w`` has PyTorch's ConvTranspose layout (C_in, C_out / groups, kernel...). An int
    ``padding`` p means PyTorch's: the output is ``(in - 1) * stride - 2p + dilation *
    (k - 1) + output_padding + 1``; ``'SAME'`` gives ``in * stride`` and ``'VALID'``
    gives ``(in - 1) * stride + dilation * (k - 1) + 1``. ``precision`` as in ``conv``.

    >>> conv_transpose(fnp.ones((1, 2, 4, 4)), fnp.ones((2, 3, 3, 3)), stride=2).shape
    (1, 3, 8, 8)
    """
    n = _check_ranks(x, w, "conv_transpose")
    strides = per_dim(stride, n, "stride")
    dilation = per_dim(dilation, n, "dilation")
    output_padding = per_dim(output_padding, n, "output_padding")
    pads = _transpose_padding(padding, _effective_kernel(w, dilation), strides, output_padding)
    in_channels, out_per_group = w.shape[0], w.shape[1]
    kernel = w.shape[2:]
    # (C_in, C_out/g, k...) -> (C_out, C_in/g, k...), flipped in space: a forward kernel.
    grouped = fnp.reshape(w, (groups, in_channels // groups, out_per_group) + kernel)
    grouped = fnp.swapaxes(grouped, 1, 2)
    forward_w = fnp.reshape(grouped, (groups * out_per_group, in_channels // groups) + kernel)
    forward_w = structural.rev(forward_w, tuple(range(2, 2 + n)))
    return conv_general_dilated(x, forward_w, window_strides=(1,) * n, padding=pads,
                                lhs_dilation=strides, rhs_dilation=dilation,
                                feature_group_count=groups,
                                precision=canonicalize_precision(precision))
