"""Convolutions for CPU plans: the kernel taps gathered once (im2col), then one BLAS product.

The primitives' NumPy impls (flamefx/primitives/nn_ops.py) contract tap by tap with
``np.einsum``, which does not reach BLAS: in the diffusion example's training step (C4 of
benchmarks/bench_cpu.py) those einsums were 70% of the step. Here the taps' windows are
copied side by side into one (n, groups, in-channels x taps, positions) array and each
convolution (and weight gradient) is a single ``np.matmul``/``np.tensordot``. Used by
``cpu_plan.CpuPlan`` for float32/float64 operands; the impls stay the reference (tests
compare the two).

>>> x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
>>> conv(x, w, window_strides=(1, 1), padding=((0, 0), (0, 0)), lhs_dilation=(1, 1),
...      rhs_dilation=(1, 1), feature_group_count=1, precision=None,
...      preferred_element_type=None)[0, 0].tolist()
[[4.0, 4.0], [4.0, 4.0]]
"""

from __future__ import annotations

import numpy as np

from flamefx.primitives.nn_ops import conv_output_spatial, dilate_and_pad_numpy


def _columns(x, kernel, spatial, window_strides, padding, lhs_dilation, rhs_dilation,
             groups):
    """(groups, in-channels per group x taps, batch x output positions): what each output
    position's window reads, taps after channels (the kernel's own layout) and the batch
    beside the positions, so that a convolution and its weight gradient are one GEMM per
    group whatever the batch (not one small GEMM per example)."""
    n, c = x.shape[:2]
    padded = dilate_and_pad_numpy(x, lhs_dilation, padding)
    taps = list(np.ndindex(*kernel))
    cols = np.empty((c, len(taps), n) + tuple(spatial), x.dtype)
    for k, tap in enumerate(taps):
        window = tuple(slice(t * rd, t * rd + (size - 1) * s + 1, s)
                       for t, rd, size, s in zip(tap, rhs_dilation, spatial, window_strides))
        cols[:, k] = padded[(slice(None), slice(None)) + window].swapaxes(0, 1)
    return cols.reshape(groups, (c // groups) * len(taps), -1)


def conv(x, w, *, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count,
         precision, preferred_element_type):
    """conv_general_dilated (NC..., OI...) of float operands of one dtype."""
    n, o, g = x.shape[0], w.shape[0], feature_group_count
    spatial = tuple(conv_output_spatial(x.shape[2:], w.shape[2:], window_strides, padding,
                                        lhs_dilation, rhs_dilation))
    cols = _columns(x, w.shape[2:], spatial, window_strides, padding, lhs_dilation,
                    rhs_dilation, g)
    out = np.matmul(w.reshape(g, o // g, -1), cols)  # (g, o/g, batch x positions)
    out = out.reshape(o, n, -1).swapaxes(0, 1)
    return np.ascontiguousarray(out).reshape((n, o) + spatial)


def weight_grad(ct, x, *, kernel_shape, window_strides, padding, lhs_dilation, rhs_dilation,
                feature_group_count, precision):
    """conv_weight_grad: the kernel's gradient given the output's (``ct``) and the input."""
    n, g, o = x.shape[0], feature_group_count, kernel_shape[0]
    cols = _columns(x, tuple(kernel_shape[2:]), ct.shape[2:], window_strides, padding,
                    lhs_dilation, rhs_dilation, g)
    ctg = np.ascontiguousarray(ct.reshape(n, o, -1).swapaxes(0, 1)).reshape(g, o // g, -1)
    dw = np.matmul(ctg, cols.swapaxes(1, 2))  # (g, o/g, in-channels per group x taps)
    return dw.reshape(kernel_shape)


def supports(eqn) -> bool:
    """Whether ``eqn`` (a convolution or weight gradient) is one this module computes:
    float32/float64 operands and result of one dtype, nothing empty."""
    dtypes = {v.aval.dtype for v in (*eqn.invars, *eqn.outvars)}
    if len(dtypes) != 1 or dtypes.pop() not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False
    preferred = eqn.params.get("preferred_element_type")
    if preferred is not None and np.dtype(preferred) != eqn.outvars[0].aval.dtype:
        return False
    return all(v.aval.size > 0 for v in (*eqn.invars, *eqn.outvars))


IMPLS = {"conv_general_dilated": conv, "conv_weight_grad": weight_grad}
