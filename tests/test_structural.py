"""Structural, indexing and dot_general primitives: what the registry walk does not cover.

Shape errors that say what is wrong, JAX's clamping of dynamic indices, scatter's handling
of duplicate indices, dot_general against np.einsum for many dimension numbers, rules
under composed transforms, and (on a GPU machine) every CUDA impl against NumPy.
"""

import itertools

import ml_dtypes
import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import core
from flamefx.errors import FlamefxTypeError
from flamefx.primitives import indexing
from flamefx.primitives.indexing import gather, scatter
from flamefx.primitives.linalg import dot_general
from flamefx.primitives.dynamic_slicing import dynamic_slice, dynamic_update_slice
from flamefx.primitives.structural import (
    broadcast_in_dim,
    concatenate,
    pad,
    reshape,
    slice,
    squeeze,
    transpose,
)
from tests.emulated_kernels import EMULATOR, compile_kernel, run_kernel
from tests.samples import indexing as indexing_samples
from tests.samples import linalg as linalg_samples
from tests.samples import structural as structural_samples


def _np(x):
    return np.asarray(x)


# --- errors that say what is wrong ---------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: reshape(np.ones(6), (4,)), r"cannot reshape \(6,\) \(6 elements\) into \(4,\)"),
    (lambda: broadcast_in_dim(np.ones(3), (2, 4), (1,)), "size 3 cannot broadcast"),
    (lambda: transpose(np.ones((2, 3)), (0, 0)), "not a permutation"),
    (lambda: squeeze(np.ones((2, 3)), (0,)), "size 1"),
    (lambda: slice(np.ones(4), (1,), (6,)), "out of bounds"),
    (lambda: pad(np.ones(2), 0.0, ((-3, 0, 0),)), "negative size"),
    (lambda: concatenate([np.ones((2, 3)), np.ones((3, 3))], 1), "all axes but 1"),
    (lambda: dynamic_slice(np.ones(4), [0], (5,)), "slice_sizes"),
    (lambda: dynamic_slice(np.ones(4), [np.float32(0)], (2,)), "scalar integers"),
    (lambda: gather(np.ones((3, 2)), np.zeros((4, 2), np.int32), (0,)), "last axis of indices"),
    (lambda: scatter(np.ones(3), np.zeros((2, 1), np.int32), np.ones(3), (0,)),
     r"updates must have shape \(2,\)"),
    (lambda: scatter(np.ones(3), np.zeros((2, 1), np.int32), np.ones(2), (0,), "sub"), "mode"),
    (lambda: dot_general(np.ones((2, 3)), np.ones((4, 5)), (((1,), (0,)), ((), ()))),
     "contracting axes differ in size"),
    (lambda: dot_general(np.ones(3), np.ones(3, np.float32), (((0,), (0,)), ((), ()))),
     "one dtype"),
])
def test_shape_errors_name_the_problem(call, message):
    with pytest.raises(FlamefxTypeError, match=message) as info:
        call()
    assert "test_structural.py" in str(info.value)  # the user's own line


def test_error_names_primitive_and_shapes():
    with pytest.raises(FlamefxTypeError) as info:
        reshape(np.ones((2, 3)), (4,))
    assert "reshape" in str(info.value) and "f64[2,3]" in str(info.value)


# --- clamping (JAX semantics) --------------------------------------------------------------------


def test_dynamic_slice_clamps_the_window_into_bounds():
    x = np.arange(10.0)
    assert _np(dynamic_slice(x, [8], (4,))).tolist() == [6.0, 7.0, 8.0, 9.0]
    assert _np(dynamic_slice(x, [-5], (3,))).tolist() == [0.0, 1.0, 2.0]
    grid = np.arange(20.0).reshape(4, 5)
    np.testing.assert_array_equal(_np(dynamic_slice(grid, [3, -1], (2, 2))), grid[2:4, 0:2])


def test_dynamic_update_slice_clamps_the_window_into_bounds():
    out = _np(dynamic_update_slice(np.zeros(5), np.ones(2), [np.int32(7)]))
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    out = _np(dynamic_update_slice(np.zeros((3, 3)), np.ones((1, 2)), [-4, 9]))
    assert out[0].tolist() == [0.0, 1.0, 1.0] and out[1:].sum() == 0


def test_gather_and_scatter_clamp_indices():
    table = np.arange(4.0)
    assert _np(gather(table, np.array([[-3], [9]], np.int32), (0,))).tolist() == [0.0, 3.0]
    out = scatter(np.zeros(4), np.array([[-3], [9]], np.int32), np.array([1.0, 2.0]), (0,))
    assert _np(out).tolist() == [1.0, 0.0, 0.0, 2.0]


def test_dynamic_slice_gradient_lands_in_the_clamped_window():
    grad = flamefx.grad(lambda x: fnp.sum(dynamic_slice(x, [7], (2,)) * 3.0))
    assert _np(grad(np.zeros(5))).tolist() == [0.0, 0.0, 0.0, 3.0, 3.0]


# --- scatter with duplicate indices ---------------------------------------------------------------


@pytest.mark.parametrize("mode, expected", [
    ("add", [10.0, 10.0 + 2.0 + 3.0 + 5.0, 10.0]),
    ("mul", [10.0, 10.0 * 2.0 * 3.0 * 5.0, 10.0]),
    ("min", [10.0, 2.0, 10.0]),
    ("max", [10.0, 10.0, 10.0]),
])
def test_scatter_duplicates_accumulate(mode, expected):
    out = scatter(np.full(3, 10.0), np.array([[1], [1], [1]], np.int32),
                  np.array([2.0, 3.0, 5.0]), (0,), mode)
    assert _np(out).tolist() == expected


def test_scatter_set_with_duplicates_writes_one_of_them():
    out = _np(scatter(np.zeros(3), np.array([[2], [2]], np.int32), np.array([4.0, 7.0]), (0,),
                      "set"))
    assert out[2] in (4.0, 7.0) and out[:2].tolist() == [0.0, 0.0]


def test_scatter_add_gradient_reaches_every_duplicate():
    idx = np.array([[0], [0], [2]], np.int32)
    weights = np.array([1.0, 2.0, 3.0])
    grad = flamefx.grad(lambda u: fnp.sum(
        scatter(np.zeros(3), idx, u, (0,)) * weights), argnums=0)
    assert _np(grad(np.ones(3))).tolist() == [1.0, 1.0, 3.0]


def test_scatter_max_gradient_flows_to_the_winner():
    def f(operand, updates):
        return fnp.sum(scatter(operand, np.array([[0], [0], [1]], np.int32), updates,
                                         (0,), "max"))
    g_operand, g_updates = flamefx.grad(f, argnums=(0, 1))(np.array([0.0, 5.0]),
                                                            np.array([1.0, 3.0, 2.0]))
    assert _np(g_operand).tolist() == [0.0, 1.0]
    assert _np(g_updates).tolist() == [0.0, 1.0, 0.0]


# --- dot_general against np.einsum ---------------------------------------------------------------

_LETTERS = "abcdefgh"


def _random_dimension_numbers(rng):
    """Random ranks and a random assignment of lhs/rhs axes to batch/contract/free roles."""
    n_batch, n_contract = rng.integers(0, 3), rng.integers(0, 3)
    n_lhs_free, n_rhs_free = rng.integers(0, 3), rng.integers(0, 3)
    sizes = rng.integers(1, 4, n_batch + n_contract + n_lhs_free + n_rhs_free)
    roles = (["b"] * n_batch + ["c"] * n_contract)
    lhs_roles = roles + ["l"] * n_lhs_free
    rhs_roles = roles + ["r"] * n_rhs_free
    lhs_order, rhs_order = rng.permutation(len(lhs_roles)), rng.permutation(len(rhs_roles))
    labels = {}
    counter = itertools.count()
    shared = [next(counter) for _ in roles]
    lhs_ids = shared + [next(counter) for _ in range(n_lhs_free)]
    rhs_ids = shared + [next(counter) for _ in range(n_rhs_free)]
    for i, label in enumerate(lhs_ids + rhs_ids[len(roles):]):
        labels[label] = (_LETTERS[i], int(sizes[i]))
    lhs_axes = [lhs_ids[i] for i in lhs_order]
    rhs_axes = [rhs_ids[i] for i in rhs_order]

    def positions(axes, ids):
        return tuple(axes.index(i) for i in ids)

    contract_ids, batch_ids = shared[n_batch:], shared[:n_batch]
    dims = ((positions(lhs_axes, contract_ids), positions(rhs_axes, contract_ids)),
            (positions(lhs_axes, batch_ids), positions(rhs_axes, batch_ids)))
    # Free axes appear in the output in the order they have in their operand.
    out_ids = (batch_ids + [i for i in lhs_axes if i in lhs_ids[len(roles):]]
               + [i for i in rhs_axes if i in rhs_ids[len(roles):]])
    subscripts = (''.join(labels[i][0] for i in lhs_axes) + ","
                  + ''.join(labels[i][0] for i in rhs_axes) + "->"
                  + ''.join(labels[i][0] for i in out_ids))
    shapes = (tuple(labels[i][1] for i in lhs_axes), tuple(labels[i][1] for i in rhs_axes))
    return dims, subscripts, shapes


@pytest.mark.parametrize("seed", range(24))
def test_dot_general_matches_einsum_for_random_dimension_numbers(seed):
    rng = np.random.default_rng(seed)
    dims, subscripts, (lhs_shape, rhs_shape) = _random_dimension_numbers(rng)
    lhs, rhs = rng.standard_normal(lhs_shape), rng.standard_normal(rhs_shape)
    np.testing.assert_allclose(_np(dot_general(lhs, rhs, dims)),
                               np.einsum(subscripts, lhs, rhs), rtol=1e-12, atol=1e-12)
    # Both cotangents, against the einsum of the cotangent with the other operand.
    ct = rng.standard_normal(np.einsum(subscripts, lhs, rhs).shape)
    _, pullback = flamefx.vjp(lambda a, b: dot_general(a, b, dims), lhs, rhs)
    ct_lhs, ct_rhs = pullback(ct)
    ins, out = subscripts.split("->")
    lhs_sub, rhs_sub = ins.split(",")
    np.testing.assert_allclose(_np(ct_lhs), np.einsum(f"{out},{rhs_sub}->{lhs_sub}", ct, rhs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(ct_rhs), np.einsum(f"{out},{lhs_sub}->{rhs_sub}", ct, lhs),
                               rtol=1e-12, atol=1e-12)


def test_dot_general_preferred_element_type_and_precision_option():
    a = np.ones((2, 3), ml_dtypes.bfloat16)
    out = dot_general(a, a.T.copy(), (((1,), (0,)), ((), ())), preferred_element_type=np.float32)
    assert out.dtype == np.float32 and _np(out).tolist() == [[3.0, 3.0], [3.0, 3.0]]
    with pytest.raises(FlamefxTypeError, match="precision"):
        dot_general(np.ones(2), np.ones(2), (((0,), (0,)), ((), ())), precision="fast")


@pytest.mark.parametrize("lhs_axis, rhs_axis", [(0, None), (None, 1), (1, 0), (2, 2)])
def test_dot_general_vmap_folds_the_batch(lhs_axis, rhs_axis):
    rng = np.random.default_rng(0)
    dims = (((1,), (0,)), ((), ()))
    lhs = rng.standard_normal((3, 4) if lhs_axis is None else np.insert([3, 4], lhs_axis, 5))
    rhs = rng.standard_normal((4, 2) if rhs_axis is None else np.insert([4, 2], rhs_axis, 5))
    batched = flamefx.vmap(lambda a, b: dot_general(a, b, dims), in_axes=(lhs_axis, rhs_axis))
    expected = np.stack([
        (lhs if lhs_axis is None else np.take(lhs, i, lhs_axis))
        @ (rhs if rhs_axis is None else np.take(rhs, i, rhs_axis)) for i in range(5)])
    np.testing.assert_allclose(_np(batched(lhs, rhs)), expected, rtol=1e-12)
    jaxpr = flamefx.make_jaxpr(batched)(lhs, rhs)
    assert [e.prim.name for e in jaxpr.eqns].count("dot_general") == 1


# --- rules under composed transforms --------------------------------------------------------------


def test_per_example_gradients_through_batched_dynamic_slices():
    x = np.arange(12.0).reshape(3, 4)
    starts = np.array([0, 2, 5], np.int32)  # the last one is clamped to 2

    def loss(row, start):
        return fnp.sum(dynamic_slice(row, [start], (2,)) ** 2)

    grads = flamefx.vmap(flamefx.grad(loss), in_axes=(0, 0))(x, starts)
    expected = np.zeros_like(x)
    for i, s in enumerate([0, 2, 2]):
        expected[i, s:s + 2] = 2 * x[i, s:s + 2]
    np.testing.assert_allclose(_np(grads), expected)


def test_vmap_of_dynamic_slice_with_batched_starts_is_one_gather():
    f = flamefx.vmap(lambda x, s: dynamic_slice(x, [s], (2,)), in_axes=(0, 0))
    jaxpr = flamefx.make_jaxpr(f)(np.ones((3, 5)), np.zeros(3, np.int32))
    names = [e.prim.name for e in jaxpr.eqns]
    assert names.count("gather") == 1 and "dynamic_slice" not in names


def test_jit_of_grad_through_pad_and_gather():
    def f(x):
        padded = pad(x, 0.0, ((1, -1, 1),))
        return fnp.sum(gather(padded, np.array([[1], [3], [3]], np.int32), (0,)) ** 2)

    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(_np(flamefx.jit(flamefx.grad(f))(x)), _np(flamefx.grad(f)(x)))
    np.testing.assert_allclose(_np(flamefx.grad(f)(x)), [2.0, 8.0, 0.0])


def test_pad_vmap_with_per_example_padding_value():
    x = np.arange(6.0).reshape(2, 3)
    values = np.array([-1.0, -2.0])
    out = flamefx.vmap(lambda r, v: pad(r, v, ((1, 1, 1),)))(x, values)
    np.testing.assert_array_equal(_np(out), [[-1, 0, -1, 1, -1, 2, -1], [-2, 3, -2, 4, -2, 5, -2]])


# --- GPU: every CUDA impl against the NumPy impl -------------------------------------------------

_FAMILIES = {"structural": structural_samples.SAMPLES, "indexing": indexing_samples.SAMPLES,
             "linalg": linalg_samples.SAMPLES}
_GPU_CASES = [pytest.param(name, i, id=f"{name}-{i}") for samples in _FAMILIES.values()
              for name in sorted(samples) for i in range(len(samples[name]))]


def _cast_floats(args, dtype):
    return [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
            for a in args]


def _run_impls(name, args, params):
    from flamefx import devices
    cp = devices.cupy()
    prim = core.Primitive.registry[name]
    cpu = prim.impl_for("cpu")(*[np.asarray(a) for a in args], **params)
    gpu = prim.impl_for("gpu")(*[cp.asarray(np.asarray(a)) for a in args], **params)
    return [np.asarray(c) for c in cpu], [cp.asnumpy(g) for g in gpu]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("name,i", _GPU_CASES)
def test_cuda_impl_matches_numpy_impl(name, i, dtype):
    samples = {**structural_samples.SAMPLES, **indexing_samples.SAMPLES,
               **linalg_samples.SAMPLES}
    sample = samples[name][i]
    args = sample.make(np.random.default_rng(i))
    params = dict(sample.params)
    if name == "iota":
        params["dtype"] = np.dtype(dtype) if params["dtype"].kind == "f" else params["dtype"]
    elif name == "dot_general" and any(np.asarray(a).dtype.kind != "f" or
                                       np.asarray(a).dtype.itemsize < 8 for a in args):
        pytest.skip("dtype-specific dot_general samples run once, in float32 below")
    else:
        args = _cast_floats(args, dtype)
    cpu, gpu = _run_impls(name, args, params)
    tol = {np.float32: 1e-5, np.float16: 2e-3, ml_dtypes.bfloat16: 2e-2}[dtype]
    for c, g in zip(cpu, gpu):
        assert c.dtype == g.dtype and c.shape == g.shape
        np.testing.assert_allclose(g.astype(np.float64), c.astype(np.float64), rtol=tol,
                                   atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, precision, preferred, tol", [
    (np.float32, "highest", None, 1e-5),
    (np.float32, "tf32", None, 5e-3),
    (np.float32, "bf16", None, 3e-2),
    (np.float16, None, None, 3e-3),
    (np.float16, None, np.float32, 1e-4),
    (ml_dtypes.bfloat16, None, None, 2e-2),
    (ml_dtypes.bfloat16, None, np.float32, 1e-4),
    (np.float64, None, None, 1e-12),
    (np.int32, None, None, 0),
])
@pytest.mark.parametrize("shapes, dims", [
    (((33, 70), (70, 17)), (((1,), (0,)), ((), ()))),
    (((4, 33, 70), (4, 70, 17)), (((2,), (1,)), ((0,), (0,)))),
    (((70, 3, 33), (17, 70, 3)), (((0,), (1,)), ((1,), (2,)))),
])
def test_cublas_dot_general_matches_numpy(dtype, precision, preferred, tol, shapes, dims):
    rng = np.random.default_rng(0)
    lhs = (rng.standard_normal(shapes[0]) * 3).astype(dtype)
    rhs = (rng.standard_normal(shapes[1]) * 3).astype(dtype)
    params = {"dimension_numbers": dims, "precision": precision,
                  "preferred_element_type": None if preferred is None else np.dtype(preferred)}
    cpu, gpu = _run_impls("dot_general", [lhs, rhs], params)
    assert gpu[0].dtype == cpu[0].dtype
    scale = np.abs(cpu[0].astype(np.float64)).max()
    np.testing.assert_allclose(gpu[0].astype(np.float64), cpu[0].astype(np.float64),
                               rtol=tol, atol=tol * scale)


@pytest.mark.gpu
def test_gemm_into_writes_a_preallocated_output_under_graph_capture():
    from flamefx import devices
    from flamefx.kernels import cublas
    cp = devices.cupy()
    rng = np.random.default_rng(0)
    a = cp.asarray(rng.standard_normal((3, 8, 16)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((3, 16, 4)).astype(np.float32))
    out = cp.empty((3, 8, 4), np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        cublas.gemm_into(out, a, b)  # warm-up: cuBLAS initializes outside the capture
        out.fill(0)
        stream.begin_capture()
        cublas.gemm_into(out, a, b)
        graph = stream.end_capture()
        graph.launch(stream)
    stream.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(a) @ cp.asnumpy(b), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16,
                                   np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("mode", indexing.SCATTER_MODES)
def test_cuda_scatter_with_duplicates(dtype, mode):
    rng = np.random.default_rng(1)
    operand = (rng.standard_normal((6, 3)) * 3).astype(dtype)
    indices = rng.integers(-1, 7, (20, 1)).astype(np.int32)
    updates = (rng.standard_normal((20, 3)) * 3).astype(dtype)
    if mode == "set":  # one writer per row keeps 'set' deterministic
        indices = rng.permutation(6)[:4].reshape(4, 1).astype(np.int32)
        updates = updates[:4]
    if mode == "mul" and dtype not in (np.int32, np.int64, np.bool_):
        updates = (0.8 + 0.4 * rng.random((len(indices), 3))).astype(dtype)
    params = {"axes": (0,), "mode": mode}
    cpu, gpu = _run_impls("scatter", [operand, indices, updates], params)
    tol = {np.dtype(np.float16): 5e-3, np.dtype(ml_dtypes.bfloat16): 3e-2}.get(
        np.dtype(dtype), 1e-6)
    np.testing.assert_allclose(gpu[0].astype(np.float64), cpu[0].astype(np.float64), rtol=tol,
                               atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.int8, ml_dtypes.bfloat16, np.float64])
def test_cuda_dynamic_windows_clamp_on_device(dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 7, 3)) * 5).astype(dtype)
    update = (rng.standard_normal((2, 3, 3)) * 5).astype(dtype)
    for starts in ([4, -2, 0], [1, 6, 9], [0, 0, 0]):
        starts = [np.int32(s) for s in starts]
        cpu, gpu = _run_impls("dynamic_slice", [x] + starts, {"slice_sizes": (2, 3, 3)})
        np.testing.assert_array_equal(gpu[0], cpu[0])
        cpu, gpu = _run_impls("dynamic_update_slice", [x, update] + starts, {})
        np.testing.assert_array_equal(gpu[0], cpu[0])


@pytest.mark.gpu
def test_gpu_pad_negative_and_interior():
    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    params = {"padding_config": ((2, -1, 2), (-2, 3, 1))}
    cpu, gpu = _run_impls("pad", [x, np.float32(-7)], params)
    np.testing.assert_array_equal(gpu[0], cpu[0])


# --- the gather/scatter/iota CUDA kernels on the CPU emulator (CI has no GPU) ---------------

# The emulator runs CUDA threads as std::threads: atomics take one lock.
_EMULATED_ATOMICS = r"""
#include <cstdio>
#include <mutex>
#include <string>
std::mutex atomics;
template <class X> X atomicAdd(X* p, X v) {
  std::lock_guard g(atomics); X o = *p; *p = o + v; return o; }
template <class X> X atomicCAS(X* p, X c, X v) {
  std::lock_guard g(atomics); X o = *p; if (o == c) *p = v; return o; }
"""


def _kernel_sources(monkeypatch):
    """Builds kernels through a stand-in CuPy that records their sources."""
    from flamefx.kernels import cuda_structural
    sources = []

    class RecordingCupy:
        def RawKernel(self, source, name):  # CuPy's name
            sources.append(source)
    monkeypatch.setattr(cuda_structural, "_cp", RecordingCupy)
    for cached in (cuda_structural._gather_kernel, cuda_structural._scatter_kernel,
                   cuda_structural._iota_kernel):
        cached.cache_clear()
    return cuda_structural, sources


def _emulate(tmp_path, source, main, inputs, out_size):
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("needs g++ with C++20")
    body = f'#include "{EMULATOR}"\n{_EMULATED_ATOMICS}\n{source}\n{main}'
    inputs = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs)
    return run_kernel(compile_kernel(tmp_path, body), tmp_path, [], inputs, 60)[:out_size]


def test_gather_and_scatter_kernels_read_clamped_index_vectors(tmp_path, monkeypatch):
    cuda_structural, sources = _kernel_sources(monkeypatch)
    cuda_structural._gather_kernel(4, "int", 2)
    cuda_structural._scatter_kernel("float", "add", "int", 2)
    table = np.arange(12, dtype=np.float32).reshape(6, 2)   # indexed axes (3, 2), rows of 2
    indices = np.array([[2, 1], [0, 0], [-4, 9], [2, 1], [1, 0]], np.int32)  # clamped, repeated
    updates = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    main = r"""
int main(int, char** argv) {
  const std::string dir = argv[1];
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto table = read_array<unsigned int>(f, 12);
  auto idx = read_array<int>(f, 10);
  auto upd = read_array<float>(f, 10);
  fclose(f);
  std::vector<unsigned int> got(10);
  std::vector<float> out(12);
  std::memcpy(out.data(), table.data(), 48);
  launch(Dim3{1, 1, 1}, Dim3{256, 1, 1}, [&] {
    gather_rows(table.data(), idx.data(), got.data(), 10, 2, 3, 2); });
  launch(Dim3{1, 1, 1}, Dim3{256, 1, 1}, [&] {
    scatter_rows(out.data(), upd.data(), idx.data(), 10, 2, 3, 2); });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, got); write_array(o, out);
  fclose(o);
}
"""
    # Each kernel's typedefs live in a namespace of their own.
    names = ("gather_rows", "scatter_rows")
    source = "".join(f"namespace k{i} {{\n{src}}}\nusing k{i}::{name};\n"
                     for i, (src, name) in enumerate(zip(sources, names)))
    raw = _emulate(tmp_path, source, main, [table, indices, updates], 88)
    gathered = np.frombuffer(raw[:40], np.float32).reshape(5, 2)
    scattered = np.frombuffer(raw[40:], np.float32).reshape(6, 2)
    operand = table.reshape(3, 2, 2)
    want_gather = indexing.gather_p.impl_for("cpu")(operand, indices, axes=(0, 1))[0]
    want_scatter = indexing.scatter_p.impl_for("cpu")(operand, indices, updates, axes=(0, 1),
                                                      mode="add")[0]
    np.testing.assert_array_equal(gathered, want_gather)
    np.testing.assert_array_equal(scattered.reshape(3, 2, 2), want_scatter)


def test_iota_kernel_counts_along_one_axis(tmp_path, monkeypatch):
    cuda_structural, sources = _kernel_sources(monkeypatch)
    cuda_structural._iota_kernel("int")
    main = r"""
int main(int, char** argv) {
  std::vector<int> out(24);
  launch(Dim3{1, 1, 1}, Dim3{32, 1, 1}, [&] { iota(out.data(), 24, 4, 3); });
  FILE* o = fopen((std::string(argv[1]) + "/out.bin").c_str(), "wb");
  write_array(o, out);
  fclose(o);
}
"""
    raw = _emulate(tmp_path, sources[0], main, [], 96)
    want = np.broadcast_to(np.arange(3).reshape(1, 3, 1), (2, 3, 4))
    np.testing.assert_array_equal(np.frombuffer(raw, np.int32).reshape(2, 3, 4), want)
