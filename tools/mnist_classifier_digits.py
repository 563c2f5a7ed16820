# Copyright 2018 The JAX Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     https://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""A basic MNIST example using JAX with the mini-libraries stax and optimizers.

The mini-library jax.example_libraries.stax is for neural network building, and
the mini-library jax.example_libraries.optimizers is for first-order stochastic
optimization.

Ported to flamefx from JAX's examples/mnist_classifier.py (jax-ml/jax at cec06d1). What
changed: the imports (``jax`` -> ``flamefx``; stax and optimizers are JAX's own files,
loaded from a JAX checkout given as the first argument by tools/check_jax_example_libraries.py,
since flamefx keeps no copy of them); the data (scikit-learn's 8x8 digits instead of
MNIST), so the input shape 28 * 28 -> 64, ``step_size`` 0.001 -> 0.02 and 10 -> 20 epochs;
a closing assertion on the test accuracy. The model and training code are JAX's.
Run: ``.venv/bin/python tools/mnist_classifier_digits.py /path/to/jax``.
"""


import time
import itertools
import os
import sys

import numpy.random as npr

import flamefx.numpy as jnp
from flamefx import jit, grad, random

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_jax_example_libraries import digits, load_example_libraries  # noqa: E402

# JAX's `from jax.example_libraries import optimizers, stax` and its `stax import ...`:
stax, optimizers = load_example_libraries(sys.argv[1])
Dense, Relu, LogSoftmax = stax.Dense, stax.Relu, stax.LogSoftmax


def loss(params, batch):
  inputs, targets = batch
  preds = predict(params, inputs)
  return -jnp.mean(jnp.sum(preds * targets, axis=1))

def accuracy(params, batch):
  inputs, targets = batch
  target_class = jnp.argmax(targets, axis=1)
  predicted_class = jnp.argmax(predict(params, inputs), axis=1)
  return jnp.mean(predicted_class == target_class)

init_random_params, predict = stax.serial(
    Dense(1024), Relu,
    Dense(1024), Relu,
    Dense(10), LogSoftmax)

if __name__ == "__main__":
  rng = random.key(0)

  step_size = 0.02
  num_epochs = 20
  batch_size = 128
  momentum_mass = 0.9

  (train_images, train_labels), (test_images, test_labels) = digits()
  train_images = train_images.reshape(-1, 64)
  test_images = test_images.reshape(-1, 64)
  num_train = train_images.shape[0]
  num_complete_batches, leftover = divmod(num_train, batch_size)
  num_batches = num_complete_batches + bool(leftover)

  def data_stream():
    rng = npr.RandomState(0)
    while True:
      perm = rng.permutation(num_train)
      for i in range(num_batches):
        batch_idx = perm[i * batch_size:(i + 1) * batch_size]
        yield train_images[batch_idx], train_labels[batch_idx]
  batches = data_stream()

  opt_init, opt_update, get_params = optimizers.momentum(step_size, mass=momentum_mass)

  @jit
  def update(i, opt_state, batch):
    params = get_params(opt_state)
    return opt_update(i, grad(loss)(params, batch), opt_state)

  _, init_params = init_random_params(rng, (-1, 64))
  opt_state = opt_init(init_params)
  itercount = itertools.count()

  print("\nStarting training...")
  for epoch in range(num_epochs):
    start_time = time.time()
    for _ in range(num_batches):
      opt_state = update(next(itercount), opt_state, next(batches))
    epoch_time = time.time() - start_time

    params = get_params(opt_state)
    train_acc = accuracy(params, (train_images, train_labels))
    test_acc = accuracy(params, (test_images, test_labels))
    print(f"Epoch {epoch} in {epoch_time:0.2f} sec")
    print(f"Training set accuracy {train_acc}")
    print(f"Test set accuracy {test_acc}")
  assert float(test_acc) > 0.9, f"test accuracy {float(test_acc)} after {num_epochs} epochs"
