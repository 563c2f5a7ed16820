"""dtype objects as JAX has them: callable scalar types, abstract types and dtype queries.

``fnp.float32`` is a class like ``jnp.float32``: calling it makes a flamefx Array of that
dtype, and it works wherever a dtype does (``fnp.zeros(3, fnp.float32)``,
``x.dtype == fnp.float32``, ``np.dtype(fnp.float32)``), because NumPy reads its ``dtype``
attribute. The abstract types (``fnp.floating``, ``fnp.integer``...) are NumPy's own.

>>> import flamefx.numpy as fnp
>>> fnp.float32(1.5).dtype == fnp.float32
True
>>> fnp.issubdtype(fnp.bfloat16, fnp.floating)
True
"""

from __future__ import annotations

import builtins

import numpy as np

from flamefx import dtypes
from flamefx.errors import FlamefxTypeError, FlamefxValueError


class _ScalarMeta(type):
    """The metaclass of flamefx's scalar types: a callable stand-in for a NumPy dtype."""

    dtype: np.dtype

    def __hash__(cls) -> int:
        return hash(cls.dtype.type)

    def __eq__(cls, other) -> bool:
        return cls is other or cls.dtype.type == other

    def __ne__(cls, other) -> bool:
        return not cls == other

    def __call__(cls, x):
        from flamefx.numpy.creation import asarray
        return asarray(x, dtype=cls.dtype)

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, cls.dtype.type)

    def __repr__(cls) -> str:
        return f"<class 'flamefx.numpy.{cls.__name__}'>"


def _scalar_type(dtype: np.dtype, name: str | None = None) -> _ScalarMeta:
    name = name or dtype.name
    return _ScalarMeta(name, (object,), {
        "dtype": dtype, "__module__": "flamefx.numpy",
        "__doc__": f"The {dtype.name} scalar type: ``{name}(x)`` is ``asarray(x, {name})``."})


bool_ = _scalar_type(dtypes.bool_, "bool_")
int8 = _scalar_type(dtypes.int8)
int16 = _scalar_type(dtypes.int16)
int32 = _scalar_type(dtypes.int32)
int64 = _scalar_type(dtypes.int64)
uint8 = _scalar_type(dtypes.uint8)
uint16 = _scalar_type(dtypes.uint16)
uint32 = _scalar_type(dtypes.uint32)
uint64 = _scalar_type(dtypes.uint64)
bfloat16 = _scalar_type(dtypes.bfloat16)
float16 = _scalar_type(dtypes.float16)
float32 = _scalar_type(dtypes.float32)
float64 = _scalar_type(dtypes.float64)
complex64 = _scalar_type(dtypes.complex64)
complex128 = _scalar_type(dtypes.complex128)

# JAX's other spellings of the same types.
bool = bool_  # noqa: A001  (the array API's name)
single, double = float32, float64
csingle, cdouble = complex64, complex128
int_, uint, float_, complex_ = int64, uint64, float64, complex128

# NumPy's abstract scalar types, as JAX re-exports them.
generic = np.generic
number = np.number
inexact = np.inexact
floating = np.floating
complexfloating = np.complexfloating
integer = np.integer
signedinteger = np.signedinteger
unsignedinteger = np.unsignedinteger

dtype = np.dtype
finfo = dtypes.finfo


def iinfo(int_type):
    """Machine limits of an integer dtype (limits as Python ints).

    >>> iinfo(int8).max
    127
    """
    return np.iinfo(_as_dtype(int_type))


def _as_dtype(x) -> np.dtype:
    """The dtype of a dtype-like, a scalar type, an array, or a Python scalar."""
    if x is float or x is int or x is complex or x is builtins.bool:
        return dtypes.canonicalize(x)
    if isinstance(x, (builtins.bool, int, float, complex)):
        return dtypes.dtype_of_python_scalar(x)
    if hasattr(x, "dtype") and not isinstance(x, (type, np.dtype)):
        return np.dtype(x.dtype)
    return np.dtype(x)

# bfloat16's NumPy type is not under np.floating; JAX places it there, and so does flamefx.
_ABSTRACT_OF_BFLOAT16 = frozenset({np.floating, np.inexact, np.number, np.generic})


def _is_bfloat16(x) -> builtins.bool:
    if isinstance(x, type) and issubclass(x, np.generic):
        return x is dtypes.bfloat16.type
    try:
        return np.dtype(x) == dtypes.bfloat16
    except TypeError:
        return False


def issubdtype(arg1, arg2) -> builtins.bool:
    """Whether ``arg1``'s type is ``arg2`` or under it in NumPy's type hierarchy (bfloat16
    counts as floating, as in JAX).

    >>> issubdtype(float32, inexact), issubdtype(int32, floating)
    (True, False)
    """
    if isinstance(arg1, _ScalarMeta):
        arg1 = arg1.dtype
    if isinstance(arg2, _ScalarMeta):
        arg2 = arg2.dtype.type
    if _is_bfloat16(arg1):
        return arg2 in _ABSTRACT_OF_BFLOAT16 or _is_bfloat16(arg2)
    return builtins.bool(np.issubdtype(arg1, arg2))


_KINDS = {
    "bool": lambda d: d == dtypes.bool_,
    "signed integer": lambda d: dtypes.is_int(d) and d.kind == "i",
    "unsigned integer": lambda d: dtypes.is_int(d) and d.kind == "u",
    "integral": dtypes.is_int,
    "real floating": dtypes.is_float,
    "complex floating": dtypes.is_complex,
    "numeric": lambda d: d != dtypes.bool_,
}


def isdtype(dtype, kind) -> builtins.bool:
    """The array API's dtype test: ``kind`` is a dtype, one of ``"bool"``, ``"signed
    integer"``, ``"unsigned integer"``, ``"integral"``, ``"real floating"``, ``"complex
    floating"``, ``"numeric"``, or a tuple of those.

    >>> isdtype(float32, "real floating"), isdtype(int8, ("integral", "bool"))
    (True, True)
    """
    dt = dtypes.canonicalize(dtype)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if isinstance(k, str):
            if k not in _KINDS:
                raise FlamefxValueError(f"isdtype: unknown kind {k!r}; the array API's kinds "
                                        f"are {', '.join(repr(n) for n in _KINDS)}")
            if _KINDS[k](dt):
                return True
        elif dtypes.canonicalize(k) == dt:
            return True
    return False


def can_cast(from_, to, casting: str = "safe") -> builtins.bool:
    """Whether NumPy's ``casting`` rule allows ``from_`` (a dtype or an array) to ``to``.

    >>> can_cast(int8, float32), can_cast(float32, int32)
    (True, False)
    """
    if isinstance(from_, (builtins.bool, int, float, complex)):
        raise FlamefxTypeError("can_cast takes a dtype or an array, not a Python scalar (as "
                               "NumPy 2 and JAX)")
    return builtins.bool(np.can_cast(_as_dtype(from_), _as_dtype(to), casting))


def isscalar(element) -> builtins.bool:
    """True for Python and NumPy scalars and for 0-d arrays (JAX counts 0-d arrays too).

    >>> isscalar(1.0), isscalar(float32(1.0)), isscalar([1.0])
    (True, True, False)
    """
    if isinstance(element, (builtins.bool, int, float, complex, np.generic)):
        return True
    from flamefx.core import Array, Tracer
    return isinstance(element, (Array, Tracer)) and element.ndim == 0
