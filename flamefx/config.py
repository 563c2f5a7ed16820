"""Global settings, readable and settable like ``jax.config``, and as absl flags.

>>> import flamefx
>>> flamefx.config.update("default_matmul_precision", "tf32")
>>> flamefx.config.read("default_matmul_precision")
'tf32'
"""

from __future__ import annotations

import os

from absl import flags

_DEFAULTS = {
    # Python floats and default dtypes become 64-bit (as JAX's jax_enable_x64).
    "enable_x64": (os.environ.get("FLAMEFX_ENABLE_X64", "0") == "1",
                   "Use 64-bit default dtypes for Python scalars and creation functions."),
    "default_matmul_precision": ("highest",
                                 "float32 matmul/conv precision: highest | tf32 | bf16."),
    "log_compiles": (os.environ.get("FLAMEFX_LOG_COMPILES", "0") == "1",
                     "Log every jit trace and why the cache missed."),
    "disable_jit": (False, "Run jitted functions eagerly (for debugging)."),
    "cuda_graphs": (os.environ.get("FLAMEFX_CUDA_GRAPHS", "1") == "1",
                    "Replay jitted GPU calls as CUDA graphs where possible."),
}
_VALID = {"default_matmul_precision": ("highest", "tf32", "bf16")}
_values = {name: default for name, (default, _) in _DEFAULTS.items()}


def _define_flags():
    for name, (default, help_text) in _DEFAULTS.items():
        flag_name = f"flamefx_{name}"
        if flag_name in flags.FLAGS:
            continue
        if isinstance(default, bool):
            flags.DEFINE_bool(flag_name, default, help_text)
        else:
            flags.DEFINE_string(flag_name, default, help_text)


_define_flags()


def update(name: str, value) -> None:
    """Sets a flamefx option, e.g. ``update("enable_x64", True)``."""
    if name not in _values:
        raise KeyError(f"unknown flamefx option {name!r}; options: {sorted(_values)}")
    if name in _VALID and value not in _VALID[name]:
        raise ValueError(f"option {name!r} must be one of {_VALID[name]}, got {value!r}")
    _values[name] = value


# The flag objects, looked up once: every jitted call reads an option.
_FLAG_OBJECTS = {name: flags.FLAGS[f"flamefx_{name}"] for name in _DEFAULTS}


def read(name: str):
    """Returns an option's value; absl flags, once parsed, override the defaults."""
    if flags.FLAGS.is_parsed():
        flag = _FLAG_OBJECTS[name]
        if flag.present:
            return flag.value
    return _values[name]


class _Override:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.old = _values[self.name]
        update(self.name, self.value)

    def __exit__(self, *exc):
        _values[self.name] = self.old


def override(name: str, value):
    """Context manager that sets an option for the duration of a ``with`` block."""
    return _Override(name, value)
