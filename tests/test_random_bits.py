"""float32 random.normal and erf_inv bit for bit as JAX's, on the CPU and the GPU.

JAX draws a normal as ``sqrt(2) * erf_inv(u)``; flamefx's float32 erf_inv repeats XLA's CPU
arithmetic (flamefx/kernels/erf_inv.py). The constants were printed by jax 0.10.2 on an x86-64
CPU with FMA (partitionable threefry, its default) as float32 bit patterns; jax is not
imported here. The GPU tests check that the CUDA kernels give the same bits (JAX's own GPU
numbers may differ: XLA's GPU backend lowers log and log1p to CUDA's own).
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


def _fma_exact(a, b, c) -> np.float32:
    """float32 a * b + c rounded once to nearest even, from the exact rational value."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    near = np.float32(float(exact))
    candidates = [np.nextafter(near, np.float32(-np.inf)), near,
                  np.nextafter(near, np.float32(np.inf))]
    return min(candidates, key=lambda r: (abs(Fraction(float(r)) - exact),
                                          int(np.array(r).view(np.uint32)) & 1))


def test_fma_rounds_once_where_float64_lands_halfway():
    # 1.0000001 + 2**-24 * (1 - 2**-23): the float64 sum rounds onto the float32 midpoint
    # 1 + 3 * 2**-24 and float64 -> float32 would round it up; the exact sum is below it.
    a, b, c = np.float32(1 + 2**-23), np.float32(2**-24 * (1 - 2**-23)), np.float32(1 + 2**-23)
    assert np.float32(np.float64(a) * np.float64(b) + np.float64(c)) == np.float32(1 + 2**-22)
    got = erf_inv_kernels._fma(np.array([a, -a]), np.array([b, b]), np.array([c, -c]))
    np.testing.assert_array_equal(got, [c, -c])
    # Random triples with every exponent gap, and exact ties (which round to even).
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 2.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    b = (rng.standard_normal(3000) * 2.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    c = (rng.standard_normal(3000) * 2.0 ** rng.integers(-60, 60, 3000)).astype(np.float32)
    ties = np.float32(2.0**-24) * rng.integers(1, 5, 100).astype(np.float32)
    a, b, c = (np.concatenate([v, w]) for v, w in
               ((a, np.ones(100, np.float32)), (b, ties), (c, np.ones(100, np.float32))))
    want = np.array([_fma_exact(*t) for t in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(erf_inv_kernels._fma(a, b, c), want)


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
