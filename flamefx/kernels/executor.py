"""Executables: an optimized jaxpr turned into a fast call on one device.

``CpuExecutable`` runs the equations with the primitives' NumPy impls, resolved once, over a
flat list of slots (no ``bind``, no tracing, no per-equation dict lookups). The GPU
executable (``GpuExecutable``) groups elementwise chains into generated CUDA kernels
(flamefx/kernels/fusion.py), plans buffers, honours donation and can replay a whole call
as a CUDA graph.

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: x * 2.0 + 1.0)(fnp.ones(3))
>>> run = CpuExecutable(closed.jaxpr)
>>> [b.tolist() for b in run([np.ones(3, np.float32)])]
[[3.0, 3.0, 3.0]]
"""

from __future__ import annotations

import numpy as np

from flamefx.jaxpr import Jaxpr, Literal


class SlotPlan:
    """Numbers every variable of a jaxpr with a slot, and literals with pre-filled slots.

    ``template`` is the initial slot list (literal buffers in place); ``last_use[s]`` is the
    index of the last step that reads slot ``s`` (len(eqns) for program outputs), so slots
    can be released early.
    """

    def __init__(self, jaxpr: Jaxpr, literal_buffer):
        self.index: dict[int, int] = {}
        self.template: list = []
        for v in list(jaxpr.constvars) + list(jaxpr.invars):
            self.slot(v, literal_buffer)
        self.in_slots = [self.index[v.id] for v in list(jaxpr.constvars) + list(jaxpr.invars)]
        self.eqn_ins = [[self.slot(v, literal_buffer) for v in e.invars] for e in jaxpr.eqns]
        self.eqn_outs = [[self.slot(v, literal_buffer) for v in e.outvars] for e in jaxpr.eqns]
        self.out_slots = [self.slot(v, literal_buffer) for v in jaxpr.outvars]
        n_steps = len(jaxpr.eqns)
        self.last_use = [-1] * len(self.template)
        for i, ins in enumerate(self.eqn_ins):
            for s in ins:
                self.last_use[s] = i
        for s in self.out_slots:
            self.last_use[s] = n_steps
        for s in self.in_slots:  # arguments belong to the caller: never ours to release
            self.last_use[s] = n_steps

    def slot(self, v, literal_buffer) -> int:
        if isinstance(v, Literal):
            self.template.append(literal_buffer(v))
            return len(self.template) - 1
        s = self.index.get(v.id)
        if s is None:
            s = self.index[v.id] = len(self.template)
            self.template.append(None)
        return s

    def released_after(self, step: int) -> list[int]:
        """Slots written or read by ``step`` that no later step needs."""
        return [s for s, last in enumerate(self.last_use) if last == step]


def _cpu_literal(v: Literal) -> np.ndarray:
    return np.asarray(v.val.buffer if isinstance(v.val.buffer, np.ndarray) else v.val.buffer.get())


class CpuExecutable:
    """Runs a (hoisted, const-free) jaxpr with NumPy impls over pre-resolved slots."""

    platform = "cpu"

    def __init__(self, jaxpr: Jaxpr):
        if jaxpr.constvars:
            raise ValueError("CpuExecutable takes a jaxpr with its constants hoisted to invars")
        self.jaxpr = jaxpr
        plan = SlotPlan(jaxpr, _cpu_literal)
        self.plan = plan
        self.steps = []
        for i, eqn in enumerate(jaxpr.eqns):
            out_dtypes = tuple(v.aval.dtype for v in eqn.outvars)
            release = tuple(s for s in plan.released_after(i) if s not in plan.eqn_outs[i])
            # An output nobody reads is still written, then dropped right away.
            release += tuple(s for s in plan.eqn_outs[i] if plan.last_use[s] == -1)
            self.steps.append((eqn.prim.impl_for("cpu"), tuple(plan.eqn_ins[i]),
                               tuple(plan.eqn_outs[i]), eqn.params, out_dtypes, release))

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
