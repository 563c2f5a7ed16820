"""Scaled dot-product attention as one primitive, flash-attention style.

``flash_attention(q, k, v[, bias])`` over (batch, heads, seq, dim) returns ``(out, lse)``:
the attention output and the log-sum-exp of each query's scores. Saving ``lse`` lets the
backward (``flash_attention_bwd``) recompute the softmax, so the forward keeps no
probabilities for it. With ``keep_probs`` (float32/float64 attention whose score matrices
stay moderate: see ``_keeps_probs``) the forward also returns the probabilities and the
backward takes them, as JAX's softmax-then-matmul form keeps them: one GEMM fewer on
the backward for seq x seq memory between the passes. On the GPU, moderate sequences go
through cuBLAS GEMMs, long ones through fused flash kernels that never store a seq x seq
matrix, and float16/bfloat16 through tensor-core flash kernels. Order-2 derivatives go
through the naive formula
written in flamefx ops (see ``_flash_attention_bwd_vjp``): correct, but they materialize
the score matrix.

>>> import numpy as np
>>> q = k = v = np.ones((1, 1, 2, 4), np.float32)
>>> dot_product_attention(q, k, v).shape
(1, 1, 2, 4)
"""

from __future__ import annotations

import math

import numpy as np

from flamefx import core, devices, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.primitives.elementwise import (
    add,
    bitwise_or,
    exp,
    is_finite,
    le,
    lt,
    mul,
    select_n,
    sub,
)
from flamefx.primitives.linalg import dot_general
from flamefx.primitives.nn_ops import accumulation_dtype, cast_to, full_on_device, scale_by
from flamefx.primitives.reductions import reduce_sum
from flamefx.primitives.structural import broadcast_in_dim, iota, reshape


def _check_qkv(q, k, v):
    for name, aval in (("q", q), ("k", k), ("v", v)):
        if aval.ndim != 4:
            raise FlamefxTypeError(f"{name} must be (batch, heads, seq, dim), got rank "
                                   f"{aval.ndim} shape {aval.shape}")
    if not (q.dtype == k.dtype == v.dtype) or not dtypes.is_float(q.dtype):
        raise FlamefxTypeError(f"q, k, v must share one float dtype, got {q.dtype}, "
                               f"{k.dtype}, {v.dtype}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise FlamefxTypeError(f"q {q.shape}, k {k.shape}, v {v.shape} must share (batch, "
                               f"heads)")
    if q.shape[3] != k.shape[3]:
        raise FlamefxTypeError(f"q's head dim {q.shape[3]} differs from k's {k.shape[3]}")
    if k.shape[2] != v.shape[2]:
        raise FlamefxTypeError(f"k has {k.shape[2]} keys but v has {v.shape[2]} values")
    if k.shape[2] < 1:
        raise FlamefxTypeError("needs at least one key")


def _check_bias(bias, q, k):
    b, h, sq, sk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    ok = (bias.ndim == 4 and bias.shape[0] in (1, b) and bias.shape[1] in (1, h)
          and bias.shape[2:] == (sq, sk))
    if not ok:
        raise FlamefxTypeError(f"bias {bias.shape} must be ({b} or 1, {h} or 1, {sq}, {sk}) "
                               f"= (batch, heads, q seq, k seq)")
    if bias.dtype != q.dtype:
        raise FlamefxTypeError(f"bias dtype {bias.dtype} differs from q's {q.dtype}")


def _fwd_abstract_eval(q, k, v, *bias, is_causal, scale, keep_probs=False):
    _check_qkv(q, k, v)
    if bias:
        _check_bias(bias[0], q, k)
    weak = q.weak_type and k.weak_type and v.weak_type
    acc = accumulation_dtype(q.dtype)
    outs = [ShapedArray(q.shape[:3] + v.shape[3:], q.dtype, weak), ShapedArray(q.shape[:3], acc)]
    if keep_probs:
        if acc != q.dtype:
            raise FlamefxTypeError(f"keep_probs is for float32/float64 attention, got {q.dtype}")
        outs.append(ShapedArray(q.shape[:3] + k.shape[2:3], acc))
    return outs


# Kept probabilities may take this much memory (the whole batch's score matrices).
_KEPT_PROBS_BYTES = 512 * 2**20


def _keeps_probs(q, k) -> bool:
    """Whether attention of these avals keeps its probabilities for the backward: float32 or
    float64 (half types take the tensor-core flash kernels), score matrices the GEMM path
    takes (see cuda_attention_gemm.fits), all of them within ``_KEPT_PROBS_BYTES``."""
    from flamefx.kernels import cuda_attention_gemm
    if q.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False
    scores = math.prod(q.shape[:3]) * k.shape[2]
    return (cuda_attention_gemm.fits(q.shape, k.shape)
            and scores * q.dtype.itemsize <= _KEPT_PROBS_BYTES)


def masked_score(dtype) -> float:
    """The bias value that masks a score: the dtype's lowest finite value (anything at or
    below it, -inf included). A masked key is hidden from that query as causal masking
    hides it; a query that sees no key at all gets zeros (as FlashAttention and cuDNN)."""
    return float(dtypes.finfo(dtype).min)


def _scores_numpy(q, k, bias, is_causal, scale, acc):
    """Scaled scores plus bias, -inf where a key is hidden (causal or masked)."""
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(acc), k.astype(acc)) * acc.type(scale)
    if bias is not None:
        s = np.where(bias <= masked_score(bias.dtype), -np.inf, s + bias.astype(acc))
    if is_causal:
        sq, sk = s.shape[2:]
        s = np.where(np.tri(sq, sk, dtype=bool), s, -np.inf)
    return s


def _finite_or_zero(x):
    return np.where(np.isfinite(x), x, 0.0)


def _fwd_impl(q, k, v, *bias, is_causal, scale, keep_probs=False):
    acc = accumulation_dtype(q.dtype)
    s = _scores_numpy(q, k, bias[0] if bias else None, is_causal, scale, acc)
    m = _finite_or_zero(s.max(axis=-1, keepdims=True))  # rows that see no key: all -inf
    p = np.exp(s - m)
    total = p.sum(axis=-1, keepdims=True)
    probs = p / np.where(total > 0, total, 1.0)
    out = np.einsum("bhqk,bhkd->bhqd", probs, v.astype(acc))
    with np.errstate(divide="ignore"):
        lse = (m + np.log(total))[..., 0]
    return [out.astype(q.dtype), lse] + ([probs] if keep_probs else [])


def _cuda_kernels(q, k, v, bias):
    """The tensor-core flash kernels for float16/bfloat16 without bias and head dims of
    16s up to 128 (any sequence length, linear memory); otherwise cuBLAS GEMMs plus row
    kernels while the score matrix is moderate (seq <= ~2048), the fused flash kernels on
    CUDA cores (linear memory) beyond."""
    from flamefx.kernels import cuda_attention, cuda_attention_gemm, cuda_attention_mma
    if cuda_attention_mma.supports(q, k, v, bias):
        return cuda_attention_mma
    return cuda_attention_gemm if cuda_attention_gemm.fits(q.shape, k.shape) else cuda_attention


def _fwd_cuda(q, k, v, *bias, is_causal, scale, keep_probs=False):
    bias = bias[0] if bias else None
    if keep_probs:
        from flamefx.kernels import cuda_attention_gemm
        return cuda_attention_gemm.attention_forward(q, k, v, bias, is_causal=is_causal,
                                                     scale=scale, keep_probs=True)
    return _cuda_kernels(q, k, v, bias).attention_forward(q, k, v, bias, is_causal=is_causal,
                                                          scale=scale)


def _fwd_vjp(cts, primals, outs, *, is_causal, scale, keep_probs=False):
    ct_out, ct_lse = cts[:2]
    ct_probs = cts[2] if keep_probs else None
    if ct_out is None and ct_lse is None and ct_probs is None:
        return [None] * len(primals)
    out, lse = outs[:2]
    if ct_out is None:
        ct_out = full_on_device(out, core.get_aval(out).shape, 0, core.get_aval(out).dtype)
    if ct_lse is None:
        ct_lse = full_on_device(lse, core.get_aval(lse).shape, 0, core.get_aval(lse).dtype)
    grads = flash_attention_bwd_p.bind(*primals, out, lse, ct_out, ct_lse, *outs[2:],
                                       is_causal=is_causal, scale=scale, keep_probs=keep_probs)
    if ct_probs is not None:  # only order-2 derivatives reach the kept probabilities
        grads = [add(g, e) for g, e in zip(grads, _probs_vjp(ct_probs, primals, outs[2],
                                                               scale))]
    return grads


def _probs_vjp(ct_probs, primals, probs, scale):
    """[dq, dk, dv(, dbias)] of <ct_probs, softmax(q kᵀ * scale + bias)>: the softmax
    Jacobian gives dS = P (ct - rowsum(ct P)), then dq = dS k, dk = dSᵀ q (times scale)."""
    q, k, v = primals[:3]
    acc = core.get_aval(probs).dtype
    shape = core.get_aval(probs).shape
    ct_probs = cast_to(ct_probs, acc)
    row = broadcast_in_dim(reduce_sum(mul(ct_probs, probs), (3,)), shape, (0, 1, 2))
    ds = mul(probs, sub(ct_probs, row))
    batch_dims = ((0, 1), (0, 1))
    dtype = core.get_aval(q).dtype
    grads = [scale_by(dot_general(ds, cast_to(k, acc), (((3,), (2,)), batch_dims)), scale),
             scale_by(dot_general(ds, cast_to(q, acc), (((2,), (2,)), batch_dims)), scale),
             full_on_device(v, core.get_aval(v).shape, 0, acc)]
    if len(primals) == 4:
        bias_shape = core.get_aval(primals[3]).shape
        axes = tuple(i for i in range(2) if bias_shape[i] == 1 and shape[i] != 1)
        grads.append(reshape(reduce_sum(ds, axes), bias_shape) if axes else ds)
    return [cast_to(g, dtype) for g in grads]


def _fold_batch(axis_size, args, bdims):
    """Folds the vmap axis into the attention batch axis of every operand:
    (V, B, ...) -> (V*B, ...). A bias broadcast over the batch is materialized first."""
    from flamefx.transforms.batching import to_front
    q_shape = list(core.get_aval(args[0]).shape)
    if bdims[0] is not None:
        del q_shape[bdims[0]]
    b = q_shape[0]
    folded = []
    for x, bdim in zip(args, bdims):
        x = to_front(x, bdim, axis_size)
        shape = core.get_aval(x).shape
        if shape[1] != b:  # a bias shared by the batch (leading dim 1)
            shape = (axis_size, b) + shape[2:]
            x = broadcast_in_dim(x, shape, tuple(range(len(shape))))
        folded.append(reshape(x, (axis_size * b,) + shape[2:]))
    return folded


def _unfold(axis_size, x):
    shape = core.get_aval(x).shape
    return reshape(x, (axis_size, shape[0] // axis_size) + shape[1:])


def _fwd_batch(axis_size, args, bdims, *, is_causal, scale, keep_probs=False):
    folded = _fold_batch(axis_size, args, bdims)
    outs = flash_attention_p.bind(*folded, is_causal=is_causal, scale=scale,
                                  keep_probs=keep_probs)
    return [_unfold(axis_size, o) for o in outs], [0] * len(outs)


flash_attention_p = Primitive(
    "flash_attention", abstract_eval=_fwd_abstract_eval, impl=_fwd_impl, cuda_impl=_fwd_cuda,
    vjp=_fwd_vjp, batch=_fwd_batch, multiple_results=True)


# --- backward ---------------------------------------------------------------------------------


def _split_bwd(rest, keep_probs):
    """(bias operands, (out, lse, dout, dlse), probs or None) from the operands after v.

    ``dout`` is out's shape, or (batch, heads, q_seq, 1) when it is the same for every value
    dim: jit's ``narrow_attention_cotangents`` pass passes it so when it is a broadcast
    (the loss ``sum(attention(...))``), and the backward then needs neither dP = dO Vᵀ nor
    dV = Pᵀ dO as products (see ``dout_rows``)."""
    probs = rest[-1] if keep_probs else None
    rest = rest[:-1] if keep_probs else rest
    return rest[:-4], rest[-4:], probs


def _bwd_abstract_eval(q, k, v, *rest, is_causal, scale, keep_probs=False):
    bias, (out, lse, dout, dlse), probs = _split_bwd(rest, keep_probs)
    outs = _fwd_abstract_eval(q, k, v, *bias, is_causal=is_causal, scale=scale,
                              keep_probs=keep_probs)
    given = [("out", out, outs[0]), ("lse", lse, outs[1]), ("dout", dout, outs[0]),
             ("dlse", dlse, outs[1])] + ([("probs", probs, outs[2])] if keep_probs else [])
    for name, aval, want in given:
        shapes = (want.shape, want.shape[:-1] + (1,)) if name == "dout" else (want.shape,)
        if aval.shape not in shapes or aval.dtype != want.dtype:
            raise FlamefxTypeError(f"{name} is {aval.str_short()}, expected "
                                   f"{want.str_short()}")
    return [ShapedArray(a.shape, a.dtype, a.weak_type) for a in (q, k, v) + tuple(bias)]


def _reduce_to_bias_shape(ds, bias_shape):
    axes = tuple(i for i in range(2) if bias_shape[i] == 1 and ds.shape[i] != 1)
    return ds.sum(axis=axes, keepdims=True) if axes else ds


def _bwd_impl(q, k, v, *rest, is_causal, scale, keep_probs=False):
    bias, (out, lse, dout, dlse), p = _split_bwd(rest, keep_probs)
    acc = accumulation_dtype(q.dtype)
    if p is None:
        s = _scores_numpy(q, k, bias[0] if bias else None, is_causal, scale, acc)
        p = np.where(np.isfinite(s), np.exp(s - _finite_or_zero(lse)[..., None]), 0.0)
    dout = np.broadcast_to(dout, out.shape).astype(acc)
    dv = np.einsum("bhqk,bhqd->bhkd", p, dout)
    dp = np.einsum("bhqd,bhkd->bhqk", dout, v.astype(acc))
    delta = (dout * out.astype(acc)).sum(axis=-1) - dlse
    ds = p * (dp - delta[..., None])
    dq = np.einsum("bhqk,bhkd->bhqd", ds, k.astype(acc)) * scale
    dk = np.einsum("bhqk,bhqd->bhkd", ds, q.astype(acc)) * scale
    grads = [dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)]
    if bias:
        grads.append(_reduce_to_bias_shape(ds, bias[0].shape).astype(q.dtype))
    return grads


def _bwd_cuda(q, k, v, *rest, is_causal, scale, keep_probs=False):
    bias, (out, lse, dout, dlse), probs = _split_bwd(rest, keep_probs)
    bias = bias[0] if bias else None
    if keep_probs:
        from flamefx.kernels import cuda_attention_gemm
        return cuda_attention_gemm.attention_backward_from_probs(
            q, k, v, bias, out, dout, dlse, probs, scale=scale)
    kernels = _cuda_kernels(q, k, v, bias)
    if dout.shape != out.shape and not kernels.TAKES_ROW_COTANGENTS:
        dout = devices.cupy().broadcast_to(dout, out.shape)
    return kernels.attention_backward(q, k, v, bias, out, lse, dout, dlse, is_causal=is_causal,
                                      scale=scale)


def naive_attention_bwd(q, k, v, *rest, is_causal, scale, keep_probs=False):
    """flash_attention_bwd's formula in flamefx ops (materializes the score matrix); with
    kept probabilities they replace the recomputed ones (derivatives then reach q, k and
    bias through the forward's probabilities output: see _probs_vjp)."""
    bias, (out, lse, dout, dlse), probs = _split_bwd(rest, keep_probs)
    dtype, acc = core.get_aval(dout).dtype, core.get_aval(lse).dtype
    q, k, v, out, dout = (cast_to(a, acc) for a in (q, k, v, out, dout))
    out_shape = core.get_aval(out).shape
    if core.get_aval(dout).shape != out_shape:
        dout = broadcast_in_dim(reshape(dout, out_shape[:-1]), out_shape, (0, 1, 2))
    b, h, sq, _ = core.get_aval(q).shape
    sk = core.get_aval(k).shape[2]
    batch_dims = ((0, 1), (0, 1))
    s = scale_by(dot_general(q, k, (((3,), (3,)), batch_dims)), scale)
    shape = (b, h, sq, sk)
    hidden = None  # keys a query does not see: masked by the bias, or causal
    if bias:
        bias_full = broadcast_in_dim(bias[0], shape, (0, 1, 2, 3))
        bias_dtype = core.get_aval(bias_full).dtype
        hidden = le(bias_full,
                    full_on_device(bias_full, shape, masked_score(bias_dtype), bias_dtype))
        s = add(s, cast_to(bias_full, acc))
    if is_causal:
        later = lt(iota(np.dtype(np.int32), shape, 2), iota(np.dtype(np.int32), shape, 3))
        hidden = later if hidden is None else bitwise_or(hidden, later)
    # Rows that see no key have lse = -inf; exp must only see finite, selected arguments
    # so that its derivative stays finite where select_n drops it.
    lse = select_n(is_finite(lse), full_on_device(lse, core.get_aval(lse).shape, 0, acc), lse)
    lse_full = broadcast_in_dim(lse, shape, (0, 1, 2))
    if probs is not None:
        p = cast_to(probs, acc)
    elif hidden is None:
        p = exp(sub(s, lse_full))
    else:
        p = exp(sub(select_n(hidden, s, lse_full), lse_full))
        p = select_n(hidden, p, full_on_device(p, shape, 0, acc))
    dv = dot_general(p, dout, (((2,), (2,)), batch_dims))
    dp = dot_general(dout, v, (((3,), (3,)), batch_dims))
    delta = sub(reduce_sum(mul(dout, out), (3,)), dlse)
    ds = mul(p, sub(dp, broadcast_in_dim(delta, shape, (0, 1, 2))))
    dq = scale_by(dot_general(ds, k, (((3,), (2,)), batch_dims)), scale)
    dk = scale_by(dot_general(ds, q, (((2,), (2,)), batch_dims)), scale)
    grads = [dq, dk, dv]
    if bias:
        bias_shape = core.get_aval(bias[0]).shape
        axes = tuple(i for i in range(2) if bias_shape[i] == 1 and shape[i] != 1)
        grads.append(reshape(reduce_sum(ds, axes), bias_shape) if axes else ds)
    return [cast_to(g, dtype) for g in grads]


def _bwd_vjp(cts, primals, outs, *, is_causal, scale, keep_probs=False):
    """Order 2: differentiate the naive formula (flamefx.vjp of it inside this rule)."""
    from flamefx.transforms.ad import vjp
    if all(ct is None for ct in cts):
        return [None] * len(primals)
    cts = [ct if ct is not None
           else full_on_device(o, core.get_aval(o).shape, 0, core.get_aval(o).dtype)
           for ct, o in zip(cts, outs)]
    _, pullback = vjp(lambda *a: naive_attention_bwd(*a, is_causal=is_causal, scale=scale,
                                                     keep_probs=keep_probs), *primals)
    return list(pullback(cts))


def _bwd_batch(axis_size, args, bdims, *, is_causal, scale, keep_probs=False):
    folded = _fold_batch(axis_size, args, bdims)
    grads = flash_attention_bwd_p.bind(*folded, is_causal=is_causal, scale=scale,
                                       keep_probs=keep_probs)
    grads = [_unfold(axis_size, g) for g in grads]
    if len(args) - keep_probs == 8:  # dbias: sum back over a batch the bias was shared by
        bias_shape = list(core.get_aval(args[3]).shape)
        if bdims[3] is not None:
            del bias_shape[bdims[3]]
        dbias_shape = core.get_aval(grads[3]).shape
        if bias_shape[0] == 1 and dbias_shape[1] != 1:
            grads[3] = reshape(reduce_sum(grads[3], (1,)), (axis_size, 1) + dbias_shape[2:])
    return grads, [0] * len(grads)


flash_attention_bwd_p = Primitive(
    "flash_attention_bwd", abstract_eval=_bwd_abstract_eval, impl=_bwd_impl,
    cuda_impl=_bwd_cuda, vjp=_bwd_vjp, batch=_bwd_batch, multiple_results=True)


# --- the lax-level wrapper ---------------------------------------------------------------------


def dot_product_attention(q, k, v, bias=None, mask=None, is_causal=False, scale=None,
                          return_lse=False):
    """softmax(q kᵀ * scale + bias, masked) v over (batch, heads, seq, dim) arrays.

    ``scale`` defaults to 1/sqrt(dim). ``bias`` is (batch or 1, heads or 1, q_seq, k_seq);
    ``mask`` (bool, same layout) keeps True entries; a bias entry at the dtype's lowest
    value (or -inf) masks the same way. A query that sees no key gets zeros (as in
    FlashAttention and cuDNN). ``is_causal``
    lets query i see keys j <= i (top-left aligned, like PyTorch and JAX). On the GPU,
    float16/bfloat16 without a bias run tensor-core flash-attention kernels (memory linear
    in the sequence length); otherwise sequences up to ~2048 run as cuBLAS GEMMs around
    fused softmax kernels (float32 keeps the probabilities for the backward, as JAX's
    softmax form does) and longer ones run flash-attention kernels on the CUDA cores.

    >>> import numpy as np
    >>> q, k = np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 3, 2))
    >>> v = np.arange(6.).reshape(1, 1, 3, 2)
    >>> dot_product_attention(q, k, v).tolist()
    [[[[2.0, 3.0]]]]
    """
    scale = 1.0 / math.sqrt(core.get_aval(q).shape[-1]) if scale is None else float(scale)
    operands = [q, k, v]
    if mask is not None:
        q_aval, k_aval = core.get_aval(q), core.get_aval(k)
        given = [core.get_aval(a).shape for a in (bias, mask) if a is not None]
        # The bias operand may share dims of size 1 over batch and heads; queries and keys
        # are always materialized, since the mask applies per score.
        shape = (max(s[0] for s in given), max(s[1] for s in given), q_aval.shape[2],
                 k_aval.shape[2])
        bias = full_on_device(q, shape, 0, q_aval.dtype) if bias is None else bias
        bias, mask = (a if core.get_aval(a).shape == shape else
                      broadcast_in_dim(a, shape, (0, 1, 2, 3)) for a in (bias, mask))
        masked = full_on_device(q, shape, masked_score(q_aval.dtype), q_aval.dtype)
        bias = select_n(mask, masked, bias)
    if bias is not None:
        operands.append(bias)
    out, lse, *_ = flash_attention_p.bind(
        *operands, is_causal=bool(is_causal), scale=scale,
        keep_probs=_keeps_probs(core.get_aval(q), core.get_aval(k)))
    return (out, lse) if return_lse else out
