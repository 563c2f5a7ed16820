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
