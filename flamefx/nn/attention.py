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


def dot_product_attention(query, key, value, bias=None, mask=None, is_causal: bool = False,
                          scale=None, *, query_seq_lengths=None, key_value_seq_lengths=None,
                          local_window_size=None, implementation=None):
    """``softmax(q k^T * scale + bias, masked) v`` on (batch, heads, seq, head_dim) arrays.

    ``mask`` is boolean (True = attend) and ``bias`` is added to the logits; both may
    have fewer than 4 dims (e.g. (q_seq, k_seq)) and broadcast from the right. ``scale``
    defaults to ``1 / sqrt(head_dim)``; ``is_causal`` lets query i see keys j <= i.
    As JAX's: ``query_seq_lengths`` / ``key_value_seq_lengths`` (int, shape (batch,)) mask
    the padding past each sequence's length (padded queries output zeros);
    ``local_window_size`` ``w`` or ``(left, right)`` lets query i see keys
    ``i - left <= j <= i + right``. These masks are composed as one boolean mask in
    flamefx.numpy and passed to the fused attention primitive (its kernels take a mask, not
    lengths or windows).

    ``implementation`` (JAX's None, 'xla' or 'cudnn') is accepted; flamefx picks its own
    kernels. Differences from JAX: the layout is (batch, heads, seq, head_dim) where JAX's is
    (batch, seq, heads, head_dim); a query whose keys are all masked outputs zeros (as
    FlashAttention/cuDNN), where JAX's XLA path averages the values uniformly.

    >>> q = fnp.ones((1, 1, 3, 2))
    >>> dot_product_attention(q, q, q, mask=causal_mask(3)).shape
    (1, 1, 3, 2)
    >>> dot_product_attention(q, q, q, key_value_seq_lengths=fnp.array([2])).shape
    (1, 1, 3, 2)
    """
    if implementation not in (None, "xla", "cudnn"):
        raise FlamefxValueError(f"dot_product_attention: implementation must be None, 'xla' "
                                f"or 'cudnn', got {implementation!r}")
    extra = _extra_mask(query.shape[0], query.shape[2], key.shape[2], query_seq_lengths,
                        key_value_seq_lengths, local_window_size)
    mask = _rank4(mask)
    if extra is not None:
        mask = extra if mask is None else fnp.logical_and(mask, extra)
    return attention_ops.dot_product_attention(query, key, value, bias=_rank4(bias), mask=mask,
                                               is_causal=is_causal, scale=scale)


def _seq_lengths(lengths, batch: int, name: str):
    lengths = fnp.asarray(lengths)
    if lengths.shape != (batch,) or not fnp.issubdtype(lengths.dtype, fnp.integer):
        raise FlamefxValueError(f"dot_product_attention: {name} must be integers of shape "
                                f"(batch,) = ({batch},), got {lengths.dtype} {lengths.shape}")
    return lengths


def _extra_mask(batch, q_len, k_len, query_seq_lengths, key_value_seq_lengths,
                local_window_size):
    """The (batch or 1, 1, q_seq, k_seq) boolean mask of JAX's length and window arguments
    (None when none is given)."""
    mask = None
    if local_window_size is not None:
        if isinstance(local_window_size, int):
            local_window_size = (local_window_size, local_window_size)
        if len(local_window_size) != 2:
            raise FlamefxValueError(f"dot_product_attention: local_window_size must be an int "
                                    f"or (left, right), got {local_window_size!r}")
        left, right = (int(w) for w in local_window_size)
        query = fnp.arange(q_len)[:, None]
        key = fnp.arange(k_len)[None, :]
        mask = ((query <= key + left) & (query >= key - right))[None, None]
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        padding = fnp.ones((batch, 1, q_len, k_len), dtype=bool)
        if query_seq_lengths is not None:
            lengths = _seq_lengths(query_seq_lengths, batch, "query_seq_lengths")
            padding = padding & (fnp.arange(q_len)[None, :] < lengths[:, None])[:, None, :, None]
        if key_value_seq_lengths is not None:
            lengths = _seq_lengths(key_value_seq_lengths, batch, "key_value_seq_lengths")
            padding = padding & (fnp.arange(k_len)[None, :] < lengths[:, None])[:, None, None, :]
        mask = padding if mask is None else mask & padding
    return mask


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
