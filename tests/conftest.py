import os

import pytest

os.environ.setdefault("FLAMEFX_PLATFORM", "cpu")  # the CPU suite runs on the CPU everywhere


@pytest.fixture
def x64():
    """float64 throughout the test (NumPy float64 data would otherwise become float32, as in
    JAX)."""
    import flamefx
    previous = flamefx.config.read("enable_x64")
    flamefx.config.update("enable_x64", True)
    yield
    flamefx.config.update("enable_x64", previous)


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
