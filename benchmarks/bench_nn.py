"""W2 (conv block SGD step) and W3 (attention forward + backward), with W2's peak memory.

    python benchmarks/bench_nn.py
    python benchmarks/bench_nn.py --profile-w2    # W2 launch by launch

W2: x (32, 64, 32, 32); h = silu(groupnorm32(conv3x3(x))); h = conv3x3(h) + x;
h = h + attention(groupnorm32(h)) over the 1024 spatial tokens (one head, q/k/v/o 64x64);
loss = mean((h - t)^2); one jitted value_and_grad + SGD step.
W3: q, k, v (8, 8, 1024, 64); grad of sum(softmax(q k^T / 8) v) w.r.t. q, k, v — flamefx's
fused attention, and the plain softmax form written in flamefx.numpy for comparison; the
bfloat16 rows compare against JAX's cuDNN attention and PyTorch's SDPA. W2 bf16: float32
master parameters, the block in bfloat16 (optim.Policy; JAX casts, PyTorch autocast), loss in
float32.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness

W2_SHAPE = (32, 64, 32, 32)
W2_GROUPS = 32
W3_SHAPE = (8, 8, 1024, 64)
LR = 1e-2


def _w2_data(seed=0):
    rng = np.random.default_rng(seed)
    c = W2_SHAPE[1]
    conv_std = 1 / np.sqrt(c * 9)
    params = {
        "w1": rng.normal(0, conv_std, (c, c, 3, 3)), "b1": np.zeros(c),
        "w2": rng.normal(0, conv_std, (c, c, 3, 3)), "b2": np.zeros(c),
        "g1": np.ones(c), "a1": np.zeros(c), "g2": np.ones(c), "a2": np.zeros(c),
        **{name: rng.normal(0, 1 / np.sqrt(c), (c, c)) for name in ("wq", "wk", "wv", "wo")},
    }
    params = {k: v.astype(np.float32) for k, v in params.items()}
    x = rng.normal(size=W2_SHAPE).astype(np.float32)
    t = rng.normal(size=W2_SHAPE).astype(np.float32)
    return params, x, t


def w2_flops() -> float:
    n, c, h, w = W2_SHAPE
    tokens = h * w
    conv = 2 * n * c * c * 9 * tokens
    projections = 4 * 2 * n * tokens * c * c
    attention = 2 * 2 * n * tokens * tokens * c
    return 3 * (2 * conv + projections + attention)  # backward ~ twice the forward


def w3_flops() -> float:
    b, heads, s, d = W3_SHAPE
    forward = 2 * 2 * b * heads * s * s * d
    return forward * 3.5  # backward: four products, plus recomputing the scores


def _w3_data(dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=W3_SHAPE).astype(dtype) for _ in range(3)]


def _sgd_step(lib, loss):
    """The jitted W2 step, ``(p, x, t) -> (p - LR * grad, loss)``, in ``lib`` (flamefx or jax:
    both spell jit, value_and_grad and tree_util.tree_map alike)."""
    @lib.jit
    def step(p, x, t):
        value, grads = lib.value_and_grad(loss)(p, x, t)
        return lib.tree_util.tree_map(lambda a, g: a - LR * g, p, grads), value
    return step


# --- flamefx -----------------------------------------------------------------------------------


def _flamefx_w2_inputs():
    """W2's parameters, input and target as flamefx arrays."""
    import flamefx.numpy as fnp

    raw, x, t = _w2_data()
    return {k: fnp.asarray(v) for k, v in raw.items()}, fnp.asarray(x), fnp.asarray(t)


def _flamefx_w2_block(p, x):
    """W2's residual block in flamefx: conv, group norm, SiLU, conv, group norm, attention."""
    import flamefx.numpy as fnp
    from flamefx import nn

    n, c, hh, ww = W2_SHAPE
    h = nn.conv(x, p["w1"], padding="SAME") + p["b1"][:, None, None]
    h = nn.silu(nn.group_norm(h, p["g1"], p["a1"], num_groups=W2_GROUPS))
    h = nn.conv(h, p["w2"], padding="SAME") + p["b2"][:, None, None] + x
    g = nn.group_norm(h, p["g2"], p["a2"], num_groups=W2_GROUPS)
    tokens = fnp.transpose(fnp.reshape(g, (n, c, hh * ww)), (0, 2, 1))[:, None]
    q, k, v = (tokens @ p[name] for name in ("wq", "wk", "wv"))
    attended = nn.dot_product_attention(q, k, v)[:, 0] @ p["wo"]
    return h + fnp.reshape(fnp.transpose(attended, (0, 2, 1)), (n, c, hh, ww))


def flamefx_w2_parts():
    """The jitted W2 step, its parameter carry (a one-element list), input and target."""
    import flamefx
    import flamefx.numpy as fnp

    params, x, t = _flamefx_w2_inputs()

    def loss(p, x, t):
        return fnp.mean((_flamefx_w2_block(p, x) - t) ** 2)

    return _sgd_step(flamefx, loss), [params], x, t


def flamefx_w2():
    return harness.carried(*flamefx_w2_parts())


def flamefx_w3(dtype=np.float32, fused=True):
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import nn

    q, k, v = (fnp.asarray(a) for a in _w3_data(dtype))

    def loss(q, k, v):
        if fused:
            out = nn.dot_product_attention(q, k, v, scale=1 / 8)
        else:
            weights = nn.softmax(fnp.einsum("bhqd,bhkd->bhqk", q, k) / 8, axis=-1)
            out = fnp.einsum("bhqk,bhkd->bhqd", weights, v)
        return fnp.sum(out.astype(fnp.float32))

    f = flamefx.jit(flamefx.grad(loss, argnums=(0, 1, 2)))
    return lambda: f(q, k, v)


# --- JAX -------------------------------------------------------------------------------------


def _jax_group_norm(x, scale, bias, groups, eps=1e-5):
    import jax.numpy as jnp
    n = x.shape[0]
    g = x.reshape(n, groups, -1)
    mean = g.mean(-1, keepdims=True)
    var = ((g - mean) ** 2).mean(-1, keepdims=True)
    y = ((g - mean) / jnp.sqrt(var + eps)).reshape(x.shape)
    return y * scale[:, None, None] + bias[:, None, None]


def jax_w2():
    import jax
    import jax.numpy as jnp

    raw, x, t = _w2_data()
    params = {k: jnp.asarray(v) for k, v in raw.items()}
    x, t = jnp.asarray(x), jnp.asarray(t)
    n, c, hh, ww = W2_SHAPE

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def loss(p, x, t):
        h = conv(x, p["w1"]) + p["b1"][:, None, None]
        h = jax.nn.silu(_jax_group_norm(h, p["g1"], p["a1"], W2_GROUPS))
        h = conv(h, p["w2"]) + p["b2"][:, None, None] + x
        g = _jax_group_norm(h, p["g2"], p["a2"], W2_GROUPS)
        tokens = g.reshape(n, c, hh * ww).transpose(0, 2, 1)
        q, k, v = (tokens @ p[name] for name in ("wq", "wk", "wv"))
        weights = jax.nn.softmax(q @ k.transpose(0, 2, 1) / np.sqrt(c), axis=-1)
        attended = (weights @ v) @ p["wo"]
        h = h + attended.transpose(0, 2, 1).reshape(n, c, hh, ww)
        return jnp.mean((h - t) ** 2)

    return harness.carried(_sgd_step(jax, loss), [params], x, t)


def jax_w3(dtype=np.float32, implementation=None):
    import jax
    import jax.numpy as jnp

    q, k, v = (jnp.asarray(a) for a in _w3_data(dtype))

    def loss(q, k, v):
        if implementation is None:
            weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) / 8, axis=-1)
            out = jnp.einsum("bhqk,bhkd->bhqd", weights, v)
        else:  # jax.nn.dot_product_attention takes (batch, seq, heads, dim)
            out = jax.nn.dot_product_attention(
                q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                scale=1 / 8, implementation=implementation)
        return jnp.sum(out.astype(jnp.float32))

    f = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return lambda: f(q, k, v)


# --- PyTorch (eager) --------------------------------------------------------------------------


def _torch_w2(bf16: bool):
    """W2's step in eager torch; ``bf16``: the block under bfloat16 autocast, the loss and
    SGD in float32."""
    import torch
    import torch.nn.functional as F

    raw, x, t = _w2_data()
    dev = "cuda"
    p = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in raw.items()}
    x, t = torch.tensor(x, device=dev), torch.tensor(t, device=dev)
    n, c, hh, ww = W2_SHAPE

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            h = F.conv2d(x, p["w1"], p["b1"], padding=1)
            h = F.silu(F.group_norm(h, W2_GROUPS, p["g1"], p["a1"]))
            h = F.conv2d(h, p["w2"], p["b2"], padding=1) + x
            g = F.group_norm(h, W2_GROUPS, p["g2"], p["a2"])
            tokens = g.reshape(n, c, hh * ww).transpose(1, 2)[:, None]
            q, k, v = (tokens @ p[name] for name in ("wq", "wk", "wv"))
            attended = F.scaled_dot_product_attention(q, k, v)[:, 0] @ p["wo"]
            h = h + attended.transpose(1, 2).reshape(n, c, hh, ww)
        loss = torch.mean((h.float() - t) ** 2)
        grads = torch.autograd.grad(loss, list(p.values()))
        with torch.no_grad():
            for a, g in zip(p.values(), grads):
                a -= LR * g
        return loss
    return run


def torch_w2():
    return _torch_w2(bf16=False)


def torch_w3(dtype=np.float32):
    import torch
    import torch.nn.functional as F

    torch_dtype = torch.bfloat16 if dtype != np.float32 else torch.float32
    q, k, v = (torch.tensor(a.astype(np.float32), device="cuda").to(torch_dtype)
               .requires_grad_() for a in _w3_data())

    def run():
        out = F.scaled_dot_product_attention(q, k, v, scale=1 / 8)
        return torch.autograd.grad(out.float().sum(), (q, k, v))
    return run


# --- W2 in bfloat16: float32 master parameters and SGD, bf16 compute, float32 loss ----------


def flamefx_w2_bf16():
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import optim

    policy = optim.get_policy("params=float32,compute=bfloat16,output=float32")
    params, x, t = _flamefx_w2_inputs()

    def loss(p, x, t):
        out = policy.cast_to_output(
            _flamefx_w2_block(policy.cast_to_compute(p), policy.cast_to_compute(x)))
        return fnp.mean((out - t) ** 2)

    return harness.carried(_sgd_step(flamefx, loss), [params], x, t)


def jax_w2_bf16():
    import jax
    import jax.numpy as jnp

    raw, x, t = _w2_data()
    params = {k: jnp.asarray(v) for k, v in raw.items()}
    x, t = jnp.asarray(x), jnp.asarray(t)
    n, c, hh, ww = W2_SHAPE
    bf16 = jnp.bfloat16

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def group_norm(h, scale, bias):
        # Statistics in float32, as flax's GroupNorm and flamefx's group_norm do.
        return _jax_group_norm(h.astype(jnp.float32), scale, bias, W2_GROUPS).astype(bf16)

    def loss(p, x, t):
        p = jax.tree_util.tree_map(lambda a: a.astype(bf16), p)
        x = x.astype(bf16)
        h = conv(x, p["w1"]) + p["b1"][:, None, None]
        h = jax.nn.silu(group_norm(h, p["g1"], p["a1"]))
        h = conv(h, p["w2"]) + p["b2"][:, None, None] + x
        g = group_norm(h, p["g2"], p["a2"])
        tokens = g.reshape(n, c, hh * ww).transpose(0, 2, 1)
        q, k, v = (tokens @ p[name] for name in ("wq", "wk", "wv"))
        scores = (q @ k.transpose(0, 2, 1)).astype(jnp.float32) / np.sqrt(c)
        weights = jax.nn.softmax(scores, axis=-1).astype(bf16)
        attended = (weights @ v) @ p["wo"]
        h = h + attended.transpose(0, 2, 1).reshape(n, c, hh, ww)
        return jnp.mean((h.astype(jnp.float32) - t) ** 2)

    return harness.carried(_sgd_step(jax, loss), [params], x, t)


def torch_w2_bf16():
    return _torch_w2(bf16=True)


# --- table ------------------------------------------------------------------------------------


def _row(table, name, fx, jx=None, tc=None, floor=None):
    print(name, flush=True)
    f_ms = harness.safe(lambda: harness.time_calls(fx(), harness.flamefx_sync))
    j_ms = None
    if jx is not None and harness.try_import("jax") is not None:
        j_ms = harness.safe(lambda: harness.time_calls(jx(), harness.jax_sync))
    t_ms = None
    if tc is not None and harness.try_import("torch") is not None:
        t_ms = harness.safe(lambda: harness.time_calls(tc(), harness.torch_sync))
    table.add(name, f_ms, j_ms, t_ms, floor)


def main(table: harness.Table | None = None) -> harness.Table:
    import ml_dtypes

    harness.configure_precision()
    table = table or harness.Table()
    bf16 = ml_dtypes.bfloat16
    _row(table, "W2 conv block SGD step", flamefx_w2, jax_w2, torch_w2,
         harness.floor_ms(w2_flops()))
    _row(table, "W2 bf16 (f32 master params; torch autocast)", flamefx_w2_bf16, jax_w2_bf16,
         torch_w2_bf16, harness.floor_ms(w2_flops(), flops_rate=harness.BF16_FLOPS))
    _row(table, "W3 attention fwd+bwd (fused)", flamefx_w3, jax_w3, torch_w3,
         harness.floor_ms(w3_flops()))
    _row(table, "W3 attention fwd+bwd (softmax form)", lambda: flamefx_w3(fused=False), jax_w3,
         None, harness.floor_ms(w3_flops()))
    _row(table, "W3 bf16 (fused; JAX cuDNN; torch SDPA)", lambda: flamefx_w3(bf16),
         lambda: jax_w3(bf16, "cudnn"), lambda: torch_w3(bf16),
         harness.floor_ms(w3_flops(), flops_rate=harness.BF16_FLOPS))
    _row(table, "W3 bf16 softmax form", lambda: flamefx_w3(bf16, fused=False),
         lambda: jax_w3(bf16), None, harness.floor_ms(w3_flops(), flops_rate=harness.BF16_FLOPS))
    return table


def extras() -> str:
    """Peak GPU memory of a warm W2 step, flamefx against JAX and PyTorch."""
    from bench_training import peak_memory_in_fresh_process
    lines = []
    for system in ("flamefx", "jax", "torch"):
        mb = harness.safe(lambda: peak_memory_in_fresh_process(system, "bench_nn", "w2"))
        lines.append(f"W2 peak GPU memory, {system}: {mb if mb is None else round(mb, 1)} MiB")
    return "\n".join(lines)


def profile_w2(top: int = 12) -> None:
    """W2 launch by launch: graph capture, steady state with and without graphs, the
    launches with the most GPU time and the totals per kind."""
    import flamefx
    step, carry, x, t = flamefx_w2_parts()
    run = harness.carried(step, carry, x, t)
    for _ in range(4):
        harness.flamefx_sync(run())
    entry, _, device = step._lookup((carry[0], x, t), {})
    exe = entry.program.executable(device)
    print(f"W2 graphs captured: {len(exe.graphs)}; capture error: {exe.capture_error}")
    for graphs in (True, False):
        with flamefx.config.override("cuda_graphs", graphs):
            ms = harness.time_calls(run, harness.flamefx_sync)
        print(f"W2 {'graphs' if graphs else 'kernel by kernel'}: {ms:.3f} ms")
    report = step.profile(carry[0], x, t)
    by_kind: dict[str, list[float]] = {}
    for r in report:
        acc = by_kind.setdefault(r["kind"], [0, 0.0])
        acc[0] += 1
        acc[1] += r["gpu_ms"]
    print("W2 GPU ms by kind: " + ", ".join(f"{kind} x{count} {gpu:.3f}"
                                            for kind, (count, gpu) in by_kind.items()))
    for r in sorted(report, key=lambda r: -r["gpu_ms"])[:top]:
        print(f"  {r['gpu_ms']:8.4f} ms  {r['kind']:10s} {r['details'][:110]}")


if __name__ == "__main__":
    if "--profile-w2" in sys.argv:
        profile_w2()
    else:
        print(main().render())
        print(extras())
