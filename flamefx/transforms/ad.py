"""Automatic differentiation: one reverse mode, one forward mode, built on the primitives'
VJP rules.

Reverse mode records a tape while the function runs (like HIPS autograd): each primitive
application on a VJP tracer becomes a node holding its primal inputs and outputs; the
backward pass walks the nodes in reverse creation order and calls each primitive's VJP
rule. Rules are written in flamefx ops and run on the parent trace, so the backward pass is
itself traced by any enclosing transform: grad of grad, jit of grad and vmap of grad follow.

Forward mode uses a primitive's JVP rule where it has one (elementwise and linear
primitives declare them because they are cheap) and otherwise *derives* it from the VJP
rule: ``u -> vjp_rule(u)`` is linear in ``u`` and equals ``J^T u``, so reverse-mode
differentiating it at any ``u`` and applying the result to a tangent ``t`` gives ``J t``.
That keeps the one rule every primitive must have — its VJP — the only one it needs.
"""

from __future__ import annotations

import itertools
from typing import Callable

from flamefx import core, dtypes, tree_util
from flamefx.core import Primitive, Trace, Tracer
from flamefx.errors import FlamefxError, FlamefxTypeError, user_frame

_node_ids = itertools.count()


def _ew():
    from flamefx.primitives import elementwise
    return elementwise


def _st():
    from flamefx.primitives import structural
    return structural


def zeros_like(x):
    """A zero array with ``x``'s shape and dtype (on the current trace)."""
    aval = core.get_aval(x)
    zero = core.to_array(0, dtype=aval.dtype, weak=False, device=_device_of(x))
    if not aval.shape:
        return zero
    return _st().broadcast_in_dim(zero, aval.shape, ())


def _device_of(x):
    """Where new constants for ``x`` should live: its own device when it is concrete."""
    while isinstance(x, Tracer):
        x = x.to_concrete()
    return x.device if isinstance(x, core.Array) else None


def add_cotangents(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return _ew().add(a, b)


def _is_differentiable(x) -> bool:
    return dtypes.is_inexact(core.get_aval(x).dtype)


def _fit_cotangent(prim, ct, primal):
    """Checks a rule's cotangent against its primal; casts dtype (e.g. weak) differences."""
    ct_aval, p_aval = core.get_aval(ct), core.get_aval(primal)
    if ct_aval.shape != p_aval.shape:
        raise FlamefxError(f"internal: the VJP rule of {prim} gave a cotangent of shape "
                           f"{ct_aval.shape} for an input of shape {p_aval.shape}")
    if ct_aval.dtype != p_aval.dtype:
        ct = _ew().convert_element_type(ct, p_aval.dtype)
    return ct


# --- forward mode --------------------------------------------------------------------------


class JVPTracer(Tracer):
    __slots__ = ("primal", "tangent")

    def __init__(self, trace, primal, tangent):
        self._trace, self.primal, self.tangent = trace, primal, tangent

    @property
    def aval(self):
        return core.get_aval(self.primal)

    def to_concrete(self):
        p = self.primal
        return p.to_concrete() if isinstance(p, Tracer) else p


class JVPTrace(Trace):
    def process_primitive(self, prim, args, params):
        primals, tangents = self.unpack(args, JVPTracer, ("primal", "tangent"), None)
        with core.set_current_trace(self.parent):
            if not prim.differentiable or all(t is None for t in tangents):
                return core.bind_list(prim, *primals, **params)
            if prim.jvp is not None:
                outs, tangents_out = prim.jvp(primals, tangents, **params)
            else:
                outs, tangents_out = jvp_from_vjp(prim, primals, tangents, params)
        return [JVPTracer(self, o, t) if t is not None and _is_differentiable(o) else o
                for o, t in zip(outs, tangents_out)]


def jvp_from_vjp(prim: Primitive, primals, tangents, params):
    """Forward mode from a VJP rule: the VJP of the (linear) VJP rule, applied to tangents."""
    outs = core.bind_list(prim, *primals, **params)
    in_idx = [i for i, t in enumerate(tangents) if t is not None]
    out_idx = [j for j, o in enumerate(outs) if _is_differentiable(o)]

    def transpose_of_jvp(*cts_diff):
        cts = [None] * len(outs)
        for j, ct in zip(out_idx, cts_diff):
            cts[j] = ct
        cts_in = prim.vjp(cts, list(primals), outs, **params)
        return [zeros_like(primals[i]) if cts_in[i] is None else cts_in[i] for i in in_idx]

    _, pullback = vjp(transpose_of_jvp, *[zeros_like(outs[j]) for j in out_idx])
    tangents_diff = pullback([tangents[i] for i in in_idx])
    tangents_out = [None] * len(outs)
    for j, t in zip(out_idx, tangents_diff):
        tangents_out[j] = t
    return outs, tangents_out


def jvp(fun: Callable, primals, tangents, has_aux: bool = False):
    """Forward-mode derivative: returns ``(fun(*primals), J @ tangents)``.

    >>> import flamefx.numpy as fnp
    >>> y, t = jvp(fnp.sin, (0.0,), (1.0,))
    >>> float(t)
    1.0
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise FlamefxTypeError("jvp takes primals and tangents as tuples (or lists), e.g. "
                               f"jvp(f, (x,), (t,))\n  at {user_frame()}")
    flat_p, tree_p = tree_util.tree_flatten(tuple(primals))
    flat_t, tree_t = tree_util.tree_flatten(tuple(tangents))
    if tree_p != tree_t:
        raise FlamefxTypeError(f"jvp: primals and tangents differ in structure: {tree_p} vs "
                               f"{tree_t}\n  at {user_frame()}")
    flat_p = [core.ensure_array(p) for p in flat_p]
    flat_t = [core.ensure_array(t) for t in flat_t]
    for i, (p, t) in enumerate(zip(flat_p, flat_t)):
        if p.shape != t.shape:
            raise FlamefxTypeError(f"jvp: primal {i} has shape {p.shape} but its tangent has "
                                   f"shape {t.shape}\n  at {user_frame()}")
    with core.new_trace(JVPTrace) as trace:
        tracers = [JVPTracer(trace, p, t) if _is_differentiable(p) else p
                   for p, t in zip(flat_p, flat_t)]
        out = fun(*tree_util.tree_unflatten(tree_p, tracers))
        if has_aux:
            out, aux = _split_aux(out, "jvp")
        flat_out, out_tree = tree_util.tree_flatten(out)
        primals_out, tangents_out = [], []
        for o in flat_out:
            if isinstance(o, JVPTracer) and o._trace is trace:
                primals_out.append(o.primal)
                tangents_out.append(o.tangent if o.tangent is not None else zeros_like(o.primal))
            else:
                o = core.ensure_array(o)
                primals_out.append(o)
                tangents_out.append(zeros_like(o))
        if has_aux:
            aux = _lower_aux(aux, trace, lambda t: t.primal)
    result = (tree_util.tree_unflatten(out_tree, primals_out),
              tree_util.tree_unflatten(out_tree, tangents_out))
    return result + (aux,) if has_aux else result


def linearize(fun: Callable, *primals):
    """Returns ``(fun(*primals), f_jvp)`` with ``f_jvp(*tangents) = J @ tangents``.

    ``f_jvp`` re-runs forward mode at the saved primals on each call (no partial evaluation).

    >>> y, f_jvp = linearize(lambda x: x * x, 3.0)
    >>> float(f_jvp(1.0))
    6.0
    """
    out = fun(*primals)

    def f_jvp(*tangents):
        return jvp(fun, primals, tangents)[1]

    return out, f_jvp


# --- reverse mode --------------------------------------------------------------------------


class _Node:
    """One recorded primitive application; ``prim is None`` marks an input of ``vjp``."""

    __slots__ = ("id", "prim", "params", "primals", "outs", "parents")

    def __init__(self, prim, params, primals, outs, parents):
        self.id = next(_node_ids)
        self.prim, self.params, self.primals = prim, params, primals
        self.outs, self.parents = outs, parents


class VJPTracer(Tracer):
    __slots__ = ("primal", "node", "index")

    def __init__(self, trace, primal, node, index):
        self._trace, self.primal, self.node, self.index = trace, primal, node, index

    @property
    def aval(self):
        return core.get_aval(self.primal)

    def to_concrete(self):
        p = self.primal
        return p.to_concrete() if isinstance(p, Tracer) else p


class VJPTrace(Trace):
    def new_input(self, primal) -> VJPTracer:
        return VJPTracer(self, primal, _Node(None, None, None, [primal], []), 0)

    def process_primitive(self, prim, args, params):
        primals, nodes, indices = self.unpack(args, VJPTracer, ("primal", "node", "index"), None)
        parents = [None if n is None else (n, i) for n, i in zip(nodes, indices)]
        taped = prim.differentiable and any(p is not None for p in parents)
        # A primitive with ``vjp_forward(primals, wanted, **params) -> (outs, residuals)``
        # (scan's) saves what its VJP reads while it runs, for the cotangents ``wanted`` (of
        # the primals on the tape); the VJP gets them as ``residuals=``.
        forward = prim.vjp_forward if taped else None
        with core.set_current_trace(self.parent):
            if forward is None:
                outs = core.bind_list(prim, *primals, **params)
            else:
                outs, residuals = forward(primals, [p is not None for p in parents], **params)
                params = dict(params, residuals=residuals)
        if not taped:
            return outs
        if prim.vjp is None:
            raise FlamefxError(f"primitive {prim.name!r} has no VJP rule, so it cannot be "
                               f"differentiated in reverse mode\n  at {user_frame()}")
        return self.record(prim, params, primals, parents, outs)

    def record(self, prim, params, primals, parents, outs) -> list:
        """Puts one application of ``prim`` with known ``outs`` on the tape (``parents``: the
        (node, index) each primal comes from, None for constants); returns ``outs`` with
        the float ones as tracers. checkpoint's replay uses it to tape without binding."""
        node = _Node(prim, params, primals, outs, parents)
        return [VJPTracer(self, o, node, i) if _is_differentiable(o) else o
                for i, o in enumerate(outs)]


def backward_pass(out_refs, cts) -> dict:
    """Propagates cotangents from outputs to input nodes; returns {input node id: ct}.

    ``out_refs`` holds (node, index) for outputs that depend on the inputs, else None.
    """
    ct_env: dict[tuple[int, int], object] = {}
    roots = []
    for ref, ct in zip(out_refs, cts):
        if ref is None or ct is None:
            continue
        key = (ref[0].id, ref[1])
        ct_env[key] = add_cotangents(ct_env.get(key), ct)
        roots.append(ref[0])
    nodes = _reachable(roots)
    input_cts = {}
    for node in sorted(nodes, key=lambda n: n.id, reverse=True):
        if node.prim is None:
            input_cts[node.id] = ct_env.pop((node.id, 0), None)
            continue
        cts_out = [ct_env.pop((node.id, i), None) for i in range(len(node.outs))]
        if all(ct is None for ct in cts_out):
            continue
        cts_in = node.prim.vjp(cts_out, node.primals, node.outs, **node.params)
        for parent, ct, primal in zip(node.parents, cts_in, node.primals):
            if parent is None or ct is None:
                continue
            key = (parent[0].id, parent[1])
            ct_env[key] = add_cotangents(ct_env.get(key), _fit_cotangent(node.prim, ct, primal))
    return input_cts


def _reachable(roots) -> list:
    seen, stack, out = set(), list(roots), []
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        out.append(node)
        stack.extend(p[0] for p in node.parents if p is not None)
    return out


def vjp(fun: Callable, *primals, has_aux: bool = False):
    """Returns ``(fun(*primals), f_vjp)``; ``f_vjp(ct)`` gives the cotangents of the inputs.

    >>> import flamefx.numpy as fnp
    >>> y, f_vjp = vjp(lambda x: x * 3.0, fnp.ones(2))
    >>> f_vjp(fnp.ones(2))[0].tolist()
    [3.0, 3.0]
    """
    flat_in, in_tree = tree_util.tree_flatten(primals)
    flat_in = [core.ensure_array(x) for x in flat_in]
    with core.new_trace(VJPTrace) as trace:
        tracers = [trace.new_input(x) if _is_differentiable(x) else x for x in flat_in]
        out = fun(*tree_util.tree_unflatten(in_tree, tracers))
        if has_aux:
            out, aux = _split_aux(out, "vjp")
        flat_out, out_tree = tree_util.tree_flatten(out)
        out_primals, out_refs = [], []
        for o in flat_out:
            if isinstance(o, VJPTracer) and o._trace is trace:
                out_primals.append(o.primal)
                out_refs.append((o.node, o.index))
            else:
                out_primals.append(core.ensure_array(o))
                out_refs.append(None)
        if has_aux:
            aux = _lower_aux(aux, trace, lambda t: t.primal)
    in_nodes = [t.node if isinstance(t, VJPTracer) else None for t in tracers]
    out_avals = [core.get_aval(o) for o in out_primals]

    def f_vjp(ct):
        flat_ct = _flatten_cotangent(ct, out_tree, out_avals)
        input_cts = backward_pass(out_refs, flat_ct)
        grads = []
        for x, node in zip(flat_in, in_nodes):
            g = input_cts.get(node.id) if node is not None else None
            grads.append(zeros_like(x) if g is None else g)
        return tuple(tree_util.tree_unflatten(in_tree, grads))

    primals_out = tree_util.tree_unflatten(out_tree, out_primals)
    return (primals_out, f_vjp, aux) if has_aux else (primals_out, f_vjp)


def _flatten_cotangent(ct, out_tree, out_avals) -> list:
    flat, tree = tree_util.tree_flatten(ct)
    if tree != out_tree:
        raise FlamefxTypeError(f"the cotangent's structure {tree} does not match the "
                               f"output's {out_tree}\n  at {user_frame()}")
    flat = [core.ensure_array(c) for c in flat]
    for i, (c, aval) in enumerate(zip(flat, out_avals)):
        if c.shape != aval.shape or (c.dtype != aval.dtype and not c.weak_type):
            raise FlamefxTypeError(f"cotangent {i} is {c.aval.str_short()} but the output is "
                                   f"{aval.str_short()}\n  at {user_frame()}")
        if c.dtype != aval.dtype:
            flat[i] = c.astype(aval.dtype)
    return flat


def _split_aux(out, who):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise FlamefxTypeError(
            f"{who}(..., has_aux=True) needs the function to return a pair (output, aux); it "
            f"returned {type(out).__name__}"
            f"{' of length ' + str(len(out)) if isinstance(out, (tuple, list)) else ''}"
            f"\n  at {user_frame()}")
    return out[0], out[1]


def _lower_aux(aux, trace, primal_of):
    """Aux outputs are not differentiated: replace this trace's tracers by their primals."""
    def lower(x):
        while isinstance(x, Tracer) and x._trace is trace:
            x = primal_of(x)
        return x
    return tree_util.tree_map(lower, aux)


def _replacing_args(fun, args, positions, kwargs=None):
    """``fun`` as a function of the arguments at ``positions``, the others held fixed."""
    def partial_fun(*replacements):
        full = list(args)
        for i, x in zip(positions, replacements):
            full[i] = x
        return fun(*full, **(kwargs or {}))
    return partial_fun


def _argnums_tuple(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _check_grad_input(who, holomorphic, i, leaf):
    dtype = core.get_aval(leaf).dtype
    if holomorphic and not dtypes.is_complex(dtype):
        raise FlamefxTypeError(f"{who} with holomorphic=True requires inputs with complex dtype, "
                               f"but argument {i} holds a {dtype} value.\n  at {user_frame()}")
    if not dtypes.is_inexact(dtype):
        raise FlamefxTypeError(
            f"{who} requires float inputs (or complex), but argument {i} holds a {dtype} value."
            f" Differentiate with respect to float arguments only (convert with "
            f".astype(float32)), or leave integer arguments out of argnums.\n  at {user_frame()}")


def _check_grad_output(who, holomorphic, dtype):
    """JAX's rules: complex outputs need holomorphic=True, which needs complex outputs."""
    if holomorphic and not dtypes.is_complex(dtype):
        raise FlamefxTypeError(f"{who} with holomorphic=True requires outputs with complex "
                               f"dtype, but got {dtype}.\n  at {user_frame()}")
    if not holomorphic and dtypes.is_complex(dtype):
        raise FlamefxTypeError(
            f"{who} requires real-valued outputs (output dtype that is a sub-dtype of "
            f"np.floating), but got {dtype}. For holomorphic differentiation, pass "
            f"holomorphic=True. For differentiation of non-holomorphic functions involving "
            f"complex outputs, use flamefx.vjp directly.\n  at {user_frame()}")


def value_and_grad(fun: Callable, argnums=0, has_aux: bool = False, holomorphic: bool = False):
    """Returns a function giving ``(fun(*args), gradient)`` (``((value, aux), grad)`` with aux).

    Complex inputs follow JAX: for a real-valued ``fun`` the gradient is JAX's (the conjugate
    of df/dz for ``|z|**2``-like functions: ``grad(lambda z: abs(z) ** 2)(z) == 2 * conj(z)``);
    with ``holomorphic=True`` a complex-valued holomorphic ``fun`` gets its derivative f'(z).

    >>> import flamefx.numpy as fnp
    >>> value, g = value_and_grad(lambda w: fnp.sum(w ** 2))(fnp.arange(3.0))
    >>> g.tolist()
    [0.0, 2.0, 4.0]
    """
    nums = _argnums_tuple(argnums)

    def value_and_grad_fn(*args, **kwargs):
        for i in nums:
            if i >= len(args) or i < -len(args):
                raise FlamefxTypeError(f"grad: argnums={argnums} but the function got only "
                                       f"{len(args)} positional arguments\n  at {user_frame()}")
        nums_pos = tuple(i % len(args) for i in nums)
        for i in nums_pos:
            for leaf in tree_util.tree_leaves(args[i]):
                _check_grad_input("grad", holomorphic, i, leaf)

        partial_fun = _replacing_args(fun, args, nums_pos, kwargs)
        res = vjp(partial_fun, *[args[i] for i in nums_pos], has_aux=has_aux)
        out, f_vjp = res[0], res[1]
        out_arr = core.ensure_array(out) if not isinstance(out, (tuple, list, dict)) else None
        if out_arr is not None and out_arr.shape == ():
            _check_grad_output("grad", holomorphic, out_arr.dtype)
        if out_arr is None or out_arr.shape != () or not dtypes.is_inexact(out_arr.dtype):
            desc = (f"shape {out_arr.shape} and dtype {out_arr.dtype}" if out_arr is not None
                    else f"a {type(out).__name__}")
            raise FlamefxTypeError(
                f"grad requires a function with a scalar float output, but it returned {desc}."
                f" For vector outputs use flamefx.vjp or flamefx.jacrev; with has_aux=True "
                f"return (scalar, aux).\n  at {user_frame()}")
        one = core.to_array(1, dtype=out_arr.dtype, weak=False, device=_device_of(out_arr))
        grads = f_vjp(one)
        grads = grads[0] if isinstance(argnums, int) else tuple(grads)
        value = (out, res[2]) if has_aux else out
        return value, grads

    value_and_grad_fn.__name__ = f"value_and_grad({getattr(fun, '__name__', 'fun')})"
    return value_and_grad_fn


def grad(fun: Callable, argnums=0, has_aux: bool = False, holomorphic: bool = False):
    """Returns a function computing the gradient of scalar-valued ``fun``.

    ``holomorphic=True``: ``fun`` maps complex inputs to a complex output holomorphically, and
    the result is its complex derivative (JAX's convention; see ``value_and_grad``).

    >>> import flamefx.numpy as fnp
    >>> float(grad(lambda x: x ** 3)(2.0))
    12.0
    >>> complex(grad(lambda z: z ** 2, holomorphic=True)(1j))
    2j
    """
    vg = value_and_grad(fun, argnums, has_aux, holomorphic)

    def grad_fn(*args, **kwargs):
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    grad_fn.__name__ = f"grad({getattr(fun, '__name__', 'fun')})"
    return grad_fn


# --- stop_gradient ---------------------------------------------------------------------------


def _identity_impl(x):
    return [x]


def _identity_batch(axis_size, args, bdims):
    return [stop_gradient_p.bind(args[0])], [bdims[0]]


stop_gradient_p = Primitive("stop_gradient", abstract_eval=lambda aval: [aval],
                            impl=_identity_impl, cuda_impl=_identity_impl,
                            batch=_identity_batch, differentiable=False)


def stop_gradient(x):
    """Returns ``x`` unchanged, with zero derivative in every mode (pytrees allowed).

    >>> float(grad(lambda x: x * stop_gradient(x))(3.0))
    3.0
    """
    return tree_util.tree_map(lambda leaf: stop_gradient_p.bind(leaf), x)


# --- Jacobians (built on vmap over a basis, never a Python loop) -------------------------------


def _basis(leaves):
    """A stacked identity over the concatenated leaves: one block per leaf, each of shape
    (total, *leaf.shape), in the leaf's dtype."""
    import flamefx.numpy as fnp
    sizes = [core.get_aval(x).size for x in leaves]
    total = sum(sizes)
    eye = fnp.eye(total, dtype=core.get_aval(leaves[0]).dtype if leaves else None)
    blocks, offset = [], 0
    for x, size in zip(leaves, sizes):
        aval = core.get_aval(x)
        blocks.append(eye[:, offset:offset + size].reshape((total,) + aval.shape)
                      .astype(aval.dtype))
        offset += size
    return blocks, sizes


def _jac_tree(out_leaves_shape, out_tree, in_leaves_shape, in_tree, block):
    """Builds the nested Jacobian tree: out structure of (in structure of arrays)."""
    rows = []
    for i in range(len(out_leaves_shape)):
        rows.append(tree_util.tree_unflatten(
            in_tree, [block(i, j) for j in range(len(in_leaves_shape))]))
    return tree_util.tree_unflatten(out_tree, rows)


def _dyn_args(args, argnums):
    nums = tuple(i % len(args) for i in _argnums_tuple(argnums))
    return nums, [args[i] for i in nums]


def _check_jacobian_dtypes(who, holomorphic, inputs, outputs):
    """JAX's rules: holomorphic=True needs complex inputs and outputs; without it jacrev takes
    no complex outputs and jacfwd no complex inputs."""
    for i, leaf in enumerate(tree_util.tree_leaves(inputs)):
        dtype = core.get_aval(leaf).dtype
        if who == "jacfwd" and not holomorphic and dtypes.is_complex(dtype):
            raise FlamefxTypeError(
                f"jacfwd requires real-valued inputs (input dtype that is a sub-dtype of "
                f"np.floating), but got {dtype}. For holomorphic differentiation, pass "
                f"holomorphic=True. For differentiation of non-holomorphic functions involving "
                f"complex inputs, use flamefx.jvp directly.\n  at {user_frame()}")
        _check_grad_input(who, holomorphic, i, leaf)
    for leaf in tree_util.tree_leaves(outputs):
        dtype = core.get_aval(leaf).dtype
        if who == "jacrev" or holomorphic:
            _check_grad_output(who, holomorphic, dtype)


def jacrev(fun: Callable, argnums=0, has_aux: bool = False, holomorphic: bool = False):
    """Jacobian by reverse mode: ``vmap`` of the VJP over the output basis.

    ``holomorphic=True``: complex inputs and outputs, the Jacobian of complex derivatives.

    >>> import flamefx.numpy as fnp
    >>> jacrev(lambda x: x ** 2)(fnp.arange(3.0)).tolist()
    [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]
    """
    from flamefx.transforms.batching import vmap

    def jac_fn(*args):
        nums, dyn = _dyn_args(args, argnums)

        partial_fun = _replacing_args(fun, args, nums)
        res = vjp(partial_fun, *dyn, has_aux=has_aux)
        out, pullback = res[0], res[1]
        out_leaves, out_tree = tree_util.tree_flatten(out)
        _check_jacobian_dtypes("jacrev", holomorphic, dyn, out_leaves)
        basis, out_sizes = _basis(out_leaves)
        cts = vmap(pullback)(tree_util.tree_unflatten(out_tree, basis))
        in_leaves, in_tree = tree_util.tree_flatten(tuple(dyn) if not isinstance(argnums, int)
                                                    else dyn[0])
        ct_leaves = tree_util.tree_leaves(cts if not isinstance(argnums, int) else cts[0])
        offsets = [sum(out_sizes[:i]) for i in range(len(out_sizes))]

        def block(i, j):
            shape_i = core.get_aval(out_leaves[i]).shape
            shape_j = core.get_aval(in_leaves[j]).shape
            rows = ct_leaves[j][offsets[i]:offsets[i] + out_sizes[i]]
            return rows.reshape(shape_i + shape_j)

        jac = _jac_tree(out_leaves, out_tree, in_leaves, in_tree, block)
        return (jac, res[2]) if has_aux else jac

    return jac_fn


def jacfwd(fun: Callable, argnums=0, has_aux: bool = False, holomorphic: bool = False):
    """Jacobian by forward mode: ``vmap`` of the JVP over the input basis.

    ``holomorphic=True``: complex inputs and outputs, the Jacobian of complex derivatives.

    >>> import flamefx.numpy as fnp
    >>> jacfwd(lambda x: x ** 2)(fnp.arange(3.0)).tolist()
    [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]
    """
    from flamefx.transforms.batching import vmap
    import flamefx.numpy as fnp

    def jac_fn(*args):
        nums, dyn = _dyn_args(args, argnums)
        in_leaves, in_tree = tree_util.tree_flatten(tuple(dyn))
        in_leaves = [core.ensure_array(x) for x in in_leaves]
        _check_jacobian_dtypes("jacfwd", holomorphic, in_leaves, ())
        basis, in_sizes = _basis(in_leaves)

        partial_fun = _replacing_args(fun, args, nums)

        def push(*tangent_leaves):
            tangents = tree_util.tree_unflatten(in_tree, tangent_leaves)
            res = jvp(partial_fun, tuple(dyn), tangents, has_aux=has_aux)
            return (res[1], res[2]) if has_aux else res[1]

        pushed = vmap(push, out_axes=0)(*basis)
        if has_aux:
            pushed, aux = pushed
            aux = tree_util.tree_map(lambda a: a[0], aux)
        out_leaves, out_tree = tree_util.tree_flatten(pushed)
        _check_jacobian_dtypes("jacfwd", holomorphic, (), out_leaves)
        offsets = [sum(in_sizes[:j]) for j in range(len(in_sizes))]
        user_in_tree = tree_util.tree_structure(dyn[0] if isinstance(argnums, int) else tuple(dyn))

        def block(i, j):
            out_shape = core.get_aval(out_leaves[i]).shape[1:]
            in_shape = in_leaves[j].shape
            cols = out_leaves[i][offsets[j]:offsets[j] + in_sizes[j]]
            cols = cols.reshape(in_shape + out_shape)
            n_in, n_out = len(in_shape), len(out_shape)
            return fnp.transpose(cols, tuple(range(n_in, n_in + n_out)) + tuple(range(n_in)))

        jac = _jac_tree(out_leaves, out_tree, in_leaves, user_in_tree, block)
        return (jac, aux) if has_aux else jac

    return jac_fn


def hessian(fun: Callable, argnums=0, has_aux: bool = False, holomorphic: bool = False):
    """Hessian as forward-over-reverse: ``jacfwd(jacrev(fun))``.

    >>> import flamefx.numpy as fnp
    >>> hessian(lambda x: fnp.sum(x ** 3))(fnp.array([1.0, 2.0])).tolist()
    [[6.0, 0.0], [0.0, 12.0]]
    """
    return jacfwd(jacrev(fun, argnums, has_aux, holomorphic), argnums, has_aux, holomorphic)
