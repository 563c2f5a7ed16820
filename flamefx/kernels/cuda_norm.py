"""Fused normalization kernels (layer norm, group norm, RMS norm), forward and backward.

All three normalize *rows* of a contiguous input: a row is the trailing features (layer/rms
norm) or one (n, group) block of C/G channels x spatial positions (group norm). The
per-feature parameter of element ``j`` of row ``r`` is ``(r % groups) * per_group + j /
inner`` (per_group = row length / inner): for layer norm ``groups = inner = 1`` gives
``j``, for group norm it gives the channel. One block per row computes the statistics in
float32 (float64 for float64) and writes the normalized output in one pass.

>>> y, mean, rstd = norm_forward(x, scale, bias, rows=8, groups=1, inner=1, epsilon=1e-5,
...                              centered=True, stats_shape=(8,))   # doctest: +SKIP
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import devices
from flamefx.kernels.cuda_scalar import (
    acc_numpy_dtype,
    contiguous,
    empty,
    raw_view,
    scalar_prelude,
    zeros,
)

_THREADS = 256

_COMMON = r"""
// Sum over the block; every thread gets the result. `scratch` holds 32 ACCs.
__device__ __forceinline__ ACC block_sum(ACC v, ACC* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = (threadIdx.x < (blockDim.x >> 5)) ? scratch[threadIdx.x] : (ACC)0;
  if (warp == 0)
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

__device__ __forceinline__ long long param_index(long long row, long long j, int groups,
                                                 long long per_group, long long inner) {
  return (row % groups) * per_group + j / inner;
}
"""

_FORWARD = r"""
extern "C" __global__ void flamefx_norm_forward(
    const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ bias,
    T* __restrict__ y, ACC* __restrict__ mean_out, ACC* __restrict__ rstd_out,
    long long row_len, int groups, long long inner, ACC epsilon, int centered, int has_bias) {
  __shared__ ACC scratch[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * row_len;
  T* yr = y + row * row_len;
  const long long per_group = row_len / inner;
  ACC sum = 0;
  if (centered)
    for (long long j = threadIdx.x; j < row_len; j += blockDim.x) sum += LOAD(xr[j]);
  const ACC mean = centered ? block_sum(sum, scratch) / (ACC)row_len : (ACC)0;
  ACC sq = 0;
  for (long long j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC d = LOAD(xr[j]) - mean;
    sq += d * d;
  }
  const ACC rstd = RSQRT(block_sum(sq, scratch) / (ACC)row_len + epsilon);
  for (long long j = threadIdx.x; j < row_len; j += blockDim.x) {
    const long long p = param_index(row, j, groups, per_group, inner);
    ACC v = (LOAD(xr[j]) - mean) * rstd * LOAD(scale[p]);
    if (has_bias) v += LOAD(bias[p]);
    yr[j] = STORE(v);
  }
  if (threadIdx.x == 0) {
    if (centered) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}
"""

# dx of one row: rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale; the
# statistics' own cotangents (dmean, drstd) add dmean / M and -drstd * rstd^2 * xhat / M.
_BACKWARD_INPUT = r"""
extern "C" __global__ void flamefx_norm_backward_input(
    const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ dy,
    const ACC* __restrict__ mean, const ACC* __restrict__ rstd, const ACC* __restrict__ dmean,
    const ACC* __restrict__ drstd, T* __restrict__ dx, long long row_len, int groups,
    long long inner, int centered) {
  __shared__ ACC scratch[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * row_len;
  const T* dyr = dy + row * row_len;
  T* dxr = dx + row * row_len;
  const long long per_group = row_len / inner;
  const ACC mu = centered ? mean[row] : (ACC)0, rs = rstd[row];
  ACC sum_g = 0, sum_gx = 0;
  for (long long j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC g = LOAD(dyr[j]) * LOAD(scale[param_index(row, j, groups, per_group, inner)]);
    sum_g += g;
    sum_gx += g * (LOAD(xr[j]) - mu) * rs;
  }
  const ACC inv_m = (ACC)1 / (ACC)row_len;
  const ACC mean_g = centered ? block_sum(sum_g, scratch) * inv_m : (ACC)0;
  const ACC mean_gx = block_sum(sum_gx, scratch) * inv_m;
  const ACC extra_shift = centered ? dmean[row] * inv_m : (ACC)0;
  const ACC extra_slope = -drstd[row] * rs * rs * inv_m;
  for (long long j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC g = LOAD(dyr[j]) * LOAD(scale[param_index(row, j, groups, per_group, inner)]);
    const ACC xhat = (LOAD(xr[j]) - mu) * rs;
    dxr[j] = STORE(rs * (g - mean_g - xhat * mean_gx) + extra_shift + extra_slope * xhat);
  }
}
"""

# dscale[p] = sum dy * xhat and dbias[p] = sum dy over every element of parameter p: one
# block per parameter, threads striding over (row, position) pairs. Rows of p's group are
# r = n * groups + p / per_group; positions are the `inner` elements of p inside the row.
_BACKWARD_PARAMS = r"""
extern "C" __global__ void flamefx_norm_backward_params(
    const T* __restrict__ x, const T* __restrict__ dy, const ACC* __restrict__ mean,
    const ACC* __restrict__ rstd, T* __restrict__ dscale, T* __restrict__ dbias,
    long long rows, long long row_len, int groups, long long inner, int centered,
    int has_bias) {
  __shared__ ACC scratch[32];
  const long long p = blockIdx.x;
  const long long per_group = row_len / inner;
  const long long group = p / per_group, offset = (p % per_group) * inner;
  const long long rows_of_p = rows / groups, items = rows_of_p * inner;
  ACC sum_dyx = 0, sum_dy = 0;
  for (long long i = threadIdx.x; i < items; i += blockDim.x) {
    const long long row = (i / inner) * groups + group;
    const long long at = row * row_len + offset + i % inner;
    const ACC g = LOAD(dy[at]);
    const ACC mu = centered ? mean[row] : (ACC)0;
    sum_dyx += g * (LOAD(x[at]) - mu) * rstd[row];
    sum_dy += g;
  }
  const ACC total_dyx = block_sum(sum_dyx, scratch);
  const ACC total_dy = has_bias ? block_sum(sum_dy, scratch) : (ACC)0;
  if (threadIdx.x == 0) {
    dscale[p] = STORE(total_dyx);
    if (has_bias) dbias[p] = STORE(total_dy);
  }
}
"""


def kernel_source(dtype) -> str:
    """The CUDA source of the three normalization kernels for ``dtype``."""
    return scalar_prelude(dtype) + _COMMON + _FORWARD + _BACKWARD_INPUT + _BACKWARD_PARAMS


@functools.cache
def _module(dtype_name: str):
    return devices.cupy().RawModule(code=kernel_source(np.dtype(dtype_name)),
                                    options=("--std=c++17",))


def _kernel(dtype, name: str):
    return _module(np.dtype(dtype).name).get_function(name)


def norm_forward(x, scale, bias, *, rows, groups, inner, epsilon, centered, stats_shape):
    """Normalizes ``rows`` rows of contiguous ``x``; returns ``[y, mean, rstd]`` (CuPy)."""
    cp = devices.cupy()
    x = contiguous(x)
    acc = acc_numpy_dtype(x.dtype)
    y = empty(x.shape, x.dtype)
    mean = cp.zeros(stats_shape, acc)
    rstd = cp.empty(stats_shape, acc)
    row_len = x.size // rows if rows else 0
    if rows and row_len:
        bias_arg = raw_view(contiguous(bias)) if bias is not None else raw_view(x)
        _kernel(x.dtype, "flamefx_norm_forward")(
            (rows,), (_THREADS,),
            (raw_view(x), raw_view(contiguous(scale)), bias_arg, raw_view(y), mean,
             rstd, np.int64(row_len), np.int32(groups), np.int64(inner), acc.type(epsilon),
             np.int32(centered), np.int32(bias is not None)))
    return [y, mean, rstd]


def norm_backward(x, scale, dy, mean, rstd, dmean, drstd, *, rows, groups, inner, centered,
                  has_bias):
    """Gradients of a normalization: ``[dx, dscale, dbias or None]`` (CuPy).

    ``mean`` may be None (rms norm); ``dmean`` / ``drstd`` (cotangents of the statistics
    outputs) may be None for zero.
    """
    cp = devices.cupy()
    x, dy, scale = contiguous(x), contiguous(dy), contiguous(scale)
    acc = acc_numpy_dtype(x.dtype)
    stats = rstd.shape
    mean = cp.zeros(stats, acc) if mean is None else cp.ascontiguousarray(mean, acc)
    dmean = cp.zeros(stats, acc) if dmean is None else cp.ascontiguousarray(dmean, acc)
    drstd = cp.zeros(stats, acc) if drstd is None else cp.ascontiguousarray(drstd, acc)
    rstd = cp.ascontiguousarray(rstd, acc)
    dx = empty(x.shape, x.dtype)
    dscale = zeros(scale.shape, scale.dtype)
    dbias = zeros(scale.shape, scale.dtype) if has_bias else None
    row_len = x.size // rows if rows else 0
    if rows and row_len:
        _kernel(x.dtype, "flamefx_norm_backward_input")(
            (rows,), (_THREADS,),
            (raw_view(x), raw_view(scale), raw_view(dy), mean, rstd, dmean, drstd, raw_view(dx),
             np.int64(row_len), np.int32(groups), np.int64(inner), np.int32(centered)))
        _kernel(x.dtype, "flamefx_norm_backward_params")(
            (scale.size,), (_THREADS,),
            (raw_view(x), raw_view(dy), mean, rstd, raw_view(dscale),
             raw_view(dbias if has_bias else dscale), np.int64(rows), np.int64(row_len),
             np.int32(groups), np.int64(inner), np.int32(centered), np.int32(has_bias)))
    else:
        raw_view(dx).fill(0)
    return [dx, dscale, dbias]
