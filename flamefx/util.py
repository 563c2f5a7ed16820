"""The sequence helpers of ``jax.util`` (``jax._src.util``) that ported JAX code imports:
``map``/``zip`` that insist on equal lengths, and ``unzip2``/``unzip3``.

JAX's ``example_libraries/optimizers.py`` does ``from jax._src.util import safe_zip,
safe_map, unzip2``; with its imports rewritten to ``flamefx.util`` it runs unchanged.

>>> safe_map(lambda a, b: a + b, [1, 2], [10, 20])
[11, 22]
"""

from __future__ import annotations

from flamefx.errors import FlamefxValueError


def safe_zip(*args) -> list:
    """``list(zip(*args))``, but every sequence must have the same length.

    >>> safe_zip([1, 2], "ab")
    [(1, 'a'), (2, 'b')]
    """
    args = [list(a) for a in args]
    lengths = {len(a) for a in args}
    if len(lengths) > 1:
        raise FlamefxValueError(f"safe_zip: lengths differ: {[len(a) for a in args]}")
    return list(zip(*args))


def safe_map(f, *args) -> list:
    """``list(map(f, *args))``, but every sequence must have the same length.

    >>> safe_map(str, [1, 2])
    ['1', '2']
    """
    args = [list(a) for a in args]
    lengths = {len(a) for a in args}
    if len(lengths) > 1:
        raise FlamefxValueError(f"safe_map: lengths differ: {[len(a) for a in args]}")
    return list(map(f, *args))


def unzip2(pairs) -> tuple[tuple, tuple]:
    """Splits a sequence of pairs into two tuples.

    >>> unzip2([(1, 'a'), (2, 'b')])
    ((1, 2), ('a', 'b'))
    """
    firsts, seconds = [], []
    for a, b in pairs:
        firsts.append(a)
        seconds.append(b)
    return tuple(firsts), tuple(seconds)


def unzip3(triples) -> tuple[tuple, tuple, tuple]:
    """Splits a sequence of triples into three tuples.

    >>> unzip3([(1, 'a', True), (2, 'b', False)])
    ((1, 2), ('a', 'b'), (True, False))
    """
    out = ([], [], [])
    for a, b, c in triples:
        for column, value in zip(out, (a, b, c)):
            column.append(value)
    return tuple(tuple(column) for column in out)
