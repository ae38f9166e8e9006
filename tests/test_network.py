"""Whole-network checks: gradients against central differences, training semantics against
hand-written oracles, backend and dtype consistency.

The objective oracle is written here: cost formula + lam/2 * sum of squared WEIGHTS (the
kernels of convolutions and the weights of dense layers; biases are not penalised).
"""

import numpy as np
import pytest
import scipy.signal
import scipy.special

from backends import get_backend, to_numpy
from nncore import CNN, Adam, Constant, CostCrossEntropy, CostLogReg, CostOLS, LRELU, identity, sigmoid, softmax, tanh
from nncore.layers import Convolution2DLayer, FullyConnectedLayer

COST_FORMULAS = {
    CostOLS: lambda t, X: np.sum((t - X) ** 2) / t.shape[0],
    CostLogReg: lambda t, X: -np.sum(t * np.log(X) + (1 - t) * np.log(1 - X)) / t.shape[0],
    CostCrossEntropy: lambda t, X: -np.sum(t * np.log(X)) / t.shape[0],
}


def weight_names(layer):
    """What the L2 penalty applies to, by the SPEC (not by asking the layer)."""
    if isinstance(layer, Convolution2DLayer):
        return ["kernel"]
    if isinstance(layer, FullyConnectedLayer):  # OutputLayer included
        return ["weights"]
    return []


def param_names(layer):
    if isinstance(layer, Convolution2DLayer):
        return ["kernel", "bias"]
    if isinstance(layer, FullyConnectedLayer):
        return ["weights", "bias"]
    return []


def objective(cnn, X, t, lam):
    out = to_numpy(cnn._feedforward(X)).astype(np.float64)
    penalty = sum(np.sum(to_numpy(getattr(layer, name)) ** 2) for layer in cnn.layers for name in weight_names(layer))
    return COST_FORMULAS[cnn.cost_func](to_numpy(t), out) + lam / 2 * penalty


def fd_param_grad(cnn, X, t, lam, layer, name, indices, h=1e-6):
    """Central differences of the objective w.r.t. entries ``indices`` of ``layer.<name>``."""
    backend = cnn.backend
    original = to_numpy(getattr(layer, name)).astype(np.float64)
    grad = {}
    try:
        for i in indices:
            values = []
            for sign in (1, -1):
                trial = original.copy()
                trial.reshape(-1)[i] += sign * h
                setattr(layer, name, backend.asarray(trial, dtype="float64"))
                values.append(objective(cnn, X, t, lam))
            grad[i] = (values[0] - values[1]) / (2 * h)
    finally:
        setattr(layer, name, backend.asarray(original, dtype="float64"))
    return grad


def randomise_biases(cnn, rng):
    """Biases start at zero; give them values so that a penalty wrongly applied to them shows."""
    for layer in cnn.layers:
        if "bias" in param_names(layer):
            layer.bias = cnn.backend.asarray(rng.normal(scale=0.5, size=tuple(layer.bias.shape)), dtype=cnn.dtype)


def sample(rng, size, at_most=25):
    return list(range(size)) if size <= at_most else sorted(rng.choice(size, at_most, replace=False).tolist())


def make_targets(rng, output_func, n, nodes):
    if output_func is softmax:
        return np.eye(nodes)[rng.integers(0, nodes, size=n)]
    if output_func is sigmoid:
        return rng.integers(0, 2, size=(n, nodes)).astype(np.float64)
    return rng.normal(size=(n, nodes))


def gradcheck_net(output_func, cost, optimized=True, seed=5):
    """Conv (stride 2, "same" with an odd pad on the width) -> average pool (overlapping) -> conv
    ("same", 2x2: odd pad bottom/right) -> max pool -> flatten -> dense -> output."""
    cnn = CNN(cost_func=cost, scheduler=Constant(0.1), seed=seed, dtype="float64")
    cnn.add_Convolution2DLayer(2, 3, 3, 3, v_stride=2, h_stride=2, pad="same", act_func=tanh, optimized=optimized)
    cnn.add_PoolingLayer(2, 2, 1, 1, pooling="average")
    cnn.add_Convolution2DLayer(3, 2, 2, 2, pad="same", act_func=LRELU, optimized=optimized)
    cnn.add_PoolingLayer(2, 2, 1, 1, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(6, sigmoid)
    cnn.add_OutputLayer(3, output_func)
    return cnn


OUTPUTS = [
    pytest.param(softmax, CostCrossEntropy, id="softmax-CrossEntropy"),
    pytest.param(identity, CostOLS, id="identity-OLS"),
    pytest.param(sigmoid, CostLogReg, id="sigmoid-LogReg"),
]


@pytest.mark.parametrize("optimized", [True, False], ids=["im2col", "direct"])
@pytest.mark.parametrize("output_func,cost", OUTPUTS)
def test_whole_network_gradients_match_central_differences(output_func, cost, optimized, rng):
    lam = 0.05
    cnn = gradcheck_net(output_func, cost, optimized)
    X = cnn._inputs(rng.normal(size=(4, 2, 9, 8)))
    t = cnn._targets(make_targets(rng, output_func, 4, 3), 4)
    randomise_biases(cnn, rng)
    # The architecture is what the test claims: an odd "same" pad and a stride-2 convolution.
    assert cnn.layers[0].padding[1] == (0, 1) and cnn.layers[2].padding == ((0, 1), (0, 1))
    cnn._feedforward(X, training=True)
    cnn._backpropagate(t, lam)
    checked = 0
    for layer in cnn.layers:
        assert sorted(layer.grads) == sorted(param_names(layer))
        for name in param_names(layer):
            grad = to_numpy(layer.grads[name])
            assert grad.shape == tuple(getattr(layer, name).shape)
            idx = sample(rng, grad.size)
            fd = fd_param_grad(cnn, X, t, lam, layer, name, idx)
            got = grad.reshape(-1)[idx]
            want = np.array([fd[i] for i in idx])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=f"{layer.label}.{name}")
            checked += len(idx)
    assert checked > 100


def test_one_sgd_step_of_fit_subtracts_eta_times_the_objective_gradient(rng):
    # fit with Constant(eta), one batch, no shuffling, one epoch: every parameter (the first
    # convolution's included) moves by -eta * d(cost + lam/2 sum W^2)/dparam.
    eta, lam = 0.2, 0.03
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Constant(eta), seed=11, dtype="float64")
    cnn.add_Convolution2DLayer(1, 2, 3, 3, pad="same", act_func=tanh)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="average")
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    X_host = rng.normal(size=(6, 1, 6, 6))
    t_host = np.eye(3)[rng.integers(0, 3, size=6)]
    X, t = cnn._inputs(X_host), cnn._targets(t_host, 6)
    randomise_biases(cnn, rng)
    before, expected = {}, {}
    for layer in cnn.layers:
        for name in param_names(layer):
            value = to_numpy(getattr(layer, name)).copy()
            fd = fd_param_grad(cnn, X, t, lam, layer, name, range(value.size))
            before[layer.position, name] = value
            grad = np.array([fd[i] for i in range(value.size)]).reshape(value.shape)
            expected[layer.position, name] = value - eta * grad
    cnn.fit(X_host, t_host, epochs=1, lam=lam, batches=1, shuffle=False, verbose=False)
    for (position, name), want in expected.items():
        got = to_numpy(getattr(cnn.layers[position], name))
        assert not np.allclose(got, before[position, name]), f"layer {position}.{name} was not trained"
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=f"layer {position}.{name}")


def test_scheduler_state_builds_up_across_batches_and_epochs(rng):
    # Each parameter has its own Adam; its step count is the number of minibatches seen.
    cnn = CNN(scheduler=Adam(1e-3, 0.9, 0.999), seed=1, dtype="float64")
    cnn.add_Convolution2DLayer(1, 2, 3, 3)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    X = rng.normal(size=(12, 1, 5, 5))
    t = np.eye(3)[rng.integers(0, 3, size=12)]
    cnn.fit(X, t, epochs=2, batches=3, verbose=False)
    seen = set()
    for layer in (cnn.layers[0], cnn.layers[2]):
        for name in param_names(layer):
            scheduler = layer.schedulers[name]
            assert scheduler.t == 6
            assert id(scheduler) not in seen and scheduler is not cnn.scheduler
            seen.add(id(scheduler))
            assert scheduler.moment.shape == getattr(layer, name).shape
    assert cnn.scheduler.t == 0  # the template is never stepped


def untraditional(optimized, seed=2023, dtype="float64"):
    """The course's second architecture on a small input, every convolution switched together."""
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-2, 0.9, 0.999), seed=seed, dtype=dtype)
    cnn.add_Convolution2DLayer(1, 3, 7, 1, act_func=LRELU, optimized=optimized)
    cnn.add_PoolingLayer(2, 2, pooling="average")
    cnn.add_PoolingLayer(2, 2, pooling="max")
    cnn.add_Convolution2DLayer(3, 2, 4, 4, v_stride=2, h_stride=3, act_func=LRELU, optimized=optimized)
    cnn.add_Convolution2DLayer(2, 1, 2, 2, pad=(1, 0), act_func=sigmoid, optimized=optimized)
    cnn.add_PoolingLayer(2, 2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(10, LRELU)
    cnn.add_OutputLayer(4, softmax)
    return cnn


def all_params(cnn):
    return {(layer.position, name): to_numpy(getattr(layer, name))
            for layer in cnn.layers for name in param_names(layer)}


def test_im2col_and_direct_convolution_agree_inside_a_cnn(rng):
    X_host = rng.normal(size=(10, 1, 12, 11))
    t_host = np.eye(4)[rng.integers(0, 4, size=10)]
    fast, slow = untraditional(True), untraditional(False)
    X, t = fast._inputs(X_host), fast._targets(t_host, 10)
    slow._inputs(X_host)
    for key, value in all_params(fast).items():  # same seed, same initial weights
        np.testing.assert_array_equal(all_params(slow)[key], value)
    out_fast = fast._feedforward(X, training=True)
    out_slow = slow._feedforward(X, training=True)
    np.testing.assert_allclose(out_slow, out_fast, rtol=1e-12, atol=1e-14)
    fast._backpropagate(t, 1e-3)
    slow._backpropagate(t, 1e-3)
    for a, b in zip(fast.layers, slow.layers):
        for name in param_names(a):
            np.testing.assert_allclose(b.grads[name], a.grads[name], rtol=1e-10, atol=1e-13,
                                       err_msg=f"{a.label}.{name}")
    scores_fast = fast.fit(X_host, t_host, epochs=2, batches=2, lam=1e-3, verbose=False)
    scores_slow = slow.fit(X_host, t_host, epochs=2, batches=2, lam=1e-3, verbose=False)
    np.testing.assert_allclose(scores_slow["train_error"], scores_fast["train_error"], rtol=1e-9)
    for key, value in all_params(fast).items():
        np.testing.assert_allclose(all_params(slow)[key], value, rtol=1e-8, atol=1e-11, err_msg=str(key))


def small_net(backend, dtype="float64", seed=7, scheduler=None):
    scheduler = Adam(1e-2, 0.9, 0.999) if scheduler is None else scheduler
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=scheduler, seed=seed, backend=backend, dtype=dtype)
    cnn.add_Convolution2DLayer(1, 2, 3, 3, pad="same", act_func=LRELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_Convolution2DLayer(2, 2, 2, 2, v_stride=2, h_stride=1, pad="valid", act_func=tanh, optimized=False)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(8, LRELU)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def data(rng, n=30, n_val=9):
    X = rng.normal(size=(n, 1, 8, 8))
    t = np.eye(3)[rng.integers(0, 3, size=n)]
    X_val = rng.normal(size=(n_val, 1, 8, 8))
    t_val = np.eye(3)[rng.integers(0, 3, size=n_val)]
    return X, t, X_val, t_val


def test_training_on_strict_device1_matches_numpy(rng, strict_device1):
    X, t, X_val, t_val = data(rng)
    reference = small_net("numpy")
    strict = small_net(strict_device1)
    kwargs = dict(epochs=3, lam=1e-3, batches=4, X_val=X_val, t_val=t_val, verbose=False)
    scores_np = reference.fit(X, t, **kwargs)
    scores_strict = strict.fit(X, t, **kwargs)
    for key in ("train_error", "train_acc", "val_error", "val_acc"):
        assert isinstance(scores_strict[key], np.ndarray) and scores_strict[key].shape == (3,)
        assert np.all(np.isfinite(scores_strict[key]))
        np.testing.assert_allclose(scores_strict[key], scores_np[key], rtol=1e-6, err_msg=key)
    for layer in strict.layers:
        for name in param_names(layer):
            assert getattr(layer, name).device == strict_device1.device
    for key, value in all_params(reference).items():
        np.testing.assert_allclose(all_params(strict)[key], value, rtol=1e-6, atol=1e-12, err_msg=str(key))

    # Outputs come back in the namespace (and on the device) they came in.
    strict_default = get_backend("array_api_strict")
    expected = reference.predict_proba(X_val)
    assert isinstance(expected, np.ndarray)
    for model in (reference, strict):
        out = model.predict_proba(X_val)
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        for be in (strict_device1, strict_default):
            out = model.predict_proba(be.asarray(X_val))
            assert type(out).__module__.startswith("array_api_strict") and out.device == be.device
            np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6)
            labels = model.predict(be.asarray(X_val))
            assert labels.device == be.device
        labels = model.predict(X_val)
        assert isinstance(labels, np.ndarray)
        np.testing.assert_array_equal(labels, np.eye(3)[np.argmax(expected, axis=1)])


@pytest.mark.parametrize("backend", ["numpy", "strict_device1"])
def test_float32_in_float32_throughout(backend, rng, request):
    be = request.getfixturevalue("strict_device1") if backend == "strict_device1" else get_backend("numpy")
    f32 = be.xp.float32
    X, t, X_val, t_val = data(rng, n=12, n_val=4)
    cnn = small_net(be, dtype="float32")
    scores = cnn.fit(X, t, epochs=2, batches=2, lam=1e-4, X_val=X_val, t_val=t_val, verbose=False)  # float64 in
    assert all(np.all(np.isfinite(v)) for v in scores.values())
    for layer in cnn.layers:
        for name in param_names(layer):
            assert getattr(layer, name).dtype == f32, f"{layer.label}.{name}"
            assert layer.grads[name].dtype == f32, f"{layer.label}.{name} grad"
            scheduler = layer.schedulers[name]
            for key in scheduler._state:
                value = getattr(scheduler, key)
                if hasattr(value, "dtype"):
                    assert value.dtype == f32, f"{layer.label}.{name} scheduler {key}"
    assert cnn.predict_proba(X_val).dtype == np.float32
    assert cnn.predict_proba(be.asarray(X_val)).dtype == f32


def test_float64_model_stays_float64(rng):
    X, t, X_val, t_val = data(rng, n=12, n_val=4)
    cnn = small_net("numpy", dtype="float64")
    cnn.fit(X.astype(np.float32), t.astype(np.float32), epochs=2, batches=2, lam=1e-4, verbose=False)
    for layer in cnn.layers:
        for name in param_names(layer):
            assert getattr(layer, name).dtype == np.float64
            assert layer.grads[name].dtype == np.float64
            assert layer.schedulers[name].moment.dtype == np.float64
    assert cnn.predict_proba(X_val.astype(np.float32)).dtype == np.float64


def test_numpy_scalar_lam_and_eta_keep_float32(rng):
    # Grid searches draw lam and eta from np.logspace: NumPy float64 scalars must not promote
    # float32 training to float64 (NumPy 2 scalars are strongly typed).
    X, t, _, _ = data(rng, n=12, n_val=4)
    scheduler = Adam(np.logspace(-4, -1, 4)[1], np.float64(0.9), np.float64(0.999))
    cnn = small_net("numpy", dtype="float32", scheduler=scheduler)
    cnn.fit(X, t, epochs=1, batches=2, lam=np.logspace(-5, -1, 5)[0], verbose=False)
    for layer in cnn.layers:
        for name in param_names(layer):
            assert getattr(layer, name).dtype == np.float32, f"{layer.label}.{name}"


def test_scores_match_oracle_accuracy_and_cost(rng):
    X, t, X_val, t_val = data(rng, n=20, n_val=10)
    cnn = small_net("numpy")
    scores = cnn.fit(X, t, epochs=1, batches=2, X_val=X_val, t_val=t_val, verbose=False)
    proba = cnn.predict_proba(X_val)
    accuracy = np.mean(np.argmax(proba, axis=1) == np.argmax(t_val, axis=1))
    assert scores["val_acc"][0] == pytest.approx(accuracy, abs=1e-12)
    assert scores["val_error"][0] == pytest.approx(COST_FORMULAS[CostCrossEntropy](t_val, proba), rel=1e-9)
    assert cnn.score(X_val, t_val) == pytest.approx(accuracy, abs=1e-12)
    # A wrong prediction of 10 classes is wrong (the course scored it 0.8 elementwise).
    wrong = np.eye(3)[(np.argmax(proba, axis=1) + 1) % 3]
    right = np.eye(3)[np.argmax(proba, axis=1)]
    assert cnn.score(X_val, wrong) == 0.0
    assert cnn.score(X_val, right) == 1.0


def test_binary_and_regression_predictions(rng):
    X = rng.normal(size=(10, 1, 6, 6))
    for output_func, cost in ((sigmoid, CostLogReg), (identity, CostOLS)):
        cnn = CNN(cost_func=cost, scheduler=Adam(1e-3), seed=3, dtype="float64")
        cnn.add_Convolution2DLayer(1, 1, 3, 3)
        cnn.add_FlattenLayer()
        cnn.add_OutputLayer(2, output_func)
        t = make_targets(rng, output_func, 10, 2)
        cnn.fit(X, t, epochs=1, verbose=False)
        proba = cnn.predict_proba(X)
        if output_func is sigmoid:
            np.testing.assert_array_equal(cnn.predict(X), (proba > 0.5).astype(np.float64))
            np.testing.assert_array_equal(cnn.predict(X, threshold=0.9), (proba > 0.9).astype(np.float64))
            assert cnn.score(X, t) == pytest.approx(np.mean((proba > 0.5) == (t > 0.5)))
        else:
            np.testing.assert_array_equal(cnn.predict(X), proba)
            assert cnn.score(X, t) == pytest.approx(np.mean((proba - t) ** 2), rel=1e-9)


def test_forward_matches_hand_written_network(rng):
    # A one-conv network evaluated by hand: conv (loops via scipy) -> LRELU -> flatten -> dense -> softmax.
    cnn = CNN(seed=4, dtype="float64")
    cnn.add_Convolution2DLayer(1, 2, 3, 2, pad="valid")
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    X = rng.normal(size=(3, 1, 5, 4))
    out = cnn.predict_proba(X)
    conv, dense = cnn.layers[0], cnn.layers[2]
    k, b = to_numpy(conv.kernel), to_numpy(conv.bias)
    z = np.array([[scipy.signal.correlate2d(x[0], k[f, 0], mode="valid") + b[f] for f in range(2)] for x in X])
    a = np.where(z > 0, z, 1e-3 * z).reshape(3, -1)
    expected = scipy.special.softmax(a @ to_numpy(dense.weights) + to_numpy(dense.bias), axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_fit_and_predict_leave_user_arrays_alone_and_hand_out_fresh_outputs(rng):
    X, t, X_val, t_val = data(rng, n=12, n_val=6)
    keep = [a.copy() for a in (X, t, X_val, t_val)]
    cnn = small_net("numpy")
    cnn.fit(X, t, epochs=1, batches=3, X_val=X_val, t_val=t_val, verbose=False)
    for before, after in zip(keep, (X, t, X_val, t_val)):
        np.testing.assert_array_equal(after, before)
    first = cnn.predict_proba(X_val)
    first_copy = first.copy()
    cnn.predict_proba(rng.normal(size=X_val.shape))
    np.testing.assert_array_equal(first, first_copy)  # not a reused buffer
    # Any memory layout of the same values gives the same outputs.
    for layout in (np.asfortranarray(X_val), X_val.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2),
                   np.ascontiguousarray(X_val[..., ::-1])[..., ::-1], X_val.astype(np.float32), X_val.tolist()):
        np.testing.assert_allclose(cnn.predict_proba(layout), first, rtol=1e-6)
    np.testing.assert_array_equal(X_val, keep[2])
