"""flamefx's exceptions, and the user's own source line for error messages."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class FlamefxError(Exception):
    """Base class of every error flamefx raises on purpose."""


class FlamefxTypeError(FlamefxError, TypeError):
    """A shape, dtype or argument-kind error, found at trace time where possible."""


class FlamefxValueError(FlamefxError, ValueError):
    pass


class ConcretizationError(FlamefxError, TypeError):
    """A traced value was used where Python needs a concrete one (bool, int, index)."""


class UnexpectedTracerError(FlamefxError):
    """A tracer escaped the transform that created it and was used later."""


class DeletedArrayError(FlamefxError, RuntimeError):
    """An array whose buffer was donated to a jitted call was read."""


def abstract_shape_error(shape, what: str = "shape") -> ConcretizationError:
    """The error for a traced value used as an array's shape (``fnp.zeros(n)`` under jit
    with a traced ``n``): shapes must be known while tracing.

    >>> str(abstract_shape_error("Traced<i32[]>")).splitlines()[0][:40]
    'array shapes must be concrete Python int'
    """
    return ConcretizationError(
        f"array shapes must be concrete Python ints, but the {what} {shape!r} holds a traced "
        f"value: under jit its value is not known while the function is traced.\n  at "
        f"{user_frame()}\nMark the argument it comes from as static (jit(f, "
        f"static_argnums=...) or static_argnames=...), or compute it from an array's .shape, "
        f"which is always concrete.")


def user_frame() -> str:
    """Returns 'file:line (function)' for the innermost frame outside flamefx itself."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(_PACKAGE_DIR) and "contextlib" not in path:
            return f"{path}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "<unknown>"


def where() -> str:
    return f"\n  at {user_frame()}"
