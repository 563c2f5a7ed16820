"""Functions mapped over arrays with ``vmap``: vectorize, apply_along_axis, apply_over_axes.

JAX builds these on ``vmap`` rather than Python loops, so the mapped function runs once,
batched, and the result is differentiable and jittable; flamefx does the same.

>>> import flamefx.numpy as fnp
>>> vectorize(lambda a, b: a + b)(fnp.arange(3), 10).tolist()
[10, 11, 12]
"""

from __future__ import annotations

import functools
import re

from flamefx.errors import FlamefxTypeError, FlamefxValueError, user_frame
from flamefx.numpy.creation import asarray
from flamefx.numpy.promotion import broadcast_shapes, canonical_axis
from flamefx.numpy.shape import expand_dims, squeeze

# NumPy's grammar of generalized-ufunc signatures, e.g. "(m,n),(n)->(m)".
_DIMENSION = r"\w+"
_CORE_DIMS = rf"(?:{_DIMENSION}(?:,{_DIMENSION})*)?"
_ARGUMENT = rf"\({_CORE_DIMS}\)"
_ARGUMENT_LIST = rf"{_ARGUMENT}(?:,{_ARGUMENT})*"
_SIGNATURE = rf"^{_ARGUMENT_LIST}->{_ARGUMENT_LIST}$"


def _parse_signature(signature: str) -> tuple[list, list]:
    """The core dimension names of each input and each output of ``signature``."""
    signature = re.sub(r"\s+", "", signature)
    if not re.match(_SIGNATURE, signature):
        raise FlamefxValueError(f"not a valid gufunc signature: {signature!r} (expected e.g. "
                                f"'(m,n),(n)->(m)')")
    inputs, outputs = signature.split("->")
    return ([tuple(re.findall(_DIMENSION, arg)) for arg in re.findall(_ARGUMENT, side)]
            for side in (inputs, outputs))


def _core_sizes(args, input_core_dims) -> tuple[tuple, dict]:
    """The broadcast shape of the loop (non-core) dims, and the size of each core dim."""
    if len(args) != len(input_core_dims):
        raise FlamefxTypeError(f"vectorized function takes {len(input_core_dims)} array "
                               f"argument(s) by its signature, got {len(args)}\n  at "
                               f"{user_frame()}")
    sizes, loop_shapes = {}, []
    for arg, core_dims in zip(args, input_core_dims):
        n_core = len(core_dims)
        if arg.ndim < n_core:
            raise FlamefxValueError(f"an input of shape {arg.shape} has fewer than the "
                                    f"{n_core} core dimension(s) {core_dims} of the signature")
        for name, size in zip(core_dims, arg.shape[arg.ndim - n_core:]):
            if sizes.setdefault(name, size) != size:
                raise FlamefxValueError(f"core dimension {name!r} has inconsistent sizes "
                                        f"{sizes[name]} and {size}\n  at {user_frame()}")
        loop_shapes.append(arg.shape[:arg.ndim - n_core])
    return broadcast_shapes(*loop_shapes), sizes


def _checked_outputs(func, sizes: dict, output_core_dims):
    """``func`` with its outputs' core shapes checked against the signature."""
    if output_core_dims is None:
        return func

    def checked(*args):
        out = func(*args)
        outs = out if isinstance(out, tuple) else (out,)
        if len(outs) != len(output_core_dims):
            raise FlamefxValueError(f"vectorized function returned {len(outs)} output(s), its "
                                    f"signature has {len(output_core_dims)}")
        for o, core_dims in zip(outs, output_core_dims):
            shape = asarray(o).shape
            want = tuple(sizes.get(name, size) for name, size in zip(core_dims, shape))
            if len(shape) != len(core_dims) or shape != want:
                raise FlamefxValueError(f"vectorized function returned an output of shape "
                                        f"{shape}, its signature says {core_dims}")
        return out

    return checked


def _without_excluded(pyfunc, excluded, args, kwargs):
    """``pyfunc`` with the excluded (positional or keyword) arguments bound, and the rest."""
    positions = sorted(i for i in excluded if isinstance(i, int))
    static_args = {i: args[i] for i in positions if i < len(args)}
    static_kwargs = {k: v for k, v in kwargs.items() if k in excluded}
    dynamic = [a for i, a in enumerate(args) if i not in static_args]
    dynamic_kwargs = {k: v for k, v in kwargs.items() if k not in excluded}

    def bound(*dynamic_args, **more_kwargs):
        it = iter(dynamic_args)
        full = [static_args[i] if i in static_args else next(it)
                for i in range(len(static_args) + len(dynamic_args))]
        return pyfunc(*full, **static_kwargs, **more_kwargs)

    return bound, dynamic, dynamic_kwargs


def vectorize(pyfunc, *, excluded=frozenset(), signature: str | None = None):
    """``pyfunc`` (written for scalars, or for the core shapes of ``signature``) mapped
    over the leading, broadcast dimensions of its array arguments with ``vmap``.

    ``excluded``: positions or names of arguments passed through unchanged. As in JAX,
    keyword arguments are not vectorized over, and the function is traced once.

    >>> import flamefx.numpy as fnp
    >>> dot = vectorize(fnp.dot, signature="(n),(n)->()")
    >>> dot(fnp.ones((4, 3)), fnp.arange(3.0)).tolist()
    [3.0, 3.0, 3.0, 3.0]
    """
    from flamefx.transforms.batching import vmap
    excluded = frozenset(excluded)

    @functools.wraps(pyfunc)
    def wrapped(*args, **kwargs):
        func, args, kwargs = _without_excluded(pyfunc, excluded, args, kwargs)
        if kwargs:
            func = functools.partial(func, **kwargs)
        if signature is not None:
            input_core_dims, output_core_dims = _parse_signature(signature)
        else:
            input_core_dims, output_core_dims = [()] * len(args), None
        args = [asarray(a) for a in args]
        loop_shape, sizes = _core_sizes(args, input_core_dims)
        func = _checked_outputs(func, sizes, output_core_dims)
        # vmap once per loop dim, from the last; size-1 (broadcast) dims are squeezed out
        # and mapped as not batched, so nothing is materialized at the broadcast shape.
        squeezed, filled_shapes = [], []
        for arg, core_dims in zip(args, input_core_dims):
            loop_dims = arg.shape[:arg.ndim - len(core_dims)]
            filled_shapes.append((1,) * (len(loop_shape) - len(loop_dims)) + loop_dims)
            squeezed.append(squeeze(arg, tuple(i for i, d in enumerate(loop_dims) if d == 1)))
        to_expand = []
        for dim in reversed(range(len(loop_shape))):
            in_axes = tuple(None if shape[dim] == 1 else 0 for shape in filled_shapes)
            if all(axis is None for axis in in_axes):
                to_expand.append(dim)
            else:
                func = vmap(func, in_axes)
        out = func(*squeezed)
        if not to_expand:
            return out
        if isinstance(out, tuple):
            return tuple(expand_dims(o, tuple(to_expand)) for o in out)
        return expand_dims(out, tuple(to_expand))

    return wrapped


def apply_along_axis(func1d, axis: int, arr, *args, **kwargs):
    """``func1d`` applied to each 1-D slice of ``arr`` along ``axis`` (batched with vmap);
    the axis is replaced by the dimensions of ``func1d``'s output.

    >>> import flamefx.numpy as fnp
    >>> apply_along_axis(fnp.sum, 1, fnp.ones((2, 3))).tolist()
    [3.0, 3.0]
    """
    from flamefx.transforms.batching import vmap
    arr = asarray(arr)
    axis = canonical_axis(axis, arr.ndim)

    def func(x):
        return func1d(x, *args, **kwargs)

    for i in range(1, arr.ndim - axis):
        func = vmap(func, in_axes=i, out_axes=-1)
    for _ in range(axis):
        func = vmap(func, in_axes=0, out_axes=0)
    return func(arr)


def apply_over_axes(func, a, axes):
    """``func(a, axis)`` applied for each axis in turn; a result with one dimension fewer has
    it put back (size 1), so that the next axis means the same dimension.

    >>> import flamefx.numpy as fnp
    >>> apply_over_axes(fnp.sum, fnp.ones((2, 3)), [0, 1]).tolist()
    [[6.0]]
    """
    a = asarray(a)
    for axis in (axes,) if isinstance(axes, int) else axes:
        b = asarray(func(a, axis))
        a = b if b.ndim == a.ndim else expand_dims(b, axis)
    return a
