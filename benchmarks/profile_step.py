"""Where the W1 step's time goes on the GPU: first-call phases, then each planned launch.

    python benchmarks/profile_step.py             # W1 (MLP Adam step), float32
    python benchmarks/profile_step.py --top 25

Prints (1) the first call split into import, building the inputs, tracing + optimizing,
planning + loading kernels, the first run; (2) steady-state ms per step, kernel by kernel
vs CUDA-graph replay (with why capture failed, if it did), and where a graph-mode step's
time goes: the host's cost of one call (queued while the GPU is held, so it is the host
alone), the GPU time of the argument copy-in and of one graph replay; (3) the top launches
by GPU time with their kind (fused kernel / gemm / cuda_impl of which primitive), shapes
and host launch cost, and the totals per kind. GPU times are taken with the stream held by
a delay kernel while the host queues, so they exclude host gaps (a launch marked '!' was
queued after the hold ended, or waited for the GPU itself: it synchronizes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# The clock starts before flamefx is imported (phase one times the import), and the sibling
# benchmark modules are importable only once this folder is on sys.path.
start = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_training  # noqa: E402
import harness  # noqa: E402

import flamefx  # noqa: E402
from flamefx.devices import cupy  # noqa: E402


def _timed(label, fn, phases):
    t = time.perf_counter()
    out = fn()
    phases.append((label, time.perf_counter() - t))
    return out


def first_call_phases():
    """Builds W1 and runs its first call, timing each phase; returns (phases, parts)."""
    phases = [("import flamefx", time.perf_counter() - start)]
    cp = _timed("import cupy + CUDA context", lambda: cupy().zeros(1), phases)
    del cp
    step, carry, x, y = _timed("build params, Adam state, data (eager)",
                               lambda: bench_training.flamefx_w1_parts(), phases)
    args = (carry[0], carry[1], x, y)
    entry, _, device = _timed("trace + optimize (jaxpr passes)",
                              lambda: step._lookup(args, {}), phases)
    _timed("plan fused kernels + load/compile modules",
           lambda: entry.program.executable(device), phases)
    _timed("first call + sync", lambda: harness.flamefx_sync(step(*args)), phases)
    return phases, (step, carry, x, y)


def steady_state(step, carry, x, y, n=50) -> dict[str, float]:
    run = harness.carried(step, carry, x, y)
    times = {}
    for graphs in (False, True):
        with flamefx.config.override("cuda_graphs", graphs):
            times["cuda graphs" if graphs else "kernel by kernel"] = harness.time_calls(
                run, harness.flamefx_sync, n=n, repeats=7, warmup=5)
    return times


def graph_mode_split(step, carry, x, y, n=20) -> dict[str, float]:
    """Host ms per graph-mode call (queued behind a held GPU) and the GPU ms of one replay."""
    from flamefx.kernels import executor

    run = harness.carried(step, carry, x, y)
    for _ in range(4):  # both graphs captured
        run()
    harness.flamefx_sync(run())
    executor.hold_gpu(100.0 + 5.0 * n)
    t = time.perf_counter()
    for _ in range(n):
        out = run()
    host_ms = (time.perf_counter() - t) * 1e3 / n
    harness.flamefx_sync(out)
    replay = step.profile(carry[0], carry[1], x, y, graph=True) or {}
    return {"host per call (GPU held)": host_ms,
            "GPU: argument copy-in": replay.get("copy_in_ms", float("nan")),
            "GPU: one graph replay": replay.get("replay_ms", float("nan"))}


def w6_split(top: int) -> None:
    """W6 (per-example gradients): ms per call with and without the outer-product rewrite
    (passes.expand_outer_products), and its top launches by GPU time."""
    import bench_training as bt

    import flamefx.numpy as fnp
    from flamefx import nn
    from flamefx.transforms import passes
    params, x, y = bt._inputs(bt.W6_SIZES, bt.W6_BATCH, fnp.asarray)

    def loss(params, x, y):
        h = nn.relu(x @ params[0][0] + params[0][1])
        return nn.softmax_cross_entropy_with_integer_labels(h @ params[1][0] + params[1][1], y)

    print("\nW6 per-example grads (ms per call):")
    default = passes.EXPAND_OUTER_PRODUCTS
    for expand in (False, True):
        passes.EXPAND_OUTER_PRODUCTS = expand
        f = flamefx.jit(flamefx.vmap(flamefx.grad(loss), in_axes=(None, 0, 0)))
        ms = harness.time_calls(lambda f=f: f(params, x, y), harness.flamefx_sync, n=20,
                                warmup=5)
        label = "outer products fused" if expand else "outer products on cuBLAS"
        print(f"  {label:28s} {ms:8.3f}")
        report = f.profile(params, x, y)
        for r in sorted(report, key=lambda r: -r["gpu_ms"])[:top]:
            flag = " " if r["exact"] else "!"
            print(f"    {r['step']:4d} {r['kind']:10s} {r['gpu_ms']:8.4f}{flag}"
                  f"{r['host_us']:8.1f}  {r['details']}")
    passes.EXPAND_OUTER_PRODUCTS = default


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    harness.configure_precision()
    phases, (step, carry, x, y) = first_call_phases()
    print("W1 first call, by phase (seconds):")
    for label, seconds in phases:
        print(f"  {label:45s} {seconds:8.3f}")
    print(f"  {'total':45s} {sum(s for _, s in phases):8.3f}")

    times = steady_state(step, carry, x, y)
    entry, _, device = step._lookup((carry[0], carry[1], x, y), {})
    exe = entry.program.executable(device)
    print("\nW1 steady state (ms per step):")
    for label, ms in times.items():
        print(f"  {label:20s} {ms:8.3f}")
    print(f"  graphs captured: {len(exe.graphs)}"
          + (f"; capture failed: {exe.capture_error}" if exe.capture_error else ""))
    print(f"  calls run kernel by kernel (no graph ready): {exe.calls}; replays per graph: "
          + ", ".join(f"{g.replays}{' (copies out)' if g.copy_out else ''}"
                      for g in exe.graphs))
    for i, g in enumerate(exe.graphs):
        changed = g.holders_changed()
        if changed:
            print(f"  graph {i}: {len(changed)} outputs held now (index, baseline refcounts, "
                  f"now): {changed[:3]}")

    print("\nW1 graph mode, where a step goes (ms):")
    for label, ms in graph_mode_split(step, carry, x, y).items():
        print(f"  {label:28s} {ms:8.3f}")

    report = step.profile(carry[0], carry[1], x, y)
    total_gpu = sum(r["gpu_ms"] for r in report)
    total_host = sum(r["host_us"] for r in report) / 1e3
    inexact = sum(not r["exact"] for r in report)
    print(f"\nW1 launches: {len(report)} steps, GPU {total_gpu:.3f} ms (back to back, GPU "
          f"held while queued; {inexact} inexact), host {total_host:.3f} ms launching")
    by_kind: dict[str, list[float]] = {}
    for r in report:
        acc = by_kind.setdefault(r["kind"], [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += r["gpu_ms"]
        acc[2] += r["host_us"]
    for kind, (count, gpu, host) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:10s} x{count:3d}  GPU {gpu:8.3f} ms  host {host / 1e3:8.3f} ms")
    print(f"\nTop {args.top} launches by GPU time:")
    print(f"  {'step':>4} {'kind':10s} {'gpu ms':>8} {'host us':>8}  details")
    for r in sorted(report, key=lambda r: -r["gpu_ms"])[:args.top]:
        flag = " " if r["exact"] else "!"
        print(f"  {r['step']:4d} {r['kind']:10s} {r['gpu_ms']:8.4f}{flag}{r['host_us']:8.1f}  "
              f"{r['details']}")
    w6_split(top=6)


if __name__ == "__main__":
    main()
