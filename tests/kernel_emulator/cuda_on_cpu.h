// Runs flamefx's hand-written CUDA kernels on the CPU, so that CI without a GPU checks their
// indexing, tiling, masking and reductions against the NumPy implementations.
//
// One std::thread per CUDA thread; a block-wide std::barrier for __syncthreads; a barrier
// per warp for __shfl_xor_sync (which exchanges through a buffer); a thread that returns
// early drops out of both barriers, as an exited thread does on the GPU. Blocks run one
// after another; dynamic shared memory is one static buffer. Float32 and float64 kernels
// only (the half-type conversions are PTX).
#include <algorithm>
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
#define __launch_bounds__(x)

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
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
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float exp2f(float x) { return std::exp2(x); }
inline float log2f(float x) { return std::log2(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
using std::exp2;
using std::fmax;
using std::log2;

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
