"""inject_hyperparams, lookahead, zero_nans and multi_transform: trajectories against their
equations in float64 NumPy (on the problems of test_optim_trajectories), hyperparameters
read and changed through the state (eagerly and under jit), and bad arguments."""

import numpy as np
import pytest

import flamefx
import flamefx.numpy as fnp
from flamefx import config, optim
from tests.test_optim_trajectories import LR, PROBLEMS, STEPS, _zeros2, check_trajectories


def _adam_step(lr_of_step):
    def step(g, p, s, t):
        m, v = s
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        return -lr_of_step(t - 1) * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t))
                                                            + 1e-8), (m, v)
    return step


def test_inject_hyperparams_adam_follows_adam_equations():
    check_trajectories(lambda: optim.inject_hyperparams(optim.adam)(learning_rate=LR),
                       _zeros2, _adam_step(lambda step: LR))


def test_inject_hyperparams_evaluates_schedules_at_the_step_count():
    def momentum_step(g, p, trace, t):
        trace = g + 0.5 * trace
        return -0.02 * max(0.0, 1 - (t - 1) / 15) * trace, trace

    check_trajectories(
        lambda: optim.inject_hyperparams(optim.sgd)(
            learning_rate=optim.linear_schedule(0.02, 0.0, 15), momentum=0.5),
        np.zeros_like, momentum_step)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_hyperparams_are_readable_and_settable_in_the_state(jit):
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.0)
    params = {"w": fnp.ones(2)}
    grads = {"w": fnp.ones(2)}
    update = flamefx.jit(opt.update) if jit else opt.update
    state = opt.init(params)
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    assert state.hyperparams["learning_rate"].dtype == fnp.float32
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, -0.1], rtol=1e-6)
    state.hyperparams["learning_rate"] = fnp.asarray(0.01)
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.01, -0.01], rtol=1e-6)
    assert int(state.count) == 2
    np.testing.assert_allclose(float(state.hyperparams["learning_rate"]), 0.01, rtol=1e-6)


def test_inject_hyperparams_keeps_static_args_and_bools_out_of_the_state():
    opt = optim.inject_hyperparams(optim.adafactor, static_args="min_dim_size_to_factor")(
        learning_rate=0.1, min_dim_size_to_factor=2, multiply_by_parameter_scale=False)
    state = opt.init({"w": fnp.ones((3, 4))})
    assert "min_dim_size_to_factor" not in state.hyperparams
    assert "multiply_by_parameter_scale" not in state.hyperparams
    assert state.inner_state[0].v_row["w"].shape == (3,)  # factored: the static arg was used
    with pytest.raises(ValueError, match="static_args"):
        optim.inject_hyperparams(optim.adam, static_args=("nope",))


def test_lookahead_follows_its_equations():
    sync_period, alpha, lr = 3, 0.4, 0.005
    with config.override("enable_x64", True):
        for name, problem in PROBLEMS.items():
            loss, grad, params0 = problem()
            opt = optim.lookahead(optim.sgd(lr), sync_period, alpha)
            params = optim.LookaheadParams.init_synced(
                {k: fnp.asarray(np.asarray(v, np.float64)) for k, v in params0.items()})
            state = opt.init(params)
            fast = {k: np.asarray(v, np.float64) for k, v in params0.items()}
            slow = dict(fast)
            for t in range(1, STEPS + 1):
                updates, state = opt.update(flamefx.grad(loss)(params.fast), state, params)
                params = optim.apply_updates(params, updates)
                g = grad(fast)
                fast = {k: fast[k] - lr * g[k] for k in fast}
                if t % sync_period == 0:
                    slow = {k: slow[k] + alpha * (fast[k] - slow[k]) for k in slow}
                    fast = dict(slow)
                for k in fast:
                    np.testing.assert_allclose(np.asarray(params.fast[k]), fast[k], rtol=1e-10,
                                               err_msg=f"{name} fast {k} step {t}")
                    np.testing.assert_allclose(np.asarray(params.slow[k]), slow[k], rtol=1e-10,
                                               err_msg=f"{name} slow {k} step {t}")


def test_lookahead_reset_state_restarts_the_fast_optimizer_at_syncs():
    opt = optim.lookahead(optim.sgd(0.1, momentum=0.9), sync_period=2, slow_step_size=0.5,
                          reset_state=True)
    params = optim.LookaheadParams.init_synced({"w": fnp.zeros(2)})
    state = opt.init(params)
    grads = {"w": fnp.ones(2)}
    _, state = opt.update(grads, state, params)
    assert float(state.fast_state[0].trace["w"][0]) == 1.0
    _, state = opt.update(grads, state, params)  # a sync step: the momentum restarts
    assert float(state.fast_state[0].trace["w"][0]) == 0.0
    assert int(state.steps_since_sync) == 0


def test_lookahead_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sync_period"):
        optim.lookahead(optim.sgd(0.1), sync_period=0, slow_step_size=0.5)
    opt = optim.lookahead(optim.sgd(0.1), sync_period=2, slow_step_size=0.5)
    state = opt.init({"w": fnp.zeros(2)})
    with pytest.raises(TypeError, match="LookaheadParams"):
        opt.update({"w": fnp.ones(2)}, state, {"w": fnp.zeros(2)})


def test_zero_nans_zeroes_nans_and_records_where():
    opt = optim.zero_nans()
    updates = {"a": fnp.array([np.nan, 1.0, np.inf]), "b": fnp.array([2.0])}
    state = opt.init(updates)
    assert not bool(state.found_nan["a"])
    out, state = opt.update(updates, state)
    assert np.asarray(out["a"]).tolist() == [0.0, 1.0, np.inf]  # only NaNs are touched
    assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"])


def test_multi_transform_applies_one_optimizer_per_label():
    def by_rank(params):
        return {k: "matrix" if v.ndim >= 2 else "other" for k, v in params.items()}

    loss, grad, params0 = PROBLEMS["linear_regression"]()
    with config.override("enable_x64", True):
        opt = optim.multi_transform({"matrix": optim.adam(LR), "other": optim.sgd(LR)}, by_rank)
        params = {k: fnp.asarray(v) for k, v in params0.items()}
        state = opt.init(params)
        w, b = params0["w"], params0["b"]
        m, v = np.zeros_like(w), np.zeros_like(w)
        for t in range(1, 6):
            updates, state = opt.update(flamefx.grad(loss)(params), state, params)
            params = optim.apply_updates(params, updates)
            g = grad({"w": w, "b": b})
            m, v = 0.9 * m + 0.1 * g["w"], 0.999 * v + 0.001 * g["w"] ** 2
            w = w - LR * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
            b = b - LR * g["b"]
        np.testing.assert_allclose(np.asarray(params["w"]), w, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(params["b"]), b, rtol=1e-10)
    assert isinstance(state, optim.MultiTransformState)
