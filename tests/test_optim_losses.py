"""flamefx.optim.losses: each loss against its formula in float64 NumPy, gradients to order 2
(check_grads, both modes), the CTC loss against a brute-force sum over every alignment of
tiny inputs, and bad inputs raising flamefx errors that name the shapes."""

import itertools

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config
from flamefx.errors import FlamefxTypeError, FlamefxValueError
from flamefx.optim import losses
from flamefx.test_util import check_grads
from tests.grad_checks import check_grads_in

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 5))
B = RNG.standard_normal((3, 5))
PROBS = np.abs(RNG.standard_normal((3, 5))) + 0.1
PROBS[0, 1] = 0.0  # a zero target: kl_divergence must count it as 0
PROBS /= PROBS.sum(-1, keepdims=True)
BINARY = (RNG.random((3, 5)) > 0.5).astype(np.float64)


def _log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np_log_cosh(e):
    return np.log(np.cosh(e))


def _np_huber(e, delta=0.7):
    return np.where(np.abs(e) <= delta, 0.5 * e * e, delta * (np.abs(e) - 0.5 * delta))


def _np_cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _np_kl(log_q, p):
    safe = np.where(p > 0, p, 1.0)
    return np.sum(np.where(p > 0, p * (np.log(safe) - log_q), 0.0), -1)


def _np_focal(logits, labels, alpha=0.3, gamma=1.5):
    p = _sigmoid(logits)
    ce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    p_t = labels * p + (1 - labels) * (1 - p)
    weight = alpha * labels + (1 - alpha) * (1 - labels)
    return weight * ce * (1 - p_t) ** gamma


# name: (flamefx call on flamefx arrays, NumPy formula on the same NumPy arrays, the arrays,
#        differentiable argument positions)
CASES = {
    "squared_error": (losses.squared_error, lambda a, b: (a - b) ** 2, (A, B), (0, 1)),
    "l2_loss": (losses.l2_loss, lambda a, b: 0.5 * (a - b) ** 2, (A, B), (0, 1)),
    "huber_loss": (lambda a, b: losses.huber_loss(a, b, delta=0.7),
                   lambda a, b: _np_huber(a - b), (A, B), (0, 1)),
    "log_cosh": (losses.log_cosh, lambda a, b: _np_log_cosh(a - b), (A, B), (0, 1)),
    "log_cosh_no_targets": (losses.log_cosh, _np_log_cosh, (3 * A,), (0,)),
    "cosine_similarity": (losses.cosine_similarity, _np_cosine, (A, B), (0, 1)),
    "cosine_distance": (losses.cosine_distance, lambda a, b: 1 - _np_cosine(a, b), (A, B),
                        (0, 1)),
    "hinge_loss": (losses.hinge_loss, lambda a, s: np.maximum(0, 1 - a * s),
                   (A, np.sign(B)), (0,)),
    "kl_divergence": (losses.kl_divergence, _np_kl, (_log_softmax(A), PROBS), (0,)),
    "kl_divergence_with_log_targets": (
        losses.kl_divergence_with_log_targets,
        lambda log_q, log_p: np.sum(np.exp(log_p) * (log_p - log_q), -1),
        (_log_softmax(A), _log_softmax(B)), (0, 1)),
    "convex_kl_divergence": (
        losses.convex_kl_divergence,
        lambda log_q, p: _np_kl(log_q, p) + np.sum(np.exp(log_q) - p, -1), (A, PROBS), (0,)),
    "softmax_cross_entropy": (losses.softmax_cross_entropy,
                              lambda x, p: -np.sum(p * _log_softmax(x), -1), (A, PROBS), (0, 1)),
    "softmax_cross_entropy_with_integer_labels": (
        losses.softmax_cross_entropy_with_integer_labels,
        lambda x, k: -_log_softmax(x)[np.arange(3), k], (A, np.array([0, 4, 2])), (0,)),
    "safe_softmax_cross_entropy": (losses.safe_softmax_cross_entropy,
                                   lambda x, p: -np.sum(p * _log_softmax(x), -1), (A, PROBS),
                                   (0,)),
    "poly_loss_cross_entropy": (
        lambda x, p: losses.poly_loss_cross_entropy(x, p, epsilon=1.5),
        lambda x, p: -np.sum(p * _log_softmax(x), -1)
        + 1.5 * np.sum(p * (1 - np.exp(_log_softmax(x))), -1), (A, PROBS), (0, 1)),
    "sigmoid_binary_cross_entropy": (
        losses.sigmoid_binary_cross_entropy,
        lambda x, y: -(y * np.log(_sigmoid(x)) + (1 - y) * np.log(1 - _sigmoid(x))),
        (A, PROBS), (0, 1)),
    "sigmoid_focal_loss": (lambda x, y: losses.sigmoid_focal_loss(x, y, alpha=0.3, gamma=1.5),
                           _np_focal, (A, BINARY), (0,)),
    "sigmoid_focal_loss_soft_labels": (
        lambda x, y: losses.sigmoid_focal_loss(x, y, alpha=0.3, gamma=1.5), _np_focal,
        (A, PROBS), (0, 1)),
    "smooth_labels": (lambda y: losses.smooth_labels(y, 0.1), lambda y: 0.9 * y + 0.1 / 5,
                      (PROBS,), (0,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_numpy_formula(name):
    loss, formula, args, _ = CASES[name]
    with config.override("enable_x64", True):
        got = np.asarray(loss(*[fnp.asarray(a) for a in args]))
    np.testing.assert_allclose(got, formula(*args), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_gradients_to_order_two(name):
    loss, _, args, diff_positions = CASES[name]
    with config.override("enable_x64", True):
        check_grads_in(loss, [fnp.asarray(a) for a in args], diff_positions)


def test_kl_divergence_gradient_is_finite_at_zero_targets():
    with config.override("enable_x64", True):
        grad = flamefx.grad(lambda p: fnp.sum(losses.kl_divergence(fnp.asarray(A), p)))(
            fnp.asarray(PROBS))
    assert np.isfinite(np.asarray(grad)).all()


def test_safe_softmax_cross_entropy_ignores_masked_classes():
    logits = np.array([[0.0, -np.inf, 1.0]])
    labels = np.array([[0.3, 0.0, 0.7]])
    got = losses.safe_softmax_cross_entropy(fnp.asarray(logits), fnp.asarray(labels))
    want = -(0.3 * np.log(1 / (1 + np.e)) + 0.7 * np.log(np.e / (1 + np.e)))
    np.testing.assert_allclose(np.asarray(got), [want], rtol=1e-6)


# --- CTC against a brute-force sum over alignments -----------------------------------------


def _collapse(path, blank):
    out, previous = [], None
    for token in path:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


def _brute_force_ctc(logits, logit_paddings, labels, label_paddings, blank):
    """``-log`` of the total probability of every alignment that collapses to the labels."""
    losses_ = []
    for b in range(logits.shape[0]):
        steps = int(round(logits.shape[1] - logit_paddings[b].sum()))
        target = list(labels[b][:int(round(labels.shape[1] - label_paddings[b].sum()))])
        probs = np.exp(_log_softmax(logits[b]))
        total = 0.0
        for path in itertools.product(range(logits.shape[2]), repeat=steps):
            if _collapse(path, blank) == target:
                total += np.prod([probs[t, k] for t, k in enumerate(path)])
        losses_.append(-np.log(total))
    return np.array(losses_)


def _ctc_inputs(seed):
    rng = np.random.default_rng(seed)
    batch, time, classes, length = 4, 5, 3, 3
    logits = rng.standard_normal((batch, time, classes))
    labels = rng.integers(1, classes, (batch, length))
    labels[1] = [1, 1, 2]  # a repeat: needs a blank between the two 1s
    labels[2] = [1, 2, 1]  # fits the 4 unpadded steps of input 2
    logit_paddings = np.zeros((batch, time))
    logit_paddings[2, 4:] = 1.0  # a shorter input
    label_paddings = np.zeros((batch, length))
    label_paddings[0, 2:] = 1.0  # a shorter label
    label_paddings[3, 1:] = 1.0
    return logits, logit_paddings, labels, label_paddings


@pytest.mark.parametrize("blank", [0, 2])
def test_ctc_loss_matches_brute_force_enumeration(blank):
    logits, logit_paddings, labels, label_paddings = _ctc_inputs(blank)
    if blank != 0:
        labels = np.where(labels == blank, 0, labels)
    want = _brute_force_ctc(logits, logit_paddings, labels, label_paddings, blank)
    with config.override("enable_x64", True):
        got = losses.ctc_loss(fnp.asarray(logits), fnp.asarray(logit_paddings),
                              fnp.asarray(labels), fnp.asarray(label_paddings), blank_id=blank)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)


def test_ctc_loss_of_an_impossible_alignment_is_minus_log_epsilon():
    # Two equal labels need 3 steps; 2 steps cannot emit them: optax's loss is then about
    # -log_epsilon (finite) rather than inf.
    loss = losses.ctc_loss(fnp.zeros((1, 2, 3)), fnp.zeros((1, 2)), fnp.array([[1, 1]]),
                           fnp.zeros((1, 2)), log_epsilon=-1e4)
    assert 1e4 - 10 < float(loss[0]) < 1e4 + 10


def test_ctc_loss_gradients_and_jit():
    logits, logit_paddings, labels, label_paddings = _ctc_inputs(7)
    with config.override("enable_x64", True):
        def loss(z):
            return losses.ctc_loss(z, fnp.asarray(logit_paddings), fnp.asarray(labels),
                                   fnp.asarray(label_paddings))

        check_grads(loss, [fnp.asarray(logits)], order=2)
        eager = np.asarray(loss(fnp.asarray(logits)))
        np.testing.assert_allclose(np.asarray(flamefx.jit(loss)(fnp.asarray(logits))), eager,
                                   rtol=1e-12)


def test_ctc_forward_probs_end_in_the_loss():
    logits, logit_paddings, labels, label_paddings = _ctc_inputs(3)
    loss, log_alpha_blank, log_alpha_emit = losses.ctc_loss_with_forward_probs(
        fnp.asarray(logits), fnp.asarray(logit_paddings), fnp.asarray(labels),
        fnp.asarray(label_paddings))
    assert log_alpha_blank.shape == (5, 4, 4) and log_alpha_emit.shape == (5, 4, 3)
    lengths = 3 - label_paddings.sum(1).astype(int)
    last = np.asarray(log_alpha_blank)[-1]
    np.testing.assert_allclose(-last[np.arange(4), lengths], np.asarray(loss), rtol=1e-6)


# --- bad inputs ----------------------------------------------------------------------------


def test_ctc_loss_rejects_bad_shapes_naming_them():
    with pytest.raises(FlamefxValueError, match=r"logits must be \[batch, time, classes\].*"
                                                r"\(4, 5\)"):
        losses.ctc_loss(fnp.zeros((4, 5)), fnp.zeros((4, 5)), fnp.zeros((4, 3), fnp.int32),
                        fnp.zeros((4, 3)))
    with pytest.raises(FlamefxValueError, match="one batch size"):
        losses.ctc_loss(fnp.zeros((4, 5, 3)), fnp.zeros((4, 5)), fnp.zeros((2, 3), fnp.int32),
                        fnp.zeros((2, 3)))


def test_regression_losses_reject_mismatched_shapes_and_integer_predictions():
    with pytest.raises(FlamefxValueError, match=r"\(3,\) and \(4,\)"):
        losses.huber_loss(fnp.zeros(3), fnp.zeros(4))
    with pytest.raises(FlamefxTypeError, match="floating point, got int32"):
        losses.squared_error(fnp.zeros(3, fnp.int32))
