"""Global settings, readable and settable like ``jax.config``, and as absl flags.

Every option has a flamefx name (``enable_x64``) and, where JAX has the option, JAX's name
too (``jax_enable_x64``), so a JAX program's ``config.update`` lines run unchanged. Options
read as attributes as well: ``flamefx.config.jax_enable_x64``, ``flamefx.config.x64_enabled``.

>>> import flamefx
>>> flamefx.config.update("default_matmul_precision", "tf32")
>>> flamefx.config.read("default_matmul_precision")
'tf32'
>>> flamefx.config.update("jax_default_matmul_precision", "highest")
>>> flamefx.config.jax_default_matmul_precision
'highest'
"""

from __future__ import annotations

import difflib
import itertools
import os
import sys

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
    "debug_nans": (os.environ.get("FLAMEFX_DEBUG_NANS", "0") == "1",
                   "Raise FloatingPointError where an operation or jitted call makes a NaN."),
    "debug_infs": (os.environ.get("FLAMEFX_DEBUG_INFS", "0") == "1",
                   "Raise FloatingPointError where an operation or jitted call makes an inf."),
    "platforms": ("", "Comma-separated platforms to choose the default device from, in order "
                      "(cpu, gpu); empty: the GPU if there is one, else the CPU."),
    "numpy_rank_promotion": ("allow", "Implicit rank promotion in flamefx.numpy's "
                                      "broadcasting: allow | warn | raise."),
    "threefry_partitionable": (True, "Accepted for JAX programs; flamefx always draws JAX's "
                                     "partitionable threefry bits (JAX's default)."),
}
_VALID = {"default_matmul_precision": ("highest", "tf32", "bf16"),
          "numpy_rank_promotion": ("allow", "warn", "raise")}
_values = {name: default for name, (default, _) in _DEFAULTS.items()}

# JAX's option names for flamefx's options.
JAX_NAMES = {
    "jax_enable_x64": "enable_x64",
    "jax_disable_jit": "disable_jit",
    "jax_default_matmul_precision": "default_matmul_precision",
    "jax_log_compiles": "log_compiles",
    "jax_debug_nans": "debug_nans",
    "jax_debug_infs": "debug_infs",
    "jax_platform_name": "platforms",
    "jax_platforms": "platforms",
    "jax_numpy_rank_promotion": "numpy_rank_promotion",
    "jax_threefry_partitionable": "threefry_partitionable",
}
# JAX's matmul precisions onto flamefx's. JAX's "default" (the fastest the backend has)
# maps to flamefx's default, exact float32 ("highest"): flamefx never lowers precision
# unless asked to by name.
_JAX_PRECISION = {None: "highest", "default": "highest", "high": "tf32", "highest": "highest",
                  "bfloat16": "bf16", "tensorfloat32": "tf32", "float32": "highest",
                  "fastest": "bf16", "tf32": "tf32", "bf16": "bf16"}
_PRECISION_TO_JAX = {"highest": "highest", "tf32": "tensorfloat32", "bf16": "bfloat16"}
_PLATFORM_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}

# What the eager and jitted call paths test before checking outputs for NaN/inf: one
# module attribute, so that with both options off the check costs one load and a branch.
nonfinite_checks: tuple[bool, bool] | None = None


class UnknownOptionError(KeyError):
    """An option name flamefx does not know (KeyError, as ``config.update`` always raised)."""

    def __str__(self):
        return self.args[0]


def _unknown(name) -> UnknownOptionError:
    known = sorted(_values) + sorted(JAX_NAMES) + ["x64_enabled"]
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return UnknownOptionError(f"unknown flamefx option {name!r}{hint} Options: "
                              f"{', '.join(sorted(_values))}, and JAX's names "
                              f"{', '.join(sorted(JAX_NAMES))}.")


def _own_name(name: str) -> str:
    if name in _values:
        return name
    if name in JAX_NAMES:
        return JAX_NAMES[name]
    raise _unknown(name)


def _resolve(name: str, value):
    """(flamefx name, flamefx value) for a flamefx or JAX option name and value."""
    own = _own_name(name)
    if name == "jax_default_matmul_precision":
        if value not in _JAX_PRECISION:
            raise ValueError(f"option {name!r} must be one of "
                             f"{[v for v in _JAX_PRECISION if v]} or None, got {value!r}")
        value = _JAX_PRECISION[value]
    return own, value


def _platforms(value) -> str:
    """The default platform chosen by a jax_platforms-style list ('' for automatic)."""
    from flamefx import devices
    names = [p.strip().lower() for p in str(value or "").split(",") if p.strip()]
    for p in names:
        if p not in _PLATFORM_ALIASES:
            raise ValueError(f"unknown platform {p!r} in {value!r}; flamefx has "
                             f"{', '.join(_PLATFORM_ALIASES)}")
    for p in (_PLATFORM_ALIASES[p] for p in names):
        if p == "cpu" or devices._gpu_devices():
            return p
    if names:
        raise ValueError(f"none of the platforms {value!r} is present (CuPy finds no GPU)")
    return ""


# FLAMEFX_PLATFORM as the process started: what an empty (automatic) setting goes back to.
_ENV_PLATFORM = os.environ.get("FLAMEFX_PLATFORM")


def _apply_platforms(value) -> None:
    # devices.default_platform reads FLAMEFX_PLATFORM once; set it and forget its answer.
    from flamefx import devices
    platform = _platforms(value) or _ENV_PLATFORM
    if platform:
        os.environ["FLAMEFX_PLATFORM"] = platform
    else:
        os.environ.pop("FLAMEFX_PLATFORM", None)
    devices.default_platform.cache_clear()


def _set(name: str, value) -> None:
    _values[name] = value
    if name == "platforms":
        _apply_platforms(value)
    if name in ("debug_nans", "debug_infs"):
        global nonfinite_checks
        nans, infs = bool(_values["debug_nans"]), bool(_values["debug_infs"])
        nonfinite_checks = (nans, infs) if nans or infs else None


_set("debug_nans", _values["debug_nans"])  # FLAMEFX_DEBUG_NANS/INFS may start them on


def update(name: str, value) -> None:
    """Sets an option by flamefx's name or JAX's, e.g. ``update("jax_enable_x64", True)``.

    >>> update("jax_enable_x64", False)
    """
    name, value = _resolve(name, value)
    if name in _VALID and value not in _VALID[name]:
        raise ValueError(f"option {name!r} must be one of {_VALID[name]}, got {value!r}")
    if isinstance(_DEFAULTS[name][0], bool) and value not in (True, False):
        raise ValueError(f"option {name!r} takes True or False, got {value!r}")
    if name == "platforms":
        _platforms(value)  # validate before anything changes
    _set(name, bool(value) if isinstance(_DEFAULTS[name][0], bool) else (value or ""))


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


def read(name: str):
    """Returns an option's value (by either name): its default, what the parsed absl flags
    (``--flamefx_debug_nans``) set, or a later ``update``, whichever came last.

    >>> read("jax_enable_x64")
    False
    """
    if name not in _values:
        if name not in JAX_NAMES:
            raise _unknown(name)
        value = read(JAX_NAMES[name])
        if name == "jax_default_matmul_precision":
            return _PRECISION_TO_JAX[value]
        return value
    return _values[name]


def __getattr__(name: str):
    # Attribute reads, as JAX programs write them: config.jax_enable_x64, config.x64_enabled.
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "x64_enabled":
        return read("enable_x64")
    try:
        return read(name)
    except UnknownOptionError as e:
        raise AttributeError(str(e)) from None


def config_with_absl() -> None:
    """Defines absl flags of JAX's names (``--jax_enable_x64``) beside flamefx's own
    (``--flamefx_enable_x64``); call it before ``absl.app.run(main)``, as with JAX.

    >>> config_with_absl()   # doctest: +SKIP
    """
    for jax_name, own in JAX_NAMES.items():
        if jax_name in flags.FLAGS:
            continue
        default, help_text = _DEFAULTS[own]
        if jax_name == "jax_default_matmul_precision":
            flags.DEFINE_string(jax_name, None, help_text)
        elif isinstance(default, bool):
            flags.DEFINE_bool(jax_name, default, help_text)
        else:
            flags.DEFINE_string(jax_name, default, help_text)


def complete_absl_config() -> None:
    """Copies the flags given on the command line (either name) into the options."""
    for name in list(_DEFAULTS):
        flag = flags.FLAGS[f"flamefx_{name}"]
        if flag.present:
            update(name, flag.value)
    for jax_name in JAX_NAMES:
        if jax_name in flags.FLAGS and flags.FLAGS[jax_name].present:
            update(jax_name, flags.FLAGS[jax_name].value)


def _copy_parsed_flags(_flag_values) -> bool:
    """absl's validator of flamefx's flags, which absl runs whenever it parses a command line
    (app.run, flags.FLAGS(argv)): the moment to copy the flags given into the options,
    through update, so that an option and what it turns on (debug_nans' checks, platforms'
    device) agree. Reading a parsed flag's value instead would report an option that no
    check obeys."""
    if flags.FLAGS.is_parsed():
        complete_absl_config()
    return True


flags.register_multi_flags_validator([f"flamefx_{name}" for name in _DEFAULTS],
                                     _copy_parsed_flags)
if flags.FLAGS.is_parsed():  # flamefx imported after the command line was parsed
    complete_absl_config()


def parse_flags_with_absl(argv=None) -> None:
    """Reads the ``--jax_*`` and ``--flamefx_*`` arguments of ``argv`` (default: sys.argv,
    up to a ``--``) into the options, leaving every other argument alone, as JAX does.

    >>> parse_flags_with_absl(["prog", "--jax_debug_nans=false"])
    """
    config_with_absl()
    argv = sys.argv if argv is None else argv
    ours = [a for a in itertools.takewhile(lambda a: a != "--", argv[1:])
            if a.startswith(("--jax", "--flamefx", "--nojax", "--noflamefx"))]
    flags.FLAGS(["", *ours], known_only=True)
    complete_absl_config()


class _Override:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.own = _own_name(self.name)
        self.old = _values[self.own]
        update(self.name, self.value)

    def __exit__(self, *exc):
        _set(self.own, self.old)


def override(name: str, value):
    """Context manager that sets an option (either name) for the duration of a block.

    >>> with override("jax_debug_nans", True):
    ...     pass
    """
    return _Override(name, value)
