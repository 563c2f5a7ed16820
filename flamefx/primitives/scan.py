"""``scan`` and ``fori_loop``: a loop over a leading axis as one primitive, with its rules.

``scan_p`` holds its body as a const-free jaxpr (see control_flow.py for how the control-flow
primitives hoist what a body closes over). Eagerly and inside compiled programs the impl
loops on the host over the body's compiled executable (or the CPU plan runs the whole
loop). Reverse mode follows JAX's partial evaluation: the primal scan also stacks the
residuals the backward reads (``vjp_forward``), and a reverse scan runs the backward steps;
jit's dead-code pass reaches into the body (``prune``). ``fori_loop`` with static bounds is a
scan (with traced bounds a ``while_loop``).

>>> from flamefx import lax
>>> lax.fori_loop(0, 10, lambda i, total: total + i, 0).item()
45
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import NamedTuple

from flamefx import core, dtypes, tree_util
from flamefx.core import Primitive, Tracer
from flamefx.errors import FlamefxTypeError, user_frame
from flamefx.jaxpr import Jaxpr, Var, eval_jaxpr
from flamefx.primitives.control_flow import (
    _cast_to, _check_carry_operands, _trace_carry_fun, while_loop)
from flamefx.primitives.elementwise import convert_element_type
from flamefx.primitives.sub_jaxprs import (
    _trace, _aval, _is_float, _same_type, _split, _executable, _device_of, _batch_jaxpr,
    _jvp_jaxpr, _carry_fixed_point, _reorder, _split_known, hoist_accumulators, sum_hoisted,
)
from flamefx.transforms import call
from flamefx.transforms.ad import add_cotangents, zeros_like
from flamefx.transforms.batching import broadcast_batch, move_axis


def _scan_abstract_eval(*avals, jaxpr, num_consts, num_carry, length, reverse):
    expected = jaxpr.in_avals
    if len(avals) != len(expected):
        raise FlamefxTypeError(f"the body takes {len(expected)} operands, got {len(avals)}")
    n_fixed = num_consts + num_carry
    _check_carry_operands(avals[:n_fixed], expected[:n_fixed], "scan body")
    for x, e in zip(avals[n_fixed:], expected[n_fixed:]):
        if x.shape[:1] != (length,) or not _same_type(x.update(shape=x.shape[1:]), e):
            raise FlamefxTypeError(f"the body takes slices {e.str_short()} of xs of length "
                                   f"{length}, got xs {x.str_short()}")
    ys = [a.update(shape=(length,) + a.shape) for a in jaxpr.out_avals[num_carry:]]
    return expected[num_consts:n_fixed] + ys


def _scan_impl(*bufs, jaxpr, num_consts, num_carry, length, reverse):
    consts, carry, xs = _split(bufs, num_consts, num_carry)
    device = _device_of(bufs)
    run, const_bufs = _executable(jaxpr, device)
    if hasattr(run, "scan"):  # the CPU plan runs the whole loop itself (None: it is busy)
        outs = run.scan(const_bufs + consts, carry, xs, length=length, reverse=reverse)
        if outs is not None:
            return outs
    # ys are preallocated and written in place, step by step (they are ours until returned).
    ys = [device.xp.empty((length,) + a.shape, a.dtype) for a in jaxpr.out_avals[num_carry:]]
    for step in range(length):
        i = length - 1 - step if reverse else step  # x[i, ...]: a 0-d slice stays an array
        outs = list(run(const_bufs + consts + carry + [x[i, ...] for x in xs]))
        carry = outs[:num_carry]
        for y, out in zip(ys, outs[num_carry:]):
            y[i] = out
    return carry + ys


def _scan_jvp(primals, tangents, *, jaxpr, num_consts, num_carry, length, reverse):
    consts, init, xs = _split(primals, num_consts, num_carry)
    consts_t, init_t, xs_t = _split(tangents, num_consts, num_carry)
    nz = [t is not None and _is_float(p) for p, t in zip(primals, tangents)]
    const_nz, carry_nz, xs_nz = _split(nz, num_consts, num_carry)
    n_ys = len(jaxpr.outvars) - num_carry
    carry_nz = _carry_fixed_point(
        lambda c: _jvp_jaxpr(jaxpr, const_nz + c + xs_nz, [False] * len(jaxpr.outvars))[2][
            :num_carry], carry_nz)
    body, extra, out_nz = _jvp_jaxpr(jaxpr, const_nz + carry_nz + xs_nz,
                                     carry_nz + [False] * n_ys)
    ys_nz = out_nz[num_carry:]
    ne, nct, nkt, nxt = len(extra), sum(const_nz), sum(carry_nz), sum(xs_nz)
    at = _split(range(ne + len(primals) + nct + nkt + nxt), ne, num_consts, num_carry, len(xs),
                nct, nkt)
    out_at = _split(range(len(body.outvars)), num_carry, n_ys, nkt)
    body = _reorder(body, [at[0], at[1], at[4], at[2], at[5], at[3], at[6]],
                    [out_at[0], out_at[2], out_at[1], out_at[3]])
    init_t = [t if t is not None else zeros_like(p)
              for p, t, n in zip(init, init_t, carry_nz) if n]
    results = core.bind_list(
        scan_p, *extra, *consts, *[t for t, n in zip(consts_t, const_nz) if n], *init, *init_t,
        *xs, *[t for t, n in zip(xs_t, xs_nz) if n], jaxpr=body,
        num_consts=ne + num_consts + nct, num_carry=num_carry + nkt, length=length,
        reverse=reverse)
    carry_out, carry_t, ys, ys_t = _split(results, num_carry, nkt, n_ys)
    carry_t, ys_t = iter(carry_t), iter(ys_t)
    return carry_out + ys, ([next(carry_t) if n else None for n in carry_nz]
                            + [next(ys_t) if n else None for n in ys_nz])


class _ScanVJPPlan(NamedTuple):
    """The body's VJP split in two (see ``_scan_vjp``): ``forward`` (taking
    forward_consts, consts, carry, x) returns the ``head`` outputs then the residuals;
    ``backward`` (taking backward_consts, consts | acc, ct_k | residuals, x, ct_y) returns
    the step's cotangents: of the consts (accumulated), the carry and the xs."""
    diff_consts: list
    diff_carry: list
    diff_xs: list
    ys_with_ct: list
    forward: Jaxpr
    forward_consts: list
    backward: Jaxpr
    backward_consts: list


def _scan_vjp_plan(consts, init, xs, ys_with_ct, wanted, *, jaxpr, num_consts, num_carry,
                   primal_head):
    """Traces the body's VJP and partially evaluates it (``_split_known``); None when no
    input is differentiable. ``wanted``: the cotangents to compute (of float inputs only;
    the carry's always, it flows through the steps). ``primal_head``: the forward returns
    the body's outputs with its debug prints (it is the primal scan), else the new carry
    only, without them."""
    want_consts, _, want_xs = _split(wanted, num_consts, num_carry)
    diff_consts = [i for i, c in enumerate(consts) if _is_float(c) and want_consts[i]]
    diff_carry = [k for k, c in enumerate(init) if _is_float(c)]
    diff_xs = [m for m, x in enumerate(xs) if _is_float(x) and want_xs[m]]
    if not (diff_consts or diff_carry or diff_xs):
        return None

    def backward_step(*args):
        consts_in, acc, ct_k, carry_k, x_k, ct_y = _split(
            args, num_consts, len(diff_consts), len(diff_carry), num_carry, len(xs))
        step_cts = [None] * len(jaxpr.outvars)
        for k, ct in zip(diff_carry, ct_k):
            step_cts[k] = ct
        for j, ct in zip(ys_with_ct, ct_y):
            step_cts[num_carry + j] = ct
        # Without the body's debug prints: the primal scan printed them (as in JAX).
        cts_in = call.vjp_of_jaxpr(jaxpr, consts_in + carry_k + x_k, step_cts)
        new_acc = [add_cotangents(a, cts_in[i]) for a, i in zip(acc, diff_consts)]
        return (new_acc + [cts_in[num_consts + k] for k in diff_carry]
                + [cts_in[num_consts + num_carry + m] for m in diff_xs])

    const_avals, carry_avals, x_avals = _split(jaxpr.in_avals, num_consts, num_carry)
    y_avals = jaxpr.out_avals[num_carry:]
    n_acc, n_ct = len(diff_consts), len(diff_carry)
    step, extra = _trace(backward_step, (
        const_avals + [const_avals[i].update(weak_type=False) for i in diff_consts]
        + [carry_avals[k].update(weak_type=False) for k in diff_carry] + carry_avals + x_avals
        + [y_avals[j].update(weak_type=False) for j in ys_with_ct]))
    ne = len(extra)
    # Inputs: extra, consts | acc, ct_k | carry_k | x_k | ct_y; the primal ones are known,
    # and the backward has the consts and xs itself (the carries it gets as residuals).
    fixed, cts_k, carry_k, x_k, ct_y = _split(
        [True] * len(step.invars), ne + num_consts, n_acc + n_ct, num_carry, len(xs))
    unknown, no_ct = [False] * len(cts_k), [False] * len(ct_y)
    from flamefx.transforms.passes import has_effects
    if any(has_effects(e, ("remat",)) for e in jaxpr.eqns):
        # checkpoint in the body: save only the carries and recompute the steps backward,
        # as checkpoint asks (saving its recomputation would undo it).
        known_in = [False] * len(fixed) + unknown + carry_k + [False] * len(x_k) + no_ct
    else:
        known_in = fixed + unknown + carry_k + x_k + no_ct
    known, rest = _split_known(
        step, known_in, fixed + unknown + [False] * num_carry + x_k + no_ct,
        fixed + unknown + [False] * (num_carry + len(xs)) + no_ct)
    at = _split(range(len(rest.invars)), len(known.outvars), ne + num_consts, n_acc + n_ct,
                num_carry, len(xs))
    backward = _reorder(rest, [at[1], at[2], at[0], at[4], at[5]], [range(len(rest.outvars))])

    from flamefx.transforms.passes import eliminate_dead_code, without_debug_callbacks
    head = jaxpr if primal_head else eliminate_dead_code(without_debug_callbacks(
        Jaxpr([], jaxpr.invars, jaxpr.outvars[:num_carry], jaxpr.eqns)))

    def forward_step(*args):
        # args: extra, consts, carry, x; the known part takes those known_in marks.
        step_args = iter(args)
        primal_args = [next(step_args) if p else None for p in fixed + unknown + carry_k + x_k
                       + no_ct]
        return (eval_jaxpr(head, [], *args[ne:])
                + eval_jaxpr(known, [], *[a for a, k in zip(primal_args, known_in) if k]))

    forward, forward_extra = _trace(forward_step, [_aval(e) for e in extra] + jaxpr.in_avals)
    return _ScanVJPPlan(diff_consts, diff_carry, diff_xs, ys_with_ct, forward,
                        forward_extra + extra, backward, extra)


def _run_forward(plan, consts, init, xs, *, num_consts, num_carry, length, reverse):
    return core.bind_list(
        scan_p, *plan.forward_consts, *consts, *init, *xs, jaxpr=plan.forward,
        num_consts=len(plan.forward_consts) + num_consts, num_carry=num_carry, length=length,
        reverse=reverse)


def _scan_vjp_forward(primals, wanted, *, jaxpr, num_consts, num_carry, length, reverse):
    """The primal scan under reverse mode (ad.VJPTrace calls it instead of binding): one
    scan that also stacks the residuals its VJP reads, as JAX's partial evaluation does,
    for the cotangents ``wanted`` (those of the inputs on the tape)."""
    consts, init, xs = _split(primals, num_consts, num_carry)
    float_ys = [j for j, a in enumerate(jaxpr.out_avals[num_carry:])
                if dtypes.is_inexact(a.dtype)]
    plan = _scan_vjp_plan(consts, init, xs, float_ys, wanted, jaxpr=jaxpr,
                          num_consts=num_consts, num_carry=num_carry, primal_head=True)
    if plan is None:
        return core.bind_list(scan_p, *primals, jaxpr=jaxpr, num_consts=num_consts,
                              num_carry=num_carry, length=length, reverse=reverse), None
    results = _run_forward(plan, consts, init, xs, num_consts=num_consts,
                           num_carry=num_carry, length=length, reverse=reverse)
    n_out = len(jaxpr.outvars)
    return results[:n_out], (plan, tuple(results[n_out:]))


def _scan_vjp(cts, primals, outs, *, jaxpr, num_consts, num_carry, length, reverse,
              residuals=None):
    """Reverse mode as JAX's partial evaluation does it: the body's VJP, traced once, splits
    into a forward part (what the primal values alone determine) and a backward part. The
    forward scan (the primal one, see ``_scan_vjp_forward``; else one run here, e.g. for
    checkpoint's replay) stacks the residuals (the values the backward reads); a reverse
    scan runs the backward part on them, accumulating the cotangents of the carry and the
    consts (those that are sums of per-step products or sums: summed after the loop, in one
    product over all the steps, ``hoist_accumulators``), so no step's forward runs again.
    Both are scans, so this rule's output is differentiable again. Cotangents of inputs off the tape (xs when grad takes the weights)
    are not computed; others nobody reads are ys of the reverse scan that jit's dead-code
    pass drops, down into the body (``_scan_prune``)."""
    consts, init, xs = _split(primals, num_consts, num_carry)
    ct_carry, ct_ys = _split(cts, num_carry)
    if residuals is None:
        ys_with_ct = [j for j, ct in enumerate(ct_ys) if ct is not None]
        plan = _scan_vjp_plan(consts, init, xs, ys_with_ct, [True] * len(primals), jaxpr=jaxpr,
                              num_consts=num_consts, num_carry=num_carry, primal_head=False)
        if plan is None:
            return [None] * len(primals)
        saved = _run_forward(plan, consts, init, xs, num_consts=num_consts,
                             num_carry=num_carry, length=length, reverse=reverse)[num_carry:]
    else:
        plan, saved = residuals
    ct_y = [zeros_like(outs[num_carry + j]) if ct_ys[j] is None else ct_ys[j]
            for j in plan.ys_with_ct]
    acc_init = [zeros_like(consts[i]) for i in plan.diff_consts]
    ct_carry_init = [zeros_like(init[k]) if ct_carry[k] is None else ct_carry[k]
                     for k in plan.diff_carry]
    n_const, carry_init = len(plan.backward_consts) + num_consts, acc_init + ct_carry_init
    scan_xs = [*saved, *xs, *ct_y]
    body, kept, hoisted = hoist_accumulators(plan.backward, n_const, len(carry_init), length,
                                             range(len(acc_init)))
    outs = core.bind_list(
        scan_p, *plan.backward_consts, *consts, *[carry_init[k] for k in kept], *scan_xs,
        jaxpr=body, num_consts=n_const, num_carry=len(kept), length=length, reverse=not reverse)
    carry_out, ys, new_ys = _split(outs, len(kept), len(plan.backward.outvars) - len(carry_init))
    grads = dict(zip(kept, carry_out))
    for h in hoisted:  # their acc_init is zeros
        grads[h.carry] = sum_hoisted(h, None, scan_xs, new_ys)
    grads = [grads[k] for k in range(len(carry_init))] + ys
    ct_consts, ct_init, ct_xs = _split(grads, len(acc_init), len(ct_carry_init))
    result = [None] * len(primals)
    for i, g in zip(plan.diff_consts, ct_consts):
        result[i] = g
    for k, g in zip(plan.diff_carry, ct_init):
        result[num_consts + k] = g
    for m, g in zip(plan.diff_xs, ct_xs):
        result[num_consts + num_carry + m] = g
    return result


def _scan_prune(eqn, used_outs):
    """jit's dead-code pass inside a scan: drops the ys nobody reads (and the body's work
    for them), then the consts and xs the body no longer reads; carries stay."""
    from flamefx.transforms.passes import eliminate_dead_code
    params = eqn.params
    jaxpr, num_consts, num_carry = params["jaxpr"], params["num_consts"], params["num_carry"]
    keep_out = [k < num_carry or u for k, u in enumerate(used_outs)]
    body = eliminate_dead_code(Jaxpr([], jaxpr.invars, [
        v for v, keep in zip(jaxpr.outvars, keep_out) if keep], jaxpr.eqns))
    read = {v.id for e in body.eqns for v in e.invars if isinstance(v, Var)}
    read |= {v.id for v in body.outvars if isinstance(v, Var)}
    keep_in = [num_consts <= k < num_consts + num_carry or v.id in read
               for k, v in enumerate(body.invars)]
    if all(keep_out) and all(keep_in):
        return eqn
    body = Jaxpr([], [v for v, keep in zip(body.invars, keep_in) if keep], body.outvars,
                 body.eqns)
    return eqn.replace(
        invars=[v for v, keep in zip(eqn.invars, keep_in) if keep],
        outvars=[v for v, keep in zip(eqn.outvars, keep_out) if keep],
        params=dict(params, jaxpr=body, num_consts=sum(keep_in[:num_consts])))


def _scan_batch(axis_size, args, bdims, *, jaxpr, num_consts, num_carry, length, reverse):
    n_fixed = num_consts + num_carry
    # The scan axis of xs and ys stays first, so their batch axis goes second.
    args = [x if d is None else move_axis(x, d, 0 if k < n_fixed else 1)
            for k, (x, d) in enumerate(zip(args, bdims))]
    consts, init, xs = _split(args, num_consts, num_carry)
    const_b, init_b, xs_b = _split([d is not None for d in bdims], num_consts, num_carry)
    n_out = len(jaxpr.outvars)
    carry_b = _carry_fixed_point(
        lambda c: _batch_jaxpr(jaxpr, axis_size, const_b + c + xs_b, [False] * n_out)[2][
            :num_carry], init_b)
    body, extra, out_b = _batch_jaxpr(jaxpr, axis_size, const_b + carry_b + xs_b,
                                      carry_b + [False] * (n_out - num_carry))
    init = [broadcast_batch(x, axis_size, 0) if b and not was else x
            for x, b, was in zip(init, carry_b, init_b)]
    outs = core.bind_list(scan_p, *extra, *consts, *init, *xs, jaxpr=body,
                          num_consts=len(extra) + num_consts, num_carry=num_carry,
                          length=length, reverse=reverse)
    return outs, ([0 if b else None for b in carry_b]
                  + [1 if b else None for b in out_b[num_carry:]])


scan_p = Primitive("scan", abstract_eval=_scan_abstract_eval, impl=_scan_impl,
                   cuda_impl=_scan_impl, vjp=_scan_vjp, jvp=_scan_jvp, batch=_scan_batch,
                   vjp_forward=_scan_vjp_forward, prune=_scan_prune, multiple_results=True)


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False,
         unroll: int = 1):
    """Loops ``carry, y = f(carry, x)`` over the leading axis of ``xs``; returns
    ``(final carry, stacked ys)`` (JAX's semantics; pytrees for carry, xs and ys).

    The body is traced once and compiled once; under grad the forward scan also saves what
    each step's backward reads (as JAX does) and a reverse scan runs the backward steps.
    ``unroll`` is accepted for JAX compatibility (flamefx loops on the host over the
    compiled body, so unrolling buys nothing).

    >>> import flamefx.numpy as fnp
    >>> total, partial_sums = scan(lambda c, x: (c + x, c + x), 0.0, fnp.arange(4.0))
    >>> partial_sums.tolist()
    [0.0, 1.0, 3.0, 6.0]
    """
    return _scan(f, init, xs, length, reverse, "scan's f")


def _scan(f: Callable, init, xs, length, reverse, who: str):
    xs_flat, xs_tree = tree_util.tree_flatten(xs)
    xs_flat = [core.ensure_array(x) for x in xs_flat]
    lengths = {x.shape[0] if x.shape else None for x in xs_flat}
    if None in lengths:
        raise FlamefxTypeError(f"scan's xs must have a leading axis to scan over; got a 0-d "
                               f"leaf\n  at {user_frame()}")
    if length is not None:
        lengths.add(int(length))
    if len(lengths) != 1:
        what = "no xs and no length" if not lengths else f"leading axis sizes {sorted(lengths)}"
        raise FlamefxTypeError(f"scan needs one length (xs' leading axis, or length=); got "
                               f"{what}\n  at {user_frame()}")
    length = lengths.pop()
    init_flat, init_tree = tree_util.tree_flatten(init)
    init_flat = [core.ensure_array(x) for x in init_flat]
    y_tree_box = []

    def body_flat(*args):
        carry = tree_util.tree_unflatten(init_tree, args[:len(init_flat)])
        out = f(carry, tree_util.tree_unflatten(xs_tree, args[len(init_flat):]))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise FlamefxTypeError(f"scan's f must return a pair (carry, y), got "
                                   f"{type(out).__name__}\n  at {user_frame()}")
        carry_leaves, carry_tree = tree_util.tree_flatten(out[0])
        y_leaves, y_tree = tree_util.tree_flatten(out[1])
        y_tree_box.append(y_tree)
        return carry_leaves, carry_tree, y_leaves

    x_avals = [x.aval.update(shape=x.shape[1:]) for x in xs_flat]
    jaxpr, consts, carry_avals = _trace_carry_fun(
        body_flat, [x.aval for x in init_flat], x_avals, who, init_tree)
    init_flat = [_cast_to(x, a) for x, a in zip(init_flat, carry_avals)]
    outs = core.bind_list(scan_p, *consts, *init_flat, *xs_flat, jaxpr=jaxpr,
                          num_consts=len(consts), num_carry=len(init_flat), length=length,
                          reverse=bool(reverse))
    return (tree_util.tree_unflatten(init_tree, outs[:len(init_flat)]),
            tree_util.tree_unflatten(y_tree_box[-1], outs[len(init_flat):]))


def fori_loop(lower, upper, body_fun: Callable, init_val):
    """``for i in range(lower, upper): val = body_fun(i, val)``; returns the final ``val``.

    With Python-int bounds it is a ``scan`` (reverse-differentiable, one equation under
    jit however many steps); with traced bounds a ``while_loop``.

    >>> fori_loop(0, 5, lambda i, x: x * 2.0, 1.0).item()
    32.0
    """
    if not isinstance(lower, Tracer) and not isinstance(upper, Tracer):
        start, stop = int(lower), int(upper)
        index = core.ensure_array(lower) if isinstance(lower, core.Array) else \
            core.to_array(start)

        def step(carry, _):
            i, val = carry
            return (i + 1, body_fun(i, val)), None

        (_, result), _ = _scan(step, (index, init_val), None, builtins.max(stop - start, 0),
                               False, "body_fun")
        return result
    lower, upper = core.ensure_array(lower), core.ensure_array(upper)
    if lower.dtype != upper.dtype:
        if lower.weak_type:
            lower = convert_element_type(lower, upper.dtype, weak_type=upper.weak_type)
        else:
            upper = convert_element_type(upper, lower.dtype, weak_type=lower.weak_type)
    _, result = while_loop(lambda c: c[0] < upper,
                           lambda c: (c[0] + 1, body_fun(c[0], c[1])), (lower, init_val))
    return result
