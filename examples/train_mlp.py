"""Train an MLP classifier on scikit-learn's 8x8 digits with a jitted functional Adam loop.

Reaches >= 97% test accuracy in a few seconds, saves its parameters (the diffusion example
uses them as a judge of its samples), and prints the loss as it goes.

    python examples/train_mlp.py --steps 1500 --out runs/mlp
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
from absl import app, flags

import flamefx
import flamefx.numpy as fnp
from flamefx import nn, optim, random

FLAGS = flags.FLAGS


def define_flags():
    # Defined only when run as a script: train_diffusion imports this module and has flags
    # of the same names.
    flags.DEFINE_integer("steps", 1500, "Training steps.")
    flags.DEFINE_integer("batch_size", 128, "Examples per step.")
    flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
    flags.DEFINE_integer("hidden", 256, "Hidden layer width.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("out", "runs/mlp", "Directory for the saved parameters.")


def load_digits_split(seed: int = 0):
    """The digits as float32 images in [0, 1], split 80/20 into train and test."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[test], labels[test])


def init_mlp(key, sizes):
    """Parameters of an MLP as a list of {"w", "b"} dicts (plain pytrees)."""
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, sub = random.split(key)
        params.append({"w": nn.initializers.he_normal()(sub, (fan_in, fan_out)),
                       "b": fnp.zeros(fan_out)})
    return params


def mlp_logits(params, images):
    h = images.reshape(images.shape[0], -1)
    for layer in params[:-1]:
        h = nn.relu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, images, labels):
    logits = mlp_logits(params, images)
    return fnp.mean(nn.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(params, images, labels) -> float:
    predictions = np.asarray(fnp.argmax(mlp_logits(params, fnp.asarray(images)), axis=-1))
    return float(np.mean(predictions == labels))


def train(steps, batch_size, learning_rate, hidden, seed, out, log_every=100):
    """Runs the training loop; returns (params, test accuracy, list of losses)."""
    (x_train, y_train), (x_test, y_test) = load_digits_split(seed)
    params = init_mlp(random.key(seed), [64, hidden, hidden, 10])
    optimizer = optim.adam(learning_rate)
    opt_state = optimizer.init(params)

    @flamefx.jit
    def step(params, opt_state, images, labels):
        loss, grads = flamefx.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    losses, start = [], time.perf_counter()
    for i in range(steps):
        idx = rng.integers(0, len(y_train), batch_size)
        params, opt_state, loss = step(params, opt_state, fnp.asarray(x_train[idx]),
                                       fnp.asarray(y_train[idx]))
        if i % log_every == 0 or i == steps - 1:
            losses.append((i, float(loss)))
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"step {i:5d}  loss {float(loss):.4f}  {rate:7.1f} steps/s", flush=True)
    test_acc = accuracy(params, x_test, y_test)
    print(f"test accuracy {test_acc:.4f} ({len(y_test)} held-out digits)")
    if out:
        os.makedirs(out, exist_ok=True)
        flamefx.save(os.path.join(out, "mlp_params.safetensors"), params)
        print(f"saved parameters to {os.path.join(out, 'mlp_params.safetensors')}")
    return params, test_acc, losses


def main(argv):
    del argv
    print(f"flamefx {flamefx.__version__} on {flamefx.default_device()}")
    train(FLAGS.steps, FLAGS.batch_size, FLAGS.learning_rate, FLAGS.hidden, FLAGS.seed,
          FLAGS.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
