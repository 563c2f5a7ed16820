"""Runs JAX's own ``example_libraries`` (stax and optimizers) over flamefx.

The two files are read from a JAX checkout (a work tree, or a bare git directory such as
the one ``fetch github:jax-ml/jax`` gives), copied into a temporary package with only
their import lines rewritten (``jax`` -> ``flamefx``, ``jax._src.util`` -> ``flamefx.util``,
a bare ``import jax`` -> ``import flamefx as jax``), imported, and used to train three
small networks on scikit-learn's digits: an MLP with ``optimizers.adam``, an MLP with
dropout and ``optimizers.sgd``, and a conv net (Conv, BatchNorm, MaxPool, AvgPool, a
FanOut/parallel/FanInSum residual branch, Flatten) with ``optimizers.momentum``. Each run
must lower its loss and raise its test accuracy. flamefx keeps no copy of JAX's files.

Not part of the default CI (it needs a JAX checkout and takes about a minute)::

    .venv/bin/python tools/check_jax_example_libraries.py /path/to/jax [--steps 300]

``load_example_libraries`` is also what the ported JAX examples in tools/ import stax and
optimizers through.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

FILES = ("jax/example_libraries/stax.py", "jax/example_libraries/optimizers.py")
PACKAGE = "flamefx_example_libraries"


def read_jax_file(jax_path: str, relpath: str) -> str:
    """A file of the JAX checkout: from the work tree if there, else from git's HEAD."""
    on_disk = os.path.join(jax_path, relpath)
    if os.path.isfile(on_disk):
        with open(on_disk, encoding="utf-8") as f:
            return f.read()
    git_dir = jax_path if os.path.isdir(os.path.join(jax_path, "objects")) else os.path.join(
        jax_path, ".git")
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{relpath}"],
                          check=True, capture_output=True, text=True).stdout


_IMPORT_LINE = re.compile(r"^\s*(import|from)\s+jax\b")


def rewrite_imports(source: str) -> str:
    """``source`` with only its JAX import lines pointed at flamefx; nothing else changes."""
    lines = []
    for line in source.splitlines(keepends=True):
        if _IMPORT_LINE.match(line):
            line = line.replace("jax._src.util", "flamefx.util")
            line = line.replace("jax.example_libraries", PACKAGE)
            line = re.sub(r"\bjax\b", "flamefx", line)
            line = re.sub(r"^(\s*)import flamefx(\s*)$", r"\1import flamefx as jax\2", line)
        lines.append(line)
    rewritten = "".join(lines)
    left = [ln for ln in rewritten.splitlines() if _IMPORT_LINE.match(ln)]
    if left:
        raise RuntimeError(f"imports still naming jax after the rewrite: {left}")
    return rewritten


def load_example_libraries(jax_path: str):
    """JAX's stax and optimizers modules, imports rewritten, loaded as a temp package."""
    root = tempfile.mkdtemp(prefix="flamefx_jax_examples_")
    package = os.path.join(root, PACKAGE)
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w") as f:
        f.write('"""JAX\'s example_libraries with imports rewritten to flamefx."""\n')
    for relpath in FILES:
        with open(os.path.join(package, os.path.basename(relpath)), "w") as f:
            f.write(rewrite_imports(read_jax_file(jax_path, relpath)))
    sys.path.insert(0, root)
    stax = importlib.import_module(f"{PACKAGE}.stax")
    optimizers = importlib.import_module(f"{PACKAGE}.optimizers")
    return stax, optimizers


def digits(seed: int = 0):
    """scikit-learn's 8x8 digits in [0, 1], one-hot labels; (train, test) splits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[data.target]
    order = np.random.RandomState(seed).permutation(len(images))
    images, labels = images[order], labels[order]
    return (images[:1500], labels[:1500]), (images[1500:], labels[1500:])


def _train(name, stax, optimizers, net, optimizer, input_shape, steps, use_rng=False):
    import flamefx
    import flamefx.numpy as fnp
    from flamefx import random

    init_fun, apply_fun = net
    (train_x, train_y), (test_x, test_y) = digits()
    train_x = train_x.reshape((-1,) + input_shape[1:])
    test_x = test_x.reshape((-1,) + input_shape[1:])

    def loss(params, batch, rng=None):
        inputs, targets = batch
        kwargs = {"rng": rng} if use_rng else {}
        return -fnp.mean(fnp.sum(apply_fun(params, inputs, **kwargs) * targets, axis=1))

    def accuracy(params, inputs, targets):
        # Dropout (if any) is rebuilt in test mode by the caller; stax's default mode is train.
        predicted = fnp.argmax(apply_fun(params, inputs, **(
            {"rng": random.key(0)} if use_rng else {})), axis=1)
        return float(fnp.mean(predicted == fnp.argmax(targets, axis=1)))

    opt_init, opt_update, get_params = optimizer

    @flamefx.jit
    def update(i, opt_state, batch, rng):
        params = get_params(opt_state)
        value, grads = flamefx.value_and_grad(loss)(params, batch, rng)
        return opt_update(i, grads, opt_state), value

    key = random.key(0)
    _, params = init_fun(key, input_shape)
    opt_state = opt_init(params)
    before_loss = float(loss(params, (test_x, test_y), key))
    before_acc = accuracy(params, test_x, test_y)
    batches = np.random.RandomState(1)
    start = time.time()
    for i in range(steps):
        idx = batches.randint(0, len(train_x), 128)
        key, step_key = random.split(key)
        opt_state, _ = update(i, opt_state, (train_x[idx], train_y[idx]), step_key)
    params = get_params(opt_state)
    after_loss = float(loss(params, (test_x, test_y), key))
    after_acc = accuracy(params, test_x, test_y)
    print(f"{name}: test loss {before_loss:.3f} -> {after_loss:.3f}, test accuracy "
          f"{before_acc:.3f} -> {after_acc:.3f} ({steps} steps, {time.time() - start:.1f} s)")
    assert after_loss < 0.5 * before_loss, f"{name}: the loss did not fall enough"
    assert after_acc > max(0.8, before_acc + 0.3), f"{name}: the accuracy did not rise enough"


def _check_layer_shapes(stax) -> None:
    """Every stax layer's init_fun output shape is the shape its apply_fun computes."""
    from flamefx import random

    key = random.key(0)
    layers = {
        "GeneralConv NCHW": (stax.GeneralConv(("NCHW", "OIHW", "NCHW"), 4, (3, 2), (2, 1),
                                              "SAME"), (2, 3, 7, 6)),
        "ConvTranspose": (stax.ConvTranspose(4, (3, 3), (2, 2), "SAME"), (2, 5, 5, 3)),
        "ConvTranspose VALID": (stax.ConvTranspose(2, (3, 2), (2, 3), "VALID"), (1, 4, 3, 2)),
        "Conv1DTranspose": (stax.Conv1DTranspose(3, (4,), (2,), "VALID"), (2, 5, 3)),
        "SumPool": (stax.SumPool((3, 3), (2, 2), "SAME"), (2, 7, 5, 3)),
        "AvgPool VALID": (stax.AvgPool((2, 3), (1, 2)), (2, 6, 7, 3)),
        "FanInConcat": (stax.serial(stax.FanOut(2), stax.FanInConcat()), (2, 3)),
        "elementwise": (stax.serial(stax.Exp, stax.Softplus, stax.Sigmoid, stax.Elu,
                                    stax.LeakyRelu, stax.Selu, stax.Gelu, stax.Softmax),
                        (2, 5)),
    }
    for name, ((init_fun, apply_fun), shape) in layers.items():
        out_shape, params = init_fun(key, shape)
        out = apply_fun(params, random.normal(key, shape))
        assert tuple(out.shape) == tuple(out_shape), f"{name}: {out.shape} vs {out_shape}"
        assert bool(np.isfinite(np.asarray(out)).all()), f"{name}: non-finite output"
    print(f"stax layer shapes agree with their outputs ({len(layers)} layers)")


def _check_optimizers(optimizers) -> None:
    """Every optimizer (several with schedules) minimizes a quadratic over a pytree under
    jit, sm3 eagerly (its state holds the shape as ints, which jit traces: JAX's jit fails on
    it the same way); the state helpers round-trip."""
    import flamefx
    import flamefx.numpy as fnp

    target = {"w": fnp.asarray(np.arange(6.0, dtype=np.float32).reshape(2, 3)),
              "b": (fnp.asarray(np.float32(-2.0)),)}

    def loss(params):
        return sum(fnp.sum((p - t) ** 2) for p, t in zip(flamefx.tree.leaves(params),
                                                          flamefx.tree.leaves(target)))

    decay = optimizers.exponential_decay(0.1, 50, 0.5)
    makers = {
        "sgd": optimizers.sgd(decay), "momentum": optimizers.momentum(0.05, 0.9),
        "nesterov": optimizers.nesterov(0.05, 0.9), "adagrad": optimizers.adagrad(0.5),
        "rmsprop": optimizers.rmsprop(0.05),
        "rmsprop_momentum": optimizers.rmsprop_momentum(
            optimizers.inverse_time_decay(0.02, 50, 0.5)),
        "adam": optimizers.adam(optimizers.polynomial_decay(0.2, 200, 0.01)),
        "adamax": optimizers.adamax(optimizers.piecewise_constant([100], [0.2, 0.05])),
        "sm3": optimizers.sm3(0.5)}
    start = flamefx.tree.map(fnp.zeros_like, target)
    for name, (opt_init, opt_update, get_params) in makers.items():
        def step(i, state, opt_update=opt_update, get_params=get_params):
            grads = flamefx.grad(loss)(get_params(state))
            return opt_update(i, optimizers.clip_grads(grads, 10.0), state)

        if name != "sm3":
            step = flamefx.jit(step)
        state = opt_init(start)
        for i in range(200):
            state = step(i, state)
        final = float(loss(get_params(state)))
        assert final < 0.05 * float(loss(start)), f"optimizers.{name}: loss {final}"
        packed = optimizers.pack_optimizer_state(optimizers.unpack_optimizer_state(state))
        assert flamefx.tree.structure(packed) == flamefx.tree.structure(state), name
    assert abs(float(optimizers.l2_norm(target)) - float(np.sqrt(55.0 + 4.0))) < 1e-5
    print(f"optimizers: {len(makers)} optimizers minimize a quadratic")


def run_checks(jax_path: str, steps: int = 300) -> None:
    """Loads JAX's example libraries from ``jax_path``, checks layer shapes and trains the
    three networks."""
    stax, optimizers = load_example_libraries(jax_path)
    _check_layer_shapes(stax)
    _check_optimizers(optimizers)
    mlp = stax.serial(stax.Dense(64), stax.Relu, stax.Dense(10), stax.LogSoftmax)
    _train("stax MLP + optimizers.adam", stax, optimizers, mlp, optimizers.adam(1e-3),
           (-1, 64), steps)
    dropout_mlp = stax.serial(stax.Dense(128), stax.Tanh, stax.Dropout(0.9), stax.Dense(10),
                              stax.LogSoftmax)
    _train("stax MLP + Dropout + optimizers.sgd", stax, optimizers, dropout_mlp,
           optimizers.sgd(0.1), (-1, 64), steps, use_rng=True)
    residual = stax.serial(stax.FanOut(2), stax.parallel(
        stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu), stax.Identity),
        stax.FanInSum)
    conv_net = stax.serial(
        stax.Conv(8, (3, 3), padding="SAME"), stax.BatchNorm(), stax.Relu, residual,
        stax.MaxPool((2, 2), strides=(2, 2)), stax.Conv(16, (3, 3), padding="VALID"), stax.Relu,
        stax.AvgPool((2, 2), padding="SAME"), stax.Flatten, stax.Dense(10), stax.LogSoftmax)
    _train("stax conv net + optimizers.momentum", stax, optimizers, conv_net,
           optimizers.momentum(0.05, 0.9), (-1, 8, 8, 1), steps)
    print("JAX's example_libraries train over flamefx")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jax_path", help="a JAX checkout: work tree or bare git directory")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    run_checks(args.jax_path, args.steps)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
