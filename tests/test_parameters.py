"""The flat parameter buffer: nothing a user does to a CNN's parameters or scheduler is lost or ignored."""

import math
import os
import signal

import numpy as np
import pytest

import nncore.parameters
from backends import to_numpy
from nncore import CNN, Adam, Constant, CostOLS, Momentum, identity, softmax


def net(scheduler=None, seed=1, dtype="float64", backend="numpy"):
    cnn = CNN(seed=seed, scheduler=scheduler or Adam(1e-3), dtype=dtype, backend=backend)
    cnn.add_Convolution2DLayer(1, 2, 3, 3)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    return cnn


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6)), np.eye(3)[rng.integers(0, 3, n)]


def test_parameters_are_views_of_one_buffer_updated_in_place():
    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=1, verbose=False)
    kernel = cnn.layers[0].kernel
    cnn.fit(X, t, epochs=1, verbose=False)
    assert cnn.layers[0].kernel is kernel  # updated in place, as torch.optim does
    flat = to_numpy(cnn.parameters.flat)
    np.testing.assert_array_equal(flat[: kernel.size], to_numpy(kernel).reshape(-1))


def test_assigned_parameters_are_trained_and_moved():
    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=1, verbose=False)
    cnn.layers[0].kernel = np.zeros((2, 1, 3, 3))
    cnn.layers[2].bias = np.full(3, 0.25)
    moved = cnn.to("array_api_strict", device="device1")
    np.testing.assert_array_equal(to_numpy(moved.layers[0].kernel), 0.0)
    np.testing.assert_array_equal(to_numpy(moved.layers[2].bias), 0.25)
    moved.to("numpy")
    cnn.fit(X, t, epochs=1, batch_size=16, shuffle=False, verbose=False)
    twin = net()
    twin.fit(X, t, epochs=1, verbose=False)
    twin.layers[0].kernel = np.zeros((2, 1, 3, 3))
    twin.layers[2].bias = np.full(3, 0.25)
    twin.fit(X, t, epochs=1, batch_size=16, shuffle=False, verbose=False)
    np.testing.assert_array_equal(to_numpy(cnn.layers[2].weights), to_numpy(twin.layers[2].weights))
    with pytest.raises(ValueError, match=r"layer 0 \(Convolution2DLayer\).kernel was assigned an array of shape "
                                         r"\(3, 3\); it must keep its shape \(2, 1, 3, 3\)"):
        cnn.layers[0].kernel = np.zeros((3, 3))
        cnn.fit(X, t, epochs=1, verbose=False)


def test_changing_the_learning_rate_takes_effect_and_is_saved(tmp_path):
    """As a torch.optim param group's lr: cnn.scheduler.eta = ... applies from the next step on."""
    X, t = data()
    cnn = net(scheduler=Constant(0.1))
    cnn.fit(X, t, epochs=1, verbose=False)
    cnn.scheduler.eta = 0.0
    before = to_numpy(cnn.layers[2].weights).copy()
    cnn.fit(X, t, epochs=1, verbose=False)
    np.testing.assert_array_equal(to_numpy(cnn.layers[2].weights), before)  # eta 0: nothing moves
    cnn.scheduler.eta = 0.05
    loaded = CNN.load(cnn.save(tmp_path / "m"))
    assert loaded.scheduler.eta == loaded.layers[0].schedulers["kernel"].eta == 0.05
    cnn.fit(X, t, epochs=1, shuffle=False, verbose=False)
    loaded.fit(X, t, epochs=1, shuffle=False, verbose=False)
    np.testing.assert_array_equal(to_numpy(loaded.layers[2].weights), to_numpy(cnn.layers[2].weights))


def test_replacing_a_layers_scheduler_after_building_is_an_error():
    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=1, verbose=False)
    cnn.layers[2].scheduler = Momentum(0.1, 0.9)
    with pytest.raises(ValueError, match=r"layer 2 \(OutputLayer\).scheduler was replaced after the CNN was built"):
        cnn.fit(X, t, epochs=1, verbose=False)


def test_layer_schedulers_are_snapshots_and_a_cnn_layer_does_not_step_alone():
    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=2, batch_size=8, verbose=False)
    view = cnn.layers[0].schedulers["kernel"]
    assert view.t == 4 and view.moment.shape == (2, 1, 3, 3)
    state = to_numpy(cnn.parameters.groups[0][0].moment).copy()
    view.moment[...] = 0
    np.testing.assert_array_equal(to_numpy(cnn.parameters.groups[0][0].moment), state)
    with pytest.raises(RuntimeError, match=r"layer 0 \(Convolution2DLayer\) belongs to a CNN"):
        cnn.layers[0].step()
    with pytest.raises(TypeError, match="resets its scheduler group"):
        cnn.layers[0].reset_schedulers(Adam(1e-2))


def test_a_first_loss_of_zero_is_no_yardstick_for_divergence():
    """A well-trained model can start a fit with a minibatch loss of exactly 0; a later ordinary loss
    is not 'absurd growth'."""
    rng = np.random.default_rng(0)
    cnn = CNN(cost_func=CostOLS, scheduler=Constant(0.01), seed=0, dtype="float64")
    cnn.add_OutputLayer(1, identity)
    X = rng.random((20, 3))
    t = np.zeros((20, 1))
    cnn._inputs(X)
    cnn.layers[0].weights = np.zeros((3, 1))
    t[10:] = 5.0  # the first batch fits exactly, the second does not
    cnn.fit(X, t, epochs=2, batch_size=10, shuffle=False, verbose=False)


def test_ctrl_c_while_a_diverged_epoch_is_undone_still_leaves_the_last_good_weights(monkeypatch):
    """An interrupt that cuts FlatParameters.restore short (state back, weights not): fit still leaves
    finite weights and state behind."""
    rng = np.random.default_rng(0)
    X, t = rng.random((16, 1, 6, 6)) * 1e3, np.eye(3)[rng.integers(0, 3, 16)]
    cnn = net(scheduler=Constant(1e30), dtype="float32")
    original, calls = nncore.parameters.FlatParameters.restore, []

    def restore(self, snapshot):
        calls.append(1)
        if len(calls) == 1:
            flat, states = snapshot
            for (scheduler, *_), state in zip(self.groups, states):
                scheduler.load_state_dict(state)
            raise KeyboardInterrupt  # before the weights were put back
        return original(self, snapshot)

    monkeypatch.setattr(nncore.parameters.FlatParameters, "restore", restore)
    with np.errstate(all="ignore"):
        scores = cnn.fit(X, t, epochs=3, verbose=False)
    assert len(calls) == 2  # the cut-short restore, then fit's own
    assert np.isfinite(scores["train_error"][0]) and np.isnan(scores["train_error"][1:]).all()
    assert all(np.isfinite(to_numpy(getattr(layer, name))).all() for layer in cnn.layers for name in layer.params)


def test_a_real_ctrl_c_at_the_end_of_an_epoch_waits_for_the_snapshot(monkeypatch, capsys):
    X, t = data()
    cnn = net()
    original = nncore.parameters.FlatParameters.snapshot
    calls = []

    def snapshot(self):
        calls.append(1)
        if len(calls) == 2:  # the end of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(nncore.parameters.FlatParameters, "snapshot", snapshot)
    scores = cnn.fit(X, t, epochs=3, verbose=True)
    assert "interrupted in epoch 1 of 3" in capsys.readouterr().err
    assert np.isnan(scores["train_error"]).all() and not math.isnan(float(to_numpy(cnn.layers[0].kernel).sum()))


def test_float32_stays_float32_in_the_buffer_and_every_state(strict_device1):
    X, t = data()
    for scheduler in (Adam(1e-3), Momentum(1e-3, 0.9), Constant(1e-3)):
        cnn = net(scheduler=scheduler, dtype="float32", backend=strict_device1)
        cnn.fit(X, t, epochs=2, batch_size=8, lam=np.float64(1e-3), verbose=False)
        assert cnn.parameters.flat.dtype == strict_device1.xp.float32
        for key, value in cnn.parameters.groups[0][0].state_dict().items():
            assert key == "t" or value is None or value.dtype == strict_device1.xp.float32, key


@pytest.mark.parametrize("copy_with", ["pickle", "deepcopy"])
def test_a_pickled_or_copied_cnn_keeps_training_through_its_own_buffer(copy_with):
    import copy
    import pickle

    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=1, batch_size=8, verbose=False)
    clone = pickle.loads(pickle.dumps(cnn)) if copy_with == "pickle" else copy.deepcopy(cnn)
    clone.fit(X, t, epochs=2, batch_size=8, shuffle=False, verbose=False)
    cnn.fit(X, t, epochs=2, batch_size=8, shuffle=False, verbose=False)
    for a, b in zip(clone.layers, cnn.layers):
        for name in a.params:
            np.testing.assert_array_equal(to_numpy(getattr(a, name)), to_numpy(getattr(b, name)), err_msg=name)
    flat = to_numpy(clone.parameters.flat)
    np.testing.assert_array_equal(flat[: clone.layers[0].kernel.size], to_numpy(clone.layers[0].kernel).ravel())


def test_a_ctrl_c_while_the_layers_are_rebound_is_repaired_at_the_next_step(monkeypatch):
    """A real SIGINT lands while bind() walks the layers (adopting an assigned kernel): the layers not yet
    rebound are noticed and every parameter is a view of the buffer again by the end of the next fit."""
    X, t = data(32)
    cnn = net(dtype="float32")
    cnn.fit(X, t, epochs=1, batch_size=16, verbose=False)
    cnn.layers[0].kernel = cnn.layers[0].kernel + 0.0
    output, armed = cnn.layers[2], [True]
    original = type(output).__setattr__

    def interrupting(self, name, value):
        original(self, name, value)
        if self is output and armed[0] and name in self.params:
            armed[0] = False
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(type(output), "__setattr__", interrupting)
    cnn.fit(X, t, epochs=1, batch_size=16, verbose=False)
    monkeypatch.undo()
    assert not armed[0]
    cnn.fit(X, t, epochs=1, batch_size=16, verbose=False)
    flat = cnn.parameters.flat
    assert all(np.shares_memory(getattr(layer, name), flat) for layer, name, *_ in cnn.parameters.entries)


def test_a_custom_scheduler_with_undeclared_host_state_keeps_it():
    """A course-style scheduler with a step counter of its own (not listed in _state): the settings sync
    copies only what the user changed on the template, never the template's untouched counter."""
    from nncore.schedulers import Scheduler

    class Decaying(Scheduler):
        def __init__(self, eta):
            super().__init__(eta)
            self.k = 0

        def update_change(self, gradient):
            self.k += 1
            return (self.eta / self.k) * gradient

    X, t = data()
    cnn = net(scheduler=Decaying(0.1))
    cnn.fit(X, t, epochs=3, batch_size=8, verbose=False)
    assert cnn.parameters.groups[0][0].k == 6
    cnn.scheduler.eta = 0.2
    cnn.fit(X, t, epochs=1, batch_size=8, verbose=False)
    assert cnn.parameters.groups[0][0].k == 8 and cnn.parameters.groups[0][0].eta == 0.2


def test_numpy_scalar_settings_become_python_floats(tmp_path):
    """A grid search's np.float64 (or np.float32) learning rate keeps float32 state float32 and saves."""
    X, t = data()
    cnn = net(scheduler=Momentum(0.01, 0.9), dtype="float32")
    cnn.fit(X, t, epochs=1, verbose=False)
    cnn.scheduler.eta = np.logspace(-3, -1, 3)[2]
    cnn.scheduler.momentum = np.float32(0.5)
    cnn.fit(X, t, epochs=1, verbose=False)
    group = cnn.parameters.groups[0][0]
    assert type(group.eta) is float and type(group.momentum) is float and group.change.dtype == np.float32
    loaded = CNN.load(cnn.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict_proba(X), cnn.predict_proba(X))
    cnn.scheduler.eta = float("nan")
    with pytest.raises(ValueError, match=r"Momentum.eta was set to nan; it must be finite"):
        cnn.fit(X, t, epochs=1, verbose=False)


def test_the_cnn_scheduler_is_replaced_only_before_building():
    X, t = data()
    cnn = net()
    cnn.scheduler = Momentum(0.01, 0.9)  # before building: the layers follow
    assert all(layer.scheduler is cnn.scheduler for layer in cnn.layers if layer.params)
    cnn.fit(X, t, epochs=1, verbose=False)
    assert isinstance(cnn.parameters.groups[0][0], Momentum)
    with pytest.raises(ValueError, match="cannot be replaced once the CNN is built"):
        cnn.scheduler = Adam(1e-3)
    with pytest.raises(TypeError, match="must be a Scheduler"):
        CNN().scheduler = "adam"


def test_a_list_assigned_as_a_parameter_is_taken_in():
    X, t = data()
    cnn = net()
    cnn.fit(X, t, epochs=1, verbose=False)
    cnn.layers[2].bias = [0.5, 0.25, 0.0]
    cnn.fit(X, t, epochs=1, verbose=False)
    assert np.shares_memory(cnn.layers[2].bias, cnn.parameters.flat)
