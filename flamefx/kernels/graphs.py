"""CUDA graphs of GPU executables: one captured call replayed with one launch.

``capture`` records one call of a ``GpuExecutable`` (flamefx/kernels/executor.py) into a
CUDA graph; ``GraphReplay`` replays it while that is safe: the arguments it reads in place
sit where they were at capture and nobody holds its previous outputs (``holders_of``
counts references). Staged arguments are copied in by one generated kernel
(``copy_source``).

>>> "flamefx_copy_in" in copy_source(2)
True
"""

from __future__ import annotations

import functools
import logging
import sys

import numpy as np

from flamefx.devices import cupy
from flamefx.kernels.cuda_scalar import empty

log = logging.getLogger("flamefx.jit")


def copy_source(count: int) -> str:
    """A kernel that copies ``count`` buffers in one launch (a graph's staged arguments:
    one memcpy each costs a few microseconds of GPU time however small): grid row ``c``
    copies buffer ``c``, 16 bytes per thread where both ends are aligned. The row picks its
    buffer through a switch: an array indexed by blockIdx.y would live in local memory,
    written by every thread (that made W1's copy-in 1.5 ms)."""
    params = ", ".join(f"unsigned long long s{c}, unsigned long long d{c}, long long n{c}"
                       for c in range(count))
    cases = "\n".join(f"    case {c}: src = s{c}; dst = d{c}; n = n{c}; break;"
                      for c in range(count))
    return f"""
extern "C" __global__ void flamefx_copy_in({params}) {{
  unsigned long long src = 0, dst = 0;
  long long n = 0;
  switch (blockIdx.y) {{
{cases}
  }}
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long done = 0;
  if (((src | dst) & 15) == 0) {{
    const long long words = n >> 4;
    const uint4* from = (const uint4*)src;
    uint4* to = (uint4*)dst;
    for (long long w = start; w < words; w += stride) to[w] = from[w];
    done = words << 4;
  }}
  for (long long b = done + start; b < n; b += stride) ((char*)dst)[b] = ((const char*)src)[b];
}}
"""



@functools.cache
def _copy_kernel(count: int):
    return cupy().RawModule(code=copy_source(count)).get_function("flamefx_copy_in")


class ReplayOrder:
    """Keeps the replays of one executable's graphs in order: they share intermediate
    memory. A replay launches on the caller's current stream, so a loop on one stream
    needs no event between its steps (each cross-stream wait costs the GPU a few
    microseconds); a replay on another stream than the last one first waits for it."""

    def __init__(self):
        self.stream = None  # where the last replay (or capture) ran
        self.done = cupy().cuda.Event(disable_timing=True)

    def join(self, stream) -> None:
        if self.stream is not None and self.stream != stream.ptr:
            stream.wait_event(self.done)

    def leave(self, stream) -> None:
        self.done.record(stream)
        self.stream = stream.ptr


class GraphReplay:
    """A whole call captured as a CUDA graph, replayed with one launch.

    The graph reads each argument either in place (``direct``: another graph's output
    handed back in; ``stable``: an argument that sat at the same address call after call;
    either must be at the address it had at capture) or from a private staging buffer the
    argument is copied into, and writes fixed output buffers. So it may only replay while
    the in-place arguments sit where they were and nobody holds the previous call's
    outputs (they were dropped, or donated back in): ``ready()`` checks exactly that, and
    a call that finds them otherwise runs another graph or the plain executable. Scalar
    outputs are the exception: each replay copies them into fresh arrays, so a caller may
    keep them (the losses of the last steps, to read later). Its
    staging and output buffers come from its own pool (``pool``), which lives as long as
    the graph, so nothing else can be handed a block the graph writes to; its other
    intermediates from the pool its executable's graphs share (``pools`` holds both): they
    replay one after the other (``order``), on the caller's stream.
    """

    def __init__(self, graph, order, pools, inputs, direct, stable, outs, copy_out=False):
        self.graph, self.order, self.pools = graph, order, pools
        self.pool = pools[0]
        self.copy_out = copy_out  # outputs copied into fresh buffers: always ready
        self.replays = 0
        # Set once a later graph reads this one's outputs in place: then this one is
        # captured again to read that graph's outputs in place (GpuExecutable._recapture).
        self.recapturable = False
        self.outs = outs
        # Scalar outputs (a loss, a step count, metrics) are copied into fresh arrays on
        # every replay: a loop that keeps them to read later, without waiting for the GPU,
        # would otherwise leave both output-owning graphs unready every step, and every
        # call would replay the graph that copies all its outputs out.
        self.scalars = frozenset() if copy_out else frozenset(
            j for j, o in enumerate(outs) if o.size == 1)
        self.inputs = inputs  # what the graph reads: staging buffers and in-place arguments
        self.direct = [(i, inputs[i].data.ptr) for i in sorted(direct)]
        self.stable = [(i, inputs[i].data.ptr) for i in sorted(stable)]
        self.in_place = self.direct + self.stable
        in_place = set(direct) | set(stable)
        self.copies = [(i, st.data.ptr, st.nbytes) for i, st in enumerate(inputs)
                       if i not in in_place and st.nbytes]
        for i in in_place:  # the graph must not keep a caller's argument alive
            inputs[i] = None
        self.copy_kernel = None
        if len(self.copies) > 1:
            self.copy_kernel = _copy_kernel(len(self.copies))
            largest = max(nbytes for _, _, nbytes in self.copies)
            self.copy_grid = (min(-(-largest // (16 * 256)), 2048), len(self.copies))
        self.baseline = None
        cp = cupy()
        self.memcpy = cp.cuda.runtime.memcpyAsync
        self.device_to_device = cp.cuda.runtime.memcpyDeviceToDevice

    def reads(self, bufs) -> bool:
        """Whether the in-place arguments in ``bufs`` sit where the graph reads them."""
        for i, ptr in self.in_place:
            if bufs[i].data.ptr != ptr or not bufs[i].flags.c_contiguous:
                return False
        return True

    def ready(self, bufs, donated) -> bool:
        return self.reads(bufs) and self.outputs_free(bufs, donated)

    def outputs_free(self, bufs=(), donated=()) -> bool:
        """Whether nobody but the graph holds the outputs of its last replay, so the next
        one may overwrite them (``bufs``, ``donated``: outputs handed back in donated)."""
        if self.copy_out:
            return True
        if self.baseline is None:  # first use: nobody but the replay holds the outputs yet
            self.baseline = holders_of(self.outs)
            return True
        # An output handed back in through donation may be overwritten (the caller deletes
        # its Array); it must just have no views, which would share its memory.
        donated_ids = {id(bufs[i]) for i in donated}
        for j, (o, base, held) in enumerate(zip(self.outs, self.baseline,
                                                holders_of(self.outs))):
            if j in self.scalars:  # never handed out
                continue
            if id(o) in donated_ids:
                held, base = held[1:], base[1:]
            if held != base:
                return False
        return True

    def copy_in(self, bufs, stream) -> None:
        """Queues on ``stream`` the copies of the staged arguments into the buffers the graph
        reads (in-place arguments are read where they are)."""
        cp = cupy()
        sources = []
        for i, _, _ in self.copies:
            src = bufs[i]
            sources.append(src if src.flags.c_contiguous else cp.ascontiguousarray(src))
        if self.copy_kernel is not None:
            args = []
            for src, (_, dst, nbytes) in zip(sources, self.copies):
                args += (np.uint64(src.data.ptr), np.uint64(dst), np.int64(nbytes))
            self.copy_kernel(self.copy_grid, (256,), tuple(args))
            return
        for src, (_, dst, nbytes) in zip(sources, self.copies):
            self.memcpy(dst, src.data.ptr, nbytes, self.device_to_device, stream.ptr)

    def __call__(self, bufs) -> list:
        stream = cupy().cuda.get_current_stream()
        self.order.join(stream)
        self.copy_in(bufs, stream)
        self.graph.launch(stream)
        self.replays += 1
        outs = list(self.outs)
        for j in range(len(outs)) if self.copy_out else self.scalars:
            outs[j] = empty(outs[j].shape, outs[j].dtype)
            if outs[j].nbytes:
                self.memcpy(outs[j].data.ptr, self.outs[j].data.ptr, outs[j].nbytes,
                            self.device_to_device, stream.ptr)
        self.order.leave(stream)
        return outs

    def holders_changed(self) -> list[tuple]:
        """(output index, baseline, now) for each output whose holders differ from the
        baseline: who keeps ``ready()`` false (for profiles)."""
        if self.baseline is None or self.copy_out:
            return []
        return [(i, base, now) for i, (base, now) in
                enumerate(zip(self.baseline, holders_of(self.outs)))
                if now != base and i not in self.scalars]


def _holders(buf) -> tuple:
    """Reference counts that change when anyone else holds ``buf`` or a view of it."""
    return sys.getrefcount(buf), sys.getrefcount(buf.data), sys.getrefcount(buf.data.mem)


def holders_of(bufs: list) -> list[tuple]:
    # Always counted the same way: a loop such as ``for o, b in zip(outs, ...)`` would add
    # a reference of its own (zip keeps its last tuple), so baseline and check could never
    # agree.
    return [_holders(bufs[i]) for i in range(len(bufs))]


class _CaptureAllocator:
    """Where a capture's memory comes from. Staging buffers and the steps that write the
    call's outputs use the graph's own pool, which only this graph (and its recapture)
    allocates from: no other capture is handed a block this graph keeps. Other steps'
    intermediates use the pool the executable's graphs share: they are dead between
    replays, which run one at a time on one stream. An output that still lands in a shared
    block (a view of an intermediate) is caught after the capture (``shared_blocks``)."""

    def __init__(self, own, shared, output_steps):
        self.own, self.shared, self.output_steps = own, shared, output_steps
        self.pool = own
        self.shared_blocks: set[int] = set()

    def step(self, k: int) -> None:
        self.pool = self.own if k in self.output_steps else self.shared

    def malloc(self, size: int):
        mem = self.pool.malloc(size)
        if self.pool is not self.own:
            self.shared_blocks.add(mem.mem.ptr)
        return mem


def capture(exe, bufs, copy_out: bool = False, direct=(), stable=(),
             replacing: GraphReplay | None = None,
             share: bool = True) -> GraphReplay | None:
    """Captures one call of ``exe`` reading the arguments at positions ``direct`` and
    ``stable`` in place (the others from staging copies); None when some step cannot be
    captured. ``replacing``: a graph of ``exe`` whose staging and output buffers (and own
    pool) the new one takes over, so the graphs that read its outputs in place still find
    them; it must be ready (nobody holds its outputs)."""
    cp = cupy()
    if exe.graph_stream is None:
        exe.graph_stream = cp.cuda.Stream(non_blocking=True)
        exe.graph_pool = cp.cuda.MemoryPool()
        exe.replay_order = ReplayOrder()
    stream = exe.graph_stream
    exe.replay_order.join(stream)  # the dry run reuses the replays' intermediates
    own = cp.cuda.MemoryPool() if replacing is None else replacing.pool
    allocator = _CaptureAllocator(own, exe.graph_pool if share else own, exe.output_steps)
    in_place = set(direct) | set(stable)
    into = None
    if replacing is not None:
        kept = set(exe.slots.in_slots)
        into = {s: o for s, o in zip(exe.slots.out_slots, replacing.outs)
                if s not in kept and exe.slots.template[s] is None}
    try:
        # GEMMs (kernels/cublas.py) set cuBLAS's stream to the current one on every call.
        with cp.cuda.using_allocator(allocator.malloc), stream:
            stream.wait_event(cp.cuda.get_current_stream().record())
            inputs = list(bufs)
            for i, b in enumerate(bufs):
                if i in in_place:
                    continue
                staged = replacing.inputs[i] if replacing is not None else None
                inputs[i] = empty(b.shape, b.dtype) if staged is None else staged
                b = b if b.flags.c_contiguous else cp.ascontiguousarray(b)
                cp.cuda.runtime.memcpyAsync(inputs[i].data.ptr, b.data.ptr, b.nbytes,
                                            cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)
            # A dry run fills the pools with every block the capture will ask for.
            # Intermediates go back to their pool after their last use, so later steps of
            # the graph reuse their blocks (the stream runs the steps in order), and the
            # pools, which only captures allocate from, keep them for the graph's
            # lifetime: the graphs hold one step's peak memory, not the sum of their
            # intermediates.
            exe.run_steps(inputs, on_step=allocator.step, into=into)
            stream.synchronize()
            allocator.shared_blocks.clear()
            stream.begin_capture()
            try:
                outs = exe.run_steps(inputs, on_step=allocator.step, into=into)
            finally:
                graph = stream.end_capture()
    except Exception as e:  # noqa: BLE001  (CuPy or the driver refused: run without a graph)
        exe.capture_error = f"{type(e).__name__}: {e}"
        log.info("CUDA graph capture failed (%s); running the plain executable",
                 exe.capture_error)
        return None
    # An output that is a view of an argument read in place would hand the caller's own
    # memory back as the graph's: stage such arguments. One in a shared block could be
    # overwritten by another graph's intermediates: keep all of this graph's memory own.
    aliased = {i for i in in_place
               if any(o.nbytes and o.data.mem is bufs[i].data.mem for o in outs)}
    if aliased:
        return capture(exe, bufs, copy_out, [i for i in direct if i not in aliased],
                        [i for i in stable if i not in aliased], replacing, share)
    if share and any(o.nbytes and o.data.mem.ptr in allocator.shared_blocks for o in outs):
        return capture(exe, bufs, copy_out, direct, stable, replacing, share=False)
    pools = [own] if own is allocator.shared else [own, exe.graph_pool]
    if replacing is not None:
        # The very list, not one holding the same buffers: the holder counts of the
        # outputs, which ready() compares with its baseline, must not change when the old
        # graph goes (and a loop variable may keep it alive a while).
        outs = replacing.outs
    exe.replay_order.leave(stream)
    return GraphReplay(graph, exe.replay_order, pools, inputs, direct, stable, outs, copy_out)
