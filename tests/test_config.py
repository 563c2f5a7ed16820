"""flamefx.config under JAX's names: update, attribute reads, absl flags, unknown names."""

import os
import warnings

import numpy as np
import pytest
from absl import flags

import flamefx
import flamefx.numpy as fnp
from flamefx import config, devices


@pytest.fixture(autouse=True)
def _restore_options():
    saved = dict(config._values)
    yield
    for name, value in saved.items():
        if config._values[name] != value:
            config._set(name, value)


@pytest.mark.parametrize("jax_name, own, value", [
    ("jax_enable_x64", "enable_x64", True),
    ("jax_disable_jit", "disable_jit", True),
    ("jax_log_compiles", "log_compiles", True),
    ("jax_debug_nans", "debug_nans", True),
    ("jax_debug_infs", "debug_infs", True),
    ("jax_numpy_rank_promotion", "numpy_rank_promotion", "raise"),
    ("jax_threefry_partitionable", "threefry_partitionable", False),
])
def test_jax_names_set_flamefx_options(jax_name, own, value):
    assert config.read(own) != value  # a non-default value, so the update is seen
    config.update(jax_name, value)
    assert config.read(own) == value
    assert config.read(jax_name) == value
    assert getattr(config, jax_name) == value
    assert getattr(config, own) == value


def test_x64_by_either_name_changes_default_dtypes():
    assert config.x64_enabled is False and config.jax_enable_x64 is False
    assert fnp.array(1.0).dtype == np.float32
    config.update("jax_enable_x64", True)
    assert config.x64_enabled is True and config.read("enable_x64") is True
    assert fnp.array(1.0).dtype == np.float64 and fnp.array(1).dtype == np.int64
    with config.override("jax_enable_x64", False):
        assert fnp.array(1.0).dtype == np.float32
    assert config.jax_enable_x64 is True


@pytest.mark.parametrize("jax_value, own", [
    ("default", "highest"), ("highest", "highest"), ("float32", "highest"),
    ("high", "tf32"), ("tensorfloat32", "tf32"), ("bfloat16", "bf16"), (None, "highest"),
])
def test_jax_matmul_precisions_map_onto_flamefx_ones(jax_value, own):
    config.update("jax_default_matmul_precision", jax_value)
    assert config.read("default_matmul_precision") == own
    # Read back under JAX's name, the value is JAX's spelling of it.
    assert config.jax_default_matmul_precision == {"highest": "highest", "tf32": "tensorfloat32",
                                                   "bf16": "bfloat16"}[own]


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="jax_default_matmul_precision"):
        config.update("jax_default_matmul_precision", "fast")
    with pytest.raises(ValueError, match="allow"):
        config.update("jax_numpy_rank_promotion", "sometimes")
    with pytest.raises(ValueError, match="True or False"):
        config.update("jax_enable_x64", "yes")
    with pytest.raises(ValueError, match="unknown platform 'tpu'"):
        config.update("jax_platforms", "tpu")


def test_unknown_names_list_close_matches():
    with pytest.raises(KeyError, match="did you mean 'jax_enable_x64'"):
        config.update("jax_enable_x46", True)
    with pytest.raises(KeyError, match="did you mean 'jax_debug_nans'"):
        config.read("jax_debug_nan")
    with pytest.raises(AttributeError, match="did you mean 'jax_log_compiles'"):
        config.jax_log_compile
    assert not hasattr(config, "jax_no_such_option")


def test_platform_names_choose_the_default_device():
    config.update("jax_platform_name", "cpu")
    assert flamefx.default_device().platform == "cpu"
    config.update("jax_platforms", "cuda,cpu")  # the first one present
    expected = "gpu" if devices._gpu_devices() else "cpu"
    assert flamefx.default_device().platform == expected
    assert fnp.ones(2).device.platform == expected
    if not devices._gpu_devices():
        with pytest.raises(ValueError, match="none of the platforms 'cuda' is present"):
            config.update("jax_platforms", "cuda")
    config.update("jax_platforms", "")  # automatic: back to how the process started
    assert os.environ.get("FLAMEFX_PLATFORM") == config._ENV_PLATFORM


def test_disable_jit_by_jax_name_runs_the_python_body():
    calls = []

    @flamefx.jit
    def f(x):
        calls.append(1)
        return x + 1.0

    f(fnp.ones(2))
    f(fnp.ones(2))
    assert len(calls) == 1
    with config.override("jax_disable_jit", True):
        f(fnp.ones(2))
    assert len(calls) == 2


def test_log_compiles_by_jax_name(caplog):
    f = flamefx.jit(lambda x: x * 3.0)
    with config.override("jax_log_compiles", True), caplog.at_level("WARNING", "flamefx.jit"):
        f(fnp.ones(2))
    assert "Compiling <lambda>" in caplog.text


def test_numpy_rank_promotion_allow_warn_raise():
    a, b = fnp.ones((2, 3)), fnp.ones(3)
    assert (a + b).shape == (2, 3)  # allow: NumPy's rule
    config.update("jax_numpy_rank_promotion", "raise")
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) \(3,\) would be broadcast by rank"):
        a + b
    assert (a + 1.0).shape == (2, 3)  # scalars are exempt, as in JAX
    assert (a + fnp.ones((1, 3))).shape == (2, 3)  # equal ranks broadcast as usual
    config.update("jax_numpy_rank_promotion", "warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a * b
    assert len(caught) == 1 and caught[0].filename == __file__


def test_absl_flags_of_jax_names():
    config.config_with_absl()
    for name in config.JAX_NAMES:
        assert name in flags.FLAGS
    config.parse_flags_with_absl(["prog", "--jax_debug_infs", "--jax_numpy_rank_promotion=warn",
                                  "--not_a_jax_flag", "--", "--jax_enable_x64"])
    assert config.jax_debug_infs is True
    assert config.read("numpy_rank_promotion") == "warn"
    assert config.jax_enable_x64 is False  # after "--": not ours
    config.parse_flags_with_absl(["prog", "--nojax_debug_infs"])
    assert config.jax_debug_infs is False


def _nan_check_runs() -> bool:
    try:
        fnp.log(np.float32(-1.0))  # makes a NaN; the first thing run after the flags
    except FloatingPointError:
        return True
    return False


def test_debug_nans_flag_parsed_by_hand_turns_the_check_on():
    # Without config_with_absl: the option reported and the check run must agree (before,
    # read() returned the parsed flag's True while no check ran).
    from absl.testing import flagsaver
    with flagsaver.flagsaver():
        flags.FLAGS(["prog", "--flamefx_debug_nans"], known_only=True)
        assert _nan_check_runs()
        assert config.read("debug_nans") is True and config.jax_debug_nans is True
        config.update("debug_nans", False)  # a later update wins over the flag, as in JAX
        assert not _nan_check_runs() and config.read("debug_nans") is False
        flags.FLAGS(["prog", "--noflamefx_debug_nans"], known_only=True)
    assert config.read("debug_nans") is False and not _nan_check_runs()


def test_debug_nans_flag_under_app_run(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(
        "from absl import app\n"
        "import numpy as np\n"
        "import flamefx.numpy as fnp\n"
        "from flamefx import config\n"
        "def main(argv):\n"
        "    try:\n"
        "        fnp.log(np.float32(-1.0))\n"
        "        raised = False\n"
        "    except FloatingPointError:\n"
        "        raised = True\n"
        "    print(raised, config.read('debug_nans'), config.read('debug_infs'))\n"
        "app.run(main)\n")
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFX_DEBUG")}
    out = subprocess.run([sys.executable, str(script), "--flamefx_debug_nans",
                          "--flamefx_debug_infs"], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)), check=False)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr[-2000:]
