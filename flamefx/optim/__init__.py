"""flamefx.optim: optax-style optimizers as pure (init, update) pairs over pytrees.

>>> import flamefx, flamefx.numpy as fnp
>>> from flamefx import optim
>>> params = {"w": fnp.zeros(3)}
>>> opt = optim.adam(0.1)
>>> opt_state = opt.init(params)
>>> grads = {"w": fnp.ones(3)}
>>> updates, opt_state = opt.update(grads, opt_state, params)
>>> params = optim.apply_updates(params, updates)
>>> [round(v, 4) for v in params["w"].tolist()]
[-0.1, -0.1, -0.1]
"""

from flamefx.optim.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    apply_updates,
    chain,
    global_norm,
    identity,
    set_to_zero,
)
from flamefx.optim.optimizers import adagrad, adam, adamw, lion, rmsprop, sgd
from flamefx.optim.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    warmup_cosine_decay_schedule,
)
from flamefx.optim.transforms import (
    ScaleByAdamState,
    ScaleByLionState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    clip,
    clip_by_global_norm,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_stddev,
    trace,
)
from flamefx.optim.wrappers import (
    ApplyIfFiniteState,
    EmaState,
    MaskedNode,
    MaskedState,
    MultiSteps,
    MultiStepsState,
    PartitionState,
    apply_if_finite,
    ema,
    masked,
    partition,
)

__all__ = [
    "ApplyIfFiniteState",
    "EmaState",
    "EmptyState",
    "GradientTransformation",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "OptState",
    "Params",
    "PartitionState",
    "ScalarOrSchedule",
    "ScaleByAdamState",
    "ScaleByLionState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "Schedule",
    "TraceState",
    "Updates",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "ema",
    "exponential_decay",
    "global_norm",
    "identity",
    "join_schedules",
    "linear_schedule",
    "lion",
    "masked",
    "partition",
    "piecewise_constant_schedule",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "set_to_zero",
    "sgd",
    "trace",
    "warmup_cosine_decay_schedule",
]
