"""Executables: an optimized jaxpr turned into a fast call on one device.

``CpuExecutable`` runs the equations with the primitives' NumPy impls, resolved once, over a
flat list of slots (no ``bind``, no tracing, no per-equation dict lookups): the plain CPU
path. jit compiles a ``CpuPlan`` instead (flamefx/kernels/cpu_plan.py: bound ufunc/BLAS
calls into reused buffers), which falls back to this executable when re-entered; the
environment variable FLAMEFX_CPU_PLAN=plain makes jit compile this one. The GPU
executable (``GpuExecutable``) groups elementwise chains into generated CUDA kernels
(flamefx/kernels/fusion.py), plans buffers, honours donation and can replay a whole call
as a CUDA graph (flamefx/kernels/graphs.py).

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: x * 2.0 + 1.0)(fnp.ones(3))
>>> run = CpuExecutable(closed.jaxpr)
>>> [b.tolist() for b in run([np.ones(3, np.float32)])]
[[3.0, 3.0, 3.0]]
"""

from __future__ import annotations

import functools
import logging
import os
from time import perf_counter as _perf_counter

import numpy as np

from flamefx import config, dtypes
from flamefx.devices import cupy
from flamefx.jaxpr import Jaxpr, Literal
from flamefx.kernels import fusion, gemm_epilogue
from flamefx.kernels.graphs import GraphReplay, capture, holders_of

log = logging.getLogger("flamefx.jit")

# CUDA graphs captured per executable at most (each owns a copy of every output buffer):
# two that hand out their own output buffers and take turns, and a last one that copies
# its outputs into fresh buffers, so it can always replay (a call never falls back to
# launching kernel by kernel, whose host cost is many times a replay's).
MAX_GRAPHS = 3


class SlotPlan:
    """Numbers every value of a program with a slot; literals get pre-filled slots.

    ``steps_io`` lists (input atoms, output vars) per step. ``template`` is the initial slot
    list (literal buffers in place); ``release[k]`` are the slots step ``k`` is the last to
    read, so they are dropped (and their memory reused) right after it. ``input_last_use``
    gives the same for arguments, which only donation lets a program release.
    """

    def __init__(self, invars, steps_io, outvars, literal_buffer):
        self.index: dict[int, int] = {}
        self.template: list = []
        self._literal_buffer = literal_buffer
        self.in_slots = [self.slot(v) for v in invars]
        self.step_ins = [[self.slot(v) for v in ins] for ins, _ in steps_io]
        self.step_outs = [[self.slot(v) for v in outs] for _, outs in steps_io]
        self.out_slots = [self.slot(v) for v in outvars]
        n_steps = len(steps_io)
        last_use = [-1] * len(self.template)
        for k, ins in enumerate(self.step_ins):
            for s in ins:
                last_use[s] = k
        for s in self.out_slots:
            last_use[s] = n_steps
        self.input_last_use = [last_use[s] for s in self.in_slots]
        protected = set(self.in_slots) | {s for s, b in enumerate(self.template) if b is not None}
        self.release = [[] for _ in range(n_steps)]
        for s, last in enumerate(last_use):
            if s not in protected and 0 <= last < n_steps:
                self.release[last].append(s)
        for k, outs in enumerate(self.step_outs):  # written, never read: drop at once
            self.release[k] += [s for s in outs if last_use[s] == -1]

    def slot(self, v) -> int:
        if isinstance(v, Literal):
            self.template.append(self._literal_buffer(v))
            return len(self.template) - 1
        s = self.index.get(v.id)
        if s is None:
            s = self.index[v.id] = len(self.template)
            self.template.append(None)
        return s


def _cpu_literal(v: Literal) -> np.ndarray:
    return np.asarray(v.val.buffer if isinstance(v.val.buffer, np.ndarray) else v.val.buffer.get())


class CpuExecutable:
    """Runs a (hoisted, const-free) jaxpr with NumPy impls over pre-resolved slots."""

    platform = "cpu"

    def __init__(self, jaxpr: Jaxpr):
        if jaxpr.constvars:
            raise ValueError("CpuExecutable takes a jaxpr with its constants hoisted to invars")
        self.jaxpr = jaxpr
        plan = SlotPlan(jaxpr.invars, [(e.invars, e.outvars) for e in jaxpr.eqns],
                        jaxpr.outvars, _cpu_literal)
        self.plan = plan
        self.steps = [(eqn.prim.impl_for("cpu"), tuple(plan.step_ins[k]), tuple(plan.step_outs[k]),
                       eqn.params, tuple(v.aval.dtype for v in eqn.outvars), tuple(plan.release[k]))
                      for k, eqn in enumerate(jaxpr.eqns)]

    @property
    def kernel_count(self) -> int:
        return len(self.steps)

    def __call__(self, bufs, donated=()) -> list:
        # Donation buys nothing on the CPU: NumPy impls allocate their outputs anyway.
        env = self.plan.template.copy()
        for s, b in zip(self.plan.in_slots, bufs):
            env[s] = b
        for impl, ins, outs, params, out_dtypes, release in self.steps:
            results = impl(*[env[s] for s in ins], **params)
            for s, r, dt in zip(outs, results, out_dtypes):
                if type(r) is not np.ndarray:
                    r = np.asarray(r)
                if r.dtype != dt:
                    r = r.astype(dt)
                env[s] = r
            for s in release:
                env[s] = None
        return [env[s] for s in self.plan.out_slots]


# --- the GPU ------------------------------------------------------------------------------

# Generated kernels go to CuPy's on-disk cache (keyed by their source), so a second process
# loads them instead of compiling. Respect a user's own choice of directory.
os.environ.setdefault("CUPY_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache",
                                                     "flamefx", "kernels"))


@functools.cache
def _module(source: str):
    return cupy().RawModule(code=source)


_HOLD_SOURCE = r"""
extern "C" __global__ void flamefx_hold(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(10000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
"""


def hold_gpu(ms: float) -> None:
    """Keeps the current stream busy for ``ms`` milliseconds (one thread sleeping), so that
    work queued behind it runs back to back: profiles time kernels without host gaps."""
    kernel = _module(_HOLD_SOURCE).get_function("flamefx_hold")
    kernel((1,), (1,), (np.uint64(ms * 1e6),))


def _empty(cp, shape, dtype):
    if dtype == dtypes.bfloat16:
        return cp.empty(shape, dtype=np.uint16).view(dtypes.bfloat16)
    return cp.empty(shape, dtype=dtype)


class _FusedLaunch:
    """One fused kernel (and the finishing kernel of a split reduction), ready to launch."""

    __slots__ = ("block", "finish", "finish_grid", "grid", "kernel", "out_specs", "partial")

    def __init__(self, fused: fusion.FusedKernel):
        module = _module(fused.source)
        self.kernel = module.get_function(fused.name)
        self.out_specs = [(v.aval.shape, v.aval.dtype) for v in fused.outputs]
        block = fusion.BLOCK
        self.block = (block,)
        if fused.reduction is None:
            # One thread per element, no cap: short-lived blocks write big outputs faster
            # than a capped grid-stride loop (H100, W6's 822 MB outer product: 0.265
            # against 0.288 ms at SMs x 32 blocks). The kernels loop, so any grid works.
            blocks = max(1, -(-fused.total // block))
            self.grid, self.finish, self.partial = (blocks, fused.components), None, None
        else:
            if fused.layout == "columns":
                self.grid = (fused.tiles, fused.split)
                self.block = (32, fusion.COLUMN_ROWS)
            else:
                self.grid = (fused.split, min(max(fused.outer, 1), 65535))
            if fused.split > 1:
                self.finish = module.get_function(fused.name + "_finish")
                self.finish_grid = (min(max(fused.outer, 1), 65535),)
                self.partial = ((fused.outer, fused.split), fused.partial_dtype)
            else:
                self.finish, self.partial = None, None

    def __call__(self, cp, args: list, free: dict | None, targets: list | None = None) -> list:
        outs = []
        for j, (shape, dtype) in enumerate(self.out_specs):
            if targets and targets[j] is not None:
                outs.append(targets[j])
                continue
            reused = free.get((shape, dtype)) if free else None
            outs.append(reused.pop() if reused else _empty(cp, shape, dtype))
        if self.finish is None:
            self.kernel(self.grid, self.block, tuple(args + outs))
        else:
            part = cp.empty(*self.partial)
            self.kernel(self.grid, self.block, tuple(args + outs[:-1] + [part]))
            self.finish(self.finish_grid, (fusion.BLOCK,), (part, outs[-1]))
        return outs


class _OpaqueLaunch:
    """One equation through its primitive's cuda_impl."""

    __slots__ = ("impl", "out_dtypes", "params")

    def __init__(self, eqn):
        self.impl = eqn.prim.impl_for("gpu")
        self.params = eqn.params
        self.out_dtypes = [v.aval.dtype for v in eqn.outvars]

    def __call__(self, cp, args: list, free, targets=None) -> list:
        # A cuda_impl allocates its own outputs: given buffers are filled after the call.
        outs = self.impl(*args, **self.params)
        return [o if o.dtype == dt else o.astype(dt) for o, dt in zip(outs, self.out_dtypes)]


class GpuExecutable:
    """Runs a jaxpr on the GPU: fused kernels, cuda_impls for the rest, planned buffers.

    Each intermediate is dropped right after its last use, so CuPy's pool hands its block
    to the next allocation of that size within the call; donated arguments join that pool
    once nothing reads them, so outputs (e.g. new parameters) land in the old buffers.
    """

    platform = "gpu"

    def __init__(self, jaxpr: Jaxpr, device):
        cp = cupy()
        self.device = device
        epilogues = gemm_epilogue.enabled()
        if epilogues:
            # GEMMs with their bias, activation or bias gradient folded in (cuBLASLt), where
            # cuBLASLt has an algorithm for them; every other equation as before.
            with cp.cuda.Device(device.id):
                jaxpr = gemm_epilogue.rewrite(
                    jaxpr, gemm_epilogue.lt_acceptor(device.id, epilogues))
        self.plan = fusion.plan(jaxpr)
        steps_io = []
        for step in self.plan.steps:
            if isinstance(step, fusion.FusedKernel):
                steps_io.append((step.inputs, step.outputs))
            else:
                steps_io.append((step.eqn.invars, step.eqn.outvars))
        with cp.cuda.Device(device.id):
            self.slots = SlotPlan(jaxpr.invars, steps_io, jaxpr.outvars,
                                  lambda v: cp.asarray(_cpu_literal(v)))
            self.launches = [_FusedLaunch(s) if isinstance(s, fusion.FusedKernel)
                             else _OpaqueLaunch(s.eqn) for s in self.plan.steps]
        # Fused kernels index raw memory: their inputs must be C-contiguous.
        self.contiguous_ins = [isinstance(s, fusion.FusedKernel) for s in self.plan.steps]
        self.steps = list(zip(self.launches, self.slots.step_ins, self.slots.step_outs,
                              self.slots.release, self.contiguous_ins))
        # A cuda_impl may return a view of its input (reshape): such an argument's memory
        # stays in use after its last read, so donation must not recycle it.
        read_by_opaque = {s for ins, fused in zip(self.slots.step_ins, self.contiguous_ins)
                          if not fused for s in ins}
        self.recyclable = [s not in read_by_opaque for s in self.slots.in_slots]
        # Arguments returned as outputs: a graph must not hand a caller's buffer back as
        # its own output, so these are always staged.
        out_slots = set(self.slots.out_slots)
        self.passed_through = {i for i, s in enumerate(self.slots.in_slots) if s in out_slots}
        # Steps that write an output of the call: during a capture they allocate from the
        # graph's own pool (see graphs._CaptureAllocator).
        self.output_steps = {k for k, outs in enumerate(self.slots.step_outs)
                             if out_slots.intersection(outs)}
        self.cp = cp
        self.single = self._single_kernel()
        # The outputs of the last two single-kernel calls. A call writes again into a set
        # nobody holds any more instead of allocating (CuPy's allocator costs ~4 us of
        # W5's ~16), as graphs reuse theirs; a set whose launch came twice with the same
        # argument addresses is relaunched as a captured CUDA graph (~2 us of host time
        # against ~7 for the kernel call).
        self.recent_outs: list[_OutputSet] = []
        self.single_stream = None  # where single-kernel launches are captured
        self.single_replays = 0
        # Graphs pay off when a call launches several kernels.
        self.graph_eligible = self.plan.kernel_count >= 2
        self.graphs: list[GraphReplay] = []
        # The executable's graphs replay one at a time (replay_order), so the intermediates
        # of all of them share one pool; captures run on graph_stream (all made at the
        # first capture).
        self.graph_stream = None
        self.graph_pool = None
        self.replay_order = None
        # Argument addresses of the last call that found no graph ready: an argument at the
        # same address again is read in place by a graph captured now.
        self.last_ptrs: list[int] | None = None
        self.capture_error: str | None = None  # why capture failed, for profiles and logs
        self.calls = 0

    @property
    def kernel_count(self) -> int:
        return self.plan.kernel_count

    @property
    def graph(self) -> GraphReplay | None:
        """The first captured graph (None while the call runs kernel by kernel)."""
        return self.graphs[0] if self.graphs else None

    def __call__(self, bufs, donated=()) -> list:
        if self.single is not None and not donated:
            return self._run_single(bufs)
        if self.graph_eligible and config.read("cuda_graphs"):
            graph = self._ready_graph(bufs, donated)
            if graph is not None:
                return graph(bufs)
            self.calls += 1
            ptrs = [b.data.ptr for b in bufs]
            stable = self._stable_args(bufs, ptrs, donated)
            self.last_ptrs = ptrs
            # The first call is the warm-up (compiles, fills the pools). A second graph,
            # writing other output buffers, serves a loop that holds the previous step's
            # outputs while it passes them back in (params = step(params)): the two
            # graphs then take turns. The third copies its outputs out and stages every
            # argument, so it is always ready.
            if self.calls >= 2 and len(self.graphs) < MAX_GRAPHS:
                copy_out = len(self.graphs) == MAX_GRAPHS - 1
                direct = () if copy_out else self._direct_args(bufs)
                graph = capture(self, bufs, copy_out=copy_out, direct=direct,
                                 stable=() if copy_out else
                                 [i for i in stable if i not in direct])
                if graph is None:
                    self.graph_eligible = False  # capture failed: remember, run plain
                else:
                    self._mark_read_in_place(bufs, direct)
                    self.graphs.append(graph)
                    if graph.ready(bufs, donated):
                        return graph(bufs)
        return self.run_steps(bufs, donated)

    def _ready_graph(self, bufs, donated) -> GraphReplay | None:
        """The graph this call replays: an output-owning one that is ready, or one made
        ready again (``_resync``), before the graph that copies its outputs out."""
        for k, graph in enumerate(self.graphs):
            if not graph.copy_out and graph.ready(bufs, donated):
                if graph.recapturable and self._direct_args(bufs, graph, staged_by=graph):
                    graph = self._recapture(k, bufs)
                return graph
        for graph in self.graphs:
            if not graph.copy_out and self._resync(graph, bufs, donated):
                return graph
        return next((g for g in self.graphs if g.copy_out), None)

    def _resync(self, graph: GraphReplay, bufs, donated) -> bool:
        """Makes an output-owning graph ready again once the loop that alternated the two
        was interrupted (the caller kept a step's outputs, or a call ran without graphs):
        the arguments it reads in place from the other graph's outputs are elsewhere now,
        so they are copied there, if nobody holds those outputs. Without this, every
        later call would replay the graph that copies its outputs out (W1: 0.37 -> 0.50
        ms a step). Arguments the caller owns (``stable``) are never written: if one has
        moved, the graph stays unready."""
        moved = [(i, ptr) for i, ptr in graph.direct if bufs[i].data.ptr != ptr]
        if not moved or not graph.outputs_free(bufs, donated) or any(
                bufs[i].data.ptr != ptr for i, ptr in graph.stable):
            return False
        # Addresses and sizes only: a reference to another graph's output would count as
        # a holder of it (outputs_free compares reference counts).
        free = [g for g in self.graphs if g is not graph and not g.copy_out and g.outputs_free()]
        targets = {g.outs[j].data.ptr: g.outs[j].nbytes for g in free for j in range(len(g.outs))}
        copies = []
        for i, ptr in moved:
            if targets.get(ptr) != bufs[i].nbytes or not bufs[i].flags.c_contiguous:
                return False
            copies.append((ptr, bufs[i].data.ptr, bufs[i].nbytes))
        stream = self.cp.cuda.get_current_stream()
        self.replay_order.join(stream)  # after the replay that last wrote the targets
        for dst, src, nbytes in copies:
            self.cp.cuda.runtime.memcpyAsync(dst, src, nbytes,
                                             self.cp.cuda.runtime.memcpyDeviceToDevice,
                                             stream.ptr)
        return True

    def _direct_args(self, bufs, exclude=None, staged_by=None) -> list[int]:
        """The arguments a new graph reads in place instead of copying them in: outputs of
        this executable's other output-owning graphs (not ``exclude``), handed back in by
        a training loop (params = step(params)); with ``staged_by``, only those that graph
        copies in. The graph replays only while they stay at those addresses, which is
        exactly while the loop alternates between the graphs."""
        graph_outs = {o.data.ptr for g in self.graphs if g is not exclude and not g.copy_out
                      for o in g.outs}
        staged = None if staged_by is None else {i for i, _, _ in staged_by.copies}
        return [i for i, b in enumerate(bufs)
                if i not in self.passed_through and (staged is None or i in staged)
                and b.flags.c_contiguous and b.data.ptr in graph_outs]

    def _mark_read_in_place(self, bufs, direct) -> None:
        """Marks the graphs whose outputs a new graph reads in place (see _recapture)."""
        read = {bufs[i].data.ptr for i in direct}
        for graph in self.graphs:
            if any(o.data.ptr in read for o in graph.outs):
                graph.recapturable = True

    def _stable_args(self, bufs, ptrs: list[int], donated) -> list[int]:
        """Arguments at the address they had in the last call that found no graph ready
        (parameters, inputs or constants passed every call): a graph captured now reads
        them in place, and is not ready should one move. A new array each call is at a new
        address, so it is staged; so is a donated one (outputs may land in its buffer)."""
        last = self.last_ptrs
        if last is None:
            return []
        return [i for i, b in enumerate(bufs)
                if ptrs[i] == last[i] and i not in self.passed_through and i not in donated
                and b.flags.c_contiguous]

    def _recapture(self, k: int, bufs) -> GraphReplay:
        """Graph ``k`` captured again, reading in place the arguments that are another
        graph's outputs (it copied them in: it was captured before that graph existed), and
        writing into its own output buffers, which the other graph reads in place. Once per
        graph; the old graph stays where capture fails."""
        old = self.graphs[k]
        old.recapturable = False
        direct = self._direct_args(bufs, exclude=old)
        stable = [i for i, _ in old.direct + old.stable if i not in direct]
        graph = capture(self, bufs, direct=direct, stable=stable, replacing=old)
        if graph is None:
            return old
        graph.replays, graph.recapturable, graph.baseline = old.replays, False, old.baseline
        self.graphs[k] = graph
        return graph

    def _single_kernel(self):
        """(launch, input positions) when the whole call is one fused kernel reading only
        arguments and writing exactly the outputs (a tiny jitted function): such a call
        skips the slot machinery. None otherwise."""
        if len(self.launches) != 1 or not isinstance(self.launches[0], _FusedLaunch):
            return None
        launch = self.launches[0]
        position = {s: i for i, s in enumerate(self.slots.in_slots)}
        ins, outs = self.slots.step_ins[0], self.slots.step_outs[0]
        if launch.finish is not None or list(outs) != list(self.slots.out_slots) or \
                len(set(outs)) != len(outs) or not all(s in position for s in ins):
            return None
        return launch, [position[s] for s in ins]

    def _run_single(self, bufs) -> list:
        launch, positions = self.single
        args = [bufs[i] for i in positions]
        for a in args:
            if not a.flags.c_contiguous:
                return self.run_steps(bufs)
        current = self.cp.cuda.get_current_stream()
        ptrs = [a.data.ptr for a in args]
        reused = self._released_outs(current.ptr)
        if reused is None:
            outs = [_empty(self.cp, shape, dtype) for shape, dtype in launch.out_specs]
            self.recent_outs = self.recent_outs[-1:] + [_OutputSet(current.ptr, outs, ptrs)]
        else:
            outs = reused.outs
            if reused.ptrs == ptrs:
                if reused.graph is None and self.capture_error is None and \
                        config.read("cuda_graphs"):
                    reused.graph = self._capture_single(args, outs)
                if reused.graph is not None:
                    # It reads only the arguments and writes only these outputs, last
                    # written on this stream: launched on it, it needs no events.
                    reused.graph.launch(current)
                    self.single_replays += 1
                    return list(outs)
            elif reused.graph is None:
                reused.ptrs = ptrs
        launch.kernel(launch.grid, launch.block, tuple(args + outs))
        return list(outs)

    def _released_outs(self, stream: int) -> _OutputSet | None:
        """A recent call's output set that nobody holds (no array, view or DLPack export of
        its buffers is alive) and that was written on this stream (work that read it on it
        is ordered before the new write); None if there is none."""
        for made in self.recent_outs:
            if made.stream == stream and holders_of(made.outs) == made.baseline:
                return made
        return None

    def _capture_single(self, args: list, outs: list):
        """The single kernel's launch on ``args`` into ``outs`` captured as a CUDA graph
        (captured on a private stream, launched on the caller's); None if that fails."""
        launch = self.single[0]
        cp = self.cp
        if self.single_stream is None:
            self.single_stream = cp.cuda.Stream(non_blocking=True)
        stream = self.single_stream
        try:
            with stream:
                stream.begin_capture()
                try:
                    launch.kernel(launch.grid, launch.block, tuple(args + outs))
                finally:
                    graph = stream.end_capture()
        except Exception as e:  # noqa: BLE001  (the driver refused: launch the kernel)
            self.capture_error = f"{type(e).__name__}: {e}"
            log.info("CUDA graph capture failed (%s); launching the kernel",
                     self.capture_error)
            return None
        return graph

    def describe_step(self, k: int) -> tuple[str, str]:
        """(kind, details) of step ``k``: 'fused', 'gemm' or 'cuda_impl', and its shapes."""
        step = self.plan.steps[k]
        if isinstance(step, fusion.FusedKernel):
            layout = "" if step.layout == "elementwise" else f" {step.layout} split {step.split}"
            return "fused", f"{step.name} over {step.shape}{layout} [{len(step.eqns)} eqns]"
        eqn = step.eqn
        ins = " ".join(v.aval.str_short() for v in eqn.invars)
        outs = " ".join(v.aval.str_short() for v in eqn.outvars)
        if eqn.prim.name == "dot_general":
            return "gemm", f"{ins} -> {outs} {eqn.params['dimension_numbers']}"
        if eqn.prim.name == "gemm_epilogue":
            return "gemm", f"{ins} -> {outs} {eqn.params['epilogue']} (cuBLASLt)"
        return "cuda_impl", f"{eqn.prim.name} {ins} -> {outs}"

    def profile(self, bufs, hold_ms: float = 250.0) -> list[dict]:
        """Runs one call kernel by kernel and times each step on the GPU alone.

        A delay kernel holds the stream for ``hold_ms`` while the host queues every launch
        with an event between steps; the GPU then runs them back to back, so the time
        between two events is the step's own GPU time, not the host's launch gaps. One dict
        per step, in order: step, kind, details, gpu_ms, host_us (the host's launch cost),
        exact (False once the host queued past the hold, or waited for the GPU: a launch
        that synchronizes shows a host_us near the hold left, and the steps after it
        include idle time).
        """
        cp = cupy()
        stream = cp.cuda.get_current_stream()
        events, stamps = [], []

        def mark(k):
            stamps.append(_perf_counter())
            events.append(cp.cuda.Event())
            events[-1].record(stream)

        hold_gpu(hold_ms)
        start = _perf_counter()
        self.run_steps(bufs, on_step=mark)
        mark(len(self.steps))
        events[-1].synchronize()
        report = []
        for k in range(len(self.steps)):
            kind, details = self.describe_step(k)
            report.append({"step": k, "kind": kind, "details": details,
                           "gpu_ms": cp.cuda.get_elapsed_time(events[k], events[k + 1]),
                           "host_us": (stamps[k + 1] - stamps[k]) * 1e6,
                           "exact": (stamps[k + 1] - start) * 1e3 < hold_ms})
        return report

    def profile_graph(self, bufs, replays: int = 20, hold_ms: float = 100.0) -> dict | None:
        """GPU time of one graph replay and of its argument copy-in, each measured with the
        stream held (see ``profile``) so host gaps are excluded. None without a graph that
        can read these arguments.

        >>> exe.profile_graph(bufs)   # doctest: +SKIP
        {'copy_in_ms': 0.012, 'replay_ms': 0.31, 'replays': 20}
        """
        graph = next((g for g in self.graphs if g.reads(bufs)), None)
        if graph is None:
            return None
        cp = cupy()
        stream = self.graph_stream
        graph.order.join(stream)
        with stream:
            hold_gpu(hold_ms)
            events = [cp.cuda.Event() for _ in range(3)]
            events[0].record(stream)
            graph.copy_in(bufs, stream)
            events[1].record(stream)
        for _ in range(replays):
            graph.graph.launch(stream)
        events[2].record(stream)
        graph.order.leave(stream)
        events[2].synchronize()
        return {"copy_in_ms": cp.cuda.get_elapsed_time(events[0], events[1]),
                "replay_ms": cp.cuda.get_elapsed_time(events[1], events[2]) / replays,
                "replays": replays}

    def run_steps(self, bufs, donated=(), on_step=None, into=None) -> list:
        """One call, kernel by kernel. ``donated`` argument positions may be recycled for
        outputs; ``on_step(k)`` is called before step ``k``; ``into`` maps output slots to
        buffers the outputs must be left in (a recaptured graph keeps its output
        addresses): fused kernels write there, other steps' results are copied there."""
        cp = self.cp
        env = self.slots.template.copy()
        for s, b in zip(self.slots.in_slots, bufs):
            env[s] = b
        free = None
        donated_at: dict[int, list[int]] = {}
        if donated:
            free = {}
            for i in donated:
                if self.recyclable[i]:
                    donated_at.setdefault(self.slots.input_last_use[i], []).append(i)
            for i in donated_at.pop(-1, ()):  # donated but never read: free from the start
                _give(free, bufs[i])
        for k, (launch, ins, outs, release_slots, contiguous) in enumerate(self.steps):
            if on_step is not None:
                on_step(k)
            args = [env[s] for s in ins]
            if contiguous:
                args = [a if a.flags.c_contiguous else cp.ascontiguousarray(a) for a in args]
            targets = [into.get(s) for s in outs] if into else None
            for s, r in zip(outs, launch(cp, args, free, targets)):
                env[s] = r
            for s in release_slots:
                env[s] = None
            if donated_at and k in donated_at:
                for i in donated_at[k]:
                    _give(free, bufs[i])
        if into:
            return [_place(cp, env[s], into.get(s)) for s in self.slots.out_slots]
        return [env[s] for s in self.slots.out_slots]


def _place(cp, value, target):
    """``value`` left in ``target`` (copied on the current stream unless it is there)."""
    if target is None or value is target:
        return value
    if value.data.ptr == target.data.ptr and value.strides == target.strides:
        return target
    if not value.flags.c_contiguous:
        value = cp.ascontiguousarray(value)
    if value.nbytes:
        cp.cuda.runtime.memcpyAsync(target.data.ptr, value.data.ptr, value.nbytes,
                                    cp.cuda.runtime.memcpyDeviceToDevice,
                                    cp.cuda.get_current_stream().ptr)
    return target


class _OutputSet:
    """The outputs of one single-kernel call, kept for reuse: the stream they were written
    on, their holder counts when made, the argument addresses of the launch that last wrote
    them (or of their captured graph, whose pointers are baked in) and that graph."""

    __slots__ = ("baseline", "graph", "outs", "ptrs", "stream")

    def __init__(self, stream: int, outs: list, ptrs: list[int]):
        self.stream, self.outs, self.ptrs, self.graph = stream, outs, ptrs, None
        self.baseline = holders_of(outs)


def _give(free: dict, buf) -> None:
    if buf.flags.c_contiguous:
        free.setdefault((buf.shape, buf.dtype), []).append(buf)


# --- debug_nans / debug_infs: which outputs hold a NaN or an inf ------------------------------

# A float's bits with the sign cleared are above the all-ones exponent for a NaN and equal
# to it for an inf, so one bitwise test serves every float width (bfloat16 included).
_FLOAT_BITS = {dtypes.float16: (np.uint16, 0x7FFF, 0x7C00),
               dtypes.bfloat16: (np.uint16, 0x7FFF, 0x7F80),
               dtypes.float32: (np.uint32, 0x7FFFFFFF, 0x7F800000),
               dtypes.float64: (np.uint64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}


def nonfinite_outputs(bufs, nans: bool, infs: bool) -> list[bool]:
    """For each NumPy or CuPy buffer: whether it holds a NaN (``nans``) or an inf (``infs``).

    Complex buffers are checked part by part. On the GPU each buffer costs one fused
    reduction kernel writing one flag of a device array, and the flags come to the host in
    one read, so a call syncs once.

    >>> nonfinite_outputs([np.array([1.0, np.nan]), np.ones(2)], True, False)
    [True, False]
    """
    checked = [i for i, b in enumerate(bufs)
                if (b.dtype in _FLOAT_BITS or b.dtype in _COMPLEX_PARTS) and b.size]
    flags = [False] * len(bufs)
    if not checked:
        return flags
    on_host = isinstance(bufs[checked[0]], np.ndarray)
    xp = np if on_host else cupy()
    if on_host:
        for i in checked:
            parts = _float_parts(bufs[i], xp)
            bits_type, abs_mask, inf_bits = _FLOAT_BITS[parts.dtype]
            bits = parts.view(bits_type) & bits_type(abs_mask)
            flags[i] = bool((nans and (bits > inf_bits).any())
                            or (infs and (bits == inf_bits).any()))
        return flags
    found = xp.zeros(len(checked), dtype=np.bool_)
    for k, i in enumerate(checked):
        parts = _float_parts(bufs[i], xp)
        bits_type, abs_mask, inf_bits = _FLOAT_BITS[parts.dtype]
        _nonfinite_kernel()(parts.view(bits_type), bits_type(abs_mask), bits_type(inf_bits),
                            nans, infs, out=found[k])
    for i, bad in zip(checked, found.get().tolist()):
        flags[i] = bad
    return flags


_COMPLEX_PARTS = {np.dtype(np.complex64): dtypes.float32, np.dtype(np.complex128): dtypes.float64}


def _float_parts(buf, xp):
    """A float buffer itself; a complex one as its real and imaginary parts side by side."""
    if buf.dtype in _COMPLEX_PARTS:
        return xp.ascontiguousarray(buf).view(_COMPLEX_PARTS[buf.dtype])
    return buf


@functools.cache
def _nonfinite_kernel():
    return cupy().ReductionKernel(
        "T bits, T abs_mask, T inf_bits, bool nans, bool infs", "bool found",
        "(nans && (bits & abs_mask) > inf_bits) || (infs && (bits & abs_mask) == inf_bits)",
        "a || b", "found = a", "false", "flamefx_nonfinite")
