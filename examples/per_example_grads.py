"""DP-SGD on the 8x8 digits: per-example gradients with ``jit(vmap(grad))``.

Differentially private SGD (Abadi et al. 2016) clips each example's gradient to an L2 norm
of at most ``--clip_norm``, sums them, adds Gaussian noise of standard deviation
``noise_multiplier * clip_norm`` and averages. That needs one gradient per example, which is
what ``vmap(grad(loss))`` gives in one batched computation instead of a Python loop.
(The privacy accounting that turns the noise into an epsilon is out of scope here.)

The script trains a small MLP this way, prints the test accuracy, and times the batched
per-example gradients against a loop of single-example gradients, checking they agree.

    python examples/per_example_grads.py --steps 600
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

import flamefx
import flamefx.numpy as fnp
from flamefx import nn, optim, random, tree_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train_mlp beside us
import train_mlp

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("steps", 600, "Training steps.")
    flags.DEFINE_integer("batch_size", 64, "Examples per step.")
    flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
    flags.DEFINE_float("clip_norm", 1.0, "Per-example gradient L2 norm bound.")
    flags.DEFINE_float("noise_multiplier", 0.5, "Noise std as a multiple of clip_norm.")
    flags.DEFINE_integer("hidden", 128, "Hidden layer width.")
    flags.DEFINE_integer("seed", 0, "Random seed.")


def example_loss(params, image, label):
    """Cross-entropy of one example (image (8, 8), integer label): vmap adds the batch."""
    logits = train_mlp.mlp_logits(params, image[None])
    return nn.softmax_cross_entropy_with_integer_labels(logits, label[None])[0]


per_example_grads = flamefx.jit(flamefx.vmap(flamefx.grad(example_loss), in_axes=(None, 0, 0)))
single_example_grad = flamefx.jit(flamefx.grad(example_loss))


def privatize(grads, key, clip_norm: float, noise_multiplier: float):
    """Clips each example's gradient (leading axis) to ``clip_norm``, sums, adds Gaussian
    noise of std ``noise_multiplier * clip_norm`` and averages over the batch.

    >>> g = {"w": fnp.ones((4, 3))}          # 4 examples of norm sqrt(3)
    >>> privatize(g, random.key(0), 1.0, 0.0)["w"].shape
    (3,)
    """
    leaves, treedef = tree_util.tree_flatten(grads)
    batch = leaves[0].shape[0]
    squared = sum(fnp.sum(fnp.square(leaf.reshape(batch, -1)), axis=1) for leaf in leaves)
    factor = fnp.minimum(1.0, clip_norm / (fnp.sqrt(squared) + 1e-12))
    keys = random.split(key, len(leaves))
    private = []
    for i, leaf in enumerate(leaves):
        clipped_sum = fnp.sum(leaf * factor.reshape((batch,) + (1,) * (leaf.ndim - 1)), axis=0)
        noise = random.normal(keys[i], clipped_sum.shape) * (noise_multiplier * clip_norm)
        private.append((clipped_sum + noise) / batch)
    return tree_util.tree_unflatten(treedef, private)


def compare_with_loop(params, images, labels) -> dict:
    """Times batched per-example grads against a loop of single-example grads (both jitted,
    warmed up) and returns the speedup and the largest difference between them."""
    batched = per_example_grads(params, images, labels)
    single_example_grad(params, images[0], labels[0])
    start = time.perf_counter()
    batched = flamefx.block_until_ready(per_example_grads(params, images, labels))
    batched_seconds = time.perf_counter() - start
    start = time.perf_counter()
    looped = [single_example_grad(params, images[i], labels[i]) for i in range(len(labels))]
    looped = flamefx.block_until_ready(looped)
    loop_seconds = time.perf_counter() - start
    stacked = tree_util.tree_map(lambda *rows: np.stack([np.asarray(r) for r in rows]), *looped)
    max_difference = max(float(np.max(np.abs(np.asarray(b) - s)))
                         for b, s in zip(tree_util.tree_leaves(batched),
                                         tree_util.tree_leaves(stacked)))
    return {"batched_seconds": batched_seconds, "loop_seconds": loop_seconds,
            "speedup": loop_seconds / batched_seconds, "max_difference": max_difference}


def train(steps=600, batch_size=64, learning_rate=2e-3, clip_norm=1.0, noise_multiplier=0.5,
          hidden=128, seed=0, log_every=100):
    """DP-SGD training; returns (params, test accuracy, losses, speed comparison)."""
    (x_train, y_train), (x_test, y_test) = train_mlp.load_digits_split(seed)
    key, init_key = random.split(random.key(seed))
    params = train_mlp.init_mlp(init_key, [64, hidden, 10])
    optimizer = optim.adam(learning_rate)
    opt_state = optimizer.init(params)

    @flamefx.jit
    def step(params, opt_state, images, labels, key):
        grads = privatize(per_example_grads(params, images, labels), key, clip_norm,
                          noise_multiplier)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    comparison = compare_with_loop(params, fnp.asarray(x_train[:batch_size]),
                                   fnp.asarray(y_train[:batch_size]))
    print(f"per-example grads of {batch_size} examples: vmap {comparison['batched_seconds']:.4f}"
          f" s, loop {comparison['loop_seconds']:.4f} s ({comparison['speedup']:.1f}x); "
          f"max difference {comparison['max_difference']:.2e}")

    rng = np.random.default_rng(seed)
    losses, start = [], time.perf_counter()
    for i in range(steps):
        idx = rng.integers(0, len(y_train), batch_size)
        images, labels = fnp.asarray(x_train[idx]), fnp.asarray(y_train[idx])
        params, opt_state = step(params, opt_state, images, labels, random.fold_in(key, i))
        if i % log_every == 0 or i == steps - 1:
            loss = float(train_mlp.loss_fn(params, images, labels))
            losses.append((i, loss))
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"step {i:5d}  loss {loss:.4f}  {rate:7.1f} steps/s", flush=True)
    test_acc = train_mlp.accuracy(params, x_test, y_test)
    print(f"test accuracy {test_acc:.4f} with clip norm {clip_norm}, noise multiplier "
          f"{noise_multiplier}")
    return params, test_acc, losses, comparison


def main(argv):
    del argv
    print(f"flamefx {flamefx.__version__} on {flamefx.default_device()}")
    train(FLAGS.steps, FLAGS.batch_size, FLAGS.learning_rate, FLAGS.clip_norm,
          FLAGS.noise_multiplier, FLAGS.hidden, FLAGS.seed)


if __name__ == "__main__":
    define_flags()
    app.run(main)
