"""dtype objects and promotion: JAX's lattice (complex included) as a table taken from JAX,
the callable scalar types (``fnp.float32(1.5)``), the abstract types and the dtype queries.
"""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx.errors import FlamefxTypeError, FlamefxValueError

# jnp.result_type with jax_enable_x64 on (jax 0.10.2); a trailing * marks a weak type. Rows and
# columns: the dtypes, then Python int (i*), float (f*) and complex (c*) scalars.
JAX_PROMOTION_X64 = """
          b    i8    u8   i32   i64   u64  bf16   f16   f32   f64   c64  c128    i*    f*    c*
    b     b    i8    u8   i32   i64   u64  bf16   f16   f32   f64   c64  c128  i64*  f64* c128*
   i8    i8    i8   i16   i32   i64  f64*  bf16   f16   f32   f64   c64  c128    i8  f64* c128*
   u8    u8   i16    u8   i32   i64   u64  bf16   f16   f32   f64   c64  c128    u8  f64* c128*
  i32   i32   i32   i32   i32   i64  f64*  bf16   f16   f32   f64   c64  c128   i32  f64* c128*
  i64   i64   i64   i64   i64   i64  f64*  bf16   f16   f32   f64   c64  c128   i64  f64* c128*
  u64   u64  f64*   u64  f64*  f64*   u64  bf16   f16   f32   f64   c64  c128   u64  f64* c128*
 bf16  bf16  bf16  bf16  bf16  bf16  bf16  bf16   f32   f32   f64   c64  c128  bf16  bf16   c64
  f16   f16   f16   f16   f16   f16   f16   f32   f16   f32   f64   c64  c128   f16   f16   c64
  f32   f32   f32   f32   f32   f32   f32   f32   f32   f32   f64   c64  c128   f32   f32   c64
  f64   f64   f64   f64   f64   f64   f64   f64   f64   f64   f64  c128  c128   f64   f64  c128
  c64   c64   c64   c64   c64   c64   c64   c64   c64   c64  c128   c64  c128   c64   c64   c64
 c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128  c128
   i*  i64*    i8    u8   i32   i64   u64  bf16   f16   f32   f64   c64  c128  i64*  f64* c128*
   f*  f64*  f64*  f64*  f64*  f64*  f64*  bf16   f16   f32   f64   c64  c128  f64*  f64* c128*
   c* c128* c128* c128* c128* c128* c128*   c64   c64   c64  c128   c64  c128 c128* c128* c128*
"""

_SHORT = {"b": "bool", "i8": "int8", "u8": "uint8", "i16": "int16", "i32": "int32",
          "i64": "int64", "u64": "uint64", "bf16": "bfloat16", "f16": "float16",
          "f32": "float32", "f64": "float64", "c64": "complex64", "c128": "complex128"}
_WEAK_OPERAND = {"i*": "int64", "f*": "float64", "c*": "complex128"}


def _promotion_cases():
    header, *rows = [line.split() for line in JAX_PROMOTION_X64.strip().splitlines()]
    for row in rows:
        for column, result in zip(header, row[1:]):
            yield row[0], column, result


def _typed(code):
    if code in _WEAK_OPERAND:
        return np.dtype(_WEAK_OPERAND[code]), True
    return np.dtype(dtypes.canonicalize(_SHORT[code])), False


def test_promotion_lattice_matches_jax(x64):
    for a, b, expected in _promotion_cases():
        dtype, weak = dtypes.result_type(_typed(a), _typed(b))
        assert (str(dtype), weak) == (_SHORT[expected.rstrip("*")], expected.endswith("*")), \
            (a, b)


def test_complex_promotion_without_x64():
    z = fnp.zeros(3, fnp.complex64)
    assert (z + 1.0).dtype == fnp.complex64 and (z + 1j).dtype == fnp.complex64
    assert (fnp.ones(2, fnp.float32) + 1j).dtype == fnp.complex64  # Python complex is weak
    assert (fnp.ones(2, fnp.float32) + fnp.zeros(2, fnp.complex64)).dtype == fnp.complex64
    assert (fnp.ones(2, fnp.int32) * 2j).dtype == fnp.complex64
    assert fnp.array(1 + 2j).dtype == fnp.complex64 and not fnp.array(1 + 2j).weak_type
    assert fnp.asarray(np.array([1j])).dtype == fnp.complex64  # NumPy complex128, x64 off
    assert fnp.result_type(fnp.float64, fnp.complex64) == fnp.complex128
    assert fnp.promote_types(fnp.bfloat16, fnp.complex64) == fnp.complex64
    assert fnp.ones(2).astype(fnp.complex64).tolist() == [1 + 0j, 1 + 0j]


@pytest.mark.parametrize("name", ["bool_", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                  "uint32", "uint64", "bfloat16", "float16", "float32",
                                  "float64", "complex64", "complex128"])
def test_scalar_types_make_arrays_and_act_as_dtypes(name):
    scalar_type = getattr(fnp, name)
    dtype = np.dtype(scalar_type)
    assert dtype == getattr(dtypes, name)
    x = scalar_type(1)
    assert isinstance(x, flamefx.Array) and x.dtype == dtype and x.shape == ()
    assert x.dtype == scalar_type and scalar_type == x.dtype
    assert fnp.zeros(3, scalar_type).dtype == dtype
    assert fnp.ones(2).astype(scalar_type).dtype == dtype
    assert scalar_type(np.arange(3)).shape == (3,)
    assert isinstance(np.ones((), dtype)[()], scalar_type)
    assert scalar_type == dtype.type and hash(scalar_type) == hash(dtype.type)


def test_scalar_types_convert_values():
    assert fnp.float32(1.5).item() == 1.5
    assert fnp.int32(2.7).item() == 2
    assert fnp.bool_(3).item() is True
    assert fnp.bfloat16(1.3).dtype == fnp.bfloat16
    assert fnp.float32([1, 2]).tolist() == [1.0, 2.0]
    assert fnp.complex64(2).item() == 2 + 0j
    assert flamefx.jit(lambda x: fnp.float32(x) * 2)(fnp.int32(3)).item() == 6.0
    assert fnp.bool is fnp.bool_ and fnp.single is fnp.float32 and fnp.cdouble is fnp.complex128
    assert fnp.dtype is np.dtype and fnp.dtype(fnp.float16) == np.float16


def test_issubdtype_and_abstract_types():
    assert fnp.issubdtype(fnp.float32, fnp.floating) and fnp.issubdtype(fnp.float32, fnp.inexact)
    assert fnp.issubdtype(fnp.bfloat16, fnp.floating)  # as JAX (NumPy says no)
    assert fnp.issubdtype(fnp.bfloat16, fnp.number) and fnp.issubdtype("bfloat16", fnp.inexact)
    assert not fnp.issubdtype(fnp.bfloat16, fnp.integer)
    assert fnp.issubdtype(fnp.bfloat16, fnp.bfloat16) and not fnp.issubdtype(fnp.float32,
                                                                               fnp.bfloat16)
    assert fnp.issubdtype(fnp.complex64, fnp.complexfloating)
    assert not fnp.issubdtype(fnp.complex64, fnp.floating)
    assert fnp.issubdtype(fnp.int8, fnp.signedinteger) and fnp.issubdtype(fnp.uint8,
                                                                          fnp.unsignedinteger)
    assert fnp.issubdtype(fnp.ones(2).dtype, fnp.float32)
    assert fnp.issubdtype(np.int32, fnp.integer) and fnp.issubdtype(fnp.bool_, fnp.generic)
    assert not fnp.issubdtype(fnp.int32, fnp.inexact)


def test_isdtype_takes_the_array_api_kinds():
    assert fnp.isdtype(fnp.float32, "real floating")
    assert fnp.isdtype(fnp.bfloat16, "real floating")
    assert fnp.isdtype(fnp.complex64, "complex floating")
    assert not fnp.isdtype(fnp.complex64, "real floating")
    assert fnp.isdtype(fnp.int8, ("integral", "bool")) and fnp.isdtype(fnp.bool_, "bool")
    assert fnp.isdtype(fnp.uint8, "unsigned integer") and not fnp.isdtype(fnp.uint8,
                                                                          "signed integer")
    assert fnp.isdtype(fnp.float16, "numeric") and not fnp.isdtype(fnp.bool_, "numeric")
    assert fnp.isdtype(fnp.float32, fnp.float32) and not fnp.isdtype(fnp.float32, fnp.float64)
    with pytest.raises(FlamefxValueError, match="unknown kind"):
        fnp.isdtype(fnp.float32, "floating")


def test_can_cast_isscalar_and_complex_tests():
    assert fnp.can_cast(fnp.int8, fnp.float32) and not fnp.can_cast(fnp.float32, fnp.int32)
    assert not fnp.can_cast(fnp.int32, fnp.float32)  # NumPy's safe rule, as JAX
    assert fnp.can_cast(fnp.ones(2), fnp.float64) and fnp.can_cast(fnp.float32, fnp.complex64)
    assert fnp.can_cast(fnp.float32, fnp.int32, casting="unsafe")
    with pytest.raises(FlamefxTypeError, match="Python scalar"):
        fnp.can_cast(1.0, fnp.int32)
    assert fnp.isscalar(1.0) and fnp.isscalar(np.float32(1)) and fnp.isscalar(fnp.ones(()))
    assert not fnp.isscalar(fnp.ones(2)) and not fnp.isscalar([1.0])
    assert fnp.iscomplexobj(1j) and fnp.iscomplexobj(fnp.zeros(2, fnp.complex64))
    assert not fnp.iscomplexobj(fnp.ones(2)) and fnp.isrealobj(1.0) and not fnp.iscomplexobj(None)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64"])
def test_finfo_gives_python_floats(name):
    info, reference = fnp.finfo(getattr(fnp, name)), np.finfo(dtypes.canonicalize(name))
    for field in ("eps", "max", "min", "tiny", "smallest_normal", "resolution", "epsneg"):
        value = getattr(info, field)
        assert type(value) is float and value == float(getattr(reference, field)), field
    assert info.bits == reference.bits and info.dtype == np.dtype(dtypes.canonicalize(name))
    assert fnp.finfo(fnp.ones(2, dtypes.canonicalize(name))).eps == info.eps


def test_finfo_of_complex_and_iinfo():
    assert fnp.finfo(fnp.complex64).dtype == np.float32
    assert fnp.finfo(fnp.complex128).eps == float(np.finfo(np.float64).eps)
    assert fnp.iinfo(fnp.int8).max == 127 and type(fnp.iinfo(fnp.uint16).max) is int
    with pytest.raises(FlamefxTypeError, match="iinfo"):
        fnp.finfo(fnp.int32)
