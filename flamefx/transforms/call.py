"""Rules shared by primitives that hold a jaxpr (checkpoint, custom_vjp/jvp, jit, control flow).

Such a primitive's operands are the jaxpr's inputs; its rules re-trace the jaxpr under the
transform (vmap, jvp) into a new jaxpr and bind the same primitive on it.
"""

from __future__ import annotations

from flamefx import core, devices
from flamefx.jaxpr import Jaxpr, eval_jaxpr, trace_to_jaxpr


def out_avals(jaxpr: Jaxpr) -> list:
    return [v.aval for v in jaxpr.outvars]


def eval_on_buffers(jaxpr: Jaxpr, consts, bufs) -> list:
    """Runs ``jaxpr`` eagerly on raw NumPy/CuPy buffers (an impl for call-like primitives)
    on the buffers' device. The inputs are committed to it: an equation that reads only
    literals or nothing (iota, a broadcast constant) runs on the default device, and its
    uncommitted result must follow the inputs, not lead them there (a GPU program's
    custom_jvp computed on the CPU and returned NumPy arrays to the next cuda_impl when the
    default device was the CPU). The outputs are moved there too."""
    device = devices.device_of_buffer(bufs[0]) if bufs else devices.default_device()
    args = [core.Array(devices.move_buffer(b, device), device, False, True) for b in bufs]
    consts = [core.to_array(c, device=device) for c in consts]
    return [devices.move_buffer(core.ensure_array(o).buffer, device)
            for o in eval_jaxpr(jaxpr, consts, *args)]


def batch_jaxpr(jaxpr: Jaxpr, axis_size: int, bdims) -> tuple[Jaxpr, list]:
    """A jaxpr computing ``vmap(jaxpr)`` with inputs batched at ``bdims``; outputs at axis 0.

    Constants of the traced jaxpr are hoisted to leading inputs; returns (jaxpr, consts).
    """
    from flamefx.transforms.batching import vmap
    from flamefx.jaxpr import hoist_consts

    def batched(*args):
        return vmap(lambda *xs: eval_jaxpr(jaxpr, [], *xs), in_axes=tuple(bdims),
                    axis_size=axis_size)(*args)

    in_avals = [_batched_aval(v.aval, d, axis_size) for v, d in zip(jaxpr.invars, bdims)]
    return hoist_consts(trace_to_jaxpr(batched, in_avals))


def _batched_aval(aval, bdim, axis_size):
    if bdim is None:
        return aval
    return aval.update(shape=aval.shape[:bdim] + (axis_size,) + aval.shape[bdim:])


def jvp_of_jaxpr(jaxpr: Jaxpr, primals, tangents) -> tuple[list, list]:
    """Forward mode through a jaxpr, evaluated on the current trace."""
    from flamefx.transforms.ad import jvp, zeros_like
    tangents = [zeros_like(p) if t is None else t for p, t in zip(primals, tangents)]
    outs, touts = jvp(lambda *xs: eval_jaxpr(jaxpr, [], *xs), tuple(primals), tuple(tangents))
    return list(outs), list(touts)


def vjp_of_jaxpr(jaxpr: Jaxpr, primals, cts) -> list:
    """Reverse mode through a jaxpr, recomputing its forward pass from ``primals`` (without
    its debug prints: they showed when the forward pass ran, as in JAX)."""
    from flamefx.transforms.ad import vjp, zeros_like
    from flamefx.transforms.passes import without_debug_callbacks
    jaxpr = without_debug_callbacks(jaxpr)
    outs, pullback = vjp(lambda *xs: eval_jaxpr(jaxpr, [], *xs), *primals)
    cts = [zeros_like(o) if c is None else c for o, c in zip(outs, cts)]
    return list(pullback(cts))
