"""float32 random.normal, erf_inv and bounded random.uniform bit for bit as JAX's, on the CPU
and the GPU.

JAX draws a normal as ``sqrt(2) * erf_inv(u)``; flamefx's float32 erf_inv repeats XLA's CPU
arithmetic (flamefx/kernels/erf_inv.py). A bounded uniform is ``u * (maxval - minval) +
minval``, which XLA's CPU backend computes with one FMA in float32 and float64 (the fma
primitive, flamefx/kernels/fma.py). The constants were printed by jax 0.10.2 on an x86-64
CPU with FMA (partitionable threefry, its default) as bit patterns; jax is not imported
here. The GPU tests check that the CUDA kernels give the same bits (JAX's own GPU numbers
may differ: XLA's GPU backend lowers log and log1p to CUDA's own).
"""

import hashlib
import shutil
from fractions import Fraction

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx import random as frandom
from flamefx.kernels import erf_inv as erf_inv_kernels
from flamefx.kernels import fma as fma_kernels
from flamefx.primitives import elementwise


def _floats(words):
    return np.array(words, np.uint32).view(np.float32)


def _digest(x) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x, np.float32)).tobytes()).hexdigest()


# jax.random.normal(key, (3, 5)) for each key; the shorter draws are its prefixes
# (partitionable threefry), and (1000,) and (100, 1000) are given by their SHA-256.
_KEYS = {
    "key(0)": lambda: frandom.key(0),
    "key(42)": lambda: frandom.key(42),
    "fold_in(split(key(7))[1], 3)": lambda: frandom.fold_in(frandom.split(frandom.key(7))[1], 3),
}
_NORMAL_3x5 = {
    "key(0)": [0x3FCFB2BD, 0x40019DF0, 0xBEDE0017, 0xBDA10222, 0x3E34512C, 0xBF78DAD7,
               0xBEFD97CC, 0x3EFD1F31, 0x3F2A12CC, 0xBF733DEA, 0x400B7D6D, 0xBFFA4260,
               0x3EB79695, 0x3E21950C, 0x3FA37783],
    "key(42)": [0xBCE7DF15, 0x3EEF2BE8, 0x3E976661, 0x3E1D3B24, 0xBDFE04EB, 0x3E5E211A,
                0xBFB86EB9, 0x3F418009, 0x3F057B1A, 0x3F6900ED, 0xBEC4DCBD, 0x3F91E5BB,
                0x3FB90F86, 0x3F8A5B26, 0xBD6693B6],
    "fold_in(split(key(7))[1], 3)": [
        0x3FD2C178, 0xBE2826D7, 0x3DF5727B, 0x3F0CF235, 0xBF870A88, 0xBF3D8A89, 0x3FA678A3,
        0xBF6FCCC3, 0x3F1B7029, 0x3FB1661A, 0x3E87990C, 0x3F36A2E6, 0x3FD21567, 0x3DFC793A,
        0x3F8B6498],
}
_NORMAL_DIGESTS = {
    ("key(0)", (1000,)): "8fd4d579ee0cce1618431029e7d5b63ee04b58a2a29fed7c30cd1646af004e1c",
    ("key(0)", (100, 1000)): "dc63dab2892c71003f4f978887e4a10849564f75bc0813e48640c24de3a37c87",
    ("key(42)", (1000,)): "c3fad05de0339189a2268e02e8abdc05451855b46457e969a5244ce1301e968c",
    ("key(42)", (100, 1000)): "9f08dc3faf6cd365ab304aba9ffc46354fe4958d006b3492b0b52ad4bfda2476",
    ("fold_in(split(key(7))[1], 3)", (1000,)):
        "77e68b6a732485f4ef1a29e887544e1468e8c88fcd157c0ea024cf38af88d965",
    ("fold_in(split(key(7))[1], 3)", (100, 1000)):
        "462f7ed0426d6da6dda369a8eb496f962eff07d761174012686d488c802b366d",
}

# jax.lax.erf_inv (jitted) of these float32: zeros, subnormals (XLA reads them as 0),
# just above the smallest normal (the result flushes to 0), both log1p branches (|x| below
# and above 0.6436), both polynomials (w = -log1p(-x*x) below and above 5), +-1, and the
# NaN cases (|x| > 1, inf, nan).
_ERF_INV_X = [0x00000000, 0x80000000, 0x000116C2, 0x8082AB1E, 0x008D8EB6, 0x33800000,
              0x3DCCCCCD, 0xBE800000, 0x3F000000, 0x3F24C297, 0xBF24C298, 0x3F400000,
              0xBF666666, 0x3F7D70A4, 0xBF7F212D, 0x3F7F227D, 0x3F7FBE77, 0xBF7FFFFF,
              0x3F800000, 0xBF800000, 0x3FC00000, 0x7F800000, 0x7FC00000]
_ERF_INV_Y = [0x00000000, 0x80000000, 0x00000000, 0x80000000, 0x00000000, 0x3362DFC3,
              0x3DB5FA21, 0xBE66B835, 0x3EF430FE, 0x3F26F144, 0xBF26F145, 0x3F503C48,
              0xBF94E009, 0x3FE92333, 0xC0048DB6, 0x4004A2FD, 0x4014E999, 0xC07547CA,
              0x7F800000, 0xFF800000, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FC00000]
# ... and of every 2**13-th float32 bit pattern below 1.0, then the same negated.
_SWEEP_DIGEST = "09e8c52f7589769e71c6359b87602908de41db1435ab1512a0130e6818cc6f21"


def _sweep():
    positive = np.arange(0, 0x3F800000, 2**13, dtype=np.uint32).view(np.float32)
    return np.concatenate([positive, -positive])


def _assert_same_bits(got, want_words):
    """Bit equality, except that any NaN matches any NaN (XLA's payloads are its own)."""
    got, want = np.asarray(got, np.float32).reshape(-1), _floats(want_words)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("name", sorted(_KEYS))
def test_normal_float32_matches_jax_bit_for_bit(name):
    key, words = _KEYS[name](), _NORMAL_3x5[name]
    jitted = flamefx.jit(lambda k, shape: frandom.normal(k, shape), static_argnums=1)
    for shape in [(), (1,), (2,), (3,), (7,), (3, 5)]:
        n = int(np.prod(shape))
        for draw in (frandom.normal(key, shape), jitted(key, shape)):
            assert draw.shape == shape and draw.dtype == np.float32
            _assert_same_bits(draw, words[:max(n, 1)])
    for shape in [(1000,), (100, 1000)]:
        assert _digest(frandom.normal(key, shape)) == _NORMAL_DIGESTS[name, shape]
    assert _digest(jitted(key, (1000,))) == _NORMAL_DIGESTS[name, (1000,)]


def test_erf_inv_float32_matches_xla():
    x = fnp.asarray(_floats(_ERF_INV_X))
    _assert_same_bits(lax.erf_inv(x), _ERF_INV_Y)
    _assert_same_bits(flamefx.jit(lax.erf_inv)(x), _ERF_INV_Y)
    for i in (5, 9, 16):  # 0-d
        _assert_same_bits(lax.erf_inv(fnp.asarray(_floats(_ERF_INV_X[i]))), [_ERF_INV_Y[i]])
    assert _digest(lax.erf_inv(fnp.asarray(_sweep()))) == _SWEEP_DIGEST


def test_erf_inv_half_types_match_xla():
    # jax.lax.erf_inv of every float16 / bfloat16 in [0, 1], then the same negated (XLA
    # computes them in float32): SHA-256 of the results' bytes.
    for dtype, top, digest in [
            (np.float16, 0x3C00,
             "53cce42ec4172c7e466b9134f107901f5703ffc77b1c9ce5228b432d740b4a2b"),
            (flamefx.dtypes.bfloat16, 0x3F80,
             "8a224f9408852faba5db454b6e035827dc38f6c4870489100da9842dda474afc")]:
        half = np.arange(0, top + 1, dtype=np.uint16).view(dtype)
        y = np.asarray(lax.erf_inv(fnp.asarray(np.concatenate([half, -half]))))
        assert y.dtype == dtype and hashlib.sha256(y.tobytes()).hexdigest() == digest


def test_fma_rounds_once_where_float64_lands_halfway():
    # 1.0000001 + 2**-24 * (1 - 2**-23): the float64 sum rounds onto the float32 midpoint
    # 1 + 3 * 2**-24 and float64 -> float32 would round it up; the exact sum is below it.
    a, b, c = np.float32(1 + 2**-23), np.float32(2**-24 * (1 - 2**-23)), np.float32(1 + 2**-23)
    assert np.float32(np.float64(a) * np.float64(b) + np.float64(c)) == np.float32(1 + 2**-22)
    got = fma_kernels.fma_float32_normal(np.array([a, -a]), np.array([b, b]),
                                         np.array([c, -c]))
    np.testing.assert_array_equal(got, [c, -c])
    # Random triples with every exponent gap, and exact ties (which round to even).
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 2.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    b = (rng.standard_normal(3000) * 2.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    c = (rng.standard_normal(3000) * 2.0 ** rng.integers(-60, 60, 3000)).astype(np.float32)
    ties = np.float32(2.0**-24) * rng.integers(1, 5, 100).astype(np.float32)
    a, b, c = (np.concatenate([v, w]) for v, w in
               ((a, np.ones(100, np.float32)), (b, ties), (c, np.ones(100, np.float32))))
    want = np.array([_fma_exact(*t, np.dtype(np.float32)) for t in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(fma_kernels.fma_float32_normal(a, b, c), want)


_KERNEL_MAIN = r"""
extern "C" __global__ void erf_inv_kernel(const float* x, float* y, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = flamefx_erf_inv(x[i]);
}
#include <cstdio>
#include <string>
int main(int argc, char** argv) {
  const int n = atoi(argv[2]);
  FILE* f = fopen((std::string(argv[1]) + "/in.bin").c_str(), "rb");
  auto x = read_array<float>(f, n);
  std::vector<float> y(n);
  launch(Dim3{1, 1, 1}, Dim3{32, 1, 1}, [&] { erf_inv_kernel(x.data(), y.data(), n); });
  FILE* o = fopen((std::string(argv[1]) + "/out.bin").c_str(), "wb");
  write_array(o, y);
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
def test_cuda_erf_inv_on_cpu_matches_xla(tmp_path):
    from tests.test_kernels_on_cpu import EMULATOR, _run
    x = np.concatenate([_floats(_ERF_INV_X), _sweep()])
    source = f'#include "{EMULATOR}"\n' + erf_inv_kernels.CUDA_SOURCE
    (y,) = _run(tmp_path, source, _KERNEL_MAIN, [x.size], [x], [(np.float32, x.shape)])
    _assert_same_bits(y[:len(_ERF_INV_X)], _ERF_INV_Y)
    assert _digest(y[len(_ERF_INV_X):]) == _SWEEP_DIGEST


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
def test_jit_gpu_kernel_for_normal_on_cpu_gives_jax_bits(tmp_path):
    """jit's GPU plan for normal, its steps run by NumPy up to the fused kernel that holds
    erf_inv, which runs on the CPU emulator: the kernel jit generates gives JAX's bits."""
    from flamefx.jaxpr import Literal
    from flamefx.kernels.fusion import FusedKernel
    from tests.test_fused_rows_on_cpu import _emulate_fused
    key = _KEYS["key(42)"]()
    jitted = flamefx.jit(lambda k: frandom.normal(k, (1000,)))
    plan = jitted.lower(key, platform="gpu").plan
    entry, leaves, _ = jitted._lookup((key,), {})
    env = {v.id: np.asarray(a) for v, a in zip(plan.jaxpr.invars, list(entry.consts) + leaves)}
    for step in plan.steps:
        fused = isinstance(step, FusedKernel)
        if fused and "erf_inv" in [eqn.prim.name for eqn in step.eqns]:
            (got,) = _emulate_fused(tmp_path, step, [env[v.id] for v in step.inputs])
            assert _digest(got) == _NORMAL_DIGESTS["key(42)", (1000,)]
            return
        for eqn in step.eqns if fused else [step.eqn]:
            ins = [np.asarray(v.val) if isinstance(v, Literal) else env[v.id]
                   for v in eqn.invars]
            outs = eqn.prim.impl_for("cpu")(*ins, **eqn.params)
            env.update({v.id: np.asarray(o) for v, o in zip(eqn.outvars, outs)})
    raise AssertionError("no fused kernel computes erf_inv")


@pytest.mark.gpu
def test_gpu_normal_and_erf_inv_match_jax_bit_for_bit():
    gpu = flamefx.devices("gpu")[0]
    for name in sorted(_KEYS):
        key = flamefx.device_put(_KEYS[name](), gpu)
        eager = frandom.normal(key, (3, 5))
        jitted = flamefx.jit(lambda k: frandom.normal(k, (100, 1000)))(key)
        assert eager.device.platform == "gpu" and jitted.device.platform == "gpu"
        _assert_same_bits(eager, _NORMAL_3x5[name])
        assert _digest(jitted) == _NORMAL_DIGESTS[name, (100, 1000)]
    x = flamefx.device_put(fnp.asarray(_floats(_ERF_INV_X)), gpu)
    _assert_same_bits(lax.erf_inv(x), _ERF_INV_Y)
    _assert_same_bits(flamefx.jit(lambda v: lax.erf_inv(v * 1.0))(x), _ERF_INV_Y)
    sweep = flamefx.device_put(fnp.asarray(_sweep()), gpu)
    assert _digest(lax.erf_inv(sweep)) == _SWEEP_DIGEST


# --- bounded uniform: XLA computes u * (maxval - minval) + minval with one FMA ---------------

# jax.random.uniform(key, (7,), dtype, -3.7, 2.1) for each key (shorter draws are prefixes),
# as float32 / float64 bit patterns, and the SHA-256 of longer draws' bytes.
_UNIFORM_7 = {
    ("key(0)", "float32"): [0x3FE5F2B0, 0x3FFCE5D1, 0xBFE2E824, 0xBF7B5231, 0xBECA0EF7,
                            0xC02F5D83, 0xBFF34FC0],
    ("key(42)", "float32"): [0xBF5D9064, 0x3E78A6C6, 0xBE00A3E8, 0xBEE46818, 0xBF8B0A9B,
                             0xBE9A9CDB, 0xC05107DF],
    ("fold_in(split(key(7))[1], 3)", "float32"): [
        0x3FE7CEE1, 0xBF96D140, 0xBF05FA67, 0x3ED32741, 0xC036B655, 0xC0179933, 0x3FC5018E],
    ("key(0)", "float64"): [
        0xBFF45DFF82B84615, 0xC003905B278916B2, 0x3FFE61BFB7178B93, 0xBFD78B9F75274801,
        0xBFE39E674D9A0D79, 0xBFFA43C9E290CFA1, 0x3FF6BE44845EDAA8],
    ("key(42)", "float64"): [
        0xBFF39984BF56F3A6, 0xC00CE74DEC854BD0, 0xBFD7AD76AC9D20CE, 0x3FE10DEC52E6A3A4,
        0x3FD282F0CA4198B3, 0x3FA1D6679B06C162, 0x3FA3E820CB73DED5],
    ("fold_in(split(key(7))[1], 3)", "float64"): [
        0x3FEA3D3561BFD69C, 0xBFA8D17103729039, 0xBFF9783E9A90F4C7, 0xC000A9F4D45261AE,
        0xBFF7FEFE1B40D633, 0x3FF376B1BCCF5CFB, 0xC006BA77318FE27F],
}
_UNIFORM_DIGESTS = {
    ("key(0)", "float32", (1000,)):
        "a50409c2a053036ec01e932f3e274cefcd26781d4d06c197cf1ce86904d4271e",
    ("key(0)", "float32", (100, 1000)):
        "27898bb2b9cf38b2eed6f71c6a71ed0eedbabb7b1d7fee0575bcfbb3a0c2ae92",
    ("key(42)", "float32", (1000,)):
        "15204fe4319f5583c78ec73001db4aefb0a16f2009f4bd3ec807db841d840417",
    ("key(42)", "float32", (100, 1000)):
        "a6b2869dfbbe15a284865db75f503d35df29af82bfa57bb7cf6f7c8738be9fd6",
    ("fold_in(split(key(7))[1], 3)", "float32", (1000,)):
        "e415457a36dcb2c036535373ce8d7a55a89170d41efc1a444fdc2720bdef6e64",
    ("fold_in(split(key(7))[1], 3)", "float32", (100, 1000)):
        "9bfa09bbdf6c65145ecd49fddd63416c11c4fd65e3e48a4611ae5d51996ae7f9",
    ("key(0)", "float64", (1000,)):
        "85255663b5a4995d4fce9daeab2ef268e7c1ec45c97ceeac2c151300d108b274",
    ("key(42)", "float64", (1000,)):
        "9d7350f6710fab447edd7c0df9b1246e2c3dba3ee6e6f5e48e453d4e4431355c",
    ("fold_in(split(key(7))[1], 3)", "float64", (1000,)):
        "e8f4db038eb7e24eaaace611d6fa926ffa19373f89f77ed0ec3d5841cf2678d9",
}
# key(42), other bounds: (0.3, 17.0); per-element bounds; bounds broadcast to (3, 5); the
# half types (computed op by op in XLA, each rounded: no FMA).
_UNIFORM_OTHER_DIGESTS = {
    ("float32", (0.3, 17.0), (1000,)):
        "cd31a17c228271fbbb83323954bbe858592960c274ddc1362e35700a731161d9",
    ("float64", (0.3, 17.0), (100, 1000)):
        "594dd0db31ffa490aede6630357cc9a4b56c19f9f3e3a089c08c043013b5c115",
    ("float16", (-3.7, 2.1), (1000,)):
        "4cab708c99ed38fec25663570eb4791562720aee099133432efc9a90ae5896aa",
    ("bfloat16", (-3.7, 2.1), (1000,)):
        "eaa2af72c8c71b39766ac993bc49f46ece0dd4a48608b90ba4b72e3b957854de",
}
_UNIFORM_ARRAY_BOUNDS_DIGEST = "68442264e34fbef560da30e0a36c64172cccd3ecdca2217057a4ec1bdf582ce7"
_UNIFORM_BROADCAST_3x5 = [0x404922AB, 0x40BF49E2, 0x40B2C9B4, 0x40B0680C, 0x414B1FF8,
                          0x40974E90, 0x3F4D9F15, 0x40F8C322, 0x40F6FF3A, 0x41C49DFF,
                          0x40F06846, 0x41136BE9, 0x411CBD21, 0x41279B9B, 0x4190EA33]


def _bytes_digest(x) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()


def _words(x, dtype_name):
    bits = np.uint32 if dtype_name == "float32" else np.uint64
    return np.asarray(x).reshape(-1).view(bits).tolist()


def _check_bounded_uniform(name, dtype_name):
    key, dtype = _KEYS[name](), np.dtype(dtype_name)
    words = _UNIFORM_7[name, dtype_name]
    jitted = flamefx.jit(lambda k, shape: frandom.uniform(k, shape, dtype, -3.7, 2.1),
                         static_argnums=1)
    for shape in [(), (1,), (3,), (7,)]:
        for draw in (frandom.uniform(key, shape, dtype, -3.7, 2.1), jitted(key, shape)):
            assert draw.shape == shape and draw.dtype == dtype
            assert _words(draw, dtype_name) == words[:max(len(draw.reshape(-1)), 1)]
    for (case, dt, shape), digest in _UNIFORM_DIGESTS.items():
        if (case, dt) == (name, dtype_name):
            assert _bytes_digest(frandom.uniform(key, shape, dtype, -3.7, 2.1)) == digest
            assert _bytes_digest(jitted(key, shape)) == digest


@pytest.mark.parametrize("name", sorted(_KEYS))
def test_bounded_uniform_float32_matches_jax_bit_for_bit(name):
    _check_bounded_uniform(name, "float32")


@pytest.mark.parametrize("name", sorted(_KEYS))
def test_bounded_uniform_float64_matches_jax_bit_for_bit(name, x64):
    _check_bounded_uniform(name, "float64")


def _other_bounds_cases():
    """(draw function, SHA-256 or float32 words) for key(42) and other bounds."""
    lo = np.linspace(-5, 5, 1000, dtype=np.float32)
    hi = lo * np.float32(1.5) + np.float32(0.25)
    lo3 = np.array([[-1.5], [0.1], [7.25]], np.float32)
    hi5 = np.array([8.0, 9.5, 10.0, 11.0, 30.0], np.float32)
    cases = [(lambda k, lo=lo, hi=hi: frandom.uniform(k, (1000,), np.float32, lo, hi),
              _UNIFORM_ARRAY_BOUNDS_DIGEST),
             (lambda k: frandom.uniform(k, (3, 5), np.float32, lo3, hi5), _UNIFORM_BROADCAST_3x5)]
    for (dtype_name, (a, b), shape), digest in _UNIFORM_OTHER_DIGESTS.items():
        dtype = flamefx.dtypes.canonicalize(dtype_name)
        cases.append((lambda k, dtype=dtype, a=a, b=b, shape=shape:
                      frandom.uniform(k, shape, dtype, a, b), digest))
    return cases


def test_uniform_other_bounds_and_half_types_match_jax(x64):
    key = frandom.key(42)
    for draw, want in _other_bounds_cases():
        for got in (draw(key), flamefx.jit(draw)(key)):
            if isinstance(want, str):
                assert _bytes_digest(got) == want
            else:
                assert _words(got, "float32") == want


def _fma_exact(a, b, c, dtype):
    """a * b + c from exact rationals, rounded once to ``dtype``, ties to even; the IEEE
    sign where the exact sum is zero, and IEEE's inf and nan."""
    a, b, c = float(a), float(b), float(c)
    if np.isfinite(a) and np.isfinite(b) and not np.isfinite(c):
        return dtype.type(c)  # the exact product is finite, even where a * b overflows
    if not all(np.isfinite([a, b, c])) or a * b == 0 and c == 0:
        return dtype.type(a * b + c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:
        return dtype.type(0.0)
    info = np.finfo(dtype)
    if abs(exact) >= Fraction(float(info.max)) + Fraction(2.0 ** (info.maxexp - info.nmant - 2)):
        return dtype.type(np.inf if exact > 0 else -np.inf)
    near = np.asarray(float(exact)).astype(dtype)
    with np.errstate(over="ignore"):
        candidates = [np.nextafter(near, dtype.type(-np.inf)), near,
                      np.nextafter(near, dtype.type(np.inf))]
    bits = f"u{dtype.itemsize}"
    return min([r for r in candidates if np.isfinite(r)],
               key=lambda r: (abs(Fraction(float(r)) - exact), int(np.asarray(r).view(bits)) & 1))


def _fma_cases(dtype, rng, n=600):
    """Random triples over the exponent range; near-halfway sums; cancellation; subnormal
    and overflowing results; huge operands; and every combination of special values."""
    info = np.finfo(dtype)
    m, top = info.nmant, info.maxexp

    def spread(low, high, size=n):
        return rng.standard_normal(size) * 2.0 ** rng.integers(low, high, size)

    a, b = spread(-top // 2, top // 2), spread(-top // 2, top // 2)
    triples = [(a, b, a * b * spread(-60, 60))]
    k = rng.integers(0, 8, n)
    near_half = 2.0 ** -(m + 1) * (1 + rng.choice([-1, 0, 1], n) * 2.0 ** -m)
    triples.append((1 + k * 2.0**-m, near_half * rng.choice([1, 3, 5], n),
                    rng.choice([-1, 1], n) * (1 + rng.integers(0, 8, n) * 2.0**-m)))
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    triples.append((a, b, -(a.astype(dtype) * b.astype(dtype))))
    triples.append((spread(info.minexp - 10, info.minexp // 2), spread(info.minexp // 2 - 5, 0),
                    spread(info.minexp - 20, info.minexp + 5)))
    triples.append((spread(top - 40, top - 1), 4 * rng.standard_normal(n),
                    spread(top - 2, top - 1)))
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, info.tiny, info.max])
    triples.append(tuple(np.array(np.meshgrid(special, special, special)).reshape(3, -1)))
    with np.errstate(all="ignore"):
        return [np.concatenate([t[i] for t in triples]).astype(dtype) for i in range(3)]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_fma_rounds_once(dtype_name, x64):
    dtype = np.dtype(dtype_name)
    a, b, c = _fma_cases(dtype, np.random.default_rng(5))
    want = np.array([_fma_exact(*t, dtype) for t in zip(a, b, c)], dtype)
    for got in (fma_kernels.fma(a, b, c), elementwise.fma(a, b, c),
                flamefx.jit(elementwise.fma)(a, b, c)):
        got = np.asarray(got)
        assert got.dtype == dtype
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        bits = f"u{dtype.itemsize}"
        np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))


def _run_gpu_plan_on_cpu(tmp_path, jitted, args, prim_name):
    """jit's GPU plan for ``jitted(*args)``, its steps run by NumPy up to the fused kernel
    that computes ``prim_name``, which runs on the CPU emulator: that kernel's output."""
    from flamefx.jaxpr import Literal
    from flamefx.kernels.fusion import FusedKernel
    from tests.test_fused_rows_on_cpu import _emulate_fused
    plan = jitted.lower(*args, platform="gpu").plan
    entry, leaves, _ = jitted._lookup(args, {})
    env = {v.id: np.asarray(a) for v, a in zip(plan.jaxpr.invars, list(entry.consts) + leaves)}
    for step in plan.steps:
        fused = isinstance(step, FusedKernel)
        if fused and prim_name in [eqn.prim.name for eqn in step.eqns]:
            (got,) = _emulate_fused(tmp_path, step, [env[v.id] for v in step.inputs])
            return got
        for eqn in step.eqns if fused else [step.eqn]:
            ins = [np.asarray(v.val) if isinstance(v, Literal) else env[v.id]
                   for v in eqn.invars]
            outs = eqn.prim.impl_for("cpu")(*ins, **eqn.params)
            env.update({v.id: np.asarray(o) for v, o in zip(eqn.outvars, outs)})
    raise AssertionError(f"no fused kernel computes {prim_name}")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16", "bfloat16"])
def test_jit_gpu_kernel_for_bounded_uniform_on_cpu_gives_jax_bits(tmp_path, dtype_name, x64):
    """float32/float64 through CUDA's fma; the half types through float32 ops, each rounded
    by a cast (which a fused kernel must round: its locals are float)."""
    dtype = flamefx.dtypes.canonicalize(dtype_name)
    jitted = flamefx.jit(lambda k: frandom.uniform(k, (1000,), dtype, -3.7, 2.1))
    half = dtype_name in ("float16", "bfloat16")
    got = _run_gpu_plan_on_cpu(tmp_path, jitted, (_KEYS["key(42)"](),), "add" if half else "fma")
    assert got.dtype == dtype
    want = (_UNIFORM_OTHER_DIGESTS[dtype_name, (-3.7, 2.1), (1000,)] if half
            else _UNIFORM_DIGESTS["key(42)", dtype_name, (1000,)])
    assert _bytes_digest(got) == want


@pytest.mark.gpu
def test_gpu_bounded_uniform_matches_jax_bit_for_bit(x64):
    gpu = flamefx.devices("gpu")[0]
    for (name, dtype_name, shape), digest in _UNIFORM_DIGESTS.items():
        key = flamefx.device_put(_KEYS[name](), gpu)
        dtype = np.dtype(dtype_name)
        eager = frandom.uniform(key, shape, dtype, -3.7, 2.1)
        jitted = flamefx.jit(lambda k: frandom.uniform(k, shape, dtype, -3.7, 2.1))(key)
        assert eager.device.platform == "gpu" and jitted.device.platform == "gpu"
        assert _bytes_digest(eager) == digest and _bytes_digest(jitted) == digest
    key = flamefx.device_put(frandom.key(42), gpu)
    for draw, want in _other_bounds_cases():
        for got in (draw(key), flamefx.jit(draw)(key)):
            assert got.device.platform == "gpu"
            if isinstance(want, str):
                assert _bytes_digest(got) == want
            else:
                assert _words(got, "float32") == want


def test_bounded_uniform_gradients_and_vmap():
    """d/dminval = 1 - u and d/dmaxval = u (u the [0, 1) draw; JAX's rule through its FMA),
    and vmap over per-example bounds draws the same bits as a loop."""
    key, shape = frandom.key(1), (50,)
    u = np.asarray(frandom.uniform(key, shape), np.float64)
    d_lo, d_hi = flamefx.grad(lambda lo, hi: frandom.uniform(key, shape, minval=lo,
                                                              maxval=hi).sum(),
                              argnums=(0, 1))(0.5, 2.0)
    np.testing.assert_allclose([float(d_lo), float(d_hi)], [(1 - u).sum(), u.sum()], rtol=1e-6)
    lows = np.linspace(-1, 1, 4).astype(np.float32)
    batched = flamefx.vmap(lambda lo: frandom.uniform(key, (6,), minval=lo, maxval=3.0))(lows)
    for lo, row in zip(lows, np.asarray(batched)):
        want = frandom.uniform(key, (6,), minval=lo, maxval=3.0)
        assert _words(row, "float32") == _words(want, "float32")


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_uniform_power_of_two_span_shortcut_gives_the_fma_bits(dtype_name, x64):
    """Numbers as bounds whose difference is a power of two (>= 1) skip the FMA (the product
    is exact); traced bounds always take it: both give the same bits."""
    dtype, key = np.dtype(dtype_name), frandom.key(9)
    traced = flamefx.jit(lambda k, lo, hi: frandom.uniform(k, (4000,), dtype, lo, hi))
    lo_normal = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))[()]
    for lo, hi in [(0.0, 1.0), (-1.0, 1.0), (lo_normal, 1.0), (-3.25, 0.75), (1e3, 1e3 + 2**20),
                   (-0.3, 1.7)]:
        shortcut = frandom.uniform(key, (4000,), dtype, lo, hi)
        want = traced(key, np.asarray(lo, dtype), np.asarray(hi, dtype))
        assert _words(shortcut, dtype_name) == _words(want, dtype_name), (lo, hi)
