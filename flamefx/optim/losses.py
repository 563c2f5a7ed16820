"""optax's ``losses`` namespace: regression, classification and sequence losses.

Per-example losses keep the batch shape (reduce them with ``mean``), as in optax. The ones
``flamefx.nn`` already has (``l2_loss``, the cross-entropies) are that same code,
re-exported, so there is one version of each. The ``where=`` arguments some of optax's
losses take are not supported.

>>> import flamefx.numpy as fnp
>>> from flamefx.optim import losses
>>> losses.huber_loss(fnp.array([0.5, 3.0]), fnp.array([0.0, 0.0])).tolist()
[0.125, 2.5]
"""

from __future__ import annotations

import numpy as np

import flamefx.numpy as fnp
from flamefx import lax
from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.nn.activations import log_sigmoid, log_softmax, softmax
from flamefx.nn.losses import (
    l2_loss,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)

__all__ = [
    "convex_kl_divergence",
    "cosine_distance",
    "cosine_similarity",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "hinge_loss",
    "huber_loss",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "l2_loss",
    "log_cosh",
    "poly_loss_cross_entropy",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_labels",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "squared_error",
]


def _floating(x, name: str, what: str):
    x = fnp.asarray(x)
    if not fnp.issubdtype(x.dtype, fnp.floating):
        raise FlamefxTypeError(f"{name}: {what} must be floating point, got {x.dtype} "
                               f"(shape {x.shape})\n  at {user_frame()}")
    return x


def _errors(name: str, predictions, targets):
    predictions = _floating(predictions, name, "predictions")
    if targets is None:
        return predictions
    targets = fnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise FlamefxValueError(f"{name}: predictions and targets must have one shape, got "
                                f"{predictions.shape} and {targets.shape}\n  at {user_frame()}")
    return predictions - targets


# --- regression ----------------------------------------------------------------------------


def squared_error(predictions, targets=None):
    """Elementwise ``(predictions - targets) ** 2`` (``predictions ** 2`` without targets).

    >>> squared_error(fnp.array([3.0]), fnp.array([1.0])).tolist()
    [4.0]
    """
    errors = _errors("squared_error", predictions, targets)
    return errors * errors


def huber_loss(predictions, targets=None, *, delta: float = 1.0):
    """Elementwise Huber loss: ``0.5 * e**2`` for ``|e| <= delta``, ``delta * (|e| -
    0.5 * delta)`` beyond.

    >>> huber_loss(fnp.array([2.0]), delta=1.0).tolist()
    [1.5]
    """
    abs_errors = fnp.abs(_errors("huber_loss", predictions, targets))
    quadratic = fnp.minimum(abs_errors, delta)
    return 0.5 * quadratic * quadratic + delta * (abs_errors - quadratic)


def log_cosh(predictions, targets=None):
    """Elementwise ``log(cosh(e))``, written as ``logaddexp(e, -e) - log 2`` so it does not
    overflow for large errors.

    >>> round(float(log_cosh(fnp.array(1.0))), 6)
    0.433781
    """
    errors = _errors("log_cosh", predictions, targets)
    return fnp.logaddexp(errors, -errors) - np.log(2.0).astype(errors.dtype)


def cosine_similarity(predictions, targets, *, epsilon: float = 0.0, axis=-1):
    """``<a, b> / (|a| |b|)`` along ``axis``; squared norms are clipped below at
    ``epsilon``.

    >>> float(cosine_similarity(fnp.array([1.0, 0.0]), fnp.array([2.0, 0.0])))
    1.0
    """
    a = _floating(predictions, "cosine_similarity", "predictions")
    b = _floating(targets, "cosine_similarity", "targets")
    a_norm = fnp.sqrt(fnp.maximum(fnp.sum(a * a, axis=axis, keepdims=True), epsilon))
    b_norm = fnp.sqrt(fnp.maximum(fnp.sum(b * b, axis=axis, keepdims=True), epsilon))
    return fnp.sum((a / a_norm) * (b / b_norm), axis=axis)


def cosine_distance(predictions, targets, *, epsilon: float = 0.0, axis=-1):
    """``1 - cosine_similarity(predictions, targets)``.

    >>> float(cosine_distance(fnp.array([1.0, 0.0]), fnp.array([0.0, 3.0])))
    1.0
    """
    return 1.0 - cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis)


# --- classification ------------------------------------------------------------------------


def hinge_loss(predictor_outputs, targets):
    """Elementwise ``max(0, 1 - outputs * targets)`` with targets in {-1, +1}.

    >>> hinge_loss(fnp.array([0.5, 2.0]), fnp.array([1.0, 1.0])).tolist()
    [0.5, 0.0]
    """
    return fnp.maximum(0, 1 - fnp.asarray(predictor_outputs) * fnp.asarray(targets))


def kl_divergence(log_predictions, targets, axis=-1):
    """``sum(targets * (log(targets) - log_predictions))`` along ``axis``; a zero target
    contributes 0 (and no NaN gradient).

    >>> float(kl_divergence(fnp.log(fnp.array([0.5, 0.5])), fnp.array([0.5, 0.5])))
    0.0
    """
    log_predictions = _floating(log_predictions, "kl_divergence", "log_predictions")
    targets = _floating(targets, "kl_divergence", "targets")
    zero = targets == 0
    log_targets = fnp.where(zero, 0.0, fnp.log(fnp.where(zero, 1.0, targets)))
    return fnp.sum(targets * (log_targets - log_predictions), axis=axis)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1):
    """``sum(exp(log_targets) * (log_targets - log_predictions))`` along ``axis``.

    >>> float(kl_divergence_with_log_targets(fnp.array([-1.0]), fnp.array([-1.0])))
    0.0
    """
    log_predictions = _floating(log_predictions, "kl_divergence_with_log_targets",
                                "log_predictions")
    log_targets = _floating(log_targets, "kl_divergence_with_log_targets", "log_targets")
    return fnp.sum(fnp.exp(log_targets) * (log_targets - log_predictions), axis=axis)


def convex_kl_divergence(log_predictions, targets, axis=-1):
    """The generalized KL divergence ``kl_divergence + sum(exp(log_predictions) -
    targets)``, convex in ``log_predictions`` (for unnormalized measures).

    >>> float(convex_kl_divergence(fnp.array([0.0]), fnp.array([1.0])))
    0.0
    """
    return (kl_divergence(log_predictions, targets, axis=axis)
            + fnp.sum(fnp.exp(log_predictions) - targets, axis=axis))


def safe_softmax_cross_entropy(logits, labels):
    """Softmax cross-entropy over the last axis in which a zero label contributes exactly
    0, even where its logit is ``-inf`` (a masked class): no ``0 * -inf`` NaN.

    >>> abs(float(safe_softmax_cross_entropy(fnp.array([0.0, -fnp.inf]),
    ...                                      fnp.array([1.0, 0.0]))))
    0.0
    """
    logits = _floating(logits, "safe_softmax_cross_entropy", "logits")
    log_probs = log_softmax(logits, axis=-1)
    labels = fnp.asarray(labels)
    nonzero = labels != 0.0
    weighted = fnp.where(nonzero, labels * fnp.where(nonzero, log_probs, 0.0), 0.0)
    return -fnp.sum(weighted, axis=-1)


def poly_loss_cross_entropy(logits, labels, *, epsilon: float = 2.0, axis=-1):
    """Poly-1 loss (Leng et al. 2022): cross-entropy plus ``epsilon * sum(labels * (1 -
    softmax(logits)))``.

    >>> round(float(poly_loss_cross_entropy(fnp.array([0.0, 0.0]), fnp.array([1.0, 0.0]))), 4)
    1.6931
    """
    logits = _floating(logits, "poly_loss_cross_entropy", "logits")
    labels = _floating(labels, "poly_loss_cross_entropy", "labels")
    one_minus_pt = fnp.sum(labels * (1 - softmax(logits, axis=axis)), axis=axis)
    return softmax_cross_entropy(logits, labels, axis=axis) + epsilon * one_minus_pt


def sigmoid_focal_loss(logits, labels, *, alpha: float | None = None, gamma: float = 2.0):
    """Focal loss (Lin et al. 2017), elementwise: binary cross-entropy weighted by
    ``(1 - p_t) ** gamma``, and by ``alpha`` / ``1 - alpha`` on positives / negatives.

    ``(1 - p_t) ** gamma`` is computed as ``exp(gamma * log(1 - p_t))`` with ``log(1 - p_t)``
    a log-sum-exp of log-sigmoids, finite for any logit (as optax).

    >>> round(float(sigmoid_focal_loss(fnp.array(0.0), fnp.array(1.0))), 6)
    0.173287
    """
    logits = _floating(logits, "sigmoid_focal_loss", "logits")
    labels = fnp.asarray(labels).astype(logits.dtype)
    log_p, log_q = log_sigmoid(logits), log_sigmoid(-logits)
    # log(1 - p_t) = log((1 - y) p + y q) for labels y in [0, 1].
    top = fnp.maximum(log_p, log_q)
    log_one_minus_pt = top + fnp.log((1 - labels) * fnp.exp(log_p - top)
                                     + labels * fnp.exp(log_q - top))
    loss = sigmoid_binary_cross_entropy(logits, labels) * fnp.exp(gamma * log_one_minus_pt)
    if alpha is None:
        return loss
    return (alpha * labels + (1.0 - alpha) * (1.0 - labels)) * loss


def smooth_labels(labels, alpha: float):
    """Label smoothing: ``(1 - alpha) * labels + alpha / num_categories`` (last axis).

    >>> smooth_labels(fnp.array([1.0, 0.0]), 0.5).tolist()
    [0.75, 0.25]
    """
    labels = _floating(labels, "smooth_labels", "labels")
    return (1.0 - alpha) * labels + alpha / labels.shape[-1]


# --- sequences: CTC ------------------------------------------------------------------------


def _check_ctc_shapes(logits, logit_paddings, labels, label_paddings):
    def fail(message):
        raise FlamefxValueError(f"ctc_loss: {message}; got logits {logits.shape}, "
                                f"logit_paddings {logit_paddings.shape}, labels {labels.shape}, "
                                f"label_paddings {label_paddings.shape}\n  at {user_frame()}")

    if logits.ndim != 3:
        fail("logits must be [batch, time, classes]")
    if labels.ndim != 2:
        fail("labels must be [batch, label_length]")
    if label_paddings.shape != labels.shape:
        fail("label_paddings must have the shape of labels")
    if logit_paddings.shape != logits.shape[:2]:
        fail("logit_paddings must be [batch, time]")
    if labels.shape[0] != logits.shape[0]:
        fail("logits and labels must have one batch size")


def ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, *,
                                blank_id: int = 0, log_epsilon: float = -1e5):
    """CTC loss (Graves et al. 2006) and the forward variables, as optax computes them.

    ``logits [B, T, K]``; ``labels [B, N]`` (integers); paddings are 1.0 at padded
    positions (padding at the end). Returns ``(per_seq_loss [B], logalpha_blank [T, B,
    N + 1], logalpha_emit [T, B, N])``: the log-probabilities of the prefixes ending in a
    blank after ``n`` labels / in label ``n``. The forward recursion runs in log space in a
    ``lax.scan`` over time; impossible states hold ``log_epsilon`` (not ``-inf``), so the
    loss and its gradient stay finite. Repeated labels need a blank between them.

    >>> logits = fnp.zeros((1, 3, 3))
    >>> loss, _, _ = ctc_loss_with_forward_probs(logits, fnp.zeros((1, 3)),
    ...                                          fnp.array([[1, 2]]), fnp.zeros((1, 2)))
    >>> round(float(loss[0]), 4)  # -log(5 / 27): 5 of the 27 paths read "1 2"
    1.6864
    """
    logits = _floating(logits, "ctc_loss", "logits")
    logit_paddings, labels = fnp.asarray(logit_paddings), fnp.asarray(labels)
    label_paddings = fnp.asarray(label_paddings)
    _check_ctc_shapes(logits, logit_paddings, labels, label_paddings)
    batch, _, num_classes = logits.shape
    max_label_length = labels.shape[1]
    dtype = logits.dtype

    log_probs = log_softmax(logits)
    label_lengths = max_label_length - fnp.sum(label_paddings, axis=1).astype(fnp.int32)
    # 1 where a label repeats the one before it: that transition must pass through a blank.
    repeat = (labels[:, :-1] == labels[:, 1:]).astype(dtype)
    repeat = fnp.pad(repeat, ((0, 0), (0, 1)))
    log_probs_blank = fnp.transpose(log_probs[:, :, blank_id:blank_id + 1], (1, 0, 2))
    one_hot = (labels[..., None] == np.arange(num_classes)).astype(dtype)  # [B, N, K]
    log_probs_emit = fnp.transpose(fnp.einsum("btk,bnk->btn", log_probs, one_hot), (1, 0, 2))

    blank_init = np.full((batch, max_label_length + 1), log_epsilon)
    blank_init[:, 0] = 0.0
    emit_init = np.full((batch, max_label_length), log_epsilon)

    def add_to_blank(blank, score):
        return fnp.concatenate([blank[:, :1], fnp.logaddexp(blank[:, 1:], score)], axis=-1)

    def step(carry, x):
        prev_blank, prev_emit = carry
        emit_log_prob, blank_log_prob, pad = x
        blank = add_to_blank(prev_blank, prev_emit + log_epsilon * repeat)
        emit = fnp.logaddexp(blank[:, :-1] + emit_log_prob, prev_emit + emit_log_prob)
        next_blank = add_to_blank(blank + blank_log_prob,
                                  prev_emit + blank_log_prob + log_epsilon * (1.0 - repeat))
        pad = pad.reshape((batch, 1))
        emit = pad * prev_emit + (1.0 - pad) * emit
        next_blank = pad * prev_blank + (1.0 - pad) * next_blank
        return (next_blank, emit), (next_blank, emit)

    xs = (log_probs_emit, log_probs_blank, fnp.transpose(logit_paddings, (1, 0)).astype(dtype))
    init = (fnp.asarray(blank_init, dtype=dtype), fnp.asarray(emit_init, dtype=dtype))
    _, (log_alpha_blank, log_alpha_emit) = lax.scan(step, init, xs)
    # The last step may still end in a label: fold the emit states into the blank ones.
    last = add_to_blank(log_alpha_blank[-1], log_alpha_emit[-1])
    log_alpha_blank = fnp.concatenate([log_alpha_blank[:-1], last[None]], axis=0)
    ends = (label_lengths[:, None] == np.arange(max_label_length + 1)).astype(dtype)
    per_seq_loss = -fnp.sum(last * ends, axis=1)
    return per_seq_loss, log_alpha_blank, log_alpha_emit


def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id: int = 0,
             log_epsilon: float = -1e5):
    """Per-sequence CTC loss ``-log p(labels | logits)`` (see
    ``ctc_loss_with_forward_probs``).

    >>> ctc_loss(fnp.zeros((2, 4, 3)), fnp.zeros((2, 4)), fnp.array([[1, 2], [1, 1]]),
    ...          fnp.zeros((2, 2))).shape
    (2,)
    """
    return ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings,
                                       blank_id=blank_id, log_epsilon=log_epsilon)[0]
