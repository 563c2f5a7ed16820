"""CPU plans: jit's optimized jaxpr compiled once into a flat list of bound NumPy calls.

``CpuExecutable`` (executor.py) interprets: per equation it looks the impl up, unpacks the
params, runs the impl (elementwise ones inside their own ``np.errstate``), checks the
result's type and dtype. On small graphs that overhead (about 5 us an equation) is the
whole cost. A ``CpuPlan`` decides all of it at compile time instead:

- elementwise equations (float, and the integer ops whose NumPy ufunc is exact) become
  one ufunc call with ``out=``; ``select_n`` and float casts become ``np.copyto``;
  ``dot_general`` of matrices (or batches of them) becomes ``np.matmul(..., out=)``;
  convolutions and their weight gradients one BLAS product each (cpu_conv.py);
  ``reduce_sum``/``reduce_max``/``reduce_min`` of floats a ufunc reduction with ``out=``;
- a ``broadcast_in_dim`` read only by such calls is not materialized: NumPy broadcasting
  reads its operand directly (a reshaped view when its axes are not the trailing ones);
- every other equation (``FALLBACK``) runs its primitive's NumPy impl, as before;
- the results of those calls land in buffers allocated once per plan and reused by
  values whose lifetimes do not overlap. A value the caller can see (an output, or what a
  callback or sub-program is handed) and every value that may be a view of it get memory
  nobody else holds: an array of an earlier call the caller has dropped, else a new one
  (cpu_steps._Recycled); arguments are never written;
- one ``np.errstate`` covers the call; OpenBLAS runs one thread (its threads spin-wait:
  with another process on one of two cores, a product's time jumped 10-70x), except in a
  plan with a product of at least ``BLAS_PARALLEL_FLOPS``, whose calls move to OpenBLAS's
  threads only while those clearly run the whole call faster (cpu_threads.py);
- a plan run as a scan body (``CpuPlan.scan``) runs the whole loop in one call.

A plan re-entered while it runs (a callback calling the same jitted function, or two
threads) runs the plain executable for that call, so its buffers are never shared. Set
``FLAMEFX_CPU_PLAN=plain`` (or ``cpu_plan.ENABLED = False`` before compiling) to compile
the plain executable instead.

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: x * 2.0 + 1.0)(fnp.ones(3))
>>> CpuPlan(closed.jaxpr)([np.ones(3, np.float32)])[0].tolist()
[3.0, 3.0, 3.0]
"""

from __future__ import annotations

import os
import threading
from time import perf_counter

import numpy as np
import scipy.special

from flamefx.jaxpr import ClosedJaxpr, Jaxpr, Literal, Var
from flamefx.kernels import cpu_conv, erf_inv
from flamefx.kernels.cpu_steps import (
    BUFFER_MAX_BYTES, _contiguous_transpose_step, _conv_step, _convert_step, _fallback_step,
    _matmul_step, _reduce_step, _select_step, _ufunc_step, _view_step)
from flamefx.kernels.cpu_threads import PlanThreads, blas_threads

ENABLED = os.environ.get("FLAMEFX_CPU_PLAN", "fast") != "plain"

try:  # np.errstate(all="ignore") without building the state on every call (~1-2 us)
    from numpy._core.umath import _extobj_contextvar as _errstate
    from numpy._core.umath import _make_extobj
    _IGNORE_ALL = _make_extobj(all="ignore")
except ImportError:  # another NumPy: the public context manager, entered by hand
    class _ErrstateVar:
        def set(self, _):
            state = np.errstate(all="ignore")
            state.__enter__()
            return state

        def reset(self, state):
            state.__exit__(None, None, None)

    _errstate, _IGNORE_ALL = _ErrstateVar(), None

# A plan with a product of at least this many flops may run its calls on OpenBLAS's own
# threads (cpu_threads.PlanThreads); others run on one (RESULTS.md, "CPU", has figures).
BLAS_PARALLEL_FLOPS = 2**23


_FLOATS = frozenset(np.dtype(t) for t in (np.float32, np.float64))
_INTS = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                        np.uint16, np.uint32, np.uint64))
_BOOL = np.dtype(np.bool_)

# Ufuncs exact for floats; "ints" also for integers (wrapping as lax's ops do).
_UFUNCS = {
    "add": (np.add, True), "sub": (np.subtract, True), "mul": (np.multiply, True),
    "div": (np.divide, False), "max": (np.maximum, True), "min": (np.minimum, True),
    "neg": (np.negative, True), "exp": (np.exp, False), "log": (np.log, False),
    "tanh": (np.tanh, False), "sqrt": (np.sqrt, False), "sin": (np.sin, False),
    "cos": (np.cos, False), "log1p": (np.log1p, False), "abs": (np.absolute, True),
    "square": (np.square, True), "pow": (np.power, False), "floor": (np.floor, False),
    "ceil": (np.ceil, False), "is_finite": (np.isfinite, False),
    "logistic": (scipy.special.expit, False), "erf_inv": (erf_inv.erf_inv, False),
    "rem": (np.fmod, False),
    "eq": (np.equal, True), "ne": (np.not_equal, True), "lt": (np.less, True),
    "le": (np.less_equal, True), "gt": (np.greater, True), "ge": (np.greater_equal, True),
}
_REDUCTIONS = {"reduce_sum": np.add, "reduce_max": np.maximum, "reduce_min": np.minimum}
# Kinds whose calls broadcast their operands as NumPy does (so may read a broadcast's
# operand in place of the broadcast).
_BROADCASTING = frozenset({"ufunc", "select", "convert"})


# --- which calls an equation becomes -------------------------------------------------------------


def _dtypes(atoms):
    return [a.aval.dtype for a in atoms]


def kind_of(eqn) -> str:
    """The call ``eqn`` becomes in a plan: 'ufunc', 'select', 'convert', 'matmul',
    'conv' (cpu_conv.py), 'reduce', 'broadcast', 'view' (a reshape or stop_gradient:
    NumPy's reshape, a view where it can be) or 'fallback' (its primitive's impl)."""
    name, ins, outs = eqn.prim.name, eqn.invars, eqn.outvars
    if len(outs) != 1:
        return "fallback"
    out = outs[0].aval.dtype
    if name in _UFUNCS:
        ints_ok = _UFUNCS[name][1]
        allowed = _FLOATS | _INTS if ints_ok else _FLOATS
        if all(d in allowed for d in _dtypes(ins)) and (out in allowed or out == _BOOL) \
                and len(set(_dtypes(ins))) == 1:
            return "ufunc"
        return "fallback"
    if name in ("reshape", "stop_gradient"):  # stop_gradient: the identity, once compiled
        return "view"
    if name == "select_n":
        if len(ins) == 3 and ins[0].aval.dtype == _BOOL and \
                all(d in _FLOATS | _INTS for d in _dtypes(ins[1:])):
            return "select"
        return "fallback"
    if name == "convert_element_type":
        # Exact casts only (float->int rounds and saturates in lax, not in NumPy).
        src = ins[0].aval.dtype
        if out in _FLOATS and (src in _FLOATS or src in _INTS or src == _BOOL):
            return "convert"
        return "fallback"
    if name == "dot_general" and _matmul_layout(eqn) is not None:
        return "matmul"
    if name in cpu_conv.IMPLS and cpu_conv.supports(eqn):
        return "conv"
    if name in _REDUCTIONS and ins[0].aval.dtype in _FLOATS and out == ins[0].aval.dtype:
        return "reduce"
    if name == "broadcast_in_dim" and len(ins) == 1 and \
            list(eqn.params["broadcast_dimensions"]) == sorted(eqn.params["broadcast_dimensions"]):
        return "broadcast"
    return "fallback"


def _matmul_layout(eqn):
    """(transpose lhs, transpose rhs, rows of lhs) when ``eqn`` is np.matmul of (views of)
    its operands: matrices or vectors, one leading batch axis, or an array contracted on its
    last axis with a matrix (``rows``: its other axes flattened, one GEMM instead of one
    per row, as vmap of a layer makes); None otherwise."""
    lhs, rhs = eqn.invars
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    dt = lhs.aval.dtype
    preferred = eqn.params.get("preferred_element_type")
    if dt not in _FLOATS or rhs.aval.dtype != dt or eqn.outvars[0].aval.dtype != dt or \
            (preferred is not None and np.dtype(preferred) != dt):
        return None
    if len(lc) != 1 or len(rc) != 1:
        return None
    ln, rn = lhs.aval.ndim, rhs.aval.ndim
    if tuple(lb) == () and tuple(rb) == () and ln <= 2 and rn <= 2:
        if ln == 1 and rn == 1:
            return None  # a dot of vectors: np.matmul gives a 0-d result without out=
        return (ln == 2 and lc[0] == 0), (rn == 2 and rc[0] == 1), None
    if tuple(lb) == (0,) and tuple(rb) == (0,) and ln == 3 and rn == 3:
        return lc[0] == 1, rc[0] == 2, None
    if tuple(lb) == () and tuple(rb) == () and ln > 2 and rn == 2 and lc[0] == ln - 1:
        return False, rc[0] == 1, int(np.prod(lhs.aval.shape[:-1]))
    return None


def _expanded_shape(eqn):
    """The broadcast's operand shape with 1s where it gains axes: what NumPy broadcasts."""
    shape = [1] * len(eqn.params["shape"])
    for size, d in zip(eqn.invars[0].aval.shape, eqn.params["broadcast_dimensions"]):
        shape[d] = size
    return tuple(shape)


def _has_subprogram(eqn) -> bool:
    for value in eqn.params.values():
        for sub in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(sub, (Jaxpr, ClosedJaxpr)) or hasattr(sub, "jaxpr"):
                return True
    return False


def _hands_out_inputs(eqn) -> bool:
    """Whether ``eqn``'s impl may keep its inputs beyond the call: a Python callback (it
    may store them) or a sub-program (its own executable may)."""
    return "callback" in eqn.prim.name or _has_subprogram(eqn)


# --- OpenBLAS's thread count (cpu_threads.py) ------------------------------------------------

_outermost = [False]  # whether a plan that set OpenBLAS's threads is running


# --- the plan ------------------------------------------------------------------------------------


class CpuPlan:
    """Runs a (hoisted, const-free) jaxpr as a list of bound NumPy calls (module docstring).

    ``kinds`` gives each equation's call kind (``kind_of``); ``buffers`` the number of
    reusable buffers the plan owns.
    """

    platform = "cpu"

    def __init__(self, jaxpr: Jaxpr):
        if jaxpr.constvars:
            raise ValueError("CpuPlan takes a jaxpr with its constants hoisted to invars")
        self.jaxpr = jaxpr
        self._plain = None
        self._lock = threading.Lock()
        self.kinds = [kind_of(e) for e in jaxpr.eqns]
        self._elide_broadcasts()
        self._build()

    @property
    def kernel_count(self) -> int:
        return len(self.steps)

    # -- compile --

    def _elide_broadcasts(self):
        """Marks broadcasts read only by broadcasting calls: those read the operand."""
        readers: dict[int, set[str]] = {}
        for eqn, kind in zip(self.jaxpr.eqns, self.kinds):
            for v in eqn.invars:
                if isinstance(v, Var):
                    readers.setdefault(v.id, set()).add(kind)
        outs = {v.id for v in self.jaxpr.outvars if isinstance(v, Var)}
        self.elided: dict[int, tuple] = {}  # var id -> (source atom, expanded shape or None)
        for k, eqn in enumerate(self.jaxpr.eqns):
            if self.kinds[k] != "broadcast":
                continue
            out = eqn.outvars[0]
            if out.id in outs or not readers.get(out.id, {"none"}) <= _BROADCASTING:
                self.kinds[k] = "fallback"
                continue
            src = eqn.invars[0]
            expanded = _expanded_shape(eqn)
            trailing = expanded[len(expanded) - src.aval.ndim:] == tuple(src.aval.shape) \
                and all(s == 1 for s in expanded[:len(expanded) - src.aval.ndim])
            self.elided[out.id] = (src, None if trailing else expanded)
            self.kinds[k] = "elided"

    def _build(self):
        jaxpr = self.jaxpr
        self.index: dict[int, int] = {}
        self.template: list = []
        self.in_slots = [self._slot(v) for v in jaxpr.invars]
        # The atoms each equation reads (an elided broadcast's operand instead of it).
        eqn_ins = []
        views: dict[int, tuple] = {}  # slot -> (source slot, shape): reshaped operands
        for eqn, kind in zip(jaxpr.eqns, self.kinds):
            ins = []
            for v in eqn.invars:
                if isinstance(v, Var) and v.id in self.elided:
                    src, expanded = self.elided[v.id]
                    if isinstance(src, Literal):
                        value = np.asarray(_literal(src), dtype=src.aval.dtype)
                        ins.append(self._const(value if expanded is None
                                               else value.reshape(expanded)))
                    elif expanded is None:
                        ins.append(self._slot(src))
                    else:
                        s = self._slot(v)
                        views[s] = (self._slot(src), expanded)
                        ins.append(s)
                else:
                    ins.append(self._slot(v) if isinstance(v, Var) else self._literal_slot(v))
            eqn_ins.append(ins)
        out_slots = [self._slot(v) if isinstance(v, Var) else self._literal_slot(v)
                     for v in jaxpr.outvars]
        self.out_slots = out_slots
        buffers = self._assign_buffers(eqn_ins, views)
        self.steps = []
        self.labels = []  # (kind, what) per step, for profile()
        self.matmuls: dict[int, tuple] = {}  # step index -> _matmul_step's arguments
        self.ufuncs: dict[int, tuple] = {}  # step index -> (ufunc, ins, out, aval)
        self._loops: dict[int, tuple] = {}  # invariant inputs -> _loop_steps's result
        self.n_buffers = len({id(b) for b in buffers.values()})
        self.uses_blas = False
        self.threads: PlanThreads | None = None  # for a plan with a large product
        made_views = set()
        self.out_ids = {v.id for v in jaxpr.outvars if isinstance(v, Var)}
        for k, (eqn, kind) in enumerate(zip(jaxpr.eqns, self.kinds)):
            if kind == "elided":
                continue
            ins = eqn_ins[k]
            for s in ins:  # reshaped broadcast operands: made right before first read
                if s in views and s not in made_views:
                    made_views.add(s)
                    self.steps.append(_view_step(views[s][0], s, views[s][1]))
                    self.labels.append(("view", "broadcast operand"))
            outs = [self._slot(v) for v in eqn.outvars]
            if kind in ("fallback", "view") and self._computed_now(eqn, ins, outs):
                continue
            self.labels.append((kind, eqn.prim.name + " " + " ".join(
                v.aval.str_short() for v in eqn.outvars)))
            self.steps.append(self._step(eqn, kind, ins, outs,
                                         buffers.get(outs[0]) if outs else None))
        self.out_slots = [self._slot(v) if isinstance(v, Var) else out_slots[i]
                          for i, v in enumerate(jaxpr.outvars)]
        self.step_fns = tuple(self.steps)

    def _computed_now(self, eqn, ins, outs) -> bool:
        """Runs ``eqn`` at compile time when it reads constants only (an ``iota``: 14 us a
        call through its impl in C1) and its small results are no output of the plan;
        they become constants of the plan. Whether it did."""
        if any(self.template[s] is None for s in ins) or _hands_out_inputs(eqn) or \
                any(v.aval.size * v.aval.dtype.itemsize > BUFFER_MAX_BYTES
                    or v.id in self.out_ids for v in eqn.outvars):
            return False
        with np.errstate(all="ignore"):
            results = eqn.prim.impl_for("cpu")(*[self.template[s] for s in ins], **eqn.params)
        for s, r, v in zip(outs, results, eqn.outvars):
            self.template[s] = np.asarray(r).astype(v.aval.dtype, copy=False)
        return True

    def _slot(self, v: Var) -> int:
        s = self.index.get(v.id)
        if s is None:
            s = self.index[v.id] = len(self.template)
            self.template.append(None)
        return s

    def _const(self, value) -> int:
        self.template.append(value)
        return len(self.template) - 1

    def _literal_slot(self, v: Literal) -> int:
        return self._const(np.asarray(_literal(v), dtype=v.aval.dtype))

    def _assign_buffers(self, eqn_ins, views) -> dict[int, np.ndarray]:
        """Output slot -> a buffer the plan owns, for the calls whose results nothing
        outside the call can see; values sharing a buffer never live at once."""
        jaxpr = self.jaxpr
        # The slots each slot's memory may belong to (views and impls alias their inputs).
        roots: dict[int, set[int]] = {s: set() for s in self.in_slots}
        escaping: set[int] = set()
        last_read: dict[int, int] = {}
        for k, (eqn, kind) in enumerate(zip(jaxpr.eqns, self.kinds)):
            if kind == "elided":
                continue
            ins = eqn_ins[k]
            read = set()
            for s in ins:
                if s in views:
                    roots.setdefault(s, roots.get(views[s][0], set()))
                read |= roots.get(s, set())
            for r in read:
                last_read[r] = k
            outs = [self._slot(v) for v in eqn.outvars]
            for s in outs:
                roots[s] = {s} | (read if kind in ("fallback", "view") else set())
            if kind == "fallback" and _hands_out_inputs(eqn):
                escaping |= read
        for v in jaxpr.outvars:
            if isinstance(v, Var):
                escaping |= roots.get(self._slot(v), set())
        buffers: dict[int, np.ndarray] = {}
        free: dict[tuple, list] = {}
        releases: dict[int, list[int]] = {}
        for r, k in last_read.items():
            releases.setdefault(k, []).append(r)
        handed: set[int] = set()  # slots whose buffer went on to a later value
        for k, (eqn, kind) in enumerate(zip(jaxpr.eqns, self.kinds)):
            if kind in ("ufunc", "select", "convert", "matmul", "reduce"):
                s = self._slot(eqn.outvars[0])
                aval = eqn.outvars[0].aval
                if s not in escaping and aval.size * aval.dtype.itemsize <= BUFFER_MAX_BYTES:
                    key = (aval.shape, aval.dtype)
                    # An elementwise call writes over an operand it reads for the last time
                    # (one array fewer in the cache: Adam's chain on 256x256 ran 8% faster).
                    dying = [r for r in eqn_ins[k] if kind == "ufunc" and r in buffers
                             and last_read.get(r) == k and r not in handed
                             and (buffers[r].shape, buffers[r].dtype) == key]
                    pool = free.get(key)
                    if dying:
                        buffers[s] = buffers[dying[0]]
                        handed.add(dying[0])
                    else:
                        buffers[s] = pool.pop() if pool else np.empty(aval.shape, aval.dtype)
                    if s not in last_read:  # never read: its buffer is free again at once
                        free.setdefault(key, []).append(buffers[s])
            for r in releases.get(k, ()):
                if r in buffers and r not in handed:
                    b = buffers[r]
                    free.setdefault((b.shape, b.dtype), []).append(b)
        return buffers

    def _step(self, eqn, kind, ins, outs, buffer):
        if kind == "fallback":
            return _fallback_step(eqn, ins, outs)
        aval = eqn.outvars[0].aval
        if kind == "ufunc":
            self.ufuncs[len(self.steps)] = (_UFUNCS[eqn.prim.name][0], ins, outs[0], aval)
            return _ufunc_step(_UFUNCS[eqn.prim.name][0], ins, outs[0], buffer, aval)
        if kind == "select":
            bits = np.dtype(f"i{aval.dtype.itemsize}")
            zero = [k for k in (1, 2) if isinstance(self.template[ins[k]], np.ndarray)
                    and not self.template[ins[k]].view(bits).any()]
            return _select_step(ins, outs[0], buffer, aval, zero[0] if zero else None)
        if kind == "convert":
            return _convert_step(ins[0], outs[0], buffer, aval)
        if kind == "view":
            return _view_step(ins[0], outs[0], tuple(aval.shape))
        if kind == "conv":
            self.uses_blas = True
            return _conv_step(cpu_conv.IMPLS[eqn.prim.name], ins, outs[0], eqn.params)
        if kind == "reduce":
            return _reduce_step(_REDUCTIONS[eqn.prim.name], ins[0], outs[0], buffer, aval,
                                tuple(eqn.params["axes"]))
        # matmul
        self.uses_blas = True
        lhs = eqn.invars[0]
        k_size = lhs.aval.shape[eqn.params["dimension_numbers"][0][0][0]]
        flops = 2 * aval.size * k_size
        if flops >= BLAS_PARALLEL_FLOPS and self.threads is None:
            blas = blas_threads()
            if blas.available and blas.default > 1:
                self.threads = PlanThreads(blas.default)
        args = (ins, outs[0], buffer, aval, _matmul_layout(eqn))
        self.matmuls[len(self.steps)] = args  # rebuilt by _loop_steps
        return _matmul_step(*args)

    # -- run --

    def __call__(self, bufs, donated=()) -> list:
        # Donation buys nothing here: arguments are never written, outputs are fresh.
        lock = self._lock
        if not lock.acquire(blocking=False):
            return self.plain(bufs)  # re-entered: this call must not share our buffers
        try:
            env = self.template.copy()
            for s, b in zip(self.in_slots, bufs):
                env[s] = b
            blas = self._set_blas() if self.uses_blas else None
            token = _errstate.set(_IGNORE_ALL)
            try:
                for step in self.step_fns:
                    step(env)
            finally:
                _errstate.reset(token)
                if blas is not None:
                    self._reset_blas(*blas)
            return [env[s] for s in self.out_slots]
        finally:
            lock.release()

    def _set_blas(self) -> tuple | None:
        """Sets OpenBLAS's thread count for a call: one, or what ``threads`` picks; returns
        what ``_reset_blas`` takes, or None. Only the outermost plan sets it: a loop body's
        plan, run by its loop primitive inside another plan's call, finds it set."""
        if _outermost[0]:
            return None
        blas = blas_threads()
        if not blas.available:
            return None
        previous = blas.get()
        count = 1 if self.threads is None else self.threads.pick()
        blas.set(count)
        _outermost[0] = True
        return previous, count, perf_counter()

    def _reset_blas(self, previous: int, count: int, start: float) -> None:
        if self.threads is not None:
            self.threads.record(count, perf_counter() - start)
        _outermost[0] = False
        blas_threads().set(previous)

    def scan(self, fixed, carry, xs, *, length: int, reverse: bool) -> list | None:
        """Runs the plan as a scan body ``length`` times; returns the final carry, then the
        stacked ys; None when the plan is running already (the caller then calls it step by
        step, and each call runs the plain executable).

        ``fixed`` (the body's leading, loop-invariant inputs) are bound once; each step's
        carry outputs become the next step's carry inputs as they are (fresh arrays from
        the pools, so no copy); xs are read as views of their step; ys are copied into
        stacked arrays allocated once, each computed y written by its step straight into
        its row (no copy; a carry that is also a y is that row). The lock, the error state and OpenBLAS's thread count
        are set once for the loop, not per step (that was ~10 us of a 25 us step of C6's
        RNN). Products that read an invariant input transposed read a contiguous copy made
        once: OpenBLAS's small products with a transposed operand took twice as long
        (32x128 @ (128x128).T: 19 against 10 us).

        >>> import flamefx
        >>> closed = flamefx.make_jaxpr(lambda c, x: (c + x, c * x))(1.0, 2.0)
        >>> plan = CpuPlan(closed.jaxpr)
        >>> c, ys = plan.scan([], [np.float32(1)], [np.arange(3, dtype=np.float32)],
        ...                   length=3, reverse=False)
        >>> float(c), ys.tolist()
        (4.0, [0.0, 1.0, 4.0])
        """
        num_carry, n_fixed = len(carry), len(fixed)
        if not self._lock.acquire(blocking=False):
            return None
        try:
            prologue, steps, direct, copied, batched = self._loop_steps(n_fixed, num_carry)
            ys = [np.empty((length,) + v.aval.shape, v.aval.dtype)
                  for v in self.jaxpr.outvars[num_carry:]]
            direct = [(s, ys[j]) for j, s in direct]
            copied = [(ys[j], s) for j, s in copied]
            env = self.template.copy()
            for s, b in zip(self.in_slots, fixed):
                env[s] = b
            carry_in = self.in_slots[n_fixed:n_fixed + num_carry]
            x_in = self.in_slots[n_fixed + num_carry:]
            carry_out = self.out_slots[:num_carry]
            blas = self._set_blas() if self.uses_blas else None
            token, restore = _errstate.set(_IGNORE_ALL), None
            try:
                for step in prologue:
                    step(env)
                products = [(s, np.matmul(xs[j].reshape(-1, xs[j].shape[-1]),
                                          env[w].T if tw else env[w]).reshape((length,) + shape))
                            for s, j, w, tw, shape in batched]
                restore = self._loop_on_one_thread() if self.uses_blas else None
                for t in range(length):
                    i = length - 1 - t if reverse else t
                    for s, c in zip(carry_in, carry):
                        env[s] = c
                    for s, x in zip(x_in, xs):
                        env[s] = x[i, ...]  # a 0-d slice stays an array
                    for s, y in direct:
                        env[s] = y[i, ...]
                    for s, product in products:
                        env[s] = product[i]
                    for step in steps:
                        step(env)
                    carry = [env[s] for s in carry_out]
                    for y, s in copied:
                        y[i] = env[s]
            finally:
                _errstate.reset(token)
                if restore is not None:
                    blas_threads().set(restore)
                if blas is not None:
                    self._reset_blas(*blas)
            # A carry that is a row of a y is copied once, so the two outputs share nothing.
            return [np.array(c) if c.base is not None else c for c in map(np.asarray, carry)] \
                + ys
        finally:
            self._lock.release()

    def _loop_on_one_thread(self) -> int | None:
        """Inside another plan's call on OpenBLAS's threads, sets one thread for this loop
        of small products (none over BLAS_PARALLEL_FLOPS); returns the count to set back,
        or None. Quiet, C6's 32x128x128 products took the same on one or two threads; on
        two, a busy core made the loop's 300 products wait on OpenBLAS's threads (C6 up
        to 11 ms a call against 7 on one thread)."""
        if not _outermost[0] or self.threads is not None:
            return None
        blas = blas_threads()
        count = blas.get() if blas.available else 1
        if count == 1:
            return None
        blas.set(1)
        return count

    def _loop_steps(self, n_fixed: int, num_carry: int) -> tuple:
        """(prologue, steps, direct, copied, batched) for ``scan`` with ``n_fixed`` invariant
        inputs and ``num_carry`` carries. Products that read an invariant input transposed
        read instead a contiguous copy the prologue makes. ``batched``: (out slot, xs
        index, invariant slot, transposed, shape) for the products of a step's x by an
        invariant matrix, made for all steps at once before the loop as one product
        ((length * rows, k) @ (k, n); C6's 100 products of 32x64 by 64x128: 6.2 us each on
        one thread, 560 us together, and the large one runs on OpenBLAS's threads). ``direct``: (y index, slot) for the
        ys a ufunc or product computes, whose step writes into ``env[slot]`` (the loop
        puts the y's row there: C6's RNN copied 3 rows a step, 2 us); ``copied``: (y
        index, out slot) for the others (an input handed out, a fallback's result)."""
        cached = self._loops.get((n_fixed, num_carry))
        if cached is not None:
            return cached
        invariant, inputs = set(self.in_slots[:n_fixed]), set(self.in_slots)
        makers = {args[1]: k for k, args in self.matmuls.items() if args[4][2] is None}
        makers.update((args[2], k) for k, args in self.ufuncs.items())
        x_in = {s: j for j, s in enumerate(self.in_slots[n_fixed + num_carry:])}
        targets, direct, copied, batched = {}, [], [], []
        for j, s in enumerate(self.out_slots[num_carry:]):
            if s in makers and s not in inputs and s not in targets:
                targets[s] = self._const(None)
                direct.append((j, targets[s]))
            else:
                copied.append((j, s))
        prologue, steps = [], list(self.step_fns)
        for k, (ins, o, buffer, aval, (ta, tb, rows)) in self.matmuls.items():
            if rows is None and not ta and ins[0] in x_in and ins[1] in invariant and \
                    len(aval.shape) == 2 and o not in targets:
                batched.append((o, x_in[ins[0]], ins[1], tb, tuple(aval.shape)))
                steps[k] = None
                continue
            if rows is not None:
                continue
            ins, flags = list(ins), [ta, tb]
            for j in (0, 1):
                if flags[j] and ins[j] in invariant:
                    src, ins[j], flags[j] = ins[j], self._const(None), False
                    prologue.append(_contiguous_transpose_step(src, ins[j]))
            if flags != [ta, tb] or o in targets:
                steps[k] = _matmul_step(ins, o, buffer, aval, (*flags, None), targets.get(o))
        for k, (fn, ins, o, aval) in self.ufuncs.items():
            if o in targets:
                steps[k] = _ufunc_step(fn, ins, o, None, aval, targets[o])
        steps = tuple(step for step in steps if step is not None)
        cached = self._loops[(n_fixed, num_carry)] = (prologue, steps, direct, copied, batched)
        return cached

    def profile(self, bufs, repeats: int = 20) -> list[dict]:
        """Median seconds of each step over ``repeats`` calls (one timer read between
        steps): dicts of step, kind, what, seconds, in step order.

        >>> rows = plan.profile(bufs)   # doctest: +SKIP
        >>> sorted(rows, key=lambda r: -r["seconds"])[:3]   # doctest: +SKIP
        """
        times = [[] for _ in self.step_fns]
        blas = blas_threads() if self.uses_blas else None
        previous = blas.get() if blas is not None and blas.available else None
        if previous is not None:
            blas.set(1)  # as in a call
        for _ in range(repeats):
            env = self.template.copy()
            for s, b in zip(self.in_slots, bufs):
                env[s] = b
            with np.errstate(all="ignore"):
                for k, step in enumerate(self.step_fns):
                    start = perf_counter()
                    step(env)
                    times[k].append(perf_counter() - start)
        if previous is not None:
            blas.set(previous)
        return [{"step": k, "kind": kind, "what": what,
                 "seconds": sorted(t)[len(t) // 2]}
                for k, ((kind, what), t) in enumerate(zip(self.labels, times))]

    def plain(self, bufs) -> list:
        """The call through the plain executable (every equation through its impl)."""
        if self._plain is None:
            from flamefx.kernels.executor import CpuExecutable
            self._plain = CpuExecutable(self.jaxpr)
        return self._plain(bufs)


def _literal(v: Literal):
    buf = v.val.buffer
    return buf if isinstance(buf, np.ndarray) else buf.get()
