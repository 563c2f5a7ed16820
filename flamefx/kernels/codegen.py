"""CUDA source for jit's fused kernels (the steps flamefx/kernels/fusion.py plans).

``generate(kernel, used_later)`` writes one ``FusedKernel``'s source: the elementwise loop
(vectorized 16 bytes a thread where the arrays allow, with streaming stores for large
outputs), or a row or column reduction with its siblings and epilogue, or a row kernel
that walks each row in several passes. Every value lives in a local of its compute C type;
half types are stored as raw 16-bit words.

>>> storage_ctype("bfloat16"), c_literal(0.5, "float32")
('unsigned short', '((float)0.5)')
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from flamefx import dtypes
from flamefx.jaxpr import JaxprEqn, Literal, Var
from flamefx.kernels.cuda_elementwise import PREAMBLE, compute_ctype, load_expr, store_expr
from flamefx.kernels.cuda_reduce import Reduction
from flamefx.kernels.fusion import (
    BLOCK,
    COLUMN_ROWS,
    PARTIAL_DTYPE,
    FusedKernel,
    is_view,
    kind_of,
    reduction_layout,
)


_HALF = (dtypes.float16, dtypes.bfloat16)

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
    return lines + body.lines + [
        f"out{first_output + j}[m] = {store(v.aval.dtype, body.names[v.id])};"
        for j, v in enumerate(outputs)]


def _strides(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def _index_type(n: int) -> str:
    return "long long" if n >= 2**31 - 1 else "int"


def _read_input(j: int, index: str) -> str:
    """How a fused kernel reads input ``j`` at C index ``index``."""
    return f"in{j}[{index}]"


def _pointer_params(inputs: list[Var], outputs: list[Var]) -> list[str]:
    """A fused kernel's parameters: ``in<j>`` for each input, ``out<j>`` for each output."""
    return ([f"const {storage_ctype(v.aval.dtype)}* __restrict__ in{j}"
             for j, v in enumerate(inputs)]
            + [f"{storage_ctype(v.aval.dtype)}* __restrict__ out{j}"
               for j, v in enumerate(outputs)])


def _set_source(kernel: FusedKernel, params: list[str], lines: list[str]) -> None:
    """Names ``kernel`` after a hash of its parameters and body ``lines`` (which close its
    brace) and sets its source."""
    text = "\n".join(lines)
    kernel.name = "flamefx_fused_" + hashlib.sha1(
        (", ".join(params) + text).encode()).hexdigest()[:12]
    kernel.source = (PREAMBLE + f'extern "C" __global__ void {kernel.name}('
                     f'{", ".join(params)}) {{\n' + text + "\n")


class _Body:
    """The per-element C lines of a fused kernel, reading its inputs through ``read``.

    ``read(j, index)`` gives the stored element of input ``j`` at C index ``index`` ("i":
    the flat position, "0": a 0-d value, or broadcast coordinates), so one walk over the
    equations serves the scalar loop and each lane of the vectorized one alike.
    """

    def __init__(self, kernel: FusedKernel, read, eqns=None, flat: str = "i",
                 names: dict[int, str] | None = None, registry: list[Var] | None = None,
                 prefix: str = ""):
        self.flat = flat  # the C index of a value of the walked equations' shape
        # With a registry (the kernel's inputs, shared by several bodies), ``read`` gets an
        # input's position there; ``prefix`` keeps the locals of bodies in one scope apart.
        self.registry, self.prefix = registry, prefix
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
        if self.registry is not None:
            j = next((k for k, u in enumerate(self.registry) if u.id == v.id),
                     len(self.registry))
            if j == len(self.registry):
                self.registry.append(v)
        return load(v.aval.dtype, self.read(j, index))

    def _local(self, name: str) -> str:
        return self.prefix + name

    def ref(self, v) -> str:
        if isinstance(v, Literal):
            return c_literal(v.val.item(), v.aval.dtype)
        if v.id not in self.names:  # an external value of the kernel's shape (or 0-d)
            name = self.names[v.id] = self._local(f"in{len(self.inputs)}v")
            value = self._input(v, "0" if v.aval.shape == () else self.flat)
            self.lines.append(f"const {compute_ctype(v.aval.dtype)} {name} = {value};")
        return self.names[v.id]

    def _equation(self, n: int, eqn: JaxprEqn) -> None:
        out = eqn.outvars[0]
        if self.flat != "i" and (is_view(eqn) or kind_of(eqn) == "broadcast"):
            # An epilogue's views and broadcasts relabel a value at the same flat position,
            # or broadcast a single element.
            src = eqn.invars[0]
            if isinstance(src, Var) and src.id not in self.names and src.aval.size == 1 \
                    and out.aval.size > 1:
                self.names[src.id] = self._local(f"in{len(self.inputs)}v")
                self.lines.append(f"const {compute_ctype(src.aval.dtype)} "
                                  f"{self.names[src.id]} = {self._input(src, '0')};")
            self.names[out.id] = self.ref(src)
            return
        if eqn.prim.name == "broadcast_in_dim" and kind_of(eqn) == "broadcast":
            src = eqn.invars[0]
            if out.id in self.names:  # a broadcast scalar literal (see _constant_broadcasts)
                return
            if isinstance(src, Var) and src.id in self.names:
                # A row value along its row, in a row kernel's later pass.
                self.names[out.id] = self.names[src.id]
                return
            dims = eqn.params["broadcast_dimensions"]
            terms = [(d, s) for d, s, size in
                     zip(dims, _strides(src.aval.shape), src.aval.shape) if size != 1]
            self.need_coords = self.need_coords or bool(terms)
            index = " + ".join(f"c{d} * {s}" for d, s in terms) or "0"
            value = self._input(src, index, terms if terms else None)
            self.names[out.id] = self._local(f"v{n}")
            self.lines.append(f"const {compute_ctype(out.aval.dtype)} {self.names[out.id]} "
                              f"= {value};")
            return
        args = [self.ref(v) for v in eqn.invars]
        expr = eqn.prim.fusion.render(tuple(v.aval.dtype for v in eqn.invars), **eqn.params)
        for k in range(len(args) - 1, -1, -1):  # x10 before x1
            expr = _replace_operand(expr, k, args[k])
        if eqn.prim.name == "convert_element_type" and out.aval.dtype in _HALF:
            # A cast to a half type rounds, as the unfused cast's store (locals are float).
            expr = load(out.aval.dtype, store(out.aval.dtype, expr))
        self.names[out.id] = self._local(f"v{n}")
        self.lines.append(f"const {compute_ctype(out.aval.dtype)} {self.names[out.id]} "
                          f"= {expr};")


def generate(kernel: FusedKernel, used_later: dict[int, int]) -> None:
    if kernel.passes > 1:
        _generate_row_passes(kernel, used_later)
        return
    shape = kernel.shape
    red = kernel.reduction
    main_eqns = [e for e in kernel.eqns if e not in kernel.reductions + kernel.epilogue]
    n_total = int(np.prod(shape, dtype=np.int64))
    if red is None and n_total <= COMPONENT_ELEMENTS:
        components = _components(main_eqns)
        if len(components) >= MIN_COMPONENTS:
            _generate_components(kernel, components, used_later, n_total)
            return
    scalar = _Body(kernel, _read_input, main_eqns)
    red_ins = [scalar.ref(r.invars[0]) for r in kernel.reductions]
    inputs, names, body = list(scalar.inputs), scalar.names, scalar.lines
    outputs = [v for e in main_eqns for v in e.outvars if used_later.get(v.id)]
    epilogue_outputs = [v for e in kernel.epilogue for v in e.outvars if used_later.get(v.id)]
    epilogue = _epilogue(kernel, inputs, len(outputs), epilogue_outputs)
    kernel.inputs, kernel.outputs = inputs, outputs + epilogue_outputs
    params = _pointer_params(inputs, kernel.outputs)
    stores = [f"out{j}[i] = {store(v.aval.dtype, names[v.id])};" for j, v in enumerate(outputs)]
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


# --- independent chains of small elementwise kernels -----------------------------------------
# An optimizer's update of every parameter of one shape fuses into one kernel of that shape:
# the diffusion example's (32,) biases and norm scales made a kernel of 650 equations over
# 32 elements, 8 threads each walking ~400 loads and stores one after the other (0.44 ms).
# Its equations form independent chains, one per parameter: grid row c runs chain c, so
# the chains run side by side on different SMs.
COMPONENT_ELEMENTS = 1 << 16  # larger kernels fill the GPU with their elements alone
# Two or three chains run well enough in one vectorized grid row; the split pays where
# many chains would each wait on their loads in turn.
MIN_COMPONENTS = 4


def _components(eqns: list[JaxprEqn]) -> list[list[JaxprEqn]]:
    """``eqns`` split into groups that share no value computed among them, each in order.
    A broadcast of an outside value (Adam's bias corrections, made 0-d elsewhere) is an
    indexed read: every group that uses it gets its own copy instead of being joined."""
    made_by = {v.id: k for k, e in enumerate(eqns) for v in e.outvars}
    read = {k for k, e in enumerate(eqns) if kind_of(e) == "broadcast" and not any(
        isinstance(v, Var) and v.id in made_by for v in e.invars)}
    parent = list(range(len(eqns)))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k, e in enumerate(eqns):
        for v in e.invars:
            if isinstance(v, Var) and made_by.get(v.id) not in (None, *read):
                parent[root(k)] = root(made_by[v.id])
    groups: dict[int, set[int]] = {}
    for k in range(len(eqns)):
        if k not in read:
            groups.setdefault(root(k), set()).add(k)
    for members in groups.values():
        members.update(made_by[v.id] for k in list(members) for v in eqns[k].invars
                       if isinstance(v, Var) and made_by.get(v.id) in read)
    used = set().union(*groups.values())
    for k in sorted(read - used):  # a broadcast the kernel only writes out
        groups[k] = {k}
    return [[eqns[k] for k in sorted(members)] for members in groups.values()]


def _generate_components(kernel: FusedKernel, components, used_later, n_total: int) -> None:
    """One elementwise kernel whose grid row c computes component c (a scalar loop each)."""
    itype = _index_type(n_total)
    inputs: list[Var] = []
    outputs = [v for group in components for e in group for v in e.outvars
               if used_later.get(v.id)]
    position = {v.id: j for j, v in enumerate(outputs)}
    cases = []
    for c, group in enumerate(components):
        body = _Body(kernel, _read_input, group, registry=inputs)
        coords = _coords_from_flat("i", kernel.shape, itype) if body.need_coords else []
        stores = [f"out{position[v.id]}[i] = {store(v.aval.dtype, body.names[v.id])};"
                  for e in group for v in e.outvars if v.id in position]
        cases += [f"    case {c}:",
                  f"      for ({itype} i = first; i < {n_total}; i += stride) {{"]
        cases += ["        " + s for s in coords + body.lines + stores]
        cases += ["      }", "      break;"]
    kernel.inputs, kernel.outputs = inputs, outputs
    _set_source(kernel, _pointer_params(inputs, outputs), [
        f"  const {itype} stride = ({itype})gridDim.x * blockDim.x;",
        f"  const {itype} first = ({itype})blockIdx.x * blockDim.x + threadIdx.x;",
        "  switch (blockIdx.y) {"] + cases + ["  }", "}"])
    kernel.total, kernel.split, kernel.outer = n_total, 1, n_total
    kernel.layout, kernel.tiles, kernel.components = "elementwise", 0, len(components)


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
    columns, split = reduction_layout(shape, axes)
    kernel.layout, kernel.tiles = ("columns", -(-outer // 32)) if columns else ("rows", 0)
    descriptor: Reduction = red.prim.fusion
    in_dtype = red.invars[0].aval.dtype
    out_dtype = red.outvars[0].aval.dtype
    acc = compute_ctype(in_dtype)
    coord_lines = _row_coords(shape, axes, itype)
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
    kernel.partial_dtype = PARTIAL_DTYPE[acc]


def _row_coords(shape, axes, itype: str) -> list[str]:
    """Coordinates ``c<d>`` and flat index ``i`` of element ``r`` of row ``m``."""
    kept = [d for d in range(len(shape)) if d not in axes]
    lines = []
    for name, dims in (("m", kept), ("r", axes)):
        for d, st in zip(dims, _strides([shape[d] for d in dims])):
            lines.append(f"const {itype} c{d} = ({name} / {st}) % {shape[d]};")
    full = _strides(shape)
    flat = " + ".join(f"c{d} * {full[d]}" for d in range(len(shape))) or "0"
    return lines + [f"const {itype} i = {flat};"]


def _row_walk(inner: int, itype: str) -> list[str]:
    """The opening of a loop over a row's elements ``r``, BLOCK threads apart. A count of
    trips known to the compiler lets it unroll the loop and issue each thread's loads
    together: W3's softmax rows (1024 elements, 4 trips) ran 0.49 -> 0.38 ms in float32
    and 0.54 -> 0.33 in bfloat16 on the H100 against a loop bounded by ``r < inner``."""
    trips = -(-inner // BLOCK)
    lines = ["#pragma unroll" if trips <= 8 else "#pragma unroll 4",
             f"for (int u = 0; u < {trips}; ++u) {{",
             f"  const {itype} r = ({itype})u * {BLOCK} + threadIdx.x;"]
    return lines + ([f"  if (r >= {inner}) break;"] if inner % BLOCK else [])


def _generate_row_passes(kernel: FusedKernel, used_later: dict[int, int]) -> None:
    """A row kernel that walks each row ``kernel.passes`` times (see FusedKernel.pass_of).

    One block per row. Pass p recomputes the element-wise values it needs (the row is in
    L1 or L2 after the first pass, so a pass costs little memory traffic) and accumulates
    the reductions of pass p; their results are shared with the whole block through shared
    memory, then every thread computes the row values (epilogue equations) the next passes
    use. The last pass writes the element-wise outputs; thread 0 writes the row outputs.
    """
    shape, reds = kernel.shape, kernel.reductions
    axes = tuple(sorted(reds[0].params["axes"]))
    outer = int(np.prod([shape[d] for d in range(len(shape)) if d not in axes], dtype=np.int64))
    inner = int(np.prod([shape[d] for d in axes], dtype=np.int64))
    itype = _index_type(outer * inner)
    acc = compute_ctype(reds[0].invars[0].aval.dtype)
    element_eqns = [e for e in kernel.eqns if e not in reds and e not in kernel.epilogue]
    outputs = [v for e in element_eqns for v in e.outvars if used_later.get(v.id)]
    row_outputs = [v for e in kernel.epilogue for v in e.outvars if used_later.get(v.id)]
    inputs: list[Var] = []
    row_names: dict[int, str] = {}  # var id -> C local of a row value
    last = kernel.passes - 1
    lines = [f"  __shared__ {acc} smem[{BLOCK // 32}];",
             f"  __shared__ {acc} shared_rows[{len(reds)}];",
             f"  for ({itype} m = blockIdx.y; m < {outer}; m += gridDim.y) {{"]
    for p in range(kernel.passes):
        body = _Body(kernel, _read_input, [e for e in element_eqns
                                    if kernel.pass_of[e.outvars[0].id] <= p],
                     names=dict(row_names), registry=inputs)
        mine = [(k, r) for k, r in enumerate(reds) if kernel.pass_of[r.outvars[0].id] == p]
        accumulators = [(_accumulator(k), r.prim.fusion.identity(r.invars[0].aval.dtype),
                         r.prim.fusion.combine, body.ref(r.invars[0])) for k, r in mine]
        stores = [f"out{j}[i] = {store(v.aval.dtype, body.names[v.id])};"
                  for j, v in enumerate(outputs)] if p == last else []
        lines += [f"    {acc} {name} = {identity};" for name, identity, _, _ in accumulators]
        lines += ["    " + s for s in _row_walk(inner, itype)]
        lines += ["      " + s for s in _row_coords(shape, axes, itype) + body.lines + stores]
        lines += [f"      {{ const {acc} a = {name}; const {acc} b = {value}; "
                  f"{name} = {combine}; }}" for name, _, combine, value in accumulators]
        lines.append("    }")
        for (k, r), (name, identity, combine, _) in zip(mine, accumulators):
            dtype = r.outvars[0].aval.dtype
            lines.append("    __syncthreads();")  # smem is free again
            lines += ["    " + s for s in _block_reduce(acc, combine, identity, name)]
            lines += [f"    if (threadIdx.x == 0) shared_rows[{k}] = {name};",
                      "    __syncthreads();",
                      f"    {name} = shared_rows[{k}];",
                      f"    const {compute_ctype(dtype)} red{k} = "
                      f"{load(dtype, store(dtype, name))};"]
            row_names[r.outvars[0].id] = f"red{k}"
        row_eqns = [e for e in kernel.epilogue if kernel.ready_at[e.outvars[0].id] == p + 1]
        row = _Body(kernel, _read_input, row_eqns, "m", dict(row_names), inputs,
                    prefix=f"p{p}_")
        lines += ["    " + s for s in row.lines]
        row_names.update((v.id, row.names[v.id]) for e in row_eqns for v in e.outvars)
    row_stores = [f"red_out{k or ''}[m] = {store(r.outvars[0].aval.dtype, _accumulator(k))};"
                  for k, r in enumerate(reds)]
    row_stores += [f"out{len(outputs) + j}[m] = {store(v.aval.dtype, row_names[v.id])};"
                   for j, v in enumerate(row_outputs)]
    lines += [f"    if (threadIdx.x == 0) {{ {' '.join(row_stores)} }}",
              "    __syncthreads();", "  }", "}"]
    kernel.inputs, kernel.outputs = inputs, outputs + row_outputs
    params = _pointer_params(inputs, kernel.outputs)
    params += [f"{storage_ctype(r.outvars[0].aval.dtype)}* __restrict__ red_out{k or ''}"
               for k, r in enumerate(reds)]
    _set_source(kernel, params, lines)
    kernel.outputs = kernel.outputs + [r.outvars[0] for r in reds]
    kernel.layout, kernel.tiles = "rows", 0
    kernel.total, kernel.split, kernel.outer = outer * inner, 1, outer
    kernel.partial_dtype = PARTIAL_DTYPE[acc]


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
