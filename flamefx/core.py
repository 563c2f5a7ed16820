"""The core: abstract values, the immutable Array, primitives, traces and ``bind``.

Tracing is stackless: one current trace, each trace holding its parent. ``bind`` hands
a primitive application to the current trace; a trace unwraps its own tracers, treats
everything else as a constant from an outer level, and binds again on its parent.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

import numpy as np

from flamefx import config as _config
from flamefx import devices as _devices
from flamefx import dtypes
from flamefx.errors import (ConcretizationError, DeletedArrayError, FlamefxError,
                            FlamefxTypeError, UnexpectedTracerError, user_frame)

# --- abstract values ---------------------------------------------------------------------

_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
          "int32": "i32", "int64": "i64", "int8": "i8", "int16": "i16", "uint8": "u8",
          "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool",
          "complex64": "c64", "complex128": "c128"}


class ShapedArray:
    """The abstract value (``aval``) of an array: shape, dtype and weak-typedness."""

    __slots__ = ("shape", "dtype", "weak_type")

    def __init__(self, shape, dtype, weak_type: bool = False):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.weak_type = bool(weak_type)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __eq__(self, other):
        return (isinstance(other, ShapedArray) and self.shape == other.shape
                and self.dtype == other.dtype and self.weak_type == other.weak_type)

    def __hash__(self):
        return hash((self.shape, self.dtype, self.weak_type))

    def str_short(self) -> str:
        return f"{_SHORT.get(self.dtype.name, self.dtype.name)}[{','.join(map(str, self.shape))}]"

    def __repr__(self):
        return f"ShapedArray({self.str_short()}{', weak' if self.weak_type else ''})"

    def update(self, shape=None, dtype=None, weak_type=None) -> "ShapedArray":
        return ShapedArray(self.shape if shape is None else shape,
                           self.dtype if dtype is None else dtype,
                           self.weak_type if weak_type is None else weak_type)


# --- the methods Array and Tracer share ----------------------------------------------------

_fnp = None


def _numpy_api():
    global _fnp
    if _fnp is None:
        import flamefx.numpy as fnp
        _fnp = fnp
    return _fnp


class ArrayMethods:
    """Operators and methods of concrete arrays and tracers, written on flamefx.numpy."""

    __slots__ = ()
    __array_priority__ = 100  # NumPy defers `ndarray op Array` to our reflected operators

    def __add__(self, o): return _numpy_api().add(self, o)
    def __radd__(self, o): return _numpy_api().add(o, self)
    def __sub__(self, o): return _numpy_api().subtract(self, o)
    def __rsub__(self, o): return _numpy_api().subtract(o, self)
    def __mul__(self, o): return _numpy_api().multiply(self, o)
    def __rmul__(self, o): return _numpy_api().multiply(o, self)
    def __truediv__(self, o): return _numpy_api().true_divide(self, o)
    def __rtruediv__(self, o): return _numpy_api().true_divide(o, self)
    def __floordiv__(self, o): return _numpy_api().floor_divide(self, o)
    def __rfloordiv__(self, o): return _numpy_api().floor_divide(o, self)
    def __mod__(self, o): return _numpy_api().remainder(self, o)
    def __rmod__(self, o): return _numpy_api().remainder(o, self)
    def __pow__(self, o): return _numpy_api().power(self, o)
    def __rpow__(self, o): return _numpy_api().power(o, self)
    def __matmul__(self, o): return _numpy_api().matmul(self, o)
    def __rmatmul__(self, o): return _numpy_api().matmul(o, self)
    def __neg__(self): return _numpy_api().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _numpy_api().abs(self)
    def __invert__(self): return _numpy_api().invert(self)
    def __and__(self, o): return _numpy_api().bitwise_and(self, o)
    def __rand__(self, o): return _numpy_api().bitwise_and(o, self)
    def __or__(self, o): return _numpy_api().bitwise_or(self, o)
    def __ror__(self, o): return _numpy_api().bitwise_or(o, self)
    def __xor__(self, o): return _numpy_api().bitwise_xor(self, o)
    def __rxor__(self, o): return _numpy_api().bitwise_xor(o, self)
    def __lshift__(self, o): return _numpy_api().left_shift(self, o)
    def __rlshift__(self, o): return _numpy_api().left_shift(o, self)
    def __rshift__(self, o): return _numpy_api().right_shift(self, o)
    def __rrshift__(self, o): return _numpy_api().right_shift(o, self)
    def __eq__(self, o): return _numpy_api().equal(self, o)
    def __ne__(self, o): return _numpy_api().not_equal(self, o)
    def __lt__(self, o): return _numpy_api().less(self, o)
    def __le__(self, o): return _numpy_api().less_equal(self, o)
    def __gt__(self, o): return _numpy_api().greater(self, o)
    def __ge__(self, o): return _numpy_api().greater_equal(self, o)
    __hash__ = None  # arrays are values, not keys (as in JAX and NumPy)

    def __getitem__(self, idx): return _numpy_api()._getitem(self, idx)

    def __setitem__(self, idx, value):
        raise TypeError(
            f"flamefx arrays are immutable: '{type(self).__name__}[...] = value' is not "
            f"allowed. Use x = x.at[idx].set(value) instead (also .add, .multiply, .min, .max)."
            f"\n  at {user_frame()}")

    @property
    def at(self): return _numpy_api()._IndexUpdateHelper(self)

    @property
    def ndim(self) -> int: return len(self.shape)

    @property
    def size(self) -> int: return int(np.prod(self.shape, dtype=np.int64))

    @property
    def T(self): return _numpy_api().transpose(self)

    @property
    def mT(self): return _numpy_api().swapaxes(self, -1, -2)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def astype(self, dtype, copy=True): return _numpy_api().astype(self, dtype, copy=copy)
    def __array_namespace__(self, *, api_version=None):
        return _numpy_api()  # flamefx.numpy implements the array API (2023.12)
    def to_device(self, device, *, stream=None):
        from flamefx.transfer import device_put
        return device_put(self, device)
    def reshape(self, *shape, order="C"):
        # One argument that is a sequence is the shape; a 0-d one (a traced n) is one dim.
        if len(shape) == 1 and not isinstance(shape[0], int) and getattr(shape[0], "ndim", 1):
            shape = tuple(shape[0])
        return _numpy_api().reshape(self, shape, order=order)
    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], int):
            axes = tuple(axes[0])
        return _numpy_api().transpose(self, axes or None)
    def swapaxes(self, a, b): return _numpy_api().swapaxes(self, a, b)
    def flatten(self): return _numpy_api().ravel(self)
    def ravel(self): return _numpy_api().ravel(self)
    def squeeze(self, axis=None): return _numpy_api().squeeze(self, axis)
    def sum(self, axis=None, dtype=None, keepdims=False):
        return _numpy_api().sum(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def mean(self, axis=None, dtype=None, keepdims=False):
        return _numpy_api().mean(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def prod(self, axis=None, dtype=None, keepdims=False):
        return _numpy_api().prod(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def max(self, axis=None, keepdims=False):
        return _numpy_api().max(self, axis=axis, keepdims=keepdims)
    def min(self, axis=None, keepdims=False):
        return _numpy_api().min(self, axis=axis, keepdims=keepdims)
    def var(self, axis=None, ddof=0, keepdims=False):
        return _numpy_api().var(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def std(self, axis=None, ddof=0, keepdims=False):
        return _numpy_api().std(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def argmax(self, axis=None, keepdims=False):
        return _numpy_api().argmax(self, axis=axis, keepdims=keepdims)
    def argmin(self, axis=None, keepdims=False):
        return _numpy_api().argmin(self, axis=axis, keepdims=keepdims)
    def all(self, axis=None, keepdims=False):
        return _numpy_api().all(self, axis=axis, keepdims=keepdims)
    def any(self, axis=None, keepdims=False):
        return _numpy_api().any(self, axis=axis, keepdims=keepdims)
    def cumsum(self, axis=None, dtype=None):
        return _numpy_api().cumsum(self, axis=axis, dtype=dtype)
    def sort(self, axis=-1, *, kind=None, order=None, stable=True, descending=False):
        return _numpy_api().sort(self, axis, kind=kind, order=order, stable=stable,
                                 descending=descending)
    def argsort(self, axis=-1, *, kind=None, order=None, stable=True, descending=False):
        return _numpy_api().argsort(self, axis, kind=kind, order=order, stable=stable,
                                    descending=descending)
    def argpartition(self, kth, axis=-1): return _numpy_api().argpartition(self, kth, axis)
    def searchsorted(self, v, side="left", sorter=None, *, method="scan"):
        return _numpy_api().searchsorted(self, v, side, sorter, method=method)
    def clip(self, min=None, max=None): return _numpy_api().clip(self, min, max)
    def round(self, decimals=0): return _numpy_api().round(self, decimals)
    def dot(self, other): return _numpy_api().dot(self, other)
    def conj(self): return _numpy_api().conj(self)
    def conjugate(self): return _numpy_api().conj(self)
    @property
    def real(self): return _numpy_api().real(self)
    @property
    def imag(self): return _numpy_api().imag(self)


# --- concrete arrays -----------------------------------------------------------------------


class Array(ArrayMethods):
    """An immutable n-dimensional array on a device (a NumPy or CuPy buffer inside).

    >>> import flamefx.numpy as fnp
    >>> x = fnp.arange(3.0)
    >>> (x * 2).tolist()
    [0.0, 2.0, 4.0]
    """

    __slots__ = ("_buf", "_device", "_weak", "_committed", "__weakref__")

    def __init__(self, buf, device: _devices.Device, weak_type: bool = False,
                 committed: bool = False):
        self._buf = buf
        self._device = device
        self._weak = weak_type
        # Committed arrays were placed on their device on purpose (device_put, an explicit
        # device, a CuPy buffer); uncommitted ones (creation functions, Python scalars)
        # follow committed operands to their device, as in JAX.
        self._committed = committed

    @property
    def buffer(self):
        """The NumPy or CuPy buffer (read-only by contract: never write into it)."""
        if self._buf is None:
            raise DeletedArrayError(
                "this array was donated to a jitted call (donate_argnums) and its buffer now "
                f"belongs to that call's output; use the output instead.\n  at {user_frame()}")
        return self._buf

    @property
    def aval(self) -> ShapedArray:
        buf = self.buffer
        return ShapedArray(buf.shape, buf.dtype, self._weak)

    @property
    def shape(self) -> tuple:
        return self.buffer.shape

    @property
    def dtype(self) -> np.dtype:
        return self.buffer.dtype

    @property
    def weak_type(self) -> bool:
        return self._weak

    @property
    def device(self) -> _devices.Device:
        return self._device

    def devices(self):
        return {self._device}

    def is_deleted(self) -> bool:
        return self._buf is None

    def delete(self) -> None:
        self._buf = None

    def __array__(self, dtype=None, copy=None):
        buf = self.buffer
        out = buf if isinstance(buf, np.ndarray) else buf.get()
        if dtype is not None:
            out = out.astype(dtype, copy=False)
        # Hand out a read-only view so that nobody can write through to our buffer.
        view = out.view()
        view.flags.writeable = False
        return view.copy() if copy else view

    def to_numpy(self) -> np.ndarray:
        return np.array(self)

    def item(self, *args):
        return np.asarray(self).item(*args)

    def tolist(self):
        return np.asarray(self).tolist()

    def block_until_ready(self) -> "Array":
        if self._device.platform == "gpu" and self._buf is not None:
            self._device.xp.cuda.get_current_stream().synchronize()
        return self

    def __bool__(self):
        return bool(np.asarray(self))

    def __int__(self):
        return int(np.asarray(self))

    def __float__(self):
        return float(np.asarray(self))

    def __index__(self):
        if not dtypes.is_int(self.dtype) and self.dtype != dtypes.bool_:
            raise TypeError(f"only integer arrays can be used as an index, got {self.dtype}")
        return int(np.asarray(self))

    def __complex__(self):
        return complex(np.asarray(self))

    def __format__(self, spec):
        return format(np.asarray(self).item(), spec) if not self.shape else repr(self)

    def __repr__(self):
        if self._buf is None:
            return "Array(<deleted>)"
        body = np.array2string(np.asarray(self), separator=", ", prefix="Array(")
        suffix = f", dtype={self.dtype.name}"
        if self._device.platform == "gpu":
            suffix += f", device={self._device}"
        return f"Array({body}{suffix})"

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        buf = self.buffer
        if isinstance(buf, np.ndarray):
            view = buf.view()
            view.flags.writeable = False
            try:  # versioned DLPack can say "read-only", so the consumer cannot write into us
                return view.__dlpack__(max_version=max_version)
            except (BufferError, TypeError):  # an older consumer: give it a copy instead
                return buf.copy().__dlpack__()
        # GPU buffers: CuPy's DLPack export has no read-only flag; the contract (documented
        # on from_dlpack) is that consumers treat flamefx memory as frozen.
        return buf.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.buffer.__dlpack_device__()

    def __reduce__(self):
        return (_unpickle_array, (np.asarray(self), self._weak))


def _unpickle_array(value, weak):
    return to_array(value, weak=weak)


def to_array(x, dtype=None, device: _devices.Device | None = None,
             weak: bool | None = None) -> Array:
    """Converts a Python scalar, NumPy/CuPy array or Array to an Array (no copy if possible).

    Python scalars become *weak-typed* 0-d arrays. Lists are read by NumPy, and Python
    floats in them take the default float dtype (float32 unless x64 is on), as in JAX.
    """
    if isinstance(x, Array):
        if dtype is not None and np.dtype(dtype) != x.dtype:
            return to_array(x.buffer.astype(dtypes.canonicalize(dtype)), device=device or x.device)
        if device is not None and (device != x.device or not x._committed):
            return Array(_devices.move_buffer(x.buffer, device), device, x._weak, True)
        return x
    if isinstance(x, Tracer):
        raise FlamefxTypeError("to_array got a tracer; this is a flamefx bug")
    committed = device is not None
    device = device or _devices.default_device()
    if isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic):
        dt = dtypes.canonicalize(dtype) if dtype is not None else dtypes.dtype_of_python_scalar(x)
        weak = (dtype is None) if weak is None else weak
        return Array(_devices.move_buffer(_scalar_buffer(x, dt), device), device, weak,
                     committed)
    if hasattr(x, "__cuda_array_interface__") or type(x).__module__.startswith("cupy"):
        buf = x if dtype is None else x.astype(dtypes.canonicalize(dtype))
        dtypes.canonicalize(buf.dtype)
        if not committed:
            device = _devices.device_of_buffer(buf)
        return Array(_devices.move_buffer(buf, device), device, bool(weak), True)
    if isinstance(x, (list, tuple)):
        x = _list_to_numpy(x, dtype)
    elif not isinstance(x, (np.ndarray, np.generic)):
        if hasattr(x, "__array__"):
            x = np.asarray(x)
        else:
            raise FlamefxTypeError(f"{type(x).__name__} is not an array type flamefx accepts "
                                   f"(expected an Array, NumPy array or Python scalar)\n  at "
                                   f"{user_frame()}")
    buf = np.asarray(x)
    dt = dtypes.canonicalize(dtype if dtype is not None else buf.dtype)
    if buf.dtype != dt:
        buf = buf.astype(dt)
    return Array(_devices.move_buffer(buf, device), device, bool(weak), committed)


def to_canonical_array(x, device: _devices.Device | None = None) -> Array:
    """Like ``to_array`` for data coming from outside flamefx, in JAX's canonical dtypes:
    with x64 off, NumPy float64/int64/uint64 data (arrays, NumPy scalars, lists of them)
    becomes float32/int32/uint32, as ``jnp.asarray`` does. flamefx Arrays keep their dtype.

    >>> to_canonical_array(np.zeros(2)).dtype
    dtype('float32')
    """
    if (hasattr(x, "__array__") and not isinstance(x, (Array, Tracer))
            and not hasattr(x, "__cuda_array_interface__")):
        x = np.asarray(x)  # pandas frames, sklearn's arrays and the like read as NumPy
    if isinstance(x, (np.ndarray, np.generic)):
        with np.errstate(over="ignore"):  # float64 beyond float32's range is inf, as in JAX
            return to_array(x, dtype=dtypes.canonicalize_dtype(x.dtype), device=device)
    out = to_array(x, device=device)
    if isinstance(x, (list, tuple)):
        dtype = dtypes.canonicalize_dtype(out.dtype)
        if dtype != out.dtype:
            return Array(out.buffer.astype(dtype), out._device, out._weak, out._committed)
    return out


def _scalar_buffer(x, dt):
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=dt)


def _list_to_numpy(x, dtype):
    if dtype is not None:
        return np.asarray(x, dtype=dtypes.canonicalize(dtype))
    flat = np.asarray(x)
    if flat.dtype == np.float64 and not _holds_float64(x):
        return flat.astype(dtypes.default_float())
    if flat.dtype == np.int64 and not _holds_int64(x):
        return flat.astype(dtypes.default_int())
    return flat


def _holds_float64(x) -> bool:
    if isinstance(x, (list, tuple)):
        return any(_holds_float64(e) for e in x)
    return isinstance(x, (np.ndarray, np.generic, Array)) and np.dtype(x.dtype) == np.float64


def _holds_int64(x) -> bool:
    if isinstance(x, (list, tuple)):
        return any(_holds_int64(e) for e in x)
    return isinstance(x, (np.ndarray, np.generic, Array)) and np.dtype(x.dtype) == np.int64


def is_array(x) -> bool:
    """True for concrete Arrays and tracers (anything a primitive accepts as an array)."""
    return isinstance(x, (Array, Tracer))


# --- primitives ----------------------------------------------------------------------------


class Primitive:
    """One operation of flamefx, declared once with all its rules.

    Rules (all positional arrays, keyword-only hashable params, every rule returns a list):
      abstract_eval(*avals, **params) -> [ShapedArray]      shape/dtype rule; raises on misuse
      impl(*np_arrays, **params) -> [np.ndarray]            the NumPy reference
      cuda_impl(*cupy_arrays, **params) -> [cupy.ndarray]   the GPU kernel launch
      vjp(cts, primals, outs, **params) -> [ct or None]     cotangents of the inputs, written
                                                            in flamefx ops (so it is traceable);
                                                            ``cts`` entries may be None (zero)
      jvp(primals, tangents, **params) -> (outs, tangents)  optional; forward mode derives
                                                            from ``vjp`` where it is absent
      batch(axis_size, args, bdims, **params)               vmap rule; bdims are int or None
                               -> (outs, out_bdims)
    ``differentiable=False`` declares outputs without derivatives (comparisons, argmax,
    integer ops): they get zero tangents and cotangents, symbolically.
    ``fusion`` carries what jit's GPU code generator needs (e.g. a C expression).
    Optional hooks of primitives with sub-jaxprs (scan's):
      vjp_forward(primals, wanted, **params) -> (outs, residuals)   run by reverse mode in
                          place of binding: the primal op also saves what its VJP reads, for
                          the cotangents ``wanted``; ``vjp`` then gets them as ``residuals=``
      prune(eqn, used_outs) -> eqn     jit's dead-code pass: drops the outputs nobody reads
                          (``used_outs`` False) and the work for them
    """

    registry: dict[str, "Primitive"] = {}

    def __init__(self, name: str, *, abstract_eval: Callable, impl: Callable,
                 cuda_impl: Callable | None = None, vjp: Callable | None = None,
                 jvp: Callable | None = None, batch: Callable | None = None,
                 multiple_results: bool = False, differentiable: bool = True,
                 fusion: Any = None, vjp_forward: Callable | None = None,
                 prune: Callable | None = None):
        if name in Primitive.registry:
            raise FlamefxError(f"a primitive named {name!r} is already registered")
        self.name = name
        self.abstract_eval = abstract_eval
        self.impls = {"cpu": impl, "gpu": cuda_impl}
        self.vjp = vjp
        self.jvp = jvp
        self.batch = batch
        self.multiple_results = multiple_results
        self.differentiable = differentiable
        self.fusion = fusion
        self.vjp_forward = vjp_forward
        self.prune = prune
        Primitive.registry[name] = self

    def __repr__(self):
        return self.name

    def bind(self, *args, **params):
        return bind(self, *args, **params)

    def impl_for(self, platform: str) -> Callable:
        impl = self.impls[platform]
        if impl is None:
            raise FlamefxError(f"primitive {self.name!r} has no {platform} implementation")
        return impl


def abstract_eval(prim: Primitive, avals, params) -> list[ShapedArray]:
    """Runs a primitive's shape rule, turning its complaints into errors that say where."""
    try:
        return prim.abstract_eval(*avals, **params)
    except FlamefxError as e:
        shapes = ", ".join(a.str_short() for a in avals)
        raise type(e)(f"{prim.name}: {e}\n  operands: {shapes}\n  at {user_frame()}") from None


# --- traces --------------------------------------------------------------------------------


class Trace:
    """Interprets primitive applications. Subclasses: eval, jaxpr, jvp, vjp, batching."""

    def __init__(self, parent: "Trace | None"):
        self.parent = parent
        self.level = 0 if parent is None else parent.level + 1
        self.alive = True

    def process_primitive(self, prim: Primitive, args: tuple, params: dict) -> list:
        raise NotImplementedError

    def check_foreign(self, x: "Tracer") -> None:
        """A tracer of another trace must belong to an ancestor of this one."""
        t = self.parent
        while t is not None:
            if t is x._trace:
                return
            t = t.parent
        raise UnexpectedTracerError(_escaped_message(x))

    def unpack(self, args, tracer_type, fields, fill) -> list[list]:
        """Splits operands into per-field lists: this trace's tracers give their ``fields``;
        any other operand (a constant of an outer level) gives itself, then ``fill``."""
        columns = [[] for _ in fields]
        for a in args:
            if isinstance(a, tracer_type) and a._trace is self:
                for column, field in zip(columns, fields):
                    column.append(getattr(a, field))
            else:
                if isinstance(a, Tracer):
                    self.check_foreign(a)
                columns[0].append(a)
                for column in columns[1:]:
                    column.append(fill)
        return columns

    def parent_call(self, fn, *args, **kwargs):
        with set_current_trace(self.parent):
            return fn(*args, **kwargs)


def _escaped_message(x) -> str:
    return (f"a tracer ({x.aval.str_short()}) escaped the transform that created it "
            f"(was it stored in a global, a list or an attribute inside a jitted, grad or "
            f"vmap function?) and was used here:\n  at {user_frame()}\nReturn values out of "
            f"transformed functions instead of saving them on the side.")


class EvalTrace(Trace):
    """Runs primitives right away on concrete arrays (eager mode)."""

    def process_primitive(self, prim, args, params):
        for a in args:
            if isinstance(a, Tracer):
                raise UnexpectedTracerError(_escaped_message(a))
        out_avals = abstract_eval(prim, [a.aval for a in args], params)
        device, committed = _common_device(prim, args)
        bufs = [a.buffer if a._device == device else _devices.move_buffer(a.buffer, device)
                for a in args]
        outs = prim.impl_for(device.platform)(*bufs, **params)
        outs = [_wrap_output(prim, o, av, device, committed) for o, av in zip(outs, out_avals)]
        if _config.nonfinite_checks is not None:  # jax_debug_nans / jax_debug_infs
            from flamefx import nan_checks
            nan_checks.check_eager(prim, params, args, outs)
        return outs


def _wrap_output(prim, buf, aval, device, committed) -> Array:
    if not hasattr(buf, "shape") or isinstance(buf, np.generic):
        buf = np.asarray(buf)
    if buf.dtype != aval.dtype:
        buf = buf.astype(aval.dtype)
    if buf.shape != aval.shape:
        raise FlamefxError(f"internal: primitive {prim.name} produced shape {buf.shape}, its "
                           f"shape rule says {aval.shape}")
    return Array(buf, device, aval.weak_type, committed)


def _common_device(prim, args) -> tuple[_devices.Device, bool]:
    """Where a primitive runs, and whether its outputs are committed to that device.

    Committed operands decide (two committed devices are an error); uncommitted operands
    are moved there. With none committed, non-scalar operands decide, then explicitly
    placed scalars, so ``0 + x`` stays on ``x``'s device.
    """
    committed = [a for a in args if a._committed]
    if committed:
        device = committed[0]._device
        for a in committed[1:]:
            if a._device != device:
                raise FlamefxError(
                    f"{prim.name}: operands were placed on different devices ({device} and "
                    f"{a._device}); move them with flamefx.device_put first\n  at {user_frame()}")
        return device, True
    if not args:
        return _devices.default_device(), False
    shaped = [a for a in args if a.shape]
    if shaped:
        return shaped[0]._device, False
    default = _devices.default_device()
    placed = [a for a in args if a._device != default]
    strong = [a for a in placed if not a._weak]
    chosen = strong or placed or [a for a in args if not a._weak] or list(args)
    return chosen[0]._device, False


class _Context(threading.local):
    def __init__(self):
        self.trace: Trace = EvalTrace(None)


_ctx = _Context()


def current_trace() -> Trace:
    return _ctx.trace


@contextlib.contextmanager
def set_current_trace(trace: Trace):
    previous = _ctx.trace
    _ctx.trace = trace
    try:
        yield trace
    finally:
        _ctx.trace = previous


@contextlib.contextmanager
def new_trace(trace_type: type, *args, **kwargs):
    """Makes a child trace of the current one current; it dies when the block ends."""
    trace = trace_type(_ctx.trace, *args, **kwargs)
    try:
        with set_current_trace(trace):
            yield trace
    finally:
        trace.alive = False


def bind(prim: Primitive, *args, **params):
    """Applies ``prim`` to ``args`` on the current trace. Python scalars become weak arrays."""
    outs = bind_list(prim, *args, **params)
    return outs if prim.multiple_results else outs[0]


def bind_list(prim: Primitive, *args, **params) -> list:
    """Like ``bind`` but always returns the list of outputs (what traces work with)."""
    args = tuple(a if isinstance(a, (Array, Tracer)) else to_array(a) for a in args)
    return _ctx.trace.process_primitive(prim, args, params)


# --- tracers -------------------------------------------------------------------------------


class Tracer(ArrayMethods):
    """A stand-in for an array while a transform runs; subclasses carry what they need."""

    __slots__ = ("_trace",)

    @property
    def aval(self) -> ShapedArray:
        raise NotImplementedError

    @property
    def shape(self):
        return self.aval.shape

    @property
    def dtype(self):
        return self.aval.dtype

    @property
    def weak_type(self):
        return self.aval.weak_type

    def to_concrete(self):
        """The concrete Array behind this tracer, or None if it is abstract."""
        return None

    def _concrete(self, what: str):
        value = self.to_concrete()
        if value is None:
            raise ConcretizationError(
                f"a traced array ({self.aval.str_short()}) was used as a Python {what}, but "
                f"under jit (and inside lax control flow) its value is not known while the "
                f"function is traced.\n  at {user_frame()}\nUse flamefx.lax.cond / "
                f"flamefx.numpy.where for value-dependent branches, or pass the argument as "
                f"static (jit's static_argnums / static_argnames).")
        return value

    def __bool__(self):
        return bool(self._concrete("bool"))

    def __int__(self):
        return int(self._concrete("int"))

    def __float__(self):
        return float(self._concrete("float"))

    def __index__(self):
        return self._concrete("index").__index__()

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._concrete("NumPy array"), dtype=dtype)

    def item(self):
        return self._concrete("scalar").item()

    def tolist(self):
        return self._concrete("list").tolist()

    @property
    def device(self):
        value = self.to_concrete()
        return value.device if value is not None else _devices.default_device()

    def __repr__(self):
        return f"Traced<{self.aval.str_short()}>({type(self._trace).__name__})"


def get_aval(x) -> ShapedArray:
    if isinstance(x, (Array, Tracer)):
        return x.aval
    if isinstance(getattr(x, "aval", None), ShapedArray):  # flamefx.ShapeDtypeStruct
        return x.aval
    if isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic):
        return ShapedArray((), dtypes.dtype_of_python_scalar(x), weak_type=True)
    arr = np.asarray(x)
    return ShapedArray(arr.shape, dtypes.canonicalize(arr.dtype))


def ensure_array(x) -> "Array | Tracer":
    return x if isinstance(x, (Array, Tracer)) else to_array(x)
