"""Samples for the primitives that transforms declare (remat, custom rules, jit_call, ...)."""

import numpy as np

import flamefx.numpy as fnp
from flamefx import core
from flamefx.jaxpr import hoist_consts, trace_to_jaxpr
from flamefx.transforms import jit as jit_module
from tests.samples import Sample


def _avals(*shapes):
    return [core.ShapedArray(s, np.float32) for s in shapes]


def _body(x, y):
    return [fnp.sin(x) * y, fnp.tanh(x + y)]


def _body_reference(x, y):
    return [np.sin(x) * y, np.tanh(x + y)]


def _make(rng):
    return [rng.normal(size=(3,)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]


_body_jaxpr, _ = hoist_consts(trace_to_jaxpr(_body, _avals((3,), (3,))))
_body_closed = trace_to_jaxpr(_body, _avals((3,), (3,)))


def _fwd(x, y):
    return _body(x, y), (x, y)


def _bwd(residuals, cts):
    x, y = residuals
    ct0, ct1 = cts
    sech2 = 1.0 - fnp.tanh(x + y) ** 2
    return [ct0 * fnp.cos(x) * y + ct1 * sech2, ct0 * fnp.sin(x) + ct1 * sech2]


def _jvp(primals, tangents):
    x, y = primals
    tx, ty = tangents
    sech2 = 1.0 - fnp.tanh(x + y) ** 2
    return _body(x, y), [tx * fnp.cos(x) * y + fnp.sin(x) * ty, (tx + ty) * sech2]


_program, _program_consts = jit_module.make_program(_body, _avals((3,), (3,)), "sample")

SAMPLES = {
    "remat": [Sample(_make, dict(jaxpr=_body_jaxpr), _body_reference, grad_argnums=(0, 1))],
    "custom_vjp_call": [Sample(_make, dict(jaxpr=_body_closed, fwd=_fwd, bwd=_bwd),
                               _body_reference, grad_argnums=(0, 1))],
    "custom_jvp_call": [Sample(_make, dict(jaxpr=_body_closed, jvp=_jvp), _body_reference,
                               grad_argnums=(0, 1))],
    "jit_call": [Sample(_make, dict(jaxpr=_program.jaxpr, program=_program,
                                    donated=(False, False)),
                        _body_reference, grad_argnums=(0, 1))],
    "stop_gradient": [Sample(lambda rng: [rng.normal(size=(2, 3))], {}, lambda x: x)],
}
assert not _program_consts
