"""``flamefx.debug``: see runtime values inside jit, vmap, grad and loops (as ``jax.debug``).

>>> import flamefx, flamefx.numpy as fnp
>>> @flamefx.jit
... def f(x):
...     flamefx.debug.print("x = {}", x)
...     return x * 2
>>> _ = f(fnp.arange(3.0))
x = [0. 1. 2.]
"""

from __future__ import annotations

import builtins
from typing import Callable

from flamefx.primitives.callbacks import debug_callback


def callback(callback: Callable, *args, ordered: bool = False, **kwargs) -> None:
    """Calls ``callback(*args, **kwargs)`` with the runtime values (NumPy arrays) wherever
    the program runs: eagerly, under jit (never dropped as dead code), once per iteration
    of scan/while/fori bodies, once per batch element under vmap, in the forward pass
    under grad. Returns None.

    ``ordered`` is accepted as in JAX; flamefx runs every callback in program order anyway.

    >>> import flamefx.numpy as fnp
    >>> seen = []
    >>> callback(seen.append, fnp.ones((2, 3)))
    >>> seen[0].shape
    (2, 3)
    """
    debug_callback(callback, *args, ordered=ordered, **kwargs)


def print(fmt: str, *args, ordered: bool = False, **kwargs) -> None:  # noqa: A001 (JAX's name)
    """Prints ``fmt.format(*args, **kwargs)`` with the runtime values, arrays shown as
    NumPy shows them (0-d arrays take format specs such as ``{:.2f}``).

    >>> import flamefx.numpy as fnp
    >>> print("{a} and {:.1f}", fnp.float32(0.25), a=fnp.arange(2))
    [0 1] and 0.2
    """
    def show(*values, **named):
        builtins.print(fmt.format(*values, **named))

    show.__name__ = "debug_print"
    debug_callback(show, *args, ordered=ordered, **kwargs)


__all__ = ["callback", "print"]
