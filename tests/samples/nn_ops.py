"""Samples for convolution, attention and the normalizations, with float64 references that
share no code with flamefx: conv as a direct loop over outputs and taps, attention as the
naive softmax, the norms as their textbook formulas."""

import itertools

import numpy as np

from tests.samples import Sample

# --- convolution ---------------------------------------------------------------------------


def _conv_out_spatial(spatial, kernel, strides, padding, lhs_dilation, rhs_dilation):
    return tuple(max(0, ((s - 1) * ld + 1 + lo + hi - ((k - 1) * rd + 1)) // st + 1)
                 for s, k, st, (lo, hi), ld, rd in zip(spatial, kernel, strides, padding,
                                                       lhs_dilation, rhs_dilation))


def _input_coords(pos, tap, strides, padding, lhs_dilation, rhs_dilation, spatial):
    """The input element that kernel tap ``tap`` reads for output position ``pos``, read
    through the input's dilation and padding by index arithmetic; None where it is a zero."""
    coords = []
    for p, t, st, rd, (lo, _), ld, size in zip(pos, tap, strides, rhs_dilation, padding,
                                               lhs_dilation, spatial):
        q = p * st + t * rd - lo  # coordinate in the dilated input
        if q < 0 or q % ld or q // ld >= size:
            return None
        coords.append(q // ld)
    return tuple(coords)


def _conv_terms(x_shape, w_shape, strides, padding, lhs_dilation, rhs_dilation, groups):
    """Every (example, output channel, output position, input channel, tap, input coords)
    product term of a convolution, as a direct loop enumerates them."""
    n, (o, cg), og = x_shape[0], w_shape[:2], w_shape[0] // groups
    spatial, kernel = x_shape[2:], w_shape[2:]
    out_spatial = _conv_out_spatial(spatial, kernel, strides, padding, lhs_dilation,
                                    rhs_dilation)
    for b, oc in itertools.product(range(n), range(o)):
        g = oc // og
        for pos in np.ndindex(*out_spatial):
            for ci in range(cg):
                for tap in np.ndindex(*kernel):
                    coords = _input_coords(pos, tap, strides, padding, lhs_dilation,
                                           rhs_dilation, spatial)
                    if coords is not None:
                        yield b, oc, pos, ci, tap, (b, g * cg + ci) + coords


def conv_reference(x, w, strides, padding, lhs_dilation, rhs_dilation, groups):
    """A direct loop: out[n, o, p] = sum over in-group channels and taps of x * w."""
    out_spatial = _conv_out_spatial(x.shape[2:], w.shape[2:], strides, padding, lhs_dilation,
                                    rhs_dilation)
    out = np.zeros((x.shape[0], w.shape[0]) + out_spatial)
    for b, oc, pos, ci, tap, at in _conv_terms(x.shape, w.shape, strides, padding,
                                               lhs_dilation, rhs_dilation, groups):
        out[(b, oc) + pos] += x[at] * w[(oc, ci) + tap]
    return out


def conv_weight_grad_reference(ct, x, w_shape, strides, padding, lhs_dilation, rhs_dilation,
                               groups):
    """A direct loop: dw[o, c, tap] = sum over examples and output positions of ct * x."""
    dw = np.zeros(w_shape)
    for b, oc, pos, ci, tap, at in _conv_terms(x.shape, w_shape, strides, padding,
                                               lhs_dilation, rhs_dilation, groups):
        dw[(oc, ci) + tap] += ct[(b, oc) + pos] * x[at]
    return dw


def _conv_params(strides, padding, lhs_dilation, rhs_dilation, groups):
    return {"window_strides": strides, "padding": padding, "lhs_dilation": lhs_dilation,
            "rhs_dilation": rhs_dilation, "feature_group_count": groups, "precision": None}


def _conv_sample(x_shape, w_shape, strides, padding, lhs_dilation=None, rhs_dilation=None,
                 groups=1, name=""):
    n_spatial = len(x_shape) - 2
    lhs_dilation = lhs_dilation or (1,) * n_spatial
    rhs_dilation = rhs_dilation or (1,) * n_spatial
    params = dict(_conv_params(strides, padding, lhs_dilation, rhs_dilation, groups),
                  preferred_element_type=None)
    return Sample(
        make=lambda rng: [rng.standard_normal(x_shape), rng.standard_normal(w_shape)],
        params=params,
        reference=lambda x, w: conv_reference(x, w, strides, padding, lhs_dilation,
                                              rhs_dilation, groups),
        grad_argnums=(0, 1), name=name)


def _weight_grad_sample(x_shape, w_shape, strides, padding, lhs_dilation=None,
                        rhs_dilation=None, groups=1, name=""):
    """The weight gradient of the conv sample of the same arguments: (ct, x) -> dw."""
    n_spatial = len(x_shape) - 2
    lhs_dilation = lhs_dilation or (1,) * n_spatial
    rhs_dilation = rhs_dilation or (1,) * n_spatial
    ct_shape = (x_shape[0], w_shape[0]) + _conv_out_spatial(
        x_shape[2:], w_shape[2:], strides, padding, lhs_dilation, rhs_dilation)
    params = dict(_conv_params(strides, padding, lhs_dilation, rhs_dilation, groups),
                  kernel_shape=w_shape)
    return Sample(
        make=lambda rng: [rng.standard_normal(ct_shape), rng.standard_normal(x_shape)],
        params=params,
        reference=lambda ct, x: conv_weight_grad_reference(
            ct, x, w_shape, strides, padding, lhs_dilation, rhs_dilation, groups),
        grad_argnums=(0, 1), name=name)


# (x shape, w shape, strides, padding, keyword arguments), one conv per entry.
CONV_CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), {"name": "3x3 same"}),
    ((1, 2, 7, 5), (3, 2, 3, 2), (2, 2), ((1, 0), (0, 1)),
     {"rhs_dilation": (1, 2), "name": "stride 2, odd input, dilated kernel"}),
    ((2, 4, 6), (6, 2, 3), (1,), ((2, 1),),
     {"lhs_dilation": (2,), "groups": 2, "name": "1-D grouped, lhs dilation (transposed conv)"}),
    ((1, 5, 4, 3), (5, 1, 2, 2), (1, 1), ((0, 0), (-1, 1)),
     {"groups": 5, "name": "depthwise, 5 channels, negative padding"}),
    ((1, 2, 3, 4, 3), (2, 2, 2, 2, 2), (1, 2, 1), ((0, 0), (1, 1), (0, 1)), {"name": "3-D"}),
    # Few output positions, many in-group rows: the weight gradient's (G, O/G, N * P) path.
    ((3, 4, 4, 4), (2, 4, 2, 2), (2, 2), ((0, 0), (0, 0)),
     {"name": "stride 2, four output positions"}),
]
CONV_SAMPLES = [_conv_sample(*case[:4], **case[4]) for case in CONV_CASES]


# --- attention -----------------------------------------------------------------------------


def _reference_scores(q, k, bias, is_causal, scale):
    """Scores with -inf where a key is hidden: causal, or a bias at float64's lowest value."""
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        s = np.where(bias <= np.finfo(bias.dtype).min, -np.inf, s + bias)
    if is_causal:
        s = np.where(np.tril(np.ones(s.shape[2:], bool)), s, -np.inf)
    return s


def attention_reference(q, k, v, bias=None, *, is_causal, scale, keep_probs=False):
    """softmax(q k^T * scale + bias) v and the log-sum-exp of each row (and the softmax
    itself with ``keep_probs``), in float64 (no row of the samples is fully masked)."""
    s = _reference_scores(q, k, bias, is_causal, scale)
    lse = np.log(np.sum(np.exp(s - s.max(-1, keepdims=True)), -1)) + s.max(-1)
    p = np.exp(s - lse[..., None])
    return [np.einsum("bhqk,bhkd->bhqd", p, v), lse] + ([p] if keep_probs else [])


def attention_bwd_reference(q, k, v, *rest, is_causal, scale, keep_probs=False):
    """Gradients of <dout, out> + <dlse, lse> by the textbook softmax derivative, with the
    given probabilities in place of softmax(q k^T) when they were kept."""
    if keep_probs:
        rest, kept = rest[:-1], rest[-1]
    bias, (out, lse, dout, dlse) = rest[:-4], rest[-4:]
    dout = np.broadcast_to(dout, out.shape)  # a (b, h, q, 1) dout is constant along dv
    s = _reference_scores(q, k, bias[0] if bias else None, is_causal, scale)
    p = kept if keep_probs else np.exp(s - lse[..., None])
    dp = np.einsum("bhqd,bhkd->bhqk", dout, v)
    ds = p * (dp - np.sum(dout * out, -1, keepdims=True)) + p * dlse[..., None]
    grads = [np.einsum("bhqk,bhkd->bhqd", ds, k) * scale,
             np.einsum("bhqk,bhqd->bhkd", ds, q) * scale,
             np.einsum("bhqk,bhqd->bhkd", p, dout)]
    if bias:
        axes = tuple(i for i in range(2) if bias[0].shape[i] == 1)
        grads.append(ds.sum(axis=axes, keepdims=True))
    return grads


def _attention_shapes(b, h, sq, sk, d, dv, bias_shape):
    shapes = [(b, h, sq, d), (b, h, sk, d), (b, h, sk, dv)]
    return shapes + ([bias_shape] if bias_shape else [])


def _attention_inputs(rng, shapes, masked_fraction):
    inputs = [rng.standard_normal(s) for s in shapes]
    if masked_fraction:  # hide some keys through the bias; every query keeps key 0
        hide = rng.random(shapes[3]) < masked_fraction
        hide[..., 0] = False
        inputs[3] = np.where(hide, np.finfo(np.float64).min, inputs[3])
    return inputs


def _attention_sample(b, h, sq, sk, d, dv, *, is_causal=False, scale=0.4, bias_shape=None,
                      masked_fraction=0.0, keep_probs=False, name=""):
    shapes = _attention_shapes(b, h, sq, sk, d, dv, bias_shape)
    params = {"is_causal": is_causal, "scale": scale, "keep_probs": keep_probs}
    return Sample(
        make=lambda rng: _attention_inputs(rng, shapes, masked_fraction),
        params=params, reference=lambda *a: attention_reference(*a, **params),
        grad_argnums=tuple(range(len(shapes))), name=name)


def _attention_bwd_sample(b, h, sq, sk, d, dv, *, is_causal=False, scale=0.4, bias_shape=None,
                          masked_fraction=0.0, keep_probs=False, dout_rows=False, name=""):
    shapes = _attention_shapes(b, h, sq, sk, d, dv, bias_shape)
    params = {"is_causal": is_causal, "scale": scale, "keep_probs": keep_probs}

    def make(rng):
        inputs = _attention_inputs(rng, shapes, masked_fraction)
        out, lse, *probs = attention_reference(*inputs, **params)
        dout_shape = out.shape[:-1] + (1,) if dout_rows else out.shape
        return inputs + [out, lse, rng.standard_normal(dout_shape),
                         rng.standard_normal(lse.shape)] + probs

    return Sample(
        make=make, params=params, reference=lambda *a: attention_bwd_reference(*a, **params),
        # out, lse and the kept probabilities enter linearly or through exp: all smooth.
        grad_argnums=tuple(range(len(shapes) + 4 + keep_probs)), name=name)


ATTENTION_CASES = [
    {"b": 2, "h": 2, "sq": 5, "sk": 7, "d": 8, "dv": 6, "name": "cross attention, odd lengths"},
    {"b": 1, "h": 2, "sq": 6, "sk": 6, "d": 4, "dv": 4, "is_causal": True, "name": "causal"},
    {"b": 2, "h": 2, "sq": 3, "sk": 4, "d": 4, "dv": 4, "bias_shape": (1, 2, 3, 4),
     "name": "bias shared by batch"},
    {"b": 1, "h": 1, "sq": 1, "sk": 1, "d": 3, "dv": 2, "name": "sequence 1"},
    {"b": 2, "h": 1, "sq": 4, "sk": 5, "d": 3, "dv": 3, "bias_shape": (2, 1, 4, 5),
     "masked_fraction": 0.4, "is_causal": True,
     "name": "keys hidden by the bias (lowest value) and causally"},
]


def _kept(case):
    return {**case, "name": case["name"] + ", probabilities kept"}


def _rows(case):
    """dout of shape (b, h, q, 1): one cotangent per query row, as jit passes the gradient
    of sum(attention(...)) (passes.narrow_attention_cotangents)."""
    return {**case, "dout_rows": True, "name": case["name"] + ", dout constant along dv"}


# --- normalizations ------------------------------------------------------------------------


def layer_norm_reference(x, scale, bias, *, axes, epsilon):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon) * scale + bias
    return [y, mean.squeeze(axes), 1 / np.sqrt(var.squeeze(axes) + epsilon)]


def group_norm_reference(x, scale, bias, *, num_groups, epsilon):
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, -1)
    mean = grouped.mean(-1)
    var = grouped.var(-1)
    y = (grouped - mean[..., None]) / np.sqrt(var[..., None] + epsilon)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    y = y.reshape(x.shape) * scale.reshape(per_channel) + bias.reshape(per_channel)
    return [y, mean, 1 / np.sqrt(var + epsilon)]


def rms_norm_reference(x, scale, *, axes, epsilon):
    ms = (x * x).mean(axis=axes, keepdims=True)
    return [x / np.sqrt(ms + epsilon) * scale, 1 / np.sqrt(ms.squeeze(axes) + epsilon)]


def _norm_sample(kind, x_shape, param_shape, params, name):
    reference = {"layer_norm": layer_norm_reference, "group_norm": group_norm_reference,
                 "rms_norm": rms_norm_reference}[kind]
    n_params = 1 if kind == "rms_norm" else 2

    def make(rng):
        x = rng.standard_normal(x_shape) * 2 + 0.5
        return [x] + [rng.standard_normal(param_shape) for _ in range(n_params)]
    return Sample(make=make, params=params, reference=lambda *a: reference(*a, **params),
                  grad_argnums=tuple(range(1 + n_params)), name=name)


def normalization_bwd_reference(x, scale, dy, mean, rstd, dmean, drstd, *, centered,
                                num_groups, n_axes):
    """dx, dscale, dbias by finite-free calculus: differentiate y = xhat * scale through the
    statistics with float64 autograd-free formulas on the (row, feature) layout."""
    rows = x.shape[0] * num_groups if num_groups else int(np.prod(x.shape[:x.ndim - n_axes]))
    m = x.size // rows
    dims = (1,) if num_groups else tuple(range(x.ndim - n_axes, x.ndim))
    param_shape = [x.shape[d] if d in dims else 1 for d in range(x.ndim)]
    xr = x.reshape(rows, m)
    mu = mean.reshape(rows, 1) if centered else 0.0
    rs = rstd.reshape(rows, 1)
    # Explicit Jacobian per row: xhat_j = (x_j - mu) * rs; dy contributes through xhat.
    g = (dy * scale.reshape(param_shape)).reshape(rows, m)
    dx = np.zeros_like(xr)
    for r in range(rows):
        xc = xr[r] - (mu[r, 0] if centered else 0.0)
        eye = np.eye(m)
        d_mu = np.full(m, 1.0 / m) if centered else np.zeros(m)
        d_rs = -rs[r, 0] ** 3 * xc / m  # d rstd / dx_i
        jac = (eye - d_mu[None, :]) * rs[r, 0] + xc[:, None] * d_rs[None, :]  # d xhat_j/dx_i
        dx[r] = jac.T @ g[r] + (dmean.reshape(rows)[r] * d_mu if centered else 0)
        dx[r] += drstd.reshape(rows)[r] * d_rs
    xhat = ((xr - mu) * rs).reshape(x.shape)
    not_param = tuple(d for d in range(x.ndim) if d not in dims)
    return [dx.reshape(x.shape), (dy * xhat).sum(axis=not_param), dy.sum(axis=not_param)]


def _norm_bwd_sample(kind, x_shape, param_shape, fwd_params, name):
    forward = {"layer_norm": layer_norm_reference, "group_norm": group_norm_reference,
               "rms_norm": rms_norm_reference}[kind]
    centered = kind != "rms_norm"
    num_groups = fwd_params.get("num_groups", 0)
    n_axes = len(fwd_params.get("axes", ()))
    params = {"centered": centered, "num_groups": num_groups, "n_axes": n_axes}

    def make(rng):
        x = rng.standard_normal(x_shape) * 2 + 0.5
        scale = rng.standard_normal(param_shape)
        extra = [np.zeros(param_shape)] if centered else []
        stats = forward(x, scale, *extra, **fwd_params)[1:]
        mean, rstd = stats if centered else (np.zeros_like(stats[0]), stats[0])
        return [x, scale, rng.standard_normal(x_shape), mean, rstd,
                rng.standard_normal(rstd.shape), rng.standard_normal(rstd.shape)]
    return Sample(make=make, params=params,
                  reference=lambda *a: normalization_bwd_reference(*a, **params),
                  grad_argnums=(0, 1, 2, 3, 4, 5, 6), name=name)


NORM_CASES = [
    ("layer_norm", (3, 5), (5,), {"axes": (1,), "epsilon": 1e-5}, "rows of 5"),
    ("layer_norm", (2, 3, 4), (3, 4), {"axes": (1, 2), "epsilon": 1e-3}, "two trailing axes"),
    ("group_norm", (2, 6, 3, 2), (6,), {"num_groups": 3, "epsilon": 1e-5}, "NCHW, 3 groups"),
    ("group_norm", (1, 5, 7), (5,), {"num_groups": 5, "epsilon": 1e-5}, "5 channels, 1-D"),
    ("group_norm", (3, 4), (4,), {"num_groups": 2, "epsilon": 1e-5}, "no spatial dims"),
    ("rms_norm", (4, 6), (6,), {"axes": (1,), "epsilon": 1e-6}, "rows of 6"),
]


# No 0-d samples here: convolution, attention and the normalizations need batch, channel or
# feature axes, so none of these ops takes a 0-d operand.
SAMPLES = {
    "conv_general_dilated": CONV_SAMPLES,
    "conv_weight_grad": [_weight_grad_sample(*case[:4], **case[4]) for case in CONV_CASES],
    "flash_attention": [_attention_sample(**case) for case in ATTENTION_CASES]
    + [_attention_sample(**_kept(case), keep_probs=True) for case in ATTENTION_CASES[::2]],
    "flash_attention_bwd": [_attention_bwd_sample(**case) for case in ATTENTION_CASES]
    + [_attention_bwd_sample(**_kept(case), keep_probs=True) for case in ATTENTION_CASES[::2]]
    + [_attention_bwd_sample(**_rows(_kept(case)), keep_probs=True)
       for case in ATTENTION_CASES[:3]]
    + [_attention_bwd_sample(**_rows(ATTENTION_CASES[1]))],
    "layer_norm": [_norm_sample(*c) for c in NORM_CASES if c[0] == "layer_norm"],
    "group_norm": [_norm_sample(*c) for c in NORM_CASES if c[0] == "group_norm"],
    "rms_norm": [_norm_sample(*c) for c in NORM_CASES if c[0] == "rms_norm"],
    "normalization_bwd": [_norm_bwd_sample(*c) for c in NORM_CASES],
}
