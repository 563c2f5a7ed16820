"""Loss functions. Per-example losses keep the batch shape (reduce them with ``mean``);
``mse`` is the exception and returns the mean, as its name says.

>>> import flamefx.numpy as fnp
>>> logits = fnp.array([[2.0, 0.0, -1.0]])
>>> softmax_cross_entropy_with_integer_labels(logits, fnp.array([0])).shape
(1,)
"""

from __future__ import annotations

import numpy as np

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

    The label's logit is picked by comparing ``labels`` with every class index and summing
    the matching logit, not by a gather: on the GPU the comparison fuses into the row
    kernels forward and backward (a gather's transpose under vmap is a scatter, with an
    iota and a concatenate, each a launch of its own). As in optax and JAX's indexing, a
    label in ``[-num_classes, 0)`` counts from the end, and any other out-of-range label
    gives a NaN loss (its gradient is the softmax alone).

    >>> round(float(softmax_cross_entropy_with_integer_labels(
    ...     fnp.array([0.0, 0.0]), fnp.array(1))), 4)
    0.6931
    """
    num_classes = logits.shape[-1]
    labels = fnp.broadcast_to(fnp.asarray(labels)[..., None], logits.shape)
    classes = np.arange(num_classes, dtype=labels.dtype)  # constants, not traced values
    is_label = (labels == classes) | (labels == classes - num_classes)
    # A row with no label in range sums NaNs; the select sends no gradient through them.
    missing = fnp.where((labels >= -num_classes) & (labels < num_classes), 0.0, fnp.nan)
    label_logits = fnp.sum(fnp.where(is_label, logits, missing), axis=-1)
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
