"""Attention through cuBLAS batched GEMMs with fused row kernels, for moderate sequences.

For sequences up to ~2048 the score matrix fits comfortably in memory, and cuBLAS (tensor
cores for float16/bfloat16) computes the four products far faster than the hand-written
flash kernels in cuda_attention, whose FMAs run on the CUDA cores. The forward is
S = Q Kᵀ (accumulation dtype), one row kernel (scale, bias, causal and masked keys, an
online max/sum, then P and ``lse``), and out = P V. The backward recomputes S and
dP = dO Vᵀ, one element kernel turns them into P and dS·scale (and dbias), then
dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q. The batch * heads axis goes through in chunks so the
score matrices of one chunk stay within ``_CHUNK_SCORE_BYTES``; longer sequences keep the
fused kernels (memory linear in the sequence): see ``fits``.

P and dS are stored in the input dtype, the GEMMs accumulate in float32 (float64 for
float64): the same rounding as JAX's softmax-then-matmul form in low precision.

>>> fits((8, 8, 1024, 64), (8, 8, 1024, 64))
True
"""

from __future__ import annotations

import functools
import math

import numpy as np

from flamefx import config, devices
from flamefx.kernels import cublas
from flamefx.kernels.cuda_attention import (
    DELTA_SOURCE,
    gradient_buffers,
    grads_with_bias,
    row_delta,
)
from flamefx.kernels.cuda_scalar import (
    acc_numpy_dtype,
    contiguous,
    empty,
    raw_view,
    scalar_prelude,
)
from flamefx.primitives.attention import masked_score

# Whether attention_backward takes a (B, H, S, 1) dout (its backward reads a full one).
TAKES_ROW_COTANGENTS = False

_MAX_SCORES_PER_HEAD = 2048 * 2048  # longer sequences use the fused kernels
_CHUNK_SCORE_BYTES = 256 * 2**20  # one score matrix of one chunk of batch * heads
_THREADS = 256

_ROW_KERNELS = r"""
#define LOG2E 1.4426950408889634
#define LN2 0.6931471805599453

// The scaled, biased score of (query qi, key c), or false where the key is hidden from the
// query (causal, or a bias at or below mask_value).
__device__ __forceinline__ bool biased_score(const ACC* srow, const T* brow, int qi, int c,
                                             ACC scale, ACC mask_value, ACC* x) {
  if (CAUSAL && c > qi) return false;
  *x = srow[c] * scale;
  if (HAS_BIAS) {
    const ACC b = LOAD(brow[c]);
    if (b <= mask_value) return false;
    *x += b;
  }
  return true;
}

// Row loops take ILP elements per thread and trip, all loaded before any is used, so each
// thread has ILP loads in flight (a loop of one element a trip leaves the memory system
// under-occupied).
#define ILP 4

// The scores of columns c0, c0 + 32, ... (ILP of them, a warp's lane each 32 apart) and
// whether each is seen (inside the row and not hidden).
__device__ __forceinline__ void lane_scores(const ACC* srow, const T* brow, int qi, int c0,
                                            int sk, ACC scale, ACC mask_value,
                                            ACC (&xs)[ILP], bool (&seen)[ILP]) {
  #pragma unroll
  for (int u = 0; u < ILP; ++u)
    seen[u] = c0 + 32 * u < sk &&
              biased_score(srow, brow, qi, c0 + 32 * u, scale, mask_value, &xs[u]);
}

// One warp per score row: an online max and sum (one exp per score), merged across the
// warp, then a second pass (the row is still in L1/L2) writes P = exp(x - lse). `p` may be
// `s` itself (float32, float64): each element is read before the same thread writes it.
extern "C" __global__ void flamefx_attention_softmax(
    const ACC* s, T* p, const T* __restrict__ bias, ACC* __restrict__ lse, long long rows,
    int heads, int sq, int sk, int bh_start, long long bias_sb, long long bias_sh,
    ACC scale, ACC mask_value) {
  const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together: the shuffles stay complete
  const int qi = (int)(row % sq), bh = bh_start + (int)(row / sq);
  const ACC* srow = s + row * sk;
  const T* brow = bias;
  if (HAS_BIAS) brow += (bh / heads) * bias_sb + (bh % heads) * bias_sh + (long long)qi * sk;
  ACC m = NEG_INF, l = 0;
  for (int c0 = lane; c0 < sk; c0 += 32 * ILP) {
    ACC xs[ILP];
    bool seen[ILP];
    lane_scores(srow, brow, qi, c0, sk, scale, mask_value, xs, seen);
    #pragma unroll
    for (int u = 0; u < ILP; ++u) {
      if (!seen[u]) continue;
      const ACC x = xs[u];
      if (x > m) {
        l = l * EXP2((m - x) * (ACC)LOG2E) + (ACC)1;
        m = x;
      } else {
        l += EXP2((x - m) * (ACC)LOG2E);
      }
    }
  }
  #pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const ACC m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const ACC l2 = __shfl_xor_sync(0xffffffffu, l, off);
    const ACC mm = MAX(m, m2);
    l = (mm == NEG_INF) ? (ACC)0
        : l * EXP2((m - mm) * (ACC)LOG2E) + l2 * EXP2((m2 - mm) * (ACC)LOG2E);
    m = mm;
  }
  const ACC row_lse = m + LOG2(l) * (ACC)LN2;  // -inf for a row that sees no key
  T* prow = p + row * sk;
  for (int c0 = lane; c0 < sk; c0 += 32 * ILP) {
    ACC xs[ILP];
    bool seen[ILP];
    lane_scores(srow, brow, qi, c0, sk, scale, mask_value, xs, seen);
    #pragma unroll
    for (int u = 0; u < ILP; ++u)
      if (c0 + 32 * u < sk)
        prow[c0 + 32 * u] = STORE(seen[u] ? EXP2((xs[u] - row_lse) * (ACC)LOG2E) : (ACC)0);
  }
  if (lane == 0) lse[row] = row_lse;
}

// One block per score row: P = exp(x - lse) from the recomputed scores, dS = P (dP - delta);
// writes P and dS * scale in T for the gradient GEMMs and, with a bias, dS itself. `p` may
// alias `s` and `ds` alias `dp` (float32, float64), element by element.
extern "C" __global__ void flamefx_attention_score_grads(
    const ACC* s, const ACC* dp, const T* __restrict__ bias, const ACC* __restrict__ lse,
    const ACC* __restrict__ delta, T* p, T* ds, ACC* __restrict__ dbias_full, int heads,
    int sq, int sk, int bh_start, long long bias_sb, long long bias_sh, ACC scale,
    ACC mask_value) {
  const long long row = blockIdx.x;
  const int qi = (int)(row % sq), bh = bh_start + (int)(row / sq);
  const ACC* srow = s + row * sk;
  const T* brow = bias;
  if (HAS_BIAS) brow += (bh / heads) * bias_sb + (bh % heads) * bias_sh + (long long)qi * sk;
  const ACC row_lse = lse[row], row_delta = delta[row];
  for (int c = threadIdx.x; c < sk; c += blockDim.x) {
    const long long at = row * sk + c;
    ACC x, pv = 0, dsv = 0;
    if (biased_score(srow, brow, qi, c, scale, mask_value, &x)) {
      pv = EXP2((x - row_lse) * (ACC)LOG2E);
      dsv = pv * (dp[at] - row_delta);
    }
    if (HAS_BIAS) dbias_full[at] = dsv;
    p[at] = STORE(pv);
    ds[at] = STORE(dsv * scale);
  }
}

// One block per score row, from the probabilities the forward kept (float32/float64):
// dS = P (dP - delta), written over dP times scale and, with a bias, unscaled to dbias.
extern "C" __global__ void flamefx_attention_probs_grads(
    const ACC* __restrict__ p, ACC* ds, const ACC* __restrict__ delta,
    ACC* __restrict__ dbias_full, int sk, ACC scale) {
  const long long row = blockIdx.x;
  const ACC row_delta = delta[row];
  for (int c0 = threadIdx.x; c0 < sk; c0 += ILP * blockDim.x) {
    ACC pv[ILP], dp[ILP];
    #pragma unroll
    for (int u = 0; u < ILP; ++u) {
      const int c = c0 + u * blockDim.x;
      if (c < sk) {
        pv[u] = p[row * sk + c];
        dp[u] = ds[row * sk + c];
      }
    }
    #pragma unroll
    for (int u = 0; u < ILP; ++u) {
      const int c = c0 + u * blockDim.x;
      if (c >= sk) continue;
      const ACC dsv = pv[u] * (dp[u] - row_delta);
      if (HAS_BIAS) dbias_full[row * sk + c] = dsv;
      ds[row * sk + c] = dsv * scale;
    }
  }
}

// As flamefx_attention_probs_grads when dO is the same along the value dim (dO[i, :] = g_i):
// then dP[i, j] = g_i vsum_j (vsum_j = sum of V's row j) needs no product, and
// dV[j, :] = sum_i P[i, j] g_i is a column sum of P that this pass takes while it reads P.
// One block per (head, row slice, column chunk), numbered in that order: each thread owns a
// column and walks the slice's rows (coalesced across the warp), writes dS times scale and
// its column's partial sum of P g into dv_partial[slice][head][column]; the slices are
// summed afterwards (deterministic, no atomics).
extern "C" __global__ void flamefx_attention_probs_grads_rows(
    const ACC* __restrict__ p, ACC* __restrict__ ds, const ACC* __restrict__ g,
    const ACC* __restrict__ vsum, const ACC* __restrict__ delta, ACC* __restrict__ dbias_full,
    ACC* __restrict__ dv_partial, int heads, int sq, int sk, int slice_rows, ACC scale) {
  const int chunks = (sk + blockDim.x - 1) / blockDim.x;
  const int slices = (sq + slice_rows - 1) / slice_rows;
  const int c = (blockIdx.x % chunks) * blockDim.x + threadIdx.x;
  const int slice = (blockIdx.x / chunks) % slices;
  const long long head = blockIdx.x / ((long long)chunks * slices);
  if (c >= sk) return;
  const int first = slice * slice_rows;
  const int last = min(sq, first + slice_rows);
  const ACC key_sum = vsum[head * sk + c];
  ACC column = 0;
  #pragma unroll 4
  for (int r = first; r < last; ++r) {
    const long long row = head * sq + r;
    const long long at = row * sk + c;
    const ACC pv = p[at], gr = g[row];
    const ACC dsv = pv * (gr * key_sum - delta[row]);
    if (HAS_BIAS) dbias_full[at] = dsv;
    ds[at] = dsv * scale;
    column += pv * gr;
  }
  dv_partial[((long long)slice * heads + head) * sk + c] = column;
}
"""


def fits(q_shape, k_shape) -> bool:
    """Whether attention of these (batch, heads, seq, dim) shapes takes the GEMM path: one
    head's score matrix must stay small (seq up to 2048 both sides)."""
    return q_shape[2] * k_shape[2] <= _MAX_SCORES_PER_HEAD


def kernel_source(dtype, is_causal: bool, has_bias: bool) -> str:
    """The CUDA source of the row kernels (and the delta kernel) for one configuration."""
    defines = f"#define CAUSAL {int(is_causal)}\n#define HAS_BIAS {int(has_bias)}\n"
    return scalar_prelude(dtype) + defines + _ROW_KERNELS + DELTA_SOURCE


@functools.cache
def _module(dtype_name: str, is_causal: bool, has_bias: bool):
    source = kernel_source(np.dtype(dtype_name), is_causal, has_bias)
    return devices.cupy().RawModule(code=source, options=("--std=c++17",))


class _Plan:
    """Shapes, chunking over batch * heads, and the kernel arguments shared by both passes."""

    def __init__(self, q, k, v, bias, is_causal, scale):
        self.b, self.h, self.sq = q.shape[:3]
        self.sk, self.dv = k.shape[2], v.shape[3]
        self.bh = self.b * self.h
        self.acc = acc_numpy_dtype(q.dtype)
        # P and dS can overwrite S and dP in place when they share the accumulation dtype.
        self.in_place = q.dtype == self.acc
        self.module = _module(q.dtype.name, bool(is_causal), bias is not None)
        per_head = self.sq * self.sk * self.acc.itemsize
        self.chunk = max(1, min(self.bh, _CHUNK_SCORE_BYTES // max(per_head, 1)))
        self.precision = config.read("default_matmul_precision")
        self.bias = raw_view(bias) if bias is not None else None
        sb = 0 if bias is None or bias.shape[0] == 1 else self.h * self.sq * self.sk
        sh = 0 if bias is None or bias.shape[1] == 1 else self.sq * self.sk
        self.tail = (np.int64(sb), np.int64(sh), self.acc.type(scale),
                     self.acc.type(masked_score(q.dtype)))

    def chunks(self):
        for start in range(0, self.bh, self.chunk):
            yield start, min(self.bh, start + self.chunk)

    def dims(self, start):
        return (np.int32(self.h), np.int32(self.sq), np.int32(self.sk), np.int32(start))

    def scores(self, n, dtype):
        return empty((n, self.sq, self.sk), dtype)

    def gemm(self, out, a, b):
        cublas.gemm_into(out, a, b, precision=self.precision)


def _as_bh(x):
    """(batch, heads, seq, dim) -> (batch * heads, seq, dim), no copy."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def attention_forward(q, k, v, bias, *, is_causal, scale, keep_probs=False):
    """``[out, lse]`` of softmax(q kᵀ * scale + bias) v on CuPy arrays (B, H, S, D), and
    with ``keep_probs`` (float32/float64) the probabilities too, for
    ``attention_backward_from_probs``."""
    cp = devices.cupy()
    q, k, v, bias = (contiguous(a) for a in (q, k, v, bias))
    plan = _Plan(q, k, v, bias, is_causal, scale)
    out = empty(q.shape[:3] + (plan.dv,), q.dtype)
    lse = cp.empty(q.shape[:3], plan.acc)
    # Kept probabilities are the whole batch's score matrices: no chunks then.
    probs = plan.scores(plan.bh, plan.acc) if keep_probs else None
    kept = [probs.reshape(q.shape[:3] + (plan.sk,))] if keep_probs else []
    if out.size == 0:
        if keep_probs:
            probs.fill(0)
        return [out, lse] + kept
    q3, k3, v3, out3 = (_as_bh(a) for a in (q, k, v, out))
    lse2 = lse.reshape(plan.bh, plan.sq)
    softmax = plan.module.get_function("flamefx_attention_softmax")
    bias_arg = plan.bias if bias is not None else lse
    for start, stop in [(0, plan.bh)] if keep_probs else plan.chunks():
        n = stop - start
        s = probs if keep_probs else plan.scores(n, plan.acc)
        plan.gemm(s, q3[start:stop], k3[start:stop].transpose(0, 2, 1))
        p = s if plan.in_place else plan.scores(n, q.dtype)
        rows = n * plan.sq
        softmax((math.ceil(rows * 32 / _THREADS),), (_THREADS,),
                (s, raw_view(p), bias_arg, lse2[start:stop], np.int64(rows))
                + plan.dims(start) + plan.tail)
        plan.gemm(out3[start:stop], p, v3[start:stop])
    return [out, lse] + kept


def _input_grads(plan, rows, p, ds, inputs, grads) -> None:
    """dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q for the batch * heads ``rows`` of one chunk (``ds``
    already scaled)."""
    q3, k3, dout3 = inputs
    dq3, dk3, dv3 = grads
    plan.gemm(dv3[rows], p.transpose(0, 2, 1), dout3[rows])
    plan.gemm(dq3[rows], ds, k3[rows])
    plan.gemm(dk3[rows], ds.transpose(0, 2, 1), q3[rows])


def attention_backward(q, k, v, bias, out, lse, dout, dlse, *, is_causal, scale):
    """``[dq, dk, dv(, dbias)]`` from the forward's ``out`` and ``lse`` and the cotangents
    ``dout``, ``dlse``."""
    cp = devices.cupy()
    q, k, v, bias, out, dout = (contiguous(a) for a in (q, k, v, bias, out, dout))
    plan = _Plan(q, k, v, bias, is_causal, scale)
    lse = cp.ascontiguousarray(lse, plan.acc)
    dlse = cp.ascontiguousarray(dlse, plan.acc)
    dq, dk, dv, dbias_full = gradient_buffers(q, k, v, bias, plan.acc)
    if q.size and k.size:
        delta = row_delta(plan.module, out, dout, dlse)
        q3, k3, v3, dout3, dq3, dk3, dv3 = (_as_bh(a) for a in (q, k, v, dout, dq, dk, dv))
        lse2, delta2 = lse.reshape(plan.bh, plan.sq), delta.reshape(plan.bh, plan.sq)
        dbias2 = dbias_full.reshape(plan.bh * plan.sq, plan.sk) if bias is not None else None
        grads_kernel = plan.module.get_function("flamefx_attention_score_grads")
        threads = min(_THREADS, -(-plan.sk // 32) * 32)
        for start, stop in plan.chunks():
            n = stop - start
            s, dp = plan.scores(n, plan.acc), plan.scores(n, plan.acc)
            plan.gemm(s, q3[start:stop], k3[start:stop].transpose(0, 2, 1))
            plan.gemm(dp, dout3[start:stop], v3[start:stop].transpose(0, 2, 1))
            p, ds = (s, dp) if plan.in_place else (plan.scores(n, q.dtype),
                                                   plan.scores(n, q.dtype))
            dbias_arg = (dbias2[start * plan.sq:stop * plan.sq] if bias is not None
                         else lse2[start:stop])
            grads_kernel((n * plan.sq,), (threads,),
                         (s, dp, plan.bias if bias is not None else s, lse2[start:stop],
                          delta2[start:stop], raw_view(p), raw_view(ds), dbias_arg)
                         + plan.dims(start) + plan.tail)
            _input_grads(plan, slice(start, stop), p, ds, (q3, k3, dout3), (dq3, dk3, dv3))
    return grads_with_bias(dq, dk, dv, bias, dbias_full)


def attention_backward_from_probs(q, k, v, bias, out, dout, dlse, probs, *, scale):
    """``[dq, dk, dv(, dbias)]`` from the probabilities ``attention_forward`` kept
    (float32/float64): dP = dO Vᵀ, one row kernel for dS, then dV = Pᵀ dO, dQ = dS K,
    dK = dSᵀ Q. No score GEMM, and no causal or bias logic: hidden keys have P = 0.
    A ``dout`` of shape (B, H, S, 1) stands for one value per row: see
    ``_grads_from_row_cotangents``."""
    cp = devices.cupy()
    q, k, v, bias, out, dout, probs = (contiguous(a) for a in (q, k, v, bias, out, dout, probs))
    plan = _Plan(q, k, v, bias, False, scale)
    dlse = cp.ascontiguousarray(dlse, plan.acc)
    dq, dk, dv, dbias_full = gradient_buffers(q, k, v, bias, plan.acc)
    if q.size and k.size and dout.shape != out.shape:
        _grads_from_row_cotangents(plan, (q, k, v, out, dout, dlse, probs), (dq, dk, dv),
                                   dbias_full, scale)
    elif q.size and k.size:
        delta = row_delta(plan.module, out, dout, dlse).reshape(plan.bh, plan.sq)
        q3, k3, v3, dout3, dq3, dk3, dv3, p3 = (_as_bh(a) for a in (q, k, v, dout, dq, dk, dv,
                                                                    probs))
        dbias3 = dbias_full.reshape(plan.bh, plan.sq, plan.sk) if bias is not None else None
        grads_kernel = plan.module.get_function("flamefx_attention_probs_grads")
        threads = min(_THREADS, -(-plan.sk // 32) * 32)
        for start, stop in plan.chunks():
            n = stop - start
            p = p3[start:stop]
            ds = plan.scores(n, plan.acc)
            plan.gemm(ds, dout3[start:stop], v3[start:stop].transpose(0, 2, 1))
            grads_kernel((n * plan.sq,), (threads,),
                         (p, ds, delta[start:stop], dbias3[start:stop] if bias is not None
                          else ds, np.int32(plan.sk), plan.acc.type(scale)))
            _input_grads(plan, slice(start, stop), p, ds, (q3, k3, dout3), (dq3, dk3, dv3))
    return grads_with_bias(dq, dk, dv, bias, dbias_full)


_SLICE_ROWS = 64  # rows per block of the row-cotangent pass: ~4k blocks at W3's size


def _grads_from_row_cotangents(plan, inputs, grads, dbias_full, scale) -> None:
    """The backward from kept probabilities when dO[i, :] = g_i (shape (B, H, S, 1)):
    delta_i = g_i sum(out_i) - dlse_i, one pass over P writes dS and the column sums
    dV[j, :] = sum_i P[i, j] g_i, then dQ = dS K and dK = dSᵀ Q. Two products instead of
    four, and P is read once."""
    cp = devices.cupy()
    q, k, v, out, dout, dlse, probs = inputs
    bh, sq, sk = plan.bh, plan.sq, plan.sk
    g = dout.reshape(bh, sq).astype(plan.acc, copy=False)
    delta = g * out.sum(axis=-1, dtype=plan.acc).reshape(bh, sq) - dlse.reshape(bh, sq)
    vsum = v.sum(axis=-1, dtype=plan.acc).reshape(bh, sk)
    q3, k3, p3, dq3, dk3, dv3 = (_as_bh(a) for a in (q, k, probs) + tuple(grads))
    dbias3 = dbias_full.reshape(bh, sq, sk) if dbias_full is not None else None
    kernel = plan.module.get_function("flamefx_attention_probs_grads_rows")
    slices = -(-sq // _SLICE_ROWS)
    for start, stop in plan.chunks():
        n = stop - start
        ds = plan.scores(n, plan.acc)
        dv_partial = cp.empty((slices, n, sk), plan.acc)
        kernel((-(-sk // _THREADS) * slices * n,), (_THREADS,),
               (p3[start:stop], ds, g[start:stop], vsum[start:stop], delta[start:stop],
                dbias3[start:stop] if dbias3 is not None else ds, dv_partial, np.int32(n),
                np.int32(sq), np.int32(sk), np.int32(_SLICE_ROWS), plan.acc.type(scale)))
        dv3[start:stop] = dv_partial.sum(axis=0)[..., None]
        plan.gemm(dq3[start:stop], ds, k3[start:stop])
        plan.gemm(dk3[start:stop], ds.transpose(0, 2, 1), q3[start:stop])
