"""Normalization: layer, group and RMS norm (fused primitives) and batch norm (composed).

>>> import flamefx.numpy as fnp
>>> x = fnp.arange(6.0).reshape(2, 3)
>>> y = layer_norm(x)
>>> [round(v, 3) for v in y[0].tolist()]
[-1.225, 0.0, 1.225]
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError
from flamefx.primitives import nn_ops


def _ones_if_none(value, shape, dtype):
    return fnp.ones(shape, dtype) if value is None else value


def _zeros_if_none(value, shape, dtype):
    return fnp.zeros(shape, dtype) if value is None else value


def _positive_axes(axis, ndim: int) -> tuple:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def layer_norm(x, scale=None, bias=None, *, axis=-1, epsilon: float = 1e-5):
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` over trailing ``axis`` (int or tuple).

    ``scale`` and ``bias`` have the shape of the normalized dims (None: 1 and 0).

    >>> layer_norm(fnp.ones((2, 4))).shape
    (2, 4)
    """
    axes = _positive_axes(axis, x.ndim)
    param_shape = tuple(x.shape[a] for a in axes)
    scale = _ones_if_none(scale, param_shape, x.dtype)
    bias = _zeros_if_none(bias, param_shape, x.dtype)
    return nn_ops.layer_norm(x, scale, bias, axes=axes, epsilon=epsilon)


def group_norm(x, scale=None, bias=None, *, num_groups: int, epsilon: float = 1e-5):
    """Group norm of ``x`` (N, C, spatial...): channels split into ``num_groups`` groups,
    each normalized over its channels and all spatial positions; per-channel affine.

    >>> group_norm(fnp.ones((2, 4, 3, 3)), num_groups=2).shape
    (2, 4, 3, 3)
    """
    channels = x.shape[1]
    if channels % num_groups:
        raise FlamefxValueError(f"group_norm: {channels} channels do not split into "
                                f"{num_groups} groups")
    scale = _ones_if_none(scale, (channels,), x.dtype)
    bias = _zeros_if_none(bias, (channels,), x.dtype)
    return nn_ops.group_norm(x, scale, bias, num_groups=num_groups, epsilon=epsilon)


def rms_norm(x, scale=None, *, axis=-1, epsilon: float = 1e-6):
    """``x / sqrt(mean(x**2, axis) + epsilon) * scale`` over trailing ``axis`` (int or tuple).

    >>> rms_norm(fnp.ones((2, 4)), epsilon=0.0).tolist()[0]
    [1.0, 1.0, 1.0, 1.0]
    """
    axes = _positive_axes(axis, x.ndim)
    scale = _ones_if_none(scale, tuple(x.shape[a] for a in axes), x.dtype)
    return nn_ops.rms_norm(x, scale, axes=axes, epsilon=epsilon)


def batch_norm(x, scale, bias, running_mean, running_var, *, training: bool,
               momentum: float = 0.9, epsilon: float = 1e-5, axis: int = 1):
    """Batch norm of ``x`` with per-feature statistics (features on ``axis``, NCHW: 1).

    Returns ``(y, new_running_mean, new_running_var)``. In training the batch statistics
    normalize and the running ones move ``new = momentum * old + (1 - momentum) * batch``
    (Flax's convention: PyTorch's momentum 0.1 is 0.9 here, and the batch variance is the
    biased one); otherwise the running statistics normalize and come back unchanged.

    >>> y, m, v = batch_norm(fnp.ones((4, 3)), fnp.ones(3), fnp.zeros(3), fnp.zeros(3),
    ...                      fnp.ones(3), training=True)
    >>> m.tolist()
    [0.10000000149011612, 0.10000000149011612, 0.10000000149011612]
    """
    axis = axis % x.ndim
    reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
    feature_shape = tuple(x.shape[a] if a == axis else 1 for a in range(x.ndim))
    if training:
        mean = fnp.mean(x, axis=reduce_axes)
        centered = x - fnp.reshape(mean, feature_shape)
        var = fnp.mean(centered * centered, axis=reduce_axes)
        new_mean = momentum * running_mean + (1.0 - momentum) * mean
        new_var = momentum * running_var + (1.0 - momentum) * var
    else:
        mean, var = running_mean, running_var
        centered = x - fnp.reshape(mean, feature_shape)
        new_mean, new_var = running_mean, running_var
    inv_std = fnp.reshape(scale * (1.0 / fnp.sqrt(var + epsilon)), feature_shape)
    y = centered * inv_std + fnp.reshape(bias, feature_shape)
    return y, new_mean, new_var
