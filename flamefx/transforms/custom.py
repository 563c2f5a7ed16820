"""custom_vjp and custom_jvp: user-defined derivative rules for a Python function.

>>> import flamefx, flamefx.numpy as fnp
>>> @flamefx.custom_vjp
... def log1pexp(x):
...     return fnp.log1p(fnp.exp(x))
>>> def fwd(x):
...     return log1pexp(x), x
>>> def bwd(x, g):
...     return (g * (1.0 - 1.0 / (1.0 + fnp.exp(x))),)   # sigmoid(x), stable at large x
>>> log1pexp.defvjp(fwd, bwd)
>>> float(flamefx.grad(log1pexp)(100.0))
1.0
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from flamefx import core, tree_util
from flamefx.core import Primitive, Tracer
from flamefx.errors import FlamefxError, FlamefxTypeError, user_frame
from flamefx.jaxpr import trace_to_jaxpr
from flamefx.transforms import call


def _split_args(fun, args, kwargs, nondiff_argnums):
    if kwargs:
        bound = inspect.signature(fun).bind(*args, **kwargs)
        bound.apply_defaults()
        args = bound.args
    nondiff = {i: args[i] for i in nondiff_argnums}
    diff = [a for i, a in enumerate(args) if i not in nondiff]
    return nondiff, diff


def _merge(nondiff: dict, diff: list) -> list:
    it = iter(diff)
    return [nondiff[i] if i in nondiff else next(it) for i in range(len(nondiff) + len(diff))]


def _trace_primal(fun, nondiff, flat, in_tree, who):
    out_tree_box = []

    def flat_fun(*xs):
        out = fun(*_merge(nondiff, tree_util.tree_unflatten(in_tree, xs)))
        leaves, out_tree = tree_util.tree_flatten(out)
        out_tree_box.append(out_tree)
        return leaves

    closed = trace_to_jaxpr(flat_fun, [x.aval for x in flat])
    if any(isinstance(c, Tracer) for c in closed.consts):
        raise FlamefxTypeError(
            f"a {who} function closes over a traced value (e.g. a variable of an enclosing "
            f"grad/jit/vmap). flamefx cannot differentiate through such a closure with your "
            f"rule: pass the value as an explicit argument instead.\n  at {user_frame()}")
    return closed, out_tree_box[0]


def _prepare_call(fun, args, kwargs, nondiff_argnums, who):
    """Splits the arguments, flattens the differentiable ones and traces ``fun`` on them:
    returns (nondiff args by position, flat arrays, their tree, closed jaxpr, output tree)."""
    nondiff, diff = _split_args(fun, args, kwargs, nondiff_argnums)
    flat, in_tree = tree_util.tree_flatten(diff)
    flat = [core.ensure_array(x) for x in flat]
    closed, out_tree = _trace_primal(fun, nondiff, flat, in_tree, who)
    return nondiff, flat, in_tree, closed, out_tree


def _zeros_for(cts, like):
    from flamefx.transforms.ad import zeros_like
    return [zeros_like(o) if c is None else c for c, o in zip(cts, like)]


# --- custom_vjp ------------------------------------------------------------------------------


def _vjp_call_abstract_eval(*avals, jaxpr, fwd, bwd):
    return call.out_avals(jaxpr.jaxpr)


def _vjp_call_impl(*bufs, jaxpr, fwd, bwd):
    return call.eval_on_buffers(jaxpr.jaxpr, jaxpr.consts, bufs)


def _vjp_call_vjp(cts, primals, outs, *, jaxpr, fwd, bwd):
    _, residuals = fwd(*primals)
    return bwd(residuals, _zeros_for(cts, outs))


def _vjp_call_batch(axis_size, args, bdims, *, jaxpr, fwd, bwd):
    from flamefx.transforms.batching import to_front, vmap
    args = [to_front(a, d, axis_size) for a, d in zip(args, bdims)]
    batched_fun = vmap(lambda *xs: jaxpr(*xs))
    closed = trace_to_jaxpr(batched_fun, [core.get_aval(a) for a in args])
    outs = core.bind_list(custom_vjp_call_p, *args, jaxpr=closed, fwd=vmap(fwd),
                          bwd=vmap(bwd))
    return outs, [0] * len(outs)


custom_vjp_call_p = Primitive(
    "custom_vjp_call", abstract_eval=_vjp_call_abstract_eval, impl=_vjp_call_impl,
    cuda_impl=_vjp_call_impl, vjp=_vjp_call_vjp, batch=_vjp_call_batch, multiple_results=True)


class custom_vjp:
    """A function with a user-defined VJP: ``f.defvjp(fwd, bwd)``.

    ``fwd(*args) -> (out, residuals)``; ``bwd(*nondiff_args, residuals, g) -> tuple`` of
    cotangents, one per differentiable argument, matching their structure and shapes.
    """

    def __init__(self, fun: Callable, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd = self.bwd = None

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args, **kwargs):
        if self.fwd is None:
            raise FlamefxError(f"custom_vjp function {self.fun.__name__!r} was called before "
                               f"defvjp(fwd, bwd)\n  at {user_frame()}")
        nondiff, flat, in_tree, closed, out_tree = _prepare_call(
            self.fun, args, kwargs, self.nondiff_argnums, "custom_vjp")
        outs = core.bind_list(custom_vjp_call_p, *flat, jaxpr=closed,
                              fwd=self._flat_fwd(nondiff, in_tree),
                              bwd=self._flat_bwd(nondiff, in_tree, out_tree, flat))
        return tree_util.tree_unflatten(out_tree, outs)

    def _flat_fwd(self, nondiff, in_tree):
        def flat_fwd(*xs):
            result = self.fwd(*_merge(nondiff, tree_util.tree_unflatten(in_tree, xs)))
            if not isinstance(result, (tuple, list)) or len(result) != 2:
                raise FlamefxTypeError(f"custom_vjp fwd of {self.fun.__name__!r} must return "
                                       f"(output, residuals)\n  at {user_frame()}")
            return tree_util.tree_leaves(result[0]), result[1]
        return flat_fwd

    def _flat_bwd(self, nondiff, in_tree, out_tree, flat_in):
        name = self.fun.__name__
        in_avals = [x.aval for x in flat_in]
        nondiff_args = [nondiff[i] for i in sorted(nondiff)]

        def flat_bwd(residuals, cts):
            g = tree_util.tree_unflatten(out_tree, cts)
            ct_in = self.bwd(*nondiff_args, residuals, g)
            if not isinstance(ct_in, (tuple, list)):
                raise FlamefxTypeError(f"custom_vjp bwd of {name!r} must return a tuple with one "
                                       f"cotangent per differentiable argument, got "
                                       f"{type(ct_in).__name__}\n  at {user_frame()}")
            leaves, tree = tree_util.tree_flatten(tuple(ct_in), is_leaf=lambda x: x is None)
            expected = tree_util.tree_structure(tuple(tree_util.tree_unflatten(in_tree, in_avals)))
            if tree != expected:
                raise FlamefxTypeError(f"custom_vjp bwd of {name!r} returned cotangents of "
                                       f"structure {tree}, but the differentiable arguments "
                                       f"have structure {expected}\n  at {user_frame()}")
            for i, (ct, aval) in enumerate(zip(leaves, in_avals)):
                if ct is not None and core.get_aval(ct).shape != aval.shape:
                    raise FlamefxTypeError(
                        f"custom_vjp bwd of {name!r}: cotangent {i} has shape "
                        f"{core.get_aval(ct).shape} but its argument has shape {aval.shape}"
                        f"\n  at {user_frame()}")
            return leaves
        return flat_bwd


# --- custom_jvp ------------------------------------------------------------------------------


def _jvp_call_abstract_eval(*avals, jaxpr, jvp):
    return call.out_avals(jaxpr.jaxpr)


def _jvp_call_impl(*bufs, jaxpr, jvp):
    return call.eval_on_buffers(jaxpr.jaxpr, jaxpr.consts, bufs)


def _jvp_call_jvp(primals, tangents, *, jaxpr, jvp):
    return jvp(list(primals), _zeros_for(tangents, primals))


def _jvp_call_vjp(cts, primals, outs, *, jaxpr, jvp):
    # The user's JVP is linear in the tangents, so its VJP in them is the transpose we need.
    from flamefx.transforms.ad import vjp, zeros_like
    _, pullback = vjp(lambda *ts: jvp(list(primals), list(ts))[1],
                      *[zeros_like(p) for p in primals])
    return list(pullback(_zeros_for(cts, outs)))


def _jvp_call_batch(axis_size, args, bdims, *, jaxpr, jvp):
    from flamefx.transforms.batching import to_front, vmap
    args = [to_front(a, d, axis_size) for a, d in zip(args, bdims)]
    closed = trace_to_jaxpr(vmap(lambda *xs: jaxpr(*xs)), [core.get_aval(a) for a in args])
    outs = core.bind_list(custom_jvp_call_p, *args, jaxpr=closed, jvp=vmap(jvp))
    return outs, [0] * len(outs)


custom_jvp_call_p = Primitive(
    "custom_jvp_call", abstract_eval=_jvp_call_abstract_eval, impl=_jvp_call_impl,
    cuda_impl=_jvp_call_impl, jvp=_jvp_call_jvp, vjp=_jvp_call_vjp, batch=_jvp_call_batch,
    multiple_results=True)


class custom_jvp:
    """A function with a user-defined JVP: ``f.defjvp(rule)``, ``rule(primals, tangents)``
    returning ``(primal_out, tangent_out)``. Reverse mode transposes the rule.

    >>> import flamefx, flamefx.numpy as fnp
    >>> @flamefx.custom_jvp
    ... def safe_sqrt(x):
    ...     return fnp.sqrt(x)
    >>> @safe_sqrt.defjvp
    ... def _(primals, tangents):
    ...     (x,), (t,) = primals, tangents
    ...     y = fnp.sqrt(x)
    ...     return y, t * 0.5 / fnp.maximum(y, 1e-6)
    """

    def __init__(self, fun: Callable, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.jvp_rule = None

    def defjvp(self, jvp_rule: Callable) -> Callable:
        self.jvp_rule = jvp_rule
        return jvp_rule

    def __call__(self, *args, **kwargs):
        if self.jvp_rule is None:
            raise FlamefxError(f"custom_jvp function {self.fun.__name__!r} was called before "
                               f"defjvp(rule)\n  at {user_frame()}")
        nondiff, flat, in_tree, closed, out_tree = _prepare_call(
            self.fun, args, kwargs, self.nondiff_argnums, "custom_jvp")
        nondiff_args = [nondiff[i] for i in sorted(nondiff)]

        def flat_jvp(primals, tangents):
            p = tuple(tree_util.tree_unflatten(in_tree, primals))
            t = tuple(tree_util.tree_unflatten(in_tree, tangents))
            out, tout = self.jvp_rule(*nondiff_args, p, t)
            return tree_util.tree_leaves(out), tree_util.tree_leaves(tout)

        outs = core.bind_list(custom_jvp_call_p, *flat, jaxpr=closed, jvp=flat_jvp)
        return tree_util.tree_unflatten(out_tree, outs)
