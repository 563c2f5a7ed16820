"""Samples for the elementwise primitives, each with an independent float64 reference.

Inputs stay away from kinks and singularities (|x| > 0.3 for abs, non-integers for floor,
no ties for max/min) so that order-2 gradient checks by finite differences are exact.
float32 samples check the common ops in single precision (values only). Every primitive also
gets a 0-d sample, made from its first one (0-d operands once crashed erf's NumPy impl).
"""

import cmath
import math
from fractions import Fraction

import numpy as np

from tests.samples import Sample

SHAPE = (2, 3)


def _uniform(low, high, dtype=np.float64, n=1, shape=SHAPE):
    return lambda rng: [rng.uniform(low, high, shape).astype(dtype) for _ in range(n)]


def _away_from_zero(low, high):
    def make(rng):
        magnitude = rng.uniform(low, high, SHAPE)
        return [np.where(rng.random(SHAPE) < 0.5, -magnitude, magnitude)]
    return make


def _fractional(rng):
    """Values whose fractional part is in (0.15, 0.35) or (0.65, 0.85): no rounding ties."""
    whole = rng.integers(-3, 3, SHAPE).astype(np.float64)
    frac = rng.uniform(0.15, 0.35, SHAPE) + 0.5 * (rng.random(SHAPE) < 0.5)
    return [whole + frac]


def _ints(low, high, dtype=np.int32, n=1):
    return lambda rng: [rng.integers(low, high, SHAPE).astype(dtype) for _ in range(n)]


def _erf_reference(x):
    return np.vectorize(math.erf)(x)


def _erf_inv_reference(y):
    """Bisection on math.erf: slow, simple and independent of the implementation."""
    def solve(target):
        lo, hi = -6.0, 6.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if math.erf(mid) < target else (lo, mid)
        return 0.5 * (lo + hi)
    return np.vectorize(solve)(y)


def _unary(fn, make, grad=True):
    return Sample(make=make, reference=fn, grad_argnums=(0,) if grad else ())


def _binary(fn, make, grad=(0, 1)):
    return Sample(make=make, reference=fn, grad_argnums=grad)


def _f32(fn, make):
    return Sample(make=make, reference=fn, name="float32")


def _no_ties(rng):
    x = rng.uniform(-2, 2, SHAPE)
    gap = rng.uniform(0.2, 1.0, SHAPE) * np.where(rng.random(SHAPE) < 0.5, -1, 1)
    return [x, x + gap]


def _max_min_ties(rng):
    x = rng.uniform(-2, 2, SHAPE)
    return [x, x.copy()]


def _rem_args(rng):
    y = rng.uniform(0.7, 1.5, SHAPE) * np.where(rng.random(SHAPE) < 0.5, -1, 1)
    quotient = rng.integers(-3, 4, SHAPE) + rng.uniform(0.2, 0.8, SHAPE)
    return [quotient * np.abs(y) * np.sign(rng.uniform(-1, 1, SHAPE)), y]


def _select_args(rng):
    return [rng.random(SHAPE) < 0.5, rng.normal(size=SHAPE), rng.normal(size=SHAPE)]


def _select3_args(rng):
    return [rng.integers(0, 3, SHAPE).astype(np.int32)] + [rng.normal(size=SHAPE)
                                                            for _ in range(3)]


def _with_nonfinite(rng):
    x = rng.normal(size=SHAPE)
    x[0, 0], x[1, 1], x[0, 2] = np.inf, np.nan, -np.inf
    return [x]


def _round_half_away(x):
    return np.array([math.copysign(math.floor(abs(v) + 0.5), v) for v in x.ravel()]).reshape(
        x.shape)


def _shift_args(rng):
    return [rng.integers(0, 2**32, SHAPE, dtype=np.uint64).astype(np.uint32),
            rng.integers(0, 40, SHAPE).astype(np.uint32)]


def _python_shift(op):
    def reference(x, s):
        out = [op(int(a), int(b)) & 0xFFFFFFFF if b < 32 else 0
               for a, b in zip(x.ravel(), s.ravel())]
        return np.array(out, np.uint32).reshape(x.shape)
    return reference


def _select_reference(which, *cases):
    out = np.empty_like(cases[0])
    for idx in np.ndindex(which.shape):
        out[idx] = cases[int(which[idx])][idx]
    return out


def _trunc_div(x, y):
    return np.array([int(a / b) for a, b in zip(x.ravel(), y.ravel())], x.dtype).reshape(x.shape)


def _c_rem(x, y):
    return np.array([math.fmod(a, b) for a, b in zip(x.ravel(), y.ravel())]).reshape(x.shape)


def _elementwise_loop(scalar_fn):
    """A reference applying a Python scalar function to each element (independent of NumPy's
    ufuncs)."""
    def reference(*args):
        flat = [np.asarray(a, np.float64).ravel() for a in args]
        out = [scalar_fn(*values) for values in zip(*flat)]
        return np.array(out).reshape(np.shape(args[0]))
    return reference


def _nextafter_args(rng):
    x = rng.uniform(-2, 2, SHAPE)
    x[0, 0] = 0.0
    return [x, x + rng.choice([-1.0, 1.0], SHAPE)]


def _nonzero_ints(rng):
    x = rng.integers(-20, 20, SHAPE).astype(np.int32)
    y = rng.integers(1, 6, SHAPE).astype(np.int32) * np.where(rng.random(SHAPE) < 0.5, -1, 1)
    return [x, y.astype(np.int32)]


def _fma_args(dtype):
    """a, b, and c near -a*b, so that a * b + c rounded twice differs from once."""
    def make(rng):
        a, b = (rng.uniform(-2, 2, SHAPE).astype(dtype) for _ in range(2))
        c = (-(a * b) * (1 + rng.uniform(-1e-3, 1e-3, SHAPE))).astype(dtype)
        return [a, b, c]
    return make


def _round_once(exact: Fraction, dtype):
    """The float of ``dtype`` nearest ``exact``, ties to even."""
    near = np.asarray(float(exact)).astype(dtype)
    candidates = [np.nextafter(near, dtype.type(-np.inf)), near,
                  np.nextafter(near, dtype.type(np.inf))]
    bits = f"u{dtype.itemsize}"
    return min(candidates, key=lambda r: (abs(Fraction(float(r)) - exact),
                                          int(np.asarray(r).view(bits)) & 1))


def _fma_reference(a, b, c):
    """From exact rationals, rounded once to a's dtype."""
    out = [_round_once(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)), a.dtype)
           for x, y, z in zip(a.ravel(), b.ravel(), c.ravel())]
    return np.array(out, a.dtype).reshape(a.shape)


SAMPLES = {
    "neg": [_unary(lambda x: -x, _uniform(-2, 2)),
            _unary(lambda x: -x, _ints(-5, 5), grad=False)],
    "exp": [_unary(np.exp, _uniform(-2, 2)), _f32(np.exp, _uniform(-2, 2, np.float32))],
    "log": [_unary(np.log, _uniform(0.5, 3)), _f32(np.log, _uniform(0.5, 3, np.float32))],
    "log1p": [_unary(lambda x: np.log(1 + x), _uniform(-0.5, 2))],
    "expm1": [_unary(lambda x: np.exp(x) - 1, _uniform(-2, 2))],
    "sin": [_unary(np.sin, _uniform(-3, 3)), _f32(np.sin, _uniform(-3, 3, np.float32))],
    "cos": [_unary(np.cos, _uniform(-3, 3))],
    "tan": [_unary(lambda x: np.sin(x) / np.cos(x), _uniform(-1.2, 1.2))],
    "sinh": [_unary(_elementwise_loop(math.sinh), _uniform(-3, 3))],
    "cosh": [_unary(_elementwise_loop(math.cosh), _uniform(-3, 3))],
    "asin": [_unary(_elementwise_loop(math.asin), _uniform(-0.9, 0.9))],
    "acos": [_unary(_elementwise_loop(math.acos), _uniform(-0.9, 0.9))],
    "atan": [_unary(_elementwise_loop(math.atan), _uniform(-3, 3))],
    "asinh": [_unary(lambda x: np.log(x + np.sqrt(x * x + 1)), _uniform(-3, 3))],
    "acosh": [_unary(lambda x: np.log(x + np.sqrt(x * x - 1)), _uniform(1.2, 4))],
    "atanh": [_unary(lambda x: 0.5 * np.log((1 + x) / (1 - x)), _uniform(-0.8, 0.8))],
    "tanh": [_unary(np.tanh, _uniform(-3, 3)), _f32(np.tanh, _uniform(-3, 3, np.float32))],
    "logistic": [_unary(lambda x: 1 / (1 + np.exp(-x)), _uniform(-4, 4)),
                 _f32(lambda x: 1 / (1 + np.exp(-x)), _uniform(-4, 4, np.float32))],
    "sqrt": [_unary(lambda x: x ** 0.5, _uniform(0.5, 3))],
    "rsqrt": [_unary(lambda x: x ** -0.5, _uniform(0.5, 3))],
    "abs": [_unary(lambda x: np.where(x < 0, -x, x), _away_from_zero(0.3, 2)),
            _unary(lambda x: np.where(x < 0, -x, x), _ints(-5, 5), grad=False)],
    "sign": [_unary(lambda x: (x > 0) * 1.0 - (x < 0) * 1.0, _away_from_zero(0.3, 2),
                    grad=False)],
    "floor": [_unary(lambda x: np.array([math.floor(v) for v in x.ravel()]).reshape(x.shape),
                     _fractional, grad=False)],
    "ceil": [_unary(lambda x: np.array([math.ceil(v) for v in x.ravel()]).reshape(x.shape),
                    _fractional, grad=False)],
    "round": [_unary(_round_half_away, _fractional, grad=False),
              _unary(_round_half_away, lambda rng: [np.array([[-2.5, -0.5, 0.5],
                                                              [1.5, 2.5, 0.49]])], grad=False)],
    "erf": [_unary(_erf_reference, _uniform(-2, 2))],
    "erf_inv": [_unary(_erf_inv_reference, _uniform(-0.9, 0.9))],
    "square": [_unary(lambda x: x * x, _uniform(-2, 2))],
    "integer_pow": [Sample(make=_uniform(-2, 2), params={"y": 3}, reference=lambda x: x * x * x,
                           grad_argnums=(0,)),
                    Sample(make=_uniform(0.5, 2), params={"y": -2},
                           reference=lambda x: 1 / (x * x), grad_argnums=(0,)),
                    Sample(make=_ints(-4, 4), params={"y": 2}, reference=lambda x: x * x)],
    "is_finite": [_unary(lambda x: ~(np.isnan(x) | np.isinf(x)), _with_nonfinite, grad=False)],
    "bitwise_not": [_unary(lambda x: -x - 1, _ints(-9, 9), grad=False),
                    _unary(lambda x: x == 0, lambda rng: [rng.random(SHAPE) < 0.5], grad=False)],
    "add": [_binary(lambda x, y: x + y, _uniform(-2, 2, n=2)),
            _f32(lambda x, y: x + y, _uniform(-2, 2, np.float32, n=2))],
    "sub": [_binary(lambda x, y: x - y, _uniform(-2, 2, n=2)),
            _binary(lambda x, y: x - y, _ints(-9, 9, n=2), grad=())],
    "mul": [_binary(lambda x, y: x * y, _uniform(-2, 2, n=2)),
            _f32(lambda x, y: x * y, _uniform(-2, 2, np.float32, n=2))],
    "div": [_binary(lambda x, y: x / y, lambda rng: [rng.uniform(-2, 2, SHAPE),
                                                     rng.uniform(0.5, 2, SHAPE)]),
            _binary(_trunc_div, _nonzero_ints, grad=())],
    "pow": [_binary(lambda x, y: np.exp(y * np.log(x)),
                    lambda rng: [rng.uniform(0.5, 2, SHAPE), rng.uniform(-2, 2, SHAPE)])],
    "max": [_binary(lambda x, y: np.where(x > y, x, y), _no_ties),
            _f32(lambda x, y: np.where(x > y, x, y), _uniform(-2, 2, np.float32, n=2))],
    "min": [_binary(lambda x, y: np.where(x < y, x, y), _no_ties)],
    "rem": [_binary(_c_rem, _rem_args),
            _binary(lambda x, y: x - _trunc_div(x, y) * y, _nonzero_ints, grad=())],
    "atan2": [_binary(lambda x, y: np.angle(y + 1j * x), _uniform(0.3, 2, n=2))],
    "copysign": [_binary(_elementwise_loop(math.copysign),
                         lambda rng: _away_from_zero(0.3, 2)(rng) + _away_from_zero(0.3, 2)(rng))],
    "nextafter": [_binary(_elementwise_loop(math.nextafter), _nextafter_args, grad=())],
    "bitwise_and": [_binary(lambda x, y: x & y, _ints(-99, 99, n=2), grad=())],
    "bitwise_or": [_binary(lambda x, y: x | y, _ints(-99, 99, n=2), grad=()),
                   _binary(lambda x, y: x | y, lambda rng: [rng.random(SHAPE) < 0.5,
                                                            rng.random(SHAPE) < 0.5], grad=())],
    "bitwise_xor": [_binary(lambda x, y: x ^ y, _ints(-99, 99, n=2), grad=())],
    "shift_left": [_binary(_python_shift(lambda a, b: a << b), _shift_args, grad=())],
    "shift_right_logical": [_binary(_python_shift(lambda a, b: a >> b), _shift_args, grad=())],
    "eq": [_binary(lambda x, y: x == y, _ints(0, 3, n=2), grad=())],
    "ne": [_binary(lambda x, y: x != y, _ints(0, 3, n=2), grad=())],
    "lt": [_binary(lambda x, y: x < y, _uniform(-1, 1, n=2), grad=())],
    "le": [_binary(lambda x, y: x <= y, _ints(0, 3, n=2), grad=())],
    "gt": [_binary(lambda x, y: x > y, _uniform(-1, 1, n=2), grad=())],
    "ge": [_binary(lambda x, y: x >= y, _ints(0, 3, n=2), grad=())],
    "select_n": [Sample(make=_select_args, reference=_select_reference, grad_argnums=(1, 2)),
                 Sample(make=_select3_args, reference=_select_reference, grad_argnums=(1, 2, 3))],
    "fma": [Sample(make=_fma_args(np.float64), reference=_fma_reference, grad_argnums=(0, 1, 2)),
            _f32(_fma_reference, _fma_args(np.float32))],
    "convert_element_type": [
        # float64 -> float64 checks the rules by finite differences; a float32 output would
        # drown them in rounding noise, so the narrowing sample checks values only.
        Sample(make=_uniform(-2, 2), params={"new_dtype": np.dtype(np.float64),
                                             "weak_type": False},
               reference=lambda x: x.copy(), grad_argnums=(0,)),
        Sample(make=_uniform(-2, 2), params={"new_dtype": np.dtype(np.float32),
                                             "weak_type": False},
               reference=lambda x: x.astype(np.float32)),
        Sample(make=_uniform(-5, 5), params={"new_dtype": np.dtype(np.int32),
                                             "weak_type": False},
               reference=lambda x: np.trunc(x).astype(np.int32)),
    ],
}

# max/min with exact ties: the gradient splits evenly (checked in tests/test_elementwise.py;
# finite differences are not valid at a tie, so these samples carry no grad_argnums).
SAMPLES["max"].append(_binary(lambda x, y: x, _max_min_ties, grad=()))
SAMPLES["min"].append(_binary(lambda x, y: x, _max_min_ties, grad=()))


# --- complex operands (complex128, so that gradient checks are exact) -----------------------


def _complex_uniform(low, high, n=1, real_low=None):
    """Complex values with both parts uniform in [low, high] (the real part in [real_low,
    high] if given: away from log's and sqrt's branch cut)."""
    def make(rng):
        return [rng.uniform(low if real_low is None else real_low, high, SHAPE)
                + 1j * rng.uniform(low, high, SHAPE) for _ in range(n)]
    return make


def _complex_loop(scalar_fn):
    """A reference applying ``scalar_fn`` (cmath, Python complex arithmetic) per element."""
    def reference(*args):
        flat = [np.asarray(a).ravel() for a in args]
        out = [scalar_fn(*[complex(v) for v in values]) for values in zip(*flat)]
        return np.array(out).reshape(np.shape(args[0]))
    return reference


def _complex_ties(rng):
    x = rng.integers(-1, 2, SHAPE) + 1j * rng.integers(-1, 2, SHAPE)
    y = np.where(rng.random(SHAPE) < 0.5, x, x + 1j)
    return [x, y]


def _complex_select_args(rng):
    return [rng.random(SHAPE) < 0.5] + _complex_uniform(-2, 2, n=2)(rng)


def _c(fn, make, grad=(0,)):
    return Sample(make=make, reference=_complex_loop(fn), grad_argnums=grad, name="complex128")


_COMPLEX_SAMPLES = {
    "real": [_c(lambda z: z.real, _complex_uniform(-2, 2))],
    "imag": [_c(lambda z: z.imag, _complex_uniform(-2, 2))],
    "conj": [_c(lambda z: z.conjugate(), _complex_uniform(-2, 2))],
    "complex": [_c(lambda x, y: complex(x.real, y.real), _uniform(-2, 2, n=2), grad=(0, 1))],
    "neg": [_c(lambda z: -z, _complex_uniform(-2, 2))],
    "exp": [_c(cmath.exp, _complex_uniform(-2, 2))],
    "log": [_c(cmath.log, _complex_uniform(-2, 2, real_low=0.3))],
    "sin": [_c(cmath.sin, _complex_uniform(-2, 2))],
    "sinh": [_c(cmath.sinh, _complex_uniform(-2, 2))],
    "cosh": [_c(cmath.cosh, _complex_uniform(-2, 2))],
    "log1p": [_c(lambda z: cmath.log(1 + z), _complex_uniform(-1, 1, real_low=-0.5))],
    "expm1": [_c(lambda z: cmath.exp(z) - 1, _complex_uniform(-2, 2)),
              _c(lambda z: cmath.exp(z) - 1, _complex_uniform(-1e-3, 1e-3))],
    # Inside the unit disk: away from every branch cut of the inverse functions.
    "asin": [_c(cmath.asin, _complex_uniform(-0.6, 0.6))],
    "acos": [_c(cmath.acos, _complex_uniform(-0.6, 0.6))],
    "atan": [_c(cmath.atan, _complex_uniform(-0.6, 0.6))],
    "asinh": [_c(cmath.asinh, _complex_uniform(-0.6, 0.6))],
    "atanh": [_c(cmath.atanh, _complex_uniform(-0.6, 0.6))],
    # acosh's cut is x < 1 on the real axis: both half-planes, imaginary parts away from 0.
    "acosh": [_c(cmath.acosh, lambda rng: [rng.uniform(-2, 2, SHAPE) + 1j * rng.uniform(
        0.3, 1.5, SHAPE) * np.where(rng.random(SHAPE) < 0.5, -1, 1)])],
    "cos": [_c(cmath.cos, _complex_uniform(-2, 2))],
    "tan": [_c(cmath.tan, _complex_uniform(-1, 1))],
    "tanh": [_c(cmath.tanh, _complex_uniform(-1, 1))],
    "logistic": [_c(lambda z: 1 / (1 + cmath.exp(-z)), _complex_uniform(-1, 1))],
    "sqrt": [_c(cmath.sqrt, _complex_uniform(-2, 2, real_low=0.3))],
    "rsqrt": [_c(lambda z: 1 / cmath.sqrt(z), _complex_uniform(-2, 2, real_low=0.3))],
    "abs": [_c(lambda z: math.hypot(z.real, z.imag), _complex_uniform(0.3, 2))],
    "sign": [_c(lambda z: z / math.hypot(z.real, z.imag), _complex_uniform(0.3, 2), grad=())],
    "square": [_c(lambda z: z * z, _complex_uniform(-2, 2))],
    "integer_pow": [Sample(make=_complex_uniform(-2, 2), params={"y": 3},
                           reference=_complex_loop(lambda z: z * z * z), grad_argnums=(0,),
                           name="complex128")],
    "add": [_c(lambda x, y: x + y, _complex_uniform(-2, 2, n=2), grad=(0, 1))],
    "sub": [_c(lambda x, y: x - y, _complex_uniform(-2, 2, n=2), grad=(0, 1))],
    "mul": [_c(lambda x, y: x * y, _complex_uniform(-2, 2, n=2), grad=(0, 1))],
    "div": [_c(lambda x, y: x / y, lambda rng: _complex_uniform(-2, 2)(rng)
               + _complex_uniform(0.5, 2)(rng), grad=(0, 1))],
    "pow": [_c(lambda x, y: cmath.exp(y * cmath.log(x)),
               lambda rng: _complex_uniform(-2, 2, real_low=0.5)(rng)
               + _complex_uniform(-1, 1)(rng), grad=(0, 1))],
    "eq": [_c(lambda x, y: x == y, _complex_ties, grad=())],
    "ne": [_c(lambda x, y: x != y, _complex_ties, grad=())],
    "select_n": [Sample(make=_complex_select_args, reference=_select_reference,
                        grad_argnums=(1, 2), name="complex128")],
    "convert_element_type": [
        Sample(make=_complex_uniform(-2, 2), params={"new_dtype": np.dtype(np.float64),
                                                      "weak_type": False},
               reference=lambda z: z.real.copy(), grad_argnums=(0,), name="complex128"),
        Sample(make=_uniform(-2, 2), params={"new_dtype": np.dtype(np.complex128),
                                             "weak_type": False},
               reference=lambda x: x + 0j, grad_argnums=(0,), name="complex128"),
        Sample(make=lambda rng: _complex_ties(rng)[:1],
               params={"new_dtype": np.dtype(np.bool_), "weak_type": False},
               reference=lambda z: z != 0, name="complex128"),
    ],
}
for _name, _samples in _COMPLEX_SAMPLES.items():
    SAMPLES.setdefault(_name, []).extend(_samples)


def _zero_d(sample):
    """``sample`` on the first element of each of its arrays, as 0-d arrays."""
    def make(rng):
        return [np.asarray(np.asarray(a)[(0,) * np.ndim(a)]) for a in sample.make(rng)]
    return Sample(make=make, params=sample.params, reference=sample.reference,
                  grad_argnums=sample.grad_argnums, name="0-d")


for _samples in SAMPLES.values():
    _samples.append(_zero_d(_samples[0]))
