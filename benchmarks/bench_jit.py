"""W4 (jitted grad of an elementwise chain) and W5 (dispatch latency of a tiny jitted call).

    python benchmarks/bench_jit.py            # flamefx, JAX and PyTorch side by side
    FLAMEFX_CUDA_GRAPHS=0 python benchmarks/bench_jit.py   # without CUDA-graph replay

W4: x of 2**24 float32, f(x) = sum(gelu_tanh(1.5 x + 0.25)); the jitted gradient. Its floor
is one read of x and one write of the gradient (2 * 64 MiB at the copy bandwidth).
W5: jitted ``x * 2 + 1`` on 1000 float32 elements, per-call latency in microseconds.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness

W4_N = int(os.environ.get("BENCH_W4_N", str(1 << 24)))
W5_N = 1000
GELU_C = 0.7978845608028654


def _w4_input():
    return np.random.default_rng(0).standard_normal(W4_N).astype(np.float32)


def _w5_input():
    return np.random.default_rng(1).standard_normal(W5_N).astype(np.float32)


def _w4_loss(xnp):
    """W4's loss in ``xnp`` (flamefx.numpy or jax.numpy), so both systems run the same math."""
    def loss(x):
        u = 1.5 * x + 0.25
        return xnp.sum(0.5 * u * (1.0 + xnp.tanh(GELU_C * (u + 0.044715 * u ** 3))))
    return loss


# --- flamefx -----------------------------------------------------------------------------------


def flamefx_w4():
    import flamefx
    import flamefx.numpy as fnp

    x = fnp.asarray(_w4_input())
    step = flamefx.jit(flamefx.grad(_w4_loss(fnp)))
    lowered = step.lower(x)
    print(f"  flamefx W4: {lowered.kernel_count} kernel launch(es) per call")
    return lambda: step(x)


def flamefx_w5():
    import flamefx
    import flamefx.numpy as fnp

    x = fnp.asarray(_w5_input())
    f = flamefx.jit(lambda x: x * 2 + 1)
    return lambda: f(x)


# --- JAX -----------------------------------------------------------------------------------------


def jax_w4():
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(_w4_input())
    step = jax.jit(jax.grad(_w4_loss(jnp)))
    return lambda: step(x)


def jax_w5():
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(_w5_input())
    f = jax.jit(lambda x: x * 2 + 1)
    return lambda: f(x)


# --- PyTorch (eager) ---------------------------------------------------------------------------


def torch_w4():
    import torch

    x = torch.tensor(_w4_input(), device="cuda", requires_grad=True)

    def step():
        u = 1.5 * x + 0.25
        loss = torch.sum(0.5 * u * (1.0 + torch.tanh(GELU_C * (u + 0.044715 * u ** 3))))
        (g,) = torch.autograd.grad(loss, x)
        return g
    return step


def torch_w5():
    import torch

    x = torch.tensor(_w5_input(), device="cuda")
    return lambda: x * 2 + 1


def _time(make, sync, n):
    return harness.safe(lambda: harness.time_calls(make(), sync, n=n, repeats=9, warmup=5))


def main():
    harness.configure_precision()
    table = harness.Table()
    has_jax = harness.try_import("jax") is not None
    has_torch = harness.try_import("torch") is not None

    print("W4: jitted grad of sum(gelu_tanh(1.5 x + 0.25)), x: 2**24 float32")
    w4 = [_time(flamefx_w4, harness.flamefx_sync, 20),
          _time(jax_w4, harness.jax_sync, 20) if has_jax else None,
          _time(torch_w4, harness.torch_sync, 20) if has_torch else None]
    table.add("W4 elementwise grad", *w4, floor_ms=harness.floor_ms(bytes_moved=2 * 4 * W4_N))

    print("W5: jitted x * 2 + 1 on 1000 float32: per-call latency")
    w5 = [_time(flamefx_w5, harness.flamefx_sync, 2000),
          _time(jax_w5, harness.jax_sync, 2000) if has_jax else None,
          _time(torch_w5, harness.torch_sync, 2000) if has_torch else None]
    table.add("W5 dispatch", *w5, unit="us")

    print(table.render())
    if w4[0] and w4[1]:
        print(f"W4 flamefx/JAX = {w4[0] / w4[1]:.2f} (target <= 1.1)")
    if w5[0]:
        print(f"W5 flamefx = {w5[0] * 1e3:.1f} us per call (target <= 20 us)")


if __name__ == "__main__":
    main()
