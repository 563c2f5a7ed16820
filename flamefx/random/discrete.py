"""Discrete draws: bernoulli, rademacher, randint, geometric, categorical, choice,
permutation, poisson, binomial, multinomial.

Each follows JAX's algorithm on JAX's bits, so a key gives JAX's integers.

>>> from flamefx.random.keys import key
>>> sorted(permutation(key(0), 5).tolist())
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import math

import numpy as np

import flamefx.numpy as fnp
from flamefx import core, dtypes
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.primitives import control_flow, elementwise, sorting, special, structural
from flamefx.primitives.scan import scan
from flamefx.random.continuous import draw_shape, gumbel, param_shape, uniform_from_data
from flamefx.random.keys import as_shape, random_bits, split, unwrap


def bernoulli(key, p=0.5, shape=None, mode: str = "low"):
    """Booleans that are True with probability ``p`` (a float; ``u < p``).

    >>> from flamefx.random.keys import key
    >>> bernoulli(key(0), 0.5, (4,)).dtype
    dtype('bool')
    """
    data, _ = unwrap(key, "bernoulli")
    if mode not in ("low", "high"):
        raise FlamefxValueError(f"bernoulli: mode must be 'high' or 'low', got {mode!r}"
                                f"\n  at {user_frame()}")
    p = fnp.asarray(p)
    if not dtypes.is_float(p.dtype):
        raise FlamefxTypeError(f"bernoulli: the probability p must have a float dtype, got "
                               f"{p.dtype}\n  at {user_frame()}")
    shape = param_shape(shape, "bernoulli", p)
    if mode == "high":
        both = uniform_from_data(data, (2,) + shape, p.dtype, 0.0, 1.0)
        u1, u2 = both[0], both[1] * float(2.0 ** -np.finfo(p.dtype).nmant)
        return u2 < p - u1
    return uniform_from_data(data, shape, p.dtype, 0.0, 1.0) < p


def rademacher(key, shape=(), dtype=None):
    """-1 or +1 with equal probability (default dtype: the default int).

    >>> from flamefx.random.keys import key
    >>> sorted(set(rademacher(key(0), (100,)).tolist()))
    [-1, 1]
    """
    dtype = dtypes.canonicalize(int if dtype is None else dtype)
    draws = bernoulli(key, 0.5, as_shape(shape, "rademacher")).astype(dtype)
    return (2 * draws - 1).astype(dtype)


def _clip_to(x, dtype):
    """``x`` clipped to the range both its dtype and ``dtype`` hold, then cast (JAX's
    _convert_and_clip_integer)."""
    lo = max(int(np.iinfo(dtype).min), int(np.iinfo(x.dtype).min))
    hi = min(int(np.iinfo(dtype).max), int(np.iinfo(x.dtype).max))
    return fnp.clip(x, fnp.asarray(lo, x.dtype), fnp.asarray(hi, x.dtype)).astype(dtype)


def _as_int(x):
    x = fnp.asarray(x)
    return x if dtypes.is_int(x.dtype) else x.astype(dtypes.default_int())


def randint(key, shape, minval, maxval, dtype=None):
    """Uniform integers in ``[minval, maxval)`` (JAX's two-word algorithm: nearly unbiased
    for every span).

    >>> from flamefx.random.keys import key
    >>> x = randint(key(0), (100,), 0, 10)
    >>> bool((x >= 0).all() and (x < 10).all())
    True
    """
    dtype = dtypes.canonicalize(int if dtype is None else dtype)
    if not dtypes.is_int(dtype):
        raise FlamefxTypeError(f"randint: dtype must be an integer dtype, got {dtype}"
                               f"\n  at {user_frame()}")
    data, _ = unwrap(key, "randint")
    shape = as_shape(shape, "randint")
    minval, maxval = _as_int(minval), _as_int(maxval)
    sampling = dtype
    if np.iinfo(dtype).bits < 32:  # as JAX: sample in int32 within the narrow type's range
        info = np.iinfo(dtype)
        sampling = dtypes.int32
        minval = fnp.clip(minval.astype(sampling), int(info.min), int(info.max))
        maxval = fnp.clip(maxval.astype(sampling), int(info.min), int(info.max) + 1)
    param_shape(shape, "randint", minval, maxval)
    return _randint(data, minval, maxval, shape, sampling).astype(dtype)


def _randint(data, minval, maxval, shape, dtype):
    top = fnp.asarray(np.iinfo(dtype).max, dtype)
    maxval_out_of_range = maxval > _clip_to(top, maxval.dtype)
    minval = fnp.broadcast_to(_clip_to(minval, dtype), shape)
    maxval = fnp.broadcast_to(_clip_to(maxval, dtype), shape)
    out_of_range = fnp.broadcast_to(maxval_out_of_range, shape)
    nbits = np.iinfo(dtype).bits
    k1, k2 = split(data)
    higher_bits = random_bits(k1, nbits, shape)
    lower_bits = random_bits(k2, nbits, shape)
    unsigned = higher_bits.dtype
    one = elementwise.full_like(higher_bits, 1)
    span = elementwise.convert_element_type(elementwise.sub(maxval, minval), unsigned)
    span = elementwise.select_n(maxval <= minval, span, one)
    span = elementwise.select_n(out_of_range & (maxval > minval), span,
                                elementwise.add(span, one))
    # Two words combined: (high mod span) * (2**nbits mod span) + (low mod span), mod span.
    multiplier = elementwise.rem(elementwise.full_like(span, 2 ** (nbits // 2)), span)
    multiplier = elementwise.rem(elementwise.mul(multiplier, multiplier), span)
    offset = elementwise.add(elementwise.mul(elementwise.rem(higher_bits, span), multiplier),
                             elementwise.rem(lower_bits, span))
    offset = elementwise.rem(offset, span)
    return elementwise.add(minval, elementwise.convert_element_type(offset, dtype))


def geometric(key, p, shape=None, dtype=None):
    """Geometric integers (trials until the first success, support 1, 2, ...):
    ``floor(log u / log1p(-p)) + 1``.

    >>> from flamefx.random.keys import key
    >>> bool((geometric(key(0), 0.3, (10,)) >= 1).all())
    True
    """
    data, _ = unwrap(key, "geometric")
    dtype = dtypes.canonicalize(int if dtype is None else dtype)
    if not dtypes.is_int(dtype):
        raise FlamefxTypeError(f"geometric: dtype must be an integer dtype, got {dtype}"
                               f"\n  at {user_frame()}")
    shape = param_shape(shape, "geometric", p)
    p = fnp.asarray(p)
    if not dtypes.is_float(p.dtype):
        p = p.astype(dtypes.default_float())
    u = uniform_from_data(data, shape, p.dtype, 0.0, 1.0)
    u = fnp.where(u == 0, fnp.ones_like(u), u)
    trials = fnp.floor(fnp.log(u) / fnp.broadcast_to(fnp.log1p(-p), shape)) + 1
    return trials.astype(dtype)


def categorical(key, logits, axis: int = -1, shape=None, replace: bool = True, mode=None):
    """Category indices drawn with probabilities ``softmax(logits, axis)`` (the Gumbel-max
    trick); ``replace=False`` draws distinct categories (Gumbel top-k).

    >>> from flamefx.random.keys import key
    >>> categorical(key(0), fnp.log(fnp.array([0.2, 0.8])), shape=(5,)).shape
    (5,)
    """
    data, _ = unwrap(key, "categorical")
    logits = fnp.asarray(logits)
    ndim = logits.ndim
    if ndim == 0:
        raise FlamefxValueError(f"categorical: logits must have at least one axis\n  at "
                                f"{user_frame()}")
    axis = _canonical_axis(axis, ndim)
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]
    shape = batch_shape if shape is None else draw_shape(shape, "categorical", batch_shape)
    prefix = shape[:len(shape) - len(batch_shape)]
    if replace:
        logits_shape = list(shape[len(shape) - len(batch_shape):])
        logits_shape.insert(axis, logits.shape[axis])
        noise = gumbel(data, prefix + tuple(logits_shape), logits.dtype, mode=mode)
        expanded = fnp.reshape(logits, (1,) * len(prefix) + logits.shape)
        return fnp.argmax(noise + expanded, axis=axis + len(prefix))
    k = math.prod(prefix)
    if k > logits.shape[axis]:
        raise FlamefxValueError(f"categorical: number of samples without replacement ({k}) "
                                f"cannot exceed the number of categories "
                                f"({logits.shape[axis]})\n  at {user_frame()}")
    perturbed = logits + gumbel(data, logits.shape, logits.dtype, mode=mode)
    indices = sorting.top_k(fnp.moveaxis(perturbed, axis, -1), k)[1]  # batch_shape + (k,)
    indices = fnp.moveaxis(indices, -1, 0)
    return fnp.reshape(indices, shape)


def _canonical_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise FlamefxValueError(f"axis {axis} is out of bounds for an array of rank {ndim}"
                                f"\n  at {user_frame()}")
    return axis % ndim


def _shuffle(data, x, axis: int):
    """JAX's _shuffle: rounds of a stable sort of ``x`` along ``axis`` by random words
    (enough rounds that ties among the words are unlikely: chance ~ size**2 / 2**(32 rounds))."""
    rounds = int(np.ceil(3 * np.log(max(1, x.size)) / np.log(np.iinfo(np.uint32).max)))
    for _ in range(rounds):
        keys = split(data)
        data, subkey = keys[0], keys[1]
        _, x = sorting.sort_key_val(random_bits(subkey, 32, x.shape), x, dimension=axis)
    return x


def permutation(key, x, axis: int = 0, independent: bool = False):
    """A random permutation of ``range(x)`` (int ``x``) or of ``x`` along ``axis``;
    ``independent=True`` shuffles each slice along ``axis`` on its own.

    >>> from flamefx.random.keys import key
    >>> permutation(key(0), fnp.arange(4.0)).shape
    (4,)
    """
    data, _ = unwrap(key, "permutation")
    if isinstance(x, (int, np.integer)):
        return _shuffle(data, fnp.arange(int(x)), 0)
    x = core.ensure_array(x)
    if x.ndim == 0:
        if not dtypes.is_int(x.dtype):
            raise FlamefxTypeError(f"permutation: x must be an integer or at least "
                                   f"1-dimensional, got {x.aval.str_short()}\n  at {user_frame()}")
        raise FlamefxTypeError(f"permutation: an integer x must be a Python int (its value "
                               f"fixes the output's shape)\n  at {user_frame()}")
    axis = _canonical_axis(axis, x.ndim)
    if independent or x.ndim == 1:
        return _shuffle(data, x, axis)
    order = _shuffle(data, fnp.arange(x.shape[axis]), 0)
    return fnp.take(x, order, axis=axis)


def choice(key, a, shape=(), replace: bool = True, p=None, axis: int = 0, mode=None):
    """Random elements of ``a`` along ``axis`` (or of ``range(a)`` for an int), with or
    without replacement, optionally weighted by ``p``.

    >>> from flamefx.random.keys import key
    >>> choice(key(0), 5, (3,), replace=False).shape
    (3,)
    """
    data, _ = unwrap(key, "choice")
    if not isinstance(shape, (tuple, list)):
        raise FlamefxTypeError(f"choice: shape must be a sequence, got {shape!r}\n  at "
                               f"{user_frame()}")
    shape = as_shape(shape, "choice")
    arr = fnp.asarray(a)
    if arr.ndim == 0:
        if not isinstance(a, (int, np.integer)):
            raise FlamefxTypeError(f"choice: a must be a Python int or an array of rank >= 1,"
                                   f" got {arr.aval.str_short()}\n  at {user_frame()}")
        n_inputs = int(a)
    else:
        axis = _canonical_axis(axis, arr.ndim)
        n_inputs = arr.shape[axis]
    n_draws = math.prod(shape)
    if n_draws == 0:
        return fnp.zeros(shape, arr.dtype)
    if n_inputs <= 0:
        raise FlamefxValueError(f"choice: a must be greater than 0 unless no samples are "
                                f"taken\n  at {user_frame()}")
    if not replace and n_draws > n_inputs:
        raise FlamefxValueError(f"choice: cannot take a larger sample (size {n_draws}) than "
                                f"the population (size {n_inputs}) with replace=False\n  at "
                                f"{user_frame()}")
    if p is None and replace:
        ind = randint(data, shape, 0, n_inputs)
        result = ind if arr.ndim == 0 else fnp.take(arr, ind, axis=axis)
    elif p is None:  # the first n_draws of a permutation along the axis
        permuted = permutation(data, n_inputs if arr.ndim == 0 else arr, axis)
        along = axis if arr.ndim else 0
        limit = tuple(n_draws if d == along else size for d, size in enumerate(permuted.shape))
        result = structural.slice(permuted, (0,) * permuted.ndim, limit)
    else:
        ind = _weighted_indices(data, p, n_inputs, shape, replace, mode)
        result = ind if arr.ndim == 0 else fnp.take(arr, ind, axis=axis)
    out_shape = shape if arr.ndim == 0 else arr.shape[:axis] + shape + arr.shape[axis + 1:]
    return fnp.reshape(result, out_shape)


def _weighted_indices(data, p, n_inputs: int, shape, replace: bool, mode):
    p = fnp.asarray(p)
    if not dtypes.is_float(p.dtype):
        p = p.astype(dtypes.default_float())
    if p.shape != (n_inputs,):
        raise FlamefxValueError(f"choice: p must be None or a 1-D vector with the size of "
                                f"a.shape[axis] ({n_inputs}), got shape {p.shape}\n  at "
                                f"{user_frame()}")
    if replace:
        cumulative = fnp.cumsum(p)
        r = cumulative[-1] * (1 - uniform_from_data(data, shape, p.dtype, 0.0, 1.0))
        return fnp.searchsorted(cumulative, r).astype(dtypes.default_int())
    g = gumbel(data, (n_inputs,), p.dtype, mode=mode) + fnp.log(p)
    return sorting.top_k(g, math.prod(shape))[1]


def _poisson_knuth(data, lam, shape, dtype, max_iters):
    """Knuth's method (small rates): count uniforms until their product drops below
    exp(-lam); one key stream for the whole array, as JAX."""
    def body(carry):
        i, k, rng, log_prod = carry
        keys = split(rng)
        k = fnp.where(log_prod > -lam, k + 1, k)
        u = uniform_from_data(keys[1], shape, dtypes.float32, 0.0, 1.0)
        return i + 1, k, keys[0], log_prod + fnp.log(u)

    def cond(carry):
        i, _, _, log_prod = carry
        return fnp.any(log_prod > -lam) & (i < max_iters)

    init = (fnp.asarray(0, dtype), fnp.zeros(shape, dtype), data,
            fnp.zeros(shape, dtypes.float32))
    k = control_flow.while_loop(cond, body, init)[1]
    return (k - 1).astype(dtype)


def _poisson_rejection(data, lam, shape, dtype, max_iters):
    """Hormann's transformed rejection with squeeze (PTRS, 1993) for large rates."""
    log_lam = fnp.log(lam)
    b = 0.931 + 2.53 * fnp.sqrt(lam)
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2)

    def body(carry):
        i, k_out, accepted, rng = carry
        rng, key_u, key_v = split(rng, 3)
        u = uniform_from_data(key_u, shape, lam.dtype, 0.0, 1.0) - 0.5
        v = uniform_from_data(key_v, shape, lam.dtype, 0.0, 1.0)
        u_shifted = 0.5 - fnp.abs(u)
        k = fnp.floor((2 * a / u_shifted + b) * u + lam + 0.43)
        s = fnp.log(v * inv_alpha / (a / (u_shifted * u_shifted) + b))
        t = -lam + k * log_lam - special.lgamma(k + 1)
        accept1 = (u_shifted >= 0.07) & (v <= v_r)
        reject = (k < 0) | ((u_shifted < 0.013) & (v > u_shifted))
        accept = accept1 | (~reject & (s <= t))
        return i + 1, fnp.where(accept, k, k_out), accepted | accept, rng

    def cond(carry):
        i, _, accepted, _ = carry
        return fnp.any(~accepted) & (i < max_iters)

    init = (fnp.asarray(0, dtype), fnp.full(shape, -1.0, lam.dtype),
            fnp.zeros(shape, dtypes.bool_), data)
    return control_flow.while_loop(cond, body, init)[1].astype(dtype)


def poisson(key, lam, shape=None, dtype=None):
    """Poisson(``lam``) integers: Knuth's method below rate 10, transformed rejection at
    and above it (as JAX; ``lam`` is taken in float32, as JAX does).

    >>> from flamefx.random.keys import key
    >>> poisson(key(0), fnp.array([0.5, 50.0])).shape
    (2,)
    """
    data, _ = unwrap(key, "poisson")
    dtype = dtypes.canonicalize(int if dtype is None else dtype)
    if not dtypes.is_int(dtype):
        raise FlamefxTypeError(f"poisson: dtype must be an integer dtype, got {dtype}"
                               f"\n  at {user_frame()}")
    shape = np.shape(lam) if shape is None else as_shape(shape, "poisson")
    lam = fnp.broadcast_to(fnp.asarray(lam), shape).astype(dtypes.float32)
    use_knuth = fnp.isnan(lam) | (lam < 10)
    lam_knuth = fnp.where(use_knuth, lam, 0.0)
    lam_rejection = fnp.where(use_knuth, 1e5, lam)
    max_iters = int(np.iinfo(dtype).max)
    result = fnp.where(use_knuth, _poisson_knuth(data, lam_knuth, shape, dtype, max_iters),
                       _poisson_rejection(data, lam_rejection, shape, dtype, max_iters))
    return fnp.where(lam == 0, fnp.zeros_like(result), result)


_STIRLING_TAIL = (0.0810614667953272, 0.0413406959554092, 0.0276779256849983,
                  0.02079067210376509, 0.0166446911898211, 0.0138761288230707,
                  0.0118967099458917, 0.010411265261972, 0.00925546218271273,
                  0.00833056343336287)


def _stirling_approx_tail(k):
    """log(k!) minus its Stirling approximation: tabulated below 10, a series above."""
    use_table = k <= 9
    k = fnp.clip(fnp.where(use_table, k, 0.0), 0.0, 9.0)  # NaN (invalid counts) too
    kp1sq = (k + 1) * (k + 1)
    approx = (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1)
    table = fnp.asarray(_STIRLING_TAIL, k.dtype)
    return fnp.where(use_table, fnp.take(table, fnp.floor(k).astype(dtypes.int32)), approx)


def _binomial_inversion(data, count, prob, shape, max_iters):
    """Small count * p: count geometric waiting times until they pass ``count``."""
    log1minusprob = fnp.log1p(-prob)

    def body(carry):
        i, num_geom, geom_sum, rng = carry
        subkey, rng = split(rng)  # (sic) JAX takes the first key for the draw here
        num_geom_out = fnp.where(geom_sum <= count, num_geom + 1, num_geom)
        u = uniform_from_data(subkey, shape, prob.dtype, 0.0, 1.0)
        return i + 1, num_geom_out, geom_sum + fnp.ceil(fnp.log(u) / log1minusprob), rng

    def cond(carry):
        i, _, geom_sum, _ = carry
        return fnp.any(geom_sum <= count) & (i < max_iters)

    zeros = fnp.zeros(shape, prob.dtype)
    init = (fnp.asarray(0, dtypes.int32), zeros, zeros, data)
    return control_flow.while_loop(cond, body, init)[1] - 1


def _btrs(data, count, prob, shape, max_iters):
    """Large count * p: Hormann's transformed rejection with squeeze (BTRS, 1993)."""
    stddev = fnp.sqrt(count * prob * (1 - prob))
    b = 1.15 + 2.53 * stddev
    a = -0.0873 + 0.0248 * b + 0.01 * prob
    c = count * prob + 0.5
    v_r = 0.92 - 4.2 / b
    r = prob / (1 - prob)
    alpha = (2.83 + 5.1 / b) * stddev
    m = fnp.floor((count + 1) * prob)
    tail = _stirling_approx_tail

    def body(carry):
        i, k_out, accepted, rng = carry
        rng, key_u, key_v = split(rng, 3)
        u = uniform_from_data(key_u, shape, prob.dtype, 0.0, 1.0) - 0.5
        v = uniform_from_data(key_v, shape, prob.dtype, 0.0, 1.0)
        us = 0.5 - fnp.abs(u)
        accept1 = (us >= 0.07) & (v <= v_r)
        k = fnp.floor((2 * a / us + b) * u + c)
        reject = (k < 0) | (k > count)
        v = fnp.log(v * alpha / (a / (us * us) + b))
        bound = ((m + 0.5) * fnp.log((m + 1) / (r * (count - m + 1)))
                 + (count + 1) * fnp.log((count - m + 1) / (count - k + 1))
                 + (k + 0.5) * fnp.log(r * (count - k + 1) / (k + 1))
                 + tail(m) + tail(count - m) - tail(k) - tail(count - k))
        accept = accept1 | (~reject & (v <= bound))
        return i + 1, fnp.where(accept, k, k_out), accepted | accept, rng

    def cond(carry):
        i, _, accepted, _ = carry
        return fnp.any(~accepted) & (i < max_iters)

    init = (fnp.asarray(0, dtypes.int32), fnp.full(shape, -1.0, prob.dtype),
            fnp.zeros(shape, dtypes.bool_), data)
    return control_flow.while_loop(cond, body, init)[1]


def binomial(key, n, p, shape=None, dtype=None):
    """Binomial(``n``, ``p``) counts, as floats (JAX's dtype rule): inversion where
    ``n * min(p, 1-p) <= 10``, transformed rejection (BTRS) above; NaN for invalid
    parameters, inf for infinite ``n``. The loops stop at 2**31 - 1 rounds (JAX: float max).

    >>> from flamefx.random.keys import key
    >>> binomial(key(0), 10.0, 0.5, (4,)).shape
    (4,)
    """
    from flamefx.random.continuous import as_param, float_dtype

    data, _ = unwrap(key, "binomial")
    dtype = float_dtype(dtype, "binomial")
    shape = param_shape(shape, "binomial", n, p)
    prob = fnp.asarray(p)
    prob = prob if dtypes.is_float(prob.dtype) else prob.astype(dtypes.default_float())
    count = fnp.broadcast_to(as_param(n, prob.dtype, "binomial"), shape)
    prob = fnp.broadcast_to(prob, shape)
    p_lt_half = prob < 0.5
    q = fnp.where(p_lt_half, prob, 1.0 - prob)
    count_nan_or_neg = fnp.isnan(count) | (count < 0.0)
    count_inf = fnp.isinf(count)
    q_is_nan, q_l_0 = fnp.isnan(q), q < 0.0
    q = fnp.where(q_is_nan | q_l_0, 0.01, q)
    use_inversion = count_nan_or_neg | (count * q <= 10.0)
    count = fnp.floor(count)
    max_iters = int(np.iinfo(np.int32).max)
    inverted = _binomial_inversion(data, fnp.where(use_inversion, count, 0.0), q, shape,
                                   max_iters)
    rejected = _btrs(data, fnp.where(use_inversion, 10000.0, count),
                     fnp.where(use_inversion, 0.5, q), shape, max_iters)
    samples = fnp.where(use_inversion, inverted, rejected).astype(dtype)
    invalid = q_l_0 | q_is_nan | count_nan_or_neg
    samples = fnp.where(invalid, fnp.full_like(samples, np.nan), samples)
    samples = fnp.where(count_inf & ~invalid, fnp.full_like(samples, np.inf), samples)
    keep = p_lt_half | count_nan_or_neg | q_is_nan | count_inf
    return fnp.where(keep, samples, count.astype(dtype) - samples)


def multinomial(key, n, p, *, shape=None, dtype=None):
    """Multinomial(``n``, ``p``) count vectors along the last axis (``p``'s last axis), as
    floats: a scan of conditional binomial draws over the categories (as JAX).

    >>> from flamefx.random.keys import key
    >>> x = multinomial(key(0), 10.0, fnp.array([0.2, 0.3, 0.5]))
    >>> float(x.sum())
    10.0
    """
    from flamefx.random.continuous import float_dtype

    data, _ = unwrap(key, "multinomial")
    p = fnp.asarray(p)
    p = p if dtypes.is_float(p.dtype) else p.astype(dtypes.default_float())
    n = fnp.asarray(n).astype(p.dtype)
    dtype = float_dtype(dtype, "multinomial")
    shape = p.shape if shape is None else as_shape(shape, "multinomial")
    n = fnp.broadcast_to(n, shape[:-1])
    p = fnp.moveaxis(fnp.broadcast_to(p, shape), -1, 0)
    remaining = fnp.flip(fnp.cumsum(fnp.flip(p, 0), axis=0), 0)
    ratios = p / fnp.where(remaining == 0, 1, remaining)

    def draw(remainder, ratio_key):
        ratio, k = ratio_key
        count = binomial(k, remainder, fnp.clip(ratio, 0, 1), dtype=remainder.dtype)
        return remainder - count, count

    _, counts = scan(draw, n, (ratios, split(data, ratios.shape[0])))
    return fnp.moveaxis(counts, 0, -1).astype(dtype)
