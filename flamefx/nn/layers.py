"""Layers as pytrees: frozen dataclasses whose array fields are the parameters.

A layer is its own parameter tree, so ``flamefx.grad`` differentiates with respect to it
and optimizers update it as it is; configuration (strides, head counts) sits in static
fields that are part of the tree structure, not leaves.

>>> import flamefx, flamefx.numpy as fnp, flamefx.random as frandom
>>> from flamefx import nn
>>> k1, k2 = frandom.split(frandom.key(0))
>>> model = nn.Sequential.init(nn.Linear.init(k1, 4, 8), nn.relu, nn.Linear.init(k2, 8, 1))
>>> model(fnp.ones((2, 4))).shape
(2, 1)
>>> grads = flamefx.grad(lambda m: m(fnp.ones((2, 4))).sum())(model)
>>> grads.layers[0].weight.shape
(4, 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import field
from typing import Any

import flamefx.numpy as fnp
from flamefx import dtypes, tree_util
from flamefx import random as frandom
from flamefx.nn import initializers
from flamefx.nn.attention import dot_product_attention, merge_heads, split_heads
from flamefx.nn.conv import conv, conv_transpose
from flamefx.nn.normalization import group_norm, layer_norm


def _static(default=dataclasses.MISSING):
    return field(default=default, metadata={"static": True})


def _layer(cls):
    return tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


def embed(table, ids):
    """Rows of ``table`` (vocab, features) at integer ``ids`` (any shape).

    >>> embed(fnp.eye(3), fnp.array([2, 0])).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    return fnp.take(table, ids, axis=0)


@_layer
class Linear:
    """``x @ weight + bias`` with ``weight`` (in, out) and ``bias`` (out,) or None.

    >>> Linear.init(frandom.key(0), 3, 2)(fnp.ones((5, 3))).shape
    (5, 2)
    """

    weight: Any
    bias: Any

    @classmethod
    def init(cls, key, in_features: int, out_features: int, use_bias: bool = True,
             dtype=dtypes.float32, weight_init: Callable | None = None):
        weight_init = weight_init or initializers.lecun_normal()
        weight = weight_init(key, (in_features, out_features), dtype)
        return cls(weight, fnp.zeros((out_features,), dtype) if use_bias else None)

    def __call__(self, x):
        y = fnp.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias


def _channel_bias(bias, ndim: int):
    return fnp.reshape(bias, (bias.shape[0],) + (1,) * (ndim - 2))


@_layer
class Conv2d:
    """2-D convolution of NCHW input with an OIHW ``weight`` and per-channel ``bias``.

    >>> Conv2d.init(frandom.key(0), 3, 8, 3)(fnp.ones((1, 3, 5, 5))).shape
    (1, 8, 5, 5)
    """

    weight: Any
    bias: Any
    stride: tuple = _static((1, 1))
    padding: Any = _static("SAME")
    dilation: tuple = _static((1, 1))
    groups: int = _static(1)

    @classmethod
    def init(cls, key, in_channels: int, out_channels: int, kernel_size, stride=1,
             padding="SAME", dilation=1, groups: int = 1, use_bias: bool = True,
             dtype=dtypes.float32, weight_init: Callable | None = None):
        kernel = _pair(kernel_size)
        weight_init = weight_init or initializers.lecun_normal(in_axis=1, out_axis=0)
        weight = weight_init(key, (out_channels, in_channels // groups) + kernel, dtype)
        bias = fnp.zeros((out_channels,), dtype) if use_bias else None
        padding = padding if isinstance(padding, str) else _pairs(padding)
        return cls(weight, bias, _pair(stride), padding, _pair(dilation), groups)

    def __call__(self, x):
        y = conv(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
        return y if self.bias is None else y + _channel_bias(self.bias, y.ndim)


@_layer
class ConvTranspose2d:
    """Transposed 2-D convolution; ``weight`` is (in, out / groups, kH, kW) as PyTorch.

    >>> ConvTranspose2d.init(frandom.key(0), 4, 2, 4, stride=2, padding=1)(
    ...     fnp.ones((1, 4, 5, 5))).shape
    (1, 2, 10, 10)
    """

    weight: Any
    bias: Any
    stride: tuple = _static((1, 1))
    padding: Any = _static("SAME")
    dilation: tuple = _static((1, 1))
    groups: int = _static(1)
    output_padding: tuple = _static((0, 0))

    @classmethod
    def init(cls, key, in_channels: int, out_channels: int, kernel_size, stride=1,
             padding="SAME", dilation=1, groups: int = 1, output_padding=0,
             use_bias: bool = True, dtype=dtypes.float32, weight_init: Callable | None = None):
        kernel = _pair(kernel_size)
        # The transposed op's fan-in is over its input channels: axis 0 of this layout.
        weight_init = weight_init or initializers.lecun_normal(in_axis=0, out_axis=1)
        weight = weight_init(key, (in_channels, out_channels // groups) + kernel, dtype)
        bias = fnp.zeros((out_channels,), dtype) if use_bias else None
        padding = padding if isinstance(padding, str) else _pair(padding)
        return cls(weight, bias, _pair(stride), padding, _pair(dilation), groups,
                   _pair(output_padding))

    def __call__(self, x):
        y = conv_transpose(x, self.weight, self.stride, self.padding, self.dilation,
                           self.groups, self.output_padding)
        return y if self.bias is None else y + _channel_bias(self.bias, y.ndim)


def _pair(value) -> tuple:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def _pairs(padding):
    """An int or per-dim (lo, hi) pairs as a hashable tuple of pairs."""
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


@_layer
class LayerNorm:
    """Layer norm over the last axis with learned ``scale`` and ``bias``.

    >>> LayerNorm.init(6)(fnp.ones((2, 6))).shape
    (2, 6)
    """

    scale: Any
    bias: Any
    epsilon: float = _static(1e-5)

    @classmethod
    def init(cls, features: int, epsilon: float = 1e-5, dtype=dtypes.float32):
        return cls(fnp.ones((features,), dtype), fnp.zeros((features,), dtype), epsilon)

    def __call__(self, x):
        return layer_norm(x, self.scale, self.bias, axis=-1, epsilon=self.epsilon)


@_layer
class GroupNorm:
    """Group norm of NC... input with per-channel ``scale`` and ``bias``.

    >>> GroupNorm.init(8, num_groups=4)(fnp.ones((2, 8, 3, 3))).shape
    (2, 8, 3, 3)
    """

    scale: Any
    bias: Any
    num_groups: int = _static(32)
    epsilon: float = _static(1e-5)

    @classmethod
    def init(cls, channels: int, num_groups: int = 32, epsilon: float = 1e-5,
             dtype=dtypes.float32):
        return cls(fnp.ones((channels,), dtype), fnp.zeros((channels,), dtype), num_groups,
                   epsilon)

    def __call__(self, x):
        return group_norm(x, self.scale, self.bias, num_groups=self.num_groups,
                          epsilon=self.epsilon)


@_layer
class Embedding:
    """A lookup table (vocab, features), initialized N(0, 1) as PyTorch and Flax.

    >>> Embedding.init(frandom.key(0), 10, 4)(fnp.array([[1, 2]])).shape
    (1, 2, 4)
    """

    table: Any

    @classmethod
    def init(cls, key, num_embeddings: int, features: int, dtype=dtypes.float32,
             embedding_init: Callable | None = None):
        embedding_init = embedding_init or initializers.normal(1.0)
        return cls(embedding_init(key, (num_embeddings, features), dtype))

    def __call__(self, ids):
        return embed(self.table, ids)


@_layer
class Attention:
    """Multi-head self-attention on (batch, seq, features) with q/k/v/o projections.

    >>> layer = Attention.init(frandom.key(0), 16, num_heads=4)
    >>> layer(fnp.ones((2, 5, 16)), is_causal=True).shape
    (2, 5, 16)
    """

    query: Linear
    key: Linear
    value: Linear
    out: Linear
    num_heads: int = _static(1)

    @classmethod
    def init(cls, key, features: int, num_heads: int, use_bias: bool = True,
             dtype=dtypes.float32):
        keys = frandom.split(key, 4)
        q, k, v, o = (Linear.init(keys[i], features, features, use_bias, dtype)
                      for i in range(4))
        return cls(q, k, v, o, num_heads)

    def __call__(self, x, mask=None, bias=None, is_causal: bool = False):
        q, k, v = (split_heads(proj(x), self.num_heads)
                   for proj in (self.query, self.key, self.value))
        attended = dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
        return self.out(merge_heads(attended))


@_layer
class Activation:
    """A parameter-free function as a layer (``Sequential`` wraps bare functions in it)."""

    fn: Callable = _static()

    def __call__(self, x):
        return self.fn(x)


@_layer
class Sequential:
    """Layers applied in order; plain functions (``relu``) are allowed between them.

    >>> Sequential.init(Activation(fnp.tanh))(fnp.zeros(2)).tolist()
    [0.0, 0.0]
    """

    layers: tuple

    @classmethod
    def init(cls, *layers):
        return cls(tuple(layer if _is_layer(layer) else Activation(layer)
                         for layer in layers))

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _is_layer(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)
