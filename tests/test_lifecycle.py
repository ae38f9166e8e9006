"""Training lifecycle: divergence, Ctrl-C, determinism across runs and backends, summary()."""

import math
import warnings

import numpy as np
import pytest
import tqdm

import nncore.training
from backends import get_backend, to_numpy
from nncore import CNN, LRELU, Adam, Constant, CostOLS, TrainingDivergedError, identity, softmax
from nncore.parameters import FlatParameters
from nncore.training import ABSURD_GROWTH


def weights(cnn):
    return {(i, name): to_numpy(getattr(layer, name)).copy()
            for i, layer in enumerate(cnn.layers) for name in layer.params}


def regression_net(eta=1e6, seed=1):
    cnn = CNN(cost_func=CostOLS, scheduler=Constant(eta), seed=seed, dtype="float64")
    cnn.add_FullyConnectedLayer(8, act_func=LRELU)
    cnn.add_OutputLayer(2, identity)
    return cnn


def regression_data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 4))
    return X, X @ rng.random((4, 2))


def image_net(backend="numpy", dtype="float64", seed=11, device=None):
    cnn = CNN(scheduler=Adam(1e-2, 0.9, 0.999), seed=seed, backend=get_backend(backend, device), dtype=dtype)
    cnn.add_Convolution2DLayer(1, 3, 3, 3, act_func="relu")
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="average")
    cnn.add_Convolution2DLayer(3, 2, 2, 2, pad="valid")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(6)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def image_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)), np.eye(3)[rng.integers(0, 3, n)]


# ---- divergence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("warnings_as", ["ignore", "error"])
def test_divergence_stops_with_clear_error_and_keeps_last_finite_weights(warnings_as):
    """Constant(1e6) on a regression net: the loss explodes within a few epochs. Whether NumPy's overflow
    warnings are ignored (NaN/inf reach the loss) or raised (-W error, as in this test suite), ``fit``
    raises TrainingDivergedError and the model holds the weights of the last finite epoch. A loss
    that is still finite but has grown more than ABSURD_GROWTH times its first value counts too."""
    X, t = regression_data()
    # The twin records the weights after every epoch, one epoch per fit call, until it diverges too
    # (one batch per epoch: the first minibatch's loss is the first epoch's loss).
    twin, history, first_loss = regression_net(), [], None
    with warnings.catch_warnings():
        warnings.simplefilter(warnings_as)
        for _ in range(50):
            try:
                loss = twin.fit(X, t, epochs=1, verbose=False)["train_error"][0]
            except TrainingDivergedError:
                break
            first_loss = loss if first_loss is None else first_loss
            if loss > ABSURD_GROWTH * first_loss:
                break
            history.append(weights(twin))
        else:
            pytest.fail("Constant(1e6) did not diverge")
        assert len(history) >= 1

        cnn = regression_net()
        with pytest.raises(TrainingDivergedError) as info:
            cnn.fit(X, t, epochs=50, verbose=False)
    error = info.value
    message = str(error)
    assert isinstance(error, FloatingPointError)
    assert f"training diverged in epoch {len(history) + 1} of 50" in message
    assert f"restored to its weights after epoch {len(history)}, the last finite one" in message
    assert "smaller learning rate" in message and "eta=1000000.0" in message
    assert error.epoch == len(history) + 1
    kept = weights(cnn)
    for key, value in history[-1].items():
        np.testing.assert_array_equal(kept[key], value)
        assert np.isfinite(kept[key]).all()
    train_error = error.scores["train_error"]
    assert np.isfinite(train_error[: len(history)]).all() and np.isnan(train_error[len(history):]).all()


def test_divergence_in_the_first_epoch_restores_the_initial_weights():
    """eta=1e300: the first update already overflows; the loss of epoch 1 (measured before that update)
    is finite, so it is the weight check that catches it, in epoch 1."""
    X, t = regression_data()
    t = t * 1e10  # gradients ~1e10: 1e300 * 1e10 overflows
    cnn = regression_net(eta=1e300)
    cnn._inputs(X)  # build, so that there are initial weights to compare with
    initial = weights(cnn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match="epoch 1 of 3: the weights became NaN or infinite") as info:
            cnn.fit(X, t, epochs=3, verbose=False)
    assert "restored to the weights it had before this fit" in str(info.value)
    for key, value in initial.items():
        np.testing.assert_array_equal(weights(cnn)[key], value)


def test_non_finite_weights_with_a_finite_loss_count_as_divergence(monkeypatch):
    """The loss of an epoch is measured before its last update; a step that makes the weights inf is
    caught at the end of the same epoch, not one epoch later."""
    X, t = image_data()
    cnn = image_net()
    original, calls = FlatParameters.step, []

    def poisoned_step(parameters, gradient, lam=0.0):
        original(parameters, gradient, lam)
        if parameters is cnn.parameters:
            calls.append(1)
            if len(calls) == 6:  # epoch 2, batch 2 (of 4)
                parameters.bind(parameters.flat * math.inf)

    monkeypatch.setattr(FlatParameters, "step", poisoned_step)
    twin = image_net()
    twin.fit(X, t, epochs=1, batches=4, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match="epoch 2 of 3: the (loss became nan|weights became NaN)"):
            cnn.fit(X, t, epochs=3, batches=4, verbose=False)
    after = weights(cnn)
    for key, value in weights(twin).items():
        np.testing.assert_array_equal(after[key], value)


# ---- Ctrl-C -------------------------------------------------------------------------------------


class RecordingBar(tqdm.tqdm):
    instances = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed_calls = 0
        RecordingBar.instances.append(self)

    def close(self):
        self.closed_calls += 1
        super().close()


def recording_bar(total, disable=False, **kw):
    return RecordingBar(total=total, disable=disable, **kw)


@pytest.mark.parametrize("where", ["forward", "mid-step"])
def test_ctrl_c_keeps_weights_scores_and_closes_the_bar(monkeypatch, capsys, where):
    """KeyboardInterrupt in batch 3 of epoch 2 (of 4 batches): fit returns the scores of epoch 1 (later
    epochs NaN), keeps the weights of the 2 completed batches of epoch 2 (a half-applied update step is
    rolled back), and closes the progress bar."""
    X, t = image_data()
    cnn = image_net()
    calls = []
    if where == "forward":
        owner, method = cnn.layers[2], "forward"
    else:  # the scheduler has taken its step (new moments, t + 1) when the interrupt comes
        owner, method = type(cnn.scheduler), "update_change"
    original = getattr(owner, method)

    def interrupted(*args, **kwargs):
        counted = method == "update_change" or kwargs.get("training", args[1:2] == (True,))
        result = original(*args, **kwargs) if method == "update_change" else None
        if counted:
            calls.append(1)
            if len(calls) == 4 + 3:
                raise KeyboardInterrupt
        return result if method == "update_change" else original(*args, **kwargs)

    monkeypatch.setattr(owner, method, interrupted)
    RecordingBar.instances.clear()
    monkeypatch.setattr(nncore.training, "progress_bar", recording_bar)
    scores = cnn.fit(X, t, epochs=4, batches=4, shuffle=False, verbose=True)

    assert len(calls) == 7, "the interrupt never fired"
    assert [bar.closed_calls >= 1 for bar in RecordingBar.instances] == [True]
    assert "interrupted in epoch 2 of 4" in capsys.readouterr().err
    assert set(scores) == {"train_error", "train_acc", "val_error", "val_acc"}
    assert all(len(v) == 4 for v in scores.values())
    assert np.isfinite(scores["train_error"][0]) and np.isfinite(scores["train_acc"][0])
    assert np.isnan(scores["train_error"][1:]).all() and np.isnan(scores["train_acc"][1:]).all()

    # The same state, reached without interruption: epoch 1, then the first 2 batches of epoch 2.
    twin = image_net()
    twin.fit(X, t, epochs=1, batches=4, shuffle=False, verbose=False)
    twin.fit(X[:20], t[:20], epochs=1, batches=2, shuffle=False, verbose=False)
    got, want = weights(cnn), weights(twin)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
    for a, b in zip(cnn.layers, twin.layers):
        for name, sched in a.schedulers.items():
            assert sched.t == b.schedulers[name].t == 6
    # and training goes on from there
    monkeypatch.undo()
    assert np.isfinite(cnn.fit(X, t, epochs=1, verbose=False)["train_error"]).all()


def test_bar_is_closed_when_fit_raises(monkeypatch):
    X, t = regression_data()
    RecordingBar.instances.clear()
    monkeypatch.setattr(nncore.training, "progress_bar", recording_bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError):
            regression_net().fit(X, t, epochs=50, verbose=False)
    assert [bar.closed_calls >= 1 for bar in RecordingBar.instances] == [True]


# ---- determinism --------------------------------------------------------------------------------


def test_same_seed_same_weights_on_numpy_bit_for_bit():
    X, t = image_data()
    runs = []
    for _ in range(2):
        cnn = image_net(seed=2024)
        scores = cnn.fit(X, t, epochs=3, batches=3, verbose=False)  # shuffled from the seed
        runs.append((weights(cnn), scores))
    (w1, s1), (w2, s2) = runs
    for key in w1:
        np.testing.assert_array_equal(w1[key], w2[key])
    np.testing.assert_array_equal(s1["train_error"], s2["train_error"])
    other = image_net(seed=2025)
    other.fit(X, t, epochs=3, batches=3, verbose=False)
    assert not np.array_equal(weights(other)[(0, "kernel")], w1[(0, "kernel")])


def test_same_seed_same_weights_on_strict_device1(strict_device1):
    X, t = image_data()
    on_numpy = image_net(seed=99)
    on_numpy.fit(X, t, epochs=3, batches=3, verbose=False)
    on_strict = image_net(backend=strict_device1, seed=99)
    on_strict._inputs(X)  # builds the layers
    initial = weights(on_strict)
    fresh = image_net(seed=99)
    fresh._inputs(X)
    for key, value in weights(fresh).items():  # the initial weights are drawn on the host: identical
        np.testing.assert_array_equal(initial[key], value)
    on_strict.fit(X, t, epochs=3, batches=3, verbose=False)
    assert on_strict.layers[0].kernel.device == strict_device1.device
    want = weights(on_numpy)
    for key, value in weights(on_strict).items():
        np.testing.assert_allclose(value, want[key], rtol=1e-6, atol=1e-12, err_msg=str(key))


# ---- summary ------------------------------------------------------------------------------------


def test_summary_before_and_after_fit(capsys):
    cnn = image_net()
    with pytest.raises(ValueError, match=r"summary: the CNN is not built yet.*input_shape=\(channels, height, "
                                         r"width\)"):
        cnn.summary()
    text = cnn.summary(input_shape=(1, 8, 8))
    assert capsys.readouterr().out.strip() == text.strip()
    assert cnn.input_shape is None and not cnn.layers[0].built  # nothing was built
    lines = text.splitlines()
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    expected = [("0 Convolution2DLayer", "(None, 3, 8, 8)", "30"),
                ("1 Pooling2DLayer", "(None, 3, 4, 4)", "0"),
                ("2 Convolution2DLayer", "(None, 2, 3, 3)", "26"),
                ("3 FlattenLayer", "(None, 18)", "0"),
                ("4 FullyConnectedLayer", "(None, 6)", "114"),
                ("5 OutputLayer", "(None, 3)", "21")]
    for name, shape, count in expected:
        row = next(line for line in lines if line.startswith(name))
        assert shape in row and row.split()[row.split().index(shape.split()[-1]) + 1] == count, row
    assert "Total params: 191" in text and "Trainable params: 191" in text and "Non-trainable params: 0" in text

    X, t = image_data(n=6)
    cnn.fit(X, t, epochs=1, verbose=False)
    assert cnn.summary(print_fn=None) == text
    assert sum(layer.n_params() for layer in cnn.layers) == 191
    # Asking about another input size changes nothing in the built model.
    before = cnn.predict_proba(X)
    bigger = cnn.summary(input_shape=(1, 12, 12), print_fn=None)
    assert "(None, 3, 12, 12)" in bigger and "Total params: 191" not in bigger
    np.testing.assert_array_equal(cnn.predict_proba(X), before)


def test_summary_errors_name_the_layer():
    cnn = image_net()
    with pytest.raises(ValueError, match=r"layer 0 \(Convolution2DLayer\) expects 1 input channels, got 3"):
        cnn.summary(input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"layer 2 \(Convolution2DLayer\): kernel 2x2 is larger than its padded "
                                         r"input 1x1"):
        cnn.summary(input_shape=(1, 2, 2))
    with pytest.raises(TypeError, match="input_shape entries must be an int"):
        cnn.summary(input_shape=(1, 8.0, 8))
    with pytest.raises(ValueError, match="summary: the CNN has no layers"):
        CNN().summary(input_shape=(1, 8, 8))
    incomplete = CNN()
    incomplete.add_FullyConnectedLayer(3)
    assert "no OutputLayer yet" in incomplete.summary(input_shape=5, print_fn=None)


# ---- hostile training states (issue 13) --------------------------------------------------------


def test_overflowing_adam_state_is_divergence_not_a_silent_stall():
    """Inputs near 1e30 (finite in float32): gradients overflow in Adam's second moment, which would
    freeze every weight for good (m / sqrt(inf) = 0) while the loss stays finite."""
    rng = np.random.default_rng(0)
    cnn = CNN(scheduler=Adam(1e-3), seed=0)
    cnn.add_FullyConnectedLayer(4, act_func=LRELU)
    cnn.add_OutputLayer(3, softmax)
    X = (rng.random((16, 3)) * 1e30).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    cnn._inputs(X)
    initial = weights(cnn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match=r"epoch 1 of 3: the scheduler state became NaN or infinite "
                                                        r"\(loss [0-9.]+\); the gradients overflowed") as info:
            cnn.fit(X, t, epochs=3, verbose=False)
    assert math.isfinite(info.value.loss)
    for key, value in initial.items():
        np.testing.assert_array_equal(weights(cnn)[key], value)
    assert all(np.isfinite(to_numpy(s.second)).all() for layer in cnn.layers
               for s in layer.schedulers.values() if s.second is not None)


def test_a_finite_but_absurd_loss_is_divergence():
    """Constant(1e4) on a tiny regression: the loss grows past 1e8 times its start while still finite."""
    X, t = regression_data()
    cnn = regression_net(eta=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match="grew to .*more than 1e\\+08 times") as info:
            cnn.fit(X, t, epochs=200, verbose=False)
    assert math.isfinite(info.value.loss)
    assert all(np.isfinite(v).all() for v in weights(cnn).values())


def test_scores_grow_with_the_epochs_run(monkeypatch):
    """epochs=10**8 allocates nothing up front; Ctrl-C after 2 epochs returns the 2 epochs' scores."""
    X, t = regression_data()
    cnn = regression_net(eta=1e-3)
    epochs_seen = []
    original = nncore.training.Trainer.train_epoch

    def counted(self):
        epochs_seen.append(1)
        if len(epochs_seen) == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(nncore.training.Trainer, "train_epoch", counted)
    scores = cnn.fit(X, t, epochs=10**8, verbose=False)
    assert all(len(v) == 2 for v in scores.values()) and np.isfinite(scores["train_error"]).all()


def test_ctrl_c_while_the_data_are_prepared_leaves_the_model_unchanged(monkeypatch, capsys):
    X, t = regression_data()
    cnn = regression_net(eta=1e-3)
    cnn._inputs(X)
    before = weights(cnn)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnn, "_targets", interrupted)
    scores = cnn.fit(X, t, epochs=3, verbose=True)
    assert "interrupted before epoch 1 of 3" in capsys.readouterr().err
    assert all(len(v) == 3 and np.isnan(v).all() for v in scores.values())
    for key, value in before.items():
        np.testing.assert_array_equal(weights(cnn)[key], value)


def test_a_real_ctrl_c_during_an_update_step_waits_for_the_step_to_complete(monkeypatch, capsys):
    """SIGINT delivered while the scheduler computes step 3 of epoch 2: the step completes (parameters and
    scheduler state together), then fit stops: the weights equal 4 + 3 steps of uninterrupted training."""
    import os
    import signal

    X, t = image_data()
    cnn = image_net()
    original, calls = Adam.update_change, []

    def interrupted(self, gradient):
        calls.append(1)
        if len(calls) == 4 + 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives at the next bytecode, inside the step
        return original(self, gradient)

    monkeypatch.setattr(Adam, "update_change", interrupted)
    scores = cnn.fit(X, t, epochs=4, batches=4, shuffle=False, verbose=True)
    monkeypatch.undo()
    assert "interrupted in epoch 2 of 4" in capsys.readouterr().err
    assert np.isfinite(scores["train_error"][0]) and np.isnan(scores["train_error"][1:]).all()
    twin = image_net()
    twin.fit(X, t, epochs=1, batches=4, shuffle=False, verbose=False)
    twin.fit(X[:30], t[:30], epochs=1, batches=3, shuffle=False, verbose=False)
    for key, value in weights(twin).items():
        np.testing.assert_array_equal(weights(cnn)[key], value, err_msg=str(key))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put the handler back
