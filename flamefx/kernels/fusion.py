"""GPU fusion for jit: group elementwise chains into generated CUDA kernels.

``plan(jaxpr)`` schedules the equations (a ready-list that keeps fusible work together)
into steps: a ``FusedKernel`` is a maximal run of elementwise equations of one shape, the
broadcast_in_dims that feed them (read through index arithmetic, never materialized), a
closing reduction (with siblings over the same rows) and its epilogue, the elementwise
work on the reduced values done by the threads that write them. A row kernel (one block
per row) goes on in later passes over its rows: elementwise work that reads the rows'
reduced values broadcast back along them, and further reductions of the same rows
(softmax's max, exp sum and normalization, and its gradient's row sum, in one kernel).
Everything else is an ``OpaqueStep`` that runs the primitive's cuda_impl.
flamefx/kernels/codegen.py writes each fused kernel's source. Planning and code
generation need no GPU (``lower(platform='gpu')`` shows the sources anywhere);
flamefx/kernels/executor.py compiles and launches them.

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: fnp.sum(fnp.exp(x * 2.0)))(fnp.ones(8))
>>> plan(closed.jaxpr).kernel_count     # doctest: +SKIP
2
"""

from __future__ import annotations

import numpy as np

from flamefx import dtypes
from flamefx.jaxpr import Jaxpr, JaxprEqn, Literal, Var
from flamefx.kernels.cuda_elementwise import Elementwise, compute_ctype
from flamefx.kernels.cuda_reduce import Reduction

BLOCK = 256
# Reductions split a long reduced extent over this many blocks per output at most; the
# partial results are combined by a second, tiny kernel.
MAX_SPLIT = 1024
# Column reductions (the kept axes are the fastest-varying): each block is 32 outputs wide
# and COLUMN_ROWS rows tall; enough blocks to give every SM of a large GPU two.
COLUMN_ROWS = 8
TARGET_BLOCKS = 264
# Views in CuPy, and stop_gradient (its cuda_impl returns its argument): these opaque steps
# launch no kernel.
_VIEW_PRIMS = frozenset({"reshape", "squeeze", "expand_dims", "stop_gradient"})
# Dtypes whose accumulator __shfl_down_sync can move.
_REDUCIBLE = frozenset({dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64,
                        dtypes.int32, dtypes.int64, dtypes.uint32, dtypes.uint64})
PARTIAL_DTYPE = {"float": np.dtype(np.float32), "double": np.dtype(np.float64),
                  "int": np.dtype(np.int32), "long long": np.dtype(np.int64),
                  "unsigned int": np.dtype(np.uint32), "unsigned long long": np.dtype(np.uint64)}


def reduction_layout(shape, axes) -> tuple[bool, int]:
    """(columns, split) of a reduction of ``shape`` over ``axes``: whether the kept axes
    are the fastest-varying, and how many blocks share each reduced value."""
    kept = [d for d in range(len(shape)) if d not in axes]
    outer = int(np.prod([shape[d] for d in kept], dtype=np.int64))
    inner = int(np.prod([shape[d] for d in axes], dtype=np.int64))
    if bool(kept) and kept[-1] == len(shape) - 1 and shape[-1] > 1:
        # Enough blocks to fill the GPU (~2 per SM), each thread still summing >= 8 rows.
        return True, max(1, min(MAX_SPLIT, -(-TARGET_BLOCKS // -(-outer // 32)),
                                inner // (COLUMN_ROWS * 8)))
    return False, max(1, min(MAX_SPLIT, inner // (BLOCK * 8), max(1, 2048 // max(outer, 1))))


def kind_of(eqn: JaxprEqn) -> str:
    fusion = eqn.prim.fusion
    if any(dtypes.is_complex(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)):
        return "opaque"  # complex runs through the primitives' CuPy calls, never fused
    if isinstance(fusion, Elementwise) and len(eqn.outvars) == 1:
        return "elementwise"
    if isinstance(fusion, Reduction) and fusion.kind in ("sum", "prod", "max", "min") \
            and len(eqn.invars) == 1 and eqn.invars[0].aval.dtype in _REDUCIBLE:
        return "reduction"
    if eqn.prim.name == "broadcast_in_dim" and len(eqn.invars) == 1:
        return "broadcast"
    return "opaque"


class OpaqueStep:
    """One equation run through its primitive's cuda_impl."""

    def __init__(self, eqn: JaxprEqn):
        self.eqn = eqn
        self.launches = 0 if eqn.prim.name in _VIEW_PRIMS else 1

    def describe(self) -> str:
        return f"{self.eqn.prim.name} (cuda_impl)"


class FusedKernel:
    """Elementwise equations of one shape (+ fed broadcasts, + closing reductions and their
    epilogue)."""

    def __init__(self, shape, constants: dict[int, Literal]):
        self.shape = tuple(shape)
        self.constants = constants  # var id -> the scalar literal it broadcasts
        self.eqns: list[JaxprEqn] = []
        self.reductions: list[JaxprEqn] = []  # one, or siblings over the same rows
        self.split = 1                    # blocks per reduced value (see reduction_layout)
        self.epilogue: list[JaxprEqn] = []  # after the reduction, on its result
        self.epilogue_defined: set[int] = set()
        self.defined: set[int] = set()
        # A row kernel (one block per row, split 1) may walk its rows more than once:
        # elementwise work on a row's reduced values (softmax's x - max, then / sum) is a
        # later pass over the row, which re-reads it from cache. ``ready_at``: var id -> the
        # first pass that can use the value (0 for outside values, p + 1 for what a
        # reduction of pass p yields); ``pass_of``: the pass of each element-wise
        # equation and reduction, by output id.
        self.row_passes = False
        self.ready_at: dict[int, int] = {}
        self.pass_of: dict[int, int] = {}
        self.inputs: list[Var] = []       # external values, in kernel-argument order
        self.outputs: list[Var] = []      # values written to memory, in argument order
        self.name = ""
        self.source = ""
        self.launches = 1
        self.layout = "elementwise"   # or 'rows' / 'columns' (how a reduction maps threads)
        self.components = 1  # grid rows of an elementwise kernel (codegen._components)

    @property
    def reduction(self) -> JaxprEqn | None:
        return self.reductions[0] if self.reductions else None

    @property
    def passes(self) -> int:
        """How many times the kernel walks its rows (1 unless row_passes)."""
        return max(self.pass_of.values(), default=0) + 1

    @property
    def closed(self) -> bool:
        return bool(self.reductions)

    def accepts(self, eqn: JaxprEqn, kind: str) -> bool:
        if self.closed:
            if self.row_passes and len(eqn.outvars) == 1 and \
                    eqn.outvars[0].aval.shape == self.shape:
                return self._accepts_in_later_pass(eqn, kind)
            return self._accepts_in_epilogue(eqn, kind)
        if kind == "elementwise":
            return eqn.outvars[0].aval.shape == self.shape
        if kind == "broadcast":  # read through indexing: only of a value from outside
            src = eqn.invars[0]
            return eqn.outvars[0].aval.shape == self.shape and not (
                isinstance(src, Var) and src.id in self.defined)
        if kind == "reduction":
            if eqn.invars[0].aval.shape != self.shape:
                return False
            axes = eqn.params["axes"]
            inner = int(np.prod([self.shape[d] for d in axes], dtype=np.int64))
            # A reduction alone opens a kernel only where it is one launch, as its cuda_impl
            # is: what it gains is the epilogue.
            if not self.eqns and reduction_layout(self.shape, axes)[1] > 1:
                return False
            # One block per output row: short rows of many outputs run better unfused.
            return inner >= 64 or np.prod(self.shape, dtype=np.int64) <= 4096 * max(inner, 1)
        return False

    def _accepts_in_epilogue(self, eqn: JaxprEqn, kind: str) -> bool:
        """Work on the reduction's result, computed by the thread that writes each reduced
        value: elementwise equations, views and relabelling broadcasts of the result's
        element count, whose operands are the result, epilogue values, literals and
        outside values of that count (or 0-d). Flat positions are the same for all of
        them (a reshape keeps the order), so (512, 1) and (512,) values mix."""
        if self.split > 1 or len(eqn.outvars) != 1:
            return False
        if kind == "reduction":
            return self._accepts_sibling(eqn)
        count = self.reduction.outvars[0].aval.size
        out = eqn.outvars[0].aval
        if out.size != count:
            return False
        if kind == "broadcast":
            if eqn.invars[0].aval.size not in (1, count):
                return False
        elif kind != "elementwise" and not (eqn.prim.name in _VIEW_PRIMS
                                            and len(eqn.invars) == 1):
            return False
        for v in eqn.invars:
            if isinstance(v, Literal) or v.id in self.constants or v.id in self.epilogue_defined:
                continue
            if v.id in self.defined:  # a per-element value of the reduced input
                return False
            if kind == "elementwise" and v.aval.shape not in ((), out.shape):
                return False
        return True

    def _accepts_in_later_pass(self, eqn: JaxprEqn, kind: str) -> bool:
        """Element-wise work after a row reduction: on the row's elements, outside values
        of the kernel's shape (or 0-d), broadcasts of outside values read by indexing, and
        row values broadcast along the row (see ``_broadcasts_row_value``)."""
        if kind == "broadcast":
            src = eqn.invars[0]
            if isinstance(src, Var) and src.id in self.epilogue_defined:
                return self._broadcasts_row_value(eqn)
            return not (isinstance(src, Var) and src.id in self.defined)
        if kind != "elementwise":
            return False
        for v in eqn.invars:
            if isinstance(v, Literal) or v.id in self.constants:
                continue
            if v.id in self.epilogue_defined:  # a row value is used through a broadcast
                return False
            if v.id not in self.defined and v.aval.shape not in ((), self.shape):
                return False
        return True

    def _broadcasts_row_value(self, eqn: JaxprEqn) -> bool:
        """Whether a broadcast of a row value (a reduced result or epilogue value) gives each
        element its own row's value: the source's axes are the kept axes, in order, so
        the source's flat index is the row's."""
        src = eqn.invars[0]
        axes = self.reduction.params["axes"]
        mapped = [d for d, size in zip(eqn.params["broadcast_dimensions"], src.aval.shape)
                  if size != 1]
        return mapped == [d for d in range(len(self.shape))
                          if d not in axes and self.shape[d] != 1]

    def _accepts_sibling(self, eqn: JaxprEqn) -> bool:
        """Another reduction of the same rows (the loss's label logit sum and the logits'
        max) accumulates in the same loop: one-block rows, one accumulator type."""
        first, src = self.reduction, eqn.invars[0]
        return (src.aval.shape == self.shape and src.id not in self.epilogue_defined
                and tuple(eqn.params["axes"]) == tuple(first.params["axes"])
                and reduction_layout(self.shape, first.params["axes"]) == (False, 1)
                and compute_ctype(src.aval.dtype) == compute_ctype(first.invars[0].aval.dtype))

    def add(self, eqn: JaxprEqn, kind: str) -> None:
        out = eqn.outvars[0].id
        ready = max((self.ready_at.get(v.id, 0) for v in eqn.invars if isinstance(v, Var)),
                    default=0)
        if kind == "reduction":
            self.reductions.append(eqn)
            axes = eqn.params["axes"]
            columns, self.split = reduction_layout(self.shape, axes)
            inner = int(np.prod([self.shape[d] for d in axes], dtype=np.int64))
            self.row_passes = not columns and self.split == 1 and inner > 1
            self.epilogue_defined.add(out)
            self.pass_of[out], self.ready_at[out] = ready, ready + 1
        elif self.closed and not (self.row_passes and
                                  eqn.outvars[0].aval.shape == self.shape):
            self.epilogue.append(eqn)
            self.epilogue_defined.update(v.id for v in eqn.outvars)
            self.ready_at[out] = max(ready, 1)  # row values exist after the first pass
        else:
            self.pass_of[out] = self.ready_at[out] = ready
        self.eqns.append(eqn)
        self.defined.update(v.id for v in eqn.outvars)

    def describe(self) -> str:
        names = " ".join(e.prim.name for e in self.eqns)
        return f"{self.name}: fused [{names}] over {self.shape}" + (
            f" ({self.launches} launches)" if self.launches > 1 else "")


class Plan:
    """The steps of one jaxpr on the GPU, in execution order."""

    def __init__(self, jaxpr: Jaxpr, steps: list):
        self.jaxpr = jaxpr
        self.steps = steps

    @property
    def kernel_count(self) -> int:
        return sum(s.launches for s in self.steps)

    def kernels(self) -> list[FusedKernel]:
        return [s for s in self.steps if isinstance(s, FusedKernel)]

    def sources(self) -> list[str]:
        return [k.source for k in self.kernels()]

    def describe(self) -> str:
        return "\n".join(f"#  {s.describe()}" for s in self.steps)


def is_view(eqn: JaxprEqn) -> bool:
    return eqn.prim.name in _VIEW_PRIMS and len(eqn.invars) == 1 and len(eqn.outvars) == 1


def _constant_broadcasts(jaxpr: Jaxpr, kinds: list[str]) -> tuple[dict[int, Literal], set]:
    """Values that only broadcast a scalar literal (directly or through other such
    broadcasts or views: a zero for relu's select, made (256,) then (1024, 256)): var id ->
    literal.
    Fused kernels read them as C constants, so their equations are skipped (the second
    result) unless an opaque step or the jaxpr's outputs need the array itself."""
    constants: dict[int, Literal] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        if kinds[i] != "broadcast" and not is_view(eqn):
            continue
        src = eqn.invars[0]
        root = src if isinstance(src, Literal) else constants.get(src.id)
        if root is not None:
            constants[eqn.outvars[0].id] = root
    needed = {v.id for v in jaxpr.outvars if isinstance(v, Var)}
    for i, eqn in enumerate(jaxpr.eqns):
        # (A host callback has no outputs: what it reads is needed all the same.)
        if kinds[i] not in ("elementwise", "broadcast") and not (
                eqn.outvars and eqn.outvars[0].id in constants):
            needed.update(v.id for v in eqn.invars if isinstance(v, Var))
    # A needed constant needs the broadcasts it is made from.
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if eqn.outvars and eqn.outvars[0].id in constants and eqn.outvars[0].id in needed:
            needed.update(v.id for v in eqn.invars if isinstance(v, Var))
    skipped = {i for i, eqn in enumerate(jaxpr.eqns)
               if eqn.outvars and eqn.outvars[0].id in constants
               and eqn.outvars[0].id not in needed}
    return constants, skipped


def _input_derived(jaxpr: Jaxpr, kinds: list[str], constants: dict[int, Literal]) -> set:
    """Equations that can run at any point: elementwise work and broadcasts on the jaxpr's
    inputs (through views) and constants alone. The scheduler leaves them until a kernel
    that accepts them is open, so a mask made from the labels joins the kernel that uses
    it instead of being a launch of its own."""
    known = {v.id for v in jaxpr.invars} | {v.id for v in jaxpr.constvars} | set(constants)
    derived = set()
    for i, eqn in enumerate(jaxpr.eqns):
        if not all(isinstance(v, Literal) or v.id in known for v in eqn.invars):
            continue
        if kinds[i] in ("elementwise", "broadcast"):
            derived.add(i)
            known.update(v.id for v in eqn.outvars)
        elif eqn.prim.name in _VIEW_PRIMS:
            known.update(v.id for v in eqn.outvars)
    return derived


def _reductions_of_inputs(jaxpr: Jaxpr, kinds: list[str]) -> set:
    """Reductions of the jaxpr's inputs (through views). The scheduler runs them first,
    when a kernel has to be opened anyway: their results are small, and element-wise
    work that waits for one (the value gradient's row sums in W3's softmax backward)
    can then join the kernel it fuses with instead of ending it."""
    inputs = {v.id for v in jaxpr.invars} | {v.id for v in jaxpr.constvars}
    found = set()
    for i, eqn in enumerate(jaxpr.eqns):
        if not all(isinstance(v, Literal) or v.id in inputs for v in eqn.invars):
            continue
        if is_view(eqn):
            inputs.add(eqn.outvars[0].id)
        elif kinds[i] == "reduction":
            found.add(i)
    return found


def _schedule(jaxpr: Jaxpr) -> list:
    """Orders equations with a ready list that prefers whatever joins the open kernel and,
    to open a new one, reductions of inputs, then work that cannot wait (see
    ``_input_derived``)."""
    kinds = [kind_of(e) for e in jaxpr.eqns]
    constants, skipped = _constant_broadcasts(jaxpr, kinds)
    # Broadcasts wait too: read through indexing, they belong in their consumer's kernel.
    deferrable = _input_derived(jaxpr, kinds, constants) | {
        i for i, kind in enumerate(kinds) if kind == "broadcast"}
    early = _reductions_of_inputs(jaxpr, kinds)
    producer: dict[int, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.outvars:
            producer[v.id] = i
    waiting = [0] * len(jaxpr.eqns)
    consumers: list[list[int]] = [[] for _ in jaxpr.eqns]
    for i, eqn in enumerate(jaxpr.eqns):
        deps = {producer[v.id] for v in eqn.invars if isinstance(v, Var) and v.id in producer}
        waiting[i] = len(deps)
        for d in deps:
            consumers[d].append(i)
    ready = sorted(i for i, w in enumerate(waiting) if w == 0)
    steps: list = []
    group: FusedKernel | None = None
    while ready:
        pick = None
        if group is not None:
            pick = next((i for i in ready if group.accepts(jaxpr.eqns[i], kinds[i])), None)
        joins = pick is not None
        if not joins:
            pick = next((i for i in ready if i in early), None)
            if pick is None:
                pick = next((i for i in ready if i not in deferrable), ready[0])
        eqn, kind = jaxpr.eqns[pick], kinds[pick]
        if pick in skipped:  # a scalar broadcast: kernels read it as a literal
            pass
        elif joins:
            group.add(eqn, kind)
        elif kind == "opaque" or (kind == "reduction" and not FusedKernel(
                eqn.invars[0].aval.shape, constants).accepts(eqn, kind)):
            group = None
            steps.append(OpaqueStep(eqn))
        elif kind == "reduction":
            group = FusedKernel(eqn.invars[0].aval.shape, constants)
            group.add(eqn, kind)
            steps.append(group)
        else:
            group = FusedKernel(eqn.outvars[0].aval.shape, constants)
            group.add(eqn, kind)
            steps.append(group)
        ready.remove(pick)
        for c in consumers[pick]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
        ready.sort()
    return steps


def plan(jaxpr: Jaxpr) -> Plan:
    """Schedules ``jaxpr`` into fused kernels and opaque steps and generates the sources."""
    steps = _schedule(jaxpr)
    used_later: dict[int, int] = {}  # var id -> number of uses outside its own step
    owner: dict[int, int] = {}
    for k, step in enumerate(steps):
        for eqn in (step.eqns if isinstance(step, FusedKernel) else [step.eqn]):
            for v in eqn.outvars:
                owner[v.id] = k
    for k, step in enumerate(steps):
        for eqn in (step.eqns if isinstance(step, FusedKernel) else [step.eqn]):
            for v in eqn.invars:
                if isinstance(v, Var) and owner.get(v.id, -1) != k:
                    used_later[v.id] = used_later.get(v.id, 0) + 1
    for v in jaxpr.outvars:
        if isinstance(v, Var):
            used_later[v.id] = used_later.get(v.id, 0) + 1
    from flamefx.kernels import codegen  # it reads this module's plan types
    made_by = {eqn.outvars[0].id: (i, eqn) for i, eqn in enumerate(jaxpr.eqns)
               if kind_of(eqn) == "broadcast" or is_view(eqn)}
    for step in steps:
        if isinstance(step, FusedKernel):
            codegen.generate(step, used_later)
            step.eqns = _constants_read(step, made_by) + step.eqns
    return Plan(jaxpr, steps)


def _constants_read(kernel: FusedKernel, made_by: dict) -> list[JaxprEqn]:
    """The broadcasts, in jaxpr order, that make the scalar constants ``kernel`` reads as
    literals: listed first in its equations, so that the kernel's equations alone compute
    what it writes (the generated code has the literals already)."""
    found: dict[int, JaxprEqn] = {}
    pending = [v for e in kernel.eqns for v in e.invars
               if isinstance(v, Var) and v.id in kernel.constants and v.id not in kernel.defined]
    while pending:
        v = pending.pop()
        index, eqn = made_by[v.id]
        if index not in found:
            found[index] = eqn
            pending += [u for u in eqn.invars if isinstance(u, Var)]
    return [found[i] for i in sorted(found)]
