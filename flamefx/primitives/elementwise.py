"""Elementwise primitives: unary math, binary arithmetic, comparisons, bit ops, select, cast.

Each primitive is declared once through ``declare_elementwise`` (``_unary``, ``_binary`` and
``_compare`` wrap it) that wires its shape rule, NumPy impl, CUDA kernel (built from the same C
expression jit fuses), derivative, and the shared elementwise batching rule. Derivatives are
given as *partials* written in lax-level ops, so one table serves both the JVP
(``t * partial``) and the VJP (``ct * partial``) and stays traceable to any order.

Complex operands (where the kind allows them) follow JAX: a holomorphic op's partial is its
complex derivative, and the VJP multiplies by it without conjugation (JAX's cotangents are
transposes, not adjoints). On the GPU complex operands run CuPy's own ufuncs, unfused
(``cuda_elementwise.launch_complex``); jit's fusion leaves complex equations alone.

>>> import numpy as np
>>> exp(np.float64(0.0)).item()
1.0
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from flamefx import core, dtypes
from flamefx.core import Primitive, ShapedArray
from flamefx.errors import FlamefxTypeError
from flamefx.kernels import cuda_elementwise, erf_inv as erf_inv_kernels, fma as fma_kernels
from flamefx.kernels.cuda_elementwise import Elementwise

_HALF = (dtypes.float16, dtypes.bfloat16)

# Which operand dtypes a primitive accepts; named so error messages can say it.
FLOAT = ("floating-point", dtypes.FLOATS)
INEXACT = ("floating-point or complex", dtypes.INEXACT)
NUMERIC = ("real numeric (integer or floating-point)", dtypes.FLOATS | dtypes.INTS)
NUMBER = ("numeric (integer, floating-point or complex)", dtypes.INEXACT | dtypes.INTS)
INT = ("integer", dtypes.INTS)
INT_OR_BOOL = ("integer or bool", dtypes.INTS | {dtypes.bool_})
ORDERED = ("real (integer, floating-point or bool)", dtypes.FLOATS | dtypes.INTS | {dtypes.bool_})
ANY = ("any", dtypes.INEXACT | dtypes.INTS | {dtypes.bool_})


# --- shape rules -----------------------------------------------------------------------------


def _check_kind(avals, kind, what="operand"):
    label, allowed = kind
    for aval in avals:
        if aval.dtype not in allowed:
            raise FlamefxTypeError(f"{what} must be {label}, got {aval.dtype}")


def _check_same_type(avals):
    first = avals[0]
    for aval in avals[1:]:
        if aval.shape != first.shape:
            raise FlamefxTypeError(
                f"operands must have equal shapes, got {first.shape} and {aval.shape} "
                f"(primitives never broadcast: use flamefx.numpy, or broadcast_in_dim first)")
        if aval.dtype != first.dtype:
            raise FlamefxTypeError(
                f"operands must have equal dtypes, got {first.dtype} and {aval.dtype} "
                f"(primitives never promote: use flamefx.numpy, or convert_element_type first)")


def same_type_rule(kind, out_dtype=None):
    """Shape rule of an op on equal-typed operands; output dtype = input's or ``out_dtype``."""

    def abstract_eval(*avals, **params):
        _check_kind(avals, kind)
        _check_same_type(avals)
        weak = all(a.weak_type for a in avals)
        if out_dtype is not None:
            return [ShapedArray(avals[0].shape, out_dtype, False)]
        return [ShapedArray(avals[0].shape, avals[0].dtype, weak)]

    return abstract_eval


# --- NumPy impls -----------------------------------------------------------------------------


def _numpy_impl(numpy_fn):
    """Runs ``numpy_fn`` with float16/bfloat16 operands computed in float32, cast back."""

    def impl(*arrays, **params):
        dtype = arrays[-1].dtype
        if dtype in _HALF:
            arrays = [a.astype(np.float32) if a.dtype in _HALF else a for a in arrays]
        with np.errstate(all="ignore"):
            out = np.asarray(numpy_fn(*arrays, **params))
        if dtype in _HALF and out.dtype == np.float32:
            out = out.astype(dtype)
        return [out]

    return impl


def _cuda_impl(name, fusion, out_dtype_of):
    def cuda_impl(*arrays, **params):
        if any(a.dtype.kind == "c" for a in arrays):  # complex: CuPy's ufuncs, unfused
            return [cuda_elementwise.launch_complex(name, arrays, **params)]
        out_dtype = out_dtype_of(arrays, params)
        return [cuda_elementwise.launch(name, fusion, arrays, out_dtype, **params)]

    return cuda_impl


def _same_dtype(arrays, params):
    return arrays[-1].dtype


def _bool_dtype(arrays, params):
    return dtypes.bool_


# --- derivatives and batching shared by every elementwise primitive ------------------------


def _all_float(xs) -> bool:
    """All operands float or complex: the ones with derivatives."""
    return all(dtypes.is_inexact(core.get_aval(x).dtype) for x in xs)


def _vjp_from_partials(partials):
    def vjp(cts, primals, outs, **params):
        ct = cts[0]
        if ct is None or not _all_float(primals):
            return [None] * len(primals)
        return [None if d is None else mul(ct, d)
                for d in partials(*primals, outs[0], **params)]

    return vjp


def _jvp_from_partials(prim, partials):
    def jvp(primals, tangents, **params):
        out = prim.bind(*primals, **params)
        if all(t is None for t in tangents) or not _all_float(primals):
            return [out], [None]
        terms = [mul(t, d) for t, d in zip(tangents, partials(*primals, out, **params))
                 if t is not None and d is not None]
        tangent = None
        for term in terms:
            tangent = term if tangent is None else add(tangent, term)
        return [out], [tangent]

    return jvp


def batch_rule(prim):
    """vmap of an elementwise op: align every operand's batch axis with the first one's."""

    def batch(axis_size, args, bdims, **params):
        from flamefx.transforms import batching
        target = next(b for b in bdims if b is not None)
        aligned = []
        for x, bdim in zip(args, bdims):
            if bdim is None:
                x = batching.broadcast_batch(x, axis_size, target)
            elif bdim != target:
                x = batching.move_axis(x, bdim, target)
            aligned.append(x)
        return [prim.bind(*aligned, **params)], [target]

    return batch


def declare_elementwise(name, abstract_eval, numpy_fn, *, fusion=None, cuda_impl=None,
                        partials=None, vjp=None, jvp=None, out_dtype_of=_same_dtype):
    """Registers one elementwise primitive with the family's NumPy wrapper and batching rule.

    ``numpy_fn`` computes the result from NumPy arrays (float16/bfloat16 in float32);
    ``cuda_impl`` defaults to the kernel built from ``fusion``, the C expression jit fuses.
    ``partials(*primals, out)`` gives both the JVP and the VJP; or pass ``vjp``/``jvp``.

    >>> exp_p.batch is not None and exp_p.fusion.expr   # exp_p = _unary("exp", ...) uses it
    'exp(x0)'
    """
    differentiable = partials is not None or vjp is not None
    if partials is not None:
        vjp = _vjp_from_partials(partials)
    if cuda_impl is None:
        cuda_impl = _cuda_impl(name, fusion, out_dtype_of)
    prim = Primitive(name, abstract_eval=abstract_eval, impl=_numpy_impl(numpy_fn),
                     cuda_impl=cuda_impl, vjp=vjp, differentiable=differentiable, fusion=fusion)
    prim.jvp = jvp or (_jvp_from_partials(prim, partials) if partials is not None else None)
    prim.batch = batch_rule(prim)
    return prim


def _unary(name, numpy_fn, expr, *, kind=FLOAT, partial=None, int_expr=None, bool_expr=None):
    partials = None if partial is None else (lambda x, out, **p: [partial(x, out, **p)])
    return declare_elementwise(
        name, same_type_rule(kind), numpy_fn,
        fusion=Elementwise(expr, int_expr=int_expr, bool_expr=bool_expr), partials=partials)


def _binary(name, numpy_fn, expr, *, kind=NUMERIC, partials=None, int_expr=None,
            bool_expr=None, vjp=None, jvp=None):
    return declare_elementwise(name, same_type_rule(kind), numpy_fn,
                               fusion=Elementwise(expr, int_expr=int_expr, bool_expr=bool_expr),
                               partials=partials, vjp=vjp, jvp=jvp)


def _compare(name, numpy_fn, c_op, kind=ORDERED):
    return declare_elementwise(name, same_type_rule(kind, out_dtype=dtypes.bool_), numpy_fn,
                               fusion=Elementwise(f"(x0 {c_op} x1)"), out_dtype_of=_bool_dtype)


def full_like(x, value):
    """A constant with ``x``'s shape, dtype and weak type (exact in float64).

    >>> full_like(np.zeros(2), 0.5).tolist()
    [0.5, 0.5]
    """
    aval = core.get_aval(x)
    # On x's device: a broadcast constant is not 0-d, so it would not follow x's device.
    device = x.device if core.is_array(x) else None
    scalar = core.to_array(np.asarray(value, aval.dtype), device=device, weak=aval.weak_type)
    if not aval.shape:
        return scalar
    from flamefx.primitives import structural
    return structural.broadcast_in_dim(scalar, aval.shape, ())


def _float_of_bool(b, like):
    return convert_element_type(b, core.get_aval(like).dtype)


# --- NumPy references that NumPy itself lacks --------------------------------------------------

def _numpy_expm1(x):
    if not dtypes.is_complex(x.dtype):
        return np.expm1(x)
    # NumPy's complex expm1 misses C99's special values; exp(z) - 1 has them. Near 0 the
    # parts are written out to keep small z's digits: Re = expm1(a) cos b - 2 sin(b/2)^2,
    # Im = e^a sin b.
    a, b = x.real, x.imag
    half = np.sin(b / 2)
    small = (np.expm1(a) * np.cos(b) - 2 * half * half) + 1j * (np.exp(a) * np.sin(b))
    return np.where(np.abs(x) < 1, small, np.exp(x) - 1).astype(x.dtype)


def _numpy_round(x):
    """Rounds half away from zero (lax.round's default; NumPy rounds half to even)."""
    whole = np.trunc(x)
    return np.where(np.abs(x - whole) >= 0.5, whole + np.sign(x), whole)


def _numpy_logistic(x):
    if dtypes.is_complex(x.dtype):
        return 1 / (1 + np.exp(-x))
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _numpy_div(x, y):
    if dtypes.is_inexact(x.dtype):
        return np.divide(x, y)
    quotient = np.floor_divide(x, y)
    # C and lax divide integers toward zero; floor_divide rounds toward -inf.
    fix = (np.remainder(x, y) != 0) & ((x < 0) != (y < 0))
    return np.where(fix, quotient + 1, quotient).astype(x.dtype)


def _numpy_shift(op):
    def shift(x, s):
        bits = x.dtype.itemsize * 8
        unsigned = x.view(f"u{x.dtype.itemsize}")
        in_range = (s >= 0) & (s < bits)
        shift_by = np.where(in_range, s, 0).astype(unsigned.dtype)
        out = np.where(in_range, op(unsigned, shift_by), 0).astype(unsigned.dtype)
        return out.view(x.dtype)

    return shift


# --- abs: real output for complex operands, so its derivative is written out ---------------


def _abs_rule(x):
    _check_kind([x], NUMBER)
    return [ShapedArray(x.shape, dtypes.real_dtype(x.dtype), x.weak_type)]


def _abs_dtype(arrays, params):
    return dtypes.real_dtype(arrays[0].dtype)


def _abs_direction(x, out):
    """conj(x) / |x| (0 where x is 0): d|x| = Re(conj(x) / |x| * dx) for complex x."""
    from flamefx.primitives import complex_ops
    safe = select_n(eq(out, full_like(out, 0)), out, full_like(out, 1))
    return div(complex_ops.conj(x), convert_element_type(safe, core.get_aval(x).dtype))


def _abs_vjp(cts, primals, outs):
    ct, x = cts[0], primals[0]
    if ct is None or not _all_float(primals):
        return [None]
    dtype = core.get_aval(x).dtype
    if not dtypes.is_complex(dtype):
        return [mul(ct, sign(x))]
    return [mul(convert_element_type(ct, dtype), _abs_direction(x, outs[0]))]


def _abs_jvp(primals, tangents):
    x, t = primals[0], tangents[0]
    out = abs(x)
    if t is None or not _all_float(primals):
        return [out], [None]
    if not dtypes.is_complex(core.get_aval(x).dtype):
        return [out], [mul(t, sign(x))]
    from flamefx.primitives import complex_ops
    return [out], [complex_ops.real(mul(t, _abs_direction(x, out)))]


# --- unary math ------------------------------------------------------------------------------

neg_p = _unary("neg", np.negative, "(-x0)", kind=NUMBER, partial=lambda x, out: full_like(x, -1))
exp_p = _unary("exp", np.exp, "exp(x0)", kind=INEXACT, partial=lambda x, out: out)
log_p = _unary("log", np.log, "log(x0)", kind=INEXACT,
               partial=lambda x, out: div(full_like(x, 1), x))
log1p_p = _unary("log1p", np.log1p, "log1p(x0)", kind=INEXACT,
                 partial=lambda x, out: div(full_like(x, 1), add(x, full_like(x, 1))))
expm1_p = _unary("expm1", _numpy_expm1, "expm1(x0)", kind=INEXACT,
                 partial=lambda x, out: add(out, full_like(x, 1)))
sin_p = _unary("sin", np.sin, "sin(x0)", kind=INEXACT, partial=lambda x, out: cos(x))
cos_p = _unary("cos", np.cos, "cos(x0)", kind=INEXACT, partial=lambda x, out: neg(sin(x)))
tan_p = _unary("tan", np.tan, "tan(x0)", kind=INEXACT,
               partial=lambda x, out: add(full_like(x, 1), mul(out, out)))
asin_p = _unary("asin", np.arcsin, "asin(x0)", kind=INEXACT,
                partial=lambda x, out: rsqrt(sub(full_like(x, 1), mul(x, x))))
acos_p = _unary("acos", np.arccos, "acos(x0)", kind=INEXACT,
                partial=lambda x, out: neg(rsqrt(sub(full_like(x, 1), mul(x, x)))))
atan_p = _unary("atan", np.arctan, "atan(x0)", kind=INEXACT,
                partial=lambda x, out: div(full_like(x, 1), add(full_like(x, 1), mul(x, x))))
asinh_p = _unary("asinh", np.arcsinh, "asinh(x0)", kind=INEXACT,
                 partial=lambda x, out: rsqrt(add(mul(x, x), full_like(x, 1))))
# 1 / (sqrt(x - 1) sqrt(x + 1)): exact near x = 1, where the derivative blows up, and the
# principal branch for complex x (JAX's rsqrt(x * x - 1) flips sign where Re x < 0).
acosh_p = _unary("acosh", np.arccosh, "acosh(x0)", kind=INEXACT,
                 partial=lambda x, out: mul(rsqrt(sub(x, full_like(x, 1))),
                                            rsqrt(add(x, full_like(x, 1)))))
atanh_p = _unary("atanh", np.arctanh, "atanh(x0)", kind=INEXACT,
                 partial=lambda x, out: div(full_like(x, 1), sub(full_like(x, 1), mul(x, x))))
sinh_p = _unary("sinh", np.sinh, "sinh(x0)", kind=INEXACT, partial=lambda x, out: cosh(x))
cosh_p = _unary("cosh", np.cosh, "cosh(x0)", kind=INEXACT, partial=lambda x, out: sinh(x))
tanh_p = _unary("tanh", np.tanh, "tanh(x0)", kind=INEXACT,
                partial=lambda x, out: sub(full_like(x, 1), mul(out, out)))
logistic_p = _unary("logistic", _numpy_logistic, "(1 / (1 + exp(-x0)))", kind=INEXACT,
                    partial=lambda x, out: mul(out, sub(full_like(x, 1), out)))
sqrt_p = _unary("sqrt", np.sqrt, "sqrt(x0)", kind=INEXACT,
                partial=lambda x, out: div(full_like(x, 0.5), out))
rsqrt_p = _unary("rsqrt", lambda x: 1 / np.sqrt(x), "rsqrt(x0)", kind=INEXACT,
                 partial=lambda x, out: mul(full_like(x, -0.5), div(out, x)))
abs_p = declare_elementwise("abs", _abs_rule, np.abs,
                            fusion=Elementwise("fabs(x0)", int_expr="(x0 < 0 ? -x0 : x0)"),
                            vjp=_abs_vjp, jvp=_abs_jvp, out_dtype_of=_abs_dtype)
# Complex: x / |x| (NumPy 2's and JAX's sign), 0 at 0.
sign_p = _unary("sign", np.sign, "(x0 > 0 ? 1 : (x0 < 0 ? -1 : x0))", kind=NUMBER)
floor_p = _unary("floor", np.floor, "floor(x0)")
ceil_p = _unary("ceil", np.ceil, "ceil(x0)")
round_p = _unary("round", _numpy_round, "round(x0)")
# SciPy's erf/erfinv keep 0-d operands 0-d (math.erf through np.frompyfunc did not).
erf_p = _unary("erf", scipy.special.erf, "erf(x0)",
               partial=lambda x, out: mul(full_like(x, 2 / math.sqrt(math.pi)),
                                          exp(neg(mul(x, x)))))
# float32 erf_inv rounds as XLA's does (JAX's random.normal bit for bit; kernels/erf_inv.py).
erf_inv_p = _unary("erf_inv", erf_inv_kernels.erf_inv, "flamefx_erf_inv(x0)",
                   partial=lambda x, out: mul(full_like(x, math.sqrt(math.pi) / 2),
                                              exp(mul(out, out))))
square_p = _unary("square", np.square, "(x0 * x0)", kind=NUMBER,
                  partial=lambda x, out: mul(full_like(x, 2), x))
bitwise_not_p = _unary("bitwise_not", np.invert, "(~x0)", kind=INT_OR_BOOL,
                       bool_expr="(!x0)")


def _integer_pow_rule(x, *, y):
    if not isinstance(y, int):
        raise FlamefxTypeError(f"integer_pow needs a Python int exponent, got {y!r}")
    _check_kind([x], NUMBER)
    if y < 0 and not dtypes.is_inexact(x.dtype):
        raise FlamefxTypeError(f"a negative exponent ({y}) needs a float operand, got {x.dtype}")
    return [x]


def _numpy_integer_pow(x, *, y):
    return np.power(x, y) if dtypes.is_inexact(x.dtype) else np.power(x, y, dtype=x.dtype)


def _integer_pow_partial(x, out, *, y):
    if y == 0:
        return None
    if y == 1:
        return full_like(x, 1)
    return mul(full_like(x, y), integer_pow(x, y - 1))


integer_pow_p = declare_elementwise(
    "integer_pow", _integer_pow_rule, _numpy_integer_pow,
    fusion=Elementwise("flamefx_ipow(x0, {y})"),
    partials=lambda x, out, *, y: [_integer_pow_partial(x, out, y=y)])


def _is_finite_rule(x):
    _check_kind([x], FLOAT)
    return [ShapedArray(x.shape, dtypes.bool_)]


is_finite_p = declare_elementwise("is_finite", _is_finite_rule, np.isfinite,
                                  fusion=Elementwise("isfinite(x0)"), out_dtype_of=_bool_dtype)


# --- binary arithmetic -----------------------------------------------------------------------


def _add_jvp(primals, tangents):
    tx, ty = tangents
    out = add(*primals)
    if tx is None or ty is None:
        return [out], [tx if ty is None else ty]
    return [out], [add(tx, ty)]


def _sub_jvp(primals, tangents):
    tx, ty = tangents
    out = sub(*primals)
    if ty is None:
        return [out], [tx]
    return [out], [neg(ty) if tx is None else sub(tx, ty)]


def _add_vjp(cts, primals, outs):
    ct = cts[0]
    if ct is None or not _all_float(primals):
        return [None, None]
    return [ct, ct]


def _sub_vjp(cts, primals, outs):
    ct = cts[0]
    if ct is None or not _all_float(primals):
        return [None, None]
    return [ct, neg(ct)]


def _pow_partials(x, y, out):
    one = full_like(x, 1)
    dx = mul(y, pow(x, sub(y, one)))
    # d/dy x^y = x^y log x; where x == 0 that product is 0 (for y > 0), not 0 * -inf.
    x_safe = select_n(eq(x, full_like(x, 0)), x, one)
    return [dx, mul(out, log(x_safe))]


def _max_partials(x, y, out):
    # Ties split the gradient evenly, as JAX does: (x > y) + (x >= y) is 2, 1 or 0.
    dx = mul(full_like(x, 0.5), add(_float_of_bool(gt(x, y), x), _float_of_bool(ge(x, y), x)))
    return [dx, sub(full_like(x, 1), dx)]


def _min_partials(x, y, out):
    dx = mul(full_like(x, 0.5), add(_float_of_bool(lt(x, y), x), _float_of_bool(le(x, y), x)))
    return [dx, sub(full_like(x, 1), dx)]


def _rem_partials(x, y, out):
    quotient = div(x, y)
    truncated = mul(sign(quotient), floor(abs(quotient)))
    return [full_like(x, 1), neg(truncated)]


def _atan2_partials(x, y, out):
    denom = add(mul(x, x), mul(y, y))
    return [div(y, denom), div(neg(x), denom)]


add_p = _binary("add", np.add, "(x0 + x1)", kind=NUMBER, jvp=_add_jvp, vjp=_add_vjp)
sub_p = _binary("sub", np.subtract, "(x0 - x1)", kind=NUMBER, jvp=_sub_jvp, vjp=_sub_vjp)
mul_p = _binary("mul", np.multiply, "(x0 * x1)", kind=NUMBER, partials=lambda x, y, out: [y, x])
div_p = _binary("div", _numpy_div, "(x0 / x1)", kind=NUMBER,
                partials=lambda x, y, out: [div(full_like(x, 1), y), neg(div(out, y))])
pow_p = _binary("pow", np.power, "pow(x0, x1)", kind=INEXACT, partials=_pow_partials)
max_p = _binary("max", np.maximum, "((x0 > x1 || x0 != x0) ? x0 : x1)", partials=_max_partials)
min_p = _binary("min", np.minimum, "((x0 < x1 || x0 != x0) ? x0 : x1)", partials=_min_partials)
rem_p = _binary("rem", np.fmod, "fmod(x0, x1)", int_expr="(x0 % x1)", partials=_rem_partials)
atan2_p = _binary("atan2", np.arctan2, "atan2(x0, x1)", kind=FLOAT, partials=_atan2_partials)
# d/dx copysign(x, y) = sign(x) * (+-1 by y's sign bit); y only chooses a sign.
copysign_p = _binary("copysign", np.copysign, "copysign(x0, x1)", kind=FLOAT,
                     partials=lambda x, y, out: [mul(sign(x), copysign(full_like(x, 1), y)),
                                                 None])
# Not differentiable (as in JAX). float32/float64 only: the half types compute in float here,
# where the next float32 after a float16 value rounds back to that value.
nextafter_p = _binary("nextafter", np.nextafter, "nextafter(x0, x1)",
                      kind=("float32 or float64", frozenset({dtypes.float32, dtypes.float64})))
bitwise_and_p = _binary("bitwise_and", np.bitwise_and, "(x0 & x1)", kind=INT_OR_BOOL)
bitwise_or_p = _binary("bitwise_or", np.bitwise_or, "(x0 | x1)", kind=INT_OR_BOOL)
bitwise_xor_p = _binary("bitwise_xor", np.bitwise_xor, "(x0 ^ x1)", kind=INT_OR_BOOL)
# Shifting by the bit width or more gives 0 (C leaves it undefined; JAX defines it as 0).
shift_left_p = _binary("shift_left", _numpy_shift(np.left_shift),
                       "((x1 < 0 || x1 >= 8 * sizeof(x0)) ? 0 : (x0 << x1))", kind=INT)
shift_right_logical_p = _binary(
    "shift_right_logical", _numpy_shift(np.right_shift),
    "((x1 < 0 || x1 >= 8 * sizeof(x0)) ? 0 : (decltype(x0))(((unsigned long long)(x0) "
    "& (~0ull >> (64 - 8 * sizeof(x0)))) >> x1))", kind=INT)

eq_p = _compare("eq", np.equal, "==", kind=ANY)
ne_p = _compare("ne", np.not_equal, "!=", kind=ANY)
lt_p = _compare("lt", np.less, "<")
le_p = _compare("le", np.less_equal, "<=")
gt_p = _compare("gt", np.greater, ">")
ge_p = _compare("ge", np.greater_equal, ">=")


# --- select_n ----------------------------------------------------------------------------------


def _select_n_rule(which, *cases):
    if not cases:
        raise FlamefxTypeError("select_n needs at least one case")
    if which.dtype != dtypes.bool_ and which.dtype != dtypes.int32:
        raise FlamefxTypeError(f"the selector must be bool or int32, got {which.dtype}")
    if which.dtype == dtypes.bool_ and len(cases) > 2:
        raise FlamefxTypeError(f"a bool selector picks from at most 2 cases, got {len(cases)}")
    _check_same_type(cases)
    if which.shape != cases[0].shape:
        raise FlamefxTypeError(f"the selector's shape {which.shape} must equal the cases' "
                               f"shape {cases[0].shape}")
    return [ShapedArray(cases[0].shape, cases[0].dtype, all(c.weak_type for c in cases))]


def _numpy_select_n(which, *cases):
    return np.choose(which.astype(np.int64), cases, mode="clip")


def _select_n_expr(n_operands):
    # Nested from the last case inward; `<=` clamps out-of-range selectors like np.choose.
    expr = f"x{n_operands - 1}"
    for case in range(n_operands - 3, -1, -1):
        expr = f"(x0 <= {case} ? x{case + 1} : {expr})"
    return expr


def _select_n_vjp(cts, primals, outs):
    ct = cts[0]
    which, cases = primals[0], primals[1:]
    if ct is None or not _all_float(cases):
        return [None] * len(primals)
    zeros = full_like(ct, 0)
    return [None] + [select_n(which, *[ct if j == i else zeros for j in range(len(cases))])
                     for i in range(len(cases))]


def _select_n_jvp(primals, tangents):
    which, cases = primals[0], primals[1:]
    out = select_n(which, *cases)
    case_tangents = tangents[1:]
    if all(t is None for t in case_tangents) or not _all_float(cases):
        return [out], [None]
    zeros = full_like(out, 0)
    return [out], [select_n(which, *[zeros if t is None else t for t in case_tangents])]


select_n_p = declare_elementwise("select_n", _select_n_rule, _numpy_select_n,
                                 fusion=Elementwise(_select_n_expr),
                                 vjp=_select_n_vjp, jvp=_select_n_jvp)


# --- fma ---------------------------------------------------------------------------------------
# a * b + c rounded once, as XLA's CPU backend computes a multiply feeding an add (LLVM
# contracts them into an FMA): JAX's bounded random.uniform, for one. float32 and float64
# only: XLA computes the half types op by op, rounding each (kernels/fma.py).

FMA_FLOAT = ("float32 or float64", frozenset({dtypes.float32, dtypes.float64}))

fma_p = declare_elementwise("fma", same_type_rule(FMA_FLOAT), fma_kernels.fma,
                            fusion=Elementwise("fma(x0, x1, x2)"),
                            partials=lambda a, b, c, out: [b, a, full_like(c, 1)])


# --- convert_element_type ----------------------------------------------------------------------


def _convert_rule(x, *, new_dtype, weak_type):
    return [ShapedArray(x.shape, dtypes.canonicalize(new_dtype), weak_type)]


def _numpy_convert(x, *, new_dtype, weak_type):
    if dtypes.is_complex(x.dtype) and not dtypes.is_complex(new_dtype) and new_dtype != np.bool_:
        x = x.real  # JAX keeps the real part (NumPy's astype would warn)
    return [x.astype(new_dtype)]


def _convert_cuda(x, *, new_dtype, weak_type):
    return [cuda_elementwise.convert(x, new_dtype)]


def _convert_vjp(cts, primals, outs, *, new_dtype, weak_type):
    ct, x_aval = cts[0], core.get_aval(primals[0])
    if ct is None or not (dtypes.is_inexact(x_aval.dtype) and dtypes.is_inexact(new_dtype)):
        return [None]
    return [convert_element_type(ct, x_aval.dtype, weak_type=x_aval.weak_type)]


def _convert_jvp(primals, tangents, *, new_dtype, weak_type):
    out = convert_element_type(primals[0], new_dtype, weak_type=weak_type)
    t = tangents[0]
    if t is None or not (dtypes.is_inexact(core.get_aval(t).dtype)
                         and dtypes.is_inexact(new_dtype)):
        return [out], [None]
    return [out], [convert_element_type(t, new_dtype, weak_type=weak_type)]


convert_element_type_p = Primitive(
    "convert_element_type", abstract_eval=_convert_rule, impl=_numpy_convert,
    cuda_impl=_convert_cuda, vjp=_convert_vjp, jvp=_convert_jvp, fusion=Elementwise("x0"))
convert_element_type_p.batch = batch_rule(convert_element_type_p)


# --- lax-level wrappers ------------------------------------------------------------------------
# abs, round, pow, max and min shadow builtins here on purpose: they are lax's names.


def neg(x): return neg_p.bind(x)
def exp(x): return exp_p.bind(x)
def log(x): return log_p.bind(x)
def log1p(x): return log1p_p.bind(x)
def expm1(x): return expm1_p.bind(x)
def sin(x): return sin_p.bind(x)
def cos(x): return cos_p.bind(x)
def tan(x): return tan_p.bind(x)
def sinh(x): return sinh_p.bind(x)
def cosh(x): return cosh_p.bind(x)
def tanh(x): return tanh_p.bind(x)
def asin(x): return asin_p.bind(x)
def acos(x): return acos_p.bind(x)
def atan(x): return atan_p.bind(x)
def asinh(x): return asinh_p.bind(x)
def acosh(x): return acosh_p.bind(x)
def atanh(x): return atanh_p.bind(x)
def logistic(x): return logistic_p.bind(x)
def sqrt(x): return sqrt_p.bind(x)
def rsqrt(x): return rsqrt_p.bind(x)
def abs(x): return abs_p.bind(x)
def sign(x): return sign_p.bind(x)
def floor(x): return floor_p.bind(x)
def ceil(x): return ceil_p.bind(x)
def round(x): return round_p.bind(x)
def erf(x): return erf_p.bind(x)
def erf_inv(x): return erf_inv_p.bind(x)
def square(x): return square_p.bind(x)
def is_finite(x): return is_finite_p.bind(x)
def bitwise_not(x): return bitwise_not_p.bind(x)
def add(x, y): return add_p.bind(x, y)
def sub(x, y): return sub_p.bind(x, y)
def mul(x, y): return mul_p.bind(x, y)
def div(x, y): return div_p.bind(x, y)
def pow(x, y): return pow_p.bind(x, y)
def max(x, y): return max_p.bind(x, y)
def min(x, y): return min_p.bind(x, y)
def rem(x, y): return rem_p.bind(x, y)
def atan2(x, y): return atan2_p.bind(x, y)
def copysign(x, y): return copysign_p.bind(x, y)
def nextafter(x, y): return nextafter_p.bind(x, y)
def bitwise_and(x, y): return bitwise_and_p.bind(x, y)
def bitwise_or(x, y): return bitwise_or_p.bind(x, y)
def bitwise_xor(x, y): return bitwise_xor_p.bind(x, y)
def shift_left(x, y): return shift_left_p.bind(x, y)
def shift_right_logical(x, y): return shift_right_logical_p.bind(x, y)
def eq(x, y): return eq_p.bind(x, y)
def ne(x, y): return ne_p.bind(x, y)
def lt(x, y): return lt_p.bind(x, y)
def le(x, y): return le_p.bind(x, y)
def gt(x, y): return gt_p.bind(x, y)
def ge(x, y): return ge_p.bind(x, y)


def integer_pow(x, y: int):
    """``x ** y`` for a static Python int ``y`` (repeated multiplication).

    >>> integer_pow(np.float64(3.0), 2).item()
    9.0
    """
    return integer_pow_p.bind(x, y=int(y))


def select_n(which, *cases):
    """Picks ``cases[which]`` elementwise; ``which`` is bool (2 cases) or int32 (clamped).

    >>> select_n(np.array([True, False]), np.zeros(2), np.ones(2)).tolist()
    [1.0, 0.0]
    """
    return select_n_p.bind(which, *cases)


def fma(a, b, c):
    """``a * b + c`` rounded once, as the FMA instruction (float32 or float64 operands of
    one shape and dtype; flamefx.numpy-level code broadcasts first).

    >>> fma(np.float64(0.1), np.float64(10.0), np.float64(-1.0)).item()  # a*b+c: 0.0
    5.551115123125783e-17
    """
    return fma_p.bind(a, b, c)


def convert_element_type(x, new_dtype, weak_type: bool = False):
    """``x`` cast to ``new_dtype`` (floats to ints truncate toward zero, as in C).

    >>> convert_element_type(np.float32(2.7), np.int32).item()
    2
    """
    return convert_element_type_p.bind(x, new_dtype=dtypes.canonicalize(new_dtype),
                                       weak_type=bool(weak_type))
