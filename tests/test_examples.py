"""Smoke tests of the examples: each trains a few steps on the CPU, its loss goes down, its
files are written, and the diffusion run resumes from its checkpoint."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import flamefx.numpy as fnp

# The examples import each other (`import train_mlp`) as scripts run from their folder do.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

import custom_primitive
import per_example_grads
import train_diffusion
import train_mlp

TINY_DIFFUSION = {"batch_size": 16, "channels": 8, "timesteps": 10, "learning_rate": 3e-3,
                  "warmup_steps": 2, "num_samples": 4, "log_every": 1, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    """A quickly trained classifier (the diffusion run's judge), shared by the tests."""
    out = tmp_path_factory.mktemp("mlp")
    _, accuracy, losses = train_mlp.train(steps=150, batch_size=128, learning_rate=2e-3,
                                          hidden=64, seed=0, out=str(out), log_every=50)
    assert losses[-1][1] < losses[0][1] / 4
    assert accuracy > 0.85
    return str(out / "mlp_params.safetensors")


def test_train_mlp_quick_loss_drops_and_params_saved(judge_path):
    assert os.path.getsize(judge_path) > 0


@pytest.mark.slow
def test_train_mlp_defaults_reach_97_percent(tmp_path):
    _, accuracy, _ = train_mlp.train(steps=1500, batch_size=128, learning_rate=2e-3,
                                     hidden=256, seed=0, out=str(tmp_path))
    assert accuracy >= 0.97


def test_diffusion_trains_writes_files_and_resumes(tmp_path, judge_path):
    out = str(tmp_path)
    first = train_diffusion.train(steps=8, out=out, judge_path=judge_path, **TINY_DIFFUSION)
    losses = [loss for _, loss in first["losses"]]
    assert first["final_step"] == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    written = ["checkpoint.safetensors", "losses.json", "samples.png", "real_digits.png",
               "results.json"]
    if importlib.util.find_spec("PIL"):  # the loss plot needs Pillow, the `examples` extra
        written.append("loss.png")
    for name in written:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    for figures in (first["samples"], first["real"]):
        assert 0.0 <= figures["confident_share"] <= 1.0
        assert 0.0 <= figures["class_entropy"] <= 1.0
    # The judge sees real held-out digits as confident and spread over all classes.
    assert first["real"]["confident_share"] > 0.5
    assert first["real"]["class_entropy"] > 0.95

    resumed = train_diffusion.train(steps=12, out=out, judge_path=judge_path, resume=True,
                                    **TINY_DIFFUSION)
    assert resumed["final_step"] == 12
    steps_logged = [step for step, _ in resumed["losses"]]
    assert steps_logged == list(range(12)), "history continues across the resume"


def test_diffusion_sampler_keeps_shape_and_range():
    schedule = train_diffusion.cosine_schedule(5)
    params = train_diffusion.init_unet(train_diffusion.random.key(0), 8, 16)
    sample = train_diffusion.make_sampler(schedule, 5, train_diffusion.optim.get_policy("float32"))
    noise = train_diffusion.random.normal(train_diffusion.random.key(1), (2, 1, 16, 16))
    images = np.asarray(sample(params, train_diffusion.random.key(2), noise))
    assert images.shape == (2, 1, 16, 16)
    assert np.all(np.isfinite(images)) and np.abs(images).max() <= 1.0 + 1e-5


def test_cosine_schedule_constants():
    schedule = {k: np.asarray(v) for k, v in train_diffusion.cosine_schedule(100).items()}
    assert np.all(np.diff(schedule["sqrt_alpha_bar"]) < 0)
    np.testing.assert_allclose(schedule["sqrt_alpha_bar"] ** 2
                               + schedule["sqrt_one_minus_alpha_bar"] ** 2, 1.0, atol=1e-6)
    assert schedule["posterior_std"][0] == 0.0


def test_write_png_round_trips(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = (np.arange(6 * 5) * 8).astype(np.uint8).reshape(6, 5)
    train_diffusion.write_png(str(tmp_path / "a.png"), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)


def test_per_example_grads_match_loop_and_dp_sgd_learns():
    _, accuracy, losses, comparison = per_example_grads.train(
        steps=80, batch_size=32, learning_rate=1e-2, hidden=32, log_every=20)
    assert comparison["max_difference"] < 1e-5
    assert losses[-1][1] < losses[0][1]
    assert accuracy > 0.5


def test_privatize_clips_each_example():
    grads = {"w": fnp.asarray(np.array([[3.0, 4.0], [0.3, 0.4]], np.float32))}
    private = per_example_grads.privatize(grads, per_example_grads.random.key(0), 1.0, 0.0)
    # (3, 4) is clipped to norm 1 -> (0.6, 0.8); (0.3, 0.4) stays; mean over 2 examples.
    np.testing.assert_allclose(np.asarray(private["w"]), [0.45, 0.6], rtol=1e-5)


def test_custom_primitive_demo():
    results = custom_primitive.demo()
    assert np.isfinite(results["value"]).all()
    np.testing.assert_allclose(results["grad"][:5], np.tanh([-3.0, -0.5, 0.0, 0.7, 2.0]),
                               rtol=1e-5)
    np.testing.assert_allclose(results["second"], 1 - np.tanh(0.3) ** 2, rtol=1e-5)


def test_from_jax_runs_as_a_script_and_learns():
    # A subprocess: the example sets jax_enable_x64 at import, as its JAX original does,
    # which must not leak into the other tests' process.
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "examples", "from_jax.py")
    run = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "FLAMEFX_PLATFORM": "cpu"})
    assert run.returncode == 0, run.stderr
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", run.stdout)]
    assert len(losses) == 6 and losses[-1] < losses[0] / 10, run.stdout  # jax.debug.print lines
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", run.stdout).group(1))
    assert accuracy > 0.9, run.stdout  # chance is 0.1; JAX's run of the same file: 0.975


@pytest.mark.gpu
def test_custom_primitive_gpu_matches_cpu():
    import flamefx
    x = fnp.asarray(np.linspace(-50, 50, 101).astype(np.float32))
    on_gpu = custom_primitive.log_cosh(flamefx.device_put(x, flamefx.devices("gpu")[0]))
    np.testing.assert_allclose(np.asarray(flamefx.device_get(on_gpu)),
                               np.asarray(custom_primitive.log_cosh(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_diffusion_step_on_gpu(tmp_path, judge_path):
    results = train_diffusion.train(steps=8, out=str(tmp_path), judge_path=judge_path,
                                    **TINY_DIFFUSION)
    assert np.isfinite(results["final_loss"])
