"""The IR: jaxprs of typed variables, literals and equations; tracing into them.

>>> import flamefx, flamefx.numpy as fnp
>>> print(flamefx.make_jaxpr(lambda x: fnp.sum(x * 2.0))(fnp.ones(3)))   # doctest: +SKIP
{ lambda ; a:f32[3]. let
    b:f32[3] = mul a 2.0
    c:f32[] = reduce_sum[axes=(0,)] b
  in (c,) }
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from flamefx import core, tree_util
from flamefx.core import Array, ShapedArray, Trace, Tracer
from flamefx.errors import FlamefxTypeError, user_frame

_var_ids = itertools.count()


class Var:
    """A variable of a jaxpr, typed by its aval."""

    __slots__ = ("aval", "id")

    def __init__(self, aval: ShapedArray):
        self.aval = aval
        self.id = next(_var_ids)

    def __repr__(self):
        return f"Var({self.id}:{self.aval.str_short()})"


class Literal:
    """A scalar constant written inline in a jaxpr."""

    __slots__ = ("val", "aval")

    def __init__(self, val: Array):
        self.val = val
        self.aval = val.aval

    def __repr__(self):
        return f"Literal({self.val.item()!r})"


class JaxprEqn:
    """``outvars = prim[params](invars)``, with the user's source line for errors."""

    __slots__ = ("prim", "invars", "outvars", "params", "source")

    def __init__(self, prim, invars, outvars, params, source=""):
        self.prim, self.invars, self.outvars = prim, list(invars), list(outvars)
        self.params, self.source = params, source

    def replace(self, **kw) -> "JaxprEqn":
        fields = dict(prim=self.prim, invars=self.invars, outvars=self.outvars,
                      params=self.params, source=self.source)
        fields.update(kw)
        return JaxprEqn(**fields)


class Jaxpr:
    """A typed, first-order program: constvars and invars in, equations, outvars out."""

    __slots__ = ("constvars", "invars", "outvars", "eqns")

    def __init__(self, constvars, invars, outvars, eqns):
        self.constvars, self.invars = list(constvars), list(invars)
        self.outvars, self.eqns = list(outvars), list(eqns)

    @property
    def in_avals(self):
        return [v.aval for v in self.invars]

    @property
    def out_avals(self):
        return [v.aval for v in self.outvars]

    def __str__(self):
        return _Printer().jaxpr(self, indent=0)


class ClosedJaxpr:
    """A jaxpr together with the values of its constvars."""

    __slots__ = ("jaxpr", "consts")

    def __init__(self, jaxpr: Jaxpr, consts):
        self.jaxpr, self.consts = jaxpr, list(consts)

    @property
    def in_avals(self):
        return self.jaxpr.in_avals

    @property
    def out_avals(self):
        return self.jaxpr.out_avals

    @property
    def eqns(self):
        return self.jaxpr.eqns

    def __str__(self):
        return str(self.jaxpr)

    def __repr__(self):
        return str(self.jaxpr)

    def __call__(self, *args):
        return eval_jaxpr(self.jaxpr, self.consts, *args)


# --- printing ------------------------------------------------------------------------------


class _Printer:
    def __init__(self):
        self.names: dict[int, str] = {}

    def name(self, v) -> str:
        if isinstance(v, Literal):
            value = v.val.item()
            return repr(value) if not isinstance(value, float) else f"{value:.6g}"
        if v.id not in self.names:
            n = len(self.names)
            s = ""
            while True:
                s = chr(ord("a") + n % 26) + s
                n = n // 26 - 1
                if n < 0:
                    break
            self.names[v.id] = s
        return self.names[v.id]

    def typed(self, v) -> str:
        return f"{self.name(v)}:{v.aval.str_short()}"

    def param(self, value, indent) -> str:
        if isinstance(value, ClosedJaxpr):
            value = value.jaxpr
        if isinstance(value, Jaxpr):
            return "\n" + self.jaxpr(value, indent + 6)
        if (isinstance(value, (tuple, list)) and value
                and isinstance(value[0], (Jaxpr, ClosedJaxpr))):
            return "(" + ", ".join(self.param(v, indent) for v in value) + ")"
        if isinstance(value, np.dtype):
            return value.name
        if callable(value) and hasattr(value, "__name__"):
            return value.__name__
        return repr(value)

    def jaxpr(self, jaxpr: Jaxpr, indent: int) -> str:
        pad = " " * indent
        consts = " ".join(self.typed(v) for v in jaxpr.constvars)
        ins = " ".join(self.typed(v) for v in jaxpr.invars)
        lines = [f"{pad}{{ lambda {consts}; {ins}. let"]
        for eqn in jaxpr.eqns:
            outs = " ".join(self.typed(v) for v in eqn.outvars)
            params = ", ".join(f"{k}={self.param(v, indent)}"
                               for k, v in sorted(eqn.params.items()))
            params = f"[{params}]" if params else ""
            ins = " ".join(self.name(v) for v in eqn.invars)
            lines.append(f"{pad}    {outs} = {eqn.prim.name}{params} {ins}")
        outs = ", ".join(self.name(v) for v in jaxpr.outvars)
        lines.append(f"{pad}  in ({outs}{',' if len(jaxpr.outvars) == 1 else ''}) }}")
        return "\n".join(lines)


# --- evaluation and checking ------------------------------------------------------------------


def eval_jaxpr(jaxpr: Jaxpr, consts, *args) -> list:
    """Evaluates ``jaxpr`` by binding each equation, so evaluation itself can be traced."""
    env: dict[int, Any] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v.id]

    for v, x in zip(jaxpr.constvars, consts):
        env[v.id] = x
    if len(args) != len(jaxpr.invars):
        raise FlamefxTypeError(f"jaxpr takes {len(jaxpr.invars)} arguments, got {len(args)}")
    for v, x in zip(jaxpr.invars, args):
        env[v.id] = x
    for eqn in jaxpr.eqns:
        outs = core.bind(eqn.prim, *[read(v) for v in eqn.invars], **eqn.params)
        if not eqn.prim.multiple_results:
            outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v.id] = x
    return [read(v) for v in jaxpr.outvars]


def typecheck(jaxpr: Jaxpr) -> None:
    """Checks that every variable is defined before use and every equation is well typed."""
    defined: dict[int, ShapedArray] = {}
    for v in jaxpr.constvars + jaxpr.invars:
        _define(defined, v)
    for i, eqn in enumerate(jaxpr.eqns):
        in_avals = []
        for v in eqn.invars:
            if isinstance(v, Var) and v.id not in defined:
                raise FlamefxTypeError(f"equation {i} ({eqn.prim.name}) uses an undefined variable")
            in_avals.append(v.aval)
        expected = core.abstract_eval(eqn.prim, in_avals, eqn.params)
        for v, av in zip(eqn.outvars, expected):
            if (v.aval.shape, v.aval.dtype) != (av.shape, av.dtype):
                raise FlamefxTypeError(f"equation {i} ({eqn.prim.name}) declares "
                                       f"{v.aval.str_short()} but its rule gives {av.str_short()}")
            _define(defined, v)
    for v in jaxpr.outvars:
        if isinstance(v, Var) and v.id not in defined:
            raise FlamefxTypeError("a jaxpr output is not defined")


def _define(defined, v):
    if v.id in defined:
        raise FlamefxTypeError(f"variable {v} is defined twice")
    defined[v.id] = v.aval


# --- tracing into a jaxpr ---------------------------------------------------------------------


class JaxprTracer(Tracer):
    __slots__ = ("_var",)

    def __init__(self, trace, var: Var):
        self._trace, self._var = trace, var

    @property
    def aval(self):
        return self._var.aval


class JaxprTrace(Trace):
    """Records primitive applications as equations instead of running them."""

    def __init__(self, parent):
        super().__init__(parent)
        self.eqns: list[JaxprEqn] = []
        self.invars: list[Var] = []
        self.constvars: list[Var] = []
        self.consts: list = []
        self._const_vars: dict[int, Var] = {}

    def new_arg(self, aval: ShapedArray) -> JaxprTracer:
        var = Var(aval)
        self.invars.append(var)
        return JaxprTracer(self, var)

    def to_var(self, x):
        if isinstance(x, JaxprTracer) and x._trace is self:
            return x._var
        if isinstance(x, Tracer):
            self.check_foreign(x)
        elif x.shape == () and x.size == 1:
            return Literal(x)
        var = self._const_vars.get(id(x))
        if var is None:
            var = Var(x.aval)
            self._const_vars[id(x)] = var
            self.constvars.append(var)
            self.consts.append(x)  # keeps x alive, so its id stays unique
        return var

    def process_primitive(self, prim, args, params):
        invars = [self.to_var(a) for a in args]
        out_avals = core.abstract_eval(prim, [a.aval for a in args], params)
        outs = [JaxprTracer(self, Var(av)) for av in out_avals]
        self.eqns.append(JaxprEqn(prim, invars, [o._var for o in outs], params, user_frame()))
        return outs

    def finish(self, outs) -> ClosedJaxpr:
        outvars = [self.to_var(core.ensure_array(o)) for o in outs]
        return ClosedJaxpr(Jaxpr(self.constvars, self.invars, outvars, self.eqns), self.consts)


def trace_to_jaxpr(flat_fn: Callable, in_avals) -> ClosedJaxpr:
    """Traces ``flat_fn`` (flat list of arrays in, flat list out) at ``in_avals``.

    Constants may be concrete Arrays or tracers of enclosing transforms; callers that
    bind the jaxpr as a primitive pass them as leading arguments (see ``hoist_consts``).
    """
    with core.new_trace(JaxprTrace) as trace:
        in_tracers = [trace.new_arg(av) for av in in_avals]
        outs = flat_fn(*in_tracers)
        return trace.finish(outs)


def hoist_consts(closed: ClosedJaxpr) -> tuple[Jaxpr, list]:
    """Turns constvars into leading invars: returns (jaxpr without consts, consts)."""
    j = closed.jaxpr
    return Jaxpr([], j.constvars + j.invars, j.outvars, j.eqns), list(closed.consts)


def make_jaxpr(fun: Callable, static_argnums=()):
    """Returns a function that traces ``fun`` and gives its jaxpr (``str`` is a listing).

    >>> import flamefx.numpy as fnp
    >>> jaxpr = make_jaxpr(lambda x: x * 2.0)(fnp.ones(3))
    >>> [e.prim.name for e in jaxpr.eqns]
    ['mul']
    """
    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    def make(*args, **kwargs):
        dyn_idx = [i for i in range(len(args)) if i not in static_argnums]
        leaves, in_tree = tree_util.tree_flatten(([args[i] for i in dyn_idx], kwargs))
        in_avals = [core.get_aval(x) for x in leaves]

        def flat_fn(*flat):
            dyn, kw = tree_util.tree_unflatten(in_tree, flat)
            full = list(args)
            for i, x in zip(dyn_idx, dyn):
                full[i] = x
            return tree_util.tree_leaves(fun(*full, **kw))

        return trace_to_jaxpr(flat_fn, in_avals)

    return make
