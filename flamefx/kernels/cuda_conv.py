"""Convolution on the GPU: an im2col RawKernel, then cuBLAS GEMMs.

``flamefx_im2col`` builds the patch matrix: row ``c * taps + tap`` holds, for every example
and output position, the input element that tap reads — through the lhs dilation, padding
(negative crops) and kernel dilation, zero where the tap falls outside. Then, per feature
group g, ``out = w[g] (O/G, C/G * taps) @ patches`` (flamefx/kernels/cublas.py; float32
accumulation for the half types). Two layouts of the patch matrix:

- example-major ``(N, G, C/G * taps, P)``: one strided-batched GEMM over examples and groups
  writes the (N, O, P) output in place. Used when the output positions P are many (the
  per-example GEMM is then still large). With one group the kernel goes to cuBLAS with
  batch stride 0 (the same matrix for every example); with several, the (example, group)
  batch has no single stride over the kernel, which is copied once per example, and the
  layout is used only where that copy costs less than a transpose of the output.
- row-major ``(G, C/G * taps, N * P)``: one GEMM per group over the whole batch, then a
  transpose to (N, O, P). Used for few output positions.

The weight gradient (``conv_weight_grad``) reads the input and the output gradient in their
own NCHW layouts: ``dw[g] = sum_n ct[n, g] (O/G, P) @ patches[n, g]^T (P, C/G * taps)``, one
strided-batched GEMM over examples and groups into per-example partial gradients (float32
for the half types), then ``flamefx_sum_over_examples`` adds them up and stores the kernel's
dtype. Where the partials would outweigh the output gradient (few positions, many
channels), the output gradient is instead transposed to (G, O/G, N * P) and one GEMM per
group contracts over N * P.

Large batches go through in chunks so the patch matrix (and the partials) stay bounded.

>>> conv_forward(x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
...              lhs_dilation=(1, 1), rhs_dilation=(1, 1), feature_group_count=1,
...              precision=None, preferred_element_type=None)   # doctest: +SKIP
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import devices
from flamefx.kernels import cublas
from flamefx.kernels.cuda_scalar import (
    acc_numpy_dtype,
    contiguous,
    empty,
    raw_view,
    scalar_prelude,
)

_THREADS = 128
_ROWS_PER_BLOCK = 16  # patch rows one thread writes: its division work is shared by them
_MAX_GRID_Y = 65535
_COL_BYTES_LIMIT = 1 << 30  # patch-matrix budget per chunk of the batch
_INT32_LIMIT = 2**31

# Spatial dims are padded to 3 (size-1 dims in front), so one kernel serves 1-D to 3-D.
# IDX is int when every index of the chunk fits (the common case: 32-bit division and
# multiplies are several times cheaper), long long otherwise. A thread owns VEC consecutive
# columns (example n, output positions p .. p + VEC - 1 of one output row: VEC divides the
# innermost output size) and splits the first into coordinates once; it then walks
# ROWS_PER_BLOCK consecutive patch rows, stepping (channel, tap) with carries, so per
# element there is no division at all without lhs dilation (LHS_DILATED 0). Each row's VEC
# loads are independent (with one load a row the kernel is bound by the loads in flight,
# not by bandwidth) and its VEC elements go out in one vector store.
_IM2COL = r"""
struct alignas(sizeof(T) * VEC) Columns { T v[VEC]; };

extern "C" __global__ void __launch_bounds__(128) flamefx_im2col(
    const T* __restrict__ x, T* __restrict__ col, int n_batch, int channels,
    int in0, int in1, int in2, int out0, int out1, int out2, int k0, int k1, int k2,
    int s0, int s1, int s2, int lo0, int lo1, int lo2, int ld0, int ld1, int ld2,
    int rd0, int rd1, int rd2, IDX row_stride, IDX example_stride, int rows_per_block) {
  const IDX positions = (IDX)out0 * out1 * out2;
  const IDX column = (blockIdx.x * (IDX)blockDim.x + threadIdx.x) * VEC;
  if (column >= n_batch * positions) return;
  const IDX n = column / positions, p = column - n * positions;
  const int o0 = (int)(p / ((IDX)out1 * out2)), o1 = (int)(p / out2 % out1),
            o2 = (int)(p % out2);
  // Coordinates, in the dilated input without padding, that tap 0 reads.
  const int first0 = o0 * s0 - lo0, first1 = o1 * s1 - lo1, first2 = o2 * s2 - lo2;
  const IDX in_size = (IDX)in0 * in1 * in2;
  const int taps = k0 * k1 * k2;
  IDX row = (IDX)blockIdx.y * rows_per_block;
  const IDX rows = (IDX)channels * taps;
  const IDX row_end = row + rows_per_block < rows ? row + rows_per_block : rows;
  const IDX c = row / taps;
  const int tap = (int)(row - c * taps);
  int t0 = tap / (k1 * k2), t1 = tap / k2 % k1, t2 = tap % k2;
  const T* x_c = x + (n * channels + c) * in_size;
  T* out = col + n * example_stride + p + row * row_stride;
  for (; row < row_end; ++row, out += row_stride) {
    const int q0 = first0 + t0 * rd0, q1 = first1 + t1 * rd1;
    Columns values;
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const int q2 = first2 + v * s2 + t2 * rd2;
#if LHS_DILATED
      // Between two dilated input elements reads a zero too.
      const bool inside = q0 >= 0 && q1 >= 0 && q2 >= 0 && q0 % ld0 == 0 &&
                          q1 % ld1 == 0 && q2 % ld2 == 0 && q0 / ld0 < in0 &&
                          q1 / ld1 < in1 && q2 / ld2 < in2;
      const IDX offset = ((IDX)(q0 / ld0) * in1 + q1 / ld1) * in2 + q2 / ld2;
#else
      const bool inside = (unsigned)q0 < (unsigned)in0 && (unsigned)q1 < (unsigned)in1 &&
                          (unsigned)q2 < (unsigned)in2;
      const IDX offset = ((IDX)q0 * in1 + q1) * in2 + q2;
#endif
      values.v[v] = inside ? x_c[offset] : STORE((ACC)0);
    }
    *reinterpret_cast<Columns*>(out) = values;
    if (++t2 == k2) {
      t2 = 0;
      if (++t1 == k1) {
        t1 = 0;
        if (++t0 == k0) { t0 = 0; x_c += in_size; }
      }
    }
  }
}
"""

# Weight gradient: adds the per-example partial gradients (ACC, n_examples rows of `size`)
# into `out` (the kernel's dtype). Chunks of a large batch carry their running sum in ACC
# (`carry`), so the half types round once.
_SUM_OVER_EXAMPLES = r"""
extern "C" __global__ void __launch_bounds__(256) flamefx_sum_over_examples(
    const ACC* __restrict__ partial, ACC* __restrict__ carry, T* __restrict__ out,
    int n_examples, long long size, int add_carry, int store_carry) {
  const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (r >= size) return;
  ACC total = add_carry ? carry[r] : (ACC)0;
  for (int n = 0; n < n_examples; ++n) total += partial[n * size + r];
  if (store_carry) {
    carry[r] = total;
  } else {
    out[r] = STORE(total);
  }
}
"""
_SUM_THREADS = 256


def sum_over_examples_source(dtype) -> str:
    """The CUDA source of the weight gradient's sum over per-example partials.

    >>> "flamefx_sum_over_examples" in sum_over_examples_source(np.dtype("float32"))
    True
    """
    return scalar_prelude(dtype) + _SUM_OVER_EXAMPLES


@functools.cache
def _sum_over_examples_kernel(dtype_name: str):
    module = devices.cupy().RawModule(code=sum_over_examples_source(np.dtype(dtype_name)),
                                      options=("--std=c++17",))
    return module.get_function("flamefx_sum_over_examples")


def kernel_source(dtype, lhs_dilated: bool, wide_index: bool, vector: int) -> str:
    """The CUDA source of the im2col kernel for ``dtype``; ``lhs_dilated`` compiles the
    divisibility checks in, ``wide_index`` makes the indices 64-bit, ``vector`` is VEC, the
    consecutive output positions one thread writes."""
    switches = (f"#define LHS_DILATED {int(lhs_dilated)}\n#define VEC {int(vector)}\n"
                f"typedef {'long long' if wide_index else 'int'} IDX;\n")
    return scalar_prelude(dtype) + switches + _IM2COL


@functools.cache
def _im2col_kernel(dtype_name: str, lhs_dilated: bool, wide_index: bool, vector: int):
    source = kernel_source(np.dtype(dtype_name), lhs_dilated, wide_index, vector)
    module = devices.cupy().RawModule(code=source, options=("--std=c++17",))
    return module.get_function("flamefx_im2col")


def positions_per_thread(innermost_out: int) -> int:
    """VEC: 4 consecutive output positions per im2col thread where the innermost output
    size allows (they then share an output row and their vector store is aligned), else
    2, else 1.

    >>> positions_per_thread(32), positions_per_thread(10), positions_per_thread(7)
    (4, 2, 1)
    """
    return next(v for v in (4, 2, 1) if innermost_out % v == 0)


def _geometry(x_spatial, out_spatial, kernel, strides, padding, lhs_dilation, rhs_dilation):
    """The 21 int geometry arguments of the kernel, each group of 3 padded with 1s in front
    (pads with 0s) so that 1-D and 2-D convolutions run as 3-D ones."""
    fill = 3 - len(x_spatial)

    def three(values, pad_value=1):
        return [pad_value] * fill + [int(v) for v in values]
    groups = [three(x_spatial), three(out_spatial), three(kernel), three(strides),
              three([lo for lo, _ in padding], 0), three(lhs_dilation), three(rhs_dilation)]
    return tuple(v for group in groups for v in group)


def im2col_launch(n_batch, channels, geometry, example_major: bool,
                  rows_per_block: int = _ROWS_PER_BLOCK):
    """(grid, block, the int arguments after the two pointers, wide_index, VEC) of one
    im2col launch over ``n_batch`` examples; ``example_major`` picks the (N, C * taps, P)
    patch layout over (C * taps, N * P). The CPU emulator test launches through this too."""
    in_size, positions = (int(np.prod(geometry[i:i + 3])) for i in (0, 3))
    rows = channels * int(np.prod(geometry[6:9]))
    columns = n_batch * positions
    row_stride, example_stride = ((positions, rows * positions) if example_major
                                  else (columns, positions))
    wide_index = max(n_batch * channels * in_size, rows * columns) >= _INT32_LIMIT
    rows_per_block = max(rows_per_block, -(-rows // _MAX_GRID_Y))
    vector = positions_per_thread(geometry[5])
    grid = (-(-columns // (_THREADS * vector)), -(-rows // rows_per_block))
    index = np.int64 if wide_index else np.int32
    args = tuple(np.int32(v) for v in (n_batch, channels) + tuple(geometry))
    args += (index(row_stride), index(example_stride), np.int32(rows_per_block))
    return grid, (_THREADS,), args, wide_index, vector


def conv_forward(x, w, *, window_strides, padding, lhs_dilation, rhs_dilation,
                 feature_group_count, precision, preferred_element_type):
    """The forward convolution on CuPy arrays (NCHW input, OIHW kernel); returns a CuPy array."""
    from flamefx.primitives.nn_ops import conv_output_spatial

    cp = devices.cupy()
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
    group_rows = c // g * taps
    if group_rows == 0:
        raw_view(out).fill(0)
        return out
    geometry = _geometry(x.shape[2:], out_spatial, kernel, window_strides, padding,
                         lhs_dilation, rhs_dilation)
    lhs_dilated = any(d != 1 for d in lhs_dilation)
    weights = w.reshape(g, o // g, group_rows)
    precision = _cublas_precision(precision)
    chunk = max(1, min(n, _COL_BYTES_LIMIT // (c * taps * positions * x.dtype.itemsize)))
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        example_major = _example_major(size, positions, group_rows)
        col = (empty((size * g, group_rows, positions), x.dtype) if example_major
               else empty((g, group_rows, size * positions), x.dtype))
        grid, block, args, wide_index, vector = im2col_launch(size, c, geometry,
                                                              example_major)
        _im2col_kernel(x.dtype.name, lhs_dilated, wide_index, vector)(
            grid, block, (raw_view(x)[start:start + size], raw_view(col)) + args)
        if example_major:
            # out[n, g] = w[g] @ col[n, g], written in place.
            cublas.gemm_into(out[start:start + size].reshape(size * g, o // g, positions),
                             _kernel_per_example(cp, weights, size), col, precision=precision)
            continue
        product = empty((g, o // g, size * positions), out_dtype)
        cublas.gemm_into(product, weights, col, precision=precision)
        # (G, O/G, size, P) -> (size, O, P)
        raw_view(out)[start:start + size] = raw_view(product).reshape(
            g, o // g, size, positions).transpose(2, 0, 1, 3).reshape((size, o) + out_spatial)
    return out


def _kernel_per_example(xp, weights, size: int):
    """The (G, O/G, C/G * taps) kernel as the (size * G, O/G, C/G * taps) operand of the
    example-major GEMM: with one group a broadcast view (batch stride 0, no copy); with
    several, entry n * G + g lies at g * O/G * C/G * taps, no one stride: copied per example.

    >>> _kernel_per_example(np, np.ones((1, 8, 27), np.float32), 4).strides
    (0, 108, 4)
    """
    groups = weights.shape[0]
    if groups == 1:
        return xp.broadcast_to(raw_view(weights), (size,) + weights.shape[1:]).view(
            weights.dtype)
    per_example = xp.ascontiguousarray(xp.broadcast_to(raw_view(weights)[None],
                                                       (size,) + weights.shape))
    return per_example.reshape((size * groups,) + weights.shape[1:]).view(weights.dtype)


def conv_weight_grad(ct, x, *, kernel_shape, window_strides, padding, lhs_dilation,
                     rhs_dilation, feature_group_count, precision):
    """d(conv)/dw on CuPy arrays: output gradient ``ct`` (N, O, out...) and input ``x``
    (N, C, in...) of one dtype, both read in place; returns the (O, C/G, k...) gradient in
    that dtype (module docstring: the two ways it is computed).

    >>> conv_weight_grad(ct, x, kernel_shape=(64, 64, 3, 3), window_strides=(1, 1),
    ...                  padding=((1, 1), (1, 1)), lhs_dilation=(1, 1), rhs_dilation=(1, 1),
    ...                  feature_group_count=1, precision=None)   # doctest: +SKIP
    """
    ct, x = contiguous(ct), contiguous(x)
    n, c = x.shape[:2]
    o, g = kernel_shape[0], feature_group_count
    kernel, out_spatial = tuple(kernel_shape[2:]), ct.shape[2:]
    dw = empty(tuple(kernel_shape), ct.dtype)
    positions, taps = int(np.prod(out_spatial)), int(np.prod(kernel))
    group_rows = c // g * taps
    if dw.size == 0:
        return dw
    if n == 0 or positions == 0:
        raw_view(dw).fill(0)
        return dw
    acc = acc_numpy_dtype(ct.dtype)
    geometry = _geometry(x.shape[2:], out_spatial, kernel, window_strides, padding,
                         lhs_dilation, rhs_dilation)
    lhs_dilated = any(d != 1 for d in lhs_dilation)
    precision = _cublas_precision(precision)
    example_major = _weight_grad_per_example(positions, group_rows)
    per_example_bytes = c * taps * positions * x.dtype.itemsize
    if example_major:
        per_example_bytes = max(per_example_bytes, o * group_rows * acc.itemsize)
    chunk = max(1, min(n, _COL_BYTES_LIMIT // per_example_bytes))
    carry = empty((dw.size,), acc) if chunk < n else None
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        ct_chunk = ct[start:start + size]
        grid, block, args, wide_index, vector = im2col_launch(size, c, geometry,
                                                              example_major)
        if example_major:
            col = empty((size * g, group_rows, positions), x.dtype)
            partial = empty((size * g, o // g, group_rows), acc)
            lhs = ct_chunk.reshape(size * g, o // g, positions)
        else:
            col = empty((g, group_rows, size * positions), x.dtype)
            partial = empty((g, o // g, group_rows), acc)
            # (size, G, O/G, P) -> (G, O/G, size * P): the contraction runs over N * P.
            lhs = contiguous(ct_chunk.reshape(size, g, o // g, positions).transpose(1, 2, 0, 3))
            lhs = lhs.reshape(g, o // g, size * positions)
        _im2col_kernel(x.dtype.name, lhs_dilated, wide_index, vector)(
            grid, block, (raw_view(x)[start:start + size], raw_view(col)) + args)
        cublas.gemm_into(partial, lhs, col.transpose(0, 2, 1), precision=precision)
        last = start + size == n
        rows = size if example_major else 1
        _sum_over_examples_kernel(ct.dtype.name)(
            (-(-dw.size // _SUM_THREADS),), (_SUM_THREADS,),
            (partial, carry if carry is not None else partial, raw_view(dw), np.int32(rows),
             np.int64(dw.size), np.int32(start > 0), np.int32(not last)))
    return dw


def _weight_grad_per_example(positions: int, group_rows: int) -> bool:
    """Whether the weight gradient sums per-example partials (no copy) rather than
    transposing the output gradient for one GEMM over N * P: where the partials (``group_rows``
    per output channel and example) weigh no more than the output gradient (P)."""
    return group_rows <= positions


def _example_major(n_batch: int, positions: int, group_rows: int) -> bool:
    """Whether the (N, G, C/G * taps, P) patch layout is the cheaper one: for one example
    the layouts coincide; otherwise it needs enough positions for an efficient GEMM per
    example, and its per-example copy of the kernel (``group_rows`` per output channel) must
    cost less than the row-major layout's transpose of the output (2 * P per channel).
    H100, W2's three 3x3 convs a step, when the kernel was copied for every G: float32
    layouts tie (0.103 against 0.107 ms a conv); bfloat16 GEMMs 0.048 against 0.041 ms,
    kernel copies 0.021 against output transposes 0.033 ms, so example-major by 0.006 ms.
    With one group the kernel is no longer copied (batch stride 0), yet the bound stays: the
    forward alone with each layout forced, one group, group_rows > 2 * P (N 32, C 256,
    16x16): bfloat16 example-major 0.198 against 0.234 ms, float32 0.400 against 0.377 ms,
    and other shapes either way, with a second run disagreeing in places (event times of
    single eager calls): no clear winner to move the bound for."""
    return n_batch == 1 or (positions >= _EXAMPLE_MAJOR_MIN_POSITIONS
                            and group_rows <= 2 * positions)


_EXAMPLE_MAJOR_MIN_POSITIONS = 256


def _cublas_precision(precision) -> str:
    """None means the configured default, as for dot_general (TF32 only when asked for)."""
    from flamefx import config
    return config.read("default_matmul_precision") if precision is None else precision
