"""Sample inputs for every registered primitive; the registry-driven tests walk these.

Each family module defines ``SAMPLES: dict[str, list[Sample]]`` keyed by primitive name.
A primitive registered without a sample fails ``test_every_primitive_has_a_sample``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Sample:
    """One application of a primitive: NumPy arguments, params and an independent reference.

    ``make(rng)`` returns the argument list (NumPy arrays; float64 where the primitive
    allows, so gradient checks are exact). ``reference(*args)`` is an independent NumPy
    computation of the output (or list of outputs for multiple-result primitives).
    ``grad_argnums``: which arguments gradient checks differentiate (() for none).
    ``batchable``: which arguments the batching test may batch (None: all array args).
    ``properties(args, outs)``: asserts what every correct output satisfies (Q R = A, ...),
    checked on the CPU and on the GPU: a reference that calls the impl's own routine
    (LAPACK) cannot catch a wrong use of it; these can.
    """

    make: Callable[[np.random.Generator], list]
    params: dict = dataclasses.field(default_factory=dict)
    reference: Callable | None = None
    grad_argnums: tuple = ()
    batchable: tuple | None = None
    name: str = ""
    properties: Callable | None = None


FAMILIES = ("elementwise", "reductions", "structural", "indexing", "linalg", "nn_ops",
            "random_ops", "control_flow", "collectives", "transforms", "special", "sorting",
            "factorizations", "fft", "windowed", "callbacks",
            "checkpointing")


def all_samples() -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"tests.samples.{family}")
        except ModuleNotFoundError as e:
            if e.name != f"tests.samples.{family}":
                raise
            continue
        for name, samples in module.SAMPLES.items():
            out.setdefault(name, []).extend(samples)
    return out
