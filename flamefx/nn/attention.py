"""Attention: the fused attention primitive and the head reshapes around it.

>>> import flamefx.numpy as fnp
>>> q = fnp.ones((1, 2, 4, 8))
>>> dot_product_attention(q, q, q, is_causal=True).shape
(1, 2, 4, 8)
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError
from flamefx.primitives import attention as attention_ops

__all__ = ["causal_mask", "dot_product_attention", "merge_heads", "split_heads"]


def dot_product_attention(q, k, v, bias=None, mask=None, is_causal: bool = False,
                          scale=None):
    """``softmax(q k^T * scale + bias, masked) v`` on (batch, heads, seq, head_dim) arrays.

    ``mask`` is boolean (True = attend) and ``bias`` is added to the logits; both may
    have fewer than 4 dims (e.g. (q_seq, k_seq)) and broadcast from the right. ``scale``
    defaults to ``1 / sqrt(head_dim)``; ``is_causal`` lets query i see keys j <= i.

    >>> q = fnp.ones((1, 1, 3, 2))
    >>> dot_product_attention(q, q, q, mask=causal_mask(3)).shape
    (1, 1, 3, 2)
    """
    return attention_ops.dot_product_attention(q, k, v, bias=_rank4(bias), mask=_rank4(mask),
                                               is_causal=is_causal, scale=scale)


def _rank4(x):
    if x is None or x.ndim >= 4:
        return x
    return fnp.reshape(x, (1,) * (4 - x.ndim) + tuple(x.shape))


def split_heads(x, num_heads: int):
    """(batch, seq, num_heads * head_dim) -> (batch, num_heads, seq, head_dim).

    >>> split_heads(fnp.ones((2, 5, 12)), 3).shape
    (2, 3, 5, 4)
    """
    batch, seq, features = x.shape
    if features % num_heads:
        raise FlamefxValueError(f"split_heads: {features} features do not split into "
                                f"{num_heads} heads")
    x = fnp.reshape(x, (batch, seq, num_heads, features // num_heads))
    return fnp.transpose(x, (0, 2, 1, 3))


def merge_heads(x):
    """(batch, num_heads, seq, head_dim) -> (batch, seq, num_heads * head_dim).

    >>> merge_heads(fnp.ones((2, 3, 5, 4))).shape
    (2, 5, 12)
    """
    batch, heads, seq, head_dim = x.shape
    return fnp.reshape(fnp.transpose(x, (0, 2, 1, 3)), (batch, seq, heads * head_dim))


def causal_mask(seq_len: int):
    """Boolean (seq, seq) mask, True where query i may attend key j (j <= i).

    >>> causal_mask(2).tolist()
    [[True, False], [True, True]]
    """
    return fnp.tril(fnp.ones((seq_len, seq_len), dtype=bool))
