"""Attention: the fused ``dot_product_attention`` primitive and the head reshapes around it.

``dot_product_attention(q, k, v, bias=None, mask=None, is_causal=False, scale=None)``
takes (batch, heads, seq, head_dim) arrays; ``mask`` is boolean (True = attend), ``bias``
is added to the logits, ``scale`` defaults to ``1 / sqrt(head_dim)``.

>>> import flamefx.numpy as fnp
>>> q = fnp.ones((1, 2, 4, 8))
>>> dot_product_attention(q, q, q, is_causal=True).shape
(1, 2, 4, 8)
"""

from __future__ import annotations

import flamefx.numpy as fnp
from flamefx.errors import FlamefxValueError
from flamefx.primitives.attention import dot_product_attention

__all__ = ["causal_mask", "dot_product_attention", "merge_heads", "split_heads"]


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
