"""The array API standard's inspection namespace: ``fnp.__array_namespace_info__()``.

It answers what the library can do (capabilities), where arrays go (devices) and which
dtypes exist, as JAX's ``jax.numpy.__array_namespace_info__()`` does.

>>> import flamefx.numpy as fnp
>>> info = fnp.__array_namespace_info__()
>>> info.default_dtypes()["indexing"]
dtype('int32')
"""

from __future__ import annotations

import numpy as np

from flamefx import devices as _devices
from flamefx import dtypes
from flamefx.errors import FlamefxValueError

__array_api_version__ = "2023.12"

_KINDS = {
    "bool": ("bool",),
    "signed integer": ("int8", "int16", "int32", "int64"),
    "unsigned integer": ("uint8", "uint16", "uint32", "uint64"),
    "real floating": ("float32", "float64"),
    "complex floating": ("complex64", "complex128"),
}
_KINDS["integral"] = _KINDS["signed integer"] + _KINDS["unsigned integer"]
_KINDS["numeric"] = _KINDS["integral"] + _KINDS["real floating"] + _KINDS["complex floating"]


def _available(name: str) -> np.dtype | None:
    """The dtype called ``name`` if flamefx has it under the current x64 setting."""
    dtype = getattr(dtypes, "bool_" if name == "bool" else name, None)
    if dtype is None:
        return None
    return dtype if dtypes.canonicalize_dtype(dtype) == dtype else None  # x64 off: no 64-bit


class ArrayNamespaceInfo:
    """What ``__array_namespace_info__()`` returns (the array API's inspection object).

    >>> ArrayNamespaceInfo().capabilities()["max dimensions"]
    64
    """

    __module__ = "flamefx.numpy"

    def capabilities(self) -> dict:
        """Boolean-mask indexing and value-dependent shapes work only outside ``jit``, so
        (as JAX does) flamefx does not claim them."""
        return {"boolean indexing": False, "data-dependent shapes": False,
                "max dimensions": 64}

    def default_device(self) -> _devices.Device:
        """The device new arrays go to."""
        return _devices.default_device()

    def devices(self) -> list:
        """Every device flamefx can place arrays on (CPUs, then GPUs if any)."""
        found = list(_devices.devices("cpu"))
        if _devices.cupy() is not None:
            found += _devices.devices("gpu")
        return found

    def default_dtypes(self, *, device=None) -> dict:
        """The dtypes of Python floats, complex numbers, ints and of indices."""
        del device  # every device has the same defaults
        complex_dtype = _available("complex128" if dtypes.default_float() == dtypes.float64
                                   else "complex64")
        out = {"real floating": dtypes.default_float(), "integral": dtypes.default_int(),
               "indexing": dtypes.default_int()}
        if complex_dtype is not None:
            out["complex floating"] = complex_dtype
        return out

    def dtypes(self, *, device=None, kind=None) -> dict:
        """The dtypes (name -> dtype) of ``kind``: None (all), a kind name or a tuple of them.

        >>> sorted(ArrayNamespaceInfo().dtypes(kind="bool"))
        ['bool']
        """
        del device
        if kind is None:
            names = _KINDS["bool"] + _KINDS["numeric"]
        else:
            names = ()
            for k in (kind,) if isinstance(kind, str) else tuple(kind):
                if k not in _KINDS:
                    raise FlamefxValueError(f"unknown dtype kind {k!r}; use one of "
                                            f"{sorted(_KINDS)}")
                names += _KINDS[k]
        found = {name: _available(name) for name in names}
        return {name: dtype for name, dtype in found.items() if dtype is not None}


def __array_namespace_info__() -> ArrayNamespaceInfo:
    """The array API inspection object of flamefx.numpy.

    >>> __array_namespace_info__().default_dtypes()["real floating"]
    dtype('float32')
    """
    return ArrayNamespaceInfo()
