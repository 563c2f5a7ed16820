"""Fused normalization kernels (layer norm, group norm, RMS norm), forward and backward.

All three normalize *rows* of a contiguous input: a row is the trailing features (layer/rms
norm) or one (n, group) block of C/G channels x spatial positions (group norm). The
per-feature parameter of element ``j`` of row ``r`` is ``(r % groups) * per_group + j /
inner`` (per_group = row length / inner): for layer norm ``groups = inner = 1`` gives
``j``, for group norm it gives the channel. One block per row computes the statistics in
float32 (float64 for float64) and writes the normalized output in one pass. Indices are
``IDX``: 32-bit unless the input has 2**31 elements or more (64-bit divisions per element
cost more than the memory traffic).

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

__device__ __forceinline__ IDX param_index(IDX row, IDX j, int groups, IDX per_group,
                                           IDX inner) {
  return (row % groups) * per_group + j / inner;
}
"""

_FORWARD = r"""
extern "C" __global__ void flamefx_norm_forward(
    const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ bias,
    T* __restrict__ y, ACC* __restrict__ mean_out, ACC* __restrict__ rstd_out,
    IDX row_len, int groups, IDX inner, ACC epsilon, int centered, int has_bias) {
  __shared__ ACC scratch[32];
  const IDX row = blockIdx.x;
  const T* xr = x + row * row_len;
  T* yr = y + row * row_len;
  const IDX per_group = row_len / inner;
  ACC sum = 0;
  if (centered)
    for (IDX j = threadIdx.x; j < row_len; j += blockDim.x) sum += LOAD(xr[j]);
  const ACC mean = centered ? block_sum(sum, scratch) / (ACC)row_len : (ACC)0;
  ACC sq = 0;
  for (IDX j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC d = LOAD(xr[j]) - mean;
    sq += d * d;
  }
  const ACC rstd = RSQRT(block_sum(sq, scratch) / (ACC)row_len + epsilon);
  for (IDX j = threadIdx.x; j < row_len; j += blockDim.x) {
    const IDX p = param_index(row, j, groups, per_group, inner);
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
    const ACC* __restrict__ drstd, T* __restrict__ dx, IDX row_len, int groups, IDX inner,
    int centered) {
  __shared__ ACC scratch[32];
  const IDX row = blockIdx.x;
  const T* xr = x + row * row_len;
  const T* dyr = dy + row * row_len;
  T* dxr = dx + row * row_len;
  const IDX per_group = row_len / inner;
  const ACC mu = centered ? mean[row] : (ACC)0, rs = rstd[row];
  ACC sum_g = 0, sum_gx = 0;
  for (IDX j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC g = LOAD(dyr[j]) * LOAD(scale[param_index(row, j, groups, per_group, inner)]);
    sum_g += g;
    sum_gx += g * (LOAD(xr[j]) - mu) * rs;
  }
  const ACC inv_m = (ACC)1 / (ACC)row_len;
  const ACC mean_g = centered ? block_sum(sum_g, scratch) * inv_m : (ACC)0;
  const ACC mean_gx = block_sum(sum_gx, scratch) * inv_m;
  const ACC extra_shift = centered ? dmean[row] * inv_m : (ACC)0;
  const ACC extra_slope = -drstd[row] * rs * rs * inv_m;
  for (IDX j = threadIdx.x; j < row_len; j += blockDim.x) {
    const ACC g = LOAD(dyr[j]) * LOAD(scale[param_index(row, j, groups, per_group, inner)]);
    const ACC xhat = (LOAD(xr[j]) - mu) * rs;
    dxr[j] = STORE(rs * (g - mean_g - xhat * mean_gx) + extra_shift + extra_slope * xhat);
  }
}
"""

# dscale[p] = sum dy * xhat and dbias[p] = sum dy over every element of parameter p, in two
# deterministic steps: block (p, c) sums chunk c of p's rows into partial[c][p] (and
# partial[chunks + c][p]), then one thread per parameter adds its chunks in order. Rows of
# p's group are r = n * groups + p / per_group; positions are the `inner` elements of p
# inside the row. Chunks give the GPU enough blocks when parameters are few (group norm's
# channels) and rows many.
_BACKWARD_PARAMS = r"""
extern "C" __global__ void flamefx_norm_backward_params_partial(
    const T* __restrict__ x, const T* __restrict__ dy, const ACC* __restrict__ mean,
    const ACC* __restrict__ rstd, ACC* __restrict__ partial, IDX rows, IDX row_len,
    int groups, IDX inner, int centered) {
  __shared__ ACC scratch[32];
  const IDX p = blockIdx.x, n_params = gridDim.x;
  const int chunk = blockIdx.y, chunks = gridDim.y;
  const IDX per_group = row_len / inner;
  const IDX group = p / per_group, offset = (p % per_group) * inner;
  const IDX rows_of_p = rows / groups, per_chunk = (rows_of_p + chunks - 1) / chunks;
  const IDX first = chunk * per_chunk;
  const IDX last = first + per_chunk < rows_of_p ? first + per_chunk : rows_of_p;
  const IDX items = (last > first ? last - first : 0) * inner;
  ACC sum_dyx = 0, sum_dy = 0;
  for (IDX i = threadIdx.x; i < items; i += blockDim.x) {
    const IDX n = first + i / inner;
    const IDX row = n * groups + group;
    const IDX at = row * row_len + offset + (i - (n - first) * inner);
    const ACC g = LOAD(dy[at]);
    const ACC mu = centered ? mean[row] : (ACC)0;
    sum_dyx += g * (LOAD(x[at]) - mu) * rstd[row];
    sum_dy += g;
  }
  const ACC total_dyx = block_sum(sum_dyx, scratch);
  const ACC total_dy = block_sum(sum_dy, scratch);
  if (threadIdx.x == 0) {
    partial[(IDX)chunk * n_params + p] = total_dyx;
    partial[(IDX)(chunks + chunk) * n_params + p] = total_dy;
  }
}

extern "C" __global__ void flamefx_norm_backward_params_finish(
    const ACC* __restrict__ partial, T* __restrict__ dscale, T* __restrict__ dbias,
    IDX n_params, int chunks, int has_bias) {
  const IDX p = blockIdx.x * (IDX)blockDim.x + threadIdx.x;
  if (p >= n_params) return;
  ACC sum_dyx = 0, sum_dy = 0;
  for (int c = 0; c < chunks; ++c) {
    sum_dyx += partial[(IDX)c * n_params + p];
    sum_dy += partial[(IDX)(chunks + c) * n_params + p];
  }
  dscale[p] = STORE(sum_dyx);
  if (has_bias) dbias[p] = STORE(sum_dy);
}
"""

# Blocks the parameter-gradient pass aims for (a few per SM), and the fewest elements a
# block should sum so that chunking does not outweigh the work.
_PARAM_BLOCKS = 528
_MIN_ITEMS_PER_BLOCK = 1024


def param_chunks(n_params: int, rows_of_p: int, inner: int) -> int:
    """How many chunks each parameter's rows are split into for the partial sums.

    >>> param_chunks(64, 32, 1024)   # W2's group norm: 64 channels, batch 32
    8
    """
    by_blocks = max(1, _PARAM_BLOCKS // max(n_params, 1))
    by_work = max(1, rows_of_p * inner // _MIN_ITEMS_PER_BLOCK)
    return max(1, min(rows_of_p, by_blocks, by_work))


def kernel_source(dtype, wide: bool = False) -> str:
    """The CUDA source of the normalization kernels for ``dtype`` (64-bit indices if
    ``wide``)."""
    index = f"#define IDX {'long long' if wide else 'int'}\n"
    return (scalar_prelude(dtype) + index + _COMMON + _FORWARD + _BACKWARD_INPUT
            + _BACKWARD_PARAMS)


@functools.cache
def _module(dtype_name: str, wide: bool):
    return devices.cupy().RawModule(code=kernel_source(np.dtype(dtype_name), wide),
                                    options=("--std=c++17",))


def _kernel(x, name: str):
    """Kernel ``name`` for ``x``'s dtype and index width, and the index type's scalar."""
    wide = x.size >= 2**31 - 1
    return (_module(np.dtype(x.dtype).name, wide).get_function(name),
            np.int64 if wide else np.int32)


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
        kernel, idx = _kernel(x, "flamefx_norm_forward")
        kernel((rows,), (_THREADS,),
               (raw_view(x), raw_view(contiguous(scale)), bias_arg, raw_view(y), mean, rstd,
                idx(row_len), np.int32(groups), idx(inner), acc.type(epsilon),
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
        kernel, idx = _kernel(x, "flamefx_norm_backward_input")
        kernel((rows,), (_THREADS,),
               (raw_view(x), raw_view(scale), raw_view(dy), mean, rstd, dmean, drstd,
                raw_view(dx), idx(row_len), np.int32(groups), idx(inner), np.int32(centered)))
        chunks = param_chunks(scale.size, rows // groups, inner)
        partial = cp.empty((2, chunks, scale.size), acc)
        kernel, _ = _kernel(x, "flamefx_norm_backward_params_partial")
        kernel((scale.size, chunks), (_THREADS,),
               (raw_view(x), raw_view(dy), mean, rstd, partial, idx(rows), idx(row_len),
                np.int32(groups), idx(inner), np.int32(centered)))
        kernel, _ = _kernel(x, "flamefx_norm_backward_params_finish")
        kernel((-(-scale.size // _THREADS),), (_THREADS,),
               (partial, raw_view(dscale), raw_view(dbias if has_bias else dscale),
                idx(scale.size), np.int32(chunks), np.int32(has_bias)))
    else:
        raw_view(dx).fill(0)
    return [dx, dscale, dbias]
