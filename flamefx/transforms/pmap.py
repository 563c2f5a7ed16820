"""pmap: data parallelism, one slice of the leading axis per device.

``pmap`` traces the function once at the per-device shapes, then runs the jaxpr on every
device in lockstep, equation by equation: ordinary equations run on each device's own
arrays, and a collective over the pmap's axis sees every device's operand at once (host
NumPy for CPU devices, NCCL all-reduce / all-gather / reduce-scatter for GPUs, see
flamefx/kernels/nccl.py). Calls (jit, remat, custom rules) whose bodies use the axis are
interpreted in lockstep too; others run compiled on each device.

Under another transform (pmap called with tracers: ``grad(pmap(f))``, ``jit(pmap(f))``)
pmap is ``vmap`` with the same ``axis_name``: the same values, without the device split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from flamefx import core, tree_util
from flamefx import devices as _devices
from flamefx.core import Array, Tracer
from flamefx.errors import FlamefxError, FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.jaxpr import ClosedJaxpr, Jaxpr, Literal, trace_to_jaxpr
from flamefx.primitives import collectives
from flamefx.transforms.batching import vmap


def pmap(fun: Callable, axis_name=None, in_axes=0, out_axes=0, devices=None):
    """Maps ``fun`` over an axis of its inputs, one slice per device, in parallel.

    ``in_axes``/``out_axes``: ints, None (replicated) or pytree prefixes, as in vmap. The
    mapped size must be at most the number of devices (``devices=None``: the default
    platform's, e.g. ``FLAMEFX_CPU_DEVICES=N`` CPU devices) and equal to it when ``devices``
    is given. Collectives (``flamefx.lax.psum`` and friends) over ``axis_name`` combine the
    devices' values. Outputs are stacked along ``out_axes`` on the first device (on GPUs
    this gathers the per-device results to that device).

    >>> import flamefx, flamefx.numpy as fnp
    >>> f = pmap(lambda x: x / flamefx.lax.psum(x, "d"), axis_name="d")
    >>> f(fnp.ones((1, 2))).tolist()      # one device: each slice over the sum of one
    [[1.0, 1.0]]
    """
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    traced: dict = {}

    def mapped(*args, **kwargs):
        flat, in_tree, axes = _flatten_args(args, kwargs, in_axes)
        if any(isinstance(x, Tracer) for x in flat):
            return vmap(fun, in_axes=in_axes, out_axes=out_axes, axis_name=axis_name)(
                *args, **kwargs)
        size = _mapped_size(flat, axes)
        devs = _choose_devices(devices, size)
        avals = [core.get_aval(x) if ax is None else _drop_axis(core.get_aval(x), ax)
                 for x, ax in zip(flat, axes)]
        key = (in_tree, tuple(avals), tuple(axes), tuple(devs))
        entry = traced.get(key)
        if entry is None:
            entry = traced[key] = _trace(fun, in_tree, avals, axis_name, size)
        closed, out_tree = entry
        per_device = [[_to_device(_slice(x, ax, i), dev) for x, ax in zip(flat, axes)]
                      for i, dev in enumerate(devs)]
        consts = [[_to_device(c, dev) for c in closed.consts] for dev in devs]
        outs = run_lockstep(closed.jaxpr, consts, per_device, axis_name, devs)
        out_ax = _out_axes(out_axes, out_tree)
        results = [_assemble([o[k] for o in outs], ax, devs[0]) for k, ax in enumerate(out_ax)]
        return tree_util.tree_unflatten(out_tree, results)

    mapped.__name__ = f"pmap({getattr(fun, '__name__', 'fun')})"
    return mapped


# --- arguments ---------------------------------------------------------------------------------


def _flatten_args(args, kwargs, in_axes):
    if isinstance(in_axes, tuple) and len(in_axes) != len(args):
        raise FlamefxValueError(f"pmap in_axes has {len(in_axes)} entries but the function got "
                                f"{len(args)} positional arguments\n  at {user_frame()}")
    try:
        axes = tree_util.broadcast_prefix(in_axes if isinstance(in_axes, tuple) else
                                          (in_axes,) * len(args), args,
                                          is_leaf=lambda x: x is None, what="pmap in_axes")
    except ValueError as e:
        raise FlamefxValueError(f"{e}\n  at {user_frame()}") from None
    flat_args, in_tree = tree_util.tree_flatten((args, kwargs))
    flat_args = [core.ensure_array(a) for a in flat_args]
    axes = list(axes) + [0] * (len(flat_args) - len(axes))  # keyword arguments map on axis 0
    for i, (x, ax) in enumerate(zip(flat_args, axes)):
        if ax is None:
            continue
        if not isinstance(ax, int):
            raise FlamefxTypeError(f"pmap in_axes entries must be ints or None, got {ax!r}")
        ndim = core.get_aval(x).ndim
        if not -ndim <= ax < ndim:
            raise FlamefxValueError(f"pmap in_axes={ax} is out of range for argument leaf {i} "
                                    f"of shape {core.get_aval(x).shape}\n  at {user_frame()}")
        axes[i] = ax % ndim
    return flat_args, in_tree, axes


def _mapped_size(flat, axes) -> int:
    sizes = {core.get_aval(x).shape[ax] for x, ax in zip(flat, axes) if ax is not None}
    if not sizes:
        raise FlamefxValueError(f"pmap got no mapped argument (all in_axes are None)\n  at "
                                f"{user_frame()}")
    if len(sizes) > 1:
        raise FlamefxValueError(f"pmap got inconsistent sizes for the mapped axes: "
                                f"{sorted(sizes)}\n  at {user_frame()}")
    return sizes.pop()


def _choose_devices(devices, size: int) -> list:
    if devices is not None:
        devs = list(devices)
        if len(devs) != size:
            raise FlamefxValueError(f"pmap over an axis of size {size} needs {size} devices, but "
                                    f"devices= lists {len(devs)}\n  at {user_frame()}")
        return devs
    available = _devices.devices()
    if size > len(available):
        raise FlamefxValueError(
            f"pmap over an axis of size {size}, but only {len(available)} "
            f"{available[0].platform} device(s) exist; split the batch into {len(available)} "
            f"shards (or set FLAMEFX_CPU_DEVICES={size} for CPU devices)\n  at {user_frame()}")
    return available[:size]


def _drop_axis(aval, ax):
    return aval.update(shape=aval.shape[:ax] + aval.shape[ax + 1:])


def _slice(x: Array, ax, i):
    if ax is None:
        return x
    index = (slice(None),) * ax + (i, Ellipsis)  # the Ellipsis keeps 0-d results arrays
    return Array(x.buffer[index], x.device, x.weak_type)


def _to_device(x, device) -> Array:
    if isinstance(x, Tracer):
        raise FlamefxError("internal: pmap got a tracer constant")
    x = core.ensure_array(x)
    if x.device == device:
        return x
    return Array(_devices.move_buffer(x.buffer, device), device, x.weak_type)


def _trace(fun, in_tree, avals, axis_name, size):
    out_tree_box = []

    def flat_fun(*flat):
        args, kwargs = tree_util.tree_unflatten(in_tree, list(flat))
        out = fun(*args, **kwargs)
        leaves, out_tree = tree_util.tree_flatten(out)
        out_tree_box.append(out_tree)
        return leaves

    with collectives.bind_pmap_axis(axis_name, size):
        closed = trace_to_jaxpr(flat_fun, avals)
    return closed, out_tree_box[0]


def _out_axes(out_axes, out_tree):
    placeholder = tree_util.tree_unflatten(out_tree, [0] * out_tree.num_leaves)
    try:
        return tree_util.broadcast_prefix(out_axes, placeholder, is_leaf=lambda x: x is None,
                                          what="pmap out_axes")
    except ValueError as e:
        raise FlamefxValueError(f"{e}\n  at {user_frame()}") from None


def _assemble(values: list, out_axis, first_device) -> Array:
    """Per-device outputs -> one Array with the device axis at ``out_axis``."""
    if out_axis is None:
        return _to_device(values[0], first_device)
    xp = first_device.xp
    bufs = [_to_device(v, first_device).buffer for v in values]
    ndim = bufs[0].ndim
    if not -ndim - 1 <= out_axis <= ndim:
        raise FlamefxValueError(f"pmap out_axes={out_axis} is out of range for an output of "
                                f"rank {ndim}\n  at {user_frame()}")
    with _on(first_device):
        stacked = xp.stack(bufs, axis=out_axis % (ndim + 1))
    return Array(stacked, first_device, values[0].weak_type)


# --- the lockstep interpreter -----------------------------------------------------------------


def _on(device):
    """Makes ``device`` current for CuPy (kernels launch on the current device)."""
    if device.platform == "gpu":
        return _devices.cupy().cuda.Device(device.id)
    return contextlib.nullcontext()


def run_lockstep(jaxpr: Jaxpr, consts: list, args: list, axis_name, devs: list) -> list:
    """Evaluates ``jaxpr`` on every device at once: ``consts[d]``/``args[d]`` are device
    ``d``'s values; returns each device's outputs. Collectives over ``axis_name`` combine
    the devices' operands; everything else runs on each device alone."""
    envs: list[dict] = [{} for _ in devs]
    for env, cs, xs in zip(envs, consts, args):
        for v, x in zip(jaxpr.constvars, cs):
            env[v.id] = x
        for v, x in zip(jaxpr.invars, xs):
            env[v.id] = x

    def read(env, v):
        return v.val if isinstance(v, Literal) else env[v.id]

    for eqn in jaxpr.eqns:
        ins = [[read(env, v) for v in eqn.invars] for env in envs]
        if eqn.prim in collectives.COLLECTIVES and eqn.params["axis_name"] == axis_name:
            outs = [[o] for o in _collective(eqn.prim, [i[0] for i in ins], eqn.params, devs)]
        elif _body_uses_axis(eqn, axis_name):
            outs = _lockstep_call(eqn, ins, axis_name, devs)
        else:
            outs = []
            for dev, xs in zip(devs, ins):
                with _on(dev):
                    result = core.bind_list(eqn.prim, *[_to_device(x, dev) for x in xs],
                                            **eqn.params)
                outs.append([_to_device(o, dev) for o in result])
        for env, os in zip(envs, outs):
            for v, x in zip(eqn.outvars, os):
                env[v.id] = x
    return [[read(env, v) for v in jaxpr.outvars] for env in envs]


def _collective(prim, values: list, params: dict, devs: list) -> list:
    values = [_to_device(x, dev) for x, dev in zip(values, devs)]
    out_aval = core.abstract_eval(prim, [values[0].aval], params)[0]
    if devs[0].platform == "gpu":
        from flamefx.kernels import nccl
        bufs = nccl.collective(prim.name, [x.buffer for x in values], params, devs)
    else:
        bufs = collectives.across_devices(prim, [x.buffer for x in values], params)
    return [Array(b, dev, out_aval.weak_type) for b, dev in zip(bufs, devs)]


def _sub_jaxprs(value):
    if isinstance(value, (Jaxpr, ClosedJaxpr)):
        yield value.jaxpr if isinstance(value, ClosedJaxpr) else value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _jaxpr_uses_axis(jaxpr: Jaxpr, axis_name) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.prim in collectives.COLLECTIVES and eqn.params["axis_name"] == axis_name:
            return True
        if _body_uses_axis(eqn, axis_name):
            return True
    return False


def _body_uses_axis(eqn, axis_name) -> bool:
    return any(_jaxpr_uses_axis(j, axis_name)
               for value in eqn.params.values() for j in _sub_jaxprs(value))


_INLINED_CALLS = ("jit_call", "remat", "custom_vjp_call", "custom_jvp_call")


def _lockstep_call(eqn, ins, axis_name, devs):
    """A call whose body holds a collective over the axis: interpret its body in lockstep."""
    body = eqn.params.get("jaxpr")
    if eqn.prim.name not in _INLINED_CALLS or body is None:
        raise FlamefxError(f"a collective over pmap axis {axis_name!r} inside "
                           f"{eqn.prim.name} is not supported under pmap; move the collective "
                           f"out of the control flow\n  at {eqn.source}")
    consts = body.consts if isinstance(body, ClosedJaxpr) else []
    inner = body.jaxpr if isinstance(body, ClosedJaxpr) else body
    per_device_consts = [[_to_device(c, dev) for c in consts] for dev in devs]
    return run_lockstep(inner, per_device_consts, ins, axis_name, devs)


__all__ = ["pmap", "run_lockstep"]
