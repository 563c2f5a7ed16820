"""Tensor-core building blocks for hand-written CUDA kernels in float16 and bfloat16.

``DEVICE_HELPERS`` is CUDA source for a kernel module that defines ``T`` (the half type's
16-bit word, as cuda_scalar.scalar_prelude does) and ``IS_BF16``: the warp-level product
``mma.sync.aligned.m16n8k16`` with float32 accumulation, A and B fragment loads from
global and shared memory (``ldmatrix``, plain or transposed), float pairs packed into half
pairs, 2^x by ``ex2.approx``, and ``cp.async`` copies from global to shared memory. With
``FLAMEFX_EMULATED_MMA`` defined, every inline-PTX piece gives way to the emulation in
tests/kernel_emulator/cuda_on_cpu.h, so kernels built on these run on the CPU in CI.

Fragment layouts (g = lane / 4, t = lane % 4; a register holds two halves, the lower
column or row in its low 16 bits):
  A (16 x 16): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9],
               a3 = A[g+8][2t+8, 2t+9]
  B (16 x 8):  b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
  D (16 x 8, float): d0, d1 = D[g][2t, 2t+1]; d2, d3 = D[g+8][2t, 2t+1]
so an accumulator pair is an A register of the next product (``accumulators_as_a``).

Used by cuda_attention_mma (flash attention).
"""

DEVICE_HELPERS = r"""
// d += a b for one warp: a is 16 x 16 (row-major fragments), b 16 x 8 (column fragments),
// d 16 x 8 in float32 (fragment layouts: the docstring of flamefx/kernels/cuda_mma.py).
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4],
                                             unsigned b0, unsigned b1) {
#if defined(FLAMEFX_EMULATED_MMA)
  emulated_mma_m16n8k16(d, a, b0, b1, IS_BF16);
#elif IS_BF16
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// A compile-time flag for generic lambdas (`if (decltype(flag)::value)`).
template <bool B>
struct Flag {
  static constexpr bool value = B;
};

// 2^x by the special-function unit (denormal results flush to zero; x = -inf gives 0).
__device__ __forceinline__ float fast_exp2(float x) {
#if defined(FLAMEFX_EMULATED_MMA)
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// Two floats rounded to T and packed into one register, `lo` in the low half.
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
#if defined(FLAMEFX_EMULATED_MMA)
  return (unsigned)STORE(lo) | ((unsigned)STORE(hi) << 16);
#elif IS_BF16
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

__device__ __forceinline__ unsigned word_at(const T* p) {
  return *reinterpret_cast<const unsigned*>(p);
}

// A fragments (16 rows x 16 columns from column c0) of a row-major matrix with row stride
// `ld`, rows at or past `valid` read as zero.
__device__ __forceinline__ void load_a(unsigned (&a)[4], const T* m, long long ld, int r0,
                                       int c0, int valid) {
  const int g = (threadIdx.x & 31) >> 2, c = c0 + (threadIdx.x & 3) * 2;
  a[0] = r0 + g < valid ? word_at(m + (r0 + g) * ld + c) : 0u;
  a[1] = r0 + g + 8 < valid ? word_at(m + (r0 + g + 8) * ld + c) : 0u;
  a[2] = r0 + g < valid ? word_at(m + (r0 + g) * ld + c + 8) : 0u;
  a[3] = r0 + g + 8 < valid ? word_at(m + (r0 + g + 8) * ld + c + 8) : 0u;
}

// Four 8 x 8 matrices of halves from shared memory in one instruction: lane l gives the
// address of row l % 8 of matrix l / 8, and register i receives matrix i in the mma fragment
// layout (row l / 4, columns 2 (l % 4) and + 1), or with TRANS the matrix transposed.
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const T* row) {
#if defined(FLAMEFX_EMULATED_MMA)
  emulated_ldmatrix_x4(r, row, TRANS);
#else
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address) : "memory");
#endif
}

// d0, d1 += a B for B's columns n0 .. n0 + 15 (two 8-column tiles) at rows k0 .. k0 + 15,
// B stored transposed in shared memory: bt[n][k], row stride `ld` (Q Kᵀ reads K this way).
__device__ __forceinline__ void mma_b_transposed(float (&d0)[4], float (&d1)[4],
                                                 const unsigned (&a)[4], const T* bt, int ld,
                                                 int n0, int k0) {
  const int i = (threadIdx.x & 31) >> 3, r = threadIdx.x & 7;
  unsigned b[4];
  ldmatrix_x4<false>(b, bt + (n0 + (i >> 1) * 8 + r) * ld + k0 + (i & 1) * 8);
  mma_m16n8k16(d0, a, b[0], b[1]);
  mma_m16n8k16(d1, a, b[2], b[3]);
}

// The same with B stored as is, b[k][n] (P V reads V this way): transposed loads.
__device__ __forceinline__ void mma_b(float (&d0)[4], float (&d1)[4], const unsigned (&a)[4],
                                      const T* b, int ld, int n0, int k0) {
  const int i = (threadIdx.x & 31) >> 3, r = threadIdx.x & 7;
  unsigned f[4];
  ldmatrix_x4<true>(f, b + (k0 + (i & 1) * 8 + r) * ld + n0 + (i >> 1) * 8);
  mma_m16n8k16(d0, a, f[0], f[1]);
  mma_m16n8k16(d1, a, f[2], f[3]);
}

// A fragments (rows m0 .. m0 + 15, columns k0 .. k0 + 15) of a row-major matrix in shared
// memory with row stride `ld`.
__device__ __forceinline__ void load_a_shared(unsigned (&a)[4], const T* m, int ld, int m0,
                                              int k0) {
  const int i = (threadIdx.x & 31) >> 3, r = threadIdx.x & 7;
  ldmatrix_x4<false>(a, m + (m0 + (i & 1) * 8 + r) * ld + k0 + (i >> 1) * 8);
}

// A fragments (rows m0 .. m0 + 15, columns k0 .. k0 + 15) of a matrix stored transposed in
// shared memory, at[k][m] with row stride `ld`.
__device__ __forceinline__ void load_a_transposed(unsigned (&a)[4], const T* at, int ld,
                                                  int m0, int k0) {
  const int i = (threadIdx.x & 31) >> 3, r = threadIdx.x & 7;
  ldmatrix_x4<true>(a, at + (k0 + (i >> 1) * 8 + r) * ld + m0 + (i & 1) * 8);
}

// 16 bytes from global to shared memory without a round trip through registers (cp.async;
// zeros when !valid), complete after the cp_async_wait that follows its commit.
__device__ __forceinline__ void copy_16_async(void* dst, const void* src, bool valid) {
#if defined(FLAMEFX_EMULATED_MMA)
  uint4 piece = {0u, 0u, 0u, 0u};
  if (valid) piece = *reinterpret_cast<const uint4*>(src);
  *reinterpret_cast<uint4*>(dst) = piece;
#else
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(address), "l"(src), "r"(valid ? 16 : 0) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if !defined(FLAMEFX_EMULATED_MMA)
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most `PENDING` committed groups of this thread are still in flight.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if !defined(FLAMEFX_EMULATED_MMA)
  asm volatile("cp.async.wait_group %0;" :: "n"(PENDING) : "memory");
#endif
}

// A fragments for the next product straight from an accumulator tile s[n][4] (16 x 8 per
// n): columns 16 kk .. 16 kk + 15 are accumulator tiles 2 kk and 2 kk + 1.
__device__ __forceinline__ void accumulators_as_a(unsigned (&a)[4], const float (&s0)[4],
                                                  const float (&s1)[4]) {
  a[0] = pack2(s0[0], s0[1]);
  a[1] = pack2(s0[2], s0[3]);
  a[2] = pack2(s1[0], s1[1]);
  a[3] = pack2(s1[2], s1[3]);
}
"""
