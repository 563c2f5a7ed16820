"""A JAX program run over flamefx with only its imports changed.

This is a small JAX-tutorial-style program: a two-layer MLP classifier of scikit-learn's
8x8 digits, written against ``jax``, ``jax.numpy``, ``jax.random`` (typed keys),
``jax.nn``, ``jax.scipy.special.logsumexp``, ``jax.lax.scan``, ``jax.tree_util``,
``jax.debug.print``, ``jax.config`` and ``optax``. The block marked below is the only
part that differs from the JAX original: put the commented-out JAX imports back and the
file runs under JAX.

Checked on 2026-12-06: the JAX original (jax 0.10.2 and optax 0.2.8 on the CPU) and this
file give the same per-step losses to 1e-14 and the same test accuracy, 0.9750 (in the same
float64 arithmetic: the random draws are JAX's bits).

Run: ``python examples/from_jax.py`` (a few seconds on a CPU).
"""

# --- the only lines changed from the JAX original ----------------------------------------
import flamefx as jax                               # import jax
import flamefx.numpy as jnp                         # import jax.numpy as jnp
from flamefx import lax, random                     # from jax import lax, random
from flamefx.scipy.special import logsumexp         # from jax.scipy.special import logsumexp
import flamefx.optim as optax                       # import optax
# ------------------------------------------------------------------------------------------

import numpy as np
from sklearn.datasets import load_digits

jax.config.update("jax_enable_x64", True)

LAYER_SIZES = (64, 128, 10)
BATCH_SIZE = 64
EPOCHS = 12
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
PRINT_EVERY = 50


def load_data():
    """The digits, pixels scaled to [0, 1]: 1437 training and 360 test examples."""
    digits = load_digits()
    images = digits.images.reshape(len(digits.images), -1) / 16.0
    labels = digits.target
    order = np.random.RandomState(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    split = int(0.8 * len(labels))
    return (jnp.asarray(images[:split]), jnp.asarray(labels[:split]),
            jnp.asarray(images[split:]), jnp.asarray(labels[split:]))


def init_params(key, sizes):
    """One (w, b) pair a layer, w drawn with a He-normal scale."""
    keys = random.split(key, len(sizes) - 1)
    return [{"w": random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def predict(params, images):
    """Log-probabilities of the ten classes."""
    activations = images
    for layer in params[:-1]:
        activations = jax.nn.relu(activations @ layer["w"] + layer["b"])
    logits = activations @ params[-1]["w"] + params[-1]["b"]
    return logits - logsumexp(logits, axis=1, keepdims=True)


def loss_fn(params, images, labels):
    """Cross-entropy plus an L2 penalty over every weight of the pytree."""
    log_probs = predict(params, images)
    nll = -jnp.mean(jnp.sum(jax.nn.one_hot(labels, 10) * log_probs, axis=1))
    squares = jax.tree_util.tree_map(lambda p: jnp.sum(p ** 2), params)
    return nll + 0.5 * WEIGHT_DECAY * sum(jax.tree_util.tree_leaves(squares))


def accuracy(params, images, labels):
    return jnp.mean(jnp.argmax(predict(params, images), axis=1) == labels)


def make_train_epoch(optimizer, num_train):
    """A jitted epoch: shuffle with the key, then one lax.scan over the minibatches."""
    steps = num_train // BATCH_SIZE

    @jax.jit
    def train_epoch(params, opt_state, key, images, labels, first_step):
        order = random.permutation(key, num_train)[:steps * BATCH_SIZE].reshape(steps, -1)

        def step(carry, batch):
            params, opt_state, step_number = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, images[batch], labels[batch])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            lax.cond(step_number % PRINT_EVERY == 0,
                     lambda: jax.debug.print("step {s:4d}  loss {l:.4f}", s=step_number, l=loss),
                     lambda: None)
            return (params, opt_state, step_number + 1), loss

        (params, opt_state, _), losses = lax.scan(step, (params, opt_state, first_step), order)
        return params, opt_state, losses

    return train_epoch, steps


def main(epochs=EPOCHS, seed=0):
    """Trains the classifier; returns the per-step losses and the test accuracy."""
    train_x, train_y, test_x, test_y = load_data()
    key = random.key(seed)
    key, init_key = random.split(key)
    params = init_params(init_key, LAYER_SIZES)
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(params)
    train_epoch, steps = make_train_epoch(optimizer, train_x.shape[0])
    losses = []
    for epoch in range(epochs):
        key, epoch_key = random.split(key)
        params, opt_state, epoch_losses = train_epoch(params, opt_state, epoch_key,
                                                      train_x, train_y, epoch * steps)
        losses.extend(np.asarray(epoch_losses).tolist())
    test_accuracy = float(accuracy(params, test_x, test_y))
    print(f"test accuracy {test_accuracy:.4f} after {len(losses)} steps")
    return losses, test_accuracy


if __name__ == "__main__":
    main()
