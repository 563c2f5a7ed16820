"""Control flow that stays compiled and differentiable: cond/switch, while_loop, fori_loop, scan.

Each construct is one primitive holding its sub-programs as jaxprs (``cond`` its branches,
``while`` its predicate and body, ``scan`` its body; helpers for them in sub_jaxprs.py),
so under ``jit`` a loop is one
equation however many steps it runs. The sub-jaxprs are const-free: whatever a user
function closes over is hoisted into leading operands, which is how outer transforms
(grad, vmap) see values captured from their scope. Eagerly and inside compiled programs
the impls loop on the host over the body's compiled executable (built once per body,
with jit's passes and executables). The rules re-trace the sub-jaxprs under the transform
and bind the same primitive again, so every transform composes with every other.

>>> from flamefx import lax
>>> lax.fori_loop(0, 10, lambda i, total: total + i, 0).item()
45
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import NamedTuple

from flamefx import core, dtypes, tree_util
from flamefx import devices as _devices
from flamefx.core import Primitive, ShapedArray, Tracer
from flamefx.errors import FlamefxError, FlamefxTypeError, user_frame
from flamefx.jaxpr import Jaxpr, Var, eval_jaxpr
from flamefx.primitives import elementwise
from flamefx.primitives.elementwise import convert_element_type, full_like, ne, select_n
from flamefx.primitives.reductions import reduce_or
from flamefx.primitives.structural import broadcast_in_dim
from flamefx.transforms import call
from flamefx.transforms.ad import add_cotangents, zeros_like
from flamefx.transforms.batching import broadcast_batch, move_axis
from flamefx.primitives.sub_jaxprs import (
    _trace, _aval, _is_float, _same_type, _run, _executable, _device_of, _eval_batched,
    _batch_jaxpr, _jvp_jaxpr, _carry_fixed_point, _reorder, _split, _join_consts,
    _cast_outputs, _types, _split_known, hoist_accumulators, sum_hoisted,
)


# --- cond -------------------------------------------------------------------------------------


def _cond_abstract_eval(index, *avals, branches):
    if index.shape != () or not dtypes.is_int(index.dtype):
        raise FlamefxTypeError(f"the branch index must be an integer scalar, got "
                               f"{index.str_short()}")
    expected = branches[0].in_avals
    if len(avals) != len(expected) or not all(map(_same_type, avals, expected)):
        raise FlamefxTypeError(f"the branches take ({_types(expected)}) but got "
                               f"({_types(avals)})")
    outs = branches[0].out_avals
    return [a.update(weak_type=all(b.out_avals[k].weak_type for b in branches))
            for k, a in enumerate(outs)]


def _cond_impl(index, *bufs, branches):
    # Only the chosen branch runs; reading the index is one host sync on the GPU.
    chosen = builtins.min(builtins.max(int(index), 0), len(branches) - 1)
    return _run(branches[chosen], bufs, _devices.device_of_buffer(index))


def _cond_vjp(cts, primals, outs, *, branches):
    index, operands = primals[0], primals[1:]
    diff_in = [i for i, x in enumerate(operands) if _is_float(x)]
    ct_idx = [j for j, ct in enumerate(cts) if ct is not None]
    result = [None] * len(primals)
    if not diff_in or not ct_idx:
        return result

    def backward_of(branch: Jaxpr):
        def backward(*args):
            full_cts = [None] * len(branch.outvars)
            for j, ct in zip(ct_idx, args[len(operands):]):
                full_cts[j] = ct
            cts_in = call.vjp_of_jaxpr(branch, list(args[:len(operands)]), full_cts)
            return [cts_in[i] for i in diff_in]
        return _trace(backward, [_aval(x) for x in operands] + [_aval(cts[j]) for j in ct_idx])

    backward_branches, consts = _join_consts([backward_of(b) for b in branches])
    grads = core.bind_list(cond_p, index, *consts, *operands, *[cts[j] for j in ct_idx],
                           branches=tuple(backward_branches))
    for i, g in zip(diff_in, grads):
        result[1 + i] = g
    return result


def _cond_jvp(primals, tangents, *, branches):
    index, operands, op_tangents = primals[0], primals[1:], tangents[1:]
    nonzero = [t is not None and _is_float(p) for p, t in zip(operands, op_tangents)]
    n_out = len(branches[0].outvars)
    # Every float output gets a tangent so that all branches agree on their outputs.
    traced = [_jvp_jaxpr(b, nonzero, [True] * n_out) for b in branches]
    jvp_branches, consts = _join_consts([(j, c) for j, c, _ in traced])
    results = core.bind_list(cond_p, index, *consts, *operands,
                             *[t for t, nz in zip(op_tangents, nonzero) if nz],
                             branches=tuple(jvp_branches))
    given = iter(results[n_out:])
    return results[:n_out], [next(given) if nz else None for nz in traced[0][2]]


def _cond_batch(axis_size, args, bdims, *, branches):
    index, operands = args[0], args[1:]
    in_batched = [d is not None for d in bdims[1:]]
    operands = [x if d is None else move_axis(x, d, 0) for x, d in zip(operands, bdims[1:])]
    n_out = len(branches[0].outvars)
    if bdims[0] is None:
        out_batched = [False] * n_out
        for b in branches:
            _, _, batched = _batch_jaxpr(b, axis_size, in_batched, [False] * n_out)
            out_batched = [x or y for x, y in zip(out_batched, batched)]
        traced = [_batch_jaxpr(b, axis_size, in_batched, out_batched)[:2] for b in branches]
        batched_branches, consts = _join_consts(traced)
        outs = core.bind_list(cond_p, index, *consts, *operands, branches=tuple(batched_branches))
        return outs, [0 if b else None for b in out_batched]
    # A batched index: every branch runs on every example, and a select picks per example.
    index = convert_element_type(move_axis(index, bdims[0], 0), dtypes.int32)
    index = elementwise.max(elementwise.min(index, full_like(index, len(branches) - 1)),
                            full_like(index, 0))
    branch_outs = [_eval_batched(b, axis_size, operands, in_batched, [True] * n_out)[0]
                   for b in branches]
    outs = []
    for k in range(n_out):
        cases = [bo[k] for bo in branch_outs]
        which = broadcast_in_dim(index, _aval(cases[0]).shape, (0,))
        outs.append(select_n(which, *cases))
    return outs, [0] * n_out


cond_p = Primitive("cond", abstract_eval=_cond_abstract_eval, impl=_cond_impl,
                   cuda_impl=_cond_impl, vjp=_cond_vjp, jvp=_cond_jvp, batch=_cond_batch,
                   multiple_results=True)


def _trace_branches(funs, names, operands):
    """Traces each branch on the operands; checks that they agree; returns (jaxprs, consts,
    out_tree)."""
    flat_ops, in_tree = tree_util.tree_flatten(tuple(operands))
    flat_ops = [core.ensure_array(x) for x in flat_ops]
    in_avals = [x.aval for x in flat_ops]
    traced = []
    for fun in funs:
        box = []

        def flat_fun(*xs, fun=fun, box=box):
            leaves, tree = tree_util.tree_flatten(fun(*tree_util.tree_unflatten(in_tree, xs)))
            box.append(tree)
            return leaves

        jaxpr, consts = _trace(flat_fun, in_avals)
        traced.append((jaxpr, consts, box[0]))
    first_jaxpr, _, first_tree = traced[0]
    for (jaxpr, _, tree), name in zip(traced[1:], names[1:]):
        if tree != first_tree:
            raise FlamefxTypeError(f"{name} returns {tree} but {names[0]} returns {first_tree}; "
                                   f"all branches must return the same structure\n  at "
                                   f"{user_frame()}")
    targets = []
    for k in range(len(first_jaxpr.outvars)):
        avals = [jaxpr.out_avals[k] for jaxpr, _, _ in traced]
        targets.append(_join_branch_outputs(avals, names))
    joined = []
    for jaxpr, consts, _ in traced:
        if any(a != t for a, t in zip(jaxpr.out_avals, targets)):
            jaxpr, consts = _cast_outputs(jaxpr, consts, targets)
        joined.append((jaxpr, consts))
    jaxprs, consts = _join_consts(joined)
    return jaxprs, consts + flat_ops, first_tree


def _join_branch_outputs(avals, names) -> ShapedArray:
    """The type of one output over all branches: weak types give way (as in JAX)."""
    strong = [k for k, a in enumerate(avals) if not a.weak_type]
    t = strong[0] if strong else 0
    target = avals[t]
    for a, name in zip(avals, names):
        if a.shape != target.shape or (a.dtype != target.dtype and not a.weak_type):
            raise FlamefxTypeError(
                f"{name} returns {a.str_short()} but {names[t]} returns {target.str_short()}; "
                f"all branches must return the same shapes and dtypes\n  at {user_frame()}")
    return target.update(weak_type=not strong)


def cond(pred, true_fun: Callable, false_fun: Callable, *operands):
    """Runs ``true_fun(*operands)`` if ``pred`` else ``false_fun(*operands)``, staying traced.

    Under jit both branches are compiled into one equation and only the chosen one runs;
    under vmap with a batched ``pred`` both run and a select picks per example.

    >>> import flamefx.numpy as fnp
    >>> cond(fnp.array(True), lambda x: x + 1.0, lambda x: x - 1.0, fnp.ones(2)).tolist()
    [2.0, 2.0]
    """
    pred = core.ensure_array(pred)
    if pred.shape != ():
        raise FlamefxTypeError(f"cond's predicate must be a scalar, got "
                               f"{pred.aval.str_short()}\n  at {user_frame()}")
    if pred.dtype != dtypes.bool_:
        if not (dtypes.is_int(pred.dtype) or dtypes.is_float(pred.dtype)):
            raise FlamefxTypeError(f"cond's predicate must be a bool or number, got "
                                   f"{pred.aval.str_short()}\n  at {user_frame()}")
        pred = ne(pred, full_like(pred, 0))
    index = convert_element_type(pred, dtypes.int32)
    jaxprs, ops, out_tree = _trace_branches((false_fun, true_fun), ("false_fun", "true_fun"),
                                            operands)
    outs = core.bind_list(cond_p, index, *ops, branches=tuple(jaxprs))
    return tree_util.tree_unflatten(out_tree, outs)


def switch(index, branches: Sequence[Callable], *operands):
    """Runs ``branches[index](*operands)``; ``index`` is clamped into range (as in JAX).

    >>> import flamefx.numpy as fnp
    >>> fns = [lambda x: x * 0.0, lambda x: x * 10.0, lambda x: x * 20.0]
    >>> switch(fnp.array(1), fns, fnp.ones(2)).tolist()
    [10.0, 10.0]
    """
    branches = tuple(branches)
    if not branches:
        raise FlamefxTypeError(f"switch needs at least one branch\n  at {user_frame()}")
    index = core.ensure_array(index)
    if index.shape != () or not dtypes.is_int(index.dtype):
        raise FlamefxTypeError(f"switch's index must be an integer scalar, got "
                               f"{index.aval.str_short()}\n  at {user_frame()}")
    if len(branches) == 1:
        return branches[0](*operands)
    index = convert_element_type(index, dtypes.int32)
    names = tuple(f"branch {i}" for i in range(len(branches)))
    jaxprs, ops, out_tree = _trace_branches(branches, names, operands)
    outs = core.bind_list(cond_p, index, *ops, branches=tuple(jaxprs))
    return tree_util.tree_unflatten(out_tree, outs)


# --- carries: the type a loop's body must keep ------------------------------------------------


def _trace_carry_fun(flat_fun: Callable, carry_avals, extra_avals, who: str, init_tree):
    """Traces a loop body whose first outputs are the new carry; returns (jaxpr, consts,
    carry_avals). A weak-typed initial carry takes the body's type (as in JAX: a Python
    ``0.0`` carry becomes the body's float64); any other change of type is an error."""
    for _ in range(len(carry_avals) + 2):
        box = []

        def fun(*xs, box=box):
            leaves, carry_tree, rest = flat_fun(*xs)
            box.append(carry_tree)
            return leaves + rest

        jaxpr, consts = _trace(fun, carry_avals + extra_avals)
        if box[0] != init_tree:
            raise FlamefxTypeError(f"{who} returns a carry of structure {box[0]} but the initial "
                                   f"carry has structure {init_tree}\n  at {user_frame()}")
        out_avals = jaxpr.out_avals[:len(carry_avals)]
        joined = [_join_carry(a, b, who) for a, b in zip(carry_avals, out_avals)]
        if joined == carry_avals:
            return jaxpr, consts, carry_avals
        carry_avals = joined
    raise FlamefxError(f"internal: the carry types of {who} did not settle")


def _join_carry(init: ShapedArray, out: ShapedArray, who: str) -> ShapedArray:
    if init.shape == out.shape and init.dtype == out.dtype:
        return init if init.weak_type <= out.weak_type else init.update(weak_type=False)
    if init.shape == out.shape and init.weak_type:
        return out
    raise FlamefxTypeError(f"{who} returns carry {out.str_short()} but the initial carry is "
                           f"{init.str_short()}; a loop carry must keep its shape and dtype"
                           f"\n  at {user_frame()}")


def _cast_to(x, aval: ShapedArray):
    if _aval(x) == aval:
        return x
    return convert_element_type(x, aval.dtype, weak_type=aval.weak_type)


def _check_carry_operands(avals, expected, who):
    if len(avals) != len(expected) or not all(map(_same_type, avals, expected)):
        raise FlamefxTypeError(f"the {who} takes a carry ({_types(expected)}) but got "
                               f"({_types(avals)})")


# --- while ------------------------------------------------------------------------------------


def _while_abstract_eval(*avals, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    carry = avals[cond_nconsts + body_nconsts:]
    _check_carry_operands(carry, body_jaxpr.in_avals[body_nconsts:], "while body")
    return body_jaxpr.in_avals[body_nconsts:]


def _while_impl(*bufs, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    # The predicate is read on the host each iteration (one sync per step on the GPU).
    cond_consts, body_consts, carry = _split(bufs, cond_nconsts, body_nconsts)
    device = _device_of(bufs)
    while bool(_run(cond_jaxpr, cond_consts + carry, device)[0]):
        carry = _run(body_jaxpr, body_consts + carry, device)
    return carry


def _while_vjp(cts, primals, outs, **params):
    raise FlamefxError(
        "reverse-mode differentiation (grad, vjp) does not work through while_loop: its number "
        "of steps is only known at run time, so the steps cannot be saved for the backward "
        "pass. Use flamefx.lax.fori_loop with Python-int bounds or flamefx.lax.scan, which "
        f"are reverse-differentiable (forward mode, jvp/jacfwd, works).\n  at {user_frame()}")


def _while_jvp(primals, tangents, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    cond_consts, body_consts, carry = _split(primals, cond_nconsts, body_nconsts)
    _, const_tangents, carry_tangents = _split(tangents, cond_nconsts, body_nconsts)
    const_nz = [t is not None and _is_float(p) for p, t in zip(body_consts, const_tangents)]
    carry_nz = [t is not None and _is_float(p) for p, t in zip(carry, carry_tangents)]
    n = len(carry)
    carry_nz = _carry_fixed_point(
        lambda nz: _jvp_jaxpr(body_jaxpr, const_nz + nz, [False] * n)[2], carry_nz)
    body_jvp, extra, _ = _jvp_jaxpr(body_jaxpr, const_nz + carry_nz, carry_nz)
    ne, nb, nct, nkt = len(extra), len(body_consts), sum(const_nz), sum(carry_nz)
    # Inputs come as (extra, consts, carry, const tangents, carry tangents); the loop wants
    # the tangents of the consts among the consts and those of the carry in the carry.
    at = _split(range(ne + nb + n + nct + nkt), ne, nb, n, nct)
    body_jvp = _reorder(body_jvp, [at[0], at[1], at[3], at[2], at[4]], [range(n + nkt)])
    tangent_avals = [_aval(p) for p, nz in zip(carry, carry_nz) if nz]
    cond_jvp = Jaxpr([], cond_jaxpr.invars + [Var(a) for a in tangent_avals],
                     cond_jaxpr.outvars, cond_jaxpr.eqns)
    carry_t = [t if t is not None else zeros_like(p)
               for p, t, nz in zip(carry, carry_tangents, carry_nz) if nz]
    results = core.bind_list(
        while_p, *cond_consts, *extra, *body_consts,
        *[t for t, nz in zip(const_tangents, const_nz) if nz], *carry, *carry_t,
        cond_jaxpr=cond_jvp, body_jaxpr=body_jvp, cond_nconsts=cond_nconsts,
        body_nconsts=ne + nb + nct)
    given = iter(results[n:])
    return results[:n], [next(given) if nz else None for nz in carry_nz]


def _while_batch(axis_size, args, bdims, *, cond_jaxpr, body_jaxpr, cond_nconsts,
                 body_nconsts):
    args = [x if d is None else move_axis(x, d, 0) for x, d in zip(args, bdims)]
    batched = [d is not None for d in bdims]
    cond_consts, body_consts, carry = _split(args, cond_nconsts, body_nconsts)
    cond_b, body_b, carry_b = _split(batched, cond_nconsts, body_nconsts)
    n, init_b = len(carry), carry_b
    carry_b = _carry_fixed_point(
        lambda b: _batch_jaxpr(body_jaxpr, axis_size, body_b + b, [False] * n)[2], carry_b)
    pred_batched = _batch_jaxpr(cond_jaxpr, axis_size, cond_b + carry_b, [False])[2][0]
    if pred_batched:
        carry_b = [True] * n
    carry = [broadcast_batch(x, axis_size, 0) if b and not was else x
             for x, b, was in zip(carry, carry_b, init_b)]
    if not pred_batched:
        new_cond, cond_extra, _ = _batch_jaxpr(cond_jaxpr, axis_size, cond_b + carry_b, [False])
        new_body, body_extra, _ = _batch_jaxpr(body_jaxpr, axis_size, body_b + carry_b, carry_b)
        outs = core.bind_list(
            while_p, *cond_extra, *cond_consts, *body_extra, *body_consts, *carry,
            cond_jaxpr=new_cond, body_jaxpr=new_body,
            cond_nconsts=len(cond_extra) + cond_nconsts,
            body_nconsts=len(body_extra) + body_nconsts)
        return outs, [0 if b else None for b in carry_b]

    # A batched predicate: loop until every example is done; finished examples keep their
    # carry (a select freezes them) while the others step on.
    def predicate(consts, xs):
        return _eval_batched(cond_jaxpr, axis_size, consts + xs, cond_b + carry_b, [True])[0][0]

    def any_running(*xs):
        return [reduce_or(predicate(list(xs[:cond_nconsts]), list(xs[cond_nconsts:])), (0,))]

    def masked_body(*xs):
        c_consts, b_consts, old = _split(xs, cond_nconsts, body_nconsts)
        running = predicate(c_consts, old)
        new = _eval_batched(body_jaxpr, axis_size, b_consts + old, body_b + carry_b, carry_b)[0]
        return [select_n(broadcast_in_dim(running, _aval(o).shape, (0,)), o, _cast_to(x, _aval(o)))
                for o, x in zip(old, new)]

    cond_avals = [_aval(x) for x in cond_consts + carry]
    new_cond, cond_extra = _trace(any_running, cond_avals)
    new_body, body_extra = _trace(masked_body,
                                  [_aval(x) for x in cond_consts + body_consts + carry])
    outs = core.bind_list(
        while_p, *cond_extra, *cond_consts, *body_extra, *cond_consts, *body_consts, *carry,
        cond_jaxpr=new_cond, body_jaxpr=new_body, cond_nconsts=len(cond_extra) + cond_nconsts,
        body_nconsts=len(body_extra) + cond_nconsts + body_nconsts)
    return outs, [0] * n


while_p = Primitive("while", abstract_eval=_while_abstract_eval, impl=_while_impl,
                    cuda_impl=_while_impl, vjp=_while_vjp, jvp=_while_jvp, batch=_while_batch,
                    multiple_results=True)


def while_loop(cond_fun: Callable, body_fun: Callable, init_val):
    """``while cond_fun(val): val = body_fun(val)``, as one primitive (pytree carries).

    Runs on the host, reading the predicate each step; the body is compiled once. Forward
    mode and vmap work (a batched loop runs until every example is done); reverse mode
    does not (use ``fori_loop`` with static bounds or ``scan``).

    >>> while_loop(lambda x: x < 100, lambda x: x * 2, 1).item()
    128
    """
    init_flat, init_tree = tree_util.tree_flatten(init_val)
    init_flat = [core.ensure_array(x) for x in init_flat]

    def body_flat(*xs):
        leaves, tree = tree_util.tree_flatten(body_fun(tree_util.tree_unflatten(init_tree, xs)))
        return leaves, tree, []

    body_jaxpr, body_consts, carry_avals = _trace_carry_fun(
        body_flat, [x.aval for x in init_flat], [], "body_fun", init_tree)

    def cond_flat(*xs):
        return tree_util.tree_leaves(cond_fun(tree_util.tree_unflatten(init_tree, xs)))

    cond_jaxpr, cond_consts = _trace(cond_flat, carry_avals)
    pred = cond_jaxpr.out_avals
    if len(pred) != 1 or pred[0].shape != () or pred[0].dtype != dtypes.bool_:
        raise FlamefxTypeError(f"cond_fun must return a boolean scalar, got ({_types(pred)})"
                               f"\n  at {user_frame()}")
    init_flat = [_cast_to(x, a) for x, a in zip(init_flat, carry_avals)]
    outs = core.bind_list(while_p, *cond_consts, *body_consts, *init_flat,
                          cond_jaxpr=cond_jaxpr, body_jaxpr=body_jaxpr,
                          cond_nconsts=len(cond_consts), body_nconsts=len(body_consts))
    return tree_util.tree_unflatten(init_tree, outs)


# --- scan -------------------------------------------------------------------------------------


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
                   multiple_results=True)
# Read by jit's dead-code pass (flamefx.transforms.passes.eliminate_dead_code).
scan_p.prune = _scan_prune
# Read by reverse mode (flamefx.transforms.ad.VJPTrace): the primal scan saves residuals.
scan_p.vjp_forward = _scan_vjp_forward


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
