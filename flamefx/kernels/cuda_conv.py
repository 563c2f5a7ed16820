"""Convolution on the GPU: an im2col RawKernel, then one cuBLAS GEMM per feature group.

For each group g the patch matrix ``col[g]`` (C/G * taps, N * out_positions) is built by
``flamefx_im2col`` — reading the input through its lhs dilation, padding (negative crops)
and kernel dilation by index arithmetic, zeros where a tap falls outside — and
``out[g] = w[g] (O/G, C/G * taps) @ col[g]`` runs as a strided-batched GEMM over the
groups (flamefx/kernels/cublas.py; float32 accumulation for the half types). A final
transpose puts N first. Large batches go through in chunks so ``col`` stays bounded.

>>> conv_forward(x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
...              lhs_dilation=(1, 1), rhs_dilation=(1, 1), feature_group_count=1,
...              precision=None, preferred_element_type=None)   # doctest: +SKIP
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import devices
from flamefx.kernels import cublas
from flamefx.kernels.cuda_scalar import contiguous, empty, raw_view, scalar_prelude

_THREADS = 256
_COL_BYTES_LIMIT = 1 << 30  # patch-matrix budget per chunk of the batch

# Spatial dims are padded to 3 (size-1 dims in front), so one kernel serves 1-D to 3-D.
_IM2COL = r"""
extern "C" __global__ void flamefx_im2col(
    const T* __restrict__ x, T* __restrict__ col, long long total, int n_batch,
    int batch_start, int channels,
    int in0, int in1, int in2, int out0, int out1, int out2, int k0, int k1, int k2,
    int s0, int s1, int s2, int lo0, int lo1, int lo2, int ld0, int ld1, int ld2,
    int rd0, int rd1, int rd2) {
  const int in[3] = {in0, in1, in2}, stride[3] = {s0, s1, s2}, pad_lo[3] = {lo0, lo1, lo2};
  const int lhs_dil[3] = {ld0, ld1, ld2}, rhs_dil[3] = {rd0, rd1, rd2};
  const long long positions = (long long)out0 * out1 * out2;
  const int taps = k0 * k1 * k2;
  const long long in_size = (long long)in0 * in1 * in2;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    // col is (channels * taps, n_batch * positions): idx = ((c * taps + tap) * n_batch + n)
    // * positions + p, so consecutive threads write consecutive output positions.
    const long long p = idx % positions;
    long long rest = idx / positions;
    const int n = (int)(rest % n_batch);
    rest /= n_batch;
    const int tap = (int)(rest % taps);
    const int c = (int)(rest / taps);
    const int out_pos[3] = {(int)(p / ((long long)out1 * out2)), (int)((p / out2) % out1),
                            (int)(p % out2)};
    const int tap_pos[3] = {tap / (k1 * k2), (tap / k2) % k1, tap % k2};
    long long offset = 0;
    bool inside = true;
    for (int d = 0; d < 3; ++d) {
      // Coordinate in the dilated input without padding: negative, past the end or between
      // dilated elements reads a zero.
      const int q = out_pos[d] * stride[d] + tap_pos[d] * rhs_dil[d] - pad_lo[d];
      if (q < 0 || q % lhs_dil[d] != 0 || q / lhs_dil[d] >= in[d]) { inside = false; break; }
      offset = offset * in[d] + q / lhs_dil[d];
    }
    const long long base = ((long long)(batch_start + n) * channels + c) * in_size;
    col[idx] = inside ? x[base + offset] : STORE((ACC)0);
  }
}
"""


def kernel_source(dtype) -> str:
    """The CUDA source of the im2col kernel for ``dtype``."""
    return scalar_prelude(dtype) + _IM2COL


@functools.cache
def _im2col_kernel(dtype_name: str):
    module = devices.cupy().RawModule(code=kernel_source(np.dtype(dtype_name)),
                                      options=("--std=c++17",))
    return module.get_function("flamefx_im2col")


def _geometry(x_spatial, out_spatial, kernel, strides, padding, lhs_dilation, rhs_dilation):
    """The 21 int geometry arguments of the kernel, each group of 3 padded with 1s in front
    (pads with 0s) so that 1-D and 2-D convolutions run as 3-D ones."""
    fill = 3 - len(x_spatial)

    def three(values, pad_value=1):
        return [pad_value] * fill + [int(v) for v in values]
    groups = [three(x_spatial), three(out_spatial), three(kernel), three(strides),
              three([lo for lo, _ in padding], 0), three(lhs_dilation), three(rhs_dilation)]
    return tuple(np.int32(v) for group in groups for v in group)


def conv_forward(x, w, *, window_strides, padding, lhs_dilation, rhs_dilation,
                 feature_group_count, precision, preferred_element_type):
    """The forward convolution on CuPy arrays (NCHW input, OIHW kernel); returns a CuPy array."""
    from flamefx.primitives.nn_ops import conv_output_spatial

    x, w = contiguous(x), contiguous(w)
    n, c = x.shape[:2]
    o, g = w.shape[0], feature_group_count
    kernel = w.shape[2:]
    out_spatial = conv_output_spatial(x.shape[2:], kernel, window_strides, padding,
                                      lhs_dilation, rhs_dilation)
    out_dtype = np.dtype(preferred_element_type or x.dtype)
    positions, taps = int(np.prod(out_spatial)), int(np.prod(kernel))
    out = empty((n, o) + out_spatial, out_dtype)
    if out.size == 0:
        return out
    if c // g * taps == 0:
        raw_view(out).fill(0)
        return out
    geometry = _geometry(x.shape[2:], out_spatial, kernel, window_strides, padding,
                         lhs_dilation, rhs_dilation)
    weights = w.reshape(g, o // g, c // g * taps)
    per_example = c * taps * positions * x.dtype.itemsize
    chunk = max(1, min(n, _COL_BYTES_LIMIT // max(per_example, 1)))
    kernel_fn = _im2col_kernel(x.dtype.name)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        col = empty((g, c // g * taps, size * positions), x.dtype)
        total = col.size
        blocks = min((total + _THREADS - 1) // _THREADS, 65535 * 8)
        kernel_fn((blocks,), (_THREADS,),
                  (raw_view(x), raw_view(col), np.int64(total), np.int32(size), np.int32(start),
                   np.int32(c)) + geometry)
        product = empty((g, o // g, size * positions), out_dtype)
        cublas.gemm_into(product, weights, col, precision=_cublas_precision(precision))
        # (G, O/G, size, P) -> (size, O, P)
        raw_view(out)[start:start + size] = raw_view(product).reshape(
            g, o // g, size, positions).transpose(2, 0, 1, 3).reshape((size, o) + out_spatial)
    return out


def _cublas_precision(precision) -> str:
    """None means the configured default, as for dot_general (TF32 only when asked for)."""
    from flamefx import config
    return config.read("default_matmul_precision") if precision is None else precision
