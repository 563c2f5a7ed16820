"""Loss functions. Per-example losses keep the batch shape (reduce them with ``mean``);
``mse`` is the exception and returns the mean, as its name says.

>>> import flamefx.numpy as fnp
>>> logits = fnp.array([[2.0, 0.0, -1.0]])
>>> softmax_cross_entropy_with_integer_labels(logits, fnp.array([0])).shape
(1,)
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.nn.activations import log_softmax, logsumexp, softplus


def softmax_cross_entropy(logits, labels, axis=-1):
    """``-sum(labels * log_softmax(logits), axis)`` for one-hot or probability labels.

    >>> float(softmax_cross_entropy(fnp.array([0.0, 0.0]), fnp.array([1.0, 0.0]))) > 0.69
    True
    """
    return -fnp.sum(labels * log_softmax(logits, axis=axis), axis=axis)


def softmax_cross_entropy_with_integer_labels(logits, labels):
    """Cross-entropy of ``logits[..., num_classes]`` with integer class ``labels[...]``.

    >>> round(float(softmax_cross_entropy_with_integer_labels(
    ...     fnp.array([0.0, 0.0]), fnp.array(1))), 4)
    0.6931
    """
    labels = fnp.asarray(labels)
    label_logits = fnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return logsumexp(logits, axis=-1) - label_logits


def l2_loss(predictions, targets=None):
    """Elementwise ``0.5 * (predictions - targets) ** 2`` (as optax).

    >>> l2_loss(fnp.array([3.0]), fnp.array([1.0])).tolist()
    [2.0]
    """
    errors = predictions if targets is None else predictions - targets
    return 0.5 * (errors * errors)


def mse(predictions, targets):
    """The mean squared error over all elements.

    >>> float(mse(fnp.array([1.0, 3.0]), fnp.array([1.0, 1.0])))
    2.0
    """
    errors = predictions - targets
    return fnp.mean(errors * errors)


def sigmoid_binary_cross_entropy(logits, labels):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``labels`` in [0, 1], elementwise.

    Written as ``softplus(logits) - labels * logits``, finite for any logit.

    >>> float(sigmoid_binary_cross_entropy(fnp.array(1000.0), fnp.array(1.0)))
    0.0
    """
    return softplus(logits) - labels * logits
