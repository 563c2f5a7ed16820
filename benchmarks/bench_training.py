"""W1 (MLP Adam step) and W6 (per-example gradients), plus W1's first-call time and memory.

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

W1_SIZES = [1024, 1024, 1024, 1024, 10]
W1_BATCH = 512
W6_SIZES = [784, 256, 10]
W6_BATCH = 1024


def _mlp_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
             np.zeros(b, np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]


def _data(batch, dim, classes, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, dim)).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int32))


def _inputs(sizes, batch, asarray):
    """``(params, x, y)`` of an MLP of layer ``sizes`` and one batch, as ``asarray`` makes
    arrays (flamefx.numpy's or jax.numpy's)."""
    params = [(asarray(w), asarray(b)) for w, b in _mlp_params(sizes)]
    x, y = (asarray(a) for a in _data(batch, sizes[0], sizes[-1]))
    return params, x, y


def w1_flops():
    per_layer = sum(a * b for a, b in zip(W1_SIZES[:-1], W1_SIZES[1:]))
    return 6 * W1_BATCH * per_layer  # forward 2, backward 4 per multiply-add


# --- flamefx -----------------------------------------------------------------------------------


def _flamefx_adam(loss, params):
    """W1's jitted Adam step on ``loss(params, x, y)`` and its carry ``[params, state]`` (the
    state in float32, like the parameters)."""
    import flamefx
    from flamefx import optim

    opt = optim.adam(1e-3)

    @flamefx.jit
    def step(params, state, x, y):
        value, grads = flamefx.value_and_grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state, value

    return step, [params, opt.init(params)]


def flamefx_w1(dtype="float32"):
    return harness.carried(*flamefx_w1_parts(dtype))


def flamefx_w1_parts(dtype="float32"):
    """The jitted W1 step and its inputs: (step, [params, adam_state], x, y)."""
    import flamefx.numpy as fnp
    from flamefx import nn

    params, x, y = _inputs(W1_SIZES, W1_BATCH, fnp.asarray)
    compute = fnp.bfloat16 if dtype == "bfloat16" else None

    def loss(params, x, y):
        h = x if compute is None else x.astype(compute)
        for i, (w, b) in enumerate(params):
            if compute is not None:
                w, b = w.astype(compute), b.astype(compute)
            h = h @ w + b
            if i < len(params) - 1:
                h = nn.relu(h)
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(h.astype(fnp.float32), y))

    step, carry = _flamefx_adam(loss, params)
    return step, carry, x, y


def flamefx_w6():
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import nn

    params, x, y = _inputs(W6_SIZES, W6_BATCH, fnp.asarray)

    def loss(params, x, y):
        h = nn.relu(x @ params[0][0] + params[0][1])
        logits = h @ params[1][0] + params[1][1]
        return nn.softmax_cross_entropy_with_integer_labels(logits, y)

    per_example = flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0)))
    return lambda: per_example(params, x, y)


# --- JAX -------------------------------------------------------------------------------------


def _jax_adam(loss, params):
    """W1's jitted Adam step on ``loss(params, x, y)``, written out in JAX, and its carry
    ``[params, (m, v, count)]``."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        m, v, t = state
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - 1e-3 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), params, m, v)
        return params, (m, v, t), value

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return step, [params, (zeros, zeros, jnp.zeros((), jnp.int32))]


def jax_w1():
    import jax
    import jax.numpy as jnp
    params, x, y = _inputs(W1_SIZES, W1_BATCH, jnp.asarray)

    def loss(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    return harness.carried(*_jax_adam(loss, params), x, y)


def jax_w6():
    import jax
    import jax.numpy as jnp
    params, x, y = _inputs(W6_SIZES, W6_BATCH, jnp.asarray)

    def loss(params, x, y):
        h = jax.nn.relu(x @ params[0][0] + params[0][1])
        logp = jax.nn.log_softmax(h @ params[1][0] + params[1][1])
        return -logp[y]

    f = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    return lambda: f(params, x, y)


# --- PyTorch (eager) --------------------------------------------------------------------------


def _torch_w1_inputs():
    """W1's parameters (weights and biases alternating), batch and Adam optimizer in torch."""
    import torch
    dev = "cuda"
    params = [torch.tensor(a, device=dev, requires_grad=True)
              for w, b in _mlp_params(W1_SIZES) for a in (w, b)]
    x, y = _data(W1_BATCH, W1_SIZES[0], W1_SIZES[-1])
    x, y = torch.tensor(x, device=dev), torch.tensor(y, device=dev, dtype=torch.long)
    opt = torch.optim.Adam(params, lr=1e-3)
    return params, x, y, opt


def torch_w1():
    import torch
    params, x, y, opt = _torch_w1_inputs()

    def run():
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i < len(params) - 2:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return run


def torch_w6():
    import torch
    from torch.func import grad, vmap
    dev = "cuda"
    params = [torch.tensor(a, device=dev) for w, b in _mlp_params(W6_SIZES) for a in (w, b)]
    x, y = _data(W6_BATCH, W6_SIZES[0], W6_SIZES[-1])
    x, y = torch.tensor(x, device=dev), torch.tensor(y, device=dev, dtype=torch.long)

    def loss(params, x, y):
        h = torch.relu(x @ params[0] + params[1])
        logits = h @ params[2] + params[3]
        # A mask, not indexing: torch.func's vmap cannot index by a traced label.
        return -(torch.log_softmax(logits, -1) * (torch.arange(10, device=dev) == y)).sum()

    f = vmap(grad(loss), in_dims=(None, 0, 0))
    return lambda: f(params, x, y)


# --- W1 in bfloat16: float32 master parameters and Adam state, bf16 compute, f32 logits -----


def w1_bf16_floor_ms() -> float:
    """FLOPs at the bf16 rate, or Adam's float32 traffic (read p, g, m, v; write p, m, v)."""
    n_params = sum(w.size + b.size for w, b in _mlp_params(W1_SIZES))
    return harness.floor_ms(w1_flops(), 7 * 4 * n_params, flops_rate=harness.BF16_FLOPS)


def flamefx_w1_bf16():
    import flamefx.numpy as fnp
    from flamefx import nn, optim

    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    params, x, y = _inputs(W1_SIZES, W1_BATCH, fnp.asarray)

    def loss(params, x, y):
        h = policy.cast_to_compute(x)
        layers = policy.cast_to_compute(params)
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = nn.relu(h)
        logits = policy.cast_to_output(h)
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(logits, y))

    return harness.carried(*_flamefx_adam(loss, params), x, y)


def jax_w1_bf16():
    import jax
    import jax.numpy as jnp
    params, x, y = _inputs(W1_SIZES, W1_BATCH, jnp.asarray)

    def loss(params, x, y):
        h = x.astype(jnp.bfloat16)
        for i, (w, b) in enumerate(params):
            h = h @ w.astype(jnp.bfloat16) + b.astype(jnp.bfloat16)
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    return harness.carried(*_jax_adam(loss, params), x, y)


def torch_w1_bf16():
    import torch
    params, x, y, opt = _torch_w1_inputs()

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = x
            for i in range(0, len(params), 2):
                h = h @ params[i] + params[i + 1]
                if i < len(params) - 2:
                    h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return run


# --- first call and memory ----------------------------------------------------------------------


_FIRST_CALL = """
import time, sys
sys.path.insert(0, {bench_dir!r})
start = time.perf_counter()
import bench_training, harness
step, carry, x, y = bench_training.flamefx_w1_parts()
harness.flamefx_sync(carry)
ready = time.perf_counter()
harness.flamefx_sync(step(*carry, x, y))
end = time.perf_counter()
print(end - ready, end - start)
"""


def first_call_seconds(cache_dir: str) -> tuple[float, float]:
    """(the first W1 step: trace + compile + run, the whole process up to its result:
    imports, CUDA start-up and the eager parameter set-up too) in seconds, in a fresh
    process using ``cache_dir`` as the kernel cache."""
    code = _FIRST_CALL.format(bench_dir=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CUPY_CACHE_DIR=cache_dir, FLAMEFX_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    step, process = out.stdout.strip().splitlines()[-1].split()
    return float(step), float(process)


_PEAK_MEMORY = """
import sys
sys.path.insert(0, {bench_dir!r})
import {module} as bench, bench_training, harness
harness.configure_precision()
print(bench_training.peak_memory_mb({system!r}, bench.{system}_{workload}))
"""


def peak_memory_in_fresh_process(system: str, module: str, workload: str) -> float | None:
    """``peak_memory_mb`` of ``module.<system>_<workload>`` measured alone in a fresh
    process: JAX's ``peak_bytes_in_use`` only grows over a process, so it would otherwise
    include every workload run before."""
    code = _PEAK_MEMORY.format(bench_dir=os.path.dirname(os.path.abspath(__file__)),
                               module=module, system=system, workload=workload)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    last = out.stdout.strip().splitlines()[-1]
    return None if last == "None" else float(last)


def _graph_pools() -> dict:
    """The private memory pools of every live flamefx CUDA graph, by id (pools that
    several graphs share once)."""
    import gc

    from flamefx.kernels.graphs import GraphReplay
    return {id(p): p for g in gc.get_objects() if isinstance(g, GraphReplay)
            for p in g.pools}


def peak_memory_mb(system: str, make) -> float | None:
    """Peak GPU memory in use during six warm steps, by each framework's allocator: for
    JAX ``peak_bytes_in_use`` (live buffers, not its allocator's cached free memory), for
    PyTorch ``max_memory_allocated``, for flamefx the same count: the peak over the run of
    CuPy's default pool's ``used_bytes()`` (arguments, outputs, the plain call's
    buffers; not the free blocks it caches), sampled at every allocation and after every
    step, plus the whole of this workload's CUDA-graph pools that exist at that moment
    (a graph's memory stays in use for the graph's lifetime; its pools only grow while
    the steps that capture it run, and are re-read after each step).
    """
    if system == "flamefx":
        import gc

        import cupy
        gc.collect()
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()  # blocks cached from earlier workloads are not this one's
        earlier = set(_graph_pools())  # graphs of workloads still alive are not this one's
        graph_bytes = 0
        peak = [pool.used_bytes()]

        def malloc(size):
            memory = pool.malloc(size)
            peak[0] = max(peak[0], pool.used_bytes() + graph_bytes)
            return memory

        with cupy.cuda.using_allocator(malloc):  # the pool's malloc again after the block
            run = make()
            for _ in range(6):  # the plain call, then both graphs captured and replayed
                out = run()
                graph_bytes = sum(p.total_bytes() for i, p in _graph_pools().items()
                                  if i not in earlier)
                peak[0] = max(peak[0], pool.used_bytes() + graph_bytes)
            harness.flamefx_sync(out)
        return peak[0] / 2 ** 20
    if system == "torch":
        import torch
        torch.cuda.reset_peak_memory_stats()
        run = make()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2 ** 20
    if system == "jax":
        import jax
        run = make()
        jax.block_until_ready(run())
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2 ** 20
    return None


def main(table: harness.Table | None = None) -> harness.Table:
    harness.configure_precision()
    table = table or harness.Table()
    has_jax = harness.try_import("jax") is not None
    has_torch = harness.try_import("torch") is not None
    for name, fx, jx, tc, floor in [
        ("W1 MLP Adam step", flamefx_w1, jax_w1, torch_w1,
         harness.floor_ms(w1_flops(), 0)),
        ("W6 per-example grads", flamefx_w6, jax_w6, torch_w6,
         harness.floor_ms(6 * W6_BATCH * (784 * 256 + 2560),
                          W6_BATCH * (784 * 256 + 2560) * 4)),
        ("W1 bf16", flamefx_w1_bf16, jax_w1_bf16, torch_w1_bf16, w1_bf16_floor_ms()),
    ]:
        print(name, flush=True)
        f_ms = harness.safe(lambda: harness.time_calls(fx(), harness.flamefx_sync))
        j_ms = harness.safe(lambda: harness.time_calls(jx(), harness.jax_sync)) if has_jax else None
        t_ms = (harness.safe(lambda: harness.time_calls(tc(), harness.torch_sync))
                if has_torch else None)
        table.add(name, f_ms, j_ms, t_ms, floor)
    return table


def extras() -> str:
    """First-call times (empty vs warm kernel cache) and peak memory for W1."""
    import tempfile
    lines = []
    with tempfile.TemporaryDirectory() as cache:
        cold = harness.safe(lambda: first_call_seconds(cache))
        warm = harness.safe(lambda: first_call_seconds(cache))
    if cold is not None and warm is not None:
        lines.append(f"W1 first step (trace + compile + run), fresh process: empty kernel "
                     f"cache {cold[0]:.3f} s, warm {warm[0]:.3f} s ({cold[0] / warm[0]:.1f}x); "
                     f"whole process to the first result: {cold[1]:.2f} s vs {warm[1]:.2f} s")
    for system in ("flamefx", "jax", "torch"):
        mb = harness.safe(lambda: peak_memory_in_fresh_process(system, "bench_training", "w1"))
        lines.append(f"W1 peak GPU memory, {system}: {mb if mb is None else round(mb, 1)} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main().render())
    print(extras())
