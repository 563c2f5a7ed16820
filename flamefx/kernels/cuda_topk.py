"""top_k on the GPU by a radix select per row (one block per row), for k <= MAX_K.

Each element is ranked by the pair (key, n - 1 - index): its unsigned order key (larger is
bigger) and then the lower index first, as XLA's TopK breaks ties. These pairs are all
distinct, so exactly k of them are >= the k-th largest. The block finds that pair 8 bits at
a time, most significant first (a 256-bin histogram of the elements that match the digits
chosen so far; one pass over the row per digit, stopping early once every matching element
is taken), then gathers the k elements at or above it and writes each one's index at its
rank among them. The row is read once per digit (at most 4 plus the index's bytes) and once
more to gather, instead of being sorted.
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import devices

MAX_K = 256
_THREADS = 256

SOURCE = r"""
extern "C" __global__ void flamefx_top_k_rows(const unsigned* __restrict__ keys, int n, int k,
                                              int index_digits, int* __restrict__ out) {
  __shared__ unsigned hist[256];
  __shared__ unsigned want_key, want_rev, key_mask, rev_mask, remaining, done, taken;
  __shared__ unsigned cand_key[256];
  __shared__ int cand_index[256];
  const unsigned* row = keys + (long long)blockIdx.x * n;
  if (threadIdx.x == 0) {
    want_key = 0; want_rev = 0; key_mask = 0; rev_mask = 0; remaining = k; done = 0; taken = 0;
  }
  __syncthreads();
  for (int digit = 0; digit < 4 + index_digits; ++digit) {
    // digit 0..3: the key's bytes; then the bytes of n - 1 - index, high first.
    const bool on_key = digit < 4;
    const int shift = on_key ? 24 - 8 * digit : 8 * (index_digits - 1 - (digit - 4));
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const unsigned km = key_mask, rm = rev_mask, wk = want_key, wr = want_rev;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const unsigned key = row[i], rev = (unsigned)(n - 1 - i);
      if ((key & km) == wk && (rev & rm) == wr)
        atomicAdd(&hist[((on_key ? key : rev) >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // The largest digit d with at least `remaining` matching elements at or above it.
      unsigned above = 0;
      int d = 255;
      for (; d > 0 && above + hist[d] < remaining; --d) above += hist[d];
      remaining -= above;
      if (on_key) { want_key |= (unsigned)d << shift; key_mask |= 255u << shift; }
      else { want_rev |= (unsigned)d << shift; rev_mask |= 255u << shift; }
      done = hist[d] == remaining;  // every element matching so far is taken
    }
    __syncthreads();
    if (done) break;
  }
  // Take every pair >= (want_key, want_rev): the digits not chosen are 0 there.
  const unsigned wk = want_key, wr = want_rev;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const unsigned key = row[i], rev = (unsigned)(n - 1 - i);
    if (key > wk || (key == wk && rev >= wr)) {
      const unsigned slot = atomicAdd(&taken, 1u);
      cand_key[slot] = key;
      cand_index[slot] = i;
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < k; t += blockDim.x) {
    const unsigned key = cand_key[t];
    const int index = cand_index[t];
    int rank = 0;
    for (int j = 0; j < k; ++j)
      rank += cand_key[j] > key || (cand_key[j] == key && cand_index[j] < index);
    out[(long long)blockIdx.x * k + rank] = index;
  }
}
"""


def index_digits(n: int) -> int:
    """How many bytes the indices 0..n-1 need (at least one)."""
    return max(1, ((n - 1).bit_length() + 7) // 8)


@functools.cache
def _kernel():
    return devices.cupy().RawKernel(SOURCE, "flamefx_top_k_rows")


def top_k_indices(keys, k: int):
    """The int32 indices of the ``k`` largest of each row of ``keys`` (CuPy uint32,
    ``(rows, n)``, C-contiguous), largest first, ties to the lower index."""
    cp = devices.cupy()
    rows, n = keys.shape
    out = cp.empty((rows, k), np.int32)
    if rows and k:
        _kernel()((rows,), (_THREADS,), (keys, np.int32(n), np.int32(k),
                                         np.int32(index_digits(n)), out))
    return out
