"""flamefx.random's PRNG: typed and raw keys, JAX's exact bits (split, fold_in, bits, uniform,
normal), keys through jit/vmap/scan, errors, GPU bits.

The constant vectors below were printed by jax 0.10.2 (CPU, jax_threefry_partitionable=True,
its default) with the calls named in each comment; jax is not imported here.
"""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, core, lax
from flamefx import random as frandom
from flamefx.primitives.random_ops import threefry2x32


def _u32(values):
    return core.to_array(np.asarray(values, dtype=np.uint32))


def _words(keys):
    return np.asarray(frandom.key_data(keys)).tolist()


def test_threefry_known_answer():
    y0, y1 = threefry2x32(_u32(0x13198A2E), _u32(0x03707344), _u32([0x243F6A88]),
                          _u32([0x85A308D3]))
    assert (int(y0[0]), int(y1[0])) == (0xC4923A9C, 0x483DF7A0)


def test_typed_and_raw_keys():
    k = frandom.key(42)
    assert isinstance(k, frandom.KeyArray) and k.shape == () and k.ndim == 0
    assert str(k.dtype) == "key<fry>" and k.dtype == "key<fry>"
    assert _words(k) == [0, 42] and frandom.key_impl(k) == "threefry2x32"
    raw = frandom.PRNGKey(42)
    assert isinstance(raw, core.Array) and raw.dtype == np.uint32 and raw.tolist() == [0, 42]
    assert _words(frandom.wrap_key_data(raw)) == [0, 42]
    assert frandom.key_data(raw) is raw  # raw keys are their own data
    assert frandom.PRNGKey(-1).tolist() == [0, 0xFFFFFFFF]


def test_seeds_beyond_32_bits_follow_jax_x64_setting():
    # jax.random.PRNGKey(2**40 + 5): [0, 5] by default, [256, 5] with jax_enable_x64;
    # PRNGKey(-1) under x64: [4294967295, 4294967295].
    assert frandom.PRNGKey(2**40 + 5).tolist() == [0, 5]
    with config.override("enable_x64", True):
        assert frandom.PRNGKey(2**40 + 5).tolist() == [256, 5]
        assert frandom.PRNGKey(-1).tolist() == [0xFFFFFFFF, 0xFFFFFFFF]
        seed = fnp.asarray(np.int64(2**40 + 5))
        assert flamefx.jit(frandom.PRNGKey)(seed).tolist() == [256, 5]


def test_split_and_fold_in_match_jax():
    # jax.random.key_data(jax.random.split(jax.random.key(0)))
    assert _words(frandom.split(frandom.key(0))) == [[1797259609, 2579123966],
                                                     [928981903, 3453687069]]
    # jax.random.split(jax.random.PRNGKey(42), 3): raw in, raw out
    raw = frandom.split(frandom.PRNGKey(42), 3)
    assert isinstance(raw, core.Array)
    assert raw.tolist() == [[1832780943, 270669613], [64467757, 2916123636],
                            [2465931498, 255383827]]
    # jax.random.split(jax.random.key(7), (2, 2))
    keys = frandom.split(frandom.key(7), (2, 2))
    assert keys.shape == (2, 2)
    assert _words(keys) == [[[3625411723, 1954958720], [195045567, 4062205631]],
                            [[966301609, 1948237315], [276534068, 1641862660]]]
    # jax.random.fold_in(jax.random.key(0), 7) and (key(5), 1000)
    assert _words(frandom.fold_in(frandom.key(0), 7)) == [2716826189, 292468403]
    assert _words(frandom.fold_in(frandom.key(5), 1000)) == [4125042828, 2299841090]
    # ... fold_in(key(0), 2**32 - 1) == fold_in(key(0), np.int32(-1)); (key(0), 2**31 + 5)
    assert _words(frandom.fold_in(frandom.key(0), 2**32 - 1)) == [743310391, 3789761811]
    assert _words(frandom.fold_in(frandom.key(0), np.int32(-1))) == [743310391, 3789761811]
    assert _words(frandom.fold_in(frandom.key(0), 2**31 + 5)) == [2251496604, 2591608338]


def test_bits_match_jax_at_every_width_and_odd_sizes():
    k = frandom.key(1)
    # jax.random.bits(jax.random.key(1), (5,)), then with uint8 (2, 3) and uint16 (5,)
    assert frandom.bits(k, (5,)).tolist() == [1883912375, 2292451390, 1915204986, 1882898417,
                                              3854144420]
    u8 = frandom.bits(k, (2, 3), np.uint8)
    assert u8.dtype == np.uint8 and u8.tolist() == [[183, 62, 122], [241, 164, 188]]
    u16 = frandom.bits(k, (5,), np.uint16)
    assert u16.dtype == np.uint16 and u16.tolist() == [14519, 2110, 46458, 49137, 37796]
    # jax.random.bits(jax.random.key(1), (3,), jnp.uint64) with jax_enable_x64
    assert frandom.bits(k, (3,), np.uint64).tolist() == [
        2179487362436112514, 8370371427069427784, 10487943526538222699]
    # Element i of a draw does not depend on the draw's size (partitionable threefry).
    np.testing.assert_array_equal(frandom.bits(k, (7,))[:5], frandom.bits(k, (5,)))
    assert frandom.bits(k).shape == () and int(frandom.bits(k)) == 1883912375


def test_uniform_matches_jax():
    k = frandom.key(2)
    # jax.random.uniform(jax.random.key(2), (7,)); a 0-d draw is element 0
    expected = np.array([0.6407910585403442, 0.9006019830703735, 0.23003411293029785,
                         0.8816101551055908, 0.418231725692749, 0.20232176780700684,
                         0.7334718704223633], np.float32)
    np.testing.assert_array_equal(frandom.uniform(k, (7,)), expected)
    assert float(frandom.uniform(k)) == float(expected[0])
    # ... (5,) in float16 and bfloat16, and (3,) in float64 (jax_enable_x64)
    np.testing.assert_array_equal(
        np.asarray(frandom.uniform(k, (5,), np.float16), np.float32),
        [0.8837890625, 0.8564453125, 0.5224609375, 0.2099609375, 0.234375])
    np.testing.assert_array_equal(
        np.asarray(frandom.uniform(k, (5,), flamefx.dtypes.bfloat16), np.float32),
        [0.40625, 0.390625, 0.90625, 0.78125, 0.109375])
    np.testing.assert_array_equal(frandom.uniform(k, (3,), np.float64),
                                  [0.42402167450247763, 0.14839108352629582, 0.6658618777442711])


def test_normal_matches_jax():
    k = frandom.key(3)
    # jax.random.normal(jax.random.key(3), (5,), jnp.float16): bit for bit
    np.testing.assert_array_equal(
        np.asarray(frandom.normal(k, (5,), np.float16), np.float32),
        [-1.203125, -0.7392578125, -1.64453125, -0.53271484375, 0.744140625])
    # jax.random.normal(jax.random.key(3), (7,)): bit for bit (more in test_random_bits.py)
    expected = np.array([0xBFB91EF3, 0x3FC50A70, 0x3EC3D7DC, 0x3FFC3FF5, 0xBF16715F,
                         0x3E56710D, 0xBF9F66ED], np.uint32).view(np.float32)
    np.testing.assert_array_equal(frandom.normal(k, (7,)), expected)


def test_traced_seed_matches_python_seed():
    jitted = flamefx.jit(frandom.key)(fnp.asarray(7, dtype=np.int32))
    assert isinstance(jitted, frandom.KeyArray) and _words(jitted) == [0, 7]
    assert flamefx.jit(frandom.PRNGKey)(fnp.asarray(7, dtype=np.int32)).tolist() == [0, 7]


def test_typed_and_raw_keys_draw_the_same_numbers():
    typed, raw = frandom.key(3), frandom.PRNGKey(3)
    for draw in (lambda k: frandom.uniform(k, (8,)), lambda k: frandom.normal(k, (3, 3)),
                 lambda k: frandom.bits(k, (5,)), lambda k: frandom.randint(k, (6,), 0, 9)):
        np.testing.assert_array_equal(draw(typed), draw(raw))


def test_same_key_same_numbers_different_keys_different_numbers():
    k = frandom.key(3)
    np.testing.assert_array_equal(frandom.uniform(k, (8,)), frandom.uniform(k, (8,)))
    a, b = frandom.split(k)
    assert not np.array_equal(frandom.uniform(a, (8,)), frandom.uniform(b, (8,)))
    folded = {tuple(_words(frandom.fold_in(k, i))) for i in range(4)}
    assert len(folded) == 4


def test_split_keys_are_independent():
    keys = frandom.split(frandom.key(0), 3)
    draws = np.stack([np.asarray(frandom.uniform(keys[i], (20000,))) for i in range(3)])
    corr = np.corrcoef(draws)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.03


def test_uniform_range_and_dtypes():
    x = np.asarray(frandom.uniform(frandom.key(1), (100000,)))
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() < 1.0
    y = frandom.uniform(frandom.key(1), (4, 3), minval=fnp.array([-3.0, 0.0, 5.0]), maxval=6.0)
    assert (np.asarray(y) >= [-3.0, 0.0, 5.0]).all() and (np.asarray(y) < 6.0).all()
    for dtype in (np.float64, np.float16, flamefx.dtypes.bfloat16):
        assert frandom.uniform(frandom.key(2), (5,), dtype).dtype == dtype
        assert frandom.normal(frandom.key(2), (5,), dtype).dtype == dtype
    with config.override("enable_x64", True):
        assert frandom.uniform(frandom.key(2), (2,)).dtype == np.float64


def test_key_arrays_index_iterate_and_reshape():
    keys = frandom.split(frandom.key(9), 6)
    assert len(keys) == 6 and keys[2].shape == () and keys[1:4].shape == (3,)
    assert [_words(k) for k in keys] == _words(keys)
    assert keys.reshape(2, 3).shape == (2, 3) and keys.reshape(2, 3)[1, 2].shape == ()
    assert _words(keys.reshape((2, 3))[1, 2]) == _words(keys[5])
    assert keys[..., 0].shape == ()
    assert "key<fry>" in repr(keys)


def test_jit_matches_eager_with_typed_keys():
    def draw(key):
        a, b = frandom.split(key)
        return frandom.normal(a, (4, 3)), frandom.uniform(b, (5,)), frandom.bits(b, (2,)), b

    for k in (frandom.key(11), frandom.PRNGKey(11)):
        eager, jitted = draw(k), flamefx.jit(draw)(k)
        for e, j in zip(eager[:3], jitted[:3]):
            np.testing.assert_array_equal(np.asarray(e), np.asarray(j))
        assert type(jitted[3]) is type(k)
        np.testing.assert_array_equal(frandom.key_data(eager[3]), frandom.key_data(jitted[3]))


def test_vmap_over_typed_and_raw_keys():
    for keys in (frandom.split(frandom.key(12), 4), frandom.split(frandom.PRNGKey(12), 4)):
        batched = np.asarray(flamefx.vmap(lambda k: frandom.normal(k, (3,)))(keys))
        looped = np.stack([np.asarray(frandom.normal(keys[i], (3,))) for i in range(4)])
        np.testing.assert_array_equal(batched, looped)
        assert len({tuple(row) for row in batched.tolist()}) == 4
    k = frandom.key(12)
    folded = flamefx.vmap(frandom.fold_in, in_axes=(None, 0))(k, fnp.arange(3))
    assert isinstance(folded, frandom.KeyArray) and folded.shape == (3,)
    assert _words(folded[2]) == _words(frandom.fold_in(k, 2))
    split_each = flamefx.vmap(frandom.split)(frandom.split(k, 3))
    assert split_each.shape == (3, 2)
    assert _words(split_each[1]) == _words(frandom.split(frandom.split(k, 3)[1]))


def test_scan_carries_and_consumes_typed_keys():
    def step(key, x):
        key, sub = frandom.split(key)
        return key, frandom.uniform(sub) + x

    final, ys = lax.scan(step, frandom.key(5), fnp.zeros(4))
    key, expected = frandom.key(5), []
    for _ in range(4):
        key, sub = frandom.split(key)
        expected.append(float(frandom.uniform(sub)))
    assert isinstance(final, frandom.KeyArray) and _words(final) == _words(key)
    np.testing.assert_array_equal(ys, np.array(expected, np.float32))
    _, per_key = lax.scan(lambda c, k: (c, frandom.normal(k)), 0.0, frandom.split(key, 3))
    np.testing.assert_array_equal(per_key, [float(frandom.normal(k))
                                            for k in frandom.split(key, 3)])


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match=r"expected a PRNG key; make one with "
                                        r"flamefx.random.key\(0\) \(or PRNGKey\(0\)\)") as e:
        frandom.normal(0, (3,))
    assert "vmap" not in str(e.value)
    with pytest.raises(TypeError, match=r"expected a PRNG key .*f32\[3\]"):
        frandom.normal(fnp.zeros(3), (2,))
    with pytest.raises(TypeError, match=r"single key.*shape \(4,\).*vmap"):
        frandom.uniform(frandom.split(frandom.key(0), 4), (2,))
    with pytest.raises(TypeError, match=r"single key.*shape \(4,\)"):
        frandom.split(frandom.split(frandom.PRNGKey(0), 4))
    with pytest.raises(TypeError, match="float dtype"):
        frandom.uniform(frandom.key(0), (2,), np.int32)
    with pytest.raises(TypeError, match="unsigned"):
        frandom.bits(frandom.key(0), (2,), np.int32)
    with pytest.raises(TypeError, match="key_data"):
        np.asarray(frandom.key(0))
    with pytest.raises(TypeError, match="scalar integer"):
        frandom.fold_in(frandom.key(0), fnp.arange(2))
    with pytest.raises(ValueError, match="out of range for uint32"):
        frandom.fold_in(frandom.key(0), -1)


def test_normal_never_returns_inf():
    # JAX draws u in [nextafter(-1, 0), 1): erf_inv(u) stays finite at both ends.
    noise_key, _ = frandom.split(frandom.fold_in(frandom.key(0), 200))
    draws = np.asarray(frandom.normal(noise_key, (200000,)))
    assert np.isfinite(draws).all() and np.abs(draws).max() < 5.5


def test_normal_moments():
    x = np.asarray(frandom.normal(frandom.key(4), (200000,)), np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1.0) < 0.01
    assert abs(np.mean(x**4) / np.mean(x**2) ** 2 - 3.0) < 0.1


@pytest.mark.gpu
def test_gpu_bits_equal_cpu_bits():
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    rng = np.random.default_rng(0)
    words = [rng.integers(0, 2**32, size=(3, 1000), dtype=np.uint64).astype(np.uint32)
             for _ in range(4)]
    cpu_out = threefry2x32(*[core.to_array(w, device=cpu) for w in words])
    gpu_out = threefry2x32(*[core.to_array(w, device=gpu) for w in words])
    for c, g in zip(cpu_out, gpu_out):
        assert g.device.platform == "gpu"
        np.testing.assert_array_equal(np.asarray(c), np.asarray(g))


@pytest.mark.gpu
def test_gpu_draws_equal_cpu_draws():
    gpu, cpu = flamefx.devices("gpu")[0], flamefx.devices("cpu")[0]
    key_cpu = flamefx.device_put(frandom.key(13), cpu)
    key_gpu = flamefx.device_put(key_cpu, gpu)

    def draw(k):
        a, b = frandom.split(k)
        return (frandom.bits(a, (1001,)), frandom.bits(a, (7,), np.uint8),
                frandom.uniform(a, (1001,)), frandom.randint(b, (501,), 0, 10),
                frandom.permutation(a, 100), frandom.normal(b, (1000,)))

    on_cpu, on_gpu = flamefx.jit(draw)(key_cpu), flamefx.jit(draw)(key_gpu)
    assert on_gpu[0].device.platform == "gpu"
    for c, g in zip(on_cpu, on_gpu):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(g))


def test_permutations_of_three_are_uniform():
    keys = frandom.split(frandom.key(14), 3000)
    perms = np.asarray(flamefx.vmap(lambda k: frandom.permutation(k, 3))(keys))
    codes = perms[:, 0] * 3 + perms[:, 1]
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 6 and np.abs(counts / 500 - 1).max() < 0.15
