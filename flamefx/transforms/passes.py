"""Optimization passes over jaxprs, run by ``jit`` before it compiles.

Each pass is a small function from a (closed) jaxpr to a new one; none mutates its input.
``optimize`` chains them: inline nested jit calls, drop no-op reshapes/transposes/converts,
fold transposes of matrix products into the products, narrow broadcast attention
cotangents, turn outer products into fused multiplies (EXPAND_OUTER_PRODUCTS), fold
constants, merge common subexpressions, eliminate dead code.

>>> import flamefx, flamefx.numpy as fnp
>>> closed = flamefx.make_jaxpr(lambda x: fnp.sin(x) + fnp.sin(x))(fnp.ones(3))
>>> [e.prim.name for e in optimize(closed).eqns]    # the second sin merges into the first
['sin', 'add']
"""

from __future__ import annotations

import numpy as np

from flamefx import core
from flamefx.devices import devices as cpu_devices
from flamefx.jaxpr import ClosedJaxpr, Jaxpr, JaxprEqn, Literal, Var
from flamefx.primitives.callbacks import EFFECTFUL, HOST_CALLBACKS

# Folding evaluates on the CPU; larger results would bloat the constants (and the GPU
# transfers of them) for no gain, so they are left to run inside the program.
FOLD_MAX_ELEMENTS = 1024

# Except a broadcast of a constant that only opaque kernels read (attention's backward
# given the zero cotangent of an unused lse and the ones of sum's gradient, W3): no fused
# kernel can absorb it, so it would be a kernel launch of its own on every call (3.6 us
# each in W3's graph on the H100). Folded up to this many elements (4 MB of float32), it
# is made once.
FOLD_FOR_OPAQUE_MAX_ELEMENTS = 2**20

# Whether optimize() turns k = 1 products into fused broadcast multiplies (see
# expand_outer_products); benchmarks/profile_step.py times both ways. On: on the H100
# (2026-11-24) the vectorized broadcast kernel wrote W6's 822 MB gradient in 0.290 ms
# against 0.376 ms for cuBLAS's k = 1 batched GEMM, and its (1024, 256, 10) one (scalar
# loop: rows of 10) in 0.009 ms against 0.017 ms; W6 went from 0.66 to 0.57 ms per call.
# W1, W1-bf16 and W2 have no k = 1 products.
EXPAND_OUTER_PRODUCTS = True

_HALF_FLOATS = ("float16", "bfloat16")

# sink_broadcasts leaves smaller ops alone (see there).
SINK_MIN_ELEMENTS = 2**20

_NOOP_IF_SAME_AVAL = frozenset({"reshape", "convert_element_type", "broadcast_in_dim",
                                "squeeze", "expand_dims", "copy",
                                "checkpoint_name"})  # a name for checkpoint policies only


def _substitute(atoms, replace: dict) -> list:
    """``atoms`` with each variable that ``replace`` maps (by id) swapped for its value
    (what a pass that drops or merges equations does to the readers of their outputs)."""
    return [replace.get(v.id, v) if isinstance(v, Var) else v for v in atoms]


def inline_jit_calls(jaxpr: Jaxpr) -> Jaxpr:
    """Splices the equations of nested ``jit_call``s into ``jaxpr`` (``jit(jit(f))``)."""
    if not any(e.prim.name == "jit_call" for e in jaxpr.eqns):
        return jaxpr
    eqns: list[JaxprEqn] = []
    replace: dict[int, object] = {}
    for eqn in jaxpr.eqns:
        invars = _substitute(eqn.invars, replace)
        if eqn.prim.name != "jit_call":
            eqns.append(eqn.replace(invars=invars))
            continue
        inner = inline_jit_calls(eqn.params["jaxpr"])
        inner_env: dict[int, object] = {v.id: a for v, a in zip(inner.invars, invars)}
        for inner_eqn in inner.eqns:
            new_outs = [Var(v.aval) for v in inner_eqn.outvars]
            inner_ins = _substitute(inner_eqn.invars, inner_env)
            inner_env.update({v.id: n for v, n in zip(inner_eqn.outvars, new_outs)})
            eqns.append(inner_eqn.replace(invars=inner_ins, outvars=new_outs))
        for outer_v, new in zip(eqn.outvars, _substitute(inner.outvars, inner_env)):
            replace[outer_v.id] = new
    return Jaxpr(jaxpr.constvars, jaxpr.invars, _substitute(jaxpr.outvars, replace), eqns)


def _is_noop(eqn: JaxprEqn) -> bool:
    if len(eqn.invars) != 1 or len(eqn.outvars) != 1:
        return False
    if eqn.invars[0].aval != eqn.outvars[0].aval:
        return False
    name = eqn.prim.name
    if name == "transpose":
        return tuple(eqn.params["permutation"]) == tuple(range(eqn.outvars[0].aval.ndim))
    return name in _NOOP_IF_SAME_AVAL


def remove_noops(jaxpr: Jaxpr) -> Jaxpr:
    """Drops reshapes/transposes/converts/broadcasts/squeezes/copies that change nothing."""
    replace: dict[int, object] = {}
    kept = []
    for eqn in jaxpr.eqns:
        invars = _substitute(eqn.invars, replace)
        eqn = eqn.replace(invars=invars) if invars != eqn.invars else eqn
        if _is_noop(eqn):
            replace[eqn.outvars[0].id] = eqn.invars[0]
        else:
            kept.append(eqn)
    outvars = _substitute(jaxpr.outvars, replace)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, kept)


def _swapped_product_order(eqn: JaxprEqn) -> tuple:
    """The permutation that turns ``eqn``'s (dot_general) output into the output of the
    same product with its operands swapped: batch axes, then rhs free, then lhs free."""
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    n_batch = len(lhs_batch)
    n_lhs_free = eqn.invars[0].aval.ndim - len(lhs_contract) - n_batch
    n_rhs_free = eqn.outvars[0].aval.ndim - n_batch - n_lhs_free
    return (tuple(range(n_batch))
            + tuple(range(n_batch + n_lhs_free, n_batch + n_lhs_free + n_rhs_free))
            + tuple(range(n_batch, n_batch + n_lhs_free)))


def read_counts(jaxpr: Jaxpr) -> dict[int, int]:
    """How many times each variable is read (by equations and as an output), by its id;
    a rewrite that consumes a value may only drop it when it is the sole reader.

    >>> import flamefx, flamefx.numpy as fnp
    >>> j = flamefx.make_jaxpr(lambda x: fnp.sin(x) * x)(1.0).jaxpr
    >>> read_counts(j)[j.invars[0].id]
    2
    """
    uses: dict[int, int] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, Var):
                uses[v.id] = uses.get(v.id, 0) + 1
    for v in jaxpr.outvars:
        if isinstance(v, Var):
            uses[v.id] = uses.get(v.id, 0) + 1
    return uses


def fold_transposes_into_products(jaxpr: Jaxpr) -> Jaxpr:
    """Rewrites ``transpose(dot_general(a, b))`` as ``dot_general(b, a)`` where the
    transpose only swaps the two operands' free axes (the shape of every weight gradient
    in a backward pass): the GEMM writes the transposed result directly (cuBLAS picks
    operand orientations for free), so no transpose kernel runs and nothing is copied.
    The product is only rewritten when the transpose is its sole reader."""
    uses = read_counts(jaxpr)
    products = {e.outvars[0].id: e for e in jaxpr.eqns if e.prim.name == "dot_general"}
    folded: set[int] = set()
    eqns = []
    for eqn in jaxpr.eqns:
        src = eqn.invars[0] if eqn.prim.name == "transpose" else None
        product = products.get(src.id) if isinstance(src, Var) else None
        if (product is not None and uses[src.id] == 1
                and tuple(eqn.params["permutation"]) == _swapped_product_order(product)):
            (lc, rc), (lb, rb) = product.params["dimension_numbers"]
            params = dict(product.params, dimension_numbers=((rc, lc), (rb, lb)))
            eqns.append(product.replace(invars=product.invars[::-1], outvars=eqn.outvars,
                                        params=params, source=eqn.source or product.source))
            folded.add(id(product))
        else:
            eqns.append(eqn)
    if not folded:
        return jaxpr
    # The rewritten product sits where the transpose was, after both its operands.
    eqns = [e for e in eqns if id(e) not in folded]
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns)


def _outer_product_operand(var, keep, positions, out_aval, source) -> tuple[list, JaxprEqn]:
    """Equations that bring a dot_general operand's ``keep`` axes (its batch and free
    axes; the contracting ones have size 1) to ``positions`` of the output shape: (the
    reshape/transpose equations, the broadcast equation)."""
    prims = _structural()
    eqns = []
    shape = tuple(var.aval.shape[d] for d in keep)
    if shape != var.aval.shape:  # drop the size-1 contracting axes (a view)
        dropped = Var(var.aval.update(shape=shape))
        eqns.append(JaxprEqn(prims.reshape_p, [var], [dropped], {"new_sizes": shape}, source))
        var = dropped
    order = tuple(sorted(range(len(keep)), key=lambda i: positions[i]))
    if order != tuple(range(len(keep))):  # broadcast dimensions must increase
        moved = Var(var.aval.update(shape=tuple(shape[i] for i in order)))
        eqns.append(JaxprEqn(prims.transpose_p, [var], [moved], {"permutation": order},
                             source))
        var = moved
    broadcast = JaxprEqn(prims.broadcast_in_dim_p, [var], [Var(out_aval)],
                         {"shape": out_aval.shape,
                          "broadcast_dimensions": tuple(sorted(positions))}, source)
    return eqns, broadcast


def _structural():
    from flamefx.primitives import structural
    return structural


def _output_positions(eqn: JaxprEqn) -> tuple[dict[int, int], dict[int, int]]:
    """Where each batch or free axis of a dot_general's lhs and rhs lands in its output
    (batch axes, then lhs free, then rhs free)."""
    lhs, rhs = eqn.invars
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    free = [[d for d in range(x.aval.ndim) if d not in c and d not in b]
            for x, c, b in ((lhs, lc, lb), (rhs, rc, rb))]
    return tuple({d: i for i, d in enumerate(b)} | {d: len(b) + offset + i
                                                    for i, d in enumerate(f)}
                 for b, f, offset in ((lb, free[0], 0), (rb, free[1], len(free[0]))))


def _broadcast_product(factors, eqn: JaxprEqn) -> list[JaxprEqn]:
    """Equations that compute ``eqn``'s output as the product of ``factors``, each a (var,
    kept axes, their output positions, weak type) broadcast to the output shape: the
    factors' views, both broadcasts right before the multiply (so that fusion reads them
    in its kernel), the multiply."""
    from flamefx.primitives import elementwise
    out_aval = eqn.outvars[0].aval
    views, broadcasts = [], []
    for var, keep, positions, weak in factors:
        made, broadcast = _outer_product_operand(var, keep, positions,
                                                 out_aval.update(weak_type=weak), eqn.source)
        views += made
        broadcasts.append(broadcast)
    return views + broadcasts + [JaxprEqn(elementwise.mul_p, [b.outvars[0] for b in broadcasts],
                                          eqn.outvars, {}, eqn.source)]


def _rewrite_products(jaxpr: Jaxpr, rewrite) -> Jaxpr:
    """``jaxpr`` with each dot_general for which ``rewrite(eqn)`` gives equations replaced
    by them (``rewrite`` returns None to keep the product)."""
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
        made = rewrite(eqn) if eqn.prim.name == "dot_general" else None
        eqns += [eqn] if made is None else made
        changed = changed or made is not None
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns) if changed else jaxpr


def expand_outer_products(jaxpr: Jaxpr) -> Jaxpr:
    """Rewrites a float ``dot_general`` whose contracting axes all have size 1 (an outer
    product: per-example weight gradients) as a product of two broadcasts.

    cuBLAS runs such a product as a GEMM with k = 1, far from the bandwidth its huge
    output needs; as broadcasts and a multiply it becomes one fused elementwise kernel
    that reads each operand through index arithmetic and writes the output once.
    """
    def rewrite(eqn):
        if not _is_outer_product(eqn):
            return None
        factors = []
        for var, position in zip(eqn.invars, _output_positions(eqn)):
            keep = sorted(position)
            factors.append((var, keep, [position[d] for d in keep], var.aval.weak_type))
        return _broadcast_product(factors, eqn)
    return _rewrite_products(jaxpr, rewrite)


def narrow_attention_cotangents(jaxpr: Jaxpr) -> Jaxpr:
    """Hands ``flash_attention_bwd`` a (batch, heads, q_seq, 1) ``dout`` where the full one
    is a broadcast that is constant along the value dim, as the gradient of
    ``sum(attention(...))`` is. The backwards that take it (kept probabilities in float32,
    the tensor-core kernels in float16/bfloat16) then compute neither dP = dO Vᵀ nor
    dV = Pᵀ dO as products (primitives/attention.py, ``_split_bwd``); the others broadcast
    it back. XLA's algebraic simplifier does the same to the softmax form, where a product
    with a broadcast operand becomes a reduction.
    """
    producers = {v.id: e for e in jaxpr.eqns for v in e.outvars}
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
        if eqn.prim.name == "flash_attention_bwd" and (
                eqn.params.get("keep_probs") or eqn.invars[0].aval.dtype.name in _HALF_FLOATS):
            at = len(eqn.invars) - 2 - eqn.params.get("keep_probs", False)  # dout, dlse[, P]
            dout = eqn.invars[at]
            source = producers.get(dout.id) if isinstance(dout, Var) else None
            shape = dout.aval.shape
            if (source is not None and source.prim.name == "broadcast_in_dim"
                    and shape[-1] > 1
                    and len(shape) - 1 not in source.params["broadcast_dimensions"]):
                narrow = Var(dout.aval.update(shape=shape[:-1] + (1,)))
                eqns.append(JaxprEqn(source.prim, source.invars, [narrow],
                                     {**source.params, "shape": narrow.aval.shape},
                                     source.source))
                eqn = eqn.replace(invars=eqn.invars[:at] + [narrow] + eqn.invars[at + 1:])
                changed = True
        eqns.append(eqn)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns) if changed else jaxpr


def _is_one(atom, broadcasts) -> bool:
    """Whether ``atom`` is a literal 1 or a broadcast of one (not a bool)."""
    eqn = broadcasts.get(atom.id) if isinstance(atom, Var) else None
    if eqn is not None:
        atom = eqn.invars[0]
    return isinstance(atom, Literal) and atom.aval.dtype != np.bool_ and atom.val.item() == 1


def drop_multiplications_by_one(jaxpr: Jaxpr) -> Jaxpr:
    """``x * 1`` is ``x`` (exactly, for every float and integer): the gradient of a sum
    multiplies its cotangent by a broadcast 1.0 (``grad(sum(tanh(x @ w)))``). A fused GPU
    kernel absorbs the multiply, but the CPU runs it as a pass over the whole array.
    The broadcast, left unread, goes with dead code."""
    broadcasts = _broadcasts(jaxpr)
    replace: dict[int, object] = {}
    kept = []
    for eqn in jaxpr.eqns:
        invars = _substitute(eqn.invars, replace)
        eqn = eqn.replace(invars=invars) if invars != eqn.invars else eqn
        if eqn.prim.name == "mul":
            out = eqn.outvars[0]
            other = [x for x, y in (invars, invars[::-1]) if _is_one(y, broadcasts)
                     and isinstance(x, Var) and x.aval == out.aval]
            if other:
                replace[out.id] = other[0]
                continue
        kept.append(eqn)
    if not replace:
        return jaxpr
    outvars = _substitute(jaxpr.outvars, replace)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, kept)


def _broadcasts(jaxpr: Jaxpr) -> dict[int, JaxprEqn]:
    """The broadcast_in_dim equations of ``jaxpr`` by the id of their output."""
    return {e.outvars[0].id: e for e in jaxpr.eqns if e.prim.name == "broadcast_in_dim"}


def _constant_axes_source(var, axes, broadcasts) -> JaxprEqn | None:
    """The broadcast_in_dim that makes ``var``, when ``var`` does not vary along ``axes``
    (none of them comes from a source axis longer than 1); None otherwise."""
    eqn = broadcasts.get(var.id) if isinstance(var, Var) else None
    if eqn is None:
        return None
    source_shape = eqn.invars[0].aval.shape
    from_axis = {d: i for i, d in enumerate(eqn.params["broadcast_dimensions"])}
    if any(a in from_axis and source_shape[from_axis[a]] > 1 for a in axes):
        return None
    return eqn


def reduce_products_with_broadcast_operands(jaxpr: Jaxpr) -> Jaxpr:
    """Rewrites a ``dot_general`` one of whose operands is a broadcast that does not vary
    along its contracting axes (``dot(ones, v)``: the backward of ``sum(x @ v)``) as a
    sum of the other operand over its contracting axes times the broadcast's source: a
    reduction and a fused multiply instead of a GEMM that reads a materialized broadcast.
    XLA's algebraic simplifier does the same.
    """
    from flamefx.primitives import reductions
    broadcasts = _broadcasts(jaxpr)

    def rewrite(eqn):
        if not _same_float_product(eqn):
            return None
        (lc, rc), _ = eqn.params["dimension_numbers"]
        contracting = (lc, rc)
        side = next((i for i, x in enumerate(eqn.invars)
                     if _constant_axes_source(x, contracting[i], broadcasts) is not None),
                    None)
        if side is None:
            return None
        position = _output_positions(eqn)
        other = eqn.invars[1 - side]
        kept_axes = [d for d in range(other.aval.ndim) if d not in contracting[1 - side]]
        summed = Var(other.aval.update(shape=tuple(other.aval.shape[d] for d in kept_axes)))
        reduce = JaxprEqn(reductions.reduce_sum_p, [other], [summed],
                          {"axes": tuple(contracting[1 - side])}, eqn.source)
        source_eqn = _constant_axes_source(eqn.invars[side], contracting[side], broadcasts)
        source_axes = source_eqn.params["broadcast_dimensions"]
        # The source's axes that land on contracting axes have size 1: dropped as views.
        source_keep = [i for i, d in enumerate(source_axes) if d not in contracting[side]]
        return [reduce] + _broadcast_product(
            [(summed, list(range(len(kept_axes))),
              [position[1 - side][d] for d in kept_axes], False),
             (source_eqn.invars[0], source_keep,
              [position[side][source_axes[i]] for i in source_keep], False)], eqn)
    return _rewrite_products(jaxpr, rewrite)


def _same_float_product(eqn: JaxprEqn) -> bool:
    """A dot_general of two Vars of one float dtype that returns that dtype."""
    from flamefx import dtypes
    lhs, rhs = eqn.invars
    preferred = eqn.params.get("preferred_element_type")
    return (isinstance(lhs, Var) and isinstance(rhs, Var)
            and dtypes.is_float(lhs.aval.dtype) and lhs.aval.dtype == rhs.aval.dtype
            and (preferred is None or preferred == lhs.aval.dtype)
            and eqn.outvars[0].aval.dtype == lhs.aval.dtype)


def sink_broadcasts(jaxpr: Jaxpr) -> Jaxpr:
    """Computes an elementwise op whose operands are all broadcasts of one shape (or of
    scalars) on the small operands, then broadcasts its result: ``1 / broadcast(rowsum)``
    becomes ``broadcast(1 / rowsum)``. The fused kernels then read the row vector through
    index arithmetic instead of a full-size array the op would otherwise write. Only for
    outputs of at least SINK_MIN_ELEMENTS, or ops on literals (which then fold): the small
    op may take a launch of its own, which pays only where the array it avoids is large.
    """
    from flamefx.kernels.cuda_elementwise import Elementwise
    from flamefx.primitives import structural
    broadcasts = _broadcasts(jaxpr)
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
        sources = [broadcasts.get(v.id) if isinstance(v, Var) else None for v in eqn.invars]
        if (not isinstance(eqn.prim.fusion, Elementwise) or len(eqn.outvars) != 1
                or not eqn.invars or any(b is None for b in sources)
                or (eqn.outvars[0].aval.size < SINK_MIN_ELEMENTS
                    and not all(isinstance(b.invars[0], Literal) for b in sources))):
            eqns.append(eqn)
            continue
        patterns = {(b.invars[0].aval.shape, tuple(b.params["broadcast_dimensions"]))
                    for b in sources}
        wide = [p for p in patterns if p[0] != ()]
        if len(wide) > 1:
            eqns.append(eqn)
            continue
        small_shape, dims = wide[0] if wide else ((), ())
        smalls = []
        for b in sources:
            small = b.invars[0]
            if small.aval.shape != small_shape:  # a scalar next to a wider pattern
                widened = Var(small.aval.update(shape=small_shape))
                eqns.append(JaxprEqn(structural.broadcast_in_dim_p, [small], [widened],
                                     {"shape": small_shape, "broadcast_dimensions": ()},
                                     eqn.source))
                small = widened
            smalls.append(small)
        out = eqn.outvars[0]
        result = Var(out.aval.update(shape=small_shape))
        eqns.append(eqn.replace(invars=smalls, outvars=[result]))
        broadcast = JaxprEqn(structural.broadcast_in_dim_p, [result], [out],
                             {"shape": out.aval.shape, "broadcast_dimensions": dims},
                             eqn.source)
        eqns.append(broadcast)
        broadcasts[out.id] = broadcast  # its readers may sink in turn
        changed = True
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns) if changed else jaxpr


def _is_outer_product(eqn: JaxprEqn) -> bool:
    (lc, _), _ = eqn.params["dimension_numbers"]
    return _same_float_product(eqn) and all(eqn.invars[0].aval.shape[d] == 1 for d in lc)


def _params_key(params: dict):
    """A hashable key for params; values that cannot be hashed are compared by identity."""
    items = []
    for k in sorted(params):
        v = params[k]
        try:
            hash(v)
            items.append((k, type(v), v))
        except TypeError:
            items.append((k, "id", id(v)))
    return tuple(items)


def _atom_key(v):
    if isinstance(v, Literal):
        return ("lit", v.aval, v.val.item())
    return v.id


def has_effects(eqn: JaxprEqn, names=EFFECTFUL) -> bool:
    """Whether ``eqn`` is (or holds, in a sub-jaxpr) a callback with side effects
    (``flamefx.debug.print``, ``io_callback``): such equations run however many reads
    their outputs have, each one in its place. ``names``: the primitives looked for."""
    if eqn.prim.name in names:
        return True
    for value in eqn.params.values():
        for sub in (value if isinstance(value, (tuple, list)) else (value,)):
            sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr or a jit Program
            if isinstance(sub, Jaxpr) and any(has_effects(e, names) for e in sub.eqns):
                return True
    return False


def without_debug_callbacks(jaxpr: Jaxpr) -> Jaxpr:
    """``jaxpr`` without its debug callbacks (sub-jaxprs included): what a backward pass
    runs when it recomputes a forward pass, whose prints already showed (as in JAX)."""
    if not any(has_effects(e, ("debug_callback",)) for e in jaxpr.eqns):
        return jaxpr
    eqns = []
    for eqn in jaxpr.eqns:
        if eqn.prim.name == "debug_callback":
            continue
        params = {k: _strip_sub_jaxprs(v) for k, v in eqn.params.items()}
        eqns.append(eqn.replace(params=params) if params != eqn.params else eqn)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns)


def _strip_sub_jaxprs(value):
    if isinstance(value, tuple):
        return tuple(_strip_sub_jaxprs(v) for v in value)
    if isinstance(value, Jaxpr):
        return without_debug_callbacks(value)
    if isinstance(value, ClosedJaxpr):
        stripped = without_debug_callbacks(value.jaxpr)
        return value if stripped is value.jaxpr else ClosedJaxpr(stripped, value.consts)
    if isinstance(getattr(value, "derived", None), dict) and isinstance(
            getattr(value, "jaxpr", None), Jaxpr):  # a jit Program: jit_call runs its jaxpr
        stripped = without_debug_callbacks(value.jaxpr)
        if stripped is value.jaxpr:
            return value
        key = ("without_debug_callbacks",)
        if key not in value.derived:
            value.derived[key] = type(value)(stripped, value.name)
        return value.derived[key]
    return value


def calls_host(jaxpr: Jaxpr) -> bool:
    """Whether running ``jaxpr`` calls back into Python (a CUDA graph cannot replay it)."""
    return any(has_effects(e, HOST_CALLBACKS) for e in jaxpr.eqns)


def eliminate_common_subexpressions(jaxpr: Jaxpr) -> Jaxpr:
    """Merges equations with the same primitive, params and inputs into the first one
    (never effectful ones: two prints print twice)."""
    seen: dict[tuple, list[Var]] = {}
    replace: dict[int, object] = {}
    kept = []
    for eqn in jaxpr.eqns:
        invars = _substitute(eqn.invars, replace)
        eqn = eqn.replace(invars=invars) if invars != eqn.invars else eqn
        if has_effects(eqn):
            kept.append(eqn)
            continue
        key = (eqn.prim, _params_key(eqn.params), tuple(_atom_key(v) for v in invars))
        try:
            earlier = seen.get(key)
        except TypeError:  # e.g. a literal whose value cannot be hashed
            kept.append(eqn)
            continue
        if earlier is not None and all(a.aval == b.aval for a, b in zip(earlier, eqn.outvars)):
            replace.update({v.id: e for v, e in zip(eqn.outvars, earlier)})
            continue
        seen[key] = eqn.outvars
        kept.append(eqn)
    outvars = _substitute(jaxpr.outvars, replace)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, kept)


def eliminate_dead_code(jaxpr: Jaxpr) -> Jaxpr:
    """Drops equations whose outputs nothing uses, and constvars nothing reads; effectful
    equations (``has_effects``) stay; scans drop the ys nothing uses (``Primitive.prune``).

    The invars stay as they are (the signature of the program does not change).
    """
    live = {v.id for v in jaxpr.outvars if isinstance(v, Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        used = [v.id in live for v in eqn.outvars]
        if any(used) or has_effects(eqn):
            # A primitive with sub-jaxprs may drop its unread outputs and the work for them
            # (``prune(eqn, used) -> eqn``; scan's).
            eqn = eqn if eqn.prim.prune is None else eqn.prim.prune(eqn, used)
            kept.append(eqn)
            live.update(v.id for v in eqn.invars if isinstance(v, Var))
    kept.reverse()
    constvars = [v for v in jaxpr.constvars if v.id in live]
    return Jaxpr(constvars, jaxpr.invars, jaxpr.outvars, kept)


def prune_consts(closed: ClosedJaxpr, jaxpr: Jaxpr) -> ClosedJaxpr:
    """Pairs ``jaxpr`` with the values of ``closed`` for the constvars it kept."""
    value_of = {v.id: c for v, c in zip(closed.jaxpr.constvars, closed.consts)}
    return ClosedJaxpr(jaxpr, [value_of[v.id] for v in jaxpr.constvars])


def _small_concrete(x) -> bool:
    return isinstance(x, core.Array) and x.size <= FOLD_MAX_ELEMENTS


def fold_constants(closed: ClosedJaxpr) -> ClosedJaxpr:
    """Evaluates on the CPU the equations whose inputs are all literals or small constants
    and whose results grow no data (up to FOLD_MAX_ELEMENTS), or are read only by kernels
    that no fusion absorbs (up to FOLD_FOR_OPAQUE_MAX_ELEMENTS).

    Scalar results become literals, other results new constants (on the device of the
    program's other constants, or the default device).
    """
    jaxpr = closed.jaxpr
    known: dict[int, core.Array] = {v.id: c for v, c in zip(jaxpr.constvars, closed.consts)
                                    if _small_concrete(c)}
    opaque_only = _read_only_by_opaque_kernels(jaxpr)
    if not any(_foldable(e, known, opaque_only) for e in jaxpr.eqns):
        return closed
    device = next((c.device for c in closed.consts if isinstance(c, core.Array)), None)
    constvars, consts = list(jaxpr.constvars), list(closed.consts)
    replace: dict[int, object] = {}
    kept = []
    for eqn in jaxpr.eqns:
        invars = _substitute(eqn.invars, replace)
        eqn = eqn.replace(invars=invars) if invars != eqn.invars else eqn
        if not _foldable(eqn, known, opaque_only):
            kept.append(eqn)
            continue
        args = [np.asarray(v.val if isinstance(v, Literal) else known[v.id]) for v in invars]
        outs = eqn.prim.impl_for("cpu")(*args, **eqn.params)
        for v, buf in zip(eqn.outvars, outs):
            buf = np.asarray(buf).astype(v.aval.dtype, copy=False)
            if buf.shape == ():
                replace[v.id] = Literal(core.Array(buf, cpu_devices("cpu")[0],
                                                   v.aval.weak_type))
            else:
                value = core.to_array(buf, device=device, weak=v.aval.weak_type)
                new_var = Var(v.aval)
                constvars.append(new_var)
                consts.append(value)
                known[new_var.id] = value
                replace[v.id] = new_var
    outvars = _substitute(jaxpr.outvars, replace)
    return ClosedJaxpr(Jaxpr(constvars, jaxpr.invars, outvars, kept), consts)


def _foldable(eqn: JaxprEqn, known, opaque_only: set[int]) -> bool:
    if eqn.prim.name in ("jit_call", *HOST_CALLBACKS) or eqn.prim.impls.get("cpu") is None \
            or has_effects(eqn):  # callbacks run when the program runs, not at compile time
        return False
    if not all(isinstance(v, Literal) or v.id in known for v in eqn.invars):
        return False
    if all(v.id in opaque_only and v.aval.size <= FOLD_FOR_OPAQUE_MAX_ELEMENTS
           for v in eqn.outvars):
        return True
    # Otherwise never grow data: a broadcast or iota is cheaper to run (or fuse) than to
    # store.
    largest_in = max([v.aval.size for v in eqn.invars], default=1)
    return all(v.aval.size <= min(FOLD_MAX_ELEMENTS, max(largest_in, 1)) for v in eqn.outvars)


def _read_only_by_opaque_kernels(jaxpr: Jaxpr) -> set[int]:
    """Ids of the values that some equation reads and that only equations running as
    kernels of their own read (no fused kernel, no view); the jaxpr's outputs excluded."""
    from flamefx.kernels import fusion
    readers: dict[int, list[JaxprEqn]] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, Var):
                readers.setdefault(v.id, []).append(eqn)
    outputs = {v.id for v in jaxpr.outvars if isinstance(v, Var)}
    return {i for i, eqns in readers.items() if i not in outputs and all(
        fusion.kind_of(e) == "opaque" and not fusion.is_view(e) for e in eqns)}


def optimize(closed: ClosedJaxpr) -> ClosedJaxpr:
    """Runs every pass: inline, no-ops, transposed products, attention cotangents, outer
    products, multiplications by one, constant folding, CSE, dead code; prunes constants.
    The CPU and the GPU run the same passes.

    >>> import flamefx, flamefx.numpy as fnp
    >>> f = lambda x: (fnp.exp(x.reshape(3)), fnp.cos(x))[0]   # a no-op reshape, a dead cos
    >>> [e.prim.name for e in optimize(flamefx.make_jaxpr(f)(fnp.ones(3))).eqns]
    ['exp']
    """
    jaxpr = fold_transposes_into_products(remove_noops(inline_jit_calls(closed.jaxpr)))
    # Sunk broadcasts expose broadcast cotangents (a cast of a broadcast 1.0) to the
    # attention and product rewrites, whose replacements expose more broadcasts.
    jaxpr = narrow_attention_cotangents(sink_broadcasts(jaxpr))
    jaxpr = sink_broadcasts(reduce_products_with_broadcast_operands(jaxpr))
    if EXPAND_OUTER_PRODUCTS:
        jaxpr = expand_outer_products(jaxpr)
    jaxpr = drop_multiplications_by_one(jaxpr)
    folded = fold_constants(ClosedJaxpr(jaxpr, closed.consts))
    jaxpr = eliminate_dead_code(eliminate_common_subexpressions(folded.jaxpr))
    return prune_consts(folded, jaxpr)
