"""Fused flash-attention kernels: forward, and a backward in two kernels (dQ; dK and dV).

Layout (batch, heads, seq, dim), contiguous. A block owns a tile of 64 rows and streams
64-row tiles of the other operand through shared memory; 256 threads (16 x 16) each hold
4 rows x 4 columns of the score tile and 4 rows of the output tile, in float32 (float64
for float64 inputs). The forward keeps a running max and sum per row (online softmax), so
it never stores the seq x seq score matrix, and writes the log-sum-exp ``lse`` per row.
The backward recomputes each probability tile from ``lse``: one kernel walks key tiles
per query tile for dQ, the other walks query tiles per key tile for dK and dV, so no
atomics are needed. A bias at the dtype's lowest value (or -inf) hides its key like causal
masking does; a row that sees no key at all gives zeros and ``lse = -inf``.

Head dims up to 128 (64 for float64) are supported; memory is linear in the sequence.

>>> out, lse = attention_forward(q, k, v, None, is_causal=True, scale=0.125)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math

import numpy as np

from flamefx import devices
from flamefx.errors import FlamefxValueError
from flamefx.kernels import cuda_elementwise
from flamefx.kernels.cuda_scalar import (
    acc_numpy_dtype,
    contiguous,
    empty,
    raw_view,
    scalar_prelude,
    set_dynamic_shared_memory,
    zeros,
)
from flamefx.primitives.attention import masked_score

# Whether attention_backward takes a (B, H, S, 1) dout (the flash kernels read a full one).
TAKES_ROW_COTANGENTS = False

_TILE = 64  # rows per tile, both sides
_THREADS = 256

_COMMON = r"""
#define BM 64
#define BN 64
#define TS 68  // row stride of transposed tiles: 64 rows + 4 keeps 16-byte alignment
#define LOG2E 1.4426950408889634
#define LN2 0.6931471805599453

// Loads a rows x cols tile (row stride `ld` in global) into shared memory with row stride
// `stride`, converting to ACC and zero-filling past `valid_rows` / `valid_cols`.
__device__ __forceinline__ void load_tile(ACC* dst, const T* src, int rows, int cols,
                                          int stride, int valid_rows, int valid_cols, int ld) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols, c = i % cols;
    dst[r * stride + c] = (r < valid_rows && c < valid_cols)
        ? LOAD(src[(long long)r * ld + c]) : (ACC)0;
  }
}

// A bias at or below mask_value (the dtype's lowest value, or -inf) masks its score: the
// key is hidden from that query exactly as causal masking hides it.
__device__ __forceinline__ bool attends(const T* bias, int row, int col, int sq, int sk,
                                       ACC mask_value) {
  if (row >= sq || col >= sk || (CAUSAL && col > row)) return false;
  return !HAS_BIAS || LOAD(bias[(long long)row * sk + col]) > mask_value;
}

// The same tile stored transposed, dst[c * stride + r]: the tile's rows become contiguous,
// so a thread reads its four rows of one column with a single vector load (LOAD_ACC4).
__device__ __forceinline__ void load_tile_transposed(ACC* dst, const T* src, int rows,
                                                     int cols, int stride, int valid_rows,
                                                     int valid_cols, int ld) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols, c = i % cols;
    dst[c * stride + r] = (r < valid_rows && c < valid_cols)
        ? LOAD(src[(long long)r * ld + c]) : (ACC)0;
  }
}

__device__ __forceinline__ ACC score(ACC dot, ACC scale, const T* bias, int row, int col,
                                     int sk) {
  ACC val = dot * scale;
  if (HAS_BIAS) val += LOAD(bias[(long long)row * sk + col]);
  return val;
}

// This thread's 4 x 4 block of A Bᵀ over N columns: s[i][j] = sum_c A[ty * 4 + i][c] *
// B[tx + 16 * j][c], with A stored transposed (`at`, row stride TS, so a thread's four rows
// are one vector load) and B row-major with row stride `ldb`.
template <int N>
__device__ __forceinline__ void tile_dot(ACC (&s)[4][4], const ACC* at, const ACC* b, int ldb,
                                         int tx, int ty) {
  #pragma unroll
  for (int i = 0; i < 4; ++i)
    #pragma unroll
    for (int j = 0; j < 4; ++j) s[i][j] = 0;
  #pragma unroll 4
  for (int c = 0; c < N; ++c) {
    ACC a[4], bc[4];
    LOAD_ACC4(a, at + c * TS + ty * 4);
    #pragma unroll
    for (int j = 0; j < 4; ++j) bc[j] = b[(tx + 16 * j) * ldb + c];
    #pragma unroll
    for (int i = 0; i < 4; ++i)
      #pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] += a[i] * bc[j];
  }
}

// acc += P B over N shared rows, for this thread's rows ty * 4 + i of P and columns
// tx + 16 * jj of B: P stored transposed (`pt`, row stride TS), B row-major with row stride
// `ldb`.
template <int N, int NJ>
__device__ __forceinline__ void tile_accumulate(ACC (&acc)[4][NJ], const ACC* pt, const ACC* b,
                                                int ldb, int tx, int ty) {
  #pragma unroll 4
  for (int c = 0; c < N; ++c) {
    ACC bc[NJ];
    #pragma unroll
    for (int jj = 0; jj < NJ; ++jj) bc[jj] = b[c * ldb + tx + 16 * jj];
    ACC p[4];
    LOAD_ACC4(p, pt + c * TS + ty * 4);
    #pragma unroll
    for (int i = 0; i < 4; ++i)
      #pragma unroll
      for (int jj = 0; jj < NJ; ++jj) acc[i][jj] += p[i] * bc[jj];
  }
}
"""

_FORWARD = r"""
extern "C" __global__ void __launch_bounds__(256) flamefx_flash_forward(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ bias, T* __restrict__ out, ACC* __restrict__ lse, int heads, int sq,
    int sk, int d, int dv, long long bias_sb, long long bias_sh, ACC scale,
    ACC mask_value) {
  extern __shared__ __align__(16) unsigned char smem[];
  ACC* qt = (ACC*)smem;            // [DP][TS]   Q transposed
  ACC* pt = qt + DP * TS;          // [BN][TS]   P transposed
  ACC* ks = pt + BN * TS;          // [BN][DP + 1]
  ACC* vs = ks + BN * (DP + 1);    // [BN][DVP]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int q0 = blockIdx.x * BM;
  q += (long long)bh * sq * d + (long long)q0 * d;
  k += (long long)bh * sk * d;
  v += (long long)bh * sk * dv;
  out += (long long)bh * sq * dv;
  lse += (long long)bh * sq;
  if (HAS_BIAS) bias += b * bias_sb + h * bias_sh;
  load_tile_transposed(qt, q, BM, DP, TS, sq - q0, d, d);

  ACC m[4], l[4], acc[4][DVP / 16];
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = NEG_INF;
    l[i] = 0;
    #pragma unroll
    for (int jj = 0; jj < DVP / 16; ++jj) acc[i][jj] = 0;
  }
  const int k_end = CAUSAL ? min(sk, q0 + BM) : sk;
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // the previous tile's ks/vs/ps are no longer read
    load_tile(ks, k + (long long)k0 * d, BN, DP, DP + 1, sk - k0, d, d);
    load_tile(vs, v + (long long)k0 * dv, BN, DVP, DVP, sk - k0, dv, dv);
    __syncthreads();
    ACC s[4][4];
    tile_dot<DP>(s, qt, ks, DP + 1, tx, ty);
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = q0 + ty * 4 + i;
      ACC row_max = NEG_INF;
      #pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = k0 + tx + 16 * j;
        s[i][j] = attends(bias, row, col, sq, sk, mask_value)
            ? score(s[i][j], scale, bias, row, col, sk) : NEG_INF;
        row_max = MAX(row_max, s[i][j]);
      }
      // The 16 threads sharing these rows are one half-warp: reduce across it.
      #pragma unroll
      for (int off = 8; off > 0; off >>= 1)
        row_max = MAX(row_max, __shfl_xor_sync(0xffffffffu, row_max, off));
      const ACC m_new = MAX(m[i], row_max);
      const ACC m_use = (m_new == NEG_INF) ? (ACC)0 : m_new;  // all hidden so far
      const ACC alpha = EXP2((m[i] - m_use) * (ACC)LOG2E);
      ACC row_sum = 0;
      #pragma unroll
      for (int j = 0; j < 4; ++j) {
        const ACC p = EXP2((s[i][j] - m_use) * (ACC)LOG2E);
        row_sum += p;
        pt[(tx + 16 * j) * TS + ty * 4 + i] = p;
      }
      #pragma unroll
      for (int off = 8; off > 0; off >>= 1)
        row_sum += __shfl_xor_sync(0xffffffffu, row_sum, off);
      l[i] = l[i] * alpha + row_sum;
      m[i] = m_new;
      #pragma unroll
      for (int jj = 0; jj < DVP / 16; ++jj) acc[i][jj] *= alpha;
    }
    __syncthreads();
    tile_accumulate<BN>(acc, pt, vs, DVP, tx, ty);
  }
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + ty * 4 + i;
    if (row >= sq) continue;
    const ACC inv = l[i] > (ACC)0 ? (ACC)1 / l[i] : (ACC)0;  // fully masked rows give 0
    #pragma unroll
    for (int jj = 0; jj < DVP / 16; ++jj) {
      const int col = tx + 16 * jj;
      if (col < dv) out[(long long)row * dv + col] = STORE(acc[i][jj] * inv);
    }
    if (tx == 0) lse[row] = m[i] + LOG2(l[i]) * (ACC)LN2;
  }
}
"""

# delta[row] = sum(dout * out) - dlse: the softmax backward's row term (one warp per row).
# Shared with the cuBLAS path (cuda_attention_gemm), which compiles it into its own module.
DELTA_SOURCE = r"""
extern "C" __global__ void flamefx_flash_delta(
    const T* __restrict__ out, const T* __restrict__ dout, const ACC* __restrict__ dlse,
    ACC* __restrict__ delta, long long rows, int dv) {
  const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  ACC sum = 0;
  for (int c = lane; c < dv; c += 32)
    sum += LOAD(out[row * dv + c]) * LOAD(dout[row * dv + c]);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) delta[row] = sum - dlse[row];
}
"""

_BACKWARD_DQ = r"""
extern "C" __global__ void __launch_bounds__(256) flamefx_flash_backward_dq(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ bias, const T* __restrict__ dout, const ACC* __restrict__ lse,
    const ACC* __restrict__ delta, T* __restrict__ dq, ACC* __restrict__ dbias_full,
    int heads, int sq, int sk, int d, int dv, long long bias_sb, long long bias_sh,
    ACC scale, ACC mask_value) {
  extern __shared__ __align__(16) unsigned char smem[];
  ACC* qt = (ACC*)smem;              // [DP][TS]    Q transposed
  ACC* dot = qt + DP * TS;           // [DVP][TS]   dO transposed
  ACC* pt = dot + DVP * TS;          // [BN][TS]    dS transposed
  ACC* ks = pt + BN * TS;            // [BN][DP + 1]
  ACC* vs = ks + BN * (DP + 1);      // [BN][DVP + 1]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int q0 = blockIdx.x * BM;
  k += (long long)bh * sk * d;
  v += (long long)bh * sk * dv;
  lse += (long long)bh * sq;
  delta += (long long)bh * sq;
  dq += (long long)bh * sq * d;
  if (HAS_BIAS) {
    bias += b * bias_sb + h * bias_sh;
    dbias_full += (long long)bh * sq * sk;
  }
  load_tile_transposed(qt, q + ((long long)bh * sq + q0) * d, BM, DP, TS, sq - q0, d, d);
  load_tile_transposed(dot, dout + ((long long)bh * sq + q0) * dv, BM, DVP, TS, sq - q0, dv,
                       dv);
  ACC row_lse[4], row_delta[4], acc[4][DP / 16];
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + ty * 4 + i;
    row_lse[i] = row < sq ? lse[row] : (ACC)0;
    row_delta[i] = row < sq ? delta[row] : (ACC)0;
    #pragma unroll
    for (int jj = 0; jj < DP / 16; ++jj) acc[i][jj] = 0;
  }
  const int k_end = CAUSAL ? min(sk, q0 + BM) : sk;
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();
    load_tile(ks, k + (long long)k0 * d, BN, DP, DP + 1, sk - k0, d, d);
    load_tile(vs, v + (long long)k0 * dv, BN, DVP, DVP + 1, sk - k0, dv, dv);
    __syncthreads();
    ACC s[4][4], dp[4][4];
    tile_dot<DP>(s, qt, ks, DP + 1, tx, ty);
    tile_dot<DVP>(dp, dot, vs, DVP + 1, tx, ty);
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = q0 + ty * 4 + i;
      #pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = k0 + tx + 16 * j;
        ACC ds = 0;
        if (attends(bias, row, col, sq, sk, mask_value)) {
          const ACC p = EXP2((score(s[i][j], scale, bias, row, col, sk) - row_lse[i])
                             * (ACC)LOG2E);
          ds = p * (dp[i][j] - row_delta[i]);
          if (HAS_BIAS) dbias_full[(long long)row * sk + col] = ds;
        }
        pt[(tx + 16 * j) * TS + ty * 4 + i] = ds;
      }
    }
    __syncthreads();
    tile_accumulate<BN>(acc, pt, ks, DP + 1, tx, ty);
  }
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + ty * 4 + i;
    if (row >= sq) continue;
    #pragma unroll
    for (int jj = 0; jj < DP / 16; ++jj) {
      const int col = tx + 16 * jj;
      if (col < d) dq[(long long)row * d + col] = STORE(acc[i][jj] * scale);
    }
  }
}
"""

_BACKWARD_DKDV = r"""
extern "C" __global__ void __launch_bounds__(256) flamefx_flash_backward_dkdv(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ bias, const T* __restrict__ dout, const ACC* __restrict__ lse,
    const ACC* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv_out, int heads,
    int sq, int sk, int d, int dv, long long bias_sb, long long bias_sh, ACC scale,
    ACC mask_value) {
  extern __shared__ __align__(16) unsigned char smem[];
  ACC* kt = (ACC*)smem;              // [DP][TS]    K transposed
  ACC* vt = kt + DP * TS;            // [DVP][TS]   V transposed
  ACC* pt = vt + DVP * TS;           // [BM][TS]    P, then dS, as [query][key]
  ACC* qs = pt + BM * TS;            // [BM][DP + 1]
  ACC* dos = qs + BM * (DP + 1);     // [BM][DVP + 1]
  ACC* ls = dos + BM * (DVP + 1);    // [BM]
  ACC* dls = ls + BM;                // [BM]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int k0 = blockIdx.x * BN;
  q += (long long)bh * sq * d;
  dout += (long long)bh * sq * dv;
  lse += (long long)bh * sq;
  delta += (long long)bh * sq;
  if (HAS_BIAS) bias += b * bias_sb + h * bias_sh;
  load_tile_transposed(kt, k + ((long long)bh * sk + k0) * d, BN, DP, TS, sk - k0, d, d);
  load_tile_transposed(vt, v + ((long long)bh * sk + k0) * dv, BN, DVP, TS, sk - k0, dv, dv);
  ACC dk_acc[4][DP / 16], dv_acc[4][DVP / 16];
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    #pragma unroll
    for (int jj = 0; jj < DP / 16; ++jj) dk_acc[i][jj] = 0;
    #pragma unroll
    for (int jj = 0; jj < DVP / 16; ++jj) dv_acc[i][jj] = 0;
  }
  // Causal: queries before this key tile's first key see none of it.
  const int q_start = CAUSAL ? (k0 / BM) * BM : 0;
  for (int q0 = q_start; q0 < sq; q0 += BM) {
    __syncthreads();
    load_tile(qs, q + (long long)q0 * d, BM, DP, DP + 1, sq - q0, d, d);
    load_tile(dos, dout + (long long)q0 * dv, BM, DVP, DVP + 1, sq - q0, dv, dv);
    for (int r = threadIdx.x; r < BM; r += blockDim.x) {
      ls[r] = q0 + r < sq ? lse[q0 + r] : (ACC)0;
      dls[r] = q0 + r < sq ? delta[q0 + r] : (ACC)0;
    }
    __syncthreads();
    ACC st[4][4], dpt[4][4];
    tile_dot<DP>(st, kt, qs, DP + 1, tx, ty);
    tile_dot<DVP>(dpt, vt, dos, DVP + 1, tx, ty);
    ACC dst[4][4];
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int key = k0 + ty * 4 + i;
      #pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int qr = tx + 16 * j, row = q0 + qr;
        ACC p = 0, ds = 0;
        if (attends(bias, row, key, sq, sk, mask_value)) {
          p = EXP2((score(st[i][j], scale, bias, row, key, sk) - ls[qr]) * (ACC)LOG2E);
          ds = p * (dpt[i][j] - dls[qr]);
        }
        dst[i][j] = ds;
        pt[qr * TS + ty * 4 + i] = p;
      }
    }
    __syncthreads();
    tile_accumulate<BM>(dv_acc, pt, dos, DVP + 1, tx, ty);
    __syncthreads();
    #pragma unroll
    for (int i = 0; i < 4; ++i)
      #pragma unroll
      for (int j = 0; j < 4; ++j) pt[(tx + 16 * j) * TS + ty * 4 + i] = dst[i][j];
    __syncthreads();
    tile_accumulate<BM>(dk_acc, pt, qs, DP + 1, tx, ty);
  }
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int key = k0 + ty * 4 + i;
    if (key >= sk) continue;
    const long long at = (long long)bh * sk + key;
    #pragma unroll
    for (int jj = 0; jj < DP / 16; ++jj) {
      const int col = tx + 16 * jj;
      if (col < d) dk[at * d + col] = STORE(dk_acc[i][jj] * scale);
    }
    #pragma unroll
    for (int jj = 0; jj < DVP / 16; ++jj) {
      const int col = tx + 16 * jj;
      if (col < dv) dv_out[at * dv + col] = STORE(dv_acc[i][jj]);
    }
  }
}
"""


def _padded(dim: int) -> int:
    return max(16, -(-dim // 16) * 16)


def kernel_source(dtype, d_padded: int, dv_padded: int, is_causal: bool,
                  has_bias: bool) -> str:
    """The CUDA source of the attention kernels specialized for one configuration."""
    defines = (f"#define DP {d_padded}\n#define DVP {dv_padded}\n"
               f"#define CAUSAL {int(is_causal)}\n#define HAS_BIAS {int(has_bias)}\n")
    return (scalar_prelude(dtype) + defines + _COMMON + _FORWARD + DELTA_SOURCE + _BACKWARD_DQ
            + _BACKWARD_DKDV)


@functools.cache
def _module(dtype_name: str, d_padded: int, dv_padded: int, is_causal: bool, has_bias: bool):
    source = kernel_source(np.dtype(dtype_name), d_padded, dv_padded, is_causal, has_bias)
    return devices.cupy().RawModule(code=source, options=("--std=c++17",))


def _shared_bytes(kind: str, dp: int, dvp: int, itemsize: int) -> int:
    t, ts = _TILE, _TILE + 4  # transposed tiles have row stride TS = 68
    floats = {
        "forward": dp * ts + t * ts + t * (dp + 1) + t * dvp,
        "dq": (dp + dvp + t) * ts + t * (dp + 1) + t * (dvp + 1),
        "dkdv": (dp + dvp + t) * ts + t * (dp + 1) + t * (dvp + 1) + 2 * t,
    }[kind]
    return floats * itemsize


class _Launch:
    """Shapes, specialization and kernel lookup shared by the forward and backward."""

    def __init__(self, q, k, v, bias, is_causal):
        b, h, sq, d = q.shape
        sk, dv = k.shape[2], v.shape[3]
        limit = 64 if q.dtype == np.float64 else 128
        if d > limit or dv > limit:
            raise FlamefxValueError(
                f"GPU flash attention supports head dims up to {limit} for {q.dtype}, got "
                f"q/k dim {d} and v dim {dv}")
        self.b, self.h, self.sq, self.sk, self.d, self.dv = b, h, sq, sk, d, dv
        self.dp, self.dvp = _padded(d), _padded(dv)
        self.acc = acc_numpy_dtype(q.dtype)
        self.mask_value = masked_score(q.dtype)
        self.module = _module(q.dtype.name, self.dp, self.dvp, bool(is_causal),
                              bias is not None)
        if bias is not None:
            self.bias_sb = 0 if bias.shape[0] == 1 else h * sq * sk
            self.bias_sh = 0 if bias.shape[1] == 1 else sq * sk
        else:
            self.bias_sb = self.bias_sh = 0

    def kernel(self, name: str, kind: str):
        fn = self.module.get_function(name)
        nbytes = _shared_bytes(kind, self.dp, self.dvp, self.acc.itemsize)
        set_dynamic_shared_memory(fn, nbytes)
        return fn, nbytes

    def shape_args(self, scale):
        return (np.int32(self.h), np.int32(self.sq), np.int32(self.sk), np.int32(self.d),
                np.int32(self.dv), np.int64(self.bias_sb), np.int64(self.bias_sh),
                self.acc.type(scale), self.acc.type(self.mask_value))


def attention_forward(q, k, v, bias, *, is_causal, scale):
    """``[out, lse]`` of softmax(q kᵀ * scale + bias) v on CuPy arrays (B, H, S, D)."""
    cp = devices.cupy()
    q, k, v, bias = (contiguous(a) for a in (q, k, v, bias))
    launch = _Launch(q, k, v, bias, is_causal)
    out = empty(q.shape[:3] + (launch.dv,), q.dtype)
    lse = cp.empty(q.shape[:3], launch.acc)
    if out.size == 0:
        return [out, lse]
    fn, nbytes = launch.kernel("flamefx_flash_forward", "forward")
    grid = (math.ceil(launch.sq / _TILE), launch.b * launch.h)
    bias_arg = raw_view(bias) if bias is not None else raw_view(q)
    fn(grid, (_THREADS,), (raw_view(q), raw_view(k), raw_view(v), bias_arg, raw_view(out), lse)
       + launch.shape_args(scale), shared_mem=nbytes)
    return [out, lse]


def row_delta(module, out, dout, dlse):
    """``sum(dout * out, axis=-1) - dlse`` (accumulation dtype) by ``flamefx_flash_delta``
    from ``module`` (any module compiled with DELTA_SOURCE for this dtype)."""
    cp = devices.cupy()
    rows, dv = math.prod(out.shape[:-1]), out.shape[-1]
    delta = cp.empty(out.shape[:-1], dlse.dtype)
    module.get_function("flamefx_flash_delta")(
        (math.ceil(rows * 32 / _THREADS),), (_THREADS,),
        (raw_view(out), raw_view(dout), dlse, delta, np.int64(rows), np.int32(dv)))
    return delta


def gradient_buffers(q, k, v, bias, acc):
    """``dq, dk, dv`` for a backward to write (zeros when there is no query or no key) and,
    with a bias, the zeroed (B, H, Sq, Sk) score gradient in ``acc``."""
    make = empty if q.size and k.size else zeros
    dq, dk, dv = (make(a.shape, a.dtype) for a in (q, k, v))
    dbias_full = zeros(q.shape[:3] + k.shape[2:3], acc) if bias is not None else None
    return dq, dk, dv, dbias_full


def grads_with_bias(dq, dk, dv, bias, dbias_full):
    """``[dq, dk, dv]``, plus dbias when there is a bias: the (B, H, Sq, Sk) score gradient
    ``dbias_full`` summed over the batch and head axes that ``bias`` broadcasts."""
    grads = [dq, dk, dv]
    if bias is not None:
        axes = tuple(i for i in range(2) if bias.shape[i] == 1 and dbias_full.shape[i] != 1)
        reduced = dbias_full.sum(axis=axes, keepdims=True) if axes else dbias_full
        grads.append(cuda_elementwise.convert(reduced, bias.dtype))
    return grads


def attention_backward(q, k, v, bias, out, lse, dout, dlse, *, is_causal, scale):
    """``[dq, dk, dv(, dbias)]`` from the forward's ``out`` and ``lse`` and the cotangents
    ``dout``, ``dlse``; only dbias (when there is a bias) takes seq x seq memory."""
    cp = devices.cupy()
    q, k, v, bias, out, dout = (contiguous(a) for a in (q, k, v, bias, out, dout))
    launch = _Launch(q, k, v, bias, is_causal)
    lse = cp.ascontiguousarray(lse, launch.acc)
    dlse = cp.ascontiguousarray(dlse, launch.acc)
    dq, dk, dv, dbias_full = gradient_buffers(q, k, v, bias, launch.acc)
    if q.size and k.size:
        delta = row_delta(launch.module, out, dout, dlse)
        bias_arg = raw_view(bias) if bias is not None else raw_view(q)
        common = (raw_view(q), raw_view(k), raw_view(v), bias_arg, raw_view(dout), lse, delta)
        fn, nbytes = launch.kernel("flamefx_flash_backward_dq", "dq")
        fn((math.ceil(launch.sq / _TILE), launch.b * launch.h), (_THREADS,),
           common + (raw_view(dq), dbias_full if bias is not None else lse)
           + launch.shape_args(scale), shared_mem=nbytes)
        fn, nbytes = launch.kernel("flamefx_flash_backward_dkdv", "dkdv")
        fn((math.ceil(launch.sk / _TILE), launch.b * launch.h), (_THREADS,),
           common + (raw_view(dk), raw_view(dv)) + launch.shape_args(scale),
           shared_mem=nbytes)
    return grads_with_bias(dq, dk, dv, bias, dbias_full)
