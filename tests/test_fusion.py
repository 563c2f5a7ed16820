"""Fused elementwise kernels: the vectorized generator (flat and broadcast reads), its
kernels run on the CPU with g++, and per-example gradients' outer products on the GPU."""

import itertools
import shutil
import subprocess

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.kernels import codegen, fusion
from flamefx.transforms import passes
from tests.emulated_kernels import compile_kernel
from tests.test_jit import _gpu_plan, _on_gpu, _single_kernel, _x, w4_loss

# --- vectorized elementwise kernels (16-byte loads; checked on the CPU) ----------------------

BF16 = flamefx.dtypes.bfloat16
VECTOR_N = 2051  # not a multiple of 4 or 8: the scalar loop finishes the tail


def _mixed_dtypes(x, h, b, flag, i8, d, i64, s):
    y = x * s + h.astype(np.float32) * b.astype(np.float32)  # s is 0-d
    z = fnp.where(flag, y, -y)
    return (z.astype(np.float16), (z * 2.0).astype(BF16), d * 2.0 + z.astype(np.float64),
            i64 + i8.astype(np.int64), z > 0, i8 * 3)


def _vector_cases(n=VECTOR_N):
    """name -> (function, args, lanes): each one fused kernel of the vectorized kind."""
    rng = np.random.default_rng(5)

    def draw(dtype, shape=(n,)):
        return fnp.asarray((rng.standard_normal(shape) * 4).astype(dtype))
    flags = fnp.asarray(rng.standard_normal(n) > 0)
    return {
        "mixed": (_mixed_dtypes, (draw(np.float32), draw(np.float16), draw(BF16), flags,
                                  draw(np.int8), draw(np.float64), draw(np.int64),
                                  draw(np.float32, ())), 4),
        "halves": (lambda h, g: (h * g + 1.0, (h - g).astype(BF16)),
                   (draw(np.float16), draw(np.float16)), 8),
        "bytes": (lambda f, i8: (fnp.logical_and(f, i8 > 0), i8 + i8), (flags, draw(np.int8)),
                  8),
        "w4 gradient": (flamefx.grad(w4_loss), (draw(np.float32),), 4),
    }


def test_elementwise_kernels_vectorize_only_flat_reads():
    for name, (fun, args, lanes) in _vector_cases().items():
        kernel = _single_kernel(fun, args)
        assert "vectorized" in kernel.source and kernel.total == -(-VECTOR_N // lanes), name
    broadcast = _single_kernel(lambda x, b: x * b, (_x(700, 3), _x(3)))  # coordinates
    tiny = _single_kernel(lambda x: x * 2.0, (_x(3),))  # fewer elements than lanes
    row_sum = _gpu_plan(lambda x: fnp.sum(x * 2.0, axis=1), (_x(8, 300),)).kernels()[0]
    for kernel, total in ((broadcast, 2100), (tiny, 3), (row_sum, 2400)):
        assert "vectorized" not in kernel.source and kernel.total == total


EMULATED_PRELUDE = r"""
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
using namespace std;
struct Dim3 { unsigned x = 1, y = 1, z = 1; };
Dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
template <class To, class From> To bits(From v) { To t; memcpy(&t, &v, sizeof t); return t; }
float __uint_as_float(unsigned u) { return bits<float>(u); }
float __int_as_float(int u) { return bits<float>(u); }
unsigned __float_as_uint(float f) { return bits<unsigned>(f); }
int __float_as_int(float f) { return bits<int>(f); }
float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }  // flamefx_erf_inv's
float __fmul_rn(float a, float b) { return a * b; }
float __fadd_rn(float a, float b) { return a + b; }
float __fdiv_rn(float a, float b) { return a / b; }
float __fsqrt_rn(float a) { return sqrtf(a); }
double __hiloint2double(int hi, int lo) {
  return bits<double>(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo);
}
int __double2loint(double d) { return (int)bits<unsigned long long>(d); }
int __double2hiint(double d) { return (int)(bits<unsigned long long>(d) >> 32); }
float flamefx_f16_load(unsigned short h) { return (float)bits<_Float16>(h); }
template <class T> void __stcs(T* p, T v) { *p = v; }
unsigned short flamefx_f16_store(float f) { return bits<unsigned short>((_Float16)f); }
"""

EMULATED_MAIN = r"""
alignas(16) unsigned char pool[1 << 20];
int main(int argc, char** argv) {  // argv: directory, elements past a 16-byte boundary
  const std::string dir = argv[1];
  const size_t shift = atol(argv[2]);
  unsigned char* next = pool;
  auto place = [&](size_t bytes, size_t itemsize) {
    unsigned char* at = next + shift * itemsize;
    next += (bytes + shift * itemsize + 31) / 16 * 16;
    return at;
  };
  FILE* in = fopen((dir + "/in.bin").c_str(), "rb");
  @PLACE@
  gridDim.x = 1;  // one block: every thread strides over several vectors
  blockDim.x = 256;
  blockIdx.x = 0;
  for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x) @KERNEL@(@ARGS@);
  FILE* out = fopen((dir + "/out" + argv[2] + ".bin").c_str(), "wb");
  @WRITE@
}
"""


def _emulate(tmp_path, kernel, inputs, shifts):
    """Runs an elementwise fused kernel on the CPU, the threads one after another (such a
    kernel never synchronizes), with its arrays ``shift`` elements past 16-byte boundaries;
    the outputs (raw) for each shift."""
    from flamefx.kernels import cuda_scalar
    arrays = [(np.asarray(a), "const ") for a in inputs]
    arrays += [(np.zeros(v.aval.shape, v.aval.dtype), "") for v in kernel.outputs]
    place, args, write = [], [], []
    for j, (a, const) in enumerate(arrays):
        place.append(f"unsigned char* a{j} = place({a.nbytes}, {a.itemsize});")
        if const:
            place.append(f"if (fread(a{j}, 1, {a.nbytes}, in) != {a.nbytes}) abort();")
        else:
            write.append(f"fwrite(a{j}, 1, {a.nbytes}, out);")
        args.append(f"({const}{codegen.storage_ctype(a.dtype)}*)a{j}")
    bf16_helpers = cuda_scalar.HALF_CONVERSIONS[
        cuda_scalar.HALF_CONVERSIONS.index("__device__ __forceinline__ float flamefx_bf16"):]
    source = EMULATED_PRELUDE + kernel.source.replace(cuda_scalar.HALF_CONVERSIONS,
                                                      bf16_helpers)
    main = (EMULATED_MAIN.replace("@PLACE@", "\n  ".join(place)).replace("@ARGS@", ", ".join(args))
            .replace("@KERNEL@", kernel.name).replace("@WRITE@", "\n  ".join(write)))
    exe = compile_kernel(tmp_path, source + main,
                         flags=("-O1", "-fno-strict-aliasing", "-std=c++17", "-w"))
    (tmp_path / "in.bin").write_bytes(b"".join(a.tobytes() for a, const in arrays if const))
    results = []
    for shift in shifts:
        subprocess.run([str(exe), str(tmp_path), str(shift)], check=True,
                       timeout=60)
        raw, pos, outs = (tmp_path / f"out{shift}.bin").read_bytes(), 0, []
        for a, const in arrays:
            if not const:
                outs.append(np.frombuffer(raw[pos:pos + a.nbytes], a.dtype).reshape(a.shape))
                pos += a.nbytes
        results.append(outs)
    return results


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("name", sorted(_vector_cases(8)))
def test_vectorized_kernel_equals_its_scalar_path_on_the_cpu(tmp_path, name):
    fun, args, _ = _vector_cases()[name]
    _assert_vector_path_equals_scalar_path_and_eager(tmp_path, fun, args)


def _assert_vector_path_equals_scalar_path_and_eager(tmp_path, fun, args):
    plan = _gpu_plan(fun, args)
    (kernel,) = plan.kernels()
    position = {v.id: k for k, v in enumerate(plan.jaxpr.invars)}
    inputs = [args[position[v.id]] for v in kernel.inputs]
    # Aligned: the vector loop and the tail; one element off: the scalar loop throughout.
    vector, scalar = _emulate(tmp_path, kernel, inputs, shifts=(0, 1))
    want = dict(zip((v.id for v in plan.jaxpr.outvars),
                    flamefx.tree_util.tree_leaves(fun(*args))))
    for v, got, reference in zip(kernel.outputs, vector, scalar):
        np.testing.assert_array_equal(got.view(np.uint8), reference.view(np.uint8))
        tol = 1e-2 if got.itemsize == 2 else 1e-5  # the half types round in float32 here
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(want[v.id], np.float64),
                                   rtol=tol, atol=tol)
    return kernel


def _nvcc_ptx(tmp_path, source: str) -> str:
    """The PTX nvcc makes of ``source`` for the H100 (the test fails if it does not compile)."""
    path, ptx = tmp_path / "kernel.cu", tmp_path / "kernel.ptx"
    path.write_text(source)
    result = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", "-o", str(ptx), str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + source
    return ptx.read_text()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile-check")
def test_vectorized_kernels_compile_with_nvcc(tmp_path):
    kernels = [_single_kernel(fun, args) for fun, args, _ in _vector_cases().values()]
    kernels += [_single_kernel(lambda x, b: x * b, (_x(700, 3), _x(3))),
                _single_kernel(lambda x: x * 2.0, (_x(3),))]
    for kernel in kernels:
        ptx = _nvcc_ptx(tmp_path, kernel.source)
        if "vectorized" in kernel.source:
            assert "ld.global.nc.v4" in ptx or "ld.global.nc.v2" in ptx, kernel.name


# --- broadcast reads: vectors along the innermost axis ---------------------------------------


def _broadcast(x, shape, dims):
    return lax.broadcast_in_dim(x, shape, dims)


def _broadcast_cases():
    """name -> (function, args, vectorized): one fused kernel each, reading broadcasts that
    are constant along the innermost axis or contiguous along it."""
    rng = np.random.default_rng(9)

    def draw(dtype, *shape):
        return fnp.asarray((rng.standard_normal(shape) * 4).astype(dtype))
    f16, f32, f64 = np.float16, np.float32, np.float64
    return {
        # W6's per-example weight gradient: a[b, i] constant along j, c[b, j] contiguous.
        "outer product": (lambda a, c: (_broadcast(a, (6, 5, 12), (0, 1))
                                        * _broadcast(c, (6, 5, 12), (0, 2))),
                          (draw(f32, 6, 5), draw(f32, 6, 12)), True),
        "scaled bias with a 0-d": (
            lambda x, s, b, k: fnp.tanh(x * _broadcast(s, (7, 16), (0,)) * k
                                        + _broadcast(b, (7, 16), (1,))),
            (draw(f32, 7, 16), draw(f32, 7), draw(f32, 16), draw(f32)), True),
        "halves": (lambda h, b, g: (h * _broadcast(b, (5, 24), (1,)),
                                    (h - _broadcast(g, (5, 24), (0,))).astype(BF16)),
                   (draw(f16, 5, 24), draw(f16, 24), draw(f16, 5)), True),
        "float64 rows": (lambda d, e, w: d * _broadcast(e, (3, 6, 8), (2,))
                         + _broadcast(w, (3, 6, 8), (0, 1)).astype(f64),
                         (draw(f64, 3, 6, 8), draw(f64, 8), draw(f32, 3, 6)), True),
        "bytes": (lambda i, j: i + _broadcast(j, (9, 16), (1,)),
                  (draw(np.int8, 9, 16), draw(np.int8, 16)), True),
        # Rows that do not hold whole vectors keep the scalar loop.
        "innermost 10": (lambda x, b: x * _broadcast(b, (12, 10), (1,)),
                         (draw(f32, 12, 10), draw(f32, 10)), False),
        "innermost 12 halves": (lambda h, b: h + _broadcast(b, (4, 12), (1,)),
                                (draw(f16, 4, 12), draw(f16, 12)), False),
    }


def test_broadcast_kernels_vectorize_when_rows_hold_whole_vectors():
    for name, (fun, args, vectorized) in _broadcast_cases().items():
        kernel = _single_kernel(fun, args)
        assert ("vectorized" in kernel.source) == vectorized, name
        n_total = int(np.prod(kernel.shape))
        lanes = 8 if "halves" in name or name == "bytes" else 4
        assert kernel.total == (n_total // lanes if vectorized else n_total), name
    # One scalar load per vector for the constant operand, one 16-byte load for the other.
    source = _single_kernel(*_broadcast_cases()["outer product"][:2]).source
    assert "const float in0b = in0[c0 * 5 + c1 * 1];" in source
    assert "reinterpret_cast<const uint4*>(in1 + (c0 * 12 + c2 * 1))[0]" in source
    assert "const int c2 = (q % 3) * 4;" in source and "__stcs" not in source


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("name", sorted(_broadcast_cases()))
def test_broadcast_kernel_equals_its_scalar_path_on_the_cpu(tmp_path, name):
    fun, args, _ = _broadcast_cases()[name]
    _assert_vector_path_equals_scalar_path_and_eager(tmp_path, fun, args)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_streaming_stores_write_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setattr(codegen, "STREAMING_STORE_BYTES", 0)
    for name in ("outer product", "float64 rows"):
        fun, args, _ = _broadcast_cases()[name]
        kernel = _assert_vector_path_equals_scalar_path_and_eager(tmp_path, fun, args)
        assert "__stcs(" in kernel.source, name


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile-check")
def test_broadcast_kernels_compile_with_nvcc(tmp_path, monkeypatch):
    kernels = [_single_kernel(fun, args) for fun, args, _ in _broadcast_cases().values()]
    monkeypatch.setattr(codegen, "STREAMING_STORE_BYTES", 0)
    kernels.append(_single_kernel(*_broadcast_cases()["outer product"][:2]))
    for kernel in kernels:
        ptx = _nvcc_ptx(tmp_path, kernel.source)
        if "vectorized" in kernel.source:
            assert "st.global.v4" in ptx or "st.global.v2" in ptx or "st.global.cs.v" in ptx
        if "__stcs(" in kernel.source:
            assert "st.global.cs.v4" in ptx, kernel.name


# --- on the GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(_vector_cases(8)))
def test_gpu_vectorized_kernels_aligned_and_one_element_off(name):
    import cupy
    fun, args, _ = _vector_cases()[name]
    want = flamefx.tree_util.tree_leaves(fun(*args))

    def one_element_off(a):  # a view past the start of its allocation: the scalar loop
        padded = cupy.from_dlpack(_on_gpu(fnp.concatenate([a[:1], a])))
        return flamefx.from_dlpack(padded[1:])
    shifted = [a if a.ndim == 0 else one_element_off(a) for a in args]
    assert any(cupy.from_dlpack(a).data.ptr % 16 for a in shifted if a.ndim)
    for gpu_args in (_on_gpu(args), shifted):
        got = flamefx.tree_util.tree_leaves(flamefx.jit(fun)(*gpu_args))
        for g, w in zip(got, want):
            tol = 1e-2 if w.dtype.itemsize == 2 else 1e-5
            np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                                       rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("expand", [False, True])
def test_gpu_jitted_outer_product(monkeypatch, expand):
    import cupy
    monkeypatch.setattr(passes, "EXPAND_OUTER_PRODUCTS", expand)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 1, 96)).astype(np.float32)
    c = rng.standard_normal((64, 1, 128)).astype(np.float32)

    def outer(a, c):
        return lax.dot_general(a, c, (((1,), (1,)), ((0,), (0,))))

    want = np.einsum("bi,bj->bij", a[:, 0].astype(np.float64), c[:, 0].astype(np.float64))

    def one_element_off(x):  # a view past the start of its allocation: the scalar loop
        padded = cupy.from_dlpack(_on_gpu(fnp.asarray(np.concatenate([x.ravel()[:1],
                                                                      x.ravel()]))))
        return flamefx.from_dlpack(padded[1:].reshape(x.shape))
    for gpu_args in (_on_gpu((fnp.asarray(a), fnp.asarray(c))),
                     (one_element_off(a), one_element_off(c))):
        np.testing.assert_allclose(np.asarray(flamefx.jit(outer)(*gpu_args)), want,
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("expand", [False, True])
def test_gpu_per_example_grads_equal_a_loop_over_examples(monkeypatch, expand):
    """An MLP 784-256-10 over 96 examples: the first layer's per-example weight gradients
    are 77 MB, enough for streaming stores."""
    from flamefx import nn
    monkeypatch.setattr(passes, "EXPAND_OUTER_PRODUCTS", expand)
    rng = np.random.default_rng(4)
    sizes = [(784, 256), (256, 10)]
    params = [(fnp.asarray(rng.normal(0, 1 / np.sqrt(m), (m, n)).astype(np.float32)),
               fnp.asarray(rng.normal(0, 0.1, n).astype(np.float32))) for m, n in sizes]
    x = fnp.asarray(rng.standard_normal((96, 784)).astype(np.float32))
    y = fnp.asarray(rng.integers(0, 10, 96).astype(np.int32))

    def loss(params, x, y):
        h = nn.relu(x @ params[0][0] + params[0][1])
        return nn.softmax_cross_entropy_with_integer_labels(h @ params[1][0] + params[1][1], y)

    per_example = flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0)))
    got = flamefx.tree_util.tree_leaves(per_example(*_on_gpu((params, x, y))))
    loop = [flamefx.tree_util.tree_leaves(flamefx.grad(loss)(params, x[b], y[b]))
            for b in range(96)]
    for k, g in enumerate(got):
        want = np.stack([np.asarray(leaves[k]) for leaves in loop])
        np.testing.assert_allclose(np.asarray(g), want, rtol=2e-4, atol=2e-6)


def test_scalar_broadcasts_are_literals_and_label_masks_join_a_kernel():
    """W6 in small (per-example gradients of an MLP with integer labels). Scalars broadcast
    to arrays (relu's zero made (6,) then (8, 6) under vmap, the cross entropy's -1 and 0)
    are read as C literals, so no kernel is made of broadcasts alone, and the label mask,
    computed from the inputs only, joins a kernel that needs it. The plan, run step by step
    with NumPy (each kernel seeing only its declared inputs), matches the CPU backend."""
    from flamefx import nn
    from tests.test_jit import _run_plan_on_cpu
    rng = np.random.default_rng(5)
    params = [(fnp.asarray(rng.normal(size=(m, n)).astype(np.float32)),
               fnp.asarray(rng.normal(size=n).astype(np.float32))) for m, n in ((12, 6), (6, 4))]
    x = fnp.asarray(rng.normal(size=(8, 12)).astype(np.float32))
    y = fnp.asarray(np.array([0, 3, 1, 2, 3, -1, 0, 2], np.int32))

    def loss(params, x, y):
        h = nn.relu(x @ params[0][0] + params[0][1])
        return nn.softmax_cross_entropy_with_integer_labels(h @ params[1][0] + params[1][1], y)

    per_example = flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0)))
    lowered = per_example.lower(params, x, y, platform="gpu")
    kernels = lowered.plan.kernels()
    assert all(any(e.prim.name != "broadcast_in_dim" for e in k.eqns) for k in kernels), \
        lowered.as_text()
    assert not any(v.id in k.constants for k in kernels for v in k.inputs), lowered.as_text()
    assert lowered.kernel_count <= 13, lowered.as_text()
    entry, leaves, _ = per_example._lookup((params, x, y), {})
    got = _run_plan_on_cpu(lowered.plan, [np.asarray(a) for a in list(entry.consts) + leaves])
    want = flamefx.tree_util.tree_leaves(per_example(params, x, y))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-6)


# --- reduction epilogues: the softmax cross entropy's row work --------------------------------


def _mlp_params(sizes, seed):
    rng = np.random.default_rng(seed)
    return [(fnp.asarray(rng.normal(0, 1 / np.sqrt(m), (m, n)).astype(np.float32)),
             fnp.asarray(rng.normal(0, 0.1, n).astype(np.float32)))
            for m, n in itertools.pairwise(sizes)]


def _mlp_logits(params, x):
    from flamefx import nn
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        h = nn.relu(h) if i < len(params) - 1 else h
    return h


def _w1_in_small():
    """W1's Adam step on a 12-16-16-5 MLP, batch 8 (a label counted from the end)."""
    from flamefx import nn, optim
    params = _mlp_params((12, 16, 16, 5), 6)
    x = fnp.asarray(np.random.default_rng(7).standard_normal((8, 12)).astype(np.float32))
    y = fnp.asarray(np.array([0, 4, 1, 2, 3, -1, 0, 2], np.int32))
    opt = optim.adam(1e-3)

    def loss(params, x, y):
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(_mlp_logits(params, x), y))

    @flamefx.jit
    def step(params, state, x, y):
        value, grads = flamefx.value_and_grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return flamefx.optim.apply_updates(params, updates), state, value

    return step, (params, opt.init(params), x, y)


def _w6_in_small():
    """W6: per-example gradients of a 12-6-4 MLP with integer labels, batch 8."""
    from flamefx import nn
    params = _mlp_params((12, 6, 4), 5)
    x = fnp.asarray(np.random.default_rng(5).standard_normal((8, 12)).astype(np.float32))
    y = fnp.asarray(np.array([0, 3, 1, 2, 3, -1, 0, 2], np.int32))

    def loss(params, x, y):
        return nn.softmax_cross_entropy_with_integer_labels(_mlp_logits(params, x), y)

    return flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0))), (params, x, y)


@pytest.mark.parametrize("workload, launches", [("w1", 18), ("w6", 8)])
def test_cross_entropy_row_work_runs_in_reduction_epilogues(workload, launches):
    """The loss's row values ((8, 1) and (8,): the max made finite, log of the row sum plus
    it, the label logit subtracted, 1 / row sum times the mean's weight) are computed by
    the threads that write each row's reduced value, the max is a fused reduction like the
    sums, and the Adam step's scalars ride in the epilogue of the loss's sum (here the bias
    updates too, their gradients being one-block column sums): no kernel is left of
    row-sized or scalar elementwise work alone, and the label logit sum and the max
    accumulate in one loop (before: W1 27, W6 12 launches in small). The softmax's
    gradient is a third pass over the rows of the kernel that reduces them (before: W1
    19, W6 10). The plan, run step by step with NumPy, equals the CPU backend."""
    from tests.test_jit import _run_plan_on_cpu
    fun, args = _w1_in_small() if workload == "w1" else _w6_in_small()
    lowered = fun.lower(*args, platform="gpu")
    text = lowered.as_text()
    assert lowered.kernel_count <= launches, text
    opaque = {s.eqn.prim.name for s in lowered.plan.steps if isinstance(s, fusion.OpaqueStep)}
    assert opaque <= {"dot_general", "reshape", "stop_gradient", "squeeze", "expand_dims"}, text
    for kernel in lowered.plan.kernels():
        size = int(np.prod(kernel.shape))
        assert kernel.reduction is not None or size not in (1, 8), text
    assert sum(bool(k.epilogue) for k in lowered.plan.kernels()) >= (
        2 if workload == "w1" else 1), text
    assert [k.passes for k in lowered.plan.kernels() if k.passes > 1] == [3], text
    entry, leaves, _ = fun._lookup(args, {})
    got = _run_plan_on_cpu(lowered.plan, [np.asarray(a) for a in list(entry.consts) + leaves])
    want = flamefx.tree_util.tree_leaves(fun(*args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-6)
