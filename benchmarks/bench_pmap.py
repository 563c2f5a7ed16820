"""W1 (MLP Adam step) data-parallel over N GPUs with pmap: scaling efficiency.

Weak scaling: every GPU takes W1_BATCH examples per step, so N GPUs do N times the work
of one. Scaling efficiency = throughput on N GPUs / (N x throughput on 1 GPU). The step is
pmap(jitted value_and_grad -> pmean of the grads over NCCL -> jitted Adam update).
Note: pmap stacks its outputs on the first GPU and re-splits them on the next call, so the
parameter copies between GPUs are part of what this measures.

    python benchmarks/bench_pmap.py            # 1, 2, 4, 8 GPUs, as many as exist
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
from bench_training import W1_BATCH, W1_SIZES, _data, _mlp_params


def pmap_w1(n_devices: int, platform: str = "gpu"):
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import lax, nn, optim

    devs = flamefx.devices(platform)[:n_devices]

    def loss(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = nn.relu(h)
        return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(h, y))

    opt = optim.adam(1e-3)
    grads_of = flamefx.jit(flamefx.value_and_grad(loss))
    update = flamefx.jit(lambda grads, state, params: _apply(optim, opt, grads, state, params))

    def dp_step(params, state, x, y):
        value, grads = grads_of(params, x, y)
        grads = lax.pmean(grads, "d")
        params, state = update(grads, state, params)
        return params, state, lax.pmean(value, "d")

    step = flamefx.pmap(dp_step, axis_name="d", devices=devs)
    params = [(np.stack([w] * n_devices), np.stack([b] * n_devices))
              for w, b in _mlp_params(W1_SIZES)]
    params = flamefx.tree_util.tree_map(fnp.asarray, params)
    state = flamefx.vmap(opt.init)(params)
    x, y = _data(W1_BATCH * n_devices, W1_SIZES[0], W1_SIZES[-1])
    x = fnp.asarray(x.reshape(n_devices, W1_BATCH, -1))
    y = fnp.asarray(y.reshape(n_devices, W1_BATCH))
    return harness.carried(step, [params, state], x, y)


def _apply(optim, opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state


def main():
    import flamefx
    n_gpus = len(flamefx.devices("gpu"))
    counts = [n for n in (1, 2, 4, 8) if n <= n_gpus]
    base = None
    print(f"W1 data-parallel step, {W1_BATCH} examples per GPU per step ({n_gpus} GPUs)")
    for n in counts:
        ms = harness.time_calls(pmap_w1(n), harness.flamefx_sync, n=5, repeats=7)
        throughput = n * W1_BATCH / (ms / 1e3)
        base = base or throughput
        print(f"  {n} GPU(s): {ms:8.2f} ms/step  {throughput:10.0f} examples/s  "
              f"scaling efficiency {throughput / (n * base):.2f}")


if __name__ == "__main__":
    main()
