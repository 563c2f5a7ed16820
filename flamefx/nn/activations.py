"""Activation functions, softmax and friends, written on flamefx.numpy.

Each is numerically stable over the whole float range: no branch evaluates an ``exp``
that can overflow, so values and gradients stay finite at +-1000 (a ``where`` would
otherwise multiply a zero cotangent by an infinite derivative and give NaN).

>>> import flamefx.numpy as fnp
>>> relu(fnp.array([-1.0, 2.0])).tolist()
[0.0, 2.0]
"""

from __future__ import annotations

import math

import flamefx.numpy as fnp
from flamefx import dtypes
from flamefx.errors import FlamefxValueError
from flamefx.primitives import elementwise
from flamefx.transforms.ad import stop_gradient

tanh = elementwise.tanh


def relu(x):
    """``max(x, 0)``, with gradient 0 at 0 (as JAX).

    >>> relu(fnp.array([-2.0, 0.5])).tolist()
    [0.0, 0.5]
    """
    return fnp.where(x > 0, x, fnp.zeros_like(x))


def relu6(x):
    """``min(max(x, 0), 6)``.

    >>> relu6(fnp.array([-1.0, 3.0, 9.0])).tolist()
    [0.0, 3.0, 6.0]
    """
    return fnp.where(x < 6, relu(x), fnp.full_like(x, 6))


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))``.

    >>> sigmoid(fnp.array([0.0])).tolist()
    [0.5]
    """
    return elementwise.logistic(x)


def silu(x):
    """``x * sigmoid(x)`` (also called swish).

    >>> silu(fnp.array([0.0])).tolist()
    [0.0]
    """
    return x * sigmoid(x)


swish = silu


def gelu(x, approximate: bool = True):
    """Gaussian error linear unit; ``approximate=True`` is the tanh form (as JAX's default).

    >>> round(float(gelu(fnp.array(1.0), approximate=False)), 4)
    0.8413
    """
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))
        return 0.5 * x * (1.0 + elementwise.tanh(inner))
    return 0.5 * x * (1.0 + elementwise.erf(x * (1.0 / math.sqrt(2.0))))


def _minus_abs(x):
    # -|x| whose derivative at 0 is +1 (the left branch), so softplus'(0) = 1/2 exactly.
    return fnp.where(x > 0, -x, x)


def softplus(x):
    """``log(1 + exp(x))``, computed as ``relu(x) + log1p(exp(-|x|))``.

    >>> round(float(softplus(fnp.array(0.0))), 4)
    0.6931
    """
    x = fnp.asarray(x)
    if not fnp.issubdtype(x.dtype, fnp.inexact):  # JAX's logaddexp(x, 0) promotes integers
        x = x.astype(dtypes.default_float())
    return relu(x) + elementwise.log1p(elementwise.exp(_minus_abs(x)))


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)``.

    >>> float(log_sigmoid(fnp.array(1000.0)))
    -0.0
    """
    return -softplus(-x)


def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` where positive, else ``negative_slope * x``.

    >>> leaky_relu(fnp.array([-1.0, 1.0]), 0.1).tolist()
    [-0.10000000149011612, 1.0]
    """
    return fnp.where(x >= 0, x, negative_slope * x)


def _negative_part(x):
    # min(x, 0) via where, so exp of it never overflows, even in the unselected branch.
    return fnp.where(x > 0, fnp.zeros_like(x), x)


def elu(x, alpha: float = 1.0):
    """``x`` where positive, else ``alpha * (exp(x) - 1)``.

    >>> round(float(elu(fnp.array(-1.0))), 4)
    -0.6321
    """
    return fnp.where(x > 0, x, alpha * elementwise.expm1(_negative_part(x)))


def celu(x, alpha: float = 1.0):
    """``x`` where positive, else ``alpha * (exp(x / alpha) - 1)``.

    >>> round(float(celu(fnp.array(-1.0), alpha=2.0)), 4)
    -0.7869
    """
    return fnp.where(x > 0, x, alpha * elementwise.expm1(_negative_part(x) / alpha))


def selu(x):
    """Scaled ELU with the self-normalizing constants of Klambauer et al. (2017).

    >>> round(float(selu(fnp.array(1.0))), 4)
    1.0507
    """
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * elu(x, alpha)


def _max_no_grad(x, axis):
    """The max over ``axis`` (kept), as a constant: softmax-like functions are invariant
    to the shift, so its gradient is exactly zero and need not be traced."""
    m = stop_gradient(fnp.max(x, axis=axis, keepdims=True))
    # An all -inf row would give inf - inf = nan; shift such rows by 0 instead.
    return fnp.where(fnp.isfinite(m), m, fnp.zeros_like(m))


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x), axis)``, shifted by the max for stability.

    >>> softmax(fnp.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    unnormalized = fnp.exp(x - _max_no_grad(x, axis))
    return unnormalized / fnp.sum(unnormalized, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x, axis)``.

    >>> round(float(log_softmax(fnp.array([0.0, 0.0]))[0]), 4)
    -0.6931
    """
    shifted = x - _max_no_grad(x, axis)
    return shifted - fnp.log(fnp.sum(fnp.exp(shifted), axis=axis, keepdims=True))


def logsumexp(x, axis=None, keepdims: bool = False):
    """``log(sum(exp(x), axis))`` without overflow.

    >>> round(float(logsumexp(fnp.array([1000.0, 1000.0]))), 3)
    1000.693
    """
    shift = _max_no_grad(x, axis)
    out = fnp.log(fnp.sum(fnp.exp(x - shift), axis=axis, keepdims=True)) + shift
    if keepdims:
        return out
    return fnp.squeeze(out, axis=axis) if axis is not None else fnp.reshape(out, ())


def one_hot(x, num_classes: int, *, dtype=None, axis: int = -1):
    """``x == arange(num_classes)`` along a new ``axis``, as ``dtype`` (float32 by default;
    out-of-range labels give all-zero rows, as JAX).

    >>> one_hot(fnp.array([0, 2]), 3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    >>> one_hot(fnp.array([0, 2]), 3, axis=0).shape
    (3, 2)
    """
    x = fnp.asarray(x)
    position = axis % (x.ndim + 1)
    classes = fnp.arange(num_classes, dtype=x.dtype).reshape(
        (num_classes,) + (1,) * (x.ndim - position))
    return (fnp.expand_dims(x, position) == classes).astype(dtype or dtypes.float32)


def identity(x):
    """``x`` itself (JAX's ``nn.identity``).

    >>> identity(fnp.array([1.0])).tolist()
    [1.0]
    """
    return fnp.asarray(x)


def standardize(x, axis=-1, mean=None, variance=None, epsilon: float = 1e-5, where=None, *,
                algorithm: str = "fast"):
    """``(x - mean) / sqrt(variance + epsilon)`` over ``axis`` (JAX's ``nn.standardize``).

    ``algorithm='fast'`` takes the variance as ``E[x^2] - E[x]^2`` (JAX's default);
    ``'stable'`` as ``E[(x - E[x])^2]``. ``mean``/``variance`` may be given (broadcastable).

    >>> standardize(fnp.array([1.0, 3.0])).tolist()
    [-0.9999949932098389, 0.9999949932098389]
    """
    x = fnp.asarray(x)
    if algorithm not in ("fast", "stable"):
        raise FlamefxValueError(f"standardize: algorithm must be 'fast' or 'stable', got "
                                f"{algorithm!r}")
    if mean is None:
        mean = _mean(x, axis, where)
    if variance is None:
        if algorithm == "fast":
            variance = _mean(fnp.square(x), axis, where) - fnp.square(mean)
        else:
            variance = _mean(fnp.square(x - mean), axis, where)
    centered = x - fnp.asarray(mean)  # integer x promotes here, as JAX's
    return centered * elementwise.rsqrt(fnp.asarray(variance + epsilon, dtype=centered.dtype))


def _mean(x, axis, where):
    """The mean over ``axis`` (kept) of the entries ``where`` selects (all if None)."""
    if where is None:
        return fnp.mean(x, axis, keepdims=True)
    where = fnp.broadcast_to(fnp.asarray(where, dtype=bool), x.shape)
    total = fnp.sum(fnp.where(where, x, fnp.zeros_like(x)), axis, keepdims=True)
    return total / fnp.sum(where.astype(x.dtype), axis, keepdims=True)


def normalize(x, axis=-1, mean=None, variance=None, epsilon: float = 1e-5, where=None):
    """Deprecated alias of ``standardize`` (as in JAX).

    >>> normalize(fnp.array([1.0, 3.0]))[1] > 0.99
    Array(True, dtype=bool)
    """
    return standardize(x, axis, mean, variance, epsilon, where)


def glu(x, axis: int = -1):
    """Gated linear unit: the first half of ``axis`` times the sigmoid of the second half.

    >>> glu(fnp.array([2.0, 0.0])).tolist()
    [1.0]
    """
    x = fnp.asarray(x)
    size = x.shape[axis]
    if size % 2:
        raise FlamefxValueError(f"glu: axis {axis} of shape {tuple(x.shape)} has odd size "
                                f"{size}; it must split into two halves")
    first, second = fnp.split(x, 2, axis=axis)
    return first * sigmoid(second)


def hard_tanh(x):
    """``x`` clipped to ``[-1, 1]``.

    >>> hard_tanh(fnp.array([-2.0, 0.5, 2.0])).tolist()
    [-1.0, 0.5, 1.0]
    """
    return fnp.where(x > 1, fnp.ones_like(x), fnp.where(x < -1, -fnp.ones_like(x), x))


def hard_sigmoid(x):
    """``relu6(x + 3) / 6``, a piecewise-linear sigmoid.

    >>> hard_sigmoid(fnp.array([-4.0, 0.0, 4.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    return relu6(x + 3.0) / 6.0


def hard_silu(x):
    """``x * hard_sigmoid(x)`` (also called hard_swish).

    >>> hard_silu(fnp.array([-4.0, 0.0, 4.0])).tolist()
    [-0.0, 0.0, 4.0]
    """
    return x * hard_sigmoid(x)


hard_swish = hard_silu


def mish(x):
    """``x * tanh(softplus(x))``.

    >>> round(float(mish(fnp.array(1.0))), 4)
    0.8651
    """
    return x * elementwise.tanh(softplus(x))


def soft_sign(x):
    """``x / (|x| + 1)``.

    >>> soft_sign(fnp.array([-3.0, 1.0])).tolist()
    [-0.75, 0.5]
    """
    return x / (fnp.abs(x) + 1)


def squareplus(x, b=4):
    """``(x + sqrt(x^2 + b)) / 2``, a smooth ReLU.

    >>> squareplus(fnp.array([0.0])).tolist()
    [1.0]
    """
    return (x + fnp.sqrt(fnp.square(x) + b)) / 2


def sparse_plus(x):
    """0 for ``x <= -1``, ``(x + 1)^2 / 4`` between, ``x`` for ``x >= 1``.

    >>> sparse_plus(fnp.array([-2.0, 0.0, 2.0])).tolist()
    [0.0, 0.25, 2.0]
    """
    middle = fnp.square(fnp.clip(x, -1.0, 1.0) + 1) / 4
    return fnp.where(x <= -1, fnp.zeros_like(x), fnp.where(x >= 1, x, middle))


def sparse_sigmoid(x):
    """The derivative of ``sparse_plus``: 0, ``(x + 1) / 2``, 1.

    >>> sparse_sigmoid(fnp.array([-2.0, 0.0, 2.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    return 0.5 * fnp.clip(x + 1.0, 0.0, 2.0)


def log1mexp(x):
    """``log(1 - exp(-x))`` for ``x > 0``, accurate for small and large ``x`` (JAX's
    ``nn.log1mexp``).

    >>> round(float(log1mexp(fnp.array(1.0))), 4)
    -0.4587
    """
    # Mächler (2012): log(-expm1(-x)) near 0, log1p(-exp(-x)) beyond log 2.
    x = fnp.asarray(x)
    small = fnp.log(-fnp.expm1(-fnp.minimum(x, math.log(2))))
    large = fnp.log1p(-fnp.exp(-fnp.maximum(x, math.log(2))))
    return fnp.where(x > math.log(2), large, small)
