"""Timing rules shared by every benchmark (see BENCHMARKS.md).

Warm up first, then the median of >= 7 repeats of ``n`` back-to-back calls with one device
sync at the end of each repeat. Each system registers a ``sync`` so the timer waits for its
queued GPU work.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_calls(fn: Callable[[], object], sync: Callable[[object], None], n: int = 10,
               repeats: int = 7, warmup: int = 3) -> float:
    """Median milliseconds per call of ``fn`` over ``repeats`` runs of ``n`` calls."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(out)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            out = fn()
        sync(out)
        samples.append((time.perf_counter() - start) * 1e3 / n)
    return statistics.median(samples)


def carried(step, carry: list, *data) -> Callable[[], object]:
    """The timed call of a training step: ``step(*carry, *data)`` returns the new carry (the
    parameters, optimizer state...) followed by the loss; the carry is kept in ``carry`` for
    the next call and the loss is returned.

    >>> run = carried(step, [params, opt_state], x, y)   # doctest: +SKIP
    """
    def run():
        out = step(*carry, *data)
        carry[:] = out[:-1]
        return out[-1]
    return run


def flamefx_sync(out) -> None:
    import flamefx
    flamefx.block_until_ready(out)


def jax_sync(out) -> None:
    import jax
    jax.block_until_ready(out)


def torch_sync(out) -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def try_import(name: str):
    try:
        return __import__(name)
    except Exception:
        return None


def configure_precision() -> None:
    """float32 everywhere, TF32 off, for every system that is present."""
    jax = try_import("jax")
    if jax is not None:
        jax.config.update("jax_default_matmul_precision", "highest")
    torch = try_import("torch")
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


class Table:
    """Collects rows and prints: workload, each system's median, flamefx/JAX, floor."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, workload: str, flamefx_ms=None, jax_ms=None, torch_ms=None,
            floor_ms=None, unit: str = "ms") -> None:
        self.rows.append(dict(workload=workload, flamefx=flamefx_ms, jax=jax_ms,
                              torch=torch_ms, floor=floor_ms, unit=unit))

    def render(self) -> str:
        def fmt(v, unit):
            return "-" if v is None else (f"{v * 1e3:.1f} us" if unit == "us" else f"{v:.3f}")
        lines = ["| workload | flamefx ms | JAX ms | PyTorch ms | flamefx/JAX | floor ms | "
                 "flamefx/floor |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            ratio = (f"{r['flamefx'] / r['jax']:.2f}" if r["flamefx"] and r["jax"] else "-")
            to_floor = (f"{r['flamefx'] / r['floor']:.1f}x" if r["flamefx"] and r["floor"]
                        else "-")
            lines.append(f"| {r['workload']} | {fmt(r['flamefx'], r['unit'])} | "
                         f"{fmt(r['jax'], r['unit'])} | {fmt(r['torch'], r['unit'])} | {ratio} | "
                         f"{fmt(r['floor'], 'ms')} | {to_floor} |")
        return "\n".join(lines)


# Measured limits of the H100 (BENCHMARKS.md): used for each workload's floor.
F32_FLOPS = 51e12
BF16_FLOPS = 800e12
COPY_BYTES_PER_S = 2.9e12


def floor_ms(flops: float = 0.0, bytes_moved: float = 0.0, flops_rate: float = F32_FLOPS) -> float:
    return max(flops / flops_rate, bytes_moved / COPY_BYTES_PER_S) * 1e3


def safe(run: Callable[[], float]):
    """Runs one system's timing; a failure prints and yields None instead of aborting."""
    try:
        return run()
    except Exception as e:  # a missing system or a failed run must not hide the others
        print(f"  (skipped: {type(e).__name__}: {str(e)[:200]})")
        return None
