"""Schedulers against the torch.optim update rules, written out by hand in this file."""

import math

import numpy as np
import pytest

from backends import to_numpy
from nncore.schedulers import Adagrad, AdagradMomentum, Adam, Constant, Momentum, RMS_prop, Scheduler

STEPS = 10


# ---- reference rules (float64, one parameter array; "change" is subtracted from it) ----------


def ref_constant(grads, eta):
    return [eta * g for g in grads]


def ref_momentum(grads, eta, momentum):
    # torch.optim.SGD(momentum=mu, dampening=0): buf = mu buf + g; p -= lr buf  (same as change = mu change + eta g)
    changes, change = [], np.zeros_like(grads[0])
    for g in grads:
        change = momentum * change + eta * g
        changes.append(change)
    return changes


def ref_adagrad(grads, eta, eps=1e-8):
    # torch.optim.Adagrad(lr_decay=0, initial_accumulator_value=0)
    changes, G = [], np.zeros_like(grads[0])
    for g in grads:
        G = G + g * g
        changes.append(eta * g / (np.sqrt(G) + eps))
    return changes


def ref_adagrad_momentum(grads, eta, momentum, eps=1e-8):
    changes, G, change = [], np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for g in grads:
        G = G + g * g
        change = momentum * change + eta * g / (np.sqrt(G) + eps)
        changes.append(change)
    return changes


def ref_rmsprop(grads, eta, rho, eps=1e-8):
    # torch.optim.RMSprop(alpha=rho, centered=False, momentum=0)
    changes, v = [], np.zeros_like(grads[0])
    for g in grads:
        v = rho * v + (1 - rho) * g * g
        changes.append(eta * g / (np.sqrt(v) + eps))
    return changes


def ref_adam(grads, eta, rho, rho2, eps=1e-8):
    # torch.optim.Adam(betas=(rho, rho2), amsgrad=False)
    changes, m, v = [], np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for step, g in enumerate(grads, start=1):
        m = rho * m + (1 - rho) * g
        v = rho2 * v + (1 - rho2) * g * g
        m_hat = m / (1 - rho**step)
        v_hat = v / (1 - rho2**step)
        changes.append(eta * m_hat / (np.sqrt(v_hat) + eps))
    return changes


CASES = [
    pytest.param(lambda: Constant(0.05), lambda g: ref_constant(g, 0.05), id="Constant"),
    pytest.param(lambda: Momentum(0.05, 0.9), lambda g: ref_momentum(g, 0.05, 0.9), id="Momentum"),
    pytest.param(lambda: Adagrad(0.1), lambda g: ref_adagrad(g, 0.1), id="Adagrad"),
    pytest.param(lambda: Adagrad(0.1, eps=1e-3), lambda g: ref_adagrad(g, 0.1, 1e-3), id="Adagrad-eps"),
    pytest.param(lambda: AdagradMomentum(0.1, 0.8), lambda g: ref_adagrad_momentum(g, 0.1, 0.8), id="AdagradMomentum"),
    pytest.param(lambda: RMS_prop(0.01, 0.9), lambda g: ref_rmsprop(g, 0.01, 0.9), id="RMS_prop"),
    pytest.param(lambda: RMS_prop(0.01, 0.99, eps=1e-4), lambda g: ref_rmsprop(g, 0.01, 0.99, 1e-4), id="RMS_prop-eps"),
    pytest.param(lambda: Adam(1e-3, 0.9, 0.999), lambda g: ref_adam(g, 1e-3, 0.9, 0.999), id="Adam"),
    pytest.param(lambda: Adam(0.01, 0.5, 0.9, eps=1e-6), lambda g: ref_adam(g, 0.01, 0.5, 0.9, 1e-6), id="Adam-custom"),
]


def gradients(rng, shape=(3, 4), steps=STEPS, dtype=np.float64):
    # Random signs and scales over several decades, including exact zeros.
    grads = [rng.normal(scale=10.0 ** rng.integers(-3, 2), size=shape) for _ in range(steps)]
    grads[min(3, steps - 1)][0, 0] = 0.0
    return [g.astype(dtype) for g in grads]


@pytest.mark.parametrize("make,reference", CASES)
def test_matches_hand_written_rule_for_ten_steps(make, reference, rng):
    grads = gradients(rng)
    scheduler = make()
    expected = reference(grads)
    for step, (g, want) in enumerate(zip(grads, expected)):
        got = scheduler.update_change(g)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("make,reference", CASES)
def test_parameter_trajectory_matches_torch_rule(make, reference, rng):
    # param -= change, step for step, as torch.optim does with lr=eta.
    grads = gradients(rng)
    param = rng.normal(size=grads[0].shape)
    ref_param = param.copy()
    scheduler = make()
    for g, change in zip(grads, reference(grads)):
        param = param - scheduler.update_change(g)
        ref_param = ref_param - change
    np.testing.assert_allclose(param, ref_param, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make,reference", CASES)
def test_reset_forgets_all_state(make, reference, rng):
    grads = gradients(rng)
    scheduler = make()
    for g in gradients(np.random.default_rng(1)):
        scheduler.update_change(g)
    scheduler.reset()
    for g, want in zip(grads, reference(grads)):
        np.testing.assert_allclose(scheduler.update_change(g), want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("make,reference", CASES)
def test_fresh_gives_independent_state(make, reference, rng):
    # fresh() of a scheduler that has taken steps: same settings, no state, and neither the
    # copies nor the original see each other's updates.
    history = gradients(np.random.default_rng(2))
    a_grads, b_grads, more = gradients(rng), gradients(np.random.default_rng(3)), gradients(np.random.default_rng(4))
    used = make()
    for g in history:
        used.update_change(g)
    a, b = used.fresh(), used.fresh()
    assert type(a) is type(used) and a is not used and a is not b
    assert a.get_config() == used.get_config()
    want_used = reference(history + more)[len(history):]
    for ga, gb, gu, wa, wb, wu in zip(a_grads, b_grads, more, reference(a_grads), reference(b_grads), want_used):
        np.testing.assert_allclose(a.update_change(ga), wa, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(b.update_change(gb), wb, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(used.update_change(gu), wu, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("make,reference", CASES)
def test_float32_gradients_give_float32_changes_and_state(make, reference, rng):
    grads = gradients(rng, dtype=np.float32)
    scheduler = make()
    expected = reference([g.astype(np.float64) for g in grads])
    for g, want in zip(grads, expected):
        change = scheduler.update_change(g)
        assert change.dtype == np.float32
        np.testing.assert_allclose(change, want, rtol=2e-4, atol=1e-7)
    for name in scheduler._state:
        value = getattr(scheduler, name)
        if hasattr(value, "dtype"):
            assert value.dtype == np.float32, name


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda e: Constant(e), id="Constant"),
        pytest.param(lambda e: Momentum(e, np.float64(0.9)), id="Momentum"),
        pytest.param(lambda e: Adagrad(e, eps=np.float64(1e-8)), id="Adagrad"),
        pytest.param(lambda e: AdagradMomentum(e, np.float64(0.9)), id="AdagradMomentum"),
        pytest.param(lambda e: RMS_prop(e, np.float64(0.9)), id="RMS_prop"),
        pytest.param(lambda e: Adam(e, np.float64(0.9), np.float64(0.999)), id="Adam"),
    ],
)
def test_numpy_scalar_hyperparameters_keep_float32(make, rng):
    # Grid searches take eta from np.logspace: a NumPy float64 scalar must not promote float32 training.
    scheduler = make(np.logspace(-4, -1, 4)[2])
    for g in gradients(rng, steps=3, dtype=np.float32):
        assert scheduler.update_change(g).dtype == np.float32
    for name in scheduler._state:
        value = getattr(scheduler, name)
        if hasattr(value, "dtype"):
            assert value.dtype == np.float32, name


@pytest.mark.parametrize("make,reference", CASES)
def test_on_strict_device1(make, reference, rng, strict_device1):
    grads = gradients(rng, steps=4)
    scheduler = make()
    for g, want in zip(grads, reference(grads)):
        change = scheduler.update_change(strict_device1.asarray(g))
        assert change.device == strict_device1.device
        np.testing.assert_allclose(to_numpy(change), want, rtol=1e-12, atol=1e-300)


def test_adam_bias_correction_counts_steps(rng):
    # With a constant gradient, Adam's first step is eta * g / (|g| + eps): bias correction by step 1.
    g = np.array([0.5, -2.0, 1e-3])
    adam = Adam(0.1, 0.9, 0.999)
    np.testing.assert_allclose(adam.update_change(g), 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(adam.update_change(g), 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-9)
    assert adam.t == 2
    adam.reset()
    assert adam.t == 0


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Scheduler(0.1).update_change(np.ones(2))


def test_config_and_repr():
    adam = Adam(1e-3, 0.9, 0.999)
    config = adam.get_config()
    assert config == {"eta": 1e-3, "rho": 0.9, "rho2": 0.999, "eps": 1e-8}
    assert all(isinstance(v, float) and math.isfinite(v) for v in config.values())
    assert "Adam(" in repr(adam)


@pytest.mark.parametrize("make", [lambda: Adam("1e-3"), lambda: Momentum(0.1, None), lambda: RMS_prop(0.1, [0.9]),
                                  lambda: Constant(True)])
def test_non_numeric_hyperparameters_are_refused(make):
    with pytest.raises(TypeError):
        make()
