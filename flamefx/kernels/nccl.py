"""NCCL collectives for pmap on GPUs: one communicator per device, all in this process.

Communicators are made once per device tuple (``NcclCommunicator.initAll``). Each
collective enqueues one NCCL call per device on that device's current stream, between
``groupStart``/``groupEnd`` so a single thread can drive every GPU without deadlock.
Where CuPy was built without NCCL, the operands go through the host (correct, slower).
"""

from __future__ import annotations

import functools

import numpy as np

from flamefx import dtypes
from flamefx.devices import cupy
from flamefx.kernels.cuda_scalar import contiguous


def _nccl():
    from cupy.cuda import nccl
    return nccl if getattr(nccl, "available", True) else None


@functools.cache
def communicators(device_ids: tuple) -> list:
    return _nccl().NcclCommunicator.initAll(list(device_ids))


def _nccl_dtype(nccl, dtype):
    table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.int8): nccl.NCCL_INT8,
             np.dtype(np.uint8): nccl.NCCL_UINT8, np.dtype(np.uint32): nccl.NCCL_UINT32,
             np.dtype(np.uint64): nccl.NCCL_UINT64}
    if hasattr(nccl, "NCCL_BFLOAT16"):
        table[dtypes.bfloat16] = nccl.NCCL_BFLOAT16
    return table.get(np.dtype(dtype))


def collective(name: str, bufs: list, params: dict, devs: list) -> list:
    """One output buffer per device for collective ``name`` over the devices' ``bufs``."""
    cp = cupy()
    nccl = _nccl()
    kind = None if nccl is None else _nccl_dtype(nccl, bufs[0].dtype)
    if kind is None:
        return _through_host(name, bufs, params, devs)
    comms = communicators(tuple(d.id for d in devs))
    n = len(devs)
    if name == "all_gather":
        axis, tiled = params["axis"], params["tiled"]
        ins = [_contiguous_on_its_device(b) for b in bufs]
        outs = [_empty_on(cp, d, (n,) + b.shape, b.dtype) for d, b in zip(devs, ins)]
        _group(cp, nccl, devs, lambda c, i, o, s: c.allGather(
            i.data.ptr, o.data.ptr, i.size, kind, s), comms, ins, outs)
        result = []
        for d, o in zip(devs, outs):
            with cp.cuda.Device(d.id):
                o = cp.concatenate(list(o), axis=axis) if tiled else cp.moveaxis(o, 0, axis)
                result.append(cp.ascontiguousarray(o))
        return result
    if name == "psum_scatter":
        d_, tiled = params["scatter_dimension"], params["tiled"]
        ins = []
        for d, b in zip(devs, bufs):
            with cp.cuda.Device(d.id):  # NCCL scatters contiguous chunks of the leading axis
                front = cp.moveaxis(b, d_, 0)
                if tiled:
                    front = front.reshape((n, front.shape[0] // n) + front.shape[1:])
                ins.append(cp.ascontiguousarray(front))
        outs = [_empty_on(cp, d, i.shape[1:], i.dtype) for d, i in zip(devs, ins)]
        _group(cp, nccl, devs, lambda c, i, o, s: c.reduceScatter(
            i.data.ptr, o.data.ptr, o.size, kind, nccl.NCCL_SUM, s), comms, ins, outs)
        result = []
        for d, o in zip(devs, outs):
            with cp.cuda.Device(d.id):
                # Non-tiled: the scattered axis is gone and the rest kept their order.
                result.append(cp.ascontiguousarray(cp.moveaxis(o, 0, d_) if tiled else o))
        return result
    op = nccl.NCCL_MAX if name == "pmax" else nccl.NCCL_SUM
    ins = [_contiguous_on_its_device(b) for b in bufs]
    outs = [_empty_on(cp, d, b.shape, b.dtype) for d, b in zip(devs, ins)]
    _group(cp, nccl, devs, lambda c, i, o, s: c.allReduce(
        i.data.ptr, o.data.ptr, i.size, kind, op, s), comms, ins, outs)
    if name == "pmean":
        for d, o in zip(devs, outs):
            with cp.cuda.Device(d.id):
                o *= o.dtype.type(1.0 / n)
    return outs


def _contiguous_on_its_device(buf):
    # cupy.ascontiguousarray would turn a 0-d array into shape (1,).
    with buf.device:
        return contiguous(buf)


def _empty_on(cp, device, shape, dtype):
    with cp.cuda.Device(device.id):
        return cp.empty(shape, dtype)


def _group(cp, nccl, devs, call, comms, ins, outs):
    nccl.groupStart()
    try:
        for d, c, i, o in zip(devs, comms, ins, outs):
            with cp.cuda.Device(d.id):
                call(c, i, o, cp.cuda.get_current_stream().ptr)
    finally:
        nccl.groupEnd()


def _through_host(name, bufs, params, devs):
    from flamefx.primitives import collectives
    cp = cupy()
    prim = next(p for p in collectives.COLLECTIVES if p.name == name)
    host = collectives.across_devices(prim, [b.get() for b in bufs], params)
    out = []
    for d, h in zip(devs, host):
        with cp.cuda.Device(d.id):
            out.append(cp.asarray(h))
    return out
