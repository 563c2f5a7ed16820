"""jit: trace a function once per signature, optimize the jaxpr, compile it, replay it.

A jitted function flattens its arguments, looks up (tree structure, avals with weak types,
static argument values, platform) in its cache, and on a miss traces the body into a
jaxpr, runs the passes (flamefx/transforms/passes.py) and compiles an executable for the
device (flamefx/kernels/executor.py). At the top level a call goes straight to the
executable; under another transform (grad, vmap, an outer jit) it binds the ``jit_call``
primitive, whose rules re-trace the body under that transform and compile the result too,
so ``grad(jit(f))`` runs both passes compiled. A top-level call with the structure and
signature of the last one (a training step) neither flattens nor looks up: ``_CallPlan``
checks its leaves with code generated for that structure.

>>> import flamefx, flamefx.numpy as fnp
>>> f = jit(lambda x: x * 2.0 + 1.0)
>>> f(fnp.ones(3)).tolist()
[3.0, 3.0, 3.0]
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
from flamefx import config, core, dtypes, tree_util
from flamefx.core import Array, EvalTrace, Primitive, ShapedArray, Tracer
from flamefx.devices import Device, cupy, default_device, devices, move_buffer
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.jaxpr import Jaxpr, eval_jaxpr, hoist_consts, trace_to_jaxpr
from flamefx.transforms import passes

log = logging.getLogger("flamefx.jit")


# --- the compiled program behind one cache entry ----------------------------------------------


class Program:
    """An optimized, const-hoisted jaxpr and what was built from it: one executable per
    device, and the programs derived from it by AD and vmap (keyed by what they depend on).
    It is the ``program`` param of ``jit_call`` (compared by identity)."""

    def __init__(self, jaxpr: Jaxpr, name: str):
        self.jaxpr = jaxpr
        self.name = name
        self.executables: dict[Any, Any] = {}
        self.derived: dict[tuple, Program] = {}

    def __repr__(self):
        return f"Program({self.name}, {len(self.jaxpr.eqns)} eqns)"

    def executable(self, device: Device):
        exe = self.executables.get(device)
        if exe is None:
            exe = self.executables[device] = _compile(self.jaxpr, device)
        return exe


def _compile(jaxpr: Jaxpr, device: Device):
    from flamefx.kernels import executor
    if device.platform == "gpu":
        exe = executor.GpuExecutable(jaxpr, device)
        if passes.calls_host(jaxpr):  # a graph replay would skip the Python callbacks
            exe.graph_eligible = False
        return exe
    from flamefx.kernels import cpu_plan
    if cpu_plan.ENABLED:  # bound NumPy calls; FLAMEFX_CPU_PLAN=plain forces the interpreter
        return cpu_plan.CpuPlan(jaxpr)
    return executor.CpuExecutable(jaxpr)


def make_program(flat_fn: Callable, in_avals, name: str) -> tuple[Program, list]:
    """Traces ``flat_fn`` at ``in_avals``, optimizes it; returns (program, consts)."""
    closed = passes.optimize(trace_to_jaxpr(flat_fn, in_avals))
    jaxpr, consts = hoist_consts(closed)
    return Program(jaxpr, name), consts


# --- the jit_call primitive ---------------------------------------------------------------------


def _jit_call_abstract_eval(*avals, jaxpr, program, donated):
    expected = jaxpr.in_avals
    if len(avals) != len(expected) or any(
            (a.shape, a.dtype) != (e.shape, e.dtype) for a, e in zip(avals, expected)):
        raise FlamefxTypeError(f"{program.name} was compiled for "
                               f"({', '.join(e.str_short() for e in expected)})")
    return jaxpr.out_avals


def _jit_call_impl(*bufs, jaxpr, program, donated):
    return program.executable(devices("cpu")[0])(bufs)


def _jit_call_cuda_impl(*bufs, jaxpr, program, donated):
    device = Device("gpu", cupy().cuda.Device().id)
    return program.executable(device)(bufs)


def _eval_program(program: Program):
    return lambda *args: eval_jaxpr(program.jaxpr, [], *args)


def _bind_program(program: Program, consts, args) -> list:
    return core.bind_list(jit_call_p, *consts, *args, jaxpr=program.jaxpr, program=program,
                          donated=(False,) * (len(consts) + len(args)))


def _aval_of(x) -> ShapedArray:
    return core.get_aval(x)


def _of_diff_args(jaxpr: Jaxpr, primals: list, diff: tuple) -> Callable:
    """``jaxpr`` as a function of its inputs at positions ``diff`` only, the others fixed
    to ``primals`` (what the derivative rules below differentiate)."""
    def forward(*diff_primals):
        full = list(primals)
        for i, p in zip(diff, diff_primals):
            full[i] = p
        return eval_jaxpr(jaxpr, [], *full)

    return forward


def _jit_call_vjp(cts, primals, outs, *, jaxpr, program, donated):
    # The backward program re-computes the forward from the primals, so it is one compiled
    # call that needs nothing saved from the forward call.
    from flamefx.transforms import ad
    diff = tuple(i for i, p in enumerate(primals) if dtypes.is_inexact(_aval_of(p).dtype))
    ct_idx = tuple(j for j, ct in enumerate(cts) if ct is not None)
    key = ("vjp", diff, ct_idx)
    derived = program.derived.get(key)
    if derived is None:
        n = len(primals)
        # The forward call printed already: the recomputation here does not print again.
        recomputed = passes.without_debug_callbacks(program.jaxpr)

        def backward(*flat):
            primals_in, cts_in = list(flat[:n]), flat[n:]
            forward = _of_diff_args(recomputed, primals_in, diff)
            out_values, pullback = ad.vjp(forward, *[primals_in[i] for i in diff])
            full_cts = [ad.zeros_like(o) for o in out_values]
            for j, ct in zip(ct_idx, cts_in):
                full_cts[j] = ct
            return list(pullback(full_cts))

        in_avals = [_aval_of(p) for p in primals] + [_aval_of(cts[j]) for j in ct_idx]
        derived = _cached_derived(program, key, backward, in_avals, f"vjp({program.name})")
    grads = _bind_program(derived[0], derived[1], list(primals) + [cts[j] for j in ct_idx])
    result = [None] * len(primals)
    for i, g in zip(diff, grads):
        result[i] = g
    return result


def _jit_call_jvp(primals, tangents, *, jaxpr, program, donated):
    from flamefx.transforms import ad
    diff = tuple(i for i, (p, t) in enumerate(zip(primals, tangents))
                 if t is not None and dtypes.is_inexact(_aval_of(p).dtype))
    key = ("jvp", diff)
    derived = program.derived.get(key)
    n, n_out = len(primals), len(jaxpr.outvars)
    if derived is None:
        def forward_with_tangents(*flat):
            primals_in, tangents_in = list(flat[:n]), flat[n:]
            forward = _of_diff_args(program.jaxpr, primals_in, diff)
            outs, tangents_out = ad.jvp(forward, [primals_in[i] for i in diff],
                                        list(tangents_in))
            return list(outs) + list(tangents_out)

        in_avals = [_aval_of(p) for p in primals] + [_aval_of(tangents[i]) for i in diff]
        derived = _cached_derived(program, key, forward_with_tangents, in_avals,
                                  f"jvp({program.name})")
    results = _bind_program(derived[0], derived[1], list(primals) + [tangents[i] for i in diff])
    outs, tangents_out = results[:n_out], results[n_out:]
    tangents_out = [t if dtypes.is_inexact(o.aval.dtype) else None
                    for o, t in zip(jaxpr.outvars, tangents_out)]
    return outs, tangents_out


def _jit_call_batch(axis_size, args, bdims, *, jaxpr, program, donated):
    from flamefx.transforms.batching import vmap
    key = ("vmap", tuple(bdims), axis_size)
    derived = program.derived.get(key)
    if derived is None:
        batched = vmap(_eval_program(program), in_axes=tuple(bdims), axis_size=axis_size)
        derived = _cached_derived(program, key, lambda *a: list(batched(*a)),
                                  [_aval_of(a) for a in args], f"vmap({program.name})")
    outs = _bind_program(derived[0], derived[1], args)
    return outs, [0] * len(outs)


def _cached_derived(program: Program, key, flat_fn, in_avals, name) -> tuple[Program, list]:
    derived, consts = make_program(flat_fn, in_avals, name)
    if not any(isinstance(c, Tracer) for c in consts):
        program.derived[key] = (derived, consts)
    return derived, consts


jit_call_p = Primitive(
    "jit_call", abstract_eval=_jit_call_abstract_eval, impl=_jit_call_impl,
    cuda_impl=_jit_call_cuda_impl, vjp=_jit_call_vjp, jvp=_jit_call_jvp,
    batch=_jit_call_batch, multiple_results=True)


# --- the jit API -----------------------------------------------------------------------------


class _CacheEntry:
    __slots__ = ("consts", "donated", "executable", "key", "out_tree", "plan", "program",
                 "signature", "unflatten")

    def __init__(self, program, consts, out_tree, signature, donated, key):
        self.program, self.consts, self.out_tree = program, consts, out_tree
        self.signature, self.donated, self.key = signature, donated, key
        self.executable = self.plan = None
        # A single-array result (the common case) needs no tree rebuilt around it; a tree
        # is rebuilt by code generated for its structure (on the first call that reuses it).
        self.unflatten = (operator.itemgetter(0) if out_tree == tree_util.LEAF
                          else functools.partial(_build_outputs, self))


def _build_outputs(entry: _CacheEntry, outs: list):
    entry.unflatten = entry.out_tree.builder()
    return entry.unflatten(outs)


def _leaf_key(x):
    if type(x) is Array:
        buf = x.buffer
        return buf.shape, buf.dtype, x._weak
    aval = core.get_aval(x)
    return aval.shape, aval.dtype, aval.weak_type


def _leaf_signature(leaves: list) -> tuple[tuple, Device, bool]:
    """(each leaf's cache key, the device the call runs on, whether all leaves are Arrays),
    in one pass over the leaves: a model's state has hundreds, and every call reads them.

    NumPy leaves are replaced in ``leaves`` by Arrays in JAX's canonical dtypes (float64
    data runs in float32 unless x64 is on); flamefx Arrays keep theirs. Committed arrays
    decide where the call runs (as in eager mode); then any array; then the default."""
    keys = []
    committed_device = first_device = None
    all_arrays = True
    for i, x in enumerate(leaves):
        kind = type(x)
        if kind is not Array and isinstance(x, (np.ndarray, np.generic)):
            x = leaves[i] = core.to_canonical_array(x)
            kind = Array
        if kind is Array and x._buf is not None:
            buf = x._buf
            keys.append((buf.shape, buf.dtype, x._weak))
            if committed_device is None:
                if x._committed:
                    committed_device = x._device
                elif first_device is None:
                    first_device = x._device
            continue
        all_arrays = False
        keys.append(_leaf_key(x))  # a deleted Array raises here
    return tuple(keys), committed_device or first_device or default_device(), all_arrays


def _flat_key(args):
    """A cache key for positional, all-Array arguments (None otherwise, or if one is deleted)."""
    key = []
    for a in args:
        if type(a) is not Array or a._buf is None:
            return None
        buf = a._buf
        key.append((buf.shape, buf.dtype, a._weak, a._device))
    return tuple(key)


def _as_tuple(x) -> tuple:
    if x is None:
        return ()
    return (x,) if isinstance(x, (int, str)) else tuple(x)


class Jitted:
    """The callable ``jit`` returns; ``lower(*args)`` shows what a call compiles to."""

    def __init__(self, fun: Callable, static_argnums, static_argnames, donate_argnums):
        self.fun = fun
        self.__name__ = getattr(fun, "__name__", "fun")
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__wrapped__ = fun
        try:
            self._params = [p.name for p in inspect.signature(fun).parameters.values()
                            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            self._params = []
        static_argnums = set(_as_tuple(static_argnums))
        static_argnames = set(_as_tuple(static_argnames))
        # As in JAX, a static argument may be named either way.
        static_argnums |= {i for i, n in enumerate(self._params) if n in static_argnames}
        static_argnames |= {self._params[i] for i in static_argnums if i < len(self._params)}
        self.static_argnums = frozenset(static_argnums)
        self.static_argnames = frozenset(static_argnames)
        self.donate_argnums = frozenset(_as_tuple(donate_argnums))
        self._cache: dict[tuple, _CacheEntry] = {}
        self._flat_cache: dict[tuple, _CacheEntry] = {}
        self._last_plan: _CallPlan | None = None
        self._plain = not self.static_argnums and not self.static_argnames

    def _arg_name(self, i: int) -> str:
        return self._params[i] if i < len(self._params) else f"args[{i}]"

    # -- signature and cache lookup --

    def _split(self, args, kwargs):
        statics = []
        dyn_args = []
        for i, a in enumerate(args):
            if i in self.static_argnums:
                statics.append((self._arg_name(i), a))
            else:
                dyn_args.append(a)
        dyn_kwargs = {}
        for k, v in kwargs.items():
            if k in self.static_argnames:
                statics.append((k, v))
            else:
                dyn_kwargs[k] = v
        for name, value in statics:
            try:
                hash(value)
            except TypeError:
                raise FlamefxValueError(
                    f"static argument {name!r} of {self.__name__} has an unhashable value "
                    f"of type {type(value).__name__}; static arguments are cache keys. Pass a "
                    f"tuple instead of a list, or make it a traced (non-static) argument."
                    f"\n  at {user_frame()}") from None
        return dyn_args, dyn_kwargs, tuple(statics)

    def _lookup(self, args, kwargs):
        """(cache entry, flat leaves, device)."""
        return self._lookup_leaves(args, kwargs)[:3]

    def _lookup_leaves(self, args, kwargs, split=None):
        """(cache entry, flat leaves, device, whether every leaf is an Array); ``split`` is
        ``_split(args, kwargs)`` if the caller has it."""
        dyn_args, dyn_kwargs, statics = split or self._split(args, kwargs)
        leaves, in_tree = tree_util.tree_flatten((dyn_args, dyn_kwargs))
        leaf_keys, device, all_arrays = _leaf_signature(leaves)
        key = (in_tree, statics, leaf_keys, device)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._trace(args, kwargs, leaves, in_tree, statics, key)
        return entry, leaves, device, all_arrays

    def _trace(self, args, kwargs, leaves, in_tree, statics, key) -> _CacheEntry:
        signature = self._signature(args, kwargs)
        if config.read("log_compiles"):
            log.warning(self._miss_message(signature))
        static_pos = {i: a for i, a in enumerate(args) if i in self.static_argnums}
        static_kw = {k: v for k, v in kwargs.items() if k in self.static_argnames}
        out_tree_box = []

        def flat_fn(*flat):
            dyn_args, dyn_kwargs = tree_util.tree_unflatten(in_tree, flat)
            it = iter(dyn_args)
            full = [static_pos[i] if i in static_pos else next(it) for i in range(len(args))]
            out = self.fun(*full, **dyn_kwargs, **static_kw)
            out_leaves, out_tree = tree_util.tree_flatten(out)
            out_tree_box.append(out_tree)
            return out_leaves

        in_avals = [core.get_aval(x) for x in leaves]
        program, consts = make_program(flat_fn, in_avals, f"jit({self.__name__})")
        donated = self._donated_leaves(args, kwargs, len(consts))
        entry = _CacheEntry(program, consts, out_tree_box[0], signature, donated, key)
        if not any(isinstance(c, Tracer) for c in consts):
            self._cache[key] = entry
        return entry

    def _donated_leaves(self, args, kwargs, n_consts) -> tuple:
        flags = [False] * n_consts
        for i, a in enumerate(args):
            if i not in self.static_argnums:
                flags += [i in self.donate_argnums] * len(tree_util.tree_leaves(a))
        flags += [False] * len(tree_util.tree_leaves(
            {k: v for k, v in kwargs.items() if k not in self.static_argnames}))
        return tuple(flags)

    def _signature(self, args, kwargs) -> dict[str, str]:
        """What each argument looks like to the cache, for log_compiles' explanations."""
        def describe(name, value, static):
            if static:
                return f"static {value!r}"
            leaves, tree = tree_util.tree_flatten(value)
            avals = ", ".join(core.get_aval(x).str_short()
                              + (" weak" if core.get_aval(x).weak_type else "") for x in leaves)
            return avals if tree == tree_util.LEAF else f"{tree} with ({avals})"
        sig = {self._arg_name(i): describe(self._arg_name(i), a, i in self.static_argnums)
               for i, a in enumerate(args)}
        sig.update({k: describe(k, v, k in self.static_argnames) for k, v in kwargs.items()})
        return sig

    def _miss_message(self, signature) -> str:
        described = ", ".join(f"{k}: {v}" for k, v in signature.items())
        head = f"Compiling {self.__name__} for ({described})"
        if not self._cache:
            return head + ": first call."
        def distance(entry):
            names = set(entry.signature) | set(signature)
            return sum(entry.signature.get(n) != signature.get(n) for n in names)
        nearest = min(self._cache.values(), key=distance)
        changes = [f"argument {n!r} changed from {nearest.signature.get(n, '<absent>')} to "
                   f"{signature.get(n, '<absent>')}"
                   for n in sorted(set(nearest.signature) | set(signature))
                   if nearest.signature.get(n) != signature.get(n)]
        return head + ": cache miss; " + ("; ".join(changes) or "the platform changed") + "."

    # -- calling --

    def __call__(self, *args, **kwargs):
        if config.read("disable_jit"):
            return self.fun(*args, **kwargs)
        at_top = type(core.current_trace()) is EvalTrace
        flat_key = _flat_key(args) if at_top and self._plain and not kwargs else None
        if flat_key is not None:
            # The common case (positional Arrays, no statics) skips pytree flattening.
            entry = self._flat_cache.get(flat_key)
            if entry is not None:
                outs = entry.executable(args)
                if config.nonfinite_checks is not None:  # jax_debug_nans / jax_debug_infs
                    _check_nonfinite(entry, args, outs)
                return entry.unflatten(outs)
        split = self._split(args, kwargs)
        if at_top and self._last_plan is not None:
            # A training step: the structure and signature of the last call, checked by the
            # plan made for them (no flattening, no cache key built).
            out = self._last_plan(split)
            if out is not _MISS:
                return out
        entry, leaves, device, all_arrays = self._lookup_leaves(args, kwargs, split)
        if at_top and (all_arrays or not any(isinstance(x, Tracer) for x in leaves)):
            outs = self._run(entry, leaves, device)
            if config.nonfinite_checks is not None:
                _check_nonfinite(entry, leaves, outs)
            if flat_key is not None:
                self._flat_cache[flat_key] = entry
            elif all_arrays and self._cache.get(entry.key) is entry:
                if entry.plan is None:
                    entry.plan = _CallPlan(entry)
                self._last_plan = entry.plan
        else:
            outs = core.bind_list(jit_call_p, *entry.consts, *leaves,
                                  jaxpr=entry.program.jaxpr, program=entry.program,
                                  donated=entry.donated)
        return tree_util.tree_unflatten(entry.out_tree, outs)

    def _run(self, entry: _CacheEntry, leaves, device) -> list:
        """The fast path at the top level: straight to the executable, no bind."""
        exe = entry.executable
        if exe is None or exe.device_key != device:
            exe = entry.executable = _BoundExecutable(entry, device)
        return exe(leaves)

    def profile(self, *args, graph: bool = False, **kwargs):
        """Times this call on the GPU, host gaps excluded (see ``GpuExecutable.profile``):
        one dict per launch with kind, details, gpu_ms, host_us, exact. ``graph=True``
        times a replay of the call's captured CUDA graph instead (``profile_graph``: a
        dict, or None while no graph has been captured).

        >>> for row in step.profile(params, x):  print(row)    # doctest: +SKIP
        """
        entry, leaves, device = self._lookup(args, kwargs)
        if device.platform != "gpu":
            raise FlamefxValueError("profile times GPU launches: pass arrays on a GPU")
        bound = _BoundExecutable(entry, device)
        bufs = bound.const_bufs + [core.to_array(x, device=device).buffer for x in leaves]
        return bound.run.profile_graph(bufs) if graph else bound.run.profile(bufs)

    def lower(self, *args, platform: str | None = None, **kwargs) -> Lowered:
        """Traces and optimizes for these arguments; ``as_text()`` shows the result.

        ``platform='gpu'`` plans the GPU kernels (and gives their CUDA source) even on a
        machine without a GPU.

        >>> import flamefx.numpy as fnp
        >>> print(jit(lambda x: x * 2.0).lower(fnp.ones(3)).as_text())   # doctest: +SKIP
        """
        entry, _, device = self._lookup(args, kwargs)
        if platform is not None and platform != device.platform:
            device = Device(platform, 0)
        return Lowered(entry.program, device)


def _check_nonfinite(entry: _CacheEntry, leaves, outs) -> None:
    from flamefx import nan_checks
    nan_checks.check_jitted(entry.program.name, entry.program.jaxpr, entry.consts, leaves, outs)


class _BoundExecutable:
    """A cache entry's executable for one device, with its constants already on it."""

    __slots__ = ("any_donated", "const_bufs", "device", "device_key", "donated", "run", "weak")

    def __init__(self, entry: _CacheEntry, device):
        self.device_key = self.device = device
        self.run = entry.program.executable(device)
        self.const_bufs = [move_buffer(c.buffer, device) for c in entry.consts]
        n = len(entry.consts)
        self.donated = [i - n for i, d in enumerate(entry.donated) if d]
        self.any_donated = bool(self.donated)
        self.weak = [v.aval.weak_type for v in entry.program.jaxpr.outvars]

    def __call__(self, leaves) -> list:
        bufs = self.const_bufs.copy()
        device = self.device
        committed = False
        for x in leaves:
            # The lookup has checked that no Array here is deleted: _buf is its buffer.
            if type(x) is Array and (x._device is device or x._device == device):
                committed = committed or x._committed
                bufs.append(x._buf)
                continue
            if type(x) is Array:
                committed = committed or x._committed
            bufs.append(core.to_array(x, device=device).buffer)
        return self.run_buffers(bufs, leaves, committed)

    def run_buffers(self, bufs: list, leaves: list, committed: bool) -> list:
        """Runs on ``bufs`` (the constants' buffers, then the leaves'); the output Arrays."""
        if self.any_donated:
            outs = self.run(bufs, donated=[len(self.const_bufs) + i for i in self.donated])
            for i in self.donated:
                if type(leaves[i]) is Array:
                    leaves[i].delete()
        else:
            outs = self.run(bufs)
        # map builds the outputs without a Python-level loop (hundreds for a model's state).
        return list(map(Array, outs, repeat(self.device), self.weak, repeat(committed)))


_MISS = object()
_BUFFER = operator.attrgetter("_buf")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_WEAK = operator.attrgetter("_weak")
_DEVICE = operator.attrgetter("_device")
_COMMITTED = operator.attrgetter("_committed")
_ARRAY_ONLY = frozenset({Array})


class _CallPlan:
    """A top-level call with the structure and signature of an earlier one (a training
    step's), checked and run by what was worked out for that one: the leaves are read by
    code generated for the structure (``PyTreeDef.leaves_if_same``), their shapes, dtypes,
    weak types and device compared as whole lists (each read by ``map``, in C), and the
    outputs rebuilt by code generated for theirs. The README UNet's state (574 leaves), CPU
    process time of a jitted identity: 1.2 ms -> 0.55 ms."""

    __slots__ = ("device", "dtypes", "entry", "executable", "in_tree", "shapes", "statics",
                 "weak")

    def __init__(self, entry: _CacheEntry):
        self.in_tree, self.statics, leaf_keys, self.device = entry.key
        self.entry, self.executable = entry, entry.executable
        self.shapes = [k[0] for k in leaf_keys]
        self.dtypes = [k[1] for k in leaf_keys]
        self.weak = [k[2] for k in leaf_keys]

    def __call__(self, split):
        """The call's outputs, or ``_MISS`` (nothing run) if ``split`` (``Jitted._split``'s
        arguments and statics) does not match: the caller takes the general path."""
        dyn_args, dyn_kwargs, statics = split
        if statics != self.statics:
            return _MISS
        leaves = self.in_tree.leaves_if_same((dyn_args, dyn_kwargs))
        # No leaves: the device would be the default one, which may have changed.
        if not leaves or not _ARRAY_ONLY.issuperset(map(type, leaves)):
            return _MISS
        try:
            bufs = list(map(_BUFFER, leaves))
            if list(map(_SHAPE, bufs)) != self.shapes:
                return _MISS
        except AttributeError:  # a deleted Array: the general path says so
            return _MISS
        # All on the plan's device (so the call runs there, committed or not); count
        # compares by identity first.
        if list(map(_DTYPE, bufs)) != self.dtypes or list(map(_WEAK, leaves)) != self.weak \
                or list(map(_DEVICE, leaves)).count(self.device) != len(leaves):
            return _MISS
        exe = self.executable
        outs = exe.run_buffers(exe.const_bufs + bufs, leaves, any(map(_COMMITTED, leaves)))
        if config.nonfinite_checks is not None:
            _check_nonfinite(self.entry, leaves, outs)
        return self.entry.unflatten(outs)


class Lowered:
    """What a jitted call compiles to: the optimized jaxpr and, on the GPU, the kernels."""

    def __init__(self, program: Program, device):
        self.program = program
        self.device = device
        if device.platform == "gpu":
            from flamefx.kernels import fusion
            self.plan = fusion.plan(program.jaxpr)
        else:
            self.plan = None

    @property
    def jaxpr(self) -> Jaxpr:
        return self.program.jaxpr

    @property
    def kernel_count(self) -> int:
        """Kernel launches per call: fused kernels plus unfused primitive calls (GPU), or
        equations run (CPU)."""
        if self.plan is None:
            return len(self.program.jaxpr.eqns)
        return self.plan.kernel_count

    @property
    def kernel_sources(self) -> list[str]:
        return [] if self.plan is None else self.plan.sources()

    def as_text(self) -> str:
        text = f"# {self.program.name} on {self.device}\n{self.program.jaxpr}"
        if self.plan is not None:
            text += f"\n# {self.kernel_count} kernel launches\n{self.plan.describe()}"
            for i, src in enumerate(self.kernel_sources):
                text += f"\n// --- fused kernel {i} ---\n{src}"
        return text


def jit(fun: Callable | None = None, *, static_argnums=(), static_argnames=(),
        donate_argnums=()):
    """Compiles ``fun``: traced once per argument signature, optimized, fused, replayed.

    ``static_argnums``/``static_argnames`` are passed as Python values (hashable; a new
    value retraces); ``donate_argnums`` hands those arguments' buffers to the call (they
    are deleted afterwards, the outputs may reuse their memory).

    >>> import flamefx.numpy as fnp
    >>> @jit
    ... def f(x, y):
    ...     return fnp.sum(x * y)
    >>> float(f(fnp.ones(3), fnp.ones(3)))
    3.0
    """
    if fun is None:
        return functools.partial(jit, static_argnums=static_argnums,
                                 static_argnames=static_argnames, donate_argnums=donate_argnums)
    if not callable(fun):
        raise FlamefxTypeError(f"jit expects a function, got {type(fun).__name__}")
    return Jitted(fun, static_argnums, static_argnames, donate_argnums)


__all__ = ["Jitted", "Lowered", "Program", "jit", "jit_call_p", "make_program"]
