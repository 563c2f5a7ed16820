"""CUDA kernels (attention, normalization, im2col, graph copy-in) run on the CPU against
NumPy.

CI has no GPU, so these tests compile the kernels' CUDA source with g++ against
tests/kernel_emulator/cuda_on_cpu.h (threads, barriers and warp shuffles emulated) and
compare what they write with the primitives' NumPy implementations. They catch indexing,
tiling, masking and reduction bugs; speed and the half-type conversions need the GPU tests.
jit's generated fused row reductions run the same way in test_fused_rows_on_cpu.py.
"""

import shutil

import numpy as np
import pytest

from flamefx.kernels import cuda_attention, cuda_attention_gemm, cuda_norm
from flamefx.kernels.cuda_scalar import scalar_prelude
from flamefx.primitives import attention, normalization
from tests.emulated_kernels import EMULATOR, compile_kernel, run_kernel

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")



def _host_source(kernel_source: str, dtype) -> str:
    """CUDA source made compilable by g++ with the emulator header."""
    source = kernel_source.replace(scalar_prelude(dtype), scalar_prelude(dtype, False))
    source = source.replace("extern __shared__ __align__(16) unsigned char smem[];", "")
    return f'#include "{EMULATOR}"\n' + source.replace("__shared__", "static")


def _run(tmp_path, source, main, args, inputs, outputs):
    """Compiles ``source + main``, feeds ``inputs`` through in.bin, reads ``outputs``
    ((dtype, shape) pairs) back from out.bin."""
    exe = compile_kernel(tmp_path, source + main)
    raw = run_kernel(exe, tmp_path, args, b"".join(np.ascontiguousarray(a).tobytes()
                                                   for a in inputs))
    pos, got = 0, []
    for dtype, shape in outputs:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        got.append(np.frombuffer(raw[pos:pos + size], dtype).reshape(shape))
        pos += size
    return got


def _assert_close(got, want, name, tol):
    finite = np.isfinite(want)
    assert (np.isfinite(got) == finite).all(), f"{name}: infinities differ"
    scale = max(1.0, np.abs(want[finite]).max(initial=0.0))
    np.testing.assert_allclose(got[finite], want[finite], atol=tol * scale, rtol=0,
                               err_msg=name)


# --- attention ---------------------------------------------------------------------------------

ATTENTION_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int b = atoi(argv[2]), h = atoi(argv[3]), sq = atoi(argv[4]), sk = atoi(argv[5]);
  const int d = atoi(argv[6]), dv = atoi(argv[7]), bias_b = atoi(argv[8]), bias_h = atoi(argv[9]);
  const ACC scale = atof(argv[10]), mask_value = atof(argv[11]);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto q = read_array<T>(f, (size_t)b * h * sq * d);
  auto k = read_array<T>(f, (size_t)b * h * sk * d);
  auto v = read_array<T>(f, (size_t)b * h * sk * dv);
  auto bias = read_array<T>(f, HAS_BIAS ? (size_t)bias_b * bias_h * sq * sk : 1);
  auto dout = read_array<T>(f, (size_t)b * h * sq * dv);
  auto dlse = read_array<ACC>(f, (size_t)b * h * sq);
  fclose(f);
  const long long sb = bias_b == 1 ? 0 : (long long)bias_h * sq * sk;
  const long long sh = bias_h == 1 ? 0 : (long long)sq * sk;
  std::vector<T> out(dout.size()), dq(q.size()), dk(k.size()), dvs(v.size());
  std::vector<ACC> lse(dlse.size()), delta(dlse.size()), dbias((size_t)b * h * sq * sk, 0);
  const Dim3 block{256, 1, 1}, q_tiles{(unsigned)(sq + 63) / 64, (unsigned)(b * h), 1};
  const Dim3 k_tiles{(unsigned)(sk + 63) / 64, (unsigned)(b * h), 1};
  const long long rows = (long long)b * h * sq;
  launch(q_tiles, block, [&] {
    flamefx_flash_forward(q.data(), k.data(), v.data(), bias.data(), out.data(), lse.data(), h,
                          sq, sk, d, dv, sb, sh, scale, mask_value); });
  launch(Dim3{(unsigned)((rows * 32 + 255) / 256), 1, 1}, block, [&] {
    flamefx_flash_delta(out.data(), dout.data(), dlse.data(), delta.data(), rows, dv); });
  launch(q_tiles, block, [&] {
    flamefx_flash_backward_dq(q.data(), k.data(), v.data(), bias.data(), dout.data(),
                              lse.data(), delta.data(), dq.data(), dbias.data(), h, sq, sk, d,
                              dv, sb, sh, scale, mask_value); });
  launch(k_tiles, block, [&] {
    flamefx_flash_backward_dkdv(q.data(), k.data(), v.data(), bias.data(), dout.data(),
                                lse.data(), delta.data(), dk.data(), dvs.data(), h, sq, sk, d,
                                dv, sb, sh, scale, mask_value); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, out); write_array(o, lse); write_array(o, dq); write_array(o, dk);
  write_array(o, dvs); write_array(o, dbias);
  fclose(o);
}
"""

ATTENTION_CASES = [
    # two query and key tiles, a partial last tile, keys hidden by bias and causally
    {"b": 2, "h": 1, "sq": 70, "sk": 70, "d": 8, "dv": 8, "causal": True,
     "bias": (2, 1, 70, 70), "masked": 0.3},
    # cross attention, head dims that are not multiples of 16, three key tiles
    {"b": 1, "h": 2, "sq": 20, "sk": 130, "d": 40, "dv": 24, "causal": False,
     "bias": None, "masked": 0.0},
    # float64, a row that sees no key at all
    {"b": 1, "h": 1, "sq": 3, "sk": 5, "d": 4, "dv": 4, "causal": False,
     "bias": (1, 1, 3, 5), "masked": 0.0, "dtype": np.float64, "hide_row": 1},
    # key counts that are multiples of 4
    {"b": 1, "h": 2, "sq": 9, "sk": 36, "d": 8, "dv": 8, "causal": True,
     "bias": (1, 2, 9, 36), "masked": 0.3},
    {"b": 2, "h": 1, "sq": 5, "sk": 12, "d": 4, "dv": 4, "causal": False,
     "bias": None, "masked": 0.0, "dtype": np.float64},
]


def _attention_inputs(c, seed):
    """q, k, v, the optional masked bias (as a list), dout and dlse for one ATTENTION_CASES
    entry ``c``."""
    dtype = np.dtype(c.get("dtype", np.float32))
    rng = np.random.default_rng(seed)
    b, h, sq, sk, d, dv = (c[key] for key in ("b", "h", "sq", "sk", "d", "dv"))
    q = rng.standard_normal((b, h, sq, d)).astype(dtype)
    k = rng.standard_normal((b, h, sk, d)).astype(dtype)
    v = rng.standard_normal((b, h, sk, dv)).astype(dtype)
    extra = []
    if c["bias"]:
        bias = rng.standard_normal(c["bias"]).astype(dtype)
        hidden = rng.random(c["bias"]) < c["masked"]
        if "hide_row" in c:
            hidden[..., c["hide_row"], :] = True
        extra = [np.where(hidden, attention.masked_score(dtype), bias).astype(dtype)]
    dout = rng.standard_normal((b, h, sq, dv)).astype(dtype)
    dlse = rng.standard_normal((b, h, sq)).astype(dtype)
    return q, k, v, extra, dout, dlse


@pytest.mark.parametrize("case", range(len(ATTENTION_CASES)))
def test_attention_kernels_match_numpy(tmp_path, case):
    c = ATTENTION_CASES[case]
    q, k, v, extra, dout, dlse = _attention_inputs(c, case)
    dtype = q.dtype
    b, h, sq, sk, d, dv = (c[key] for key in ("b", "h", "sq", "sk", "d", "dv"))
    scale = 1 / np.sqrt(d)
    source = cuda_attention.kernel_source(dtype, cuda_attention._padded(d),
                                          cuda_attention._padded(dv), c["causal"], bool(extra))
    bias_b, bias_h = c["bias"][:2] if c["bias"] else (1, 1)
    got = _run(tmp_path, _host_source(source, dtype), ATTENTION_MAIN,
               [b, h, sq, sk, d, dv, bias_b, bias_h, repr(float(scale)),
                repr(attention.masked_score(dtype))],
               [q, k, v, extra[0] if extra else np.zeros(1, dtype), dout, dlse],
               [(dtype, (b, h, sq, dv)), (dtype, (b, h, sq)), (dtype, q.shape),
                (dtype, k.shape), (dtype, v.shape), (dtype, (b, h, sq, sk))])
    params = {"is_causal": c["causal"], "scale": scale}
    out, lse = attention._fwd_impl(q, k, v, *extra, **params)
    grads = attention._bwd_impl(q, k, v, *extra, out, lse, dout, dlse, **params)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, [out, lse] + grads):
        _assert_close(g, w, name, tol)
    if extra:
        axes = tuple(i for i in range(2) if c["bias"][i] == 1 and (b, h)[i] != 1)
        dbias = got[5].sum(axis=axes, keepdims=True) if axes else got[5]
        _assert_close(dbias, grads[3], "dbias", tol)


GEMM_ROWS_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
// The GEMM path's row kernels over two chunks of batch * heads (the second starts at bh
// `split`), with the products done in NumPy: s = q k^T, dp = dout v^T come in.
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int b = atoi(argv[2]), h = atoi(argv[3]), sq = atoi(argv[4]), sk = atoi(argv[5]);
  const int dv = atoi(argv[6]), bias_b = atoi(argv[7]), bias_h = atoi(argv[8]);
  const ACC scale = atof(argv[9]), mask_value = atof(argv[10]);
  const int split = atoi(argv[11]);
  const long long n_scores = (long long)b * h * sq * sk, rows = (long long)b * h * sq;
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto s = read_array<ACC>(f, n_scores);
  auto dp = read_array<ACC>(f, n_scores);
  auto bias = read_array<T>(f, HAS_BIAS ? (size_t)bias_b * bias_h * sq * sk : 1);
  auto out = read_array<T>(f, rows * dv);
  auto dout = read_array<T>(f, rows * dv);
  auto dlse = read_array<ACC>(f, rows);
  fclose(f);
  const long long sb = bias_b == 1 ? 0 : (long long)bias_h * sq * sk;
  const long long sh = bias_h == 1 ? 0 : (long long)sq * sk;
  std::vector<T> p(n_scores), p2(n_scores), ds(n_scores);
  std::vector<ACC> lse(rows), delta(rows), dbias(n_scores, 0);
  launch(Dim3{(unsigned)((rows * 32 + 255) / 256), 1, 1}, Dim3{256, 1, 1}, [&] {
    flamefx_flash_delta(out.data(), dout.data(), dlse.data(), delta.data(), rows, dv); });
  const int starts[2] = {0, split}, stops[2] = {split, b * h};
  for (int chunk = 0; chunk < 2; ++chunk) {
    const long long r0 = (long long)starts[chunk] * sq;
    const long long n_rows = (long long)(stops[chunk] - starts[chunk]) * sq;
    if (n_rows == 0) continue;
    launch(Dim3{(unsigned)((n_rows * 32 + 255) / 256), 1, 1}, Dim3{256, 1, 1}, [&] {
      flamefx_attention_softmax(s.data() + r0 * sk, p.data() + r0 * sk, bias.data(),
                                lse.data() + r0, n_rows, h, sq, sk, starts[chunk], sb, sh,
                                scale, mask_value); });
    launch(Dim3{(unsigned)n_rows, 1, 1}, Dim3{64, 1, 1}, [&] {
      flamefx_attention_score_grads(s.data() + r0 * sk, dp.data() + r0 * sk, bias.data(),
                                    lse.data() + r0, delta.data() + r0, p2.data() + r0 * sk,
                                    ds.data() + r0 * sk, dbias.data() + r0 * sk, h, sq, sk,
                                    starts[chunk], sb, sh, scale, mask_value); });
  }
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, p); write_array(o, lse); write_array(o, p2); write_array(o, ds);
  write_array(o, dbias);
  fclose(o);
}
"""


@pytest.mark.parametrize("case", range(len(ATTENTION_CASES)))
def test_attention_gemm_path_row_kernels_match_numpy(tmp_path, case):
    c = ATTENTION_CASES[case]
    q, k, v, extra, dout, dlse = _attention_inputs(c, 10 + case)
    dtype = q.dtype
    b, h, sq, sk, d, dv = (c[key] for key in ("b", "h", "sq", "sk", "d", "dv"))
    scale = 1 / np.sqrt(d)
    params = {"is_causal": c["causal"], "scale": scale}
    out, lse = attention._fwd_impl(q, k, v, *extra, **params)
    grads = attention._bwd_impl(q, k, v, *extra, out, lse, dout, dlse, **params)
    s = np.einsum("bhqd,bhkd->bhqk", q, k)
    dp = np.einsum("bhqd,bhkd->bhqk", dout, v)
    source = cuda_attention_gemm.kernel_source(dtype, c["causal"], bool(extra))
    bias_b, bias_h = c["bias"][:2] if c["bias"] else (1, 1)
    scores = (dtype, (b, h, sq, sk))
    p, got_lse, p2, ds, dbias_full = _run(
        tmp_path, _host_source(source, dtype), GEMM_ROWS_MAIN,
        [b, h, sq, sk, dv, bias_b, bias_h, repr(float(scale)),
         repr(attention.masked_score(dtype)), (b * h) // 2],
        [s, dp, extra[0] if extra else np.zeros(1, dtype), out, dout, dlse],
        [scores, (dtype, (b, h, sq)), scores, scores, scores])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    _assert_close(np.einsum("bhqk,bhkd->bhqd", p, v), out, "out", tol)
    _assert_close(got_lse, lse, "lse", tol)
    _assert_close(p2, p, "recomputed p", tol)
    for name, got, want in (("dq", np.einsum("bhqk,bhkd->bhqd", ds, k), grads[0]),
                            ("dk", np.einsum("bhqk,bhqd->bhkd", ds, q), grads[1]),
                            ("dv", np.einsum("bhqk,bhqd->bhkd", p2, dout), grads[2])):
        _assert_close(got, want, name, tol)
    if extra:
        axes = tuple(i for i in range(2) if c["bias"][i] == 1 and (b, h)[i] != 1)
        dbias = dbias_full.sum(axis=axes, keepdims=True) if axes else dbias_full
        _assert_close(dbias, grads[3], "dbias", tol)


ROWS_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
// The row-cotangent pass over every head at once, blocks of 64 threads (sk = 100 needs two
// column chunks, the second partial) and slices of `slice_rows` rows.
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int heads = atoi(argv[2]), sq = atoi(argv[3]), sk = atoi(argv[4]);
  const int slice_rows = atoi(argv[5]);
  const ACC scale = atof(argv[6]);
  const long long n_scores = (long long)heads * sq * sk, rows = (long long)heads * sq;
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto p = read_array<ACC>(f, n_scores);
  auto g = read_array<ACC>(f, rows);
  auto vsum = read_array<ACC>(f, (size_t)heads * sk);
  auto delta = read_array<ACC>(f, rows);
  fclose(f);
  const int slices = (sq + slice_rows - 1) / slice_rows, chunks = (sk + 63) / 64;
  std::vector<ACC> ds(n_scores, -777), dbias(n_scores, -777);
  std::vector<ACC> partial((size_t)slices * heads * sk, -777);
  launch(Dim3{(unsigned)(chunks * slices * heads), 1, 1}, Dim3{64, 1, 1}, [&] {
    flamefx_attention_probs_grads_rows(p.data(), ds.data(), g.data(), vsum.data(),
                                       delta.data(), dbias.data(), partial.data(), heads, sq,
                                       sk, slice_rows, scale); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, ds); write_array(o, dbias); write_array(o, partial);
  fclose(o);
}
"""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_cotangent_pass_gives_ds_and_dv_of_a_broadcast_dout(tmp_path, dtype):
    """dO constant along the value dim: the pass's dS and column sums equal the full
    formula's dS = P (dO Vᵀ - delta) and dV = Pᵀ dO with dO broadcast."""
    rng = np.random.default_rng(3)
    heads, sq, sk, dv, slice_rows, scale = 3, 37, 100, 5, 16, 0.3
    p = rng.random((heads, sq, sk)).astype(dtype)
    v = rng.standard_normal((heads, sk, dv)).astype(dtype)
    g = rng.standard_normal((heads, sq)).astype(dtype)
    delta = rng.standard_normal((heads, sq)).astype(dtype)
    dout = np.broadcast_to(g[..., None], (heads, sq, dv))
    slices = -(-sq // slice_rows)
    source = cuda_attention_gemm.kernel_source(np.dtype(dtype), False, True)
    ds, dbias, partial = _run(
        tmp_path, _host_source(source, dtype), ROWS_MAIN,
        [heads, sq, sk, slice_rows, repr(scale)], [p, g, v.sum(-1), delta],
        [(dtype, (heads, sq, sk)), (dtype, (heads, sq, sk)), (dtype, (slices, heads, sk))])
    want_ds = p * (np.einsum("hqd,hkd->hqk", dout, v) - delta[..., None])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    _assert_close(dbias, want_ds, "dbias", tol)
    _assert_close(ds, want_ds * scale, "ds", tol)
    want_dv = np.einsum("hqk,hqd->hkd", p, dout)
    _assert_close(np.broadcast_to(partial.sum(0)[..., None], want_dv.shape), want_dv, "dv",
                  tol)


# --- normalizations ----------------------------------------------------------------------------

NORM_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const long long rows = atoll(argv[2]), row_len = atoll(argv[3]), inner = atoll(argv[5]);
  const int groups = atoi(argv[4]), centered = atoi(argv[6]);
  const long long n_params = atoll(argv[7]);
  const ACC epsilon = atof(argv[8]);
  const int chunks = atoi(argv[9]);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto x = read_array<T>(f, rows * row_len);
  auto scale = read_array<T>(f, n_params);
  auto bias = read_array<T>(f, n_params);
  auto dy = read_array<T>(f, rows * row_len);
  auto dmean = read_array<ACC>(f, rows);
  auto drstd = read_array<ACC>(f, rows);
  fclose(f);
  std::vector<T> y(x.size()), dx(x.size()), dscale(n_params), dbias(n_params);
  std::vector<ACC> mean(rows, 0), rstd(rows), partial(2 * chunks * n_params, (ACC)-777);
  const Dim3 block{256, 1, 1}, per_row{(unsigned)rows, 1, 1};
  launch(per_row, block, [&] {
    flamefx_norm_forward(x.data(), scale.data(), bias.data(), y.data(), mean.data(),
                         rstd.data(), row_len, groups, inner, epsilon, centered, centered); });
  launch(per_row, block, [&] {
    flamefx_norm_backward_input(x.data(), scale.data(), dy.data(), mean.data(), rstd.data(),
                                dmean.data(), drstd.data(), dx.data(), row_len, groups, inner,
                                centered); });
  launch(Dim3{(unsigned)n_params, (unsigned)chunks, 1}, block, [&] {
    flamefx_norm_backward_params_partial(x.data(), dy.data(), mean.data(), rstd.data(),
                                         partial.data(), rows, row_len, groups, inner,
                                         centered); });
  launch(Dim3{(unsigned)((n_params + 255) / 256), 1, 1}, block, [&] {
    flamefx_norm_backward_params_finish(partial.data(), dscale.data(), dbias.data(), n_params,
                                        chunks, 1); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, y); write_array(o, mean); write_array(o, rstd); write_array(o, dx);
  write_array(o, dscale); write_array(o, dbias);
  fclose(o);
}
"""

# kind, shape, groups, chunks of each parameter's rows in the parameter-gradient pass (more
# chunks than rows leaves empty chunks).
NORM_CASES = [("layer", (3, 4, 70), 0, 5), ("group", (2, 8, 6, 5), 4, 1),
              ("group", (5, 6, 7), 3, 2), ("rms", (5, 40), 0, 8)]


@pytest.mark.parametrize("case", range(len(NORM_CASES)))
def test_norm_kernels_match_numpy(tmp_path, case):
    kind, shape, num_groups, chunks = NORM_CASES[case]
    dtype = np.dtype(np.float32)
    rng = np.random.default_rng(case)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    if kind == "group":
        rows, inner, param_shape = shape[0] * num_groups, int(np.prod(shape[2:])), shape[1:2]
    else:
        rows, inner, param_shape = int(np.prod(shape[:-1])), 1, shape[-1:]
    scale, bias = (rng.standard_normal(param_shape).astype(dtype) for _ in range(2))
    dy = rng.standard_normal(shape).astype(dtype)
    dmean, drstd = (rng.standard_normal(rows).astype(dtype) for _ in range(2))
    centered = kind != "rms"
    got = _run(tmp_path, _host_source(cuda_norm.kernel_source(dtype), dtype), NORM_MAIN,
               [rows, x.size // rows, max(num_groups, 1), inner, int(centered), scale.size,
                1e-5, chunks], [x, scale, bias, dy, dmean, drstd],
               [(dtype, shape), (dtype, (rows,)), (dtype, (rows,)), (dtype, shape),
                (dtype, param_shape), (dtype, param_shape)])
    axes = (x.ndim - 1,)
    if kind == "layer":
        y, mean, rstd = normalization._layer_norm_impl(x, scale, bias, axes=axes, epsilon=1e-5)
    elif kind == "group":
        y, mean, rstd = normalization._group_norm_impl(x, scale, bias, num_groups=num_groups,
                                                       epsilon=1e-5)
    else:
        y, rstd = normalization._rms_norm_impl(x, scale, axes=axes, epsilon=1e-5)
        mean = np.zeros_like(rstd)
    grads = normalization._bwd_impl(x, scale, dy, mean, rstd, dmean.reshape(rstd.shape),
                                    drstd.reshape(rstd.shape), centered=centered,
                                    num_groups=num_groups, n_axes=0 if num_groups else 1)
    wants = [y, mean.reshape(-1), rstd.reshape(-1)] + grads
    for name, g, w in zip(("y", "mean", "rstd", "dx", "dscale", "dbias"), got, wants):
        if centered or name not in ("mean", "dbias"):
            _assert_close(g, w, name, 1e-5)


# --- convolution -------------------------------------------------------------------------------

IM2COL_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const long long x_size = atoll(argv[2]), col_size = atoll(argv[3]);
  const Dim3 grid{(unsigned)atoi(argv[4]), (unsigned)atoi(argv[5]), 1};
  const Dim3 block{(unsigned)atoi(argv[6]), 1, 1};
  long long a[26];
  for (int i = 0; i < 26; ++i) a[i] = atoll(argv[7 + i]);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto x = read_array<T>(f, x_size);
  fclose(f);
  std::vector<T> col(col_size, (T)-777);  // a position the kernel misses shows up
  launch(grid, block, [&] {
    flamefx_im2col(x.data(), col.data(), a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                   a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19],
                   a[20], a[21], a[22], a[23], a[24], a[25]); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, col);
  fclose(o);
}
"""

# x shape, w shape, strides, padding, lhs dilation, rhs dilation, groups, example-major
# patch layout, 64-bit indices, patch rows per block (small: row chunks end mid-channel),
# output positions per thread (VEC: 4 when the innermost output size allows, else 2, 1).
IM2COL_CASES = [
    ((2, 4, 7, 5), (6, 2, 3, 2), (2, 1), ((1, 2), (-1, 1)), (1, 2), (2, 1), 2, False, False, 16,
     4),
    ((3, 3, 6, 5), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1, True, False, 5, 1),
    ((3, 3, 6, 5), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1, False, True, 4, 1),
    ((2, 2, 4, 3, 5), (3, 2, 2, 2, 3), (1, 2, 1), ((0, 1), (1, 1), (1, 0)), (1, 1, 1),
     (1, 1, 2), 1, True, True, 7, 2),
    ((2, 6, 8), (4, 3, 3), (2,), ((2, -1),), (3,), (2,), 2, True, False, 3, 2),
    # W2's 3x3 'same' conv in small: rows of 8 positions, padding read on both edges
    ((3, 4, 5, 8), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1, True, True, 7, 4),
    ((2, 4, 6, 8), (4, 2, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), 2, False, False, 5,
     4),
]


@pytest.mark.parametrize("case", range(len(IM2COL_CASES)))
def test_im2col_kernel_gives_the_loop_reference_conv(tmp_path, case):
    """The forward conv and the weight gradient, contracted from the kernel's patches the
    way cuda_conv's GEMMs contract them in that layout, against the direct loops."""
    from flamefx.kernels import cuda_conv
    from flamefx.primitives.nn_ops import conv_output_spatial
    from tests.samples.nn_ops import conv_reference, conv_weight_grad_reference

    (x_shape, w_shape, strides, padding, lhs, rhs, groups, example_major, wide_index,
     rows_per_block, vectors) = IM2COL_CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    out_spatial = conv_output_spatial(x.shape[2:], w.shape[2:], strides, padding, lhs, rhs)
    positions, group_rows = int(np.prod(out_spatial)), c // groups * int(np.prod(w.shape[2:]))
    geometry = cuda_conv._geometry(x.shape[2:], out_spatial, w.shape[2:], strides, padding,
                                   lhs, rhs)
    grid, block, args, _, vector = cuda_conv.im2col_launch(n, c, geometry, example_major,
                                                           rows_per_block)
    assert grid[1] > 1, "the case should span several row chunks"
    assert vector == vectors, "the case should have this many positions per thread"
    source = _host_source(cuda_conv.kernel_source(np.float64, any(d != 1 for d in lhs),
                                                  wide_index, vector), np.float64)
    col_size = groups * group_rows * n * positions
    (col,) = _run(tmp_path, source, IM2COL_MAIN,
                  [x.size, col_size, *grid, *block] + [int(v) for v in args], [x],
                  [(np.float64, (col_size,))])
    weights = w.reshape(groups, o // groups, group_rows)
    ct = rng.standard_normal((n, o) + out_spatial)
    if example_major:  # col is (N, G, C/G * taps, P)
        col = col.reshape(n, groups, group_rows, positions)
        out = np.matmul(weights, col)
        # per-example partials ct[n, g] @ col[n, g]^T, summed over the examples
        dw = np.matmul(ct.reshape(n, groups, o // groups, positions),
                       col.transpose(0, 1, 3, 2)).sum(0)
    else:  # col is (G, C/G * taps, N * P)
        col = col.reshape(groups, group_rows, n * positions)
        out = np.matmul(weights, col)
        out = out.reshape(groups, o // groups, n, positions).transpose(2, 0, 1, 3)
        ct_rows = ct.reshape(n, groups, o // groups, positions).transpose(1, 2, 0, 3)
        dw = np.matmul(ct_rows.reshape(groups, o // groups, n * positions),
                       col.transpose(0, 2, 1))
    want = conv_reference(x, w, strides, padding, lhs, rhs, groups)
    np.testing.assert_allclose(out.reshape(want.shape), want, atol=1e-12)
    want_dw = conv_weight_grad_reference(ct, x, w.shape, strides, padding, lhs, rhs, groups)
    np.testing.assert_allclose(dw.reshape(w.shape), want_dw, atol=1e-11)


SUM_OVER_EXAMPLES_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int n = atoi(argv[2]), first_chunk = atoi(argv[3]);
  const long long size = atoll(argv[4]);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto partial = read_array<ACC>(f, (size_t)n * size);
  fclose(f);
  std::vector<ACC> carry(size, (ACC)-777);
  std::vector<T> whole(size), chunked(size);
  const Dim3 grid{(unsigned)((size + 255) / 256), 1, 1}, block{256, 1, 1};
  // The whole batch at once, then as two chunks carried through `carry`.
  launch(grid, block, [&] {
    flamefx_sum_over_examples(partial.data(), carry.data(), whole.data(), n, size, 0, 0); });
  launch(grid, block, [&] {
    flamefx_sum_over_examples(partial.data(), carry.data(), chunked.data(), first_chunk, size,
                              0, 1); });
  launch(grid, block, [&] {
    flamefx_sum_over_examples(partial.data() + first_chunk * size, carry.data(),
                              chunked.data(), n - first_chunk, size, 1, 0); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, whole);
  write_array(o, chunked);
  fclose(o);
}
"""


def test_weight_gradient_sum_over_examples_whole_and_in_chunks(tmp_path):
    from flamefx.kernels import cuda_conv

    n, size = 5, 300  # two blocks, the second partial
    partial = np.random.default_rng(0).standard_normal((n, size))
    source = _host_source(cuda_conv.sum_over_examples_source(np.float64), np.float64)
    whole, chunked = _run(tmp_path, source, SUM_OVER_EXAMPLES_MAIN, [n, 2, size], [partial],
                          [(np.float64, (size,)), (np.float64, (size,))])
    np.testing.assert_allclose(whole, partial.sum(0), atol=1e-12)
    np.testing.assert_allclose(chunked, partial.sum(0), atol=1e-12)


_COPY_MAIN = r"""
#include <cstdio>
#include <cstring>
int main(int argc, char** argv) {
  alignas(16) static unsigned char src[512], dst[512];
  std::string dir = argv[1];
  FILE* in = fopen((dir + "/in.bin").c_str(), "rb");
  fread(src, 1, 512, in);
  fclose(in);
  // (source offset, destination offset, bytes): aligned with a tail, tiny, misaligned.
  const long long copies[3][3] = {{0, 0, 28}, {64, 96, 13}, {132, 160, 200}};
  auto at = [](unsigned char* base, long long offset) {
    return (unsigned long long)(base + offset); };
  launch(Dim3{2, 3, 1}, Dim3{256, 1, 1}, [&] {
    flamefx_copy_in(at(src, copies[0][0]), at(dst, copies[0][1]), copies[0][2],
                    at(src, copies[1][0]), at(dst, copies[1][1]), copies[1][2],
                    at(src, copies[2][0]), at(dst, copies[2][1]), copies[2][2]);
  });
  FILE* out = fopen((dir + "/out.bin").c_str(), "wb");
  fwrite(dst, 1, 512, out);
  fclose(out);
}
"""


def test_graph_copy_in_kernel_copies_aligned_tiny_and_misaligned_buffers(tmp_path):
    from flamefx.kernels.graphs import copy_source
    source = f'#include "{EMULATOR}"\n' + copy_source(3)
    src = np.random.default_rng(0).integers(0, 256, 512).astype(np.uint8)
    (got,) = _run(tmp_path, source, _COPY_MAIN, [], [src], [(np.uint8, (512,))])
    want = np.zeros(512, np.uint8)
    for s, d, n in [(0, 0, 28), (64, 96, 13), (132, 160, 200)]:
        want[d:d + n] = src[s:s + n]
    np.testing.assert_array_equal(got, want)
