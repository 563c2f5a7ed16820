"""M1 and W7 (BENCHMARKS.md): the diffusion example's UNet training step in flamefx, JAX and
PyTorch, and a many-parameter step, flamefx against JAX.

M1 is the README's configuration (16x16 digits, 64 channels, batch 128, 500 diffusion
steps; AdamW with warmup-cosine, global-norm clipping, an EMA of the parameters). flamefx
runs the example's own code (``init_unet``, ``make_update``); JAX runs a port written here
in jax.numpy/lax, with AdamW, clipping and the EMA written out (optax is not on the GPU
machine); PyTorch runs the same UNet in torch.nn.functional with torch.optim.AdamW, eagerly
and through torch.compile (float32) where that works. All three start from flamefx's initial
weights (NCHW/OIHW in all three, so they copy as they are) and see the same batches,
timesteps and noise (NumPy arrays made here), so their losses after 10 steps must agree.
``--dtype bfloat16`` is the example's policy: float32 master parameters, bf16 compute.

For each system: the step time (``harness.time_calls``), the GPU time by CUDA events
around back-to-back steps (for JAX the wall time with ``block_until_ready``: JAX has no
events to record), the first call (trace + plan + compile + run) in a fresh process with
an empty and with a warm compilation cache, peak GPU memory, and the loss after 10 steps.

    python benchmarks/bench_model.py            # the GPU run (about 4 minutes)
    python benchmarks/bench_model.py --smoke    # tiny sizes, on the CPU too
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "examples"))

import harness  # noqa: E402

FULL = dict(image_size=16, channels=64, batch=128, timesteps=500, learning_rate=1e-3,
            warmup_steps=200, ema_decay=0.999, steps=3000)
SMOKE = dict(image_size=8, channels=8, batch=8, timesteps=50, learning_rate=1e-3,
             warmup_steps=2, ema_decay=0.999, steps=100)
CHECK_STEPS = 10
GN_EPS = 1e-5
ADAM = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, clip=1.0)


def groups(channels: int) -> int:
    return min(8, channels)  # the example's _groups


# --- what all three see: weights, batches, timesteps, noise -----------------------------------


def numpy_tree(tree):
    """flamefx's UNet parameters (layer dataclasses) as nested dicts/lists of NumPy arrays;
    static fields (strides) are left out: the ports know their layers' strides."""
    if dataclasses.is_dataclass(tree):
        return {f.name: numpy_tree(getattr(tree, f.name)) for f in dataclasses.fields(tree)
                if not f.metadata.get("static", False)}
    if isinstance(tree, dict):
        return {k: numpy_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [numpy_tree(v) for v in tree]
    return None if tree is None else np.asarray(tree)


def map_tree(fn, tree):
    if isinstance(tree, dict):
        return {k: map_tree(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [map_tree(fn, v) for v in tree]
    return None if tree is None else fn(tree)


def leaves_of(tree) -> list:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves_of(tree[k])]
    if isinstance(tree, list):
        return [x for v in tree for x in leaves_of(v)]
    return [] if tree is None else [tree]


def make_inputs(cfg: dict, seed: int = 0) -> dict:
    """Initial weights, the noise schedule and CHECK_STEPS batches, all NumPy."""
    import train_diffusion as td
    from flamefx import random as frandom
    x_train, _ = td.digit_images(cfg["image_size"], seed)
    rng = np.random.default_rng(seed)
    shape = (CHECK_STEPS, cfg["batch"], 1, cfg["image_size"], cfg["image_size"])
    images = x_train[rng.integers(0, len(x_train), shape[:2])]
    t = rng.integers(0, cfg["timesteps"], shape[:2]).astype(np.int32)
    noise = rng.standard_normal(shape).astype(np.float32)
    schedule = {k: np.array(v) for k, v in td.cosine_schedule(cfg["timesteps"]).items()}
    params = numpy_tree(td.init_unet(frandom.key(seed), cfg["channels"], cfg["image_size"]))
    return dict(images=images, t=t, noise=noise, params=params,
                sqrt_ab=schedule["sqrt_alpha_bar"], sqrt_1mab=schedule["sqrt_one_minus_alpha_bar"])


def learning_rate(cfg: dict, count, xp=math):
    """The example's warmup-cosine schedule (optim.warmup_cosine_decay_schedule), at step
    ``count``; ``xp`` is math (a Python float) or jax.numpy."""
    peak, warmup = cfg["learning_rate"], cfg["warmup_steps"]
    decay_steps = max(max(cfg["steps"], warmup + 1) - warmup, 1)
    alpha = 0.05
    warm = peak * xp.minimum(count, warmup) / warmup if xp is not math else \
        peak * min(max(count, 0), warmup) / warmup
    fraction = (xp.minimum(count - warmup, decay_steps) if xp is not math
                else min(count - warmup, decay_steps)) / decay_steps
    cosine = peak * ((1 - alpha) * 0.5 * (1 + xp.cos(math.pi * fraction)) + alpha)
    if xp is math:
        return cosine if count >= warmup else warm
    return xp.where(count >= warmup, cosine, warm)


# --- flamefx: the example's own code ---------------------------------------------------------


def flamefx_step(cfg: dict, inputs: dict, dtype: str):
    """(run, sync): the example's update jitted, on its state built from the
    example's own init (the same weights as ``inputs['params']``)."""
    import flamefx
    import flamefx.numpy as fnp
    import train_diffusion as td
    from flamefx import optim
    policy = optim.get_policy(f"params=float32,compute={dtype},output=float32")
    optimizer = td.make_optimizer(cfg["learning_rate"], cfg["warmup_steps"], cfg["steps"])
    ema = optim.ema(cfg["ema_decay"])
    schedule = td.cosine_schedule(cfg["timesteps"])
    step = flamefx.jit(td.make_update(optimizer, ema, schedule, policy))
    state = td.init_train_state(0, cfg["channels"], cfg["image_size"], optimizer, ema)
    batches = [tuple(fnp.asarray(inputs[k][i]) for k in ("images", "t", "noise"))
               for i in range(CHECK_STEPS)]
    carry = [state]

    def run(i=0):
        carry[0], loss = step(carry[0], *batches[i % CHECK_STEPS])
        return loss

    return run, harness.flamefx_sync


def unet_levels(p, x, emb, conv, res_block, attention_block, concat, upsample):
    """The UNet's stem, down levels, middle and up levels with their skips, as the example's
    init_unet lays them out; the JAX and PyTorch ports pass their own layers, channel
    ``concat`` and 2x nearest ``upsample``."""
    h = conv(p["stem"], x)
    skips = []
    for level in p["down"]:
        if level["downsample"] is not None:
            h = conv(level["downsample"], h, 2)
        h = res_block(level["block"], h, emb)
        skips.append(h)
    h = res_block(p["middle"]["block1"], h, emb)
    h = attention_block(p["middle"]["attention"], h)
    h = res_block(p["middle"]["block2"], h, emb)
    for level in p["up"]:
        h = res_block(level["block"], concat([h, skips.pop()]), emb)
        if level["upsample"] is not None:
            h = conv(level["upsample"], upsample(h))
    return h


# --- JAX: a port of the UNet and the optimizer -------------------------------------------------


def jax_step(cfg: dict, inputs: dict, dtype: str):
    import jax
    import jax.numpy as jnp
    from jax import lax
    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    f32 = jnp.float32

    def conv(p, x, stride=1):
        y = lax.conv_general_dilated(x, p["weight"], (stride, stride), "SAME",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + p["bias"][None, :, None, None]

    def linear(p, x):
        return x @ p["weight"] + p["bias"]

    def group_norm(p, x):
        n, c = x.shape[:2]
        rows = x.astype(f32).reshape(n, groups(c), -1)
        mean = rows.mean(-1, keepdims=True)
        centered = rows - mean
        xhat = (centered * lax.rsqrt((centered * centered).mean(-1, keepdims=True) + GN_EPS))
        y = (xhat.reshape(x.shape) * p["scale"].astype(f32)[None, :, None, None]
             + p["bias"].astype(f32)[None, :, None, None])
        return y.astype(x.dtype)

    def res_block(p, x, emb):
        h = conv(p["conv1"], jax.nn.silu(group_norm(p["norm1"], x)))
        h = h + linear(p["time"], emb)[:, :, None, None]
        h = conv(p["conv2"], jax.nn.silu(group_norm(p["norm2"], h)))
        return (conv(p["skip"], x) if "skip" in p else x) + h

    def attention_block(p, x):
        b, c, hh, ww = x.shape
        tokens = group_norm(p["norm"], x).reshape(b, c, hh * ww).transpose(0, 2, 1)
        heads, a = 4, p["attention"]

        def split(y):
            return y.reshape(b, hh * ww, heads, c // heads).transpose(0, 2, 1, 3)
        q, k, v = (split(linear(a[name], tokens)) for name in ("query", "key", "value"))
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(f32) / math.sqrt(c // heads)
        probs = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3)
        out = linear(a["out"], out.reshape(b, hh * ww, c))
        return x + out.transpose(0, 2, 1).reshape(b, c, hh, ww)

    def unet(p, x, t):
        first = p["time_mlp"][0]
        half = first["weight"].shape[0] // 2
        freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=f32) / half)
        angles = t.astype(f32)[:, None] * freqs[None, :]
        emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1).astype(x.dtype)
        emb = linear(p["time_mlp"][1], jax.nn.silu(linear(first, emb)))
        h = unet_levels(p, x, emb, conv, res_block, attention_block,
                        lambda xs: jnp.concatenate(xs, 1),
                        lambda h: jnp.repeat(jnp.repeat(h, 2, 2), 2, 3))
        return conv(p["head"]["conv"], jax.nn.silu(group_norm(p["head"]["norm"], h)))

    sqrt_ab, sqrt_1mab = jnp.asarray(inputs["sqrt_ab"]), jnp.asarray(inputs["sqrt_1mab"])

    def loss_fn(params, images, t, noise):
        noisy = sqrt_ab[t][:, None, None, None] * images + sqrt_1mab[t][:, None, None, None] * noise
        cast = jax.tree_util.tree_map(lambda p: p.astype(compute), params)
        predicted = unet(cast, noisy.astype(compute), t).astype(f32)
        return jnp.mean(jnp.square(predicted - noise))

    b1, b2, eps, wd = ADAM["b1"], ADAM["b2"], ADAM["eps"], ADAM["weight_decay"]
    decay = cfg["ema_decay"]
    tmap = jax.tree_util.tree_map

    @jax.jit
    def step(state, images, t, noise):
        params = state["params"]
        loss, grads = jax.value_and_grad(loss_fn)(params, images, t, noise)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
        grads = tmap(lambda g: g * jnp.where(norm < ADAM["clip"], 1.0, ADAM["clip"] / norm),
                     grads)
        count = state["count"] + 1
        mu = tmap(lambda m, g: b1 * m + (1 - b1) * g, state["mu"], grads)
        nu = tmap(lambda v, g: b2 * v + (1 - b2) * g * g, state["nu"], grads)
        c1, c2 = 1 - b1 ** count.astype(f32), 1 - b2 ** count.astype(f32)
        lr = learning_rate(cfg, state["count"].astype(f32), jnp)
        params = tmap(lambda p, m, v: p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps) + wd * p),
                      params, mu, nu)
        average = tmap(lambda a, p: decay * a + (1 - decay) * p, state["ema"], params)
        ema_params = tmap(lambda a: a / (1 - decay ** count.astype(f32)), average)
        return dict(params=params, mu=mu, nu=nu, count=count, ema=average,
                    ema_params=ema_params), loss

    params = map_tree(jnp.asarray, inputs["params"])
    zeros = tmap(jnp.zeros_like, params)
    state = [dict(params=params, mu=zeros, nu=zeros, count=jnp.zeros((), jnp.int32), ema=zeros,
                  ema_params=params)]
    batches = [tuple(jnp.asarray(inputs[k][i]) for k in ("images", "t", "noise"))
               for i in range(CHECK_STEPS)]

    def run(i=0):
        state[0], loss = step(state[0], *batches[i % CHECK_STEPS])
        return loss

    return run, harness.jax_sync


# --- PyTorch: the same UNet in torch.nn.functional, torch.optim.AdamW --------------------------


def torch_step(cfg: dict, inputs: dict, dtype: str, compiled: bool = False):
    import torch
    import torch.nn.functional as F
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compute = torch.bfloat16 if dtype == "bfloat16" else torch.float32

    def conv(p, x, stride=1):
        size = p["weight"].shape[-1]
        if stride == 2:  # "SAME" at stride 2 pads (0, 1): PyTorch's padding=1 would be (1, 1)
            return F.conv2d(F.pad(x, (0, 1, 0, 1)), p["weight"], p["bias"], stride=2)
        return F.conv2d(x, p["weight"], p["bias"], padding=size // 2)

    def linear(p, x):
        return x @ p["weight"] + p["bias"]

    def group_norm(p, x):
        y = F.group_norm(x.float(), groups(x.shape[1]), p["scale"].float(), p["bias"].float(),
                         GN_EPS)
        return y.to(x.dtype)

    def res_block(p, x, emb):
        h = conv(p["conv1"], F.silu(group_norm(p["norm1"], x)))
        h = h + linear(p["time"], emb)[:, :, None, None]
        h = conv(p["conv2"], F.silu(group_norm(p["norm2"], h)))
        return (conv(p["skip"], x) if "skip" in p else x) + h

    def attention_block(p, x):
        b, c, hh, ww = x.shape
        tokens = group_norm(p["norm"], x).reshape(b, c, hh * ww).transpose(1, 2)
        heads, a = 4, p["attention"]

        def split(y):
            return y.reshape(b, hh * ww, heads, c // heads).transpose(1, 2)
        q, k, v = (split(linear(a[name], tokens)) for name in ("query", "key", "value"))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, hh * ww, c)
        return x + linear(a["out"], out).transpose(1, 2).reshape(b, c, hh, ww)

    def unet(p, x, t):
        first = p["time_mlp"][0]
        half = first["weight"].shape[0] // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32,
                                                               device=x.device) / half)
        angles = t.float()[:, None] * freqs[None, :]
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], -1).to(x.dtype)
        emb = linear(p["time_mlp"][1], F.silu(linear(first, emb)))
        h = unet_levels(p, x, emb, conv, res_block, attention_block,
                        lambda xs: torch.cat(xs, 1),
                        lambda h: F.interpolate(h, scale_factor=2, mode="nearest"))
        return conv(p["head"]["conv"], F.silu(group_norm(p["head"]["norm"], h)))

    sqrt_ab = torch.as_tensor(inputs["sqrt_ab"], device=device)
    sqrt_1mab = torch.as_tensor(inputs["sqrt_1mab"], device=device)

    def loss_fn(params, images, t, noise):
        noisy = sqrt_ab[t][:, None, None, None] * images + sqrt_1mab[t][:, None, None, None] * noise
        cast = map_tree(lambda p: p.to(compute), params)
        predicted = unet(cast, noisy.to(compute), t).float()
        return torch.mean(torch.square(predicted - noise))

    if compiled:
        loss_fn = torch.compile(loss_fn)
    params = map_tree(lambda a: torch.tensor(a, device=device, requires_grad=True),
                      inputs["params"])
    flat = leaves_of(params)
    opt = torch.optim.AdamW(flat, lr=cfg["learning_rate"], betas=(ADAM["b1"], ADAM["b2"]),
                            eps=ADAM["eps"], weight_decay=ADAM["weight_decay"], foreach=True)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda count: learning_rate(cfg, count) / cfg["learning_rate"])
    decay = cfg["ema_decay"]
    average = [torch.zeros_like(p) for p in flat]
    count = [0]
    batches = [tuple(torch.as_tensor(inputs[k][i], device=device)
                     for k in ("images", "t", "noise")) for i in range(CHECK_STEPS)]
    batches = [(x, t.long(), n) for x, t, n in batches]

    def run(i=0):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(params, *batches[i % CHECK_STEPS])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flat, ADAM["clip"], foreach=True)
        opt.step()
        lr_schedule.step()
        count[0] += 1
        with torch.no_grad():
            torch._foreach_mul_(average, decay)
            torch._foreach_add_(average, flat, alpha=1 - decay)
            run.ema_params = torch._foreach_div(average, 1 - decay ** count[0])
        return loss.detach()

    return run, harness.torch_sync


SYSTEMS = {"flamefx": flamefx_step, "jax": jax_step, "torch": torch_step,
           "torch.compile": lambda cfg, inputs, dtype: torch_step(cfg, inputs, dtype, True)}


def available(name: str) -> bool:
    module = {"flamefx": "flamefx", "jax": "jax"}.get(name, "torch")
    return harness.try_import(module) is not None


# --- measurements --------------------------------------------------------------------------


def ten_losses(run, sync) -> list[float]:
    losses = [run(i) for i in range(CHECK_STEPS)]
    sync(losses[-1])
    return [float(np.asarray(loss.float().cpu() if hasattr(loss, "cpu") else loss))
            for loss in losses]


def event_ms(system: str, run, sync, n: int = 20) -> float | None:
    """GPU time per step between two CUDA events around ``n`` back-to-back steps (None on
    the CPU; for JAX, wall time to ``block_until_ready``)."""
    sync(run())
    if system == "flamefx":
        import flamefx
        if flamefx.default_device().platform != "gpu":
            return None
        import cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(n):
            out = run()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / n
    if system.startswith("torch"):
        import torch
        if not torch.cuda.is_available():
            return None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            out = run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / n
    start = time.perf_counter()
    for _ in range(n):
        out = run()
    sync(out)
    return (time.perf_counter() - start) * 1e3 / n


def host_ms(run, sync, n: int = 20) -> float:
    """Median time of one call without a sync: the host's share of a step (while the device
    still has queued work, a call returns as soon as its launches are queued)."""
    sync(run())
    times = []
    for _ in range(n):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    sync(out)
    return statistics.median(times) * 1e3


def example_loop(cfg: dict, dtype: str, steps: int, log_every: int) -> dict:
    """The example's own training loop in steady state: its ``make_train_step`` (batch,
    timesteps and noise drawn inside the step, the dataset on the device), the EMA, and
    the losses kept as arrays and read every ``log_every`` steps, as ``train`` does.
    Returns ms a step over the steps after the first log interval, the step's GPU time
    between CUDA events around back-to-back steps, and its kernels' own GPU time
    (``Jitted.profile``, host gaps excluded)."""
    import flamefx
    import flamefx.numpy as fnp
    import train_diffusion as td
    from flamefx import optim, random
    policy = optim.get_policy(f"params=float32,compute={dtype},output=float32")
    x_train, _ = td.digit_images(cfg["image_size"], 0)
    optimizer = td.make_optimizer(cfg["learning_rate"], cfg["warmup_steps"], cfg["steps"])
    ema = optim.ema(cfg["ema_decay"])
    state = td.init_train_state(0, cfg["channels"], cfg["image_size"], optimizer, ema)
    train_step = td.make_train_step(optimizer, ema, td.cosine_schedule(cfg["timesteps"]),
                                    cfg["timesteps"], policy, cfg["batch"])
    dataset, key = fnp.asarray(x_train), random.key(0)
    pending, logged = [], []
    start = None
    for step in range(steps):
        if step == log_every:
            start = time.perf_counter()
        state, loss = train_step(state, dataset, key)
        if step == 0:
            gc.freeze()  # as train does after its first step
        pending.append(loss)
        if (step + 1) % log_every == 0:
            logged.append(float(np.mean([float(value) for value in pending])))
            pending.clear()
    loop_ms = (time.perf_counter() - start) * 1e3 / (steps - log_every)
    box = [state]

    def run():
        box[0], value = train_step(box[0], dataset, key)
        return value
    result = {"loop_ms": loop_ms, "events_ms": event_ms("flamefx", run, harness.flamefx_sync),
              "kernels_ms": None, "host_ms": host_ms(run, harness.flamefx_sync)}
    gc.unfreeze()
    if flamefx.default_device().platform == "gpu":
        rows = harness.safe(lambda: train_step.profile(box[0], dataset, key))
        result["kernels_ms"] = rows and sum(row["gpu_ms"] for row in rows)
    return result


_FIRST_CALL = """
import json, sys, time
sys.path.insert(0, {bench_dir!r})
import bench_model, bench_training, harness
harness.configure_precision()
cfg = {cfg!r}
inputs = bench_model.make_inputs(cfg)
system, dtype = {system!r}, {dtype!r}
if system == "jax" and {cache!r}:
    import jax
    jax.config.update("jax_compilation_cache_dir", {cache!r})
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
first = []

def make():
    run, sync = bench_model.SYSTEMS[system](cfg, inputs, dtype)
    def timed():
        if not first:
            start = time.perf_counter()
            sync(run())
            first.append(time.perf_counter() - start)
        return run()
    return timed

memory = None
try:
    memory = bench_training.peak_memory_mb(system.split(".")[0], make)
except Exception as e:  # no GPU (the CPU smoke run): the first call alone
    if not first:
        make()()
print(json.dumps({{"first_s": first[0], "peak_mib": memory}}))
"""


def first_call_in_fresh_process(cfg: dict, system: str, dtype: str, cache: str) -> dict:
    """First call (trace + plan + compile + run to the result) and peak memory in a fresh
    process whose compilation caches live in ``cache`` (empty: cold; reused: warm)."""
    code = _FIRST_CALL.format(bench_dir=BENCH_DIR, cfg=cfg, system=system, dtype=dtype,
                              cache=cache)
    env = dict(os.environ, CUPY_CACHE_DIR=cache, FLAMEFX_CACHE_DIR=cache,
               TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
    if system != "flamefx":  # flamefx only makes the initial weights there
        env["FLAMEFX_PLATFORM"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_bench(cfg: dict, dtypes: list[str], systems: list[str], fresh: list[str]) -> str:
    inputs = make_inputs(cfg)
    lines = [f"M1 UNet step: {cfg}",
             "| dtype | system | step ms | GPU ms (events) | host ms/call | first call cold s | "
             "warm s | peak MiB | loss after 10 | vs flamefx |", "|" + "---|" * 10]
    agree = True
    for dtype in dtypes:
        reference = None
        for system in systems:
            # Inductor takes a minute or more a dtype on the GPU: float32 only, to keep the
            # lead's run near 4 minutes.
            if not available(system) or (system == "torch.compile" and dtype != "float32"):
                continue
            print(f"{system} {dtype}", flush=True)
            row = {"step": None, "gpu": None, "host": None, "loss": None, "cold": None,
                   "warm": None, "mem": None}

            def measure():
                run, sync = SYSTEMS[system](cfg, inputs, dtype)
                losses = ten_losses(run, sync)
                row["loss"] = losses[-1]
                row["step"] = harness.time_calls(run, sync)
                row["gpu"] = event_ms(system, run, sync)
                row["host"] = host_ms(run, sync)
            harness.safe(measure)
            # torch.compile's first call is minutes of Inductor: left out to keep the run short.
            if dtype in fresh and system != "torch.compile":
                with tempfile.TemporaryDirectory() as cache:
                    cold = harness.safe(lambda: first_call_in_fresh_process(cfg, system, dtype,
                                                                            cache))
                    # Eager PyTorch compiles nothing: its one process is cold and warm.
                    warm = cold if system == "torch" else harness.safe(
                        lambda: first_call_in_fresh_process(cfg, system, dtype, cache))
                row["cold"] = cold and cold["first_s"]
                row["warm"] = warm and warm["first_s"]
                row["mem"] = warm and warm["peak_mib"]
            if system == "flamefx":
                reference = row["loss"]
            difference = "-"
            if reference is not None and row["loss"] is not None:
                rel = abs(row["loss"] - reference) / abs(reference)
                tolerance = 2e-2 if dtype == "bfloat16" else 1e-4
                agree &= rel <= tolerance
                difference = f"{rel:.1e}{'' if rel <= tolerance else ' DISAGREES'}"

            def fmt(v, spec=".3f"):
                return "-" if v is None else format(v, spec)
            lines.append(f"| {dtype} | {system} | {fmt(row['step'])} | {fmt(row['gpu'])} | "
                         f"{fmt(row['host'])} | "
                         f"{fmt(row['cold'], '.2f')} | {fmt(row['warm'], '.2f')} | "
                         f"{fmt(row['mem'], '.1f')} | {fmt(row['loss'], '.6f')} | {difference} |")
    lines.append("host ms/call: the median call without a sync (the Python side of a step). "
                 "JAX's 'GPU ms' is wall time to block_until_ready (no CUDA events in JAX). "
                 f"Losses {'agree' if agree else 'DO NOT agree'} (float32 rtol 1e-4, "
                 "bfloat16 2e-2).")
    return "\n".join(lines)


# --- W7: the host path by itself --------------------------------------------------------------

W7_SHAPES = [(64, 64, 3, 3), (64,), (64,), (256, 64), (64,)]


def w7_params(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(W7_SHAPES[i % len(W7_SHAPES)]).astype(np.float32)
            for i in range(n)]


def _w7_run(jit, value_and_grad, xnp, n: int):
    """W7's program through one library (flamefx or JAX, the same code): a jitted SGD step
    over ``n`` leaves; returns a function that runs one step and gives its loss."""
    def loss(params):
        return sum(xnp.mean(p * p) for p in params)

    @jit
    def step(params):
        value, grads = value_and_grad(loss)(params)
        return [p - 0.01 * g for p, g in zip(params, grads)], value

    params = [[xnp.asarray(p) for p in w7_params(n)]]

    def run():
        params[0], value = step(params[0])
        return value
    return run


def flamefx_w7(n: int):
    import flamefx
    import flamefx.numpy as fnp
    return _w7_run(flamefx.jit, flamefx.value_and_grad, fnp, n)


def jax_w7(n: int):
    import jax
    import jax.numpy as jnp
    return _w7_run(jax.jit, jax.value_and_grad, jnp, n)


def w7_bench(sizes=(50, 200, 800)) -> str:
    table = harness.Table()
    for n in sizes:
        print(f"W7 N={n}", flush=True)
        f_ms = harness.safe(lambda: harness.time_calls(flamefx_w7(n), harness.flamefx_sync,
                                                       n=20))
        j_ms = (harness.safe(lambda: harness.time_calls(jax_w7(n), harness.jax_sync, n=20))
                if available("jax") else None)
        table.add(f"W7 {n} params", f_ms, j_ms)
    return table.render()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU check)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--systems", default="flamefx,jax,torch,torch.compile")
    parser.add_argument("--fresh", default="float32",
                        help="dtypes whose first call and peak memory are measured in fresh "
                             "processes: float32, bfloat16, both or none")
    parser.add_argument("--no-w7", action="store_true")
    parser.add_argument("--no-loop", action="store_true", help="skip the example's own loop")
    args = parser.parse_args(argv)
    harness.configure_precision()
    cfg = SMOKE if args.smoke else FULL
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    fresh = {"both": ["float32", "bfloat16"], "none": []}.get(args.fresh, [args.fresh])
    print(model_bench(cfg, dtypes, args.systems.split(","), fresh), flush=True)
    if not args.no_loop and "flamefx" in args.systems.split(","):
        steps, log_every = (30, 10) if args.smoke else (600, 200)
        for dtype in dtypes:
            print(f"example loop {dtype}", flush=True)
            loop = harness.safe(lambda: example_loop(cfg, dtype, steps, log_every))
            if loop:
                def fmt(v):
                    return "-" if v is None else f"{v:.3f}"
                print(f"M1 the example's own loop ({dtype}, logging every {log_every}): "
                      f"{fmt(loop['loop_ms'])} ms a step; the step alone: GPU "
                      f"{fmt(loop['events_ms'])} ms between events, kernels "
                      f"{fmt(loop['kernels_ms'])} ms, host {fmt(loop['host_ms'])} ms a call",
                      flush=True)
    if not args.no_w7:
        print(w7_bench((5, 20) if args.smoke else (50, 200, 800)))


if __name__ == "__main__":
    main()
