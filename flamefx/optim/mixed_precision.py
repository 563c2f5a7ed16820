"""Mixed-precision training: a dtype policy and loss scaling, as in DeepMind's jmp.

A :class:`Policy` keeps float32 *master* parameters (so the optimizer state, created from
them, is float32 too), casts them to a low-precision *compute* dtype inside the loss, and
casts the outputs (logits, loss) back to an *output* dtype. Gradients flow back through
the casts, so they arrive in the parameters' dtype.

float16 has a narrow exponent range: small gradients flush to zero. Loss scaling
multiplies the loss by a large factor before differentiating and divides the gradients
by it afterwards; :class:`DynamicLossScale` finds the largest factor that does not
overflow, halving it on a non-finite step (the step is skipped with :func:`select_tree`,
no host sync) and doubling it after ``period`` finite steps in a row. bfloat16 has
float32's exponent range and needs no scaling (:class:`NoOpLossScale`).

>>> import flamefx, flamefx.numpy as fnp
>>> from flamefx import optim
>>> policy = optim.get_policy("params=float32,compute=float16,output=float32")
>>> params = {"w": fnp.full((2,), 1e-3)}
>>> loss_scale = optim.DynamicLossScale(fnp.asarray(2.0 ** 15))
>>> def loss_fn(params, x):
...     y = (policy.cast_to_compute(params)["w"] * policy.cast_to_compute(x)).sum()
...     return loss_scale.scale(policy.cast_to_output(y) ** 2)
>>> grads = loss_scale.unscale(flamefx.grad(loss_fn)(params, fnp.full((2,), 1e-3)))
>>> finite = optim.all_finite(grads)
>>> loss_scale = loss_scale.adjust(finite)
>>> grads["w"].dtype, bool(finite)
(dtype('float32'), True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import flamefx.numpy as fnp
from flamefx import dtypes, tree_util

# --- the dtype policy ----------------------------------------------------------------------

_DTYPE_NAMES = {
    "bf16": dtypes.bfloat16, "bfloat16": dtypes.bfloat16,
    "f16": dtypes.float16, "float16": dtypes.float16, "half": dtypes.float16,
    "f32": dtypes.float32, "float32": dtypes.float32, "full": dtypes.float32,
    "single": dtypes.float32,
    "f64": dtypes.float64, "float64": dtypes.float64, "double": dtypes.float64,
}
_ROLE_NAMES = {
    "p": "param_dtype", "param": "param_dtype", "params": "param_dtype",
    "c": "compute_dtype", "compute": "compute_dtype",
    "o": "output_dtype", "output": "output_dtype", "out": "output_dtype",
}


def _float_dtype(dtype) -> np.dtype:
    if isinstance(dtype, str) and dtype.strip().lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.strip().lower()]
    dt = dtypes.canonicalize(dtype)
    if not dtypes.is_float(dt):
        raise ValueError(f"a precision policy holds float dtypes; got {dt}")
    return dt


def cast_floating(tree, dtype) -> Any:
    """``tree`` with its floating-point array leaves cast to ``dtype``; integer, bool and
    non-array leaves (Python scalars, None) are returned as they are.

    >>> cast_floating({"w": fnp.ones(2), "step": fnp.zeros((), "int32")}, "bfloat16")["w"].dtype
    dtype(bfloat16)
    """
    dtype = _float_dtype(dtype)

    def cast(leaf):
        leaf_dtype = getattr(leaf, "dtype", None)
        if leaf_dtype is None or not dtypes.is_float(leaf_dtype) or leaf_dtype == dtype:
            return leaf
        return leaf.astype(dtype)

    return tree_util.tree_map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype parameters are stored in, computed in, and returned in.

    >>> policy = Policy("float32", "bfloat16", "float32")
    >>> policy.cast_to_compute({"w": fnp.ones(2)})["w"].dtype
    dtype(bfloat16)
    """

    param_dtype: np.dtype
    compute_dtype: np.dtype
    output_dtype: np.dtype

    def __post_init__(self):
        # Accept names ("bf16", "float32") and dtype-likes; store np.dtype objects.
        for field in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, field, _float_dtype(getattr(self, field)))

    def cast_to_compute(self, tree) -> Any:
        """Float leaves to ``compute_dtype`` (parameters and inputs, inside the loss)."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_param(self, tree) -> Any:
        """Float leaves to ``param_dtype`` (e.g. gradients or new parameters)."""
        return cast_floating(tree, self.param_dtype)

    def cast_to_output(self, tree) -> Any:
        """Float leaves to ``output_dtype`` (logits or the loss, before reductions)."""
        return cast_floating(tree, self.output_dtype)

    def with_output_dtype(self, output_dtype) -> Policy:
        """This policy with another output dtype (e.g. bf16 outputs for inner layers)."""
        return dataclasses.replace(self, output_dtype=output_dtype)

    def __str__(self):
        return (f"params={self.param_dtype.name},compute={self.compute_dtype.name},"
                f"output={self.output_dtype.name}")


def get_policy(spec: str) -> Policy:
    """Parses a policy string, as jmp does.

    ``"params=float32,compute=bfloat16,output=float32"`` (also ``p=f32,c=bf16,o=f32``);
    a role left out takes the param dtype; a single dtype (``"bfloat16"``) sets all three.

    >>> str(get_policy("p=f32,c=bf16,o=f32"))
    'params=float32,compute=bfloat16,output=float32'
    >>> str(get_policy("half"))
    'params=float16,compute=float16,output=float16'
    """
    spec = spec.strip()
    if "=" not in spec:
        dtype = _float_dtype(spec)
        return Policy(dtype, dtype, dtype)
    chosen = {}
    for part in spec.split(","):
        role, sep, name = part.partition("=")
        role = role.strip().lower()
        if not sep or role not in _ROLE_NAMES:
            raise ValueError(f"policy {spec!r}: {part!r} is not role=dtype with role one of "
                             f"params, compute, output")
        field = _ROLE_NAMES[role]
        if field in chosen:
            raise ValueError(f"policy {spec!r} sets {field} twice")
        chosen[field] = _float_dtype(name)
    if "param_dtype" not in chosen:
        raise ValueError(f"policy {spec!r} does not say the param dtype (params=...)")
    param = chosen["param_dtype"]
    return Policy(param, chosen.get("compute_dtype", param), chosen.get("output_dtype", param))


# --- loss scaling ----------------------------------------------------------------------------


def all_finite(tree) -> Any:
    """A 0-d bool array: True iff no float leaf of ``tree`` holds a NaN or an Inf.

    Stays on the device (no host sync), so a jitted step can branch on it with
    :func:`select_tree`.

    >>> bool(all_finite({"a": fnp.ones(2), "b": fnp.array([1.0, float("inf")])}))
    False
    """
    finite = fnp.asarray(True)
    for leaf in tree_util.tree_leaves(tree):
        if dtypes.is_float(fnp.asarray(leaf).dtype):
            finite = fnp.logical_and(finite, fnp.all(fnp.isfinite(leaf)))
    return finite


def select_tree(pred, on_true, on_false) -> Any:
    """Leaf-wise ``where(pred, on_true, on_false)`` for two trees of one structure; ``pred``
    is a 0-d bool array. Skips an optimizer step without a Python branch on device values.

    >>> select_tree(fnp.asarray(False), {"w": fnp.ones(2)}, {"w": fnp.zeros(2)})["w"].tolist()
    [0.0, 0.0]
    """
    true_leaves, treedef = tree_util.tree_flatten(on_true)
    false_leaves, false_treedef = tree_util.tree_flatten(on_false)
    if treedef != false_treedef:
        raise ValueError(f"select_tree: the two trees differ in structure: {treedef} vs "
                         f"{false_treedef}")
    chosen = [fnp.where(pred, a, b).astype(fnp.asarray(a).dtype)
              for a, b in zip(true_leaves, false_leaves)]
    return tree_util.tree_unflatten(treedef, chosen)


def _times(tree, factor) -> Any:
    """Float leaves times a float32 0-d ``factor``, computed in float32, cast back."""
    def multiply(leaf):
        leaf = fnp.asarray(leaf)
        if not dtypes.is_float(leaf.dtype):
            return leaf
        return (leaf.astype(fnp.float32) * factor).astype(leaf.dtype)
    return tree_util.tree_map(multiply, tree)


@dataclasses.dataclass(frozen=True)
class NoOpLossScale:
    """No loss scaling (float32 or bfloat16 training); same interface as the others.

    >>> NoOpLossScale().scale(2.0)
    2.0
    """

    @property
    def loss_scale(self):
        return fnp.asarray(1.0, dtype=fnp.float32)

    def scale(self, tree) -> Any:
        return tree

    def unscale(self, tree) -> Any:
        return tree

    def adjust(self, grads_finite) -> NoOpLossScale:
        del grads_finite
        return self


@dataclasses.dataclass(frozen=True)
class StaticLossScale:
    """A fixed loss scale: ``scale`` multiplies by it, ``unscale`` divides by it.

    >>> StaticLossScale(128.0).unscale(fnp.asarray(256.0)).item()
    2.0
    """

    loss_scale: Any

    def __post_init__(self):
        object.__setattr__(self, "loss_scale", _as_scale(self.loss_scale))

    def scale(self, tree) -> Any:
        return _times(tree, self.loss_scale)

    def unscale(self, tree) -> Any:
        return _times(tree, 1.0 / self.loss_scale)

    def adjust(self, grads_finite) -> StaticLossScale:
        del grads_finite
        return self


def _as_scale(value):
    # Python numbers become float32 arrays; arrays and tracers (inside jit) pass through.
    if isinstance(value, (int, float, np.number, np.ndarray)):
        return fnp.asarray(value, dtype=fnp.float32)
    return value


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """A loss scale that adapts: halves (down to ``min_scale``) when gradients overflow,
    doubles (by ``factor``) after ``period`` finite steps in a row.

    A pytree: ``loss_scale`` (float32) and ``counter`` (int32, finite steps since the last
    change) are its leaves, so it lives in the training state and passes through ``jit``;
    ``period``, ``factor`` and ``min_scale`` are static. (The scale is the field
    ``loss_scale`` because ``scale`` is the method that applies it.)

    >>> ls = DynamicLossScale(fnp.asarray(2.0 ** 15), period=2)
    >>> ls.adjust(fnp.asarray(False)).loss_scale.item()
    16384.0
    >>> ls.adjust(fnp.asarray(True)).adjust(fnp.asarray(True)).loss_scale.item()
    65536.0
    """

    loss_scale: Any
    counter: Any = dataclasses.field(default_factory=lambda: fnp.zeros((), fnp.int32))
    period: int = 2000
    factor: int = 2
    min_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "loss_scale", _as_scale(self.loss_scale))
        if isinstance(self.counter, (int, np.integer)):
            object.__setattr__(self, "counter", fnp.asarray(self.counter, dtype=fnp.int32))

    def scale(self, tree) -> Any:
        """Multiplies the float leaves of ``tree`` (the loss) by the loss scale."""
        return _times(tree, self.loss_scale)

    def unscale(self, tree) -> Any:
        """Divides the float leaves of ``tree`` (the gradients) by the loss scale."""
        return _times(tree, 1.0 / self.loss_scale)

    def adjust(self, grads_finite) -> DynamicLossScale:
        """The next loss scale, given whether this step's gradients were all finite."""
        grads_finite = fnp.asarray(grads_finite)
        grown = self.loss_scale * self.factor
        # Growing past float32's range would make every later step overflow: stay put.
        grown = fnp.where(fnp.isfinite(grown), grown, self.loss_scale)
        at_period = self.counter == self.period - 1
        shrunk = fnp.maximum(self.loss_scale / self.factor, self.min_scale)
        loss_scale = fnp.where(grads_finite, fnp.where(at_period, grown, self.loss_scale),
                               shrunk).astype(fnp.float32)
        counter = fnp.where(grads_finite, (self.counter + 1) % self.period, 0)
        return dataclasses.replace(self, loss_scale=loss_scale,
                                   counter=counter.astype(fnp.int32))


tree_util.register_dataclass(NoOpLossScale)
tree_util.register_dataclass(StaticLossScale)
tree_util.register_dataclass(DynamicLossScale, data_fields=("loss_scale", "counter"),
                             meta_fields=("period", "factor", "min_scale"))
