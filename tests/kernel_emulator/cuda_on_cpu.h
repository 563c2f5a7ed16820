// Runs flamefx's hand-written CUDA kernels on the CPU, so that CI without a GPU checks their
// indexing, tiling, masking and reductions against the NumPy implementations.
//
// One std::thread per CUDA thread; a block-wide std::barrier for __syncthreads; a barrier
// per warp for __shfl_xor_sync (which exchanges through a buffer); a thread that returns
// early drops out of both barriers, as an exited thread does on the GPU. Blocks run one
// after another; dynamic shared memory is one static buffer. The half-type conversions
// (PTX on the GPU), the m16n8k16 tensor-core product and ldmatrix (emulated_mma_m16n8k16,
// emulated_ldmatrix_x4, which a kernel calls instead of its inline PTX when
// FLAMEFX_EMULATED_MMA is defined) are emulated here too.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

using std::max;
using std::min;

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
thread_local Dim3 threadIdx, blockIdx;
Dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
alignas(16) unsigned char smem[512 * 1024];

std::barrier<>* block_barrier;
std::barrier<>* warp_barrier[32];
double shuffle_slots[1024];

#define __syncthreads() block_barrier->arrive_and_wait()

template <class V>
V __shfl_xor_sync(unsigned, V v, int offset) {
  const int t = threadIdx.x;
  shuffle_slots[t] = (double)v;
  warp_barrier[t / 32]->arrive_and_wait();
  const V out = (V)shuffle_slots[(t & ~31) | ((t & 31) ^ offset)];
  warp_barrier[t / 32]->arrive_and_wait();
  return out;
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
// A double's words (the vectorized stores of float64 outputs).
inline int __double2loint(double d) { long long i; std::memcpy(&i, &d, 8); return (int)i; }
inline int __double2hiint(double d) { long long i; std::memcpy(&i, &d, 8); return (int)(i >> 32); }
// Round-to-nearest intrinsics (flamefx_erf_inv spells out every rounding with them).
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float exp2f(float x) { return std::exp2(x); }
inline float log2f(float x) { return std::log2(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float atomicAdd(float* address, float value) {
  return std::atomic_ref<float>(*address).fetch_add(value);
}
using std::exp2;
using std::fmax;
using std::log2;

// The half types' raw 16-bit words, as cuda_scalar.HALF_CONVERSIONS converts them on the GPU.
inline float flamefx_f16_load(unsigned short h) {
  _Float16 f;
  std::memcpy(&f, &h, 2);
  return (float)f;
}
inline unsigned short flamefx_f16_store(float f) {
  const _Float16 h = (_Float16)f;  // round to nearest even, as cvt.rn.f16.f32
  unsigned short u;
  std::memcpy(&u, &h, 2);
  return u;
}
inline float flamefx_bf16_load(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
inline unsigned short flamefx_bf16_store(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: d (16 x 8, float) += a (16 x 16) b (16 x 8)
// for the whole warp. Each lane posts its fragments, then computes its own four d entries
// from everyone's, in PTX's fragment layouts (g = lane / 4, t = lane % 4; a register holds
// two halves, the lower column or row in its low 16 bits):
//   a0: A[g][2t, 2t+1]    a1: A[g+8][2t, 2t+1]    a2: A[g][2t+8, 2t+9]    a3: A[g+8][2t+8, 2t+9]
//   b0: B[2t, 2t+1][g]    b1: B[2t+8, 2t+9][g]
//   d0, d1: D[g][2t, 2t+1]                        d2, d3: D[g+8][2t, 2t+1]
unsigned mma_a_slots[1024][4], mma_b_slots[1024][2];

inline void emulated_mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                  unsigned b1, bool bf16) {
  const int t = threadIdx.x, base = t & ~31, lane = t & 31;
  for (int i = 0; i < 4; ++i) mma_a_slots[t][i] = a[i];
  mma_b_slots[t][0] = b0;
  mma_b_slots[t][1] = b1;
  warp_barrier[t / 32]->arrive_and_wait();
  auto half = [bf16](unsigned word, int which) {
    const unsigned short h = (unsigned short)(which ? word >> 16 : word & 0xffffu);
    return bf16 ? flamefx_bf16_load(h) : flamefx_f16_load(h);
  };
  auto a_at = [&](int row, int col) {  // the lane and register holding A[row][col]
    const int owner = base + (row % 8) * 4 + (col % 8) / 2;
    return half(mma_a_slots[owner][(row >= 8) + 2 * (col >= 8)], col & 1);
  };
  auto b_at = [&](int row, int col) {
    const int owner = base + col * 4 + (row % 8) / 2;
    return half(mma_b_slots[owner][row >= 8], row & 1);
  };
  const int g = lane / 4, tc = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i >= 2), col = 2 * tc + (i & 1);
    float sum = d[i];
    for (int kk = 0; kk < 16; ++kk) sum += a_at(row, kk) * b_at(kk, col);
    d[i] = sum;
  }
  warp_barrier[t / 32]->arrive_and_wait();
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane l gives the address of row l % 8 of
// matrix l / 8 (8 halves each); register i of lane l gets matrix i's row l / 4, columns
// 2 (l % 4) and 2 (l % 4) + 1, or with `trans` its column l / 4, rows 2 (l % 4) and
// 2 (l % 4) + 1 (the lower index in the low 16 bits).
const unsigned short* ldmatrix_slots[1024];

inline void emulated_ldmatrix_x4(unsigned (&r)[4], const unsigned short* row, bool trans) {
  const int t = threadIdx.x, base = t & ~31, lane = t & 31;
  ldmatrix_slots[t] = row;
  warp_barrier[t / 32]->arrive_and_wait();
  const int pair = 2 * (lane % 4), other = lane / 4;
  for (int i = 0; i < 4; ++i) {
    const unsigned short* const* rows = ldmatrix_slots + base + 8 * i;
    const unsigned lo = trans ? rows[pair][other] : rows[other][pair];
    const unsigned hi = trans ? rows[pair + 1][other] : rows[other][pair + 1];
    r[i] = lo | (hi << 16);
  }
  warp_barrier[t / 32]->arrive_and_wait();
}

void launch(Dim3 grid, Dim3 block, const std::function<void()>& kernel) {
  gridDim = grid;
  blockDim = block;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> block_bar(block.x);
      block_barrier = &block_bar;
      std::vector<std::unique_ptr<std::barrier<>>> warps;
      for (unsigned w = 0; w * 32 < block.x; ++w) {
        warps.emplace_back(new std::barrier<>(std::min(32u, block.x - 32 * w)));
        warp_barrier[w] = warps.back().get();
      }
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < block.x; ++t)
        threads.emplace_back([&, t] {
          threadIdx.x = t;
          blockIdx.x = bx;
          blockIdx.y = by;
          kernel();
          block_barrier->arrive_and_drop();
          warp_barrier[t / 32]->arrive_and_drop();
        });
      for (auto& thread : threads) thread.join();
    }
}

template <class X>
std::vector<X> read_array(FILE* f, size_t n) {
  std::vector<X> v(n);
  if (fread(v.data(), sizeof(X), n, f) != n) std::abort();
  return v;
}

template <class X>
void write_array(FILE* f, const std::vector<X>& v) {
  fwrite(v.data(), sizeof(X), v.size(), f);
}
