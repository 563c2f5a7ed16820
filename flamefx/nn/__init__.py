"""flamefx.nn: activations, losses, convolution, attention, normalization, pooling,
initializers and pytree layers, all plain functions of arrays (and keys).

>>> import flamefx.numpy as fnp
>>> from flamefx import nn
>>> nn.softmax(fnp.array([1.0, 1.0])).tolist()
[0.5, 0.5]
"""

from flamefx.nn import initializers
from flamefx.nn.activations import (
                                    celu,
                                    elu,
                                    gelu,
                                    leaky_relu,
                                    log_sigmoid,
                                    log_softmax,
                                    logsumexp,
                                    one_hot,
                                    relu,
                                    relu6,
                                    selu,
                                    sigmoid,
                                    silu,
                                    softmax,
                                    softplus,
                                    swish,
                                    tanh,
)
from flamefx.nn.attention import causal_mask, dot_product_attention, merge_heads, split_heads
from flamefx.nn.conv import conv, conv_transpose
from flamefx.nn.dropout import dropout
from flamefx.nn.layers import (
                                    Activation,
                                    Attention,
                                    Conv2d,
                                    ConvTranspose2d,
                                    Embedding,
                                    GroupNorm,
                                    LayerNorm,
                                    Linear,
                                    Sequential,
                                    embed,
)
from flamefx.nn.losses import (
                                    l2_loss,
                                    mse,
                                    sigmoid_binary_cross_entropy,
                                    softmax_cross_entropy,
                                    softmax_cross_entropy_with_integer_labels,
)
from flamefx.nn.normalization import batch_norm, group_norm, layer_norm, rms_norm
from flamefx.nn.pooling import avg_pool, max_pool, upsample_bilinear, upsample_nearest

__all__ = [
                                    "Activation",
                                    "Attention",
                                    "Conv2d",
                                    "ConvTranspose2d",
                                    "Embedding",
                                    "GroupNorm",
                                    "LayerNorm",
                                    "Linear",
                                    "Sequential",
                                    "avg_pool",
                                    "batch_norm",
                                    "causal_mask",
                                    "celu",
                                    "conv",
                                    "conv_transpose",
                                    "dot_product_attention",
                                    "dropout",
                                    "elu",
                                    "embed",
                                    "gelu",
                                    "group_norm",
                                    "initializers",
                                    "l2_loss",
                                    "layer_norm",
                                    "leaky_relu",
                                    "log_sigmoid",
                                    "log_softmax",
                                    "logsumexp",
                                    "max_pool",
                                    "merge_heads",
                                    "mse",
                                    "one_hot",
                                    "relu",
                                    "relu6",
                                    "rms_norm",
                                    "selu",
                                    "sigmoid",
                                    "sigmoid_binary_cross_entropy",
                                    "silu",
                                    "softmax",
                                    "softmax_cross_entropy",
                                    "softmax_cross_entropy_with_integer_labels",
                                    "softplus",
                                    "split_heads",
                                    "swish",
                                    "tanh",
                                    "upsample_bilinear",
                                    "upsample_nearest",
]
