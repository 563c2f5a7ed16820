"""flamefx.numpy's sorting, searching and set functions against NumPy (float64 references,
constant vectors taken from JAX where JAX differs from NumPy), their gradients, jit and vmap,
and the errors bad input gets."""

import shutil

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import dtypes, lax
from flamefx.errors import ConcretizationError, FlamefxError
from flamefx.test_util import check_grads
from tests.emulated_kernels import EMULATOR, compile_kernel, run_kernel

RNG = np.random.default_rng(0)
SPECIAL = np.array([1.5, np.nan, -0.0, 0.0, -np.inf, 2.0, 1.5, np.inf, np.nan, -3.0])


def _ints(shape, high=4, dtype=np.int32):
    return RNG.integers(0, high, shape).astype(dtype)


def _values(shape, dtype):
    if dtype == np.bool_:
        return _ints(shape, 2) > 0
    return (RNG.normal(size=shape) * 4).astype(dtype)


def _f64(x):
    """A float64 flamefx array (NumPy float64 arrays would canonicalize to float32)."""
    return fnp.array(x, dtype=fnp.float64)


def _check(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype or want.dtype.kind == got.dtype.kind, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


# --- sort / argsort ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int32, np.uint8,
                                   np.int8, np.bool_])
@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_sort_and_argsort_match_numpy(dtype, axis):
    x = _values((4, 7), dtype)
    x_fx = fnp.array(x, dtype=dtype)
    _check(fnp.sort(x_fx, axis=axis), np.sort(x, axis=axis))
    _check(fnp.argsort(x_fx, axis=axis), np.argsort(x, axis=axis, kind="stable").astype(np.int32))


def test_sort_orders_nans_last_and_keeps_ties_stable():
    _check(fnp.sort(_f64(SPECIAL)), np.sort(SPECIAL))
    _check(fnp.argsort(SPECIAL), np.argsort(SPECIAL, kind="stable").astype(np.int32))
    # -0.0 and 0.0 are equal: their order is the input's.
    assert np.signbit(np.asarray(fnp.sort(np.array([-0.0, 0.0])))).tolist() == [True, False]
    assert np.signbit(np.asarray(fnp.sort(np.array([0.0, -0.0])))).tolist() == [False, True]


@pytest.mark.parametrize("dtype", [fnp.bfloat16, fnp.float16])
def test_half_floats_sort_with_nans_and_signed_zeros(dtype):
    x = fnp.array(SPECIAL, dtype=dtype)
    _check(fnp.sort(x), np.sort(SPECIAL).astype(dtype))
    _check(fnp.argsort(x), np.argsort(SPECIAL, kind="stable").astype(np.int32))
    values, indices = lax.top_k(x, 3)  # XLA's total order: NaN first, ties to the lower index
    _check(indices, np.array([1, 8, 7], np.int32))


def test_complex_sorts_by_real_then_imaginary_part():
    z = np.array([1 + 2j, 1 - 1j, np.nan + 0j, -1 + 5j, 1 - 1j, 2j, -0.0, 3 + np.nan * 1j])
    _check(fnp.sort(fnp.array(z, dtype=fnp.complex128)), np.sort(z))
    _check(fnp.argsort(z), np.argsort(z, kind="stable").astype(np.int32))
    _check(fnp.sort_complex(np.array([[3, 1, 2]], np.int32)),
           np.sort_complex(np.array([[3, 1, 2]])).astype(np.complex64))
    assert fnp.sort_complex(fnp.array([1.0], dtype=fnp.float64)).dtype == np.complex128
    assert fnp.sort_complex(np.float32([1.0])).dtype == np.complex64
    x = _f64([0.5, -1.0, 2.0])
    check_grads(lambda x: fnp.real(fnp.sort_complex(x * (1 - 2j))), [x], order=2,
                modes=("fwd", "rev"))


def test_descending_sort_and_argsort_as_jax():
    x = np.array([1, 3, 1, 2, 3])
    _check(fnp.sort(x, descending=True), np.array([3, 3, 2, 1, 1], np.int32))
    # Stable descending: equal elements keep their original order (JAX's answer).
    _check(fnp.argsort(x, descending=True), np.array([1, 4, 3, 0, 2], np.int32))
    _check(fnp.argsort(SPECIAL, descending=True),
           np.array([1, 8, 7, 5, 0, 6, 2, 3, 9, 4], np.int32))


def test_sort_accepts_kind_and_stable_and_index_dtype():
    x = RNG.normal(size=9)
    _check(fnp.sort(_f64(x), kind="quicksort"), np.sort(x))
    _check(fnp.sort(_f64(x), stable=False), np.sort(x))
    assert fnp.argsort(x, dtype=np.int16).dtype == np.int16


def test_sort_of_one_element_and_zero_d():
    _check(fnp.sort(np.array([2.5])), np.array([2.5]))
    _check(fnp.sort(np.float32(3.0), axis=None), np.array([3.0], np.float32))
    _check(fnp.argsort(np.float32(3.0), axis=None), np.array([0], np.int32))
    _check(fnp.sort(np.zeros((2, 0))), np.zeros((2, 0)))


def test_array_methods_sort_argsort_argpartition_searchsorted():
    x = fnp.array([3.0, 1.0, 2.0, 1.0])
    _check(x.sort(), np.array([1.0, 1.0, 2.0, 3.0], np.float32))
    _check(x.argsort(descending=True), np.array([0, 2, 1, 3], np.int32))
    _check(x.argpartition(1), fnp.argpartition(x, 1))
    _check(x.sort().searchsorted(fnp.array([1.0, 2.5]), side="right"), np.array([2, 3], np.int32))
    _check(flamefx.jit(lambda x: x.sort(axis=None, descending=True))(x),
           np.array([3.0, 2.0, 1.0, 1.0], np.float32))


def test_lexsort_matches_numpy():
    keys = [_ints((3, 10)), _ints((3, 10), 2), RNG.normal(size=(3, 10)).round(0)]
    for axis in (0, 1, -1):
        _check(fnp.lexsort(keys, axis=axis), np.lexsort(keys, axis=axis).astype(np.int32))
    _check(fnp.lexsort([np.float32(1.0)]), np.array(0, np.int32))


def test_lax_sort_several_operands_and_sort_key_val():
    keys, values = np.array([2, 1, 2, 1]), np.array([0.5, 1.5, 2.5, 3.5])
    k, v = lax.sort_key_val(keys, values)
    _check(k, np.array([1, 1, 2, 2], np.int32))
    _check(v, np.array([1.5, 3.5, 0.5, 2.5]))
    a, b, c = lax.sort((np.array([1, 0, 1, 0]), np.array([5, 6, 4, 6]), np.arange(4.0)),
                       num_keys=2)
    _check(c, np.array([1.0, 3.0, 2.0, 0.0]))


def test_top_k_matches_a_stable_descending_sort():
    x = _ints((3, 12), 5)
    values, indices = lax.top_k(x, 4)
    order = np.argsort(-x, axis=-1, kind="stable")[:, :4]
    _check(indices, order.astype(np.int32))
    _check(values, np.take_along_axis(x, order, -1))
    values, indices = lax.top_k(x, 2, axis=0)  # JAX's axis= keyword
    order = np.argsort(-x, axis=0, kind="stable")[:2]
    _check(indices, order.astype(np.int32))
    _check(values, np.take_along_axis(x, order, 0))
    distinct = _f64(RNG.permutation(np.arange(12.0)).reshape(4, 3))
    check_grads(lambda x: lax.top_k(x, 2, axis=0)[0], [distinct], order=2, modes=("fwd", "rev"))


def test_the_gpu_code_path_on_a_numpy_stand_in_for_cupy():
    """The CuPy impls (one stable argsort pass per key, no np.lexsort) agree with the NumPy
    ones; a stand-in with CuPy's stable argsort runs their code here, without a GPU."""
    import types

    from flamefx.dtypes import bfloat16
    from flamefx.primitives import sorting as prims

    stand_in = types.SimpleNamespace(
        argsort=lambda a, axis: np.argsort(a, axis=axis, kind="stable"),
        take_along_axis=np.take_along_axis, where=np.where, flip=np.flip,
        ascontiguousarray=np.ascontiguousarray)
    halves = np.where(_ints((3, 9), 2) > 0, np.nan, RNG.normal(size=(3, 9))).astype(bfloat16)
    operands = [_ints((3, 9), 2), _ints((3, 9), 3, np.int8), halves, RNG.normal(size=(3, 9)) * 1j]
    for num_keys in (1, 2, 3, 4):
        for dimension in (0, 1):
            got = prims._sort_with(stand_in, operands, dimension, num_keys)
            want = prims._sort_with(np, operands, dimension, num_keys)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8))
    x = np.where(_ints((4, 7), 3) > 1, np.nan, _ints((4, 7), 3) - 1.0).astype(np.float32)
    for got, want in zip(prims._top_k_with(stand_in, x, 5), prims._top_k_with(np, x, 5)):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


# --- the GPU's fast paths: sort by radix keys alone, top_k by a radix select per row ---------


def _special_floats(shape, dtype):
    """Random bits of ``dtype`` (NaNs of both signs, infinities, subnormals) with -0.0, 0.0
    and repeated values mixed in."""
    unsigned = np.dtype(f"uint{8 * np.dtype(dtype).itemsize}")
    x = RNG.integers(0, np.iinfo(unsigned).max, shape, unsigned, endpoint=True).view(dtype)
    x.flat[::3] = SPECIAL.astype(dtype)[RNG.integers(0, len(SPECIAL), x.flat[::3].shape)]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16", np.float64, np.int8,
                                   np.int32, np.uint16, np.int64, np.bool_])
def test_sorting_one_operand_by_radix_keys_matches_the_stable_path(dtype):
    """The GPU's one-operand sort (keys alone, mapped back) on NumPy: the same values as the
    stable path, NaNs last whatever their sign; -0.0 and 0.0 may trade places (by design)."""
    from flamefx.primitives import sorting as prims
    dtype = np.dtype(dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    x = _special_floats((5, 300), dtype) if dtypes.is_float(dtype) else _values((5, 300), dtype)
    for dimension in (0, 1):
        got = prims._sort_values_alone(np, x, dimension)
        want = prims._sort_with(np, [x], dimension, 1)[0]
        assert got.dtype == want.dtype
        with np.errstate(invalid="ignore"):  # signalling NaNs
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
        if dtypes.is_float(dtype):  # the exact bits come back, NaN payloads and -0.0 too
            bits = f"uint{8 * dtype.itemsize}"
            np.testing.assert_array_equal(np.sort(got.view(bits), axis=None),
                                          np.sort(x.view(bits), axis=None))


KEYS_MAIN = r"""
#include <cstdio>
#include <string>
#include <vector>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const size_t n = std::stoul(argv[2]);
  std::vector<U> xs(n), keys(n), back(n);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  fread(xs.data(), sizeof(U), n, f);
  fclose(f);
  for (size_t i = 0; i < n; ++i) { U x = xs[i]; U y; FORWARD keys[i] = y; }
  for (size_t i = 0; i < n; ++i) { U y = keys[i]; U x; INVERSE back[i] = x; }
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  fwrite(keys.data(), sizeof(U), n, o);
  fwrite(back.data(), sizeof(U), n, o);
  fclose(o);
}
"""



@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.float32, np.float64])
def test_radix_key_snippets_compute_what_numpy_does(tmp_path, dtype):
    """The CUDA bodies of the key maps, compiled for the CPU, against their NumPy twin:
    every 16-bit pattern, random wider ones with the special values."""
    from flamefx.primitives import sorting as prims
    dtype = np.dtype(dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    unsigned = np.dtype(f"uint{8 * dtype.itemsize}")
    if dtype.itemsize == 2:
        bits = np.arange(2**16, dtype=unsigned)
    else:
        bits = _special_floats((4000,), dtype).view(unsigned)
    forward, inverse = prims.radix_key_snippets(dtype)
    c_type = {2: "unsigned short", 4: "unsigned", 8: "unsigned long long"}[dtype.itemsize]
    source = (f"typedef {c_type} U;\n#define FORWARD {forward}\n#define INVERSE {inverse}\n"
              + KEYS_MAIN)
    raw = run_kernel(compile_kernel(tmp_path, source), tmp_path, [bits.size], bits.tobytes())
    keys, back = np.frombuffer(raw, unsigned).reshape(2, bits.size)
    np.testing.assert_array_equal(keys, prims._radix_keys_numpy(bits, dtype, inverse=False))
    np.testing.assert_array_equal(back, bits)


TOPK_MAIN = r"""
#include <cstdio>
#include <string>
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int rows = atoi(argv[2]), n = atoi(argv[3]), k = atoi(argv[4]);
  const int digits = atoi(argv[5]), threads = atoi(argv[6]);
  FILE* f = fopen((dir + "/in.bin").c_str(), "rb");
  auto keys = read_array<unsigned>(f, (size_t)rows * n);
  fclose(f);
  std::vector<int> out((size_t)rows * k, -1);
  launch(Dim3{(unsigned)rows, 1, 1}, Dim3{(unsigned)threads, 1, 1}, [&] {
    flamefx_top_k_rows(keys.data(), n, k, digits, out.data());
  });
  FILE* o = fopen((dir + "/out.bin").c_str(), "wb");
  write_array(o, out);
  fclose(o);
}
"""

ATOMIC_ADD_UNSIGNED = """
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  return std::atomic_ref<unsigned>(*address).fetch_add(value);
}
"""


@pytest.fixture(scope="module")
def top_k_on_the_emulator(tmp_path_factory):
    """The top_k kernel compiled once for the CPU emulator."""
    from flamefx.kernels import cuda_topk
    source = (f'#include "{EMULATOR}"\n' + ATOMIC_ADD_UNSIGNED
              + cuda_topk.SOURCE.replace("__shared__", "static") + TOPK_MAIN)
    return compile_kernel(tmp_path_factory.mktemp("top_k"), source)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
@pytest.mark.parametrize("dtype, n, k, threads", [
    (np.float32, 300, 7, 64), (np.float32, 200, 200, 64), ("bfloat16", 257, 50, 64),
    (np.int8, 90, 1, 64), (np.int32, 70, 33, 64), (np.uint32, 40, 5, 64),
    (np.bool_, 60, 9, 64), (np.float16, 1, 1, 64), (np.int8, 70000, 256, 256)])
def test_top_k_kernel_on_the_cpu_emulator_matches_numpy(top_k_on_the_emulator, tmp_path,
                                                       dtype, n, k, threads):
    """The radix-select kernel (run by the emulator) picks the indices the NumPy impl does:
    NaNs of both signs, -0.0 against 0.0, ties to the lower index, one to three index bytes,
    the GPU's block size last."""
    from flamefx.kernels import cuda_topk
    from flamefx.primitives import sorting as prims
    dtype = np.dtype(dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    rows = 3
    if dtypes.is_float(dtype):
        x = _special_floats((rows, n), dtype)
    elif dtype == np.uint32:
        x = RNG.integers(2**32 - 4, 2**32, (rows, n), dtype=np.uint32)
    else:
        x = _values((rows, n), dtype)
    keys = prims.top_k_row_keys(np, x)
    assert keys.dtype == np.uint32 and keys.shape == (rows, n)
    raw = run_kernel(top_k_on_the_emulator, tmp_path,
                        [rows, n, k, cuda_topk.index_digits(n), threads], keys.tobytes())
    got = np.frombuffer(raw, np.int32).reshape(rows, k)
    np.testing.assert_array_equal(got, prims._top_k_with(np, x, k)[1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, "bfloat16", np.int32, np.float64])
def test_gpu_sort_and_top_k_fast_paths_match_the_cpu(dtype, x64):
    """sort: the same values (-0.0 and 0.0 may trade places); top_k: the same bits."""
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    dtype = np.dtype(dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    x = (_special_floats((16, 3000), dtype) if dtypes.is_float(dtype)
         else _values((16, 3000), dtype))
    for axis in (0, 1):
        want = np.asarray(fnp.sort(flamefx.device_put(x, cpu), axis=axis))
        got = np.asarray(fnp.sort(flamefx.device_put(x, gpu), axis=axis))
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    for k in (1, 50, 256, 300):
        want = lax.top_k(flamefx.device_put(x, cpu), k)
        got = flamefx.jit(lambda a: lax.top_k(a, k))(flamefx.device_put(x, gpu))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
        np.testing.assert_array_equal(np.asarray(got[0]).view(np.uint8),
                                      np.asarray(want[0]).view(np.uint8))


# --- partition -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.bool_])
def test_partition_places_the_kth_element(dtype):
    x = _values((3, 8), dtype)
    for kth in (0, 2, -1):
        for axis in (0, 1):
            k = kth % x.shape[axis]
            want = np.take(np.partition(x, k, axis=axis), [k], axis)
            out = np.asarray(fnp.partition(x, kth, axis=axis))
            picked = np.take_along_axis(x, np.asarray(fnp.argpartition(x, kth, axis=axis)), axis)
            for got in (out, picked):
                assert got.dtype == x.dtype
                np.testing.assert_array_equal(np.take(got, [k], axis), want)
                np.testing.assert_array_equal(np.sort(got, axis=axis), np.sort(x, axis=axis))
                assert (np.take(got, range(k), axis) <= want).all()
                assert (np.take(got, range(k + 1, x.shape[axis]), axis) >= want).all()


def test_partition_orders_as_jax():
    x = np.array([5.0, 1, 4, 2, 3, 0])
    _check(fnp.partition(x, 2), np.array([0.0, 1, 2, 5, 4, 3]))
    _check(fnp.argpartition(x, 2), np.array([5, 1, 3, 0, 2, 4], np.int32))


# --- searchsorted ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["scan", "scan_unrolled", "sort", "compare_all"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_matches_numpy(method, side):
    a = np.sort(np.concatenate([_ints(12, 6).astype(np.float64), [np.nan, np.inf]]))
    v = np.array([[-1.0, 0.0, 2.0, 2.5], [5.0, 7.0, np.nan, np.inf]])
    _check(fnp.searchsorted(a, v, side=side, method=method),
           np.searchsorted(a, v, side=side).astype(np.int32))
    _check(fnp.searchsorted(a, 2.0, side=side, method=method),
           np.int32(np.searchsorted(a, 2.0, side=side)))
    for n in (1, 2, 7, 8):  # every power-of-two edge of the binary search
        _check(fnp.searchsorted(a[:n], v, side=side, method=method),
               np.searchsorted(a[:n], v, side=side).astype(np.int32))


def test_searchsorted_with_sorter_promotion_and_empties():
    a = RNG.permutation(10).astype(np.int32)
    sorter = np.argsort(a)
    _check(fnp.searchsorted(a, [2.5, 9, 11], sorter=sorter),
           np.searchsorted(a, [2.5, 9, 11], sorter=sorter).astype(np.int32))
    _check(fnp.searchsorted(np.zeros(0), [1.0, 2.0]), np.zeros(2, np.int32))
    _check(fnp.searchsorted([1, 2], np.zeros((0, 3))), np.zeros((0, 3), np.int32))
    _check(fnp.searchsorted([False, True], [True, False]), np.array([1, 0], np.int32))


def test_searchsorted_under_jit_and_vmap():
    a = np.sort(RNG.normal(size=20)).astype(np.float32)
    v = RNG.normal(size=(4, 3)).astype(np.float32)
    want = np.searchsorted(a, v).astype(np.int32)
    _check(flamefx.jit(fnp.searchsorted)(a, v), want)
    _check(flamefx.vmap(fnp.searchsorted, in_axes=(None, 0))(a, v), want)
    rows = np.sort(RNG.normal(size=(4, 20)), axis=1).astype(np.float32)
    _check(flamefx.vmap(fnp.searchsorted)(rows, v),
           np.stack([np.searchsorted(r, q) for r, q in zip(rows, v)]).astype(np.int32))


# --- gradients, jit, vmap ----------------------------------------------------------------------


def test_gradients_of_sort_based_statistics():
    x = _f64(RNG.permutation(np.arange(15.0)).reshape(3, 5) / 4)

    def median(x):
        return fnp.sort(x, axis=1)[:, 2]

    def trimmed_mean(x):
        return fnp.mean(fnp.sort(x, axis=None)[2:-2])

    def top_two(x):
        return fnp.sum(lax.top_k(x, 2)[0] ** 2)

    def by_argsort(x):
        return fnp.take_along_axis(x, fnp.argsort(x, axis=0, descending=True), axis=0)

    for f in (median, trimmed_mean, top_two, by_argsort):
        check_grads(f, [x], order=2, modes=("fwd", "rev"))
    grad = flamefx.grad(lambda x: fnp.sum(median(x)))(x)
    np.testing.assert_array_equal(np.asarray(grad), (x == np.median(x, axis=1,
                                                                    keepdims=True)) * 1.0)


def test_gradients_of_partition_and_sorted_values():
    x = _f64(RNG.permutation(np.arange(8.0)) - 3.5)
    check_grads(lambda x: fnp.partition(x, 3), [x], order=2, modes=("fwd", "rev"))
    check_grads(lambda x: fnp.sort(x, descending=True), [x], order=2, modes=("fwd", "rev"))


def test_jit_and_vmap_of_sort_and_argsort():
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    _check(flamefx.jit(lambda x: fnp.sort(x, axis=0))(x), np.sort(x, axis=0))
    _check(flamefx.vmap(fnp.argsort, in_axes=1)(x),
           np.argsort(x.T, axis=-1, kind="stable").astype(np.int32))
    _check(flamefx.vmap(lambda r: lax.top_k(r, 2)[1], in_axes=1)(x),
           np.argsort(-x.T, axis=-1, kind="stable")[:, :2].astype(np.int32))
    per_row = flamefx.vmap(flamefx.grad(lambda r: fnp.sort(r)[-1]))(x)
    np.testing.assert_array_equal(np.asarray(per_row), (x == x.max(1, keepdims=True)) * 1.0)


# --- unique and the set operations ------------------------------------------------------------


def _as_numpy(result):
    return [np.asarray(r) for r in result] if isinstance(result, tuple) else np.asarray(result)


def _check_all(got, want):
    for g, w in zip(got, want):
        _check(g, np.asarray(w).astype(np.asarray(g).dtype))


FLAGS = [dict(return_index=i, return_inverse=v, return_counts=c)
         for i in (False, True) for v in (False, True) for c in (False, True)]


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_unique_matches_numpy(flags, axis):
    x = _ints((6, 3), 2) if axis is not None else _ints((4, 5), 4)
    got, want = fnp.unique(x, axis=axis, **flags), np.unique(x, axis=axis, **flags)
    if not isinstance(want, tuple):
        got, want = (got,), (want,)
    assert len(got) == len(want)
    _check_all(got, want)


def test_unique_of_floats_with_nans_and_signed_zeros():
    x = np.array([2.0, np.nan, -0.0, 1.0, np.nan, 0.0, 2.0], np.float32)
    for equal_nan in (True, False):
        got = fnp.unique(x, return_counts=True, equal_nan=equal_nan)
        _check_all(got, np.unique(x, return_counts=True, equal_nan=equal_nan))
    v = fnp.unique_all(x)  # the array API: NaNs are distinct
    _check(v.values, np.array([-0.0, 1.0, 2.0, np.nan, np.nan], np.float32))
    _check(v.counts, np.array([2, 1, 2, 1, 1], np.int32))
    _check(v.indices, np.array([2, 3, 0, 1, 4], np.int32))


def test_unique_with_size_pads_and_jits():
    x = np.array([3, 1, 3, 3, 7], np.int32)

    def f(x):
        return fnp.unique(x, size=5, fill_value=-1, return_index=True, return_inverse=True,
                          return_counts=True)

    want = ([1, 3, 7, -1, -1], [1, 0, 4, 1, 1], [1, 0, 1, 1, 2], [1, 3, 1, 0, 0])  # from JAX
    for fn in (f, flamefx.jit(f)):
        _check_all(fn(x), want)
    _check(fnp.unique(x, size=2), np.array([1, 3], np.int32))
    _check(fnp.unique(x, size=4), np.array([1, 3, 7, 1], np.int32))  # JAX pads with the min
    rows = np.array([[3, 1, 3], [2, 2, 2]])
    _check(flamefx.vmap(lambda r: fnp.unique(r, size=3, fill_value=0))(rows),
           np.array([[1, 3, 0], [2, 0, 0]], np.int32))


def test_unique_namedtuples_match_numpy():
    x = _ints((3, 4), 3)
    # NumPy 2's unique_* need not sort; JAX's and flamefx's do, as np.unique does.
    flags = {"unique_all": (("values", "indices", "inverse_indices", "counts"),
                            dict(return_index=True, return_inverse=True, return_counts=True)),
             "unique_counts": (("values", "counts"), dict(return_counts=True)),
             "unique_inverse": (("values", "inverse_indices"), dict(return_inverse=True))}
    for name, (fields, kwargs) in flags.items():
        got = getattr(fnp, name)(x)
        assert got._fields == fields
        _check_all(got, np.unique(x, **kwargs))
    _check(fnp.unique_values(x), np.unique(x).astype(np.int32))
    _check(fnp.unique_values(x, size=4, fill_value=9), np.array([0, 1, 2, 9], np.int32))


def test_unique_of_empty_and_zero_d():
    _check(fnp.unique(np.zeros(0, np.float32)), np.zeros(0, np.float32))
    _check(fnp.unique(np.zeros(0, np.float32), size=2, fill_value=1.0),
           np.ones(2, np.float32))
    values, inverse = fnp.unique(np.float32(2.0), return_inverse=True)
    _check(values, np.array([2.0], np.float32))
    _check(inverse, np.array(0, np.int32))


def test_unique_gradients_flow_to_the_values_picked():
    x = _f64([0.5, -1.0, 2.0, 0.25])
    check_grads(lambda x: fnp.unique(x, size=4) ** 2, [x], order=2, modes=("fwd", "rev"))
    check_grads(lambda x: fnp.union1d(x, x[:2] * 3.0), [x], order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("method", ["auto", "compare_all", "binary_search", "sort"])
def test_isin_matches_numpy(method):
    element, test = _ints((3, 5), 8), _ints(4, 8)
    for invert in (False, True):
        _check(fnp.isin(element, test, invert=invert, method=method),
               np.isin(element, test, invert=invert))
    with_nan = np.array([1.0, np.nan, 3.0])
    _check(fnp.isin(with_nan, [np.nan, 3.0], method=method), np.isin(with_nan, [np.nan, 3.0]))
    _check(fnp.isin(with_nan, np.zeros(0), method=method), np.zeros(3, bool))


def test_set_operations_match_numpy():
    a, b = _ints(9, 6), _ints((2, 3), 6)
    _check(fnp.union1d(a, b), np.union1d(a, b).astype(np.int32))
    _check(fnp.setdiff1d(a, b), np.setdiff1d(a, b).astype(np.int32))
    u = np.unique(a)
    _check(fnp.setdiff1d(u, b, assume_unique=True), np.setdiff1d(u, b, assume_unique=True))
    _check(fnp.setxor1d(a, b), np.setxor1d(a, b).astype(np.int32))
    _check(fnp.setxor1d(u, np.unique(b), assume_unique=True),
           np.setxor1d(u, np.unique(b), assume_unique=True).astype(np.int32))
    _check(fnp.setxor1d(a, a), np.zeros(0, np.int32))
    _check(fnp.intersect1d(np.zeros(0), [1.0]), np.zeros(0, np.float32))
    for assume_unique in (False, True):
        a1, b1 = (np.unique(a), np.unique(b)) if assume_unique else (a, b)
        got = fnp.intersect1d(a1, b1, assume_unique=assume_unique, return_indices=True)
        _check_all(got, np.intersect1d(a1, b1, assume_unique=assume_unique,
                                       return_indices=True))
        _check(fnp.intersect1d(a1, b1, assume_unique), np.intersect1d(a1, b1, assume_unique))


def test_set_operations_with_size_under_jit():
    a, b = np.array([1, 3, 4, 3]), np.array([3, 1, 2, 1])
    inter = flamefx.jit(lambda a, b: fnp.intersect1d(a, b, return_indices=True, size=4))
    _check_all(inter(a, b), ([1, 3, 1, 1], [0, 1, 4, 4], [1, 0, 4, 4]))  # from JAX
    _check(fnp.intersect1d(a, b, size=3, fill_value=7), np.array([1, 3, 7], np.int32))
    diff = flamefx.jit(lambda a, b: fnp.setdiff1d(a, b, size=3))
    _check(diff(np.array([5, 1, 3, 1]), np.array([3])), np.array([1, 5, 0], np.int32))
    union = flamefx.jit(lambda a, b: fnp.union1d(a, b, size=5, fill_value=-1))
    _check(union(a, b), np.array([1, 2, 3, 4, -1], np.int32))
    _check(fnp.setdiff1d(np.zeros(0), [1.0], size=2, fill_value=4.0),
           np.full(2, 4.0, np.float32))
    xor = flamefx.jit(lambda a, b: fnp.setxor1d(a, b, size=6))
    _check(xor(np.array([1, 2, 3, 3, 7]), np.array([2, 3, 4, 4, 0])),
           np.array([0, 1, 4, 7, 0, 0], np.int32))  # JAX pads with the smallest result
    _check(fnp.setxor1d([1, 2], [2, 5], size=3, fill_value=-1), np.array([1, 5, -1], np.int32))


def test_traced_set_operations_without_size_say_so():
    x = np.array([1, 2, 2])
    for f in (fnp.unique, fnp.unique_values, lambda x: fnp.union1d(x, x),
              lambda x: fnp.setdiff1d(x, x), lambda x: fnp.intersect1d(x, x),
              lambda x: fnp.setxor1d(x, x)):
        with pytest.raises(ConcretizationError, match="size="):
            flamefx.jit(f)(x)
    with pytest.raises(FlamefxError, match="fill_value"):
        fnp.unique(np.zeros(0), size=2)
    with pytest.raises(FlamefxError, match="method"):
        fnp.isin([1], [1], method="hash")
    with pytest.raises(FlamefxError, match="out of bounds"):
        fnp.unique(np.ones((2, 2)), axis=2)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_gets_flamefx_errors():
    x = np.ones((2, 3))
    with pytest.raises(FlamefxError, match="out of bounds"):
        fnp.sort(x, axis=2)
    with pytest.raises(FlamefxError, match="out of bounds"):
        fnp.argsort(x, axis=-3)
    with pytest.raises(FlamefxError, match="out of bounds"):
        fnp.sort(np.float32(1.0))  # 0-d along axis -1 (axis=None flattens)
    shapes_and_line = r"k=4\n  operands: f(32|64)\[2,3\]\n  at .*test_sorting.py"
    with pytest.raises(FlamefxError, match=shapes_and_line):
        lax.top_k(x, 4)
    with pytest.raises(FlamefxError, match="axis 2 is out of range"):
        lax.top_k(x, 1, axis=2)
    with pytest.raises(FlamefxError, match="dimension 2 is out of range"):
        lax.sort(x, dimension=2)
    with pytest.raises(FlamefxError, match="num_keys"):
        lax.sort((x, x), num_keys=3)
    with pytest.raises(FlamefxError, match="one shape"):
        lax.sort((x, np.ones(3)))
    with pytest.raises(FlamefxError, match="kth 5 is out of bounds for an axis of size 4"):
        fnp.partition(np.ones(4), 5)
    with pytest.raises(FlamefxError, match="complex"):
        fnp.argpartition(np.array([1j, 2.0]), 0)
    with pytest.raises(FlamefxError, match="1-d"):
        fnp.searchsorted(x, 1.0)
    with pytest.raises(FlamefxError, match="side"):
        fnp.searchsorted([1.0], 1.0, side="middle")
    with pytest.raises(FlamefxError, match="order"):
        fnp.sort(x, order="f0")
    with pytest.raises(FlamefxError, match="one shape"):
        fnp.lexsort([np.ones(3), np.ones(4)])
