"""CUDA kernels for data movement: clamped dynamic windows and combining scatters.

Window kernels read their start indices from device memory, so a dynamic slice never
synchronizes with the host (and can be captured in a CUDA graph). They only move bytes,
so they are generated per element *size*, not per dtype (bfloat16 costs nothing extra).
Scatter-add uses atomicAdd; mul, min, max (and add of int64) combine in an atomicCAS
loop; 16-bit and bool operands are combined in a 32-bit type and cast back.
"""

from __future__ import annotations

import functools

import numpy as np

_BLOCK = 256
_BYTES_TYPE = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int",
               8: "unsigned long long"}


def _cp():
    from flamefx import devices
    return devices.cupy()


def _blocks(n: int) -> tuple:
    return ((n + _BLOCK - 1) // _BLOCK,)


# --- dynamic windows ---------------------------------------------------------------------------


def _window_source(ndim: int) -> str:
    """``window_read`` copies x[clamped window] to out; ``window_write`` the other way.

    Arguments: big, small, total (= small.size), start pointers s0.., big dims n0..,
    window dims k0... The loop runs from the last axis so offsets are row-major.
    """
    starts = "".join(f", const long long* s{d}" for d in range(ndim))
    dims = "".join(f", long long n{d}" for d in range(ndim))
    sizes = "".join(f", long long k{d}" for d in range(ndim))
    body = "".join(
        f"    c = rem % k{d}; rem /= k{d};\n"
        f"    st = min(max(*s{d}, 0LL), n{d} - k{d});\n"
        f"    off += (c + st) * stride; stride *= n{d};\n"
        for d in reversed(range(ndim)))
    offset = ("    long long rem = i, off = 0, stride = 1, c, st;\n" + body) if ndim else (
        "    long long off = 0;\n")
    kernels = []
    for name, assign in (("window_read", "small[i] = big[off];"),
                         ("window_write", "big[off] = small[i];")):
        const_big = "const " if name == "window_read" else ""
        const_small = "" if name == "window_read" else "const "
        kernels.append(
            f'extern "C" __global__ void {name}({const_big}T* big, {const_small}T* small, '
            f"long long total{starts}{dims}{sizes}) {{\n"
            f"    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"    if (i >= total) return;\n{offset}    {assign}\n}}\n")
    return "\n".join(kernels)


@functools.cache
def _window_kernel(name: str, itemsize: int, ndim: int):
    source = f"typedef {_BYTES_TYPE[itemsize]} T;\n" + _window_source(ndim)
    return _cp().RawModule(code=source).get_function(name)


def _as_bytes(x):
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def _window_args(cp, big, starts, sizes):
    starts = [cp.asarray(s).astype(cp.int64).reshape(()) for s in starts]
    return (starts + [np.int64(n) for n in big.shape] + [np.int64(k) for k in sizes]), starts


def dynamic_slice(x, starts, sizes):
    """x[start:start+size, ...] with starts (0-d device ints) clamped into range."""
    cp = _cp()
    x = cp.ascontiguousarray(x)
    out = cp.empty(tuple(sizes), x.dtype)
    if out.size == 0:
        return out
    args, _keep = _window_args(cp, x, starts, sizes)
    kernel = _window_kernel("window_read", x.dtype.itemsize, x.ndim)
    kernel(_blocks(out.size), (_BLOCK,), (_as_bytes(x), _as_bytes(out), np.int64(out.size),
                                          *args))
    return out


def dynamic_update_slice(x, update, starts):
    """A copy of x with ``update`` written at the clamped starts."""
    cp = _cp()
    out = cp.array(x, copy=True, order="C")
    update = cp.ascontiguousarray(update)
    if update.size == 0:
        return out
    args, _keep = _window_args(cp, out, starts, update.shape)
    kernel = _window_kernel("window_write", x.dtype.itemsize, x.ndim)
    kernel(_blocks(update.size), (_BLOCK,), (_as_bytes(out), _as_bytes(update),
                                             np.int64(update.size), *args))
    return out


# --- scatter -------------------------------------------------------------------------------

_COMBINE = {
    "add": "a + b",
    "mul": "a * b",
    # NaN wins, as in NumPy's maximum/minimum (x != x only holds for NaN).
    "max": "(a > b || a != a) ? a : b",
    "min": "(a < b || a != a) ? a : b",
}
_C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
            "uint32": "unsigned int", "uint64": "unsigned long long"}


def _scatter_source(ctype: str, mode: str) -> str:
    bits = "unsigned long long" if ctype in ("double", "long long", "unsigned long long") \
        else "unsigned int"
    if mode == "set":
        store = "    out[dst] = val;\n"
    elif mode == "add" and ctype != "long long":  # the hardware has atomicAdd for these
        store = "    atomicAdd(out + dst, val);\n"
    else:
        store = (
            f"    {bits}* addr = reinterpret_cast<{bits}*>(out + dst);\n"
            f"    {bits} old = *addr, assumed;\n"
            f"    union {{ T value; {bits} bits; }} current, next;\n"
            f"    do {{\n"
            f"        assumed = old;\n"
            f"        current.bits = assumed;\n"
            f"        T a = current.value, b = val;\n"
            f"        next.value = {_COMBINE[mode]};\n"
            f"        old = atomicCAS(addr, assumed, next.bits);\n"
            f"    }} while (assumed != old);\n")
    return (
        f"typedef {ctype} T;\n"
        f'extern "C" __global__ void scatter_rows(T* out, const T* updates, '
        f"const long long* rows, long long total, long long row_len) {{\n"
        f"    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        f"    if (i >= total) return;\n"
        f"    long long dst = rows[i / row_len] * row_len + i % row_len;\n"
        f"    T val = updates[i];\n{store}}}\n")


@functools.cache
def _scatter_kernel(ctype: str, mode: str):
    return _cp().RawKernel(_scatter_source(ctype, mode), "scatter_rows")


def _compute_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.itemsize < 4:
        return np.dtype(np.float32) if dtype.kind == "f" or dtype.name == "bfloat16" \
            else np.dtype(np.int32)
    return dtype


def scatter_rows(table, rows, updates, mode: str):
    """Combines ``updates`` (n, row_len) into rows ``rows`` (n,) of ``table`` (m, row_len).

    Returns a new table; the input is not written. Duplicated rows accumulate for add,
    mul, min and max; for set one of the duplicates wins.
    """
    cp = _cp()
    dtype = _compute_dtype(table.dtype)
    out = cp.array(table, dtype=dtype, copy=True, order="C")
    updates = cp.ascontiguousarray(updates, dtype=dtype)
    if updates.size:
        kernel = _scatter_kernel(_C_TYPES[dtype.name], mode)
        kernel(_blocks(updates.size), (_BLOCK,),
               (out, updates, cp.ascontiguousarray(rows, dtype=cp.int64),
                np.int64(updates.size), np.int64(out.shape[1] if out.ndim > 1 else 1)))
    if dtype == table.dtype:
        return out
    return (out != 0) if table.dtype == np.bool_ else out.astype(table.dtype)
