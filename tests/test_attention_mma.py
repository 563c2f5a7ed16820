"""The tensor-core attention kernels (flamefx/kernels/cuda_attention_mma.py).

On the CPU the kernels' CUDA source runs under tests/kernel_emulator/cuda_on_cpu.h with
FLAMEFX_EMULATED_MMA, which replaces the inline-PTX mma.sync by a warp-level emulation in
the documented fragment layouts, so the tiling, masking, online softmax and fragment
shuffling are checked against a NumPy float64 reference without a GPU. The ``gpu`` tests
run the real kernels (through the flash_attention primitives) against the same reference,
and check that a bfloat16 sequence of 8192 stays linear in memory.
"""

import ml_dtypes
import numpy as np
import pytest

import flamefx
from flamefx import core
from flamefx.kernels import cuda_attention_mma
from flamefx.primitives import attention
from tests.test_kernels_on_cpu import _assert_close, _host_source, _run

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)

EMULATOR_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int bh = atoi(argv[2]), sq = atoi(argv[3]), sk = atoi(argv[4]);
  const float scale = atof(argv[5]);
  const int fwd_smem = atoi(argv[6]), kv_smem = atoi(argv[7]);
  const unsigned fwd_rows = 16 * FWD_WARPS, bwd_keys = 16 * BWD_WARPS;
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto q = read_array<T>(f, (size_t)bh * sq * D);
  auto k = read_array<T>(f, (size_t)bh * sk * D);
  auto v = read_array<T>(f, (size_t)bh * sk * DV);
  auto dout = read_array<T>(f, (size_t)bh * sq * DV);
  auto dlse = read_array<float>(f, (size_t)bh * sq);
  fclose(f);
  if (max(fwd_smem, kv_smem) > (int)sizeof(smem)) return 3;
  std::vector<T> out(dout.size()), dq(q.size()), dk(k.size()), dvs(v.size());
  std::vector<float> lse(dlse.size()), terms(4 * dlse.size());
  const long long rows = (long long)bh * sq, key_rows = DOUT_ROWS ? (long long)bh * sk : 0;
  const int sk_padded = (sk + 3) / 4 * 4;
  std::vector<float> vsum((size_t)bh * sk_padded, 0.f);
  float4* row_terms = reinterpret_cast<float4*>(terms.data());
  launch(Dim3{(sq + fwd_rows - 1) / fwd_rows, (unsigned)bh, 1}, Dim3{2 * fwd_rows, 1, 1}, [&] {
    flamefx_mma_attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), sq,
                                  sk, scale * 1.4426950408889634f); });
  const unsigned term_blocks = (unsigned)(((rows + key_rows) * TERM_LANES + 255) / 256);
  launch(Dim3{term_blocks, 1, 1}, Dim3{256, 1, 1}, [&] {
    flamefx_mma_backward_terms(out.data(), dout.data(), lse.data(), dlse.data(), row_terms,
                               v.data(), vsum.data(), rows, key_rows, sk, sk_padded); });
  std::vector<float> dq_acc(DOUT_ROWS ? 1 : q.size(), 0.f);
  launch(Dim3{(sk + bwd_keys - 1) / bwd_keys, (unsigned)bh, 1}, Dim3{2 * bwd_keys, 1, 1}, [&] {
    flamefx_mma_attention_backward_kv(q.data(), k.data(), v.data(), dout.data(), row_terms,
                                      vsum.data(), dk.data(), dvs.data(), dq_acc.data(), sq,
                                      sk, sk_padded, scale, scale * 1.4426950408889634f); });
#if DOUT_ROWS
  launch(Dim3{(sq + fwd_rows - 1) / fwd_rows, (unsigned)bh, 1}, Dim3{2 * fwd_rows, 1, 1}, [&] {
    flamefx_mma_attention_backward_q(q.data(), k.data(), row_terms, vsum.data(), dq.data(),
                                     sq, sk, sk_padded, scale, scale * 1.4426950408889634f); });
#else
  launch(Dim3{4, 1, 1}, Dim3{64, 1, 1}, [&] {
    flamefx_mma_attention_dq_convert(dq_acc.data(), dq.data(), (long long)dq.size()); });
#endif
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, out); write_array(o, lse); write_array(o, dq); write_array(o, dk);
  write_array(o, dvs);
  fclose(o);
}
"""

# Small enough for the emulator (one thread per CUDA thread) to finish in seconds. "warps":
# warps per forward and backward block (16 query rows or keys each).
EMULATOR_CASES = [
    # two query and key tiles with partial last tiles, causal, both half types
    {"bh": 2, "sq": 70, "sk": 70, "d": 64, "dv": 64, "causal": True, "dtype": BF16,
     "warps": (4, 4)},
    {"bh": 1, "sq": 70, "sk": 75, "d": 64, "dv": 64, "causal": True, "dtype": F16,
     "warps": (8, 8)},
    # a single query and key
    {"bh": 1, "sq": 1, "sk": 1, "d": 32, "dv": 32, "causal": False, "dtype": BF16,
     "warps": (4, 4)},
    # cross attention, different head dims, three key tiles
    {"bh": 1, "sq": 20, "sk": 130, "d": 128, "dv": 32, "causal": False, "dtype": BF16,
     "warps": (4, 8)},
    # causal with more queries than keys (late rows see every key), more keys than queries
    {"bh": 1, "sq": 100, "sk": 40, "d": 32, "dv": 64, "causal": True, "dtype": F16,
     "warps": (8, 8)},
    {"bh": 1, "sq": 40, "sk": 150, "d": 16, "dv": 16, "causal": True, "dtype": BF16,
     "warps": (8, 4)},
]


def _inputs(bh, sq, sk, d, dv, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((1, bh, s, d)).astype(dtype) for s in (sq, sk))
    v = rng.standard_normal((1, bh, sk, dv)).astype(dtype)
    dout = rng.standard_normal((1, bh, sq, dv)).astype(dtype)
    dlse = rng.standard_normal((1, bh, sq)).astype(np.float32)
    return q, k, v, dout, dlse


def _reference(q, k, v, dout, dlse, is_causal, scale):
    """Forward and backward in float64 from the half inputs: [out, lse, dq, dk, dv]."""
    q, k, v, dout = (a.astype(np.float64) for a in (q, k, v, dout))
    params = {"is_causal": is_causal, "scale": scale}
    out, lse = attention._fwd_impl(q, k, v, **params)
    grads = attention._bwd_impl(q, k, v, out, lse, dout, dlse.astype(np.float64), **params)
    return [out, lse] + grads


# Half outputs, P and dS rounded to the half type before their products: a few ulps of
# bfloat16 relative to each output's largest entry.
TOLERANCE = {BF16: 2e-2, F16: 4e-3}


# The backward with one output cotangent per query row (jit's narrow_attention_cotangents):
# dout comes in as (bh, sq).
ROWS_MAIN = EMULATOR_MAIN.replace(
    "auto dout = read_array<T>(f, (size_t)bh * sq * DV);",
    "auto dout = read_array<T>(f, (size_t)bh * sq);").replace(
    "std::vector<T> out(dout.size()),", "std::vector<T> out((size_t)bh * sq * DV),")


@pytest.mark.parametrize("case, rows", [(case, False) for case in range(len(EMULATOR_CASES))]
                         + [(0, True), (3, True), (5, True)])
def test_mma_kernels_on_the_cpu_emulator_match_numpy(tmp_path, case, rows):
    c = EMULATOR_CASES[case]
    dtype, bh, sq, sk, d, dv = (c[key] for key in ("dtype", "bh", "sq", "sk", "d", "dv"))
    q, k, v, dout, dlse = _inputs(bh, sq, sk, d, dv, dtype, case)
    if rows:  # one cotangent per query row: the kernels read (bh, sq), NumPy the broadcast
        dout = np.ascontiguousarray(dout[..., :1])
        assert ROWS_MAIN.count("auto dout = read_array<T>(f, (size_t)bh * sq);") == 1
    scale = 1 / np.sqrt(d)
    forward_warps, backward_warps = c["warps"]
    source = "#define FLAMEFX_EMULATED_MMA\n" + _host_source(
        cuda_attention_mma.kernel_source(dtype, d, dv, c["causal"], forward_warps,
                                         backward_warps, dout_rows=rows), dtype)
    shapes = [(dtype, (bh, sq, dv)), (np.float32, (bh, sq)), (dtype, (bh, sq, d)),
              (dtype, (bh, sk, d)), (dtype, (bh, sk, dv))]
    got = _run(tmp_path, source, ROWS_MAIN if rows else EMULATOR_MAIN,
               [bh, sq, sk, repr(float(scale)), cuda_attention_mma.forward_shared_bytes(d, dv),
                cuda_attention_mma.backward_kv_shared_bytes(d, dv, rows, backward_warps)],
               [q, k, v, dout, dlse], shapes)
    want = _reference(q, k, v, np.broadcast_to(dout, q.shape[:3] + (dv,)), dlse, c["causal"],
                      scale)
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, want):
        _assert_close(g.astype(np.float64), w.reshape(g.shape), name, TOLERANCE[dtype])


def test_supports_only_half_types_without_bias_and_head_dims_of_16s():
    shape = (2, 4, 100, 64)
    assert cuda_attention_mma.supports_shapes(BF16, shape, shape, None)
    assert cuda_attention_mma.supports_shapes(F16, shape, (2, 4, 100, 128), None)
    assert not cuda_attention_mma.supports_shapes(np.float32, shape, shape, None)
    assert not cuda_attention_mma.supports_shapes(BF16, shape, shape, object())
    assert not cuda_attention_mma.supports_shapes(BF16, (2, 4, 100, 40), shape, None)
    assert not cuda_attention_mma.supports_shapes(BF16, shape, (2, 4, 100, 256), None)


# --- GPU ---------------------------------------------------------------------------------------

GPU_CASES = [
    {"b": 2, "h": 3, "sq": 77, "sk": 130, "d": 64, "dv": 64, "causal": False},
    {"b": 1, "h": 2, "sq": 129, "sk": 129, "d": 64, "dv": 64, "causal": True},
    {"b": 1, "h": 1, "sq": 1, "sk": 1, "d": 32, "dv": 32, "causal": False},
    {"b": 1, "h": 2, "sq": 100, "sk": 90, "d": 128, "dv": 128, "causal": True},
    {"b": 2, "h": 2, "sq": 300, "sk": 200, "d": 16, "dv": 48, "causal": True},
    {"b": 8, "h": 8, "sq": 1024, "sk": 1024, "d": 64, "dv": 64, "causal": False},
]


def _on(device, *arrays):
    return [core.to_array(a, device=device) for a in arrays]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, warps, rows", [  # rows: dout one per query row (DOUT_ROWS)
    (BF16, (4, 4), False), (BF16, (8, 8), False), (F16, None, False), (BF16, (8, 8), True),
    (F16, None, True)])
@pytest.mark.parametrize("case", range(len(GPU_CASES)))
def test_gpu_mma_attention_matches_numpy(case, dtype, warps, rows, monkeypatch):
    if warps is not None:  # both block shapes, whichever the module picks by default
        monkeypatch.setattr(cuda_attention_mma, "_FORWARD_WARPS", warps[0])
        monkeypatch.setattr(cuda_attention_mma, "_BACKWARD_WARPS", warps[1])
    c = GPU_CASES[case]
    b, h, sq, sk, d, dv = (c[key] for key in ("b", "h", "sq", "sk", "d", "dv"))
    q, k, v, dout, dlse = _inputs(b * h, sq, sk, d, dv, dtype, 100 + case)
    q, k, v, dout = (a.reshape((b, h) + a.shape[2:]) for a in (q, k, v, dout))
    dlse = dlse.reshape(b, h, sq)
    if rows:
        dout = np.ascontiguousarray(dout[..., :1])
    assert cuda_attention_mma.supports_shapes(dtype, q.shape, v.shape, None)
    params = {"is_causal": c["causal"], "scale": 1 / np.sqrt(d)}
    want = _reference(q, k, v, dout, dlse, **params)
    gpu = flamefx.devices("gpu")[0]
    gq, gk, gv, gdout, gdlse = _on(gpu, q, k, v, dout, dlse)
    out, lse = attention.flash_attention_p.bind(gq, gk, gv, **params)
    # The backward from the reference forward, so its error is the backward's own.
    g_out, g_lse = _on(gpu, want[0].astype(dtype), want[1].astype(np.float32))
    grads = attention.flash_attention_bwd_p.bind(gq, gk, gv, g_out, g_lse, gdout, gdlse,
                                                 **params)
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), [out, lse] + list(grads), want):
        assert g.device.platform == "gpu"
        _assert_close(np.asarray(g, np.float64), w, name, TOLERANCE[dtype])
