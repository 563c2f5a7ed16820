"""The bound calls of a CPU plan (cpu_plan.py): each step is a closure over slot indices
that reads its operands from the plan's slot list ``env`` and writes its result there, with
the memory its result lands in decided at compile time (a plan buffer, a ``_Recycled`` pool
for what the caller may see, or, inside a scan, the row of a stacked y).

>>> import numpy as np
>>> env = [np.arange(6.0), None]
>>> _view_step(0, 1, (2, 3))(env)
>>> env[1].shape
(2, 3)
"""

from __future__ import annotations

from sys import getrefcount

import numpy as np

# Larger results are allocated per call: a plan keeps its buffers between calls, and for
# arrays this big the allocation is small beside the arithmetic.
BUFFER_MAX_BYTES = 1 << 24


class _Recycled:
    """Memory for a result the caller will see (an output, or what may be a view of one):
    an array this step returned in an earlier call once nothing holds it any more (its
    reference count is back to this pool's own), else a new one (pooled, up to KEEP).
    A training loop drops the step-before-last's parameters as it goes, so their arrays
    come back; allocating instead cost a page fault per 4 KB touched (C1's Adam outputs:
    180 against 20 us for a 256x256 add). A result over BUFFER_MAX_BYTES keeps one
    array: C5's 103 MB per-example gradient took 17.2 ms written into fresh memory, 13.5
    into the dropped array of the call before; the pool holds that memory between calls
    only while the caller holds none of it."""

    KEEP, KEEP_LARGE = 3, 1
    __slots__ = ("arrays", "dtype", "keep", "shape")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype
        small = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize <= \
            BUFFER_MAX_BYTES
        self.arrays, self.keep = [], self.KEEP if small else self.KEEP_LARGE

    def __call__(self) -> np.ndarray:
        arrays = self.arrays
        for arr in arrays:
            if _refs(arr) <= _UNHELD:
                return arr
        arr = np.empty(self.shape, self.dtype)
        if len(arrays) < self.keep:
            arrays.append(arr)
        return arr


def _refs(arr) -> int:
    return getrefcount(arr)


def _unheld_refs() -> int:
    """What ``_refs`` reads, in _Recycled's loop, for an array only the pool holds."""
    for arr in [np.empty(1)]:
        return _refs(arr)


_UNHELD = _unheld_refs()


# --- the bound calls (each takes the slot list) ---------------------------------------------------


def _ufunc_step(fn, ins, o, buffer, aval, target=None):
    if target is not None:
        return _ufunc_into(fn, ins, o, target)
    shape, dtype = aval.shape, aval.dtype
    new = _Recycled(shape, dtype)
    if len(ins) == 1:
        (a,) = ins
        if buffer is not None:
            def step(env):
                env[o] = fn(env[a], out=buffer)
        else:
            def step(env):
                env[o] = fn(env[a], out=new())
        return step
    a, b = ins
    if buffer is not None:
        def step(env):
            env[o] = fn(env[a], env[b], out=buffer)
    else:
        def step(env):
            env[o] = fn(env[a], env[b], out=new())
    return step


def _ufunc_into(fn, ins, o, target):
    """A ufunc step writing into ``env[target]`` (in a scan: its row of a stacked y)."""
    if len(ins) == 1:
        (a,) = ins

        def step(env):
            env[o] = fn(env[a], out=env[target])
        return step
    a, b = ins

    def step(env):
        env[o] = fn(env[a], env[b], out=env[target])
    return step


def _select_step(ins, o, buffer, aval, zero_case=None):
    """select_n(which, on_false, on_true) as a bitwise blend of the cases' bits: NumPy's
    masked copies (np.where, copyto(where=)) branch per element and took 15-60x a ufunc's
    time on a relu mask (128x256 float32); integer ufuncs do not branch. The mask is
    ``-which`` as int8 (0 or all ones, widened by the ufunc's cast). When ``zero_case``
    (1: on_false, 2: on_true) has all bits zero (a relu's 0.0), the blend is one ``and``
    of the other case (8.7 against 17.9 us on C1's 128x256 masks)."""
    which, on_false, on_true = ins
    shape, dtype = aval.shape, aval.dtype
    new = _Recycled(shape, dtype)
    bits = np.dtype(f"i{dtype.itemsize}")
    mask = np.empty(shape, np.int8)  # scratch: a plan runs one call at a time
    if zero_case is not None:
        kept = on_true if zero_case == 1 else on_false

        def step(env):
            out = new() if buffer is None else buffer
            np.negative(env[which].view(np.int8), out=mask)
            if zero_case == 2:
                np.invert(mask, out=mask)
            np.bitwise_and(env[kept].view(bits), mask, out=out.view(bits))
            env[o] = out
        return step

    def step(env):
        out = new() if buffer is None else buffer
        f, t, o_bits = env[on_false].view(bits), env[on_true].view(bits), out.view(bits)
        np.negative(env[which].view(np.int8), out=mask)
        np.bitwise_xor(t, f, out=o_bits)
        np.bitwise_and(o_bits, mask, out=o_bits)
        np.bitwise_xor(o_bits, f, out=o_bits)
        env[o] = out
    return step


def _convert_step(a, o, buffer, aval):
    shape, dtype = aval.shape, aval.dtype
    new = _Recycled(shape, dtype)

    def step(env):
        out = new() if buffer is None else buffer
        np.copyto(out, env[a], casting="unsafe")
        env[o] = out
    return step


def _reduce_step(fn, a, o, buffer, aval, axes):
    shape, dtype = aval.shape, aval.dtype
    new = _Recycled(shape, dtype)
    initial = {np.maximum: -np.inf, np.minimum: np.inf}.get(fn, 0)

    def step(env):
        out = new() if buffer is None else buffer
        env[o] = fn.reduce(env[a], axis=axes, out=out, initial=initial)
    return step


def _matmul_step(ins, o, buffer, aval, layout, target=None):
    a, b = ins
    ta, tb, rows = layout
    shape, dtype = aval.shape, aval.dtype
    new = _Recycled(shape, dtype)
    if rows is not None:  # (rows, k) @ (k, n) written into the output seen as (rows, n)
        flat = (rows, shape[-1])
        flat_buffer = None if buffer is None else buffer.reshape(flat)
        new_flat = _Recycled(flat, dtype)

        def step(env):
            x, y = env[a], env[b]
            out = new_flat() if flat_buffer is None else flat_buffer
            np.matmul(x.reshape(rows, x.shape[-1]), y.T if tb else y, out=out)
            env[o] = out.reshape(shape)
        return step

    def operands(env):
        x, y = env[a], env[b]
        return (x.swapaxes(-1, -2) if ta else x), (y.swapaxes(-1, -2) if tb else y)

    if target is not None:  # in a scan: its row of a stacked y
        def step(env):
            x, y = operands(env)
            env[o] = np.matmul(x, y, out=env[target])
        return step

    def step(env):
        x, y = operands(env)
        env[o] = np.matmul(x, y, out=new() if buffer is None else buffer)
    return step


def _conv_step(fn, ins, o, params):
    a, b = ins

    def step(env):
        env[o] = fn(env[a], env[b], **params)
    return step


def _fallback_step(eqn, ins, outs):
    impl = eqn.prim.impl_for("cpu")
    params = eqn.params
    out_dtypes = [v.aval.dtype for v in eqn.outvars]

    def step(env):
        results = impl(*[env[s] for s in ins], **params)
        for s, r, dt in zip(outs, results, out_dtypes):
            if type(r) is not np.ndarray:
                r = np.asarray(r)
            env[s] = r if r.dtype == dt else r.astype(dt)
    return step


def _contiguous_transpose_step(src, o):
    def step(env):
        env[o] = np.ascontiguousarray(env[src].swapaxes(-1, -2))
    return step


def _view_step(src, o, shape):
    def step(env):
        env[o] = env[src].reshape(shape)
    return step
