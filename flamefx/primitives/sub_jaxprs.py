"""Sub-jaxprs of control-flow primitives: tracing user functions into them, running them
with compiled executables, and re-tracing them under vmap and jvp.

Shared by the ``cond``, ``while`` and ``scan`` primitives in control_flow.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from flamefx import core, dtypes
from flamefx import devices as _devices
from flamefx.core import ShapedArray
from flamefx.jaxpr import (ClosedJaxpr, Jaxpr, JaxprEqn, Var, eval_jaxpr, hoist_consts,
                           trace_to_jaxpr)
from flamefx.primitives.elementwise import convert_element_type
from flamefx.transforms.ad import JVPTrace, JVPTracer, zeros_like
from flamefx.transforms.batching import BatchTrace, BatchTracer, broadcast_batch, move_axis

# --- sub-jaxprs: tracing, running, and re-tracing them under a transform -------------------------


def _trace(flat_fn: Callable, in_avals) -> tuple[Jaxpr, list]:
    """Traces ``flat_fn`` into a const-free jaxpr; its constants become leading inputs."""
    return hoist_consts(trace_to_jaxpr(flat_fn, in_avals))


def _aval(x) -> ShapedArray:
    return core.get_aval(x)


def _is_float(x) -> bool:
    """Float or complex: the values that carry derivatives."""
    return dtypes.is_inexact(_aval(x).dtype)


def _same_type(a: ShapedArray, b: ShapedArray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype


@functools.lru_cache(maxsize=1024)
def _executable(jaxpr: Jaxpr, device: _devices.Device):
    """``jaxpr`` optimized and compiled for ``device`` once (jit's passes and executables)."""
    from flamefx.transforms import jit, passes
    program_jaxpr, consts = hoist_consts(passes.optimize(ClosedJaxpr(jaxpr, [])))
    program = jit.Program(program_jaxpr, "control-flow body")
    return program.executable(device), [_devices.move_buffer(c.buffer, device) for c in consts]


def _run(jaxpr: Jaxpr, bufs, device) -> list:
    run, const_bufs = _executable(jaxpr, device)
    return list(run(const_bufs + list(bufs)))


def _device_of(bufs) -> _devices.Device:
    return _devices.device_of_buffer(bufs[0]) if bufs else _devices.default_device()


def _eval_batched(jaxpr: Jaxpr, axis_size: int, args, in_batched, force_out):
    """Evaluates ``jaxpr`` under vmap on ``args`` (batched ones at axis 0) on the current trace.

    Returns (outs, out_batched): outputs that vary over the batch, or that ``force_out``
    asks for, come back batched at axis 0; the others unbatched.
    """
    with core.new_trace(BatchTrace, axis_size) as trace:
        tracers = [BatchTracer(trace, x, 0) if b else x for x, b in zip(args, in_batched)]
        outs = eval_jaxpr(jaxpr, [], *tracers)
    results, out_batched = [], []
    for o, force in zip(outs, force_out):
        if isinstance(o, BatchTracer) and o._trace is trace:
            results.append(move_axis(o.val, o.bdim, 0))
            out_batched.append(True)
        elif force:
            results.append(broadcast_batch(o, axis_size, 0))
            out_batched.append(True)
        else:
            results.append(o)
            out_batched.append(False)
    return results, out_batched


def _batched_aval(aval: ShapedArray, batched: bool, axis_size: int, axis: int = 0):
    if not batched:
        return aval
    return aval.update(shape=aval.shape[:axis] + (axis_size,) + aval.shape[axis:])


def _batch_jaxpr(jaxpr: Jaxpr, axis_size: int, in_batched, force_out):
    """The vmap of ``jaxpr`` as a jaxpr: returns (jaxpr, consts, out_batched)."""
    box = []

    def batched_fn(*args):
        outs, out_batched = _eval_batched(jaxpr, axis_size, args, in_batched, force_out)
        box.append(out_batched)
        return outs

    in_avals = [_batched_aval(v.aval, b, axis_size) for v, b in zip(jaxpr.invars, in_batched)]
    new_jaxpr, consts = _trace(batched_fn, in_avals)
    return new_jaxpr, consts, box[-1]


def _jvp_jaxpr(jaxpr: Jaxpr, nonzero, instantiate):
    """Forward mode of ``jaxpr`` as a jaxpr: returns (jaxpr, consts, out_nonzero).

    The new jaxpr takes (*primals, *tangents of the ``nonzero`` inputs) and returns
    (*outs, *tangents of the ``out_nonzero`` outputs); zero output tangents are dropped
    unless ``instantiate`` asks for them (float outputs only).
    """
    n_in = len(jaxpr.invars)
    box = []

    def jvp_fn(*args):
        given = iter(args[n_in:])
        tangents = [next(given) if nz else None for nz in nonzero]
        with core.new_trace(JVPTrace) as trace:
            tracers = [p if t is None else JVPTracer(trace, p, t)
                       for p, t in zip(args[:n_in], tangents)]
            outs = eval_jaxpr(jaxpr, [], *tracers)
        primals_out, tangents_out, out_nonzero = [], [], []
        for o, inst in zip(outs, instantiate):
            if isinstance(o, JVPTracer) and o._trace is trace:
                primals_out.append(o.primal)
                if o.tangent is not None:
                    tangents_out.append(o.tangent)
                    out_nonzero.append(True)
                    continue
                o = o.primal
            else:
                primals_out.append(o)
            wanted = inst and _is_float(o)
            if wanted:
                tangents_out.append(zeros_like(o))
            out_nonzero.append(wanted)
        box.append(out_nonzero)
        return primals_out + tangents_out

    in_avals = jaxpr.in_avals + [v.aval for v, nz in zip(jaxpr.invars, nonzero) if nz]
    new_jaxpr, consts = _trace(jvp_fn, in_avals)
    return new_jaxpr, consts, box[-1]


def _carry_fixed_point(step: Callable, carry_flags: list) -> list:
    """Grows ``carry_flags`` (batched / nonzero tangent) until the body's outputs agree."""
    for _ in range(len(carry_flags) + 1):
        out_flags = step(carry_flags)
        grown = [a or b for a, b in zip(carry_flags, out_flags)]
        if grown == carry_flags:
            return carry_flags
        carry_flags = grown
    return carry_flags


def _reorder(jaxpr: Jaxpr, in_groups, out_groups) -> Jaxpr:
    """Regroups a jaxpr's inputs and outputs: each group is a list of positions."""
    invars = [jaxpr.invars[i] for group in in_groups for i in group]
    outvars = [jaxpr.outvars[i] for group in out_groups for i in group]
    return Jaxpr([], invars, outvars, jaxpr.eqns)


def _split(seq, *sizes) -> list:
    """Cuts ``seq`` into lists of ``sizes``, plus the rest."""
    out, start = [], 0
    for n in sizes:
        out.append(list(seq[start:start + n]))
        start += n
    out.append(list(seq[start:]))
    return out


def _join_consts(traced) -> tuple[list[Jaxpr], list]:
    """Gives jaxprs traced separately (each with its own leading consts) one operand list:
    every jaxpr takes all the consts, and ignores the others'."""
    all_consts = [c for _, consts in traced for c in consts]
    jaxprs = []
    for i, (jaxpr, consts) in enumerate(traced):
        own, rest = jaxpr.invars[:len(consts)], jaxpr.invars[len(consts):]
        invars = []
        for k, (other, other_consts) in enumerate(traced):
            invars += own if k == i else [Var(v.aval) for v in other.invars[:len(other_consts)]]
        jaxprs.append(Jaxpr([], invars + rest, jaxpr.outvars, jaxpr.eqns))
    return jaxprs, all_consts


def _cast_outputs(jaxpr: Jaxpr, consts: list, targets) -> tuple[Jaxpr, list]:
    """Re-traces ``jaxpr`` converting its outputs to ``targets`` (for weak-typed outputs)."""
    def cast(*args):
        outs = eval_jaxpr(jaxpr, [], *args)
        return [o if _aval(o) == t else convert_element_type(o, t.dtype, weak_type=t.weak_type)
                for o, t in zip(outs, targets)]
    new_jaxpr, new_consts = _trace(cast, jaxpr.in_avals)
    return new_jaxpr, new_consts + consts


def _types(avals) -> str:
    return ", ".join(a.str_short() for a in avals) or "nothing"


def _split_known(jaxpr: Jaxpr, known_in, available_in, invariant_in) -> tuple[Jaxpr, Jaxpr]:
    """Partial evaluation: splits ``jaxpr`` into the equations computable from the inputs
    ``known_in`` marks (the forward part of a traced VJP) and the rest (the backward part).

    Returns (known, unknown). ``known`` takes the known inputs and returns the residuals:
    the known values that the rest reads, except the inputs ``available_in`` marks (the
    backward gets those itself) and values computed from ``invariant_in`` inputs alone (a
    loop's consts: the backward recomputes them rather than saving them every step).
    ``unknown`` takes (*residuals, *jaxpr's inputs) and returns jaxpr's outputs; an input
    saved as a residual appears a second time as an unread var. Effectful equations stay
    in the unknown part (they run where they ran before).
    """
    from flamefx.transforms.passes import eliminate_dead_code, has_effects
    jaxpr = eliminate_dead_code(jaxpr)  # no residuals for work nothing reads
    known = {v.id for v, k in zip(jaxpr.invars, known_in) if k}
    invariant = {v.id for v, i in zip(jaxpr.invars, invariant_in) if i}
    known_eqns, unknown_eqns = [], []
    for eqn in jaxpr.eqns:
        ins = [v.id for v in eqn.invars if isinstance(v, Var)]
        if has_effects(eqn) or not all(i in known for i in ins):
            unknown_eqns.append(eqn)
            continue
        known_eqns.append(eqn)
        known.update(v.id for v in eqn.outvars)
        if all(i in invariant for i in ins):
            unknown_eqns.append(eqn)
            invariant.update(v.id for v in eqn.outvars)
    skip = invariant | {v.id for v, a in zip(jaxpr.invars, available_in) if a}
    residuals, seen = [], set()
    for v in [v for e in unknown_eqns for v in e.invars] + jaxpr.outvars:
        if isinstance(v, Var) and v.id in known and v.id not in skip | seen:
            seen.add(v.id)
            residuals.append(v)
    known_jaxpr = eliminate_dead_code(Jaxpr(
        [], [v for v, k in zip(jaxpr.invars, known_in) if k], residuals, known_eqns))
    invars = [Var(v.aval) if v.id in seen else v for v in jaxpr.invars]
    return known_jaxpr, eliminate_dead_code(
        Jaxpr([], residuals + invars, jaxpr.outvars, unknown_eqns))


# --- scans: sums over the steps, taken out of the loop ------------------------------------------

# What the per-step operands of hoisted sums may add to a scan's stacked outputs (they live
# until the scan ends, beside the residuals that reverse mode stacks anyway).
HOIST_MAX_BYTES = 1 << 28


class HoistedSum(NamedTuple):
    """A scan carry its body only accumulates into (``acc + t1 + t2 ...``, acc read by
    nothing else), each term a product (no batch axes) or a sum of per-step values. The
    scan stacks those values (its xs are stacked already; others become new ys) and
    ``sum_hoisted`` computes every term once over all the steps: one GEMM of all the steps'
    rows instead of a small product and an add per step (what a hand-written
    backpropagation through time does for its weight gradients)."""
    carry: int
    add: JaxprEqn
    terms: list  # (eqn: dot_general or reduce_sum, operand sources, transposes of it)


def hoist_accumulators(jaxpr: Jaxpr, num_consts: int, num_carry: int, length: int,
                       candidates) -> tuple[Jaxpr, list[int], list[HoistedSum]]:
    """Takes the accumulations of the carries ``candidates`` (their indices) out of a scan
    body where each is a ``HoistedSum``. Returns the new body (without those carries; the
    new ys after the old ones), the indices of the carries it keeps, and the sums; an
    operand source is ("xs", m) (the scan's m-th xs) or ("ys", j) (the j-th new ys).

    >>> import flamefx, flamefx.numpy as fnp
    >>> from flamefx import lax
    >>> body = flamefx.make_jaxpr(lambda acc, h, x: (  # acc + x.T @ h
    ...     acc + lax.dot_general(x, h, (((0,), (0,)), ((), ()))), h))(
    ...     fnp.zeros((2, 3)), fnp.ones((4, 3)), fnp.ones((4, 2))).jaxpr
    >>> new, kept, sums = hoist_accumulators(body, 0, 2, 10, [0])
    >>> kept, len(new.eqns), [s.terms[0][1] for s in sums]   # h's stack is a new ys
    ([1], 0, [[('xs', 0), ('ys', 0)]])
    """
    from flamefx.transforms.passes import eliminate_dead_code, read_counts
    uses = read_counts(jaxpr)
    producer = {v.id: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    consts = {v.id for v in jaxpr.invars[:num_consts]}
    xs_at = {v.id: m for m, v in enumerate(jaxpr.invars[num_consts + num_carry:])}

    def only_use(v):  # the eqn computing v when v is read once, else None
        return producer.get(v.id) if isinstance(v, Var) and uses.get(v.id) == 1 else None

    def terms(v) -> list | None:
        eqn = only_use(v)
        if eqn is not None and eqn.prim.name == "add":
            parts = [terms(a) for a in eqn.invars]
            return None if None in parts else parts[0] + parts[1]
        flips = []  # transposes of the term, outermost first
        while eqn is not None and eqn.prim.name == "transpose":
            flips.append(eqn)
            eqn = only_use(eqn.invars[0])
        if eqn is None or not all(isinstance(a, Var) and a.id not in consts
                                  for a in eqn.invars):
            return None
        if (eqn.prim.name == "dot_general" and not any(eqn.params["dimension_numbers"][1])) \
                or eqn.prim.name == "reduce_sum":
            return [(eqn, eqn.invars, flips[::-1])]
        return None

    new_ys: list[Var] = []
    ys_at: dict[int, int] = {}
    hoisted, stacked = [], 0
    for c in candidates:
        acc_in, acc_out = jaxpr.invars[num_consts + c], jaxpr.outvars[c]
        add = only_use(acc_out)
        if add is None or add.prim.name != "add" or uses.get(acc_in.id) != 1 or \
                acc_in not in add.invars:
            continue
        found = terms(add.invars[1] if add.invars[0] is acc_in else add.invars[0])
        if found is None:
            continue
        fresh = {v.id: v for _, operands, _ in found for v in operands
                 if v.id not in xs_at and v.id not in ys_at}
        size = sum(length * v.aval.size * v.aval.dtype.itemsize for v in fresh.values())
        if stacked + size > HOIST_MAX_BYTES:
            continue
        stacked += size
        for v in fresh.values():
            ys_at[v.id] = len(new_ys)
            new_ys.append(v)
        hoisted.append(HoistedSum(c, add, [
            (eqn, [("xs", xs_at[v.id]) if v.id in xs_at else ("ys", ys_at[v.id])
                   for v in operands], flips) for eqn, operands, flips in found]))
    if not hoisted:
        return jaxpr, list(range(num_carry)), []
    gone = {h.carry for h in hoisted}
    kept = [k for k in range(num_carry) if k not in gone]
    invars = jaxpr.invars[:num_consts] + [jaxpr.invars[num_consts + k] for k in kept] \
        + jaxpr.invars[num_consts + num_carry:]
    outvars = [jaxpr.outvars[k] for k in kept] + jaxpr.outvars[num_carry:] + new_ys
    return eliminate_dead_code(Jaxpr([], invars, outvars, jaxpr.eqns)), kept, hoisted


def sum_hoisted(hoisted: HoistedSum, init, xs, new_ys):
    """``init`` (None: zero) plus the terms of ``hoisted``, each over all the steps of the
    stacked operands (``xs``, ``new_ys``: the scan's): one product contracting the step
    axis too, or one reduction over it."""
    total = init
    for eqn, sources, flips in hoisted.terms:
        operands = [xs[m] if kind == "xs" else new_ys[m] for kind, m in sources]
        term = _over_steps(eqn, operands)
        for flip in flips:
            term = flip.prim.bind(term, **flip.params)
        total = term if total is None else hoisted.add.prim.bind(total, term)
    return total


def _over_steps(eqn: JaxprEqn, operands):
    """``eqn`` (a product or a sum of one step's values) summed over the leading step axis of
    ``operands``."""
    if eqn.prim.name == "reduce_sum":
        axes = (0,) + tuple(a + 1 for a in eqn.params["axes"])
        return eqn.prim.bind(*operands, **dict(eqn.params, axes=axes))
    (lc, rc), _ = eqn.params["dimension_numbers"]
    if tuple(lc) == tuple(range(len(lc))) and tuple(rc) == tuple(range(len(rc))):
        # Contracting leading axes: the steps join them, as rows of two matrices (views on
        # the CPU), so the product is one GEMM.
        from flamefx.primitives.structural import reshape
        operands = [reshape(x, (int(np.prod(x.shape[:len(c) + 1])),) + x.shape[len(c) + 1:])
                    for x, c in zip(operands, (lc, rc))]
        dims = (((0,), (0,)), ((), ()))
    else:
        dims = (((0,) + tuple(d + 1 for d in lc), (0,) + tuple(d + 1 for d in rc)), ((), ()))
    return eqn.prim.bind(*operands, **dict(eqn.params, dimension_numbers=dims))
