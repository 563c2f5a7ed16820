"""Float storage types for hand-written RawKernels (conv, attention, norms).

Each kernel source starts with ``scalar_prelude(dtype)``, which defines ``T`` (the stored
element), ``ACC`` (what the kernel computes in: float for the half types and float32,
double for float64), ``LOAD(x)`` / ``STORE(v)`` and ``NEG_INF``, ``EXP2``, ``LOG2``,
``MAX``. Half types travel as raw 16-bit words converted with PTX ``cvt`` (float16) or bit
shifts (bfloat16), so the kernels need no CUDA headers under NVRTC.

>>> "typedef float ACC;" in scalar_prelude(np.dtype("float16"))
True
"""

from __future__ import annotations

import numpy as np

from flamefx import devices

# The half types' raw 16-bit words to float and back. Every kernel flamefx generates or writes
# by hand includes these (RawKernels through scalar_prelude, CuPy elementwise and reduction
# kernels and jit's fused kernels through cuda_elementwise.PREAMBLE).
HALF_CONVERSIONS = r"""
__device__ __forceinline__ float flamefx_f16_load(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short flamefx_f16_store(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float flamefx_bf16_load(unsigned short b) {
  return __uint_as_float(((unsigned int)b) << 16);
}
__device__ __forceinline__ unsigned short flamefx_bf16_store(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return (unsigned short)(u >> 16);
}
"""

_FLOAT_MATH = """
#define NEG_INF (-__int_as_float(0x7f800000))
#define EXP2(x) exp2f(x)
#define LOG2(x) log2f(x)
#define MAX(a, b) fmaxf(a, b)
#define RSQRT(x) rsqrtf(x)
// Four consecutive ACCs from 16-byte-aligned shared memory in one vector load.
#define LOAD_ACC4(dst, src) do { const float4 v4_ = *reinterpret_cast<const float4*>(src); \
  (dst)[0] = v4_.x; (dst)[1] = v4_.y; (dst)[2] = v4_.z; (dst)[3] = v4_.w; } while (0)
"""

_DOUBLE_MATH = """
#define NEG_INF ((double)(-__int_as_float(0x7f800000)))
#define EXP2(x) exp2(x)
#define LOG2(x) log2(x)
#define MAX(a, b) fmax(a, b)
#define RSQRT(x) rsqrt(x)
#define LOAD_ACC4(dst, src) do { const double2 a2_ = *reinterpret_cast<const double2*>(src); \
  const double2 b2_ = *reinterpret_cast<const double2*>((src) + 2); \
  (dst)[0] = a2_.x; (dst)[1] = a2_.y; (dst)[2] = b2_.x; (dst)[3] = b2_.y; } while (0)
"""

_PRELUDES = {
    "float32": "typedef float T;\ntypedef float ACC;\n#define LOAD(x) (x)\n#define STORE(v) (v)\n"
               + _FLOAT_MATH,
    "float64": "typedef double T;\ntypedef double ACC;\n#define LOAD(x) (x)\n"
               "#define STORE(v) (v)\n" + _DOUBLE_MATH,
    "float16": "typedef unsigned short T;\ntypedef float ACC;\n"
               "#define LOAD(x) flamefx_f16_load(x)\n#define STORE(v) flamefx_f16_store(v)\n"
               + _FLOAT_MATH,
    "bfloat16": "typedef unsigned short T;\ntypedef float ACC;\n"
                "#define LOAD(x) flamefx_bf16_load(x)\n#define STORE(v) flamefx_bf16_store(v)\n"
                + _FLOAT_MATH,
}


def scalar_prelude(dtype, half_helpers: bool = True) -> str:
    """The C prelude defining T, ACC, LOAD, STORE and the math macros for ``dtype``.

    ``half_helpers=False`` leaves out the PTX conversions, for host compilers (the CPU
    emulation in tests/kernel_emulator runs the float32 and float64 kernels)."""
    return (HALF_CONVERSIONS if half_helpers else "") + _PRELUDES[np.dtype(dtype).name]


def acc_numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype of ``ACC`` (kernel scalars of that type are passed as this)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def raw_view(cp_array):
    """A half-precision CuPy array seen as the uint16 words the kernels read (no copy)."""
    if cp_array.dtype.itemsize == 2 and cp_array.dtype.kind != "u":
        return cp_array.view(np.uint16)
    return cp_array


def _storage(dtype) -> np.dtype:
    """What CuPy allocates for ``dtype``: bfloat16 as uint16 words, viewed back after."""
    dtype = np.dtype(dtype)
    return np.dtype(np.uint16) if dtype.itemsize == 2 and dtype.kind != "u" else dtype


def empty(shape, dtype):
    """An uninitialized CuPy array of any float dtype, bfloat16 included."""
    cp = devices.cupy()
    return cp.empty(shape, _storage(dtype)).view(np.dtype(dtype))


def zeros(shape, dtype):
    """A zero CuPy array of any float dtype (all-zero bits are +0.0 in every float type)."""
    cp = devices.cupy()
    return cp.zeros(shape, _storage(dtype)).view(np.dtype(dtype))


def contiguous(x):
    """``x`` as a C-contiguous CuPy array, copying half types through their raw words."""
    cp = devices.cupy()
    if x is None or x.flags.c_contiguous:
        return x
    return cp.ascontiguousarray(raw_view(x)).view(x.dtype)


def set_dynamic_shared_memory(kernel, nbytes: int) -> None:
    """Opts a kernel into more than 48 KiB of dynamic shared memory (Hopper: up to 227)."""
    if nbytes > 48 * 1024 and kernel.max_dynamic_shared_size_bytes < nbytes:
        kernel.max_dynamic_shared_size_bytes = nbytes
