"""CUDA kernels for data movement: clamped dynamic windows, gathers, combining scatters, iota.

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
# complex128 moves as CUDA's 16-byte vector type (its buffers are 16-byte aligned).
_BYTES_TYPE = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int",
               8: "unsigned long long", 16: "ulonglong2"}


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
    if x.dtype.itemsize == 16:  # NumPy has no 16-byte unsigned type; the kernel sees T*
        return x
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def _window_args(cp, big, starts, sizes):
    starts = [cp.asarray(s).astype(cp.int64).reshape(()) for s in starts]
    return (starts + [np.int64(n) for n in big.shape] + [np.int64(k) for k in sizes]), starts


def dynamic_slice(x, starts, sizes):
    """x[start:start+size, ...] with starts (0-d device ints) clamped into range."""
    cp = _cp()
    if x.ndim == 0:  # the whole of a 0-d array (ascontiguousarray would make it 1-d)
        return x.copy()
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
    if x.ndim == 0:  # a 0-d update replaces the whole 0-d array
        return update.astype(x.dtype, copy=True)
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


# Index vectors are read by the kernels themselves (clamped, combined into a row number),
# so a gather or scatter is one launch with no host round trip and no temporaries.
_INDEX_TYPES = {"int32": "int", "int64": "long long", "uint32": "unsigned int",
                "uint64": "unsigned long long"}


def _row_lookup(n_axes: int) -> str:
    """C statements setting ``row`` from index vector ``b`` (clamped into n0..): the row's
    row-major position among the indexed axes."""
    lines = [f"    const I* ix = indices + b * {n_axes};\n", "    long long row = 0, v;\n"]
    for j in range(n_axes):
        lines.append(f"    v = (long long)ix[{j}]; v = v < 0 ? 0 : (v >= n{j} ? n{j} - 1 : v);\n"
                     f"    row = row * n{j} + v;\n")
    return "".join(lines)


def _indexed_args(n_axes: int) -> str:
    return "".join(f", long long n{j}" for j in range(n_axes))


@functools.cache
def _gather_kernel(itemsize: int, index_ctype: str, n_axes: int):
    source = (
        f"typedef {_BYTES_TYPE[itemsize]} T;\ntypedef {index_ctype} I;\n"
        f'extern "C" __global__ void gather_rows(const T* table, const I* indices, T* out, '
        f"long long total, long long row_len{_indexed_args(n_axes)}) {{\n"
        f"    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        f"    if (i >= total) return;\n"
        f"    long long b = i / row_len, c = i - b * row_len;\n"
        f"{_row_lookup(n_axes)}"
        f"    out[i] = table[row * row_len + c];\n}}\n")
    return _cp().RawKernel(source, "gather_rows")


def _index_operand(cp, indices):
    """Indices as a C-contiguous array of a type the kernels read directly."""
    if indices.dtype.name not in _INDEX_TYPES:
        indices = indices.astype(np.int64)
    return cp.ascontiguousarray(indices)


def gather_rows(table, indices, indexed_sizes):
    """Rows of ``table`` (m, row_len) picked by index vectors ``indices`` (..., k): the row
    of vector ``v`` is its row-major position in ``indexed_sizes`` (each entry clamped).
    Returns (n_vectors, row_len). One kernel launch.

    >>> gather_rows(table, indices, (512, 10))      # doctest: +SKIP
    """
    cp = _cp()
    indices = _index_operand(cp, indices)
    n_vectors = int(np.prod(indices.shape[:-1], dtype=np.int64))
    row_len = table.shape[1]
    out = cp.empty((n_vectors, row_len), table.dtype)
    if out.size:
        kernel = _gather_kernel(table.dtype.itemsize, _INDEX_TYPES[indices.dtype.name],
                                len(indexed_sizes))
        kernel(_blocks(out.size), (_BLOCK,),
               (_as_bytes(cp.ascontiguousarray(table)), indices, _as_bytes(out),
                np.int64(out.size), np.int64(row_len), *[np.int64(n) for n in indexed_sizes]))
    return out


def _complex_as_parts(cp, x, part_dtype):
    """A complex (rows, row_len) array as (rows, 2 * row_len) of ``part_dtype`` (a view)."""
    x = cp.ascontiguousarray(x)
    return x.reshape(x.shape[0], -1).view(part_dtype)


def _scatter_complex(cp, table, indices, indexed_sizes, updates, mode):
    """Complex rows as interleaved real and imaginary parts, which add (and set) combine
    part by part. A complex64 set moves whole 8-byte elements instead, so that duplicated
    indices never mix two updates' parts (complex128 sets can, as the parts go separately)."""
    if mode not in ("set", "add"):
        raise NotImplementedError(f"scatter-{mode} of complex arrays has no GPU kernel")
    part = np.dtype(np.uint64) if mode == "set" and table.dtype.itemsize == 8 else \
        np.dtype(np.float32 if table.dtype == np.complex64 else np.float64)
    out = scatter_rows(_complex_as_parts(cp, table, part), indices, indexed_sizes,
                       _complex_as_parts(cp, updates, part), mode)
    return out.view(table.dtype).reshape(table.shape)


def _scatter_source(ctype: str, mode: str, index_ctype: str, n_axes: int) -> str:
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
        f"typedef {ctype} T;\ntypedef {index_ctype} I;\n"
        f'extern "C" __global__ void scatter_rows(T* out, const T* updates, '
        f"const I* indices, long long total, long long row_len{_indexed_args(n_axes)}) {{\n"
        f"    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        f"    if (i >= total) return;\n"
        f"    long long b = i / row_len, c = i - b * row_len;\n"
        f"{_row_lookup(n_axes)}"
        f"    long long dst = row * row_len + c;\n"
        f"    T val = updates[i];\n{store}}}\n")


@functools.cache
def _scatter_kernel(ctype: str, mode: str, index_ctype: str, n_axes: int):
    return _cp().RawKernel(_scatter_source(ctype, mode, index_ctype, n_axes), "scatter_rows")


def _compute_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.itemsize < 4:
        return np.dtype(np.float32) if dtype.kind == "f" or dtype.name == "bfloat16" \
            else np.dtype(np.int32)
    return dtype


def scatter_rows(table, indices, indexed_sizes, updates, mode: str):
    """Combines ``updates`` (n_vectors, row_len) into the rows of ``table`` (m, row_len)
    named by index vectors ``indices`` (..., k), as in ``gather_rows``.

    Returns a new table; the input is not written. Duplicated rows accumulate for add,
    mul, min and max; for set one of the duplicates wins. One copy and one kernel launch.
    """
    cp = _cp()
    if table.dtype.kind == "c":
        return _scatter_complex(cp, table, indices, indexed_sizes, updates, mode)
    dtype = _compute_dtype(table.dtype)
    out = cp.array(table, dtype=dtype, copy=True, order="C")
    updates = cp.ascontiguousarray(updates, dtype=dtype)
    if updates.size:
        indices = _index_operand(cp, indices)
        kernel = _scatter_kernel(_C_TYPES[dtype.name], mode, _INDEX_TYPES[indices.dtype.name],
                                 len(indexed_sizes))
        kernel(_blocks(updates.size), (_BLOCK,),
               (out, updates, indices, np.int64(updates.size),
                np.int64(out.shape[1] if out.ndim > 1 else 1),
                *[np.int64(n) for n in indexed_sizes]))
    if dtype == table.dtype:
        return out
    return (out != 0) if table.dtype == np.bool_ else out.astype(table.dtype)


# --- iota --------------------------------------------------------------------------------------

_IOTA_TYPES = dict(_C_TYPES, bool="bool", int8="signed char", int16="short",
                   uint8="unsigned char", uint16="unsigned short")


@functools.cache
def _iota_kernel(ctype: str):
    return _cp().RawKernel(
        f"typedef {ctype} T;\n"
        f'extern "C" __global__ void iota(T* out, long long total, long long inner, '
        f"long long n) {{\n"
        f"    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        f"    if (i < total) out[i] = (T)((i / inner) % n);\n}}\n", "iota")


def iota(dtype, shape, dimension: int):
    """0, 1, 2, ... along ``dimension`` of a new array of ``shape`` (one kernel launch);
    None for dtypes the kernel does not cover (the half types)."""
    dtype = np.dtype(dtype)
    ctype = _IOTA_TYPES.get(dtype.name)
    if ctype is None:
        return None
    cp = _cp()
    out = cp.empty(shape, dtype)
    if out.size:
        inner = int(np.prod(shape[dimension + 1:], dtype=np.int64))
        _iota_kernel(ctype)(_blocks(out.size), (_BLOCK,),
                            (out, np.int64(out.size), np.int64(inner), np.int64(shape[dimension])))
    return out
