"""Control flow that stays compiled and differentiable: cond/switch, while_loop (scan and
fori_loop are in scan.py).

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
>>> lax.while_loop(lambda x: x < 100, lambda x: x * 2, 1).item()
128
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence

from flamefx import core, dtypes, tree_util
from flamefx import devices as _devices
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxError, FlamefxTypeError, user_frame
from flamefx.jaxpr import Jaxpr, Var
from flamefx.primitives import elementwise
from flamefx.primitives.elementwise import convert_element_type, full_like, ne, select_n
from flamefx.primitives.reductions import reduce_or
from flamefx.primitives.structural import broadcast_in_dim
from flamefx.transforms import call
from flamefx.transforms.ad import zeros_like
from flamefx.transforms.batching import broadcast_batch, move_axis
from flamefx.primitives.sub_jaxprs import (
    _trace, _aval, _is_float, _same_type, _run, _device_of, _eval_batched, _batch_jaxpr,
    _jvp_jaxpr, _carry_fixed_point, _reorder, _split, _join_consts, _cast_outputs, _types,
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


# --- carries: the type a loop's body must keep (while here, scan in scan.py) -----------------


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
