"""checkpoint (remat): store only what a policy saves; recompute the rest in the backward.

Without a policy only the inputs are stored and the whole forward pass runs again in the
backward pass. With one (``flamefx.checkpoint_policies``), ``policy(prim, *avals,
**params)`` decides per equation whether its outputs are saved: the ``remat`` equation
then also returns those values (``num_res`` residual outputs after the function's own),
and its VJP replays the forward pass on the reverse-mode tape, taking each saved
equation's outputs as given instead of recomputing them.

>>> import flamefx, flamefx.numpy as fnp
>>> f = flamefx.checkpoint(lambda x: fnp.sin(fnp.sin(x)))
>>> g = flamefx.grad(lambda x: fnp.sum(f(x)))(fnp.ones(3))
"""

from __future__ import annotations

import functools
from typing import Callable

from flamefx import core, tree_util
from flamefx.core import Primitive
from flamefx.jaxpr import Jaxpr, Literal, Var, hoist_consts, trace_to_jaxpr
from flamefx.transforms import ad, call, passes


def _abstract_eval(*avals, jaxpr, num_res=0):
    return call.out_avals(jaxpr)


def _impl(*bufs, jaxpr, num_res=0):
    return call.eval_on_buffers(jaxpr, [], bufs)


def _vjp(cts, primals, outs, *, jaxpr, num_res=0):
    # The recomputation: the forward pass runs again here, inside the backward pass (its
    # debug prints showed in the forward pass already, as in JAX).
    jaxpr = passes.without_debug_callbacks(jaxpr)
    if not num_res:
        return call.vjp_of_jaxpr(jaxpr, primals, cts)
    saved = {v.id: o for v, o in zip(jaxpr.outvars[-num_res:], outs[-num_res:])
             if isinstance(v, Var)}
    replayed, pullback = ad.vjp(lambda *xs: _replay(jaxpr, saved, xs), *primals)
    cts = [ad.zeros_like(o) if c is None else c for o, c in zip(replayed, cts)]
    return list(pullback(cts))


def _jvp(primals, tangents, *, jaxpr, num_res=0):
    return call.jvp_of_jaxpr(jaxpr, primals, tangents)


def _batch(axis_size, args, bdims, *, jaxpr, num_res=0):
    # The batched jaxpr still returns the residuals last, so num_res carries over.
    batched, consts = call.batch_jaxpr(jaxpr, axis_size, bdims)
    outs = core.bind_list(remat_p, *consts, *args, jaxpr=batched, num_res=num_res)
    return outs, [0] * len(outs)


remat_p = Primitive("remat", abstract_eval=_abstract_eval, impl=_impl, cuda_impl=_impl,
                    vjp=_vjp, jvp=_jvp, batch=_batch, multiple_results=True)


# --- replaying the forward pass with saved values ------------------------------------------------


def _replay(jaxpr: Jaxpr, saved: dict, args) -> list:
    """Evaluates ``jaxpr`` on the current (reverse-mode) trace; equations whose outputs are
    all in ``saved`` (var id -> value) are recorded with those values, not recomputed."""
    env: dict[int, object] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v.id]

    for v, x in zip(jaxpr.invars, args):
        env[v.id] = x
    saved = dict(saved)
    for eqn in reversed(jaxpr.eqns):
        # A saved name (checkpoint_name) is its operand too: that needs no recomputing.
        if eqn.prim is name_p and eqn.outvars[0].id in saved and isinstance(eqn.invars[0], Var):
            saved.setdefault(eqn.invars[0].id, saved[eqn.outvars[0].id])
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.outvars and all(v.id in saved for v in eqn.outvars):
            outs = _record(eqn, ins, [saved[v.id] for v in eqn.outvars])
        else:
            outs = core.bind_list(eqn.prim, *ins, **eqn.params)
        for v, x in zip(eqn.outvars, outs):
            env[v.id] = x
    return [read(v) for v in jaxpr.outvars]


def _record(eqn, ins, outs) -> list:
    """Puts ``eqn`` on the reverse-mode tape with known outputs (what VJPTrace does after
    binding, without the binding)."""
    trace = core.current_trace()
    if not isinstance(trace, ad.VJPTrace):
        return core.bind_list(eqn.prim, *ins, **eqn.params)
    primals, nodes, indices = trace.unpack(ins, ad.VJPTracer, ("primal", "node", "index"), None)
    parents = [None if n is None else (n, i) for n, i in zip(nodes, indices)]
    if not eqn.prim.differentiable or all(p is None for p in parents):
        return outs
    return trace.record(eqn.prim, eqn.params, primals, parents, outs)


def _residuals(jaxpr: Jaxpr, policy: Callable) -> list[Var]:
    """The outputs of the equations ``policy`` saves (float values only: the rest need
    no derivatives and are cheap to recompute)."""
    out = []
    for eqn in jaxpr.eqns:
        if not eqn.outvars or passes.has_effects(eqn):
            continue
        if policy(eqn.prim, *[v.aval for v in eqn.invars], **eqn.params):
            out += [v for v in eqn.outvars if v.aval.dtype.kind in "fc"]
    return out


# --- the API -----------------------------------------------------------------------------------


def checkpoint(fun: Callable, *, static_argnums=(), policy=None, prevent_cse=True) -> Callable:
    """Wraps ``fun`` so reverse mode recomputes its intermediates instead of storing them;
    ``policy`` (see ``flamefx.checkpoint_policies``) names the ones to store after all.

    ``prevent_cse`` is accepted for JAX compatibility (flamefx's CSE never merges a
    recomputation with the forward pass: they are in different programs).

    >>> import flamefx, flamefx.numpy as fnp
    >>> layer = checkpoint(lambda w, x: fnp.tanh(x @ w),
    ...                    policy=flamefx.checkpoint_policies.dots_saveable)
    >>> flamefx.grad(lambda w: fnp.sum(layer(w, fnp.ones((2, 3)))))(fnp.ones((3, 4))).shape
    (3, 4)
    """
    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    @functools.wraps(fun)
    def remat_fun(*args, **kwargs):
        dyn_idx = [i for i in range(len(args)) if i not in static_argnums]
        flat, in_tree = tree_util.tree_flatten(([args[i] for i in dyn_idx], kwargs))
        flat = [core.ensure_array(x) for x in flat]
        out_tree_box = []

        def flat_fun(*xs):
            dyn, kw = tree_util.tree_unflatten(in_tree, xs)
            full = list(args)
            for i, x in zip(dyn_idx, dyn):
                full[i] = x
            leaves, out_tree = tree_util.tree_flatten(fun(*full, **kw))
            out_tree_box.append(out_tree)
            return leaves

        jaxpr, consts = hoist_consts(trace_to_jaxpr(flat_fun, [x.aval for x in flat]))
        residuals = _residuals(jaxpr, policy) if policy is not None else []
        if residuals:
            jaxpr = Jaxpr([], jaxpr.invars, jaxpr.outvars + residuals, jaxpr.eqns)
        outs = core.bind_list(remat_p, *consts, *flat, jaxpr=jaxpr, num_res=len(residuals))
        return tree_util.tree_unflatten(out_tree_box[0], outs[:len(outs) - len(residuals)])

    return remat_fun


remat = checkpoint


# --- checkpoint_name ---------------------------------------------------------------------------


def _name_abstract(x, *, name):
    return [x]


def _name_impl(x, *, name):
    return [x]


def _name_vjp(cts, primals, outs, *, name):
    return [cts[0]]


def _name_jvp(primals, tangents, *, name):
    return [name_p.bind(primals[0], name=name)], [tangents[0]]


def _name_batch(axis_size, args, bdims, *, name):
    return [name_p.bind(args[0], name=name)], [bdims[0]]


name_p = Primitive("checkpoint_name", abstract_eval=_name_abstract, impl=_name_impl,
                   cuda_impl=_name_impl, vjp=_name_vjp, jvp=_name_jvp, batch=_name_batch)


def checkpoint_name(x, name: str):
    """``x`` itself, named ``name`` for the policies ``save_only_these_names`` and
    ``save_anything_except_these_names`` (as ``jax.ad_checkpoint.checkpoint_name``).

    >>> import flamefx.numpy as fnp
    >>> checkpoint_name(fnp.ones(2), "hidden").tolist()
    [1.0, 1.0]
    """
    return tree_util.tree_map(lambda leaf: name_p.bind(leaf, name=str(name)), x)
