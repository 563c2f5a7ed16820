"""``jax_debug_nans`` / ``jax_debug_infs``: find the operation that first made a NaN or inf.

With either option on (``flamefx.config.update("jax_debug_nans", True)``), every eager
primitive's float outputs are checked as it runs, and every jitted call's outputs after it
runs (on the GPU, one reduction kernel per output and one read per call). When a jitted
call's outputs hold a NaN, its jaxpr is run again equation by equation, eagerly on the
same device, to find the first equation that made one, as JAX does; the error names that
primitive and the user's source line recorded when the equation was traced.

>>> import flamefx, flamefx.numpy as fnp
>>> with flamefx.config.override("jax_debug_nans", True):
...     fnp.log(fnp.array(-1.0))                         # doctest: +SKIP
FloatingPointError: invalid value (nan) encountered in log
  at <stdin>:2 (<module>)
"""

from __future__ import annotations

from flamefx import config, core
from flamefx.errors import user_frame
from flamefx.kernels.executor import nonfinite_outputs


def _kind(arrays, checks) -> str | None:
    """'nan' or 'inf' if an array holds one that ``checks`` (nans, infs) asks about (NaN
    first), else None."""
    nans, infs = checks
    bufs = [a.buffer for a in arrays if isinstance(a, core.Array)]
    if not any(nonfinite_outputs(bufs, nans, infs)):  # the common case: one read
        return None
    return "nan" if nans and any(nonfinite_outputs(bufs, True, False)) else "inf"


def _raise(kind: str, prim_name: str, source: str, inside: str = "",
           inputs_bad: bool = False) -> None:
    where = f" inside {inside}" if inside else ""
    note = f"\n(its operands already held a {kind}: it came in with the inputs)" if inputs_bad \
        else ""
    raise FloatingPointError(f"invalid value ({kind}) encountered in {prim_name}{where}\n"
                             f"  at {source}{note}")


def check_eager(prim, params: dict, args, outs) -> None:
    """Called by the eager trace on every primitive's outputs while a check is on."""
    checks = config.nonfinite_checks
    kind = _kind(outs, checks)
    if kind is None:
        return
    if prim.name == "jit_call":
        _find_in_jaxpr(params["jaxpr"], list(args), params["program"].name)
    _raise(kind, prim.name, user_frame(), inputs_bad=_kind(args, checks) == kind)


def check_jitted(name: str, jaxpr, consts, leaves, outs) -> None:
    """Called on a jitted call's outputs at the top level while a check is on; re-runs the
    program op by op to name the equation that first made the NaN or inf."""
    kind = _kind(outs, config.nonfinite_checks)
    if kind is None:
        return
    _find_in_jaxpr(jaxpr, list(consts) + list(leaves), name)
    # Re-running did not reproduce it (a fused kernel's rounding, say): name the call.
    _raise(kind, name, user_frame())


def _find_in_jaxpr(jaxpr, args: list, name: str) -> None:
    """Evaluates ``jaxpr`` equation by equation with the checks paused, raising at the first
    equation whose outputs hold a NaN (inf); returns if none does."""
    checks = config.nonfinite_checks
    config.nonfinite_checks = None  # the equations are checked here, with their own lines
    try:
        culprit = _first_bad_equation(jaxpr, args, checks)
    finally:
        config.nonfinite_checks = checks
    if culprit is not None:
        eqn, kind, inputs_bad = culprit
        _raise(kind, eqn.prim.name, eqn.source or "<unknown>", name, inputs_bad)


def _first_bad_equation(jaxpr, args: list, checks):
    from flamefx.jaxpr import Literal
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v.id]

    for v, x in zip(jaxpr.invars, args):
        env[v.id] = core.ensure_array(x)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        outs = core.bind_list(eqn.prim, *ins, **eqn.params)
        kind = _kind(outs, checks)
        if kind is not None:
            inner = (_first_bad_equation(eqn.params["jaxpr"], ins, checks)
                     if eqn.prim.name == "jit_call" else None)
            return inner or (eqn, kind, _kind(ins, checks) == kind)
        for v, x in zip(eqn.outvars, outs):
            env[v.id] = x
    return None
