"""Devices and backends: NumPy buffers on the CPU, CuPy buffers on the GPU.

``FLAMEFX_PLATFORM=cpu|gpu`` forces the default platform; ``FLAMEFX_CPU_DEVICES=N``
gives N CPU devices in one process (for pmap tests without GPUs).

>>> import flamefx
>>> flamefx.devices()            # doctest: +SKIP
[CpuDevice(id=0)]
"""

from __future__ import annotations

import functools
import sys
import types
import os

import numpy as np

from flamefx.errors import FlamefxError


class Device:
    """One place arrays live: ``platform`` is 'cpu' or 'gpu', ``id`` its index."""

    __slots__ = ("platform", "id", "_hash")

    def __init__(self, platform: str, id: int):
        self.platform, self.id = platform, id
        self._hash = hash((platform, id))  # devices key every jit cache lookup

    def __repr__(self):
        return f"{'Cpu' if self.platform == 'cpu' else 'Cuda'}Device(id={self.id})"

    def __eq__(self, other):
        return isinstance(other, Device) and (self.platform, self.id) == (other.platform, other.id)

    def __hash__(self):
        return self._hash

    @property
    def xp(self):
        """The array module for buffers on this device (numpy or cupy)."""
        return np if self.platform == "cpu" else cupy()


@functools.cache
def cupy():
    """The cupy module, or None when it is not installed or finds no GPU."""
    try:
        import cupy as cp
        if cp.cuda.runtime.getDeviceCount() < 1:
            return None
        return cp
    except Exception:  # ImportError, or a CUDA runtime that cannot start: no GPU then
        return None


@functools.cache
def _cpu_devices() -> tuple[Device, ...]:
    n = int(os.environ.get("FLAMEFX_CPU_DEVICES", "1"))
    return tuple(Device("cpu", i) for i in range(max(n, 1)))


@functools.cache
def _gpu_devices() -> tuple[Device, ...]:
    cp = cupy()
    if cp is None:
        return ()
    return tuple(Device("gpu", i) for i in range(cp.cuda.runtime.getDeviceCount()))


def devices(platform: str | None = None) -> list[Device]:
    """Devices of ``platform`` ('cpu' or 'gpu'), or of the default platform."""
    platform = platform or default_platform()
    if platform == "cpu":
        return list(_cpu_devices())
    if platform == "gpu":
        found = _gpu_devices()
        if not found:
            raise FlamefxError("no GPU found: install flamefx[cuda12] or flamefx[cuda13] on a "
                               "machine with an NVIDIA GPU, or use FLAMEFX_PLATFORM=cpu")
        return list(found)
    raise FlamefxError(f"unknown platform {platform!r}; use 'cpu' or 'gpu'")


@functools.cache
def default_platform() -> str:
    forced = os.environ.get("FLAMEFX_PLATFORM", "").lower()
    if forced == "gpu" and not _gpu_devices():
        raise FlamefxError("FLAMEFX_PLATFORM=gpu but CuPy finds no GPU (is cupy-cuda12x or "
                           "cupy-cuda13x installed, and is a GPU visible?)")
    if forced in ("cpu", "gpu"):
        return forced
    if forced:
        raise FlamefxError(f"FLAMEFX_PLATFORM must be 'cpu' or 'gpu', got {forced!r}")
    return "gpu" if _gpu_devices() else "cpu"


def default_device() -> Device:
    """The device new arrays go to: the first GPU if there is one, else the CPU."""
    return devices(default_platform())[0]


def device_count(backend: str | None = None) -> int:
    """How many devices the default platform (or ``backend``) has, as ``jax.device_count``.

    >>> device_count() >= 1
    True
    """
    return len(devices(backend))


def local_device_count(backend: str | None = None) -> int:
    """Devices of this process: all of them (flamefx runs in one process)."""
    return device_count(backend)


def local_devices(process_index: int | None = None, backend: str | None = None) -> list[Device]:
    """This process's devices of the default platform (or ``backend``).

    >>> local_devices()[0].id
    0
    """
    if process_index not in (None, 0):
        raise FlamefxError(f"flamefx runs in one process (index 0), not {process_index}")
    return devices(backend)


def default_backend() -> str:
    """'gpu' or 'cpu': the platform new arrays go to, as ``jax.default_backend``.

    >>> default_backend() in ("cpu", "gpu")
    True
    """
    return default_platform()


def device_of_buffer(buf) -> Device:
    if isinstance(buf, np.ndarray):
        return _cpu_devices()[0]
    return Device("gpu", buf.device.id)


def move_buffer(buf, device: Device):
    """Copies a NumPy/CuPy buffer onto ``device`` (no copy when it is already there)."""
    if device.platform == "cpu":
        return buf if isinstance(buf, np.ndarray) else buf.get()
    cp = cupy()
    if cp is None:
        raise FlamefxError("cannot move an array to the GPU: no GPU found")
    if isinstance(buf, cp.ndarray):
        if buf.device.id == device.id:
            return buf
        if not buf.flags.c_contiguous:  # CuPy copies between GPUs only contiguous arrays
            with buf.device:
                buf = cp.ascontiguousarray(buf)
    with cp.cuda.Device(device.id):
        return cp.asarray(buf)


class _CallableModule(types.ModuleType):
    """Lets ``flamefx.devices`` be this module *and* JAX's ``flamefx.devices()`` function:
    ``from flamefx import devices`` (the module) and ``flamefx.devices("gpu")`` both work."""

    def __call__(self, platform: str | None = None) -> list[Device]:
        return devices(platform)


sys.modules[__name__].__class__ = _CallableModule
