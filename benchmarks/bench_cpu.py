"""C1-C6: flamefx's CPU backend beside JAX on the CPU and beside the same maths in NumPy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_cpu.py

One process; every system is warmed up, then each figure is the median of many repeats of
back-to-back calls (``--repeats``). The table gives flamefx/JAX and flamefx/NumPy. The
load average is printed before each workload: on a shared machine a busy core distorts a
step's time many times over, so a figure taken under load says so. ``--busy`` also times
each flamefx workload with a ``python -c "while True: pass"`` process started for that
measurement only (killed right after), and gives busy/quiet. ``--append`` appends the table
to benchmarks/RESULTS.md. ``--only C1,C3`` runs some workloads.

C1 the Quickstart MLP Adam step (64-256-256-10, batch 128); C2 the jitted gradient of
sum(tanh(x @ w)), x 256x512, w 512x512; C3 a tiny jitted call (x * 2 + 1 on 1000 floats,
in microseconds); C4 the diffusion example's default training step (flamefx only: the
UNet exists in flamefx alone); C5 per-example gradients of W6's model (784-256-10) at
batch 128; C6 the gradient of a ``lax.scan`` tanh RNN (seq 100, hidden 128, batch 32,
input 64).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

MLP_SIZES, MLP_BATCH = [64, 256, 256, 10], 128
W6_SIZES, W6_BATCH = [784, 256, 10], 128
RNN_SEQ, RNN_BATCH, RNN_IN, RNN_HIDDEN = 100, 32, 64, 128


def median_ms(fn, min_repeat_s=0.02, repeats=21, warmup=5) -> float:
    """Median milliseconds per call over ``repeats`` runs of n back-to-back calls (n chosen
    so one run lasts about ``min_repeat_s``)."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(1, int(min_repeat_s / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) * 1e3 / n)
    return statistics.median(samples)


# --- the data, shared by every system -----------------------------------------------------------


def mlp_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32), np.zeros(b, np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


def batch(n, dim, classes, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)).astype(np.float32),
            rng.integers(0, classes, n).astype(np.int32))


def tanh_data(seed=2):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(256, 512)).astype(np.float32),
            (rng.normal(size=(512, 512)) / np.sqrt(512)).astype(np.float32))


def rnn_data(seed=3):
    rng = np.random.default_rng(seed)
    wx = (rng.normal(size=(RNN_IN, RNN_HIDDEN)) / np.sqrt(RNN_IN)).astype(np.float32)
    wh = (rng.normal(size=(RNN_HIDDEN, RNN_HIDDEN)) / np.sqrt(RNN_HIDDEN)).astype(np.float32)
    b = np.zeros(RNN_HIDDEN, np.float32)
    xs = rng.normal(size=(RNN_SEQ, RNN_BATCH, RNN_IN)).astype(np.float32)
    return (wx, wh, b), xs


# --- flamefx (and JAX: the same code with jax.numpy, where the two APIs agree) -----------------


def mlp_loss(nn, fnp, params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = nn.relu(h)
    logp = nn.log_softmax(h)
    return -fnp.mean(fnp.take_along_axis(logp, y[:, None], axis=1))


def adam_step(lib, fnp, nn, loss):
    """A jitted Adam step (lr 1e-3, JAX/optax's defaults) written out, for either library."""

    @lib.jit
    def step(params, m, v, t, x, y):
        value, grads = lib.value_and_grad(loss)(params, x, y)
        t = t + 1
        m = lib.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = lib.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        params = lib.tree_util.tree_map(
            lambda p, m, v: p - 1e-3 * (m / c1) / (fnp.sqrt(v / c2) + 1e-8), params, m, v)
        return params, m, v, t, value

    return step


def library_workloads(lib, fnp, nn, lax) -> dict:
    """C1, C2, C3, C5, C6 for flamefx or JAX: name -> a callable that runs one call."""
    def run_c1():
        params = [(fnp.asarray(w), fnp.asarray(b)) for w, b in mlp_params(MLP_SIZES)]
        x, y = (fnp.asarray(a) for a in batch(MLP_BATCH, MLP_SIZES[0], MLP_SIZES[-1]))
        step = adam_step(lib, fnp, nn, lambda p, x, y: mlp_loss(nn, fnp, p, x, y))
        zeros = lib.tree_util.tree_map(fnp.zeros_like, params)
        carry = [params, zeros, zeros, fnp.zeros((), fnp.int32)]

        def call():
            out = step(*carry, x, y)
            carry[:] = out[:4]
            return out[4].block_until_ready()
        return call

    def run_c2():
        x, w = (fnp.asarray(a) for a in tanh_data())
        f = lib.jit(lib.grad(lambda w, x: fnp.sum(fnp.tanh(x @ w))))
        return lambda: f(w, x).block_until_ready()

    def run_c3():
        x = fnp.ones(1000, fnp.float32)
        f = lib.jit(lambda x: x * 2.0 + 1.0)
        return lambda: f(x).block_until_ready()

    def run_c5():
        params = [(fnp.asarray(w), fnp.asarray(b)) for w, b in mlp_params(W6_SIZES)]
        x, y = (fnp.asarray(a) for a in batch(W6_BATCH, W6_SIZES[0], W6_SIZES[-1]))

        def loss(params, x, y):
            h = nn.relu(x @ params[0][0] + params[0][1])
            return -nn.log_softmax(h @ params[1][0] + params[1][1])[y]

        f = lib.jit(lib.vmap(lib.grad(loss), in_axes=(None, 0, 0)))
        return lambda: lib.block_until_ready(f(params, x, y))

    def run_c6():
        (wx, wh, b), xs = rnn_data()
        params = tuple(fnp.asarray(a) for a in (wx, wh, b))
        xs = fnp.asarray(xs)

        def loss(params, xs):
            wx, wh, b = params

            def cell(h, x):
                h = fnp.tanh(x @ wx + h @ wh + b)
                return h, h

            _, hs = lax.scan(cell, fnp.zeros((RNN_BATCH, RNN_HIDDEN), fnp.float32), xs)
            return fnp.mean(hs * hs)

        f = lib.jit(lib.grad(loss))
        return lambda: lib.block_until_ready(f(params, xs))

    return {"C1": run_c1, "C2": run_c2, "C3": run_c3, "C5": run_c5, "C6": run_c6}


def flamefx_c4():
    """The diffusion example's jitted training step at its defaults, carried."""
    import flamefx.numpy as fnp
    import train_diffusion as td
    from flamefx import optim, random

    policy = optim.get_policy("params=float32,compute=float32,output=float32")
    x_train, _ = td.digit_images(8, 0)
    schedule = td.cosine_schedule(200)
    optimizer = td.make_optimizer(2e-3, 50, 500)
    ema = optim.ema(0.995)
    state = [td.init_train_state(0, 16, 8, optimizer, ema)]
    step = td.make_train_step(optimizer, ema, schedule, 200, policy, 32)
    dataset = fnp.asarray(x_train)  # the step draws its batch of 32 inside the jit
    key = random.key(0)

    def call():
        state[0], loss = step(state[0], dataset, key)
        return loss.block_until_ready()
    return call


# --- the same maths by hand in NumPy (float32 throughout) --------------------------------------


def numpy_c1():
    params = [[w, b] for w, b in mlp_params(MLP_SIZES)]
    m = [[np.zeros_like(a) for a in p] for p in params]
    v = [[np.zeros_like(a) for a in p] for p in params]
    x, y = batch(MLP_BATCH, MLP_SIZES[0], MLP_SIZES[-1])
    t = [0]
    rows = np.arange(MLP_BATCH)

    def call():
        hs = [x]
        for i, (w, b) in enumerate(params):
            h = hs[-1] @ w + b
            hs.append(np.maximum(h, 0, out=h) if i < len(params) - 1 else h)
        logits = hs[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = -np.mean(shifted[rows, y] - np.log(s[:, 0]))
        g = e / s
        g[rows, y] -= 1
        g *= np.float32(1 / MLP_BATCH)
        t[0] += 1
        c1, c2 = 1 - 0.9 ** t[0], 1 - 0.999 ** t[0]
        for i in reversed(range(len(params))):
            w, b = params[i]
            grads = (hs[i].T @ g, g.sum(axis=0))
            if i:
                g = (g @ w.T) * (hs[i] > 0)
            for j, grad in enumerate(grads):
                m[i][j] = np.float32(0.9) * m[i][j] + np.float32(0.1) * grad
                v[i][j] = np.float32(0.999) * v[i][j] + np.float32(0.001) * grad * grad
                params[i][j] = params[i][j] - np.float32(1e-3) * (m[i][j] / np.float32(c1)) / (
                    np.sqrt(v[i][j] / np.float32(c2)) + np.float32(1e-8))
        return loss
    return call


def numpy_c2():
    x, w = tanh_data()

    def call():
        h = np.tanh(x @ w)
        return x.T @ (1 - h * h)
    return call


def numpy_c3():
    x = np.ones(1000, np.float32)
    return lambda: x * np.float32(2) + np.float32(1)


def numpy_c5():
    (w1, b1), (w2, b2) = mlp_params(W6_SIZES)
    x, y = batch(W6_BATCH, W6_SIZES[0], W6_SIZES[-1])
    rows = np.arange(W6_BATCH)

    def call():
        h = np.maximum(x @ w1 + b1, 0)
        logits = h @ w2 + b2
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)
        g[rows, y] -= 1
        dh = (g @ w2.T) * (h > 0)
        return (x[:, :, None] * dh[:, None, :], dh, h[:, :, None] * g[:, None, :], g)
    return call


def numpy_c6():
    (wx, wh, b), xs = rnn_data()
    scale = np.float32(2 / (RNN_SEQ * RNN_BATCH * RNN_HIDDEN))

    def call():
        hs = np.empty((RNN_SEQ + 1, RNN_BATCH, RNN_HIDDEN), np.float32)
        hs[0] = 0
        for t in range(RNN_SEQ):
            np.tanh(xs[t] @ wx + hs[t] @ wh + b, out=hs[t + 1])
        gwx, gwh, gb = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
        carry = np.zeros((RNN_BATCH, RNN_HIDDEN), np.float32)
        for t in reversed(range(RNN_SEQ)):
            h = hs[t + 1]
            dz = (carry + scale * h) * (1 - h * h)
            gwx += xs[t].T @ dz
            gwh += hs[t].T @ dz
            gb += dz.sum(axis=0)
            carry = dz @ wh.T
        return gwx, gwh, gb
    return call


NUMPY = {"C1": numpy_c1, "C2": numpy_c2, "C3": numpy_c3, "C5": numpy_c5, "C6": numpy_c6}
TITLES = {"C1": "C1 MLP Adam step 64-256-256-10 b128", "C2": "C2 grad sum(tanh(x@w)) 256x512x512",
          "C3": "C3 tiny jit x*2+1, 1000 floats (us)", "C4": "C4 diffusion train step (defaults)",
          "C5": "C5 per-example grads 784-256-10 b128", "C6": "C6 scan RNN grad seq100 h128"}


# --- running ---------------------------------------------------------------------------------


def blas_info() -> str:
    from threadpoolctl import threadpool_info
    infos = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
             f"threads={i.get('num_threads')}" for i in threadpool_info()
             if i.get("user_api") == "blas"]
    return "; ".join(infos) or "no BLAS found"


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def with_busy_core(fn):
    """``fn()`` while another process keeps one core busy (killed right after)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        return fn()
    finally:
        busy.kill()
        busy.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="C1,C2,C3,C4,C5,C6")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    only = args.only.split(",")

    import flamefx
    import flamefx.numpy as fnp
    from flamefx import lax, nn
    flamefx_runs = library_workloads(flamefx, fnp, nn, lax)
    flamefx_runs["C4"] = flamefx_c4
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_default_matmul_precision", "highest")
        jax_runs = library_workloads(jax, jnp, jax.nn, jax.lax)
    except ImportError:
        jax_runs = {}

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; BLAS: {blas_info()}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")
    rows = []
    for name in only:
        before = load()
        t = lambda make: median_ms(make(), repeats=args.repeats)  # noqa: E731
        fx = t(flamefx_runs[name])
        jx = t(jax_runs[name]) if name in jax_runs else None
        npy = t(NUMPY[name]) if name in NUMPY else None
        busy = with_busy_core(lambda: t(flamefx_runs[name])) if args.busy else None
        rows.append((name, fx, jx, npy, busy, before))
        print(_row(rows[-1]), flush=True)
    table = "\n".join([HEADER] + [_row(r) for r in rows])
    print()
    print(table)
    if args.append:
        _append(table, args.note)


HEADER = ("| workload | flamefx | JAX | NumPy by hand | flamefx/JAX | flamefx/NumPy | "
          "flamefx, one core busy (x quiet) | load before |\n|---|---|---|---|---|---|---|---|")


def _row(row) -> str:
    name, fx, jx, npy, busy, before = row
    scale, unit = (1e3, " us") if name == "C3" else (1, " ms")

    def fmt(v):
        return "-" if v is None else f"{v * scale:.3f}{unit}"
    ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}"  # noqa: E731
    busy_text = "-" if busy is None else f"{fmt(busy)} ({busy / fx:.2f}x)"
    return (f"| {TITLES[name]} | {fmt(fx)} | {fmt(jx)} | {fmt(npy)} | {ratio(fx, jx)} | "
            f"{ratio(fx, npy)} | {busy_text} | {before.split(' ', 1)[1]} |")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _append(table: str, note: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n\n### bench_cpu.py — {stamp}, {cpu_model()}, "
            f"{os.cpu_count()} cores, {blas_info()}\n\n{note}\n\n{table}\n")
    with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
