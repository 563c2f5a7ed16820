"""vmap: vectorizing a function over a batch axis with each primitive's batching rule.

A batch tracer carries a value with one extra axis, ``bdim`` (or ``not_mapped`` = None when
the value does not vary over the batch). Rules receive values and bdims and return new
ones; they fold the batch into the operation itself, so the batched program has about as
many equations as the original and never loops over examples.
"""

from __future__ import annotations

from typing import Callable

from flamefx import core, tree_util
from flamefx.core import Trace, Tracer
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError, user_frame

not_mapped = None


def _st():
    from flamefx.primitives import structural
    return structural


# --- helpers for batching rules ---------------------------------------------------------------


def move_axis(x, src: int, dst: int):
    """Moves axis ``src`` of ``x`` to position ``dst`` with one transpose (or none)."""
    ndim = core.get_aval(x).ndim
    src, dst = src % ndim, dst % ndim
    if src == dst:
        return x
    perm = [i for i in range(ndim) if i != src]
    perm.insert(dst, src)
    return _st().transpose(x, tuple(perm))


def broadcast_batch(x, axis_size: int, dst: int = 0):
    """Gives an unbatched value a batch axis of ``axis_size`` at ``dst``."""
    aval = core.get_aval(x)
    dst = dst % (aval.ndim + 1)
    shape = aval.shape[:dst] + (axis_size,) + aval.shape[dst:]
    dims = tuple(i if i < dst else i + 1 for i in range(aval.ndim))
    return _st().broadcast_in_dim(x, shape, dims)


def to_front(x, bdim, axis_size: int):
    """Puts the batch axis first, materializing it for unbatched values."""
    if bdim is not_mapped:
        return broadcast_batch(x, axis_size, 0)
    return move_axis(x, bdim, 0)


# --- the trace -------------------------------------------------------------------------------


class BatchTracer(Tracer):
    __slots__ = ("val", "bdim")

    def __init__(self, trace, val, bdim: int):
        self._trace, self.val, self.bdim = trace, val, bdim

    @property
    def aval(self):
        aval = core.get_aval(self.val)
        shape = aval.shape[:self.bdim] + aval.shape[self.bdim + 1:]
        return aval.update(shape=shape)


class BatchTrace(Trace):
    def __init__(self, parent, axis_size: int, axis_name=None):
        super().__init__(parent)
        self.axis_size = axis_size
        self.axis_name = axis_name

    def process_primitive(self, prim, args, params):
        vals, bdims = self.unpack(args, BatchTracer, ("val", "bdim"), not_mapped)
        # Collectives name their axis; one that names another vmap's axis passes through.
        names_this_axis = params.get("axis_name", None) == self.axis_name is not None
        if all(d is not_mapped for d in bdims) and not names_this_axis:
            with core.set_current_trace(self.parent):
                return core.bind_list(prim, *vals, **params)
        if self.axis_size == 0:
            return self._empty_batch(prim, vals, bdims, params)
        if prim.batch is None:
            raise FlamefxError(f"primitive {prim.name!r} has no batching rule, so it cannot be "
                               f"used under vmap\n  at {user_frame()}")
        with core.set_current_trace(self.parent):
            if "axis_name" in params:  # a collective's rule must know whether it names this axis
                outs, out_bdims = prim.batch(self.axis_size, vals, bdims, **params,
                                             names_this_axis=names_this_axis)
            else:
                outs, out_bdims = prim.batch(self.axis_size, vals, bdims, **params)
        return [BatchTracer(self, o, d) if d is not not_mapped else o
                for o, d in zip(outs, out_bdims)]


    def _empty_batch(self, prim, vals, bdims, params):
        """With zero examples nothing is computed: each output is an empty array shaped by
        the primitive's own shape rule (so rules never see a size-0 batch axis)."""
        avals = []
        for x, d in zip(vals, bdims):
            aval = core.get_aval(x)
            if d is not not_mapped:
                aval = aval.update(shape=aval.shape[:d] + aval.shape[d + 1:])
            avals.append(aval)
        out_avals = core.abstract_eval(prim, avals, params)
        with core.set_current_trace(self.parent):
            outs = [_st().broadcast_in_dim(core.to_array(0, dtype=a.dtype, weak=False),
                                           (0,) + a.shape, ()) for a in out_avals]
        return [BatchTracer(self, o, 0) for o in outs]


# --- vmap ------------------------------------------------------------------------------------


def vmap(fun: Callable, in_axes=0, out_axes=0, axis_size: int | None = None, axis_name=None):
    """Vectorizes ``fun`` over an axis of its inputs (JAX's semantics).

    ``in_axes``/``out_axes`` are ints, None (not batched) or pytree prefixes of the
    positional arguments/outputs; keyword arguments are batched along axis 0.

    >>> import flamefx.numpy as fnp
    >>> vmap(lambda row: fnp.sum(row))(fnp.ones((3, 4))).tolist()
    [4.0, 4.0, 4.0]
    """
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)

    def batched_fun(*args, **kwargs):
        if isinstance(in_axes, tuple) and len(in_axes) != len(args):
            raise FlamefxValueError(
                f"vmap in_axes has {len(in_axes)} entries but the function got {len(args)} "
                f"positional arguments\n  at {user_frame()}")
        try:
            axes = tree_util.broadcast_prefix(in_axes if isinstance(in_axes, tuple) else
                                              (in_axes,) * len(args), args,
                                              is_leaf=lambda x: x is None, what="vmap in_axes")
        except ValueError as e:
            raise FlamefxValueError(f"{e}\n  at {user_frame()}") from None
        flat_args, in_tree = tree_util.tree_flatten(args, is_leaf=lambda x: x is None)
        flat_kw, kw_tree = tree_util.tree_flatten(kwargs)
        flat_args = [None if a is None else core.ensure_array(a) for a in flat_args]
        flat_kw = [core.ensure_array(a) for a in flat_kw]
        all_args = flat_args + flat_kw
        all_axes = ([None if a is None else ax for a, ax in zip(flat_args, axes)]
                    + [0] * len(flat_kw))
        all_axes = [_normalize_axis(ax, x, i) for i, (ax, x) in enumerate(zip(all_axes, all_args))]
        size = _axis_size(all_args, all_axes, axis_size, in_tree)
        with core.new_trace(BatchTrace, size, axis_name) as trace:
            tracers = [x if ax is None else BatchTracer(trace, x, ax)
                       for x, ax in zip(all_args, all_axes)]
            pos = tree_util.tree_unflatten(in_tree, tracers[:len(flat_args)])
            kw = tree_util.tree_unflatten(kw_tree, tracers[len(flat_args):])
            out = fun(*pos, **kw)
            flat_out, out_tree = tree_util.tree_flatten(out)
            try:
                out_ax = tree_util.broadcast_prefix(out_axes, out, is_leaf=lambda x: x is None,
                                                    what="vmap out_axes")
            except ValueError as e:
                raise FlamefxValueError(f"{e}\n  at {user_frame()}") from None
            results = [_unbatch_output(trace, o, ax, size, i)
                       for i, (o, ax) in enumerate(zip(flat_out, out_ax))]
        return tree_util.tree_unflatten(out_tree, results)

    batched_fun.__name__ = f"vmap({getattr(fun, '__name__', 'fun')})"
    return batched_fun


def _normalize_axis(ax, x, i):
    if ax is None or x is None:
        return None
    if not isinstance(ax, int):
        raise FlamefxTypeError(f"vmap in_axes entries must be ints or None, got {ax!r}\n  at "
                               f"{user_frame()}")
    ndim = core.get_aval(x).ndim
    if not -ndim <= ax < ndim:
        raise FlamefxValueError(f"vmap in_axes={ax} is out of range for argument {i} of rank "
                                f"{ndim} (shape {core.get_aval(x).shape})\n  at {user_frame()}")
    return ax % ndim


def _axis_size(args, axes, axis_size, in_tree):
    sizes = {i: core.get_aval(x).shape[ax] for i, (x, ax) in enumerate(zip(args, axes))
             if ax is not None}
    if not sizes:
        if axis_size is None:
            raise FlamefxValueError("vmap got no batched argument (all in_axes are None), so it "
                                    "cannot tell the batch size: pass axis_size=N"
                                    f"\n  at {user_frame()}")
        return axis_size
    distinct = set(sizes.values())
    if len(distinct) > 1 or (axis_size is not None and axis_size not in distinct):
        listing = ", ".join(f"argument leaf {i} has size {s} along axis {axes[i]}"
                            for i, s in sizes.items())
        raise FlamefxValueError(f"vmap got inconsistent sizes for the mapped axes: {listing}"
                                f"{'' if axis_size is None else f'; axis_size={axis_size}'}"
                                f"\n  at {user_frame()}")
    return distinct.pop()


def _check_out_axis(out_axis, example_aval, i: int) -> None:
    """``out_axis`` must name an axis of the batched output (one more dim than an
    example's), as in JAX; an out-of-range axis would otherwise wrap around silently."""
    if not isinstance(out_axis, int):
        raise FlamefxTypeError(f"vmap out_axes entries must be ints or None, got {out_axis!r}"
                               f"\n  at {user_frame()}")
    ndim = example_aval.ndim + 1
    if not -ndim <= out_axis < ndim:
        raise FlamefxValueError(
            f"vmap out_axes={out_axis} is out of bounds for output {i}: each example's output "
            f"has shape {example_aval.shape}, so the batched output has {ndim} dimension(s) "
            f"and out_axes must be in [{-ndim}, {ndim})\n  at {user_frame()}")


def _unbatch_output(trace, out, out_axis, size, i):
    if isinstance(out, BatchTracer) and out._trace is trace:
        if out_axis is None:
            raise FlamefxValueError("vmap out_axes=None for an output that varies over the "
                                    f"batch\n  at {user_frame()}")
        val_aval = core.get_aval(out.val)
        _check_out_axis(out_axis, val_aval.update(
            shape=val_aval.shape[:out.bdim] + val_aval.shape[out.bdim + 1:]), i)
        with core.set_current_trace(trace.parent):
            return move_axis(out.val, out.bdim, out_axis)
    out = core.ensure_array(out) if not isinstance(out, Tracer) else out
    if out_axis is None:
        return out
    _check_out_axis(out_axis, core.get_aval(out), i)
    with core.set_current_trace(trace.parent):
        return broadcast_batch(out, size, out_axis)
