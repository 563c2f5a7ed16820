"""GPU fusion for jit: group elementwise chains into generated CUDA kernels.

``plan(jaxpr)`` schedules the equations (a ready-list that keeps fusible work together)
into steps: a ``FusedKernel`` is a maximal run of elementwise equations of one shape, the
broadcast_in_dims that feed them (read through index arithmetic, never materialized), a
closing reduction (with siblings over the same rows) and its epilogue, the elementwise
work on the reduced values done by the threads that write them; everything else is an
``OpaqueStep`` that runs the primitive's cuda_impl. Planning and code generation need no GPU (``lower(platform='gpu')``
shows the sources anywhere); flamefx/kernels/executor.py compiles and launches them.

Kernel contract (see cuda_elementwise.Elementwise / cuda_reduce.Reduction): every value
lives in a local of its compute C type; half types are stored as raw 16-bit words.

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: fnp.sum(fnp.exp(x * 2.0)))(fnp.ones(8))
>>> plan(closed.jaxpr).kernel_count     # doctest: +SKIP
2
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from flamefx import dtypes
from flamefx.jaxpr import Jaxpr, JaxprEqn, Literal, Var
from flamefx.kernels.cuda_elementwise import (
    PREAMBLE,
    Elementwise,
    compute_ctype,
    load_expr,
    store_expr,
)
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
_PARTIAL_DTYPE = {"float": np.dtype(np.float32), "double": np.dtype(np.float64),
                  "int": np.dtype(np.int32), "long long": np.dtype(np.int64),
                  "unsigned int": np.dtype(np.uint32), "unsigned long long": np.dtype(np.uint64)}


# A fused kernel is a RawKernel, without CuPy's half type: it stores float16 as raw bits too,
# and otherwise loads and stores as the elementwise kernels do.


def storage_ctype(dtype) -> str:
    """C type of one stored element in a fused kernel (both half types as raw bits)."""
    if np.dtype(dtype) in (dtypes.float16, dtypes.bfloat16):
        return "unsigned short"
    return compute_ctype(dtype)


def load(dtype, raw: str) -> str:
    if np.dtype(dtype) == dtypes.float16:
        return f"flamefx_f16_load({raw})"
    return load_expr(dtype, raw)


def store(dtype, value: str) -> str:
    if np.dtype(dtype) == dtypes.float16:
        return f"flamefx_f16_store((float)({value}))"
    return store_expr(dtype, value)


def c_literal(value, dtype) -> str:
    """A C expression for a scalar constant, exact in its compute type."""
    dtype = np.dtype(dtype)
    ctype = compute_ctype(dtype)
    if dtype == dtypes.bool_:
        return "true" if bool(value) else "false"
    if dtypes.is_float(dtype):
        v = float(value)
        if math.isnan(v):
            return f"(({ctype})__int_as_float(0x7fc00000))"
        if math.isinf(v):
            return f"(({ctype})({'-' if v < 0 else ''}__int_as_float(0x7f800000)))"
        return f"(({ctype}){v!r})"
    return f"(({ctype}){int(value)}ll)"


def _kind(eqn: JaxprEqn) -> str:
    fusion = eqn.prim.fusion
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
        self.split = 1                    # blocks per reduced value (see _reduction_layout)
        self.epilogue: list[JaxprEqn] = []  # after the reduction, on its result
        self.epilogue_defined: set[int] = set()
        self.defined: set[int] = set()
        self.inputs: list[Var] = []       # external values, in kernel-argument order
        self.outputs: list[Var] = []      # values written to memory, in argument order
        self.name = ""
        self.source = ""
        self.launches = 1
        self.layout = "elementwise"   # or 'rows' / 'columns' (how a reduction maps threads)

    @property
    def reduction(self) -> JaxprEqn | None:
        return self.reductions[0] if self.reductions else None

    @property
    def closed(self) -> bool:
        return bool(self.reductions)

    def accepts(self, eqn: JaxprEqn, kind: str) -> bool:
        if self.closed:
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
            if not self.eqns and _reduction_layout(self.shape, axes)[1] > 1:
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

    def _accepts_sibling(self, eqn: JaxprEqn) -> bool:
        """Another reduction of the same rows (the loss's label logit sum and the logits'
        max) accumulates in the same loop: one-block rows, one accumulator type."""
        first, src = self.reduction, eqn.invars[0]
        return (src.aval.shape == self.shape and src.id not in self.epilogue_defined
                and tuple(eqn.params["axes"]) == tuple(first.params["axes"])
                and _reduction_layout(self.shape, first.params["axes"]) == (False, 1)
                and compute_ctype(src.aval.dtype) == compute_ctype(first.invars[0].aval.dtype))

    def add(self, eqn: JaxprEqn, kind: str) -> None:
        if kind == "reduction":
            self.reductions.append(eqn)
            self.split = _reduction_layout(self.shape, eqn.params["axes"])[1]
            self.epilogue_defined.add(eqn.outvars[0].id)
        elif self.closed:
            self.epilogue.append(eqn)
            self.epilogue_defined.update(v.id for v in eqn.outvars)
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


def _is_view(eqn: JaxprEqn) -> bool:
    return eqn.prim.name in _VIEW_PRIMS and len(eqn.invars) == 1 and len(eqn.outvars) == 1


def _constant_broadcasts(jaxpr: Jaxpr, kinds: list[str]) -> tuple[dict[int, Literal], set]:
    """Values that only broadcast a scalar literal (directly or through other such
    broadcasts or views: a zero for relu's select, made (256,) then (1024, 256)): var id ->
    literal.
    Fused kernels read them as C constants, so their equations are skipped (the second
    result) unless an opaque step or the jaxpr's outputs need the array itself."""
    constants: dict[int, Literal] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        if kinds[i] != "broadcast" and not _is_view(eqn):
            continue
        src = eqn.invars[0]
        root = src if isinstance(src, Literal) else constants.get(src.id)
        if root is not None:
            constants[eqn.outvars[0].id] = root
    needed = {v.id for v in jaxpr.outvars if isinstance(v, Var)}
    for i, eqn in enumerate(jaxpr.eqns):
        if kinds[i] not in ("elementwise", "broadcast") and eqn.outvars[0].id not in constants:
            needed.update(v.id for v in eqn.invars if isinstance(v, Var))
    # A needed constant needs the broadcasts it is made from.
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if eqn.outvars[0].id in constants and eqn.outvars[0].id in needed:
            needed.update(v.id for v in eqn.invars if isinstance(v, Var))
    skipped = {i for i, eqn in enumerate(jaxpr.eqns)
               if eqn.outvars[0].id in constants and eqn.outvars[0].id not in needed}
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


def _schedule(jaxpr: Jaxpr) -> list:
    """Orders equations with a ready list that prefers whatever joins the open kernel and,
    to open a new one, work that cannot wait (see ``_input_derived``)."""
    kinds = [_kind(e) for e in jaxpr.eqns]
    constants, skipped = _constant_broadcasts(jaxpr, kinds)
    # Broadcasts wait too: read through indexing, they belong in their consumer's kernel.
    deferrable = _input_derived(jaxpr, kinds, constants) | {
        i for i, kind in enumerate(kinds) if kind == "broadcast"}
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
    made_by = {eqn.outvars[0].id: (i, eqn) for i, eqn in enumerate(jaxpr.eqns)
               if _kind(eqn) == "broadcast" or _is_view(eqn)}
    for step in steps:
        if isinstance(step, FusedKernel):
            _generate(step, used_later)
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


# --- code generation -----------------------------------------------------------------------


def _epilogue(kernel: FusedKernel, inputs: list[Var], first_output: int,
              outputs: list[Var]) -> list[str]:
    """C lines of ``kernel``'s epilogue, at reduced value ``m`` (results in the
    accumulators, see ``_accumulator``):
    they compute the epilogue equations and store ``outputs`` (kernel outputs from
    ``first_output`` on). Outside values it reads are appended to ``inputs`` (those the
    main body reads already are shared)."""
    if not kernel.epilogue:
        return []
    seed = {r.outvars[0].id: f"red{k}" for k, r in enumerate(kernel.reductions)}
    found = _Body(kernel, lambda j, index: "0", kernel.epilogue, "m", seed).inputs
    position = {v.id: j for j, v in enumerate(inputs)}
    for v in found:
        if v.id not in position:
            position[v.id] = len(inputs)
            inputs.append(v)
    body = _Body(kernel, lambda j, index: f"in{position[found[j].id]}[{index}]",
                 kernel.epilogue, "m", seed)
    # The results as stored: the epilogue computes what an unfused consumer would read.
    lines = []
    for k, r in enumerate(kernel.reductions):
        dtype = r.outvars[0].aval.dtype
        lines.append(f"const {compute_ctype(dtype)} red{k} = "
                     f"{load(dtype, store(dtype, _accumulator(k)))};")
    return lines + body.lines + [f"out{first_output + j}[m] = {store(v.aval.dtype, body.names[v.id])};"
                                 for j, v in enumerate(outputs)]


def _strides(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def _index_type(n: int) -> str:
    return "long long" if n >= 2**31 - 1 else "int"


class _Body:
    """The per-element C lines of a fused kernel, reading its inputs through ``read``.

    ``read(j, index)`` gives the stored element of input ``j`` at C index ``index`` ("i":
    the flat position, "0": a 0-d value, or broadcast coordinates), so one walk over the
    equations serves the scalar loop and each lane of the vectorized one alike.
    """

    def __init__(self, kernel: FusedKernel, read, eqns=None, flat: str = "i",
                 names: dict[int, str] | None = None):
        self.flat = flat  # the C index of a value of the walked equations' shape
        self.inputs: list[Var] = []
        self.indices: list[str] = []  # how each input is indexed
        # Per input, the (output axis, element stride) terms of a broadcast read's index;
        # None for flat and 0-d reads.
        self.terms: list[list[tuple[int, int]] | None] = []
        self.names: dict[int, str] = {}
        self.lines: list[str] = []
        self.need_coords = False
        self.read = read
        for vid, literal in kernel.constants.items():
            self.names[vid] = c_literal(literal.val.item(), literal.aval.dtype)
        self.names.update(names or {})
        for n, eqn in enumerate(kernel.eqns if eqns is None else eqns):
            if eqn not in kernel.reductions:
                self._equation(n, eqn)

    def _input(self, v: Var, index: str, terms=None) -> str:
        j = len(self.inputs)
        self.inputs.append(v)
        self.indices.append(index)
        self.terms.append(terms)
        return load(v.aval.dtype, self.read(j, index))

    def ref(self, v) -> str:
        if isinstance(v, Literal):
            return c_literal(v.val.item(), v.aval.dtype)
        if v.id not in self.names:  # an external value of the kernel's shape (or 0-d)
            name = self.names[v.id] = f"in{len(self.inputs)}v"
            value = self._input(v, "0" if v.aval.shape == () else self.flat)
            self.lines.append(f"const {compute_ctype(v.aval.dtype)} {name} = {value};")
        return self.names[v.id]

    def _equation(self, n: int, eqn: JaxprEqn) -> None:
        out = eqn.outvars[0]
        if self.flat != "i" and (_is_view(eqn) or _kind(eqn) == "broadcast"):
            # An epilogue's views and broadcasts relabel a value at the same flat position,
            # or broadcast a single element.
            src = eqn.invars[0]
            if isinstance(src, Var) and src.id not in self.names and src.aval.size == 1 \
                    and out.aval.size > 1:
                self.names[src.id] = f"in{len(self.inputs)}v"
                self.lines.append(f"const {compute_ctype(src.aval.dtype)} "
                                  f"{self.names[src.id]} = {self._input(src, '0')};")
            self.names[out.id] = self.ref(src)
            return
        if eqn.prim.name == "broadcast_in_dim" and _kind(eqn) == "broadcast":
            src = eqn.invars[0]
            if out.id in self.names:  # a broadcast scalar literal (see _constant_broadcasts)
                return
            dims = eqn.params["broadcast_dimensions"]
            terms = [(d, s) for d, s, size in
                     zip(dims, _strides(src.aval.shape), src.aval.shape) if size != 1]
            self.need_coords = self.need_coords or bool(terms)
            index = " + ".join(f"c{d} * {s}" for d, s in terms) or "0"
            value = self._input(src, index, terms if terms else None)
            self.names[out.id] = f"v{n}"
            self.lines.append(f"const {compute_ctype(out.aval.dtype)} v{n} = {value};")
            return
        args = [self.ref(v) for v in eqn.invars]
        expr = eqn.prim.fusion.render(tuple(v.aval.dtype for v in eqn.invars), **eqn.params)
        for k in range(len(args) - 1, -1, -1):  # x10 before x1
            expr = _replace_operand(expr, k, args[k])
        self.names[out.id] = f"v{n}"
        self.lines.append(f"const {compute_ctype(out.aval.dtype)} v{n} = {expr};")


def _generate(kernel: FusedKernel, used_later: dict[int, int]) -> None:
    shape = kernel.shape
    red = kernel.reduction
    main_eqns = [e for e in kernel.eqns if e not in kernel.reductions + kernel.epilogue]
    scalar = _Body(kernel, lambda j, index: f"in{j}[{index}]", main_eqns)
    red_ins = [scalar.ref(r.invars[0]) for r in kernel.reductions]
    inputs, names, body = list(scalar.inputs), scalar.names, scalar.lines
    outputs = [v for e in main_eqns for v in e.outvars if used_later.get(v.id)]
    epilogue_outputs = [v for e in kernel.epilogue for v in e.outvars if used_later.get(v.id)]
    epilogue = _epilogue(kernel, inputs, len(outputs), epilogue_outputs)
    kernel.inputs, kernel.outputs = inputs, outputs + epilogue_outputs
    params = [f"const {storage_ctype(v.aval.dtype)}* __restrict__ in{j}"
              for j, v in enumerate(inputs)]
    params += [f"{storage_ctype(v.aval.dtype)}* __restrict__ out{j}"
               for j, v in enumerate(kernel.outputs)]
    stores = [f"out{j}[i] = {store(v.aval.dtype, names[v.id])};" for j, v in enumerate(outputs)]
    n_total = int(np.prod(shape, dtype=np.int64))
    itype = _index_type(n_total)
    lanes = _vector_lanes(kernel, scalar, n_total)
    written = sum(n_total * np.dtype(v.aval.dtype).itemsize for v in outputs)
    streaming = bool(lanes) and written >= STREAMING_STORE_BYTES
    digest_src = "\n".join(body + stores + epilogue) + repr((shape, red and red.params))
    digest_src += " streaming" if streaming else ""
    kernel.name = "flamefx_fused_" + hashlib.sha1(digest_src.encode()).hexdigest()[:12]
    if red is not None:
        _generate_reduction(kernel, params, body, stores, red_ins, itype, epilogue)
        return
    lines = [f'extern "C" __global__ void {kernel.name}({", ".join(params)}) {{',
             f"  const {itype} stride = ({itype})gridDim.x * blockDim.x;",
             f"  const {itype} first = ({itype})blockIdx.x * blockDim.x + threadIdx.x;"]
    if lanes:
        lines += ["  " + s for s in _vector_loop(kernel, scalar, lanes, n_total, itype,
                                                  streaming)]
    coords = _coords_from_flat("i", shape, itype) if scalar.need_coords else []
    start = f"(vectorized ? {n_total - n_total % lanes} : 0) + " if lanes else ""
    lines += [f"  for ({itype} i = {start}first; i < {n_total}; i += stride) {{"]
    lines += ["    " + s for s in coords + body + stores] + ["  }", "}"]
    kernel.source = PREAMBLE + "\n".join(lines) + "\n"
    # A work item is one vector of ``lanes`` elements (the scalar tail rides along).
    kernel.total = -(-n_total // lanes) if lanes else n_total
    kernel.split, kernel.outer = 1, n_total
    kernel.layout, kernel.tiles = "elementwise", 0


# --- vectorized elementwise kernels ----------------------------------------------------------
# A thread moves up to 16 bytes of every array per iteration (several elements, independent,
# so their loads are in flight together): the W4 gradient streams 134 MB and one 4-byte
# load per thread leaves the memory system under-occupied. The kernel tests alignment
# itself (inputs can be views at any offset) and falls back to the scalar loop.
#
# Broadcast reads vectorize too when a vector never crosses a row of the innermost axis:
# each vector's coordinates are split once (not once per element, the scalar loop's cost),
# a broadcast that varies along the innermost axis is read as a vector of contiguous
# elements, one constant along it with a single load. W6's per-example weight gradient,
# a[b, i] * c[b, j] over (1024, 784, 256), is such a kernel: 822 MB written.

_WORD_VECTOR = {1: "unsigned int", 2: "uint2", 4: "uint4"}  # 32-bit words -> load type
_LANE_FIELDS = "xyzw"
# Kernels writing at least this much (more than a large GPU's L2) store through st.global.cs
# (evict first): the written lines will not be read back soon, so they need not displace
# the inputs that every vector rereads. Measured on the H100 on W6's 822 MB outer product:
# 0.284 ms with .cs against 0.296 with plain stores (0.267 against 0.273 with one vector per
# thread). Two neighbouring vectors per thread instead of one halve the speed (a warp's store
# then covers every other 16 bytes), and computing the row index once per row with the
# broadcast operand kept in registers gains nothing measurable: the kernel is bound by how
# the writes reach DRAM, not by its instructions.
STREAMING_STORE_BYTES = 64 << 20


def _along_innermost(terms, ndim: int) -> bool:
    """Whether a broadcast read (its index terms) moves along the output's innermost axis."""
    return terms is not None and any(d == ndim - 1 for d, _ in terms)


def _vector_lanes(kernel: FusedKernel, scalar: _Body, n_total: int) -> int:
    """Elements per thread-iteration of the vectorized loop; 0 for the scalar loop only.

    Arrays read at the flat index or 0-d always fit. Broadcast reads fit when the
    innermost axis holds whole vectors and each broadcast is constant along it or reads it
    contiguously (stride 1) from vector-aligned starts. Lanes fill 16 bytes of the widest
    vector-read array, 4 to 8 of them (two 16-byte words of float64, 8 bytes of bool).
    """
    if kernel.reduction is not None or not kernel.outputs:
        return 0
    ndim = len(kernel.shape)
    vector_reads = [v for v, index, terms in zip(scalar.inputs, scalar.indices, scalar.terms)
                    if index == "i" or _along_innermost(terms, ndim)]
    widest = max(np.dtype(v.aval.dtype).itemsize for v in vector_reads + kernel.outputs)
    lanes = min(8, max(4, 16 // widest))
    if n_total < lanes:
        return 0
    if scalar.need_coords:
        if kernel.shape[-1] % lanes:
            return 0
        for terms in scalar.terms:
            if _along_innermost(terms, ndim) and any(
                    stride != 1 if d == ndim - 1 else stride % lanes for d, stride in terms):
                return 0
    return lanes


def _vector_coords(shape, lanes: int, axes, itype: str) -> list[str]:
    """Coordinates ``c<d>`` of vector ``q``'s first element along ``axes`` (the innermost
    axis holds ``shape[-1] // lanes`` whole vectors)."""
    strides, last, lines = _strides(shape), len(shape) - 1, []
    for d in sorted(axes):
        if d == last:
            per_row = shape[last] // lanes
            value = f"(q % {per_row}) * {lanes}" if per_row > 1 else "0"
        else:
            step = strides[d] // lanes
            value = "q" if step == 1 else f"q / {step}"
            value = value if d == 0 else f"({value}) % {shape[d]}"
        lines.append(f"const {itype} c{d} = {value};")
    return lines


def _words(prefix: str, itemsize: int, lanes: int) -> tuple[str, int, list[str]]:
    """(load type, loads per vector, C names of the 32-bit words) of one array's vector."""
    count = itemsize * lanes // 4
    per_load = min(4, count)
    names = []
    for k in range(count):
        load_name = f"{prefix}{k // per_load}"
        names.append(load_name if per_load == 1 else f"{load_name}.{_LANE_FIELDS[k % per_load]}")
    return _WORD_VECTOR[per_load], count // per_load, names


def _lane_from_words(dtype, words: list[str], e: int) -> str:
    """The stored element (storage C type) of lane ``e`` out of its vector's words."""
    dtype = np.dtype(dtype)
    ctype, size = storage_ctype(dtype), dtype.itemsize
    if size == 8:
        lo, hi = words[2 * e], words[2 * e + 1]
        if dtype == dtypes.float64:
            return f"__hiloint2double((int)({hi}), (int)({lo}))"
        return f"(({ctype})(((unsigned long long)({hi}) << 32) | ({lo})))"
    if size == 4:
        word = words[e]
        return f"__uint_as_float({word})" if dtype == dtypes.float32 else f"(({ctype})({word}))"
    per_word = 4 // size
    bits = "unsigned short" if size == 2 else "unsigned char"
    word, shift = words[e // per_word], 8 * size * (e % per_word)
    value = f"({bits})(({word}) >> {shift})" if shift else f"({bits})({word})"
    return value if ctype == bits else f"(({ctype}){value})"


def _words_from_lanes(dtype, values: list[str]) -> list[str]:
    """The inverse of ``_lane_from_words``: 32-bit words holding stored ``values``."""
    dtype = np.dtype(dtype)
    size = dtype.itemsize
    if size == 8:
        words = []
        for v in values:
            if dtype == dtypes.float64:
                words += [f"(unsigned int)__double2loint({v})",
                          f"(unsigned int)__double2hiint({v})"]
            else:
                words += [f"(unsigned int)((unsigned long long)({v}))",
                          f"(unsigned int)((unsigned long long)({v}) >> 32)"]
        return words
    if size == 4:
        return [f"__float_as_uint({v})" if dtype == dtypes.float32 else f"(unsigned int)({v})"
                for v in values]
    per_word = 4 // size
    bits = "unsigned short" if size == 2 else "unsigned char"
    return [" | ".join(f"((unsigned int)({bits})({v}) << {8 * size * k})" if k
                       else f"(unsigned int)({bits})({v})"
                       for k, v in enumerate(values[w:w + per_word]))
            for w in range(0, len(values), per_word)]


def _vector_index(loads: int, k: int) -> str:
    """Index of the ``k``-th of ``loads`` consecutive loads of vector ``q``."""
    return "q" if loads == 1 else f"q * {loads} + {k}"


def _vector_loop(kernel: FusedKernel, scalar: _Body, lanes: int, n_total: int,
                 itype: str, streaming: bool) -> list[str]:
    """Lines that set ``vectorized`` (every vector-read array 16-byte aligned, or as its
    vector needs) and, if so, run the vectorized loop over the first ``n_total // lanes``
    vectors."""
    ndim = len(kernel.shape)
    vector_reads = [j for j, (index, terms) in enumerate(zip(scalar.indices, scalar.terms))
                    if index == "i" or _along_innermost(terms, ndim)]
    arrays = [(f"in{j}", scalar.inputs[j].aval.dtype) for j in vector_reads]
    arrays += [(f"out{j}", v.aval.dtype) for j, v in enumerate(kernel.outputs)]
    misaligned = " | ".join(
        f"((unsigned long long){name} & {min(16, np.dtype(dtype).itemsize * lanes) - 1}ull)"
        for name, dtype in arrays)
    lines = [f"const bool vectorized = ({misaligned}) == 0;",
             "if (vectorized) {",
             f"  for ({itype} q = first; q < {n_total // lanes}; q += stride) {{"]
    axes = {d for terms in scalar.terms if terms for d, _ in terms}
    lines += ["    " + s for s in _vector_coords(kernel.shape, lanes, axes, itype)]
    lane_reads: dict[int, list[str]] = {}
    for j, (v, index, terms) in enumerate(zip(scalar.inputs, scalar.indices, scalar.terms)):
        if j in vector_reads:
            vector, loads, words = _words(f"in{j}w", np.dtype(v.aval.dtype).itemsize, lanes)
            flat = index == "i"
            start = f"reinterpret_cast<const {vector}*>(in{j}{'' if flat else f' + ({index})'})"
            for k in range(loads):
                at = _vector_index(loads, k) if flat else str(k)
                lines.append(f"    const {vector} in{j}w{k} = {start}[{at}];")
            lane_reads[j] = [_lane_from_words(v.aval.dtype, words, e) for e in range(lanes)]
        elif terms is not None:  # constant along the innermost axis: one load per vector
            lines.append(f"    const {storage_ctype(v.aval.dtype)} in{j}b = in{j}[{index}];")
            lane_reads[j] = [f"in{j}b"] * lanes
    for j, v in enumerate(kernel.outputs):
        lines.append(f"    {storage_ctype(v.aval.dtype)} "
                     + ", ".join(f"out{j}l{e}" for e in range(lanes)) + ";")
    for e in range(lanes):
        lane = _Body(kernel, lambda j, index, e=e: lane_reads[j][e] if j in lane_reads
                     else f"in{j}[{index}]")
        lines.append("    {")
        lines += ["      " + s for s in lane.lines]
        lines += [f"      out{j}l{e} = {store(v.aval.dtype, lane.names[v.id])};"
                  for j, v in enumerate(kernel.outputs)]
        lines.append("    }")
    for j, v in enumerate(kernel.outputs):
        vector, loads, _ = _words("", np.dtype(v.aval.dtype).itemsize, lanes)
        words = _words_from_lanes(v.aval.dtype, [f"out{j}l{e}" for e in range(lanes)])
        per_load = len(words) // loads
        for k in range(loads):
            part = words[k * per_load:(k + 1) * per_load]
            value = part[0] if per_load == 1 else f"make_{vector}({', '.join(part)})"
            at = _vector_index(loads, k)
            lines.append(f"    __stcs(reinterpret_cast<{vector}*>(out{j}) + {at}, {value});"
                         if streaming else
                         f"    reinterpret_cast<{vector}*>(out{j})[{at}] = {value};")
    return lines + ["  }", "}"]


def _replace_operand(expr: str, k: int, value: str) -> str:
    """Substitutes operand ``x<k>`` (as a whole identifier) by ``(value)``."""
    return re.sub(rf"\bx{k}\b", f"({value})", expr)


def _coords_from_flat(flat: str, shape, itype) -> list[str]:
    lines, strides = [], _strides(shape)
    for d, (size, stride) in enumerate(zip(shape, strides)):
        lines.append(f"const {itype} c{d} = ({flat} / {stride}) % {size};")
    return lines


def _accumulator(k: int) -> str:
    """C name of the accumulator of a fused kernel's reduction ``k``."""
    return f"acc{k}" if k else "acc"


def _generate_reduction(kernel, params, body, stores, red_ins, itype, epilogue) -> None:
    """Map-reduce over the kernel's shape, in one of two layouts.

    'rows' (the last axis is reduced): grid (split, outer), a block walks one output's
    reduced elements, which are contiguous. 'columns' (the last axis is kept, e.g. a bias
    gradient summing a (rows, features) array over rows): block (32, COLUMN_ROWS), each
    thread owns one output and walks its rows, so a warp reads 32 neighbouring elements;
    grid (outputs / 32, split) with the rows split over blocks. A split > 1 leaves
    partials (outer, split) that a second, tiny kernel combines. Sibling reductions (rows,
    split 1) keep one accumulator each.
    """
    shape = kernel.shape
    reds = kernel.reductions
    red = reds[0]
    axes = tuple(sorted(red.params["axes"]))
    kept = [d for d in range(len(shape)) if d not in axes]
    outer = int(np.prod([shape[d] for d in kept], dtype=np.int64))
    inner = int(np.prod([shape[d] for d in axes], dtype=np.int64))
    columns, split = _reduction_layout(shape, axes)
    kernel.layout, kernel.tiles = ("columns", -(-outer // 32)) if columns else ("rows", 0)
    descriptor: Reduction = red.prim.fusion
    in_dtype = red.invars[0].aval.dtype
    out_dtype = red.outvars[0].aval.dtype
    acc = compute_ctype(in_dtype)
    full_strides = _strides(shape)
    coord_lines = []
    for name, dims in (("m", kept), ("r", axes)):
        sub_strides = _strides([shape[d] for d in dims])
        for d, st in zip(dims, sub_strides):
            coord_lines.append(f"const {itype} c{d} = ({name} / {st}) % {shape[d]};")
    flat = " + ".join(f"c{d} * {full_strides[d]}" for d in range(len(shape))) or "0"
    coord_lines.append(f"const {itype} i = {flat};")
    combine = descriptor.combine
    identity = descriptor.identity(in_dtype)
    partial_ctype = acc
    final_store = store(out_dtype, "acc")
    split_axis = "y" if columns else "x"
    accumulators = [(_accumulator(k), r.prim.fusion.identity(r.invars[0].aval.dtype),
                     r.prim.fusion.combine) for k, r in enumerate(reds)]
    red_outs = [f"red_out{k or ''}" for k in range(len(reds))]
    target = (f"part[m * gridDim.{split_axis} + blockIdx.{split_axis}] = acc;" if split > 1
              else " ".join(epilogue + [
                  f"{out}[m] = {store(r.outvars[0].aval.dtype, name)};"
                  for out, r, (name, _, _) in zip(red_outs, reds, accumulators)]))
    out_params = ([f"{partial_ctype}* __restrict__ part"] if split > 1 else
                  [f"{storage_ctype(r.outvars[0].aval.dtype)}* __restrict__ {out}"
                   for out, r in zip(red_outs, reds)])
    header = f'extern "C" __global__ void {kernel.name}({", ".join(params + out_params)}) {{'
    reduce_lines = [f"{{ const {acc} a = {name}; const {acc} b = {red_in}; {name} = {combine}; }}"
                    for (name, _, combine), red_in in zip(accumulators, red_ins)]
    body = coord_lines + body + stores + reduce_lines
    lines = (_column_reduction(header, acc, identity, combine, outer, inner, itype, body, target)
             if columns else
             _row_reduction(header, acc, accumulators, outer, inner, itype, body, target))
    source = PREAMBLE + "\n".join(lines) + "\n"
    if split > 1:
        finish = kernel.name + "_finish"
        source += "\n".join([
            (f'extern "C" __global__ void {finish}(const {acc}* __restrict__ part, '
             f"{storage_ctype(out_dtype)}* __restrict__ red_out) {{"),
            f"  __shared__ {acc} smem[{BLOCK // 32}];",
            f"  for ({itype} m = blockIdx.x; m < {outer}; m += gridDim.x) {{",
            f"    {acc} acc = {identity};",
            (f"    for (int r = threadIdx.x; r < {split}; r += blockDim.x) "
             f"{{ const {acc} a = acc; const {acc} b = part[m * {split} + r]; "
             f"acc = {combine}; }}")]
            + ["    " + s for s in _block_reduce(acc, combine, identity)]
            + [f"    if (threadIdx.x == 0) {{ red_out[m] = {final_store}; }}",
               "    __syncthreads();", "  }", "}"]) + "\n"
        kernel.launches = 2
    kernel.source = source
    kernel.total, kernel.split, kernel.outer = outer * inner, split, outer
    kernel.outputs = kernel.outputs + [r.outvars[0] for r in reds]
    kernel.partial_dtype = _PARTIAL_DTYPE[acc]


def _reduction_layout(shape, axes) -> tuple[bool, int]:
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


def _row_reduction(header, acc, accumulators, outer, inner, itype, body, target):
    lines = [header,
             f"  __shared__ {acc} smem[{BLOCK // 32}];",
             f"  for ({itype} m = blockIdx.y; m < {outer}; m += gridDim.y) {{"]
    lines += [f"    {acc} {name} = {identity};" for name, identity, _ in accumulators]
    lines += [(f"    for ({itype} r = ({itype})blockIdx.x * blockDim.x + threadIdx.x; "
               f"r < {inner}; r += ({itype})gridDim.x * blockDim.x) {{")]
    lines += ["      " + s for s in body] + ["    }"]
    for k, (name, identity, combine) in enumerate(accumulators):
        if k:  # warp 0 may still read smem
            lines.append("    __syncthreads();")
        lines += ["    " + s for s in _block_reduce(acc, combine, identity, name)]
    lines += [f"    if (threadIdx.x == 0) {{ {target} }}", "    __syncthreads();", "  }", "}"]
    return lines


def _column_reduction(header, acc, identity, combine, outer, inner, itype, body, target):
    rows = COLUMN_ROWS
    head = [header,
            f"  __shared__ {acc} smem[{rows}][33];",
            f"  const {itype} m = ({itype})blockIdx.x * 32 + threadIdx.x;",
            f"  {acc} acc = {identity};",
            f"  if (m < {outer}) {{",
            (f"    for ({itype} r = ({itype})blockIdx.y * {rows} + threadIdx.y; r < {inner}; "
             f"r += ({itype})gridDim.y * {rows}) {{")]
    return head + ["      " + s for s in body] + [
            "    }",
            "  }",
            "  smem[threadIdx.y][threadIdx.x] = acc;",
            "  __syncthreads();",
            f"  if (threadIdx.y == 0 && m < {outer}) {{",
            (f"    for (int t = 1; t < {rows}; ++t) {{ const {acc} a = acc; "
             f"const {acc} b = smem[t][threadIdx.x]; acc = {combine}; }}"),
            f"    {target}",
            "  }",
            "}"]


def _block_reduce(acc: str, combine: str, identity: str, name: str = "acc") -> list[str]:
    """Warp shuffles, then one warp over the per-warp partials; thread 0 ends with the
    block's value in accumulator ``name`` (of C type ``acc``)."""
    shuffle = (f"for (int o = 16; o > 0; o >>= 1) {{ const {acc} a = {name}; "
               f"const {acc} b = __shfl_down_sync(0xffffffffu, {name}, o); {name} = {combine}; }}")
    return [shuffle,
            f"if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = {name};",
            "__syncthreads();",
            "if (threadIdx.x < 32) {",
            f"  {name} = threadIdx.x < {BLOCK // 32} ? smem[threadIdx.x] : {identity};",
            f"  {shuffle}",
            "}"]
