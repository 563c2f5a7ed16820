"""pmap and collectives: named-axis semantics under vmap, pmap over 4 CPU devices (in a
subprocess, since the device list is fixed at import), grads through collectives, errors,
and on machines with >= 2 GPUs the same through NCCL."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import lax
from flamefx.primitives import collectives

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_with_devices(code: str, n: int = 4, platform: str = "cpu"):
    env = dict(os.environ, FLAMEFX_CPU_DEVICES=str(n), FLAMEFX_PLATFORM=platform,
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# --- collectives under vmap (one device) ------------------------------------------------------


def test_collectives_under_vmap_match_numpy():
    x = np.random.default_rng(0).normal(size=(4, 3))
    f = flamefx.vmap(lambda v: (lax.psum(v, "i"), lax.pmean(v, "i"), lax.pmax(v, "i"),
                                lax.all_gather(v, "i", axis=1),
                                lax.all_gather(v, "i", tiled=True)), axis_name="i")
    s, m, mx, g, gt = f(x)
    np.testing.assert_allclose(s, np.broadcast_to(x.sum(0), x.shape))
    np.testing.assert_allclose(m, np.broadcast_to(x.mean(0), x.shape))
    np.testing.assert_allclose(mx, np.broadcast_to(x.max(0), x.shape))
    np.testing.assert_allclose(g, np.broadcast_to(x.T, (4, 3, 4)))
    np.testing.assert_allclose(gt, np.broadcast_to(x.reshape(-1), (4, 12)))


def test_psum_scatter_under_vmap():
    x = np.random.default_rng(1).normal(size=(4, 4, 2))
    out = flamefx.vmap(lambda v: lax.psum_scatter(v, "i"), axis_name="i")(x)
    np.testing.assert_allclose(out, x.sum(0))
    x = np.random.default_rng(2).normal(size=(2, 3, 4))
    out = flamefx.vmap(lambda v: lax.psum_scatter(v, "i", scatter_dimension=1, tiled=True),
                       axis_name="i")(x)
    np.testing.assert_allclose(out, np.stack(np.split(x.sum(0), 2, axis=1)))


def test_nested_vmap_collective_over_the_outer_axis():
    x = np.random.default_rng(3).normal(size=(3, 2, 5))
    inner = flamefx.vmap(lambda v: lax.psum(v, "outer") * v, axis_name="inner")
    out = flamefx.vmap(inner, axis_name="outer")(x)
    np.testing.assert_allclose(out, x.sum(0, keepdims=True) * x)
    both = flamefx.vmap(flamefx.vmap(lambda v: lax.psum(v, ("outer", "inner")),
                                     axis_name="inner"), axis_name="outer")(x)
    np.testing.assert_allclose(both, np.broadcast_to(x.sum((0, 1)), x.shape))


def test_psum_of_a_constant_is_the_axis_size():
    out = flamefx.vmap(lambda v: v * lax.psum(1, "i"), axis_name="i")(fnp.ones(5))
    assert out.tolist() == [5.0] * 5


def test_grad_through_collectives_matches_jax_semantics():
    x = np.random.default_rng(4).normal(size=(4, 3))
    # Each member's loss sums psum(x)**2; d/dx_m of the sum of all members' losses.
    g = flamefx.vmap(flamefx.grad(lambda v: fnp.sum(lax.psum(v, "i") ** 2)), axis_name="i")(x)
    np.testing.assert_allclose(g, np.broadcast_to(4 * 2 * x.sum(0), x.shape), rtol=1e-12)
    g = flamefx.vmap(flamefx.grad(lambda v: fnp.sum(lax.all_gather(v, "i") ** 3)),
                     axis_name="i")(x)
    np.testing.assert_allclose(g, 4 * 3 * x ** 2, rtol=1e-12)
    g = flamefx.vmap(flamefx.grad(lambda v: fnp.sum(lax.pmax(v, "i"))), axis_name="i")(x)
    np.testing.assert_allclose(g, 4.0 * (x == x.max(0)), rtol=1e-12)


def test_check_grads_through_collectives():
    x = np.random.default_rng(5).normal(size=(3, 4))

    def f(v):
        w = flamefx.vmap(lambda r: lax.pmean(r, "i") * lax.psum_scatter(
            lax.all_gather(r, "i", tiled=True), "i", tiled=True) + lax.pmax(r, "i"),
            axis_name="i")(v)
        return fnp.sum(fnp.sin(w))

    flamefx.test_util.check_grads(f, [fnp.asarray(x)], order=2, modes=("fwd", "rev"))


def test_collective_outside_a_named_axis_errors():
    with pytest.raises(flamefx.FlamefxError, match="axis name 'i'"):
        lax.psum(fnp.ones(3), "i")
    with pytest.raises(flamefx.FlamefxError, match="'j'"):
        flamefx.vmap(lambda v: lax.psum(v, "j"), axis_name="i")(fnp.ones(3))
    with pytest.raises(flamefx.FlamefxError, match="outside any vmap or pmap"):
        collectives.psum_p.bind(fnp.ones(3), axis_name="i")


def test_psum_scatter_shape_error():
    with pytest.raises(flamefx.FlamefxTypeError, match="equal to the axis size"):
        flamefx.vmap(lambda v: lax.psum_scatter(v, "i"), axis_name="i")(fnp.ones((4, 3)))


def test_pmap_on_one_device_and_size_errors():
    out = flamefx.pmap(lambda v: v / lax.psum(v, "d"), axis_name="d")(fnp.ones((1, 2)))
    assert out.tolist() == [[1.0, 1.0]]
    with pytest.raises(flamefx.FlamefxError, match="only 1 cpu device"):
        flamefx.pmap(lambda v: v, axis_name="d")(fnp.ones((3, 2)))
    with pytest.raises(flamefx.FlamefxError, match="needs 1 devices"):
        flamefx.pmap(lambda v: v, devices=flamefx.devices("cpu") * 2)(fnp.ones((1, 2)))


def test_pmap_under_grad_is_vmap():
    x = np.random.default_rng(6).normal(size=(1, 3))
    g = flamefx.grad(lambda v: fnp.sum(flamefx.pmap(lambda r: fnp.sin(lax.psum(r, "d")),
                                                    axis_name="d")(v)))(x)
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-12)


# --- pmap over 4 CPU devices (subprocess) -----------------------------------------------------

_PMAP_VS_VMAP = """
import numpy as np, flamefx, flamefx.numpy as fnp
from flamefx import lax
assert len(flamefx.devices("cpu")) == 4
x = np.random.default_rng(0).normal(size=(4, 4, 3))
def f(v, w):
    return {"s": v / lax.psum(v * v, "i"), "g": lax.all_gather(v, "i", axis=1) * w,
            "m": lax.pmax(v, "i") - lax.pmean(v, "i"), "r": lax.psum_scatter(v, "i")}
w = np.float64(2.0)
p = flamefx.pmap(f, axis_name="i", in_axes=(0, None))(x, w)
v = flamefx.vmap(f, axis_name="i", in_axes=(0, None))(x, w)
for k in p:
    np.testing.assert_allclose(np.asarray(p[k]), np.asarray(v[k]), rtol=1e-12, err_msg=k)
# out_axes, in_axes=1, jit inside, grad inside
q = flamefx.pmap(flamefx.jit(lambda v: lax.pmean(v, "i")), axis_name="i", in_axes=1,
                 out_axes=1)(x)
np.testing.assert_allclose(np.asarray(q), np.broadcast_to(x.mean(1, keepdims=True), x.shape))
gp = flamefx.pmap(flamefx.grad(lambda v: fnp.sum(fnp.tanh(lax.psum(v, "i")))), axis_name="i")(x)
gv = flamefx.vmap(flamefx.grad(lambda v: fnp.sum(fnp.tanh(lax.psum(v, "i")))), axis_name="i")(x)
np.testing.assert_allclose(np.asarray(gp), np.asarray(gv), rtol=1e-12)
# A rank-1 argument maps to 0-d slices.
c = flamefx.pmap(lambda c: c + lax.psum(c, "i"), axis_name="i")(np.arange(4))
assert np.asarray(c).tolist() == [6, 7, 8, 9], c
try:
    flamefx.pmap(lambda v: v, axis_name="i")(np.ones((5, 2)))
    raise SystemExit("no error for 5 shards on 4 devices")
except flamefx.FlamefxError as e:
    assert "only 4 cpu device" in str(e), e
print("ok")
"""


def test_pmap_equals_vmap_on_4_cpu_devices():
    assert "ok" in _run_with_devices(_PMAP_VS_VMAP)


_TRAINING_STEP = """
import numpy as np, flamefx, flamefx.numpy as fnp
from flamefx import lax, nn
rng = np.random.default_rng(0)
params = {"w1": rng.normal(size=(5, 8)) * 0.3, "b1": np.zeros(8),
          "w2": rng.normal(size=(8, 3)) * 0.3, "b2": np.zeros(3)}
as_f64 = lambda a: fnp.asarray(a, dtype=np.float64)  # NumPy float64 data is f32 (x64 off)
params = flamefx.tree_util.tree_map(as_f64, params)
x = as_f64(rng.normal(size=(16, 5))); y = rng.integers(0, 3, 16)

def loss(p, x, y):
    h = fnp.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logp = logits - fnp.log(fnp.sum(fnp.exp(logits), axis=-1, keepdims=True))
    return -fnp.mean(fnp.take_along_axis(logp, y[:, None], axis=1))

def sgd(p, g):
    return flamefx.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)

def dp_step(p, x, y):
    l, g = flamefx.value_and_grad(loss)(p, x, y)
    g = lax.pmean(g, "batch")
    return sgd(p, g), lax.pmean(l, "batch")

single_l, single_g = flamefx.value_and_grad(loss)(params, x, y)
single = sgd(params, single_g)
new, l = flamefx.pmap(dp_step, axis_name="batch", in_axes=(None, 0, 0), out_axes=(None, 0))(
    params, x.reshape(4, 4, 5), y.reshape(4, 4))
np.testing.assert_allclose(np.asarray(l), float(single_l), rtol=1e-10)
for k in params:
    np.testing.assert_allclose(np.asarray(new[k]), np.asarray(single[k]), rtol=1e-10, err_msg=k)
print("ok")
"""


def test_data_parallel_step_equals_single_device_step():
    assert "ok" in _run_with_devices(_TRAINING_STEP)


# --- GPUs -------------------------------------------------------------------------------------


def _gpu_count():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001  (no CuPy, or a CUDA runtime that cannot start)
        return 0


@pytest.mark.gpu
def test_pmap_on_gpus_matches_cpu():
    if _gpu_count() < 2:
        pytest.skip("needs >= 2 GPUs")
    n = _gpu_count()
    code = (_PMAP_VS_VMAP.replace('assert len(flamefx.devices("cpu")) == 4', "")
            .replace("4, 4, 3", f"{n}, {n}, 3").replace("only 4 cpu", f"only {n} gpu")
            .replace("np.ones((5, 2))", f"np.ones(({n + 1}, 2))")
            .replace("np.arange(4)", f"np.arange({n})")
            .replace("[6, 7, 8, 9]", repr([i + n * (n - 1) // 2 for i in range(n)])))
    assert "ok" in _run_with_devices(code, platform="gpu")


@pytest.mark.gpu
def test_data_parallel_step_on_gpus():
    if _gpu_count() < 2:
        pytest.skip("needs >= 2 GPUs")
    n = 4 if _gpu_count() >= 4 else 2
    code = _TRAINING_STEP.replace("reshape(4, 4, 5)", f"reshape({n}, {16 // n}, 5)").replace(
        "reshape(4, 4)", f"reshape({n}, {16 // n})").replace("rtol=1e-10", "rtol=1e-5")
    code = code.replace("flamefx.pmap(dp_step,",
                        f"flamefx.pmap(dp_step, devices=flamefx.devices('gpu')[:{n}],")
    assert "ok" in _run_with_devices(code, platform="gpu")
