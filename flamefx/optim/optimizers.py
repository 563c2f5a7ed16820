"""Ready-made optimizers, each a chain of building blocks from ``transforms``.

Learning rates are floats or schedules (functions of the step count).

>>> import flamefx, flamefx.numpy as fnp
>>> from flamefx import optim
>>> opt = optim.adamw(optim.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 1000),
...                   weight_decay=1e-4)
>>> params = {"w": fnp.ones(3)}
>>> state = opt.init(params)
"""

from __future__ import annotations

from flamefx.optim.base import GradientTransformation, ScalarOrSchedule, chain, identity
from flamefx.optim.transforms import (
    add_decayed_weights,
    add_noise,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)


def sgd(learning_rate: ScalarOrSchedule, momentum: float | None = None,
        nesterov: bool = False) -> GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    >>> opt = sgd(0.1, momentum=0.9, nesterov=True)
    """
    return chain(trace(momentum, nesterov) if momentum is not None else identity(),
                 scale_by_learning_rate(learning_rate))


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, eps_root: float = 0.0, *,
         nesterov: bool = False) -> GradientTransformation:
    """Adam (Kingma & Ba): bias-corrected first and second moments (``nesterov``: NAdam).

    >>> opt = adam(1e-3)
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov),
                 scale_by_learning_rate(learning_rate))


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, eps_root: float = 0.0, weight_decay: float = 1e-4,
          mask=None, *, nesterov: bool = False) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter), decay scaled by the lr.

    ``mask``: which params to decay (a tree of bools or a function params -> tree).

    >>> opt = adamw(1e-3, weight_decay=0.01, mask=lambda p: {k: k != "b" for k in p})
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


def noisy_sgd(learning_rate: ScalarOrSchedule, eta: float = 0.01, gamma: float = 0.55,
              key=0) -> GradientTransformation:
    """SGD on gradients with annealed Gaussian noise added (variance ``eta / t ** gamma``).

    >>> opt = noisy_sgd(0.1, key=0)
    """
    return chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))


def lion(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99,
         weight_decay: float = 1e-3, mask=None) -> GradientTransformation:
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, plus weight decay.

    >>> opt = lion(1e-4, weight_decay=0.1)
    """
    return chain(scale_by_lion(b1, b2), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8,
            initial_scale: float = 0.0, centered: bool = False,
            momentum: float | None = None, nesterov: bool = False) -> GradientTransformation:
    """RMSProp: gradients divided by a running RMS (centered: by a running std).

    >>> opt = rmsprop(1e-3, decay=0.99, momentum=0.9)
    """
    scaling = (scale_by_stddev if centered else scale_by_rms)(decay, eps, initial_scale)
    return chain(scaling, scale_by_learning_rate(learning_rate),
                 trace(momentum, nesterov) if momentum is not None else identity())


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value: float = 0.1,
            eps: float = 1e-7) -> GradientTransformation:
    """Adagrad: gradients divided by the root of the running sum of their squares.

    >>> opt = adagrad(0.1)
    """
    return chain(scale_by_rss(initial_accumulator_value, eps),
                 scale_by_learning_rate(learning_rate))
