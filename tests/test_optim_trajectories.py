"""Every optimizer against its update equations written out in float64 NumPy (independently
of flamefx), 20 steps on three problems: a quadratic, a Rosenbrock-like valley (0-d
params), and a tiny linear regression (a matrix and a bias). flamefx runs in float64 with
gradients from ``flamefx.grad``; the reference uses hand-written gradients. Both
trajectories must agree to ~1e-9 at every step.

Each reference is per leaf: ``init(p) -> state`` and ``step(g, p, state, t) -> (update,
state)`` with ``t`` the 1-based step; the update is added to the parameter.
"""

import math

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, optim, tree_util

STEPS = 20
LR = 0.03


# --- the three problems ----------------------------------------------------------------------


def _quadratic():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((5, 5))
    a = m @ m.T / 5 + np.eye(5)
    b = rng.standard_normal(5)

    def loss(params):
        x = params["x"]
        return 0.5 * fnp.sum(x * (fnp.asarray(a) @ x)) - fnp.sum(fnp.asarray(b) * x)

    def grad(params):
        return {"x": a @ params["x"] - b}

    return loss, grad, {"x": rng.standard_normal(5)}


def _rosenbrock():
    def loss(params):
        x, y = params["x"], params["y"]
        return (1 - x) ** 2 + 10 * (y - x * x) ** 2

    def grad(params):
        x, y = params["x"], params["y"]
        return {"x": -2 * (1 - x) - 40 * x * (y - x * x), "y": 20 * (y - x * x)}

    return loss, grad, {"x": np.float64(-0.8), "y": np.float64(1.2)}


def _linear_regression():
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((8, 4))
    targets = inputs @ rng.standard_normal((4, 3)) + 0.5

    def loss(params):
        residual = fnp.asarray(inputs) @ params["w"] + params["b"] - fnp.asarray(targets)
        return 0.5 * fnp.sum(residual * residual) / 8

    def grad(params):
        residual = inputs @ params["w"] + params["b"] - targets
        return {"w": inputs.T @ residual / 8, "b": residual.sum(0) / 8}

    return loss, grad, {"w": 0.3 * rng.standard_normal((4, 3)), "b": np.zeros(3) + 0.1}


PROBLEMS = {"quadratic": _quadratic, "rosenbrock": _rosenbrock,
            "linear_regression": _linear_regression}


def _flamefx_trajectory(opt, loss, params0):
    params = tree_util.tree_map(lambda v: fnp.asarray(np.asarray(v, np.float64)), params0)
    state = opt.init(params)
    history = []
    for _ in range(STEPS):
        updates, state = opt.update(flamefx.grad(loss)(params), state, params)
        params = optim.apply_updates(params, updates)
        history.append({k: np.asarray(v) for k, v in params.items()})
    return history


def _reference_trajectory(init, step, grad, params0):
    params = {k: np.asarray(v, np.float64) for k, v in params0.items()}
    states = {k: init(v) for k, v in params.items()}
    history = []
    for t in range(1, STEPS + 1):
        grads = grad(params)
        for k in params:
            update, states[k] = step(grads[k], params[k], states[k], t)
            params[k] = params[k] + update
        history.append({k: v.copy() for k, v in params.items()})
    return history


def check_trajectories(make_opt, init, step, rtol=1e-9, atol=1e-11):
    """Runs ``make_opt()`` and the NumPy reference on every problem and compares them."""
    with config.override("enable_x64", True):
        for name, problem in PROBLEMS.items():
            loss, grad, params0 = problem()
            got = _flamefx_trajectory(make_opt(), loss, params0)
            want = _reference_trajectory(init, step, grad, params0)
            for t, (g, w) in enumerate(zip(got, want)):
                for k in w:
                    np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=atol,
                                               err_msg=f"{name}, step {t + 1}, leaf {k}")
            assert np.isfinite(want[-1][next(iter(want[-1]))]).all()


# --- the reference update equations ---------------------------------------------------------


def _zeros2(p):
    return np.zeros_like(p), np.zeros_like(p)


def _adam_like(second_moment, b1=0.9, b2=0.999, eps=1e-8, nesterov=False, weight_decay=0.0,
               lr=LR):
    def step(g, p, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = second_moment(g, m, v)
        if nesterov:
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
        else:
            m_hat = m / (1 - b1 ** t)
        u = m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps) + weight_decay * p
        return -lr * u, (m, v)
    return step


def _ema_square(b2=0.999):
    return lambda g, m, v: b2 * v + (1 - b2) * g * g


def _belief_second_moment(g, m, v):
    return 0.999 * v + 0.001 * (g - m) ** 2 + 1e-16


def _adabelief_step(nesterov):
    inner = _adam_like(_belief_second_moment, eps=1e-16, nesterov=nesterov)
    return inner


def _radam_step(g, p, s, t):
    b1, b2, eps = 0.9, 0.999, 1e-8
    m, v = s
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    m_hat = m / (1 - b1 ** t)
    if rho >= 5.0:
        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        u = r * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
    else:
        u = m_hat
    return -LR * u, (m, v)


def _yogi_init(p):
    return np.full_like(p, 1e-6), np.full_like(p, 1e-6)


def _yogi_step(g, p, s, t):
    b1, b2, eps = 0.9, 0.999, 1e-3
    m, v = s
    m = b1 * m + (1 - b1) * g
    v = v - (1 - b2) * np.sign(v - g * g) * g * g
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return -LR * u, (m, v)


def _amsgrad_step(g, p, s, t):
    m, v, vmax = s
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    vmax = np.maximum(vmax, v / (1 - 0.999 ** t))
    return -LR * (m / (1 - 0.9 ** t)) / (np.sqrt(vmax) + 1e-8), (m, v, vmax)


def _adamax_step(weight_decay):
    def step(g, p, s, t):
        m, v = s
        m = 0.9 * m + 0.1 * g
        v = np.maximum(0.999 * v, np.abs(g) + 1e-8)
        return -LR * ((m / (1 - 0.9 ** t)) / v + weight_decay * p), (m, v)
    return step


def _novograd_init(p):
    return np.zeros_like(p), 0.0


def _novograd_step(weight_decay):
    b1, b2, eps = 0.9, 0.25, 1e-6

    def step(g, p, s, t):
        m, v = s
        norm2 = float(np.sum(g * g))
        v = norm2 if t == 1 else b2 * v + (1 - b2) * norm2
        normalized = g / (np.sqrt(v) + eps) + weight_decay * p
        m = normalized if t == 1 else b1 * m + normalized
        return -LR * m, (m, v)
    return step


def _rmsprop_step(g, p, nu, t):
    nu = 0.9 * nu + 0.1 * g * g
    return -LR * g / np.sqrt(nu + 1e-8), nu


def _adagrad_step(g, p, total, t):
    total = total + g * g
    return -LR * g / np.sqrt(total + 1e-7), total


def _lion_step(g, p, m, t):
    u = np.sign(0.9 * m + 0.1 * g) + 0.01 * p
    return -LR * u, 0.99 * m + 0.01 * g


def _adadelta_step(g, p, s, t):
    rho, eps = 0.9, 1e-6
    e_g, e_x = s
    e_g = rho * e_g + (1 - rho) * g * g
    u = np.sqrt(e_x + eps) / np.sqrt(e_g + eps) * g
    e_x = rho * e_x + (1 - rho) * u * u
    return -0.5 * u, (e_g, e_x)


def _sgd_step(lr, momentum, nesterov):
    def step(g, p, trace, t):
        trace = g + momentum * trace
        return -lr * (g + momentum * trace if nesterov else trace), trace
    return step


def _norm(x):
    return float(np.sqrt(np.sum(x * x)))


def _trust_ratio(u, p, coefficient=1.0, min_norm=0.0):
    param_norm, update_norm = max(_norm(p), min_norm), max(_norm(u), min_norm)
    if param_norm == 0 or update_norm == 0:
        return 1.0
    return coefficient * param_norm / update_norm


def _lamb_step(g, p, s, t):
    b1, b2, eps, weight_decay = 0.9, 0.999, 1e-6, 0.1
    m, v = s
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + weight_decay * p
    return -LR * _trust_ratio(u, p) * u, (m, v)


def _lars_step(trust_leaf_ndim):
    lr, weight_decay, momentum = 0.02, 0.1, 0.9

    def step(g, p, trace, t):
        u = g + weight_decay * p
        if p.ndim >= trust_leaf_ndim:
            u = _trust_ratio(u, p, coefficient=0.001) * u
        trace = -lr * u + momentum * trace
        return trace, trace
    return step


def _fromage_step(lr_of_step):
    def step(g, p, s, t):
        lr = lr_of_step(t - 1)
        shrink = 1 / math.sqrt(1 + lr ** 2)
        u = _trust_ratio(g, p, min_norm=1e-6) * g
        return -lr * shrink * u + (shrink - 1) * p, s
    return step


def _adamw_scheduled_decay_step(g, p, s, t):
    weight_decay = 0.1 * 0.5 * (1 + math.cos(math.pi * min(t - 1, 20) / 20))
    return _adam_like(_ema_square(), weight_decay=weight_decay)(g, p, s, t)


def _factored_dims(shape, min_dim):
    if len(shape) < 2 or sorted(shape)[-2] < min_dim:
        return None
    order = np.argsort(shape, kind="stable")
    return int(order[-2]), int(order[-1])


def _adafactor_init(min_dim):
    def init(p):
        dims = _factored_dims(p.shape, min_dim)
        if dims is None:
            return np.zeros_like(p), None, None, np.zeros_like(p)
        d1, d0 = dims
        return None, p.mean(axis=d0) * 0, p.mean(axis=d1) * 0, np.zeros_like(p)
    return init


def _adafactor_step(min_dim, momentum=None, weight_decay=None):
    def step(g, p, s, t):
        v, v_row, v_col, m = s
        decay = 1 - t ** -0.8
        g_sq = g * g + 1e-30
        dims = _factored_dims(p.shape, min_dim)
        if dims is None:
            v = decay * v + (1 - decay) * g_sq
            u = g / np.sqrt(v)
        else:
            d1, d0 = dims
            v_row = decay * v_row + (1 - decay) * g_sq.mean(axis=d0)
            v_col = decay * v_col + (1 - decay) * g_sq.mean(axis=d1)
            # v ~ outer(row, col) / mean(row): the rank-1 estimate of the full EMA.
            v_est = np.expand_dims(v_row, d0) * np.expand_dims(v_col, d1) / v_row.mean()
            u = g / np.sqrt(v_est)
        u = u / max(1.0, np.sqrt(np.mean(u * u)))  # block-RMS clipping at 1
        u = LR * u * max(np.sqrt(np.mean(p * p)), 1e-3)  # relative step size
        if momentum is not None:
            m = momentum * m + (1 - momentum) * u
            u = m
        if weight_decay is not None:
            u = u + weight_decay * p
        return -u, (v, v_row, v_col, m)
    return step


def _sm3_init(p):
    if p.ndim < 2:
        return [np.zeros_like(p)], np.zeros_like(p)
    return [np.zeros(n) for n in p.shape], np.zeros_like(p)


def _sm3_step(g, p, s, t):
    accumulators, m = s
    if p.ndim < 2:
        cover = accumulators[0]
    else:
        rows, cols = accumulators
        cover = np.minimum(rows[:, None], cols[None, :])
    accum = g * g + cover
    preconditioned = np.where(accum > 0, g / np.sqrt(accum + 1e-8), 0.0)
    m = 0.9 * m + 0.1 * preconditioned
    accumulators = [accum] if p.ndim < 2 else [accum.max(axis=1), accum.max(axis=0)]
    return -0.1 * m, (accumulators, m)


def _param_block_norm_step(g, p, s, t):
    return -0.01 * g * max(_norm(p), 1e-3), s


def _clip_by_block_rms_step(g, p, s, t):
    return -LR * g / max(1.0, np.sqrt(np.mean(g * g)) / 0.5), s


CASES = {
    "sgd": (lambda: optim.sgd(0.005), np.zeros_like, _sgd_step(0.005, 0.0, False)),
    "sgd_momentum": (lambda: optim.sgd(0.005, momentum=0.8), np.zeros_like,
                     _sgd_step(0.005, 0.8, False)),
    "adam": (lambda: optim.adam(LR), _zeros2, _adam_like(_ema_square())),
    "adamw": (lambda: optim.adamw(LR, weight_decay=0.1), _zeros2,
              _adam_like(_ema_square(), weight_decay=0.1)),
    "rmsprop": (lambda: optim.rmsprop(LR), np.zeros_like, _rmsprop_step),
    "adagrad": (lambda: optim.adagrad(LR), lambda p: np.full_like(p, 0.1), _adagrad_step),
    "lion": (lambda: optim.lion(LR, weight_decay=0.01), np.zeros_like, _lion_step),
    "sgd_nesterov": (lambda: optim.sgd(0.005, momentum=0.8, nesterov=True), np.zeros_like,
                     _sgd_step(0.005, 0.8, True)),
    "nadam": (lambda: optim.nadam(LR), _zeros2, _adam_like(_ema_square(), nesterov=True)),
    "nadamw": (lambda: optim.nadamw(LR, weight_decay=0.1), _zeros2,
               _adam_like(_ema_square(), nesterov=True, weight_decay=0.1)),
    "adabelief": (lambda: optim.adabelief(LR), _zeros2, _adabelief_step(False)),
    "adabelief_nesterov": (lambda: optim.adabelief(LR, nesterov=True), _zeros2,
                           _adabelief_step(True)),
    "radam": (lambda: optim.radam(LR), _zeros2, _radam_step),
    "yogi": (lambda: optim.yogi(LR), _yogi_init, _yogi_step),
    "amsgrad": (lambda: optim.amsgrad(LR), lambda p: (np.zeros_like(p),) * 3, _amsgrad_step),
    "adamax": (lambda: optim.adamax(LR), _zeros2, _adamax_step(0.0)),
    "adamaxw": (lambda: optim.adamaxw(LR, weight_decay=0.1), _zeros2, _adamax_step(0.1)),
    "novograd": (lambda: optim.novograd(LR), _novograd_init, _novograd_step(0.0)),
    "novograd_decay": (lambda: optim.novograd(LR, weight_decay=0.1), _novograd_init,
                       _novograd_step(0.1)),
    "adadelta": (lambda: optim.adadelta(0.5), _zeros2, _adadelta_step),
    "lamb": (lambda: optim.lamb(LR, weight_decay=0.1), _zeros2, _lamb_step),
    "lars": (lambda: optim.lars(0.02, weight_decay=0.1), np.zeros_like, _lars_step(0)),
    "lars_trust_ratio_mask": (
        lambda: optim.lars(0.02, weight_decay=0.1,
                           trust_ratio_mask=lambda p: {k: v.ndim >= 2 for k, v in p.items()}),
        np.zeros_like, _lars_step(2)),
    "fromage": (lambda: optim.fromage(LR), lambda p: None, _fromage_step(lambda step: LR)),
    "fromage_schedule": (lambda: optim.fromage(optim.exponential_decay(0.05, 5, 0.5)),
                         lambda p: None, _fromage_step(lambda step: 0.05 * 0.5 ** (step / 5))),
    "adamw_scheduled_weight_decay": (
        lambda: optim.adamw(LR, weight_decay=optim.cosine_decay_schedule(0.1, 20)), _zeros2,
        _adamw_scheduled_decay_step),
    "adafactor": (lambda: optim.adafactor(LR, min_dim_size_to_factor=2),
                  _adafactor_init(2), _adafactor_step(2)),
    "adafactor_unfactored": (lambda: optim.adafactor(LR), _adafactor_init(128),
                             _adafactor_step(128)),
    "adafactor_momentum_decay": (
        lambda: optim.adafactor(LR, min_dim_size_to_factor=2, momentum=0.9,
                                weight_decay_rate=0.01),
        _adafactor_init(2), _adafactor_step(2, momentum=0.9, weight_decay=0.01)),
    "sm3": (lambda: optim.sm3(0.1), _sm3_init, _sm3_step),
    "scale_by_param_block_norm": (
        lambda: optim.chain(optim.scale_by_param_block_norm(), optim.scale(-0.01)),
        lambda p: None, _param_block_norm_step),
    "clip_by_block_rms": (lambda: optim.chain(optim.clip_by_block_rms(0.5), optim.sgd(LR)),
                          lambda p: None, _clip_by_block_rms_step),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_numpy_update_equations(name):
    make_opt, init, step = CASES[name]
    check_trajectories(make_opt, init, step)


def test_noisy_sgd_adds_annealed_noise_from_the_split_keys():
    """The noise at step t is N(0, eta / t**gamma) drawn, per leaf, with the keys of the
    documented stream: (next, sample) = split(key); split(sample, number of leaves)."""
    from flamefx import random

    eta, gamma = 0.1, 0.55
    with config.override("enable_x64", True):
        for name, problem in PROBLEMS.items():
            loss, grad, params0 = problem()
            got = _flamefx_trajectory(optim.noisy_sgd(LR, eta, gamma, key=3), loss, params0)
            params = {k: np.asarray(v, np.float64) for k, v in params0.items()}
            names = sorted(params)  # the leaf order of a dict
            key = random.PRNGKey(3)
            for t in range(1, STEPS + 1):
                key, sample = random.split(key)
                leaf_keys = random.split(sample, len(names))
                grads = grad(params)
                for i, k in enumerate(names):
                    noise = np.asarray(random.normal(leaf_keys[i], np.shape(params[k]),
                                                     np.float64))
                    params[k] = params[k] - LR * (grads[k] + np.sqrt(eta / t ** gamma) * noise)
                    np.testing.assert_allclose(got[t - 1][k], params[k], rtol=1e-9, atol=1e-11,
                                               err_msg=f"{name}, step {t}, leaf {k}")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_state_dtypes_are_kept_and_jit_equals_eager(name, dtype):
    """Two steps on float32 / bfloat16 params: every state leaf keeps its dtype (so a jitted
    step never retraces), updates keep the params' dtype, and jit gives eager's numbers."""
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    rng = np.random.default_rng(4)
    params = {"w": fnp.asarray(rng.standard_normal((3, 2)).astype(np_dtype)),
              "b": fnp.asarray(rng.standard_normal(2).astype(np_dtype)),
              "s": fnp.asarray(np.asarray(0.5, np_dtype))}
    grads = [tree_util.tree_map(lambda p, i=i: p * 0.5 + i * 0.1, params) for i in range(2)]
    opt = CASES[name][0]()
    jitted_update = flamefx.jit(opt.update)
    state = eager_state = opt.init(params)
    dtypes_before = [x.dtype for x in tree_util.tree_leaves(state)]
    for g in grads:
        updates, state = jitted_update(g, state, params)
        eager_updates, eager_state = opt.update(g, eager_state, params)
        assert [x.dtype for x in tree_util.tree_leaves(state)] == dtypes_before
        for k in params:
            assert optim.apply_updates(params, updates)[k].dtype == params[k].dtype
            np.testing.assert_allclose(np.asarray(updates[k], np.float64),
                                       np.asarray(eager_updates[k], np.float64),
                                       rtol=1e-2 if dtype == "bfloat16" else 1e-5, atol=1e-6)


@pytest.mark.parametrize("make_opt", [
    lambda: optim.lamb(0.1), lambda: optim.novograd(0.1), lambda: optim.fromage(0.1),
    lambda: optim.adafactor(0.1), lambda: optim.chain(optim.scale_by_param_block_rms()),
], ids=["lamb", "novograd", "fromage", "adafactor", "scale_by_param_block_rms"])
def test_optimizers_that_read_params_say_so_when_given_none(make_opt):
    from flamefx.errors import FlamefxValueError

    opt = make_opt()
    params = {"w": fnp.ones((2, 2))}
    with pytest.raises(FlamefxValueError, match="needs the params"):
        opt.update(params, opt.init(params))


@pytest.mark.parametrize("name", ["nadam", "radam", "novograd", "lamb", "lars", "adafactor",
                                  "sm3", "yogi"])
def test_vmap_over_independent_runs_equals_a_loop(name):
    """A sweep (vmap over stacked params and grads, each its own optimizer state) gives each
    run's own numbers: per-leaf norms and factored statistics stay per run."""
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((3, 4, 2)).astype(np.float32),
              "b": rng.standard_normal((3, 2)).astype(np.float32)}
    grads = {"w": rng.standard_normal((3, 4, 2)).astype(np.float32),
             "b": rng.standard_normal((3, 2)).astype(np.float32)}
    make_opt = CASES[name][0]

    def two_steps(params, grads):
        opt = make_opt()
        state = opt.init(params)
        for _ in range(2):
            updates, state = opt.update(grads, state, params)
            params = optim.apply_updates(params, updates)
        return params

    batched = flamefx.vmap(two_steps)(tree_util.tree_map(fnp.asarray, params),
                                      tree_util.tree_map(fnp.asarray, grads))
    for i in range(3):
        single = two_steps({k: fnp.asarray(v[i]) for k, v in params.items()},
                           {k: fnp.asarray(v[i]) for k, v in grads.items()})
        for k in params:
            np.testing.assert_allclose(np.asarray(batched[k])[i], np.asarray(single[k]),
                                       rtol=1e-5, atol=1e-6, err_msg=f"run {i}, leaf {k}")
