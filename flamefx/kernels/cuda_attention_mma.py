"""Flash attention on tensor cores for float16 and bfloat16 (FlashAttention-2 style).

Every product goes through ``mma.sync.aligned.m16n8k16`` (half inputs, float32
accumulation), from the device helpers of cuda_mma. Layout (batch, heads, seq, dim),
contiguous; head dims multiples of 16 up to 128; no bias (``supports`` says which calls
qualify; the rest take cuda_attention_gemm or cuda_attention). Memory is linear in the
sequence: no score matrix is ever stored.

Forward: one block of 8 warps per 128 query rows, each warp owning 16 rows whose Q
fragments stay in registers. Key tiles of 64 stream through shared memory, row-major, in
STAGES = 3 buffers: cp.async fetches tile i + 1 during tile i, and with three buffers the
one refilled was last read two tiles ago, so one barrier a tile suffices. ``ldmatrix``
(``.trans`` where the product needs the tile transposed) delivers B fragments for two mma
tiles per instruction. S = Q Kᵀ, the online softmax and P·V all stay in registers: an S
accumulator pair (row g, columns 2t, 2t+1) is exactly an A-operand register of the next
product, so P never touches shared memory.

Backward: a first kernel gathers each query row's terms (lse·log2 e, delta = rowsum(dO *
out) - dlse, and g below) into one 16-byte entry. The dK, dV kernel gives a block 128 keys
(8 warps of 16 keys; V fragments in registers, K fragments read from shared memory each
tile) and walks the 64-row query tiles with their terms (buffered likewise):
Sᵀ = K Qᵀ, Pᵀ = exp(Sᵀ·scale - lse), dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ = Pᵀ (dPᵀ - delta),
dK += dSᵀ Q; dSᵀ goes through shared memory so the warps then split the tile's dS K (16
rows by half the columns each), added with float32 atomics into a dQ accumulator that a
last kernel converts.
When dO is one value per query row g (the gradient of sum(attention), narrowed by jit),
the DOUT_ROWS variant takes dV and dP from row sums instead of products (dP[i, j] = g_i
vsum_j), and dQ from a kernel of its own shaped like the forward: it recomputes P and
dS = P (g vsum - delta) for its 128 query rows over the key tiles, so no block shares a dQ
row and there are no atomics. With a full dO that recomputation costs two products and is
slower than the atomics (W3's shape: 0.33 against 0.29 ms).

Measured (H100, 2026-11-24), W3 bf16 (8, 8, 1024, 64): forward 0.077 ms (223 TF/s); row
backward 0.16 ms (terms 0.004, dK dV 0.090, dQ 0.067), full backward 0.22 ms; grad of
sum(attention) end to end 0.24 ms (JAX cuDNN 0.25-0.26 ms in the same processes). 4 warps
per block: forward 0.098, row dK dV 0.112 against 0.105 ms (before the third buffer).

>>> supports_shapes(np.dtype("float16"), (8, 8, 1024, 64), (8, 8, 1024, 64), None)
True
"""

from __future__ import annotations

import functools
import math

import numpy as np

from flamefx import devices
from flamefx.kernels.cuda_attention import gradient_buffers
from flamefx.kernels.cuda_mma import DEVICE_HELPERS
from flamefx.kernels.cuda_scalar import (empty, raw_view, scalar_prelude,
                                         set_dynamic_shared_memory, zeros)

# Whether attention_backward takes a (B, H, S, 1) dout (see attention_backward).
TAKES_ROW_COTANGENTS = True

_ROWS = 64  # the rows of every tile streamed through shared memory
# Warps (of 16 query rows in the forward, 16 keys in the backward) per block: 8 measured
# faster than 4 for W3 (forward 0.084 against 0.098 ms, backward 0.287 against 0.294 ms).
_FORWARD_WARPS = 8
_BACKWARD_WARPS = 8
_PAD = 8  # halves added to each shared-memory row: consecutive rows start 4 banks apart
# Buffers of the streamed tiles: with three, the one refilled during tile i was last read
# during tile i - 2, which every warp finished before the barrier of tile i - 1, so a tile
# needs one barrier instead of two.
_STAGES = 3
_LOG2E = 1.4426950408889634
_HALF_DTYPES = ("float16", "bfloat16")

_COMMON = r"""
#define ROWS 64
#define PAD 8
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// Starts copying N rows (ROWS unless given) of COLS halves (row stride COLS in global,
// COLS + PAD in shared memory) in 16-byte pieces, zeros past `valid` rows.
template <int COLS, int N = ROWS>
__device__ __forceinline__ void load_rows_async(T* dst, const T* src, int valid) {
  for (int i = threadIdx.x; i < N * COLS / 8; i += blockDim.x) {
    const int r = i / (COLS / 8), c = (i % (COLS / 8)) * 8;
    copy_16_async(dst + r * (COLS + PAD) + c, r < valid ? src + (long long)r * COLS + c : src,
                  r < valid);
  }
}

// s (16 x 64: this warp's 16 rows of A against a tile's 64 rows of B) = A Bᵀ over K
// columns, for A in fragments a[K / 16] and the tile row-major in shared memory (row stride
// K + PAD).
template <int K>
__device__ __forceinline__ void tile_scores(float (&s)[ROWS / 8][4],
                                            const unsigned (&a)[K / 16][4], const T* tile) {
  #pragma unroll
  for (int n = 0; n < ROWS / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  #pragma unroll
  for (int n = 0; n < ROWS / 8; n += 2)
    #pragma unroll
    for (int kk = 0; kk < K / 16; ++kk)
      mma_b_transposed(s[n], s[n + 1], a[kk], tile, K + PAD, n * 8, kk * 16);
}

// acc (16 x COLS) += A B: A this warp's 16 x 64 accumulator tile `a` (rounded to T), B a
// tile's 64 rows of COLS, row-major in shared memory (row stride COLS + PAD).
template <int COLS>
__device__ __forceinline__ void tile_product(float (&acc)[COLS / 8][4],
                                             const float (&a)[ROWS / 8][4], const T* tile) {
  #pragma unroll
  for (int kk = 0; kk < ROWS / 16; ++kk) {
    unsigned fragment[4];
    accumulators_as_a(fragment, a[2 * kk], a[2 * kk + 1]);
    #pragma unroll
    for (int n = 0; n < COLS / 8; n += 2)
      mma_b(acc[n], acc[n + 1], fragment, tile, COLS + PAD, n * 8, kk * 16);
  }
}

// Starts tile `tile + 1`'s copies (`load(tile + 1)`, when there is one) and waits for tile
// `tile`'s; after the barrier every warp may read tile `tile`, and every warp is done with
// tile `tile - 1`. (Three buffers: the one tile + 1 refills was last read by tile - 2.)
template <class Load>
__device__ __forceinline__ void next_tile(int tile, int tiles, Load load) {
  if (tile + 1 < tiles) {
    load(tile + 1);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}
"""

_FORWARD = r"""
#define KV_HALVES (ROWS * (D + PAD + DV + PAD))
#define FWD_ROWS (16 * FWD_WARPS)  // query rows of a block
// grid (FWD_ROWS query rows, batch * heads), FWD_WARPS warps of 16 rows; lse in natural
// log, -inf for a row that sees no key.
extern "C" __global__ void __launch_bounds__(32 * FWD_WARPS) flamefx_mma_attention_forward(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    T* __restrict__ out, float* __restrict__ lse, int sq, int sk, float scale_log2) {
  extern __shared__ __align__(16) unsigned char smem[];
  // STAGES buffers of KV_HALVES: keys [ROWS][D + PAD], then values [ROWS][DV + PAD].
  T* ks = reinterpret_cast<T*>(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const long long bh = blockIdx.y;
  const int block_q0 = blockIdx.x * FWD_ROWS, q0 = block_q0 + warp * 16;
  q += bh * sq * D;
  k += bh * sk * D;
  v += bh * sk * DV;
  out += bh * sq * DV;
  lse += bh * sq;
  unsigned qa[D / 16][4];
  #pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a(qa[kk], q, D, q0, kk * 16, sq);
  float o[DV / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  #pragma unroll
  for (int n = 0; n < DV / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  const int k_end = CAUSAL ? min(sk, block_q0 + FWD_ROWS) : sk;
  const int tiles = (k_end + ROWS - 1) / ROWS;
  // Starts loading key tile `tile` (keys and values) into its buffer.
  auto load_key_tile = [&](int tile) {
    T* const tile_ks = ks + (tile % STAGES) * KV_HALVES;
    const int k0 = tile * ROWS;
    load_rows_async<D>(tile_ks, k + (long long)k0 * D, sk - k0);
    load_rows_async<DV>(tile_ks + ROWS * (D + PAD), v + (long long)k0 * DV, sk - k0);
  };
  // Tile i + 1 streams in (cp.async) while the warps work on tile i.
  if (tiles > 0) load_key_tile(0);
  cp_async_commit();
  for (int tile = 0; tile < tiles; ++tile) {
    const int k0 = tile * ROWS;
    next_tile(tile, tiles, load_key_tile);
    const T* const tile_ks = ks + (tile % STAGES) * KV_HALVES;
    const T* const tile_vs = tile_ks + ROWS * (D + PAD);
    if (!CAUSAL || k0 <= q0 + 15) {  // else this warp's rows see none of these keys
      float s[ROWS / 8][4];
      tile_scores<D>(s, qa, tile_ks);
      // Scores in the log2 domain; keys past the end, or after the row when causal, hidden
      // (edge tiles only: a pass of its own keeps the tests out of the other tiles' code).
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] *= scale_log2;
      if (k0 + ROWS > sk || (CAUSAL && k0 + ROWS - 1 > q0))
        #pragma unroll
        for (int n = 0; n < ROWS / 8; ++n)
          #pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = q0 + g + (e >> 1) * 8, col = k0 + n * 8 + t * 2 + (e & 1);
            if (col >= sk || (CAUSAL && col > row)) s[n][e] = -INFINITY;
          }
      float row_max[2] = {m[0], m[1]};
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) row_max[e >> 1] = fmaxf(row_max[e >> 1], s[n][e]);
      float alpha[2], m_use[2];
      #pragma unroll
      for (int r = 0; r < 2; ++r) {
        // The four lanes t = 0..3 share a row.
        row_max[r] = fmaxf(row_max[r], __shfl_xor_sync(0xffffffffu, row_max[r], 1));
        row_max[r] = fmaxf(row_max[r], __shfl_xor_sync(0xffffffffu, row_max[r], 2));
        m_use[r] = row_max[r] == -INFINITY ? 0.f : row_max[r];  // no key seen yet
        alpha[r] = fast_exp2(m[r] - m_use[r]);
        m[r] = row_max[r];
        l[r] *= alpha[r];  // this lane's share of the row sum, summed over lanes at the end
      }
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] = fast_exp2(s[n][e] - m_use[e >> 1]);
          l[e >> 1] += s[n][e];
        }
      // (Skipping this when no row maximum grew, one vote a warp, measured slower: W3's
      // forward 0.0788 against 0.0772 ms.)
      #pragma unroll
      for (int n = 0; n < DV / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e >> 1];
      tile_product<DV>(o, s, tile_vs);
    }
  }
  #pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = q0 + g + r * 8;
    if (row >= sq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row that sees no key gives zeros
    #pragma unroll
    for (int n = 0; n < DV / 8; ++n)
      *reinterpret_cast<unsigned*>(out + (long long)row * DV + n * 8 + t * 2) =
          pack2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    if (t == 0) lse[row] = l[r] > 0.f ? (m[r] + log2f(l[r])) * LN2 : -INFINITY;
  }
}
"""

_BACKWARD = r"""
#define QDO_HALVES (ROWS * (D + PAD + (DOUT_ROWS ? 0 : DV + PAD)))
#define BWD_KEYS (16 * BWD_WARPS)  // keys of a dK, dV block
// DOUT_ROWS: dO is one value per query row (dO[i, :] = g_i, passed as g), so dV = Pᵀ dO and
// dPᵀ = V dOᵀ need no products: dV[j, :] = sum_i P[i, j] g_i, dP[i, j] = g_i vsum_j.

// The sum of 8 halves a[0..7], or of their products with b[0..7] when b is given: 16-byte
// loads.
__device__ __forceinline__ float sum8(const T* a, const T* b) {
  const uint4 x = *reinterpret_cast<const uint4*>(a);
  const uint4 y = b ? *reinterpret_cast<const uint4*>(b) : x;
  const unsigned xw[4] = {x.x, x.y, x.z, x.w}, yw[4] = {y.x, y.y, y.z, y.w};
  float sum = 0.f;
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float lo = LOAD((T)(xw[i] & 0xffffu)), hi = LOAD((T)(xw[i] >> 16));
    sum += b ? lo * LOAD((T)(yw[i] & 0xffffu)) + hi * LOAD((T)(yw[i] >> 16)) : lo + hi;
  }
  return sum;
}

// TERM_LANES lanes (a power of two, 8 halves each) per row. Query row i of (batch * heads *
// sq): terms[i] = {lse_i log2(e) (+inf for a row that saw no key, so that its P is 0),
// delta_i, g_i (DOUT_ROWS), 0}, where delta_i = rowsum(dO_i * out_i) - dlse_i. DOUT_ROWS
// adds the key rows of V (batch * heads * sk): vsum[bh][j] = rowsum(V[bh][j]), rows of
// sk_padded (a multiple of 4, so that a tile's sums are whole 16-byte pieces; the caller
// zeroes the padding).
extern "C" __global__ void flamefx_mma_backward_terms(
    const T* __restrict__ out, const T* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ dlse, float4* __restrict__ terms, const T* __restrict__ v,
    float* __restrict__ vsum, long long query_rows, long long key_rows, int sk,
    int sk_padded) {
  const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / TERM_LANES;
  const int part = threadIdx.x % TERM_LANES;
  const bool is_query = row < query_rows;
  if (!is_query && (!DOUT_ROWS || row >= query_rows + key_rows)) return;
  const T* const values = is_query ? out + row * DV : v + (row - query_rows) * DV;
  const T* const weights = DOUT_ROWS || !is_query ? nullptr : dout + row * DV + part * 8;
  float sum = part * 8 < DV ? sum8(values + part * 8, weights) : 0.f;
  for (int off = TERM_LANES / 2; off > 0; off >>= 1)
    sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (part != 0) return;
  if (!is_query) {
    const long long key = row - query_rows;
    vsum[key / sk * sk_padded + key % sk] = sum;
    return;
  }
  const float g = DOUT_ROWS ? LOAD(dout[row]) : 0.f, row_lse = lse[row];
  terms[row] = float4{row_lse == -INFINITY ? INFINITY : row_lse * LOG2E,
                      (DOUT_ROWS ? g * sum : sum) - dlse[row], g, 0.f};
}

// Starts copying N float4 (16-byte) entries, zeros past `valid`.
template <int N>
__device__ __forceinline__ void load_terms_async(float4* dst, const float4* src, int valid) {
  for (int i = threadIdx.x; i < N; i += blockDim.x)
    copy_16_async(dst + i, i < valid ? src + i : src, i < valid);
}

#if !DOUT_ROWS
#define DQ_COLS (D * 4 / BWD_WARPS)  // dQ columns per warp: 4 warps of 16 rows cover a tile
// Two adjacent float32 accumulations into global memory (one vector reduction on sm_90).
__device__ __forceinline__ void add_pair(float* at, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(at), "f"(a), "f"(b) : "memory");
#else
  atomicAdd(at, a);
  atomicAdd(at + 1, b);
#endif
}

// dq = T(dq_acc): the float32 accumulation of every key block's share.
extern "C" __global__ void flamefx_mma_attention_dq_convert(
    const float* __restrict__ dq_acc, T* __restrict__ dq, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    dq[i] = STORE(dq_acc[i]);
}
#endif

// grid (BWD_KEYS keys, batch * heads), BWD_WARPS warps of 16 keys (their V fragments in
// registers, K fragments read from shared memory each tile); the query tiles stream through
// shared memory. dK, dV written in T.
// Without DOUT_ROWS, dQ * scale is added into dq_acc (float32, zeroed by the caller): dSᵀ
// goes through shared memory and the warps split the tile's dS K (16 rows by DQ_COLS each).
// With DOUT_ROWS, flamefx_mma_attention_backward_q computes dQ instead, and two blocks fit
// an SM in 128 registers a thread without spilling.
extern "C" __global__ void __launch_bounds__(32 * BWD_WARPS, DOUT_ROWS ? 2 : 1)
flamefx_mma_attention_backward_kv(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dout, const float4* __restrict__ terms,
    const float* __restrict__ vsum, T* __restrict__ dk, T* __restrict__ dv,
    float* __restrict__ dq_acc, int sq, int sk, int sk_padded, float scale, float scale_log2) {
  extern __shared__ __align__(16) unsigned char smem[];
  // STAGES buffers of QDO_HALVES: queries [ROWS][D + PAD], output cotangents [ROWS][DV +
  // PAD] (not with DOUT_ROWS); STAGES of the query rows' terms [ROWS]; the block's keys
  // [BWD_KEYS][D + PAD]; without DOUT_ROWS then dSᵀ [BWD_KEYS][ROWS + PAD].
  T* qdo = reinterpret_cast<T*>(smem);
  float4* tile_terms = reinterpret_cast<float4*>(qdo + STAGES * QDO_HALVES);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const long long bh = blockIdx.y;
  const int k0 = blockIdx.x * BWD_KEYS, kw = k0 + warp * 16;  // the block's, warp's keys
  q += bh * sq * D;
  dout += bh * sq * (DOUT_ROWS ? 1 : DV);
  terms += bh * sq;
  k += bh * sk * D;
  v += bh * sk * DV;
  // The block's keys [BWD_KEYS][D + PAD] in shared memory: a warp reads its K fragments there
  // for each tile, which keeps them out of the registers the tile's other work needs.
  T* ks = reinterpret_cast<T*>(tile_terms + STAGES * ROWS);
  load_rows_async<D, BWD_KEYS>(ks, k + (long long)k0 * D, sk - k0);
  float dk_acc[D / 8][4];
  #pragma unroll
  for (int n = 0; n < D / 8; ++n) dk_acc[n][0] = dk_acc[n][1] = dk_acc[n][2] = dk_acc[n][3] = 0.f;
#if DOUT_ROWS
  // This lane's keys kw + g and kw + g + 8: the row sums of V, and dV's running sums.
  float vs[2], dv_rows[2] = {0.f, 0.f};
  #pragma unroll
  for (int r = 0; r < 2; ++r)
    vs[r] = kw + g + r * 8 < sk ? vsum[bh * sk_padded + kw + g + r * 8] : 0.f;
#else
  T* dss = ks + BWD_KEYS * (D + PAD);
  dq_acc += bh * sq * D;
  unsigned va[DV / 16][4];
  #pragma unroll
  for (int kk = 0; kk < DV / 16; ++kk) load_a(va[kk], v, DV, kw, kk * 16, sk);
  float dv_acc[DV / 8][4];
  #pragma unroll
  for (int n = 0; n < DV / 8; ++n) dv_acc[n][0] = dv_acc[n][1] = dv_acc[n][2] = dv_acc[n][3] = 0.f;
#endif
  // Causal: query tiles before this key block see none of it.
  const int q_first = CAUSAL ? k0 : 0, tiles = (sq - q_first + ROWS - 1) / ROWS;
  // Starts loading query tile `tile` (queries, output cotangents, terms) into its buffer.
  auto load_query_tile = [&](int tile) {
    const int q0 = q_first + tile * ROWS, buffer = tile % STAGES;
    T* const tile_qs = qdo + buffer * QDO_HALVES;
    load_rows_async<D>(tile_qs, q + (long long)q0 * D, sq - q0);
#if !DOUT_ROWS
    load_rows_async<DV>(tile_qs + ROWS * (D + PAD), dout + (long long)q0 * DV, sq - q0);
#endif
    load_terms_async<ROWS>(tile_terms + buffer * ROWS, terms + q0, sq - q0);
  };
  // Tile i + 1 streams in while the warps work on tile i.
  if (tiles > 0) load_query_tile(0);
  cp_async_commit();
  for (int tile = 0; tile < tiles; ++tile) {
    const int q0 = q_first + tile * ROWS;
    next_tile(tile, tiles, load_query_tile);
    const T* const qs = qdo + (tile % STAGES) * QDO_HALVES;
    const float4* const row_terms = tile_terms + (tile % STAGES) * ROWS;
    // Pᵀ (16 keys x 64 queries) = exp2(K Qᵀ scale log2e - lse log2e)
    unsigned ka[D / 16][4];
    #pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_a_shared(ka[kk], ks, D + PAD, warp * 16, kk * 16);
    float pt[ROWS / 8][4];
    tile_scores<D>(pt, ka, qs);
    const bool edge = kw + 16 > sk || q0 + ROWS > sq || (CAUSAL && q0 < kw + 15);
    float dst[ROWS / 8][4];
#if !DOUT_ROWS
    // dPᵀ = V dOᵀ
    const T* const dos = qs + ROWS * (D + PAD);
    tile_scores<DV>(dst, va, dos);
#endif
    // Pᵀ, then dSᵀ = Pᵀ (dPᵀ - delta); with DOUT_ROWS dPᵀ = vsum g and dV[key, :] += Pᵀ g.
    // Masked: keys past the end, queries past the end, queries before the key when causal;
    // only edge tiles pay for the tests.
    auto probabilities = [&](auto masked) {
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kw + g + (e >> 1) * 8, qr = n * 8 + t * 2 + (e & 1);
          const float4 terms_q = row_terms[qr];
          float p = fast_exp2(pt[n][e] * scale_log2 - terms_q.x);
          if (decltype(masked)::value
              && (key >= sk || q0 + qr >= sq || (CAUSAL && q0 + qr < key)))
            p = 0.f;
          pt[n][e] = p;
#if DOUT_ROWS
          dv_rows[e >> 1] += p * terms_q.z;
          dst[n][e] = p * (vs[e >> 1] * terms_q.z - terms_q.y);
#else
          dst[n][e] = p * (dst[n][e] - terms_q.y);
#endif
        }
    };
    if (edge)
      probabilities(Flag<true>());
    else
      probabilities(Flag<false>());
#if !DOUT_ROWS
    // dV += Pᵀ dO
    tile_product<DV>(dv_acc, pt, dos);
#endif
    // dK += dSᵀ Q (scaled at the end)
    tile_product<D>(dk_acc, dst, qs);
#if !DOUT_ROWS
    #pragma unroll
    for (int n = 0; n < ROWS / 8; ++n)
      #pragma unroll
      for (int r = 0; r < 2; ++r)
        *reinterpret_cast<unsigned*>(dss + (warp * 16 + g + r * 8) * (ROWS + PAD) + n * 8 + t * 2)
            = pack2(dst[n][2 * r], dst[n][2 * r + 1]);
    __syncthreads();  // dSᵀ is whole
    // dQ += dS K * scale over this block's keys: warp w takes query rows 16 (w % 4) .. + 15
    // and DQ_COLS columns from DQ_COLS (w / 4).
    const int qw = q0 + (warp & 3) * 16, c0 = (warp >> 2) * DQ_COLS;
    if (qw >= sq) continue;
    float dq[DQ_COLS / 8][4];
    #pragma unroll
    for (int n = 0; n < DQ_COLS / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
    #pragma unroll
    for (int kk = 0; kk < BWD_KEYS / 16; ++kk) {
      unsigned dsa[4];
      load_a_transposed(dsa, dss, ROWS + PAD, (warp & 3) * 16, kk * 16);
      #pragma unroll
      for (int n = 0; n < DQ_COLS / 8; n += 2)
        mma_b(dq[n], dq[n + 1], dsa, ks, D + PAD, c0 + n * 8, kk * 16);
    }
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = qw + g + r * 8;
      if (row >= sq) continue;
      #pragma unroll
      for (int n = 0; n < DQ_COLS / 8; ++n)
        add_pair(dq_acc + (long long)row * D + c0 + n * 8 + t * 2, dq[n][2 * r] * scale,
                 dq[n][2 * r + 1] * scale);
    }
#endif
  }
#if DOUT_ROWS
  #pragma unroll
  for (int r = 0; r < 2; ++r) {  // the four lanes of a key row summed different queries
    dv_rows[r] += __shfl_xor_sync(0xffffffffu, dv_rows[r], 1);
    dv_rows[r] += __shfl_xor_sync(0xffffffffu, dv_rows[r], 2);
  }
#endif
  #pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = kw + g + r * 8;
    if (key >= sk) continue;
    const long long at = bh * sk + key;
    #pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<unsigned*>(dk + at * D + n * 8 + t * 2) =
          pack2(dk_acc[n][2 * r] * scale, dk_acc[n][2 * r + 1] * scale);
#if DOUT_ROWS
    // The four lanes of the row hold the same value: each writes a quarter of the row in
    // 8-byte pieces (2-byte stores, 32 a lane, stalled the memory pipe's queue).
    const unsigned word = pack2(dv_rows[r], dv_rows[r]);
    #pragma unroll
    for (int c = t * (DV / 4); c < (t + 1) * (DV / 4); c += 4)
      *reinterpret_cast<uint2*>(dv + at * DV + c) = uint2{word, word};
#else
    #pragma unroll
    for (int n = 0; n < DV / 8; ++n)
      *reinterpret_cast<unsigned*>(dv + at * DV + n * 8 + t * 2) =
          pack2(dv_acc[n][2 * r], dv_acc[n][2 * r + 1]);
#endif
  }
}

#if DOUT_ROWS
#define DQ_ROWS (16 * FWD_WARPS)  // query rows of a dQ block (the forward's block shape)
#define KTILE_HALVES (ROWS * (D + PAD))
// grid (DQ_ROWS query rows, batch * heads), FWD_WARPS warps of 16 query rows whose Q
// fragments stay in registers; the key tiles stream through shared memory as in the
// forward. dQ = scale dS K written in T, with dS = P (g vsum - delta) recomputed: no block
// shares a dQ row, so no atomics. (With a full dO, recomputing dP = dO Vᵀ as well made the
// backward slower than the atomics: W3's shape 0.33 against 0.29 ms.)
extern "C" __global__ void __launch_bounds__(32 * FWD_WARPS) flamefx_mma_attention_backward_q(
    const T* __restrict__ q, const T* __restrict__ k, const float4* __restrict__ terms,
    const float* __restrict__ vsum, T* __restrict__ dq, int sq, int sk, int sk_padded,
    float scale, float scale_log2) {
  extern __shared__ __align__(16) unsigned char smem[];
  // STAGES buffers of a key tile [ROWS][D + PAD], then STAGES of its keys' vsum [ROWS].
  T* ks = reinterpret_cast<T*>(smem);
  float* tile_vsum = reinterpret_cast<float*>(ks + STAGES * KTILE_HALVES);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const long long bh = blockIdx.y;
  const int block_q0 = blockIdx.x * DQ_ROWS, q0 = block_q0 + warp * 16;
  q += bh * sq * D;
  terms += bh * sq;
  k += bh * sk * D;
  vsum += bh * sk_padded;
  unsigned qa[D / 16][4];
  #pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a(qa[kk], q, D, q0, kk * 16, sq);
  float4 row_terms[2];  // this lane's rows q0 + g and q0 + g + 8
  #pragma unroll
  for (int r = 0; r < 2; ++r)
    row_terms[r] = q0 + g + r * 8 < sq ? terms[q0 + g + r * 8] : float4{INFINITY, 0.f, 0.f, 0.f};
  float dq_acc[D / 8][4];
  #pragma unroll
  for (int n = 0; n < D / 8; ++n) dq_acc[n][0] = dq_acc[n][1] = dq_acc[n][2] = dq_acc[n][3] = 0.f;
  // Starts loading key tile `tile` and its vsum into its buffer.
  auto load_key_tile = [&](int tile) {
    const int k0 = tile * ROWS, buffer = tile % STAGES;
    load_rows_async<D>(ks + buffer * KTILE_HALVES, k + (long long)k0 * D, sk - k0);
    load_terms_async<ROWS / 4>(reinterpret_cast<float4*>(tile_vsum + buffer * ROWS),
                               reinterpret_cast<const float4*>(vsum + k0), (sk - k0 + 3) / 4);
  };
  const int k_end = CAUSAL ? min(sk, block_q0 + DQ_ROWS) : sk;
  const int tiles = (k_end + ROWS - 1) / ROWS;
  if (tiles > 0) load_key_tile(0);
  cp_async_commit();
  for (int tile = 0; tile < tiles; ++tile) {
    const int k0 = tile * ROWS;
    next_tile(tile, tiles, load_key_tile);
    const T* const tile_ks = ks + (tile % STAGES) * KTILE_HALVES;
    const float* const vsum_keys = tile_vsum + (tile % STAGES) * ROWS;
    if (!CAUSAL || k0 <= q0 + 15) {  // else this warp's rows see none of these keys
      float s[ROWS / 8][4];
      tile_scores<D>(s, qa, tile_ks);
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e)
          s[n][e] = fast_exp2(s[n][e] * scale_log2 - row_terms[e >> 1].x);
      if (k0 + ROWS > sk || (CAUSAL && k0 + ROWS - 1 > q0))  // keys past the end or the row
        #pragma unroll
        for (int n = 0; n < ROWS / 8; ++n)
          #pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = q0 + g + (e >> 1) * 8, key = k0 + n * 8 + t * 2 + (e & 1);
            if (key >= sk || (CAUSAL && key > row)) s[n][e] = 0.f;
          }
      // dS = P (g vsum - delta)
      #pragma unroll
      for (int n = 0; n < ROWS / 8; ++n)
        #pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float4& rt = row_terms[e >> 1];
          s[n][e] *= vsum_keys[n * 8 + t * 2 + (e & 1)] * rt.z - rt.y;
        }
      // dQ += dS K
      tile_product<D>(dq_acc, s, tile_ks);
    }
  }
  #pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = q0 + g + r * 8;
    if (row >= sq) continue;
    #pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<unsigned*>(dq + (bh * sq + row) * D + n * 8 + t * 2) =
          pack2(dq_acc[n][2 * r] * scale, dq_acc[n][2 * r + 1] * scale);
  }
}
#endif
"""

def supports_shapes(dtype, q_shape, v_shape, bias) -> bool:
    """Whether these kernels take attention of this dtype and these (batch, heads, seq, dim)
    shapes: half dtypes, no bias, head dims that are multiples of 16 up to 128."""
    return (np.dtype(dtype).name in _HALF_DTYPES and bias is None
            and all(dim % 16 == 0 and 16 <= dim <= 128 for dim in (q_shape[3], v_shape[3]))
            and q_shape[0] * q_shape[1] <= 65535)  # batch * heads is grid dimension y


def supports(q, k, v, bias) -> bool:
    """Whether ``attention_forward`` / ``attention_backward`` take these CuPy operands."""
    return q.dtype == k.dtype == v.dtype and supports_shapes(q.dtype, q.shape, v.shape, bias)


def kernel_source(dtype, d: int, dv: int, is_causal: bool, forward_warps: int = 4,
                  backward_warps: int = 4, dout_rows: bool = False) -> str:
    """The CUDA source of the forward and the three backward kernels (row terms, dK and dV,
    dQ); with ``dout_rows`` the backward takes one output cotangent per query row."""
    defines = (f"#define D {d}\n#define DV {dv}\n#define CAUSAL {int(is_causal)}\n"
               f"#define DOUT_ROWS {int(dout_rows)}\n"
               f"#define FWD_WARPS {forward_warps}\n#define BWD_WARPS {backward_warps}\n"
               f"#define IS_BF16 {int(np.dtype(dtype).name == 'bfloat16')}\n"
               f"#define TERM_LANES {_term_lanes(dv)}\n#define STAGES {_STAGES}\n"
               "#ifndef INFINITY\n#define INFINITY __int_as_float(0x7f800000)\n#endif\n")
    return (scalar_prelude(dtype) + defines + DEVICE_HELPERS + _COMMON + _FORWARD
            + _BACKWARD)


def _term_lanes(dv: int) -> int:
    """Lanes per row of flamefx_mma_backward_terms: 8 halves each, rounded up to a power of
    two so that a row's lanes reduce by xor shuffles."""
    return 1 << (dv // 8 - 1).bit_length()


def forward_shared_bytes(d: int, dv: int) -> int:
    """STAGES buffers of a key and a value tile."""
    return _STAGES * 2 * _ROWS * (d + _PAD + dv + _PAD)


def backward_warps(d: int, dout_rows: bool) -> int:
    """Warps per dK, dV block. With a full dO each warp's share of a dQ tile (d * 4 / warps
    columns) must be whole pairs of 8-column mma tiles."""
    return _BACKWARD_WARPS if dout_rows or (d * 4 // _BACKWARD_WARPS) % 16 == 0 else 4


def backward_kv_shared_bytes(d: int, dv: int, dout_rows: bool, warps: int) -> int:
    """STAGES buffers of a query and an output-cotangent tile and of its rows' terms, the
    block's keys, and with a full dO dSᵀ."""
    halves = (_STAGES * _ROWS * (d + _PAD + (0 if dout_rows else dv + _PAD))
              + 16 * warps * (d + _PAD))
    if not dout_rows:
        halves += 16 * warps * (_ROWS + _PAD)
    return 2 * halves + _STAGES * 16 * _ROWS


def backward_q_shared_bytes(d: int) -> int:
    """STAGES buffers of a key tile and of its keys' value sums (``dout_rows`` only)."""
    return _STAGES * 2 * _ROWS * (d + _PAD) + _STAGES * 4 * _ROWS


@functools.cache
def _module(dtype_name: str, d: int, dv: int, is_causal: bool, forward_warps: int,
            backward_warps: int, dout_rows: bool = False):
    source = kernel_source(np.dtype(dtype_name), d, dv, is_causal, forward_warps,
                           backward_warps, dout_rows)
    return devices.cupy().RawModule(code=source, options=("--std=c++17",))


def _kernel(module, name: str, nbytes: int):
    fn = module.get_function(name)
    set_dynamic_shared_memory(fn, nbytes)
    return fn


def _aligned(x):
    """``x`` C-contiguous and 16-byte aligned (the tile loads read 16 bytes at a time)."""
    cp = devices.cupy()
    if x.flags.c_contiguous and x.data.ptr % 16 == 0:
        return x
    return cp.array(raw_view(x), order="C").view(x.dtype)


def attention_forward(q, k, v, bias, *, is_causal, scale):
    """``[out, lse]`` of softmax(q kᵀ * scale) v on CuPy arrays (B, H, S, D) of float16 or
    bfloat16 (``supports`` must hold; ``bias`` is None)."""
    cp = devices.cupy()
    q, k, v = (_aligned(a) for a in (q, k, v))
    b, h, sq, d = q.shape
    sk, dv = k.shape[2], v.shape[3]
    out = empty((b, h, sq, dv), q.dtype)
    lse = cp.empty((b, h, sq), np.float32)
    if out.size == 0:
        return [out, lse]
    nbytes = forward_shared_bytes(d, dv)
    module = _module(q.dtype.name, d, dv, bool(is_causal), _FORWARD_WARPS,
                     backward_warps(d, False))
    fn = _kernel(module, "flamefx_mma_attention_forward", nbytes)
    fn((math.ceil(sq / (16 * _FORWARD_WARPS)), b * h), (32 * _FORWARD_WARPS,),
       (raw_view(q), raw_view(k), raw_view(v), raw_view(out), lse, np.int32(sq),
        np.int32(sk), np.float32(scale * _LOG2E)), shared_mem=nbytes)
    return [out, lse]


def attention_backward(q, k, v, bias, out, lse, dout, dlse, *, is_causal, scale):
    """``[dq, dk, dv]`` from the forward's ``out`` and ``lse`` and the cotangents ``dout``,
    ``dlse`` (``supports`` must hold; ``bias`` is None). A ``dout`` of shape (B, H, S, 1)
    is one cotangent per query row (the same for every value dim)."""
    cp = devices.cupy()
    q, k, v, out, dout = (_aligned(a) for a in (q, k, v, out, dout))
    lse = cp.ascontiguousarray(lse, np.float32)
    dlse = cp.ascontiguousarray(dlse, np.float32)
    b, h, sq, d = q.shape
    sk, dv = k.shape[2], v.shape[3]
    dq, dk, dv_grad, _ = gradient_buffers(q, k, v, None, np.float32)
    if q.size == 0 or k.size == 0:
        return [dq, dk, dv_grad]
    rows = dout.shape[-1] != dv
    warps = backward_warps(d, rows)
    module = _module(q.dtype.name, d, dv, bool(is_causal), _FORWARD_WARPS, warps, rows)
    query_rows, sk_padded = b * h * sq, -(-sk // 4) * 4
    key_rows = b * h * sk if rows else 0
    terms = cp.empty((query_rows, 4), np.float32)
    vsum = (zeros if sk_padded != sk else empty)((b * h, sk_padded if rows else 1), np.float32)
    module.get_function("flamefx_mma_backward_terms")(
        (math.ceil((query_rows + key_rows) * _term_lanes(dv) / 256),), (256,),
        (raw_view(out), raw_view(dout), lse, dlse, terms, raw_view(v), vsum,
         np.int64(query_rows), np.int64(key_rows), np.int32(sk), np.int32(sk_padded)))
    sizes = (np.int32(sq), np.int32(sk), np.int32(sk_padded), np.float32(scale),
             np.float32(scale * _LOG2E))
    # The row variant's dQ comes from flamefx_mma_attention_backward_q: dq_acc is a
    # placeholder it never reads.
    dq_acc = vsum if rows else cp.zeros(q.shape, np.float32)
    nbytes = backward_kv_shared_bytes(d, dv, rows, warps)
    _kernel(module, "flamefx_mma_attention_backward_kv", nbytes)(
        (math.ceil(sk / (16 * warps)), b * h), (32 * warps,),
        (raw_view(q), raw_view(k), raw_view(v), raw_view(dout), terms, vsum, raw_view(dk),
         raw_view(dv_grad), dq_acc) + sizes, shared_mem=nbytes)
    if rows:
        nbytes = backward_q_shared_bytes(d)
        _kernel(module, "flamefx_mma_attention_backward_q", nbytes)(
            (math.ceil(sq / (16 * _FORWARD_WARPS)), b * h), (32 * _FORWARD_WARPS,),
            (raw_view(q), raw_view(k), terms, vsum, raw_view(dq)) + sizes, shared_mem=nbytes)
    else:
        n = dq_acc.size
        module.get_function("flamefx_mma_attention_dq_convert")(
            (min(math.ceil(n / 256), 65535),), (256,), (dq_acc, raw_view(dq), np.int64(n)))
    return [dq, dk, dv_grad]
