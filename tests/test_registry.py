"""Registry-driven checks: every primitive, every rule, against independent references.

Walks ``Primitive.registry`` and the samples in tests/samples: NumPy references on the CPU,
``check_grads`` at order 2 in both modes (float64), vmap against a Python loop over every
combination of batched arguments, jit against eager, and on a GPU machine GPU against CPU.
"""

import itertools

import numpy as np
import pytest

import flamefx
from flamefx import core, dtypes
from flamefx.core import Primitive
from tests.samples import all_samples

SAMPLES = all_samples()
CASES = [pytest.param(name, i, id=f"{name}-{i}")
         for name in sorted(SAMPLES) for i in range(len(SAMPLES[name]))]


def _sample(name, i):
    return Primitive.registry[name], SAMPLES[name][i]


def _arrays(args, device=None):
    return [core.to_array(a, device=device) if isinstance(a, (np.ndarray, np.generic)) else a
            for a in args]


def _apply(prim, params):
    def f(*args):
        return core.bind_list(prim, *args, **params)
    return f


def _tolerance(values):
    worst = 1e-12
    for v in values:
        dt = np.asarray(v).dtype
        dt = {np.dtype("complex128"): np.dtype("float64"),
              np.dtype("complex64"): np.dtype("float32")}.get(dt, dt)
        worst = max(worst, {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-5,
                            np.dtype("float16"): 2e-3, dtypes.bfloat16: 2e-2}.get(dt, 0))
    return worst


def _assert_outputs_close(actual, expected, tol, what):
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs vs {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{what}: output {k} shape {a.shape} vs {e.shape}"
        if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
            np.testing.assert_array_equal(a, e, err_msg=f"{what}: output {k}")
        elif np.iscomplexobj(a):
            np.testing.assert_allclose(a.astype(np.complex128), np.asarray(e, np.complex128),
                                       rtol=tol, atol=tol, err_msg=f"{what}: output {k}")
        else:
            np.testing.assert_allclose(a.astype(np.float64), np.asarray(e, np.float64),
                                       rtol=tol, atol=tol, err_msg=f"{what}: output {k}")


def _flamefx_primitives() -> set:
    """flamefx's own primitives (user primitives, e.g. from the examples, are excluded)."""
    return {name for name, prim in Primitive.registry.items()
            if prim.abstract_eval.__module__.startswith("flamefx.")}


def test_every_primitive_has_a_sample():
    missing = sorted(_flamefx_primitives() - set(SAMPLES))
    assert not missing, f"primitives without a sample in tests/samples: {missing}"


def test_every_primitive_has_its_rules():
    for name in _flamefx_primitives():
        prim = Primitive.registry[name]
        assert prim.batch is not None, f"{name} has no batching rule"
        assert prim.impls["gpu"] is not None, f"{name} has no CUDA implementation"
        if prim.differentiable:
            assert prim.vjp is not None, f"{name} is differentiable but has no VJP rule"


@pytest.mark.parametrize("name,i", CASES)
def test_cpu_matches_reference(name, i):
    prim, sample = _sample(name, i)
    args = sample.make(np.random.default_rng(i))
    outs = _apply(prim, sample.params)(*_arrays(args))
    if sample.reference is None:
        pytest.skip("no independent reference for this sample (checked elsewhere)")
    ref = sample.reference(*args)
    ref = list(ref) if prim.multiple_results else [ref]
    _assert_outputs_close(outs, ref, _tolerance(outs), f"{name} vs NumPy reference")


PROPERTY_CASES = [case for case in CASES if SAMPLES[case.values[0]][case.values[1]].properties]


@pytest.mark.parametrize("name,i", PROPERTY_CASES)
def test_cpu_outputs_have_their_properties(name, i):
    prim, sample = _sample(name, i)
    args = sample.make(np.random.default_rng(i))
    outs = _apply(prim, sample.params)(*_arrays(args))
    sample.properties(args, [np.asarray(o) for o in outs])


@pytest.mark.parametrize("name,i", CASES)
def test_gradients_order_2(name, i):
    prim, sample = _sample(name, i)
    if not prim.differentiable or not sample.grad_argnums:
        pytest.skip("not differentiable")
    args = _arrays(sample.make(np.random.default_rng(i)))

    def f(*diff):
        full = list(args)
        for k, x in zip(sample.grad_argnums, diff):
            full[k] = x
        outs = _apply(prim, sample.params)(*full)
        return [o for o in outs if dtypes.is_inexact(o.dtype)]

    flamefx.test_util.check_grads(f, [args[k] for k in sample.grad_argnums], order=2,
                                  modes=("fwd", "rev"))


def _axis_choices(arg):
    ndim = np.ndim(arg)
    return [None, 0] + ([-1] if ndim >= 1 else [])


def _batched_combinations(sample, args):
    positions = [k for k, a in enumerate(args) if isinstance(a, (np.ndarray, np.generic))]
    if sample.batchable is not None:
        positions = [k for k in positions if k in sample.batchable]
    choices = [_axis_choices(args[k]) for k in positions]
    combos = [c for c in itertools.product(*choices) if any(ax is not None for ax in c)]
    # Keep the suite fast: every single-argument batching, plus all-batched combinations.
    combos.sort(key=lambda c: sum(ax is not None for ax in c))
    return positions, combos[:8]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("name,i", CASES)
def test_vmap_matches_loop(name, i, batch_size):
    prim, sample = _sample(name, i)
    rng = np.random.default_rng(100 + i)
    examples = [sample.make(rng) for _ in range(batch_size)]
    positions, combos = _batched_combinations(sample, examples[0])
    if not combos:
        pytest.skip("no array arguments to batch")
    f = _apply(prim, sample.params)
    for combo in combos:
        in_axes = [None] * len(examples[0])
        batched_args = list(examples[0])
        for k, ax in zip(positions, combo):
            if ax is None:
                continue
            in_axes[k] = ax
            batched_args[k] = np.stack([ex[k] for ex in examples], axis=ax)
        per_example = []
        for b in range(batch_size):
            ex_args = [examples[b][k] if in_axes[k] is not None else examples[0][k]
                       for k in range(len(in_axes))]
            per_example.append([np.asarray(o) for o in f(*_arrays(ex_args))])
        expected = [np.stack([pe[o] for pe in per_example]) for o in range(len(per_example[0]))]
        got = flamefx.vmap(f, in_axes=tuple(in_axes))(*_arrays(batched_args))
        _assert_outputs_close(got, expected, _tolerance(got),
                              f"{name} vmap in_axes={tuple(in_axes)}")


@pytest.mark.parametrize("name,i", CASES)
def test_jit_matches_eager(name, i):
    prim, sample = _sample(name, i)
    args = _arrays(sample.make(np.random.default_rng(i)))
    f = _apply(prim, sample.params)
    _assert_outputs_close(flamefx.jit(f)(*args), f(*args), _tolerance(f(*args)),
                          f"{name} jit vs eager")


def _holds_jaxpr(value) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_holds_jaxpr(v) for v in value)
    return hasattr(value, "eqns") or hasattr(value, "jaxpr")


def _reading_loss(outs):
    """A real scalar that reads every inexact output whole: the real and the imaginary part
    of a complex one, weighted differently (sin(p) vs sin(p + 1)) so that a gradient that
    drops or conjugates the imaginary part changes the result."""
    fnp = flamefx.numpy
    total = 0.0
    for o in outs:
        if not dtypes.is_inexact(o.dtype):
            continue
        parts = [fnp.real(o), fnp.imag(o)] if dtypes.is_complex(o.dtype) else [o]
        for shift, p in enumerate(parts):
            total = total + fnp.sum(p * fnp.sin(p + shift))
    return total


def test_gpu_gradient_loss_reads_imaginary_parts():
    # Outputs with a constant real part: a loss of the real parts alone (as before) has
    # zero gradient, so GPU-vs-CPU gradients compared nothing of the imaginary parts.
    x = np.array([0.3, -0.7])
    grad = flamefx.grad(lambda x: _reading_loss([flamefx.lax.complex(np.ones(2), x)]))(x)
    np.testing.assert_allclose(np.asarray(grad), np.sin(x + 1) + x * np.cos(x + 1))


@pytest.mark.gpu
@pytest.mark.parametrize("name,i", CASES)
def test_gpu_matches_cpu(name, i):
    prim, sample = _sample(name, i)
    raw = sample.make(np.random.default_rng(i))
    if not any(_holds_jaxpr(v) for v in sample.params.values()):  # jaxprs fix their dtypes
        raw = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64
               else a for a in raw]
    f = _apply(prim, sample.params)
    cpu = f(*_arrays(raw, flamefx.devices("cpu")[0]))
    gpu = f(*_arrays(raw, flamefx.devices("gpu")[0]))
    if any(isinstance(a, np.ndarray) for a in raw):
        for o in gpu:
            assert o.device.platform == "gpu", f"{name}: output left the GPU"
    _assert_outputs_close(gpu, cpu, 2e-4, f"{name} GPU vs CPU")
    if sample.properties is not None:
        sample.properties(raw, [np.asarray(o) for o in gpu])
    if prim.differentiable and sample.grad_argnums:
        def loss_on(device):
            args = _arrays(raw, device)

            def loss(*diff):
                full = list(args)
                for k, x in zip(sample.grad_argnums, diff):
                    full[k] = x
                return _reading_loss(f(*full))
            return flamefx.grad(loss, argnums=tuple(range(len(sample.grad_argnums))))(
                *[args[k] for k in sample.grad_argnums])
        _assert_outputs_close(loss_on(flamefx.devices("gpu")[0]),
                              loss_on(flamefx.devices("cpu")[0]), 2e-3, f"{name} GPU grads")


_GPU_VMAP_SAMPLE = ("add", "exp", "reduce_sum", "dot_general", "transpose", "gather",
                    "broadcast_in_dim", "select_n", "conv_general_dilated", "scan")


@pytest.mark.gpu
@pytest.mark.parametrize("name", [n for n in _GPU_VMAP_SAMPLE if n in SAMPLES])
def test_gpu_vmap_matches_cpu(name):
    prim, sample = _sample(name, 0)
    rng = np.random.default_rng(7)
    examples = [sample.make(rng) for _ in range(3)]
    keep64 = any(_holds_jaxpr(v) for v in sample.params.values())
    batched = [np.stack([ex[k] for ex in examples]) if isinstance(a, np.ndarray) else a
               for k, a in enumerate(examples[0])]
    if not keep64:
        batched = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64
                   else a for a in batched]
    f = flamefx.vmap(_apply(prim, sample.params))
    cpu = f(*_arrays(batched, flamefx.devices("cpu")[0]))
    gpu = f(*_arrays(batched, flamefx.devices("gpu")[0]))
    _assert_outputs_close(gpu, cpu, 2e-4, f"{name} vmap GPU vs CPU")


@pytest.mark.parametrize("name,i", CASES)
def test_vmap_over_an_empty_batch(name, i):
    prim, sample = _sample(name, i)
    args = sample.make(np.random.default_rng(i))
    positions, combos = _batched_combinations(sample, args)
    if not combos:
        pytest.skip("no array arguments to batch")
    f = _apply(prim, sample.params)
    single = f(*_arrays(args))
    in_axes = [0 if k in positions else None for k in range(len(args))]
    empty = [np.empty((0,) + np.shape(a), np.asarray(a).dtype) if k in positions else a
             for k, a in enumerate(args)]
    outs = flamefx.vmap(f, in_axes=tuple(in_axes))(*_arrays(empty))
    assert [o.shape for o in outs] == [(0,) + s.shape for s in single]
    assert [o.dtype for o in outs] == [s.dtype for s in single]
