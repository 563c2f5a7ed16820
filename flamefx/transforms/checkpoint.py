"""checkpoint (remat): store only the inputs; recompute the forward pass in the backward.

>>> import flamefx, flamefx.numpy as fnp
>>> f = flamefx.checkpoint(lambda x: fnp.sin(fnp.sin(x)))
>>> g = flamefx.grad(lambda x: fnp.sum(f(x)))(fnp.ones(3))
"""

from __future__ import annotations

import functools
from typing import Callable

from flamefx import core, tree_util
from flamefx.core import Primitive
from flamefx.jaxpr import hoist_consts, trace_to_jaxpr
from flamefx.transforms import call


def _abstract_eval(*avals, jaxpr):
    return call.out_avals(jaxpr)


def _impl(*bufs, jaxpr):
    return call.eval_on_buffers(jaxpr, [], bufs)


def _vjp(cts, primals, outs, *, jaxpr):
    # The recomputation: the forward pass runs again here, inside the backward pass.
    return call.vjp_of_jaxpr(jaxpr, primals, cts)


def _jvp(primals, tangents, *, jaxpr):
    return call.jvp_of_jaxpr(jaxpr, primals, tangents)


def _batch(axis_size, args, bdims, *, jaxpr):
    batched, consts = call.batch_jaxpr(jaxpr, axis_size, bdims)
    outs = core.bind_list(remat_p, *consts, *args, jaxpr=batched)
    return outs, [0] * len(outs)


remat_p = Primitive("remat", abstract_eval=_abstract_eval, impl=_impl, cuda_impl=_impl,
                    vjp=_vjp, jvp=_jvp, batch=_batch, multiple_results=True)


def checkpoint(fun: Callable, *, static_argnums=(), policy=None, prevent_cse=True) -> Callable:
    """Wraps ``fun`` so reverse mode recomputes its intermediates instead of storing them.

    ``policy`` and ``prevent_cse`` are accepted for JAX compatibility; flamefx saves nothing
    but the inputs.

    >>> import flamefx.numpy as fnp
    >>> layer = checkpoint(lambda w, x: fnp.tanh(w * x))
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
        outs = core.bind_list(remat_p, *consts, *flat, jaxpr=jaxpr)
        return tree_util.tree_unflatten(out_tree_box[0], outs)

    return remat_fun


remat = checkpoint
