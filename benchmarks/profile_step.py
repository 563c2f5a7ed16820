"""Where the W1 step's time goes on the GPU: first-call phases, then each planned launch.

    python benchmarks/profile_step.py             # W1 (MLP Adam step), float32
    python benchmarks/profile_step.py --top 25

Prints (1) the first call split into import, building the inputs, tracing + optimizing,
planning + loading kernels, the first run; (2) steady-state ms per step, kernel by kernel
vs CUDA-graph replay (with why capture failed, if it did); (3) the top launches by GPU
time (CUDA events around each launch of one call) with their kind (fused kernel / gemm /
cuda_impl of which primitive), shapes and host launch cost, and the totals per kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

start = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_training
import harness

import flamefx
from flamefx.devices import cupy


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
    def run():
        carry[0], carry[1], value = step(carry[0], carry[1], x, y)
        return value
    times = {}
    for graphs in (False, True):
        with flamefx.config.override("cuda_graphs", graphs):
            times["cuda graphs" if graphs else "kernel by kernel"] = harness.time_calls(
                run, harness.flamefx_sync, n=n, repeats=7, warmup=5)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=15)
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

    report = step.profile(carry[0], carry[1], x, y)
    total_gpu = sum(r["gpu_ms"] for r in report)
    total_host = sum(r["host_us"] for r in report) / 1e3
    print(f"\nW1 launches: {len(report)} steps, GPU {total_gpu:.3f} ms (events around each "
          f"launch), host {total_host:.3f} ms launching")
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
        print(f"  {r['step']:4d} {r['kind']:10s} {r['gpu_ms']:8.4f} {r['host_us']:8.1f}  "
              f"{r['details']}")


if __name__ == "__main__":
    main()
