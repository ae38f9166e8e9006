"""nncore.estimator: CNNClassifier and CNNRegressor follow scikit-learn's estimator rules."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from nncore import Adam, Momentum
from nncore.estimator import DEFAULT_LAYERS, CNNClassifier, CNNRegressor
from nncore.layers import Layer, register_layer

SMALL = [("conv", {"feature_maps": 4, "kernel_height": 3, "kernel_width": 3, "act_func": "relu"}),
         ("pool", {"kernel_height": 2, "kernel_width": 2, "v_stride": 2, "h_stride": 2}),
         "flatten",
         ("dense", {"nodes": 32, "act_func": "relu"})]


@pytest.fixture(scope="module")
def digits():
    """A stratified-enough subset of the digits: flat (n, 64) in [0, 1] and integer labels."""
    data = load_digits()
    return (data.data / 16.0).astype(np.float32)[:600], data.target[:600]


# ---- the estimator contract --------------------------------------------------------------


def test_init_stores_every_argument_unchanged():
    layers = [("dense", {"nodes": 8})]
    scheduler = Adam(1e-2)
    est = CNNClassifier(layers, image_shape=(1, 8, 8), data_format="channels_last", eta=0.5, lam=1e-3, epochs=3,
                        batch_size=7, scheduler=scheduler, backend="numpy", random_state=4, dtype="float64",
                        verbose=True)
    params = est.get_params()
    assert params["layers"] is layers and params["scheduler"] is scheduler
    assert params == {"layers": layers, "image_shape": (1, 8, 8), "data_format": "channels_last", "eta": 0.5,
                      "lam": 1e-3, "epochs": 3, "batch_size": 7, "scheduler": scheduler, "backend": "numpy",
                      "random_state": 4, "dtype": "float64", "shuffle": True, "verbose": True}


def test_init_does_not_validate():
    # scikit-learn defers all checking to fit: bad values are accepted here and rejected there.
    est = CNNClassifier(layers=[("nonsense",)], eta=-1, scheduler="nope", epochs=0)
    with pytest.raises(ValueError, match="eta must be a positive number"):
        est.fit(np.zeros((4, 64)), [0, 1, 0, 1])


def test_set_params_and_clone():
    est = CNNClassifier(epochs=2, random_state=0, scheduler=Momentum(0.1, 0.5))
    assert est.set_params(eta=0.01, lam=0.1) is est
    assert (est.eta, est.lam) == (0.01, 0.1)
    copy = clone(est)
    assert copy is not est and copy.get_params()["eta"] == 0.01
    assert copy.scheduler is not est.scheduler and copy.scheduler.momentum == 0.5
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(learning_rate=1)


def test_clone_of_a_fitted_estimator_is_unfitted(digits):
    X, y = digits
    est = CNNClassifier(SMALL, epochs=1, random_state=0).fit(X[:100], y[:100])
    fresh = clone(est)
    assert not hasattr(fresh, "model_")
    with pytest.raises(NotFittedError):
        fresh.predict(X[:5])


def test_fit_predict_attributes(digits):
    X, y = digits
    est = CNNClassifier(SMALL, eta=1e-2, epochs=10, random_state=0)
    assert est.fit(X[:450], y[:450]) is est
    np.testing.assert_array_equal(est.classes_, np.arange(10))
    assert est.image_shape_ == (1, 8, 8) and est.n_features_in_ == 64
    assert set(est.history_) == {"train_error", "train_acc", "val_error", "val_acc"}
    assert len(est.history_["train_error"]) == 10
    proba = est.predict_proba(X[450:])
    assert proba.shape == (150, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    pred = est.predict(X[450:])
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(axis=1)])
    assert est.score(X[450:], y[450:]) == pytest.approx(np.mean(pred == y[450:]))
    assert est.score(X[450:], y[450:]) > 0.85


def test_image_input_shapes_agree(digits):
    X, y = digits
    flat = CNNClassifier(SMALL, epochs=2, random_state=1).fit(X[:200], y[:200]).predict_proba(X[200:260])
    images = CNNClassifier(SMALL, epochs=2, random_state=1).fit(X[:200].reshape(-1, 1, 8, 8), y[:200])
    np.testing.assert_array_equal(images.predict_proba(X[200:260].reshape(-1, 1, 8, 8)), flat)
    # 3-D (n, h, w) images gain one channel.
    np.testing.assert_array_equal(images.predict_proba(X[200:260].reshape(-1, 8, 8)), flat)
    with pytest.raises(ValueError, match="expecting 64 features"):
        images.predict(X[:5, :49])


def test_non_square_flat_input_is_one_row_of_pixels(digits):
    X, y = digits
    est = CNNClassifier(epochs=1, random_state=0).fit(X[:50, :60], y[:50])
    assert est.image_shape_ == (1, 1, 60) and est.n_features_in_ == 60
    assert est.predict(X[:3, :60]).shape == (3,)
    # The same as asking for it; a square length keeps its square image.
    same = CNNClassifier(image_shape=(1, 1, -1), epochs=1, random_state=0).fit(X[:50, :60], y[:50])
    np.testing.assert_array_equal(same.predict_proba(X[:9, :60]), est.predict_proba(X[:9, :60]))
    assert CNNClassifier(epochs=1, random_state=0).fit(X[:50, :49], y[:50]).image_shape_ == (1, 7, 7)
    assert CNNRegressor(epochs=1, random_state=0).fit(X[:20, :2], y[:20]).image_shape_ == (1, 1, 2)
    with pytest.raises(ValueError, match="image_shape"):
        CNNClassifier(image_shape=(2, 3), epochs=1).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="needs 32"):
        CNNClassifier(image_shape=(2, 4, 4), epochs=1).fit(X[:50], y[:50])


def test_string_labels_and_two_classes(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    est = CNNClassifier(SMALL, epochs=3, random_state=0).fit(X[:300], names[y[:300]])
    assert list(est.classes_) == sorted(names)
    assert set(est.predict(X[300:350])) <= set(names)
    # Two classes: softmax over two nodes, probabilities in the order of classes_.
    mask = y < 2
    binary = CNNClassifier(SMALL, eta=1e-2, epochs=5, random_state=0).fit(X[mask], np.where(y[mask] == 1, "odd", "even"))
    assert list(binary.classes_) == ["even", "odd"]
    assert binary.predict_proba(X[mask][:4]).shape == (4, 2)
    assert binary.score(X[mask], np.where(y[mask] == 1, "odd", "even")) > 0.95


def test_bad_targets_get_clear_errors(digits):
    X, y = digits
    with pytest.raises(ValueError, match="at least 2 classes"):
        CNNClassifier(epochs=1).fit(X[:20], np.zeros(20))
    with pytest.raises(ValueError, match="Unknown label type"):
        CNNClassifier(epochs=1).fit(X[:20], np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        CNNClassifier(epochs=1).fit(X[:20], y[:19])
    with pytest.raises(ValueError, match="target y is None"):
        CNNClassifier(epochs=1).fit(X[:20], None)


def test_layers_description(digits):
    X, y = digits
    # A plain MLP: the flatten layer is added before the first dense layer.
    mlp = CNNClassifier([("dense", {"nodes": 16, "act_func": "tanh"})], epochs=1, random_state=0).fit(X[:60], y[:60])
    assert [type(layer).__name__ for layer in mlp.model_.layers] == [
        "FlattenLayer", "FullyConnectedLayer", "OutputLayer"]
    # conv input_channels is inferred, also across several convolutions.
    two = [("conv", {"feature_maps": 3}), ("conv", {"feature_maps": 5, "kernel_height": 2, "kernel_width": 2}),
           ("fc", {"nodes": 8})]
    net = CNNClassifier(two, epochs=1, random_state=0).fit(X[:60], y[:60]).model_
    assert [type(layer).__name__ for layer in net.layers] == [
        "Convolution2DLayer", "Convolution2DLayer", "FlattenLayer", "FullyConnectedLayer", "OutputLayer"]
    default = CNNClassifier(epochs=1, random_state=0).fit(X[:60], y[:60]).model_
    assert len(default.layers) == len(DEFAULT_LAYERS) + 1
    with pytest.raises(ValueError, match=r"layers\[0\] has unknown kind 'lstm'"):
        CNNClassifier([("lstm", {})], epochs=1).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match="needs the number of nodes"):
        CNNClassifier([("dense", {})], epochs=1).fit(X[:20], y[:20])
    # An unknown keyword is a TypeError, as in CNN.add_Convolution2DLayer itself.
    with pytest.raises(TypeError, match=r"layers\[0\] \('conv'\).*kernel_size"):
        CNNClassifier([("conv", {"kernel_size": 3})], epochs=1).fit(X[:20], y[:20])


def test_scheduler_names_and_instances(digits):
    X, y = digits
    est = CNNClassifier(SMALL, scheduler="momentum", eta=0.05, epochs=1, random_state=0).fit(X[:60], y[:60])
    used = est.model_.layers[0].schedulers["kernel"]
    assert type(used).__name__ == "Momentum" and used.eta == 0.05
    given = Adam(0.02, rho=0.8)
    est = CNNClassifier(SMALL, scheduler=given, epochs=1, random_state=0).fit(X[:60], y[:60])
    used = est.model_.layers[0].schedulers["kernel"]
    assert (used.eta, used.rho) == (0.02, 0.8) and given.t == 0  # the instance itself is left alone
    est.set_params(eta=0.003).fit(X[:60], y[:60])
    assert est.model_.layers[0].schedulers["kernel"].eta == 0.003
    with pytest.raises(ValueError, match="scheduler must be"):
        CNNClassifier(scheduler="nadam", epochs=1).fit(X[:20], y[:20])


def test_same_seed_same_model(digits):
    X, y = digits
    a = CNNClassifier(SMALL, epochs=2, random_state=3).fit(X[:120], y[:120]).predict_proba(X[:30])
    b = CNNClassifier(SMALL, epochs=2, random_state=3).fit(X[:120], y[:120]).predict_proba(X[:30])
    np.testing.assert_array_equal(a, b)


def test_pickle_round_trip(digits):
    X, y = digits
    est = CNNClassifier(SMALL, epochs=1, random_state=0).fit(X[:100], y[:100])
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X[:20]), est.predict_proba(X[:20]))
    assert again.model_.backend.name == "numpy"


def test_regressor(digits):
    X, y = digits
    target = y / 9.0
    reg = CNNRegressor(SMALL, eta=1e-2, epochs=10, random_state=0).fit(X[:450], target[:450])
    pred = reg.predict(X[450:])
    assert pred.shape == (150,) and pred.dtype == np.float64 and reg.n_outputs_ == 1
    assert reg.score(X[450:], target[450:]) > 0.5  # R^2
    two = CNNRegressor(SMALL, epochs=1, random_state=0).fit(X[:100], np.stack([target[:100], -target[:100]], axis=1))
    assert two.predict(X[:7]).shape == (7, 2) and two.n_outputs_ == 2


def test_array_api_strict_input(digits):
    # Inputs from another array library (here array_api_strict) are accepted as they are.
    xp = pytest.importorskip("array_api_strict")
    X, y = digits
    est = CNNClassifier(SMALL, epochs=1, random_state=0, backend="array_api_strict").fit(xp.asarray(X[:80]), y[:80])
    np.testing.assert_allclose(est.predict_proba(xp.asarray(X[:10])), est.predict_proba(X[:10]), rtol=1e-6)


# ---- the scikit-learn tools --------------------------------------------------------------


def test_grid_search_over_eta_and_lam(digits):
    X, y = digits
    grid = {"eta": [1e-4, 1e-2], "lam": [1e-4, 1e-1]}
    search = GridSearchCV(CNNClassifier(SMALL, epochs=4, random_state=0), grid, cv=2)
    search.fit(X[:400], y[:400])
    scores = search.cv_results_["mean_test_score"]
    assert scores.shape == (4,) and np.all((0 <= scores) & (scores <= 1))
    # eta = 1e-4 learns next to nothing in 4 epochs; the best cell is a large eta.
    assert search.best_params_["eta"] == 1e-2 and search.best_score_ > 0.6
    assert search.score(X[400:], y[400:]) > 0.6


def test_cross_val_score(digits):
    X, y = digits
    scores = cross_val_score(CNNClassifier(SMALL, eta=1e-2, epochs=4, random_state=0), X[:300], y[:300], cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6


def test_pipeline_reshaping_flat_digits(digits):
    X, y = digits
    to_images = FunctionTransformer(lambda flat: flat.reshape(-1, 1, 8, 8))
    pipe = make_pipeline(to_images, CNNClassifier(SMALL, eta=1e-2, epochs=5, random_state=0))
    pipe.fit(X[:400], y[:400])
    assert pipe.predict(X[400:]).shape == (200,)
    assert pipe.score(X[400:], y[400:]) > 0.7


@pytest.mark.parametrize("Estimator", [CNNClassifier, CNNRegressor])
def test_sklearn_check_estimator(Estimator):
    """scikit-learn's own estimator checks pass with the default parameters (5 epochs to stay fast).

    No ``image_shape``, ``random_state`` or ``dtype`` is needed: tabular rows
    become 1x1xN images, the checks seed ``random_state`` themselves, and their
    float64 data trains a float64 network.
    """
    import inspect

    from sklearn.utils.estimator_checks import check_estimator

    if "on_fail" not in inspect.signature(check_estimator).parameters:
        pytest.skip("check_estimator(on_fail=...) needs scikit-learn >= 1.6")
    results = check_estimator(Estimator(epochs=5), on_fail=None, on_skip=None)
    failed = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 45


# ---- one rule for the backend, channels-last input, random_state, error types ------------


def test_backend_none_reads_nncore_backend(digits, monkeypatch):
    pytest.importorskip("array_api_strict")
    X, y = digits
    assert CNNClassifier().backend is None and CNNRegressor().backend is None
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    est = CNNClassifier(SMALL, epochs=1, random_state=0).fit(X[:40], y[:40])
    assert est.model_.backend.name == "array_api_strict"
    assert est.predict(X[:5]).shape == (5,)
    reg = CNNRegressor(SMALL, epochs=1, random_state=0).fit(X[:40], y[:40] / 9.0)
    assert reg.model_.backend.name == "array_api_strict"
    # An explicit backend wins over the variable.
    assert CNNClassifier(SMALL, epochs=1, backend="numpy").fit(X[:40], y[:40]).model_.backend.name == "numpy"
    monkeypatch.setenv("NNCORE_BACKEND", "nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        CNNClassifier(SMALL, epochs=1).fit(X[:40], y[:40])
    monkeypatch.delenv("NNCORE_BACKEND")
    assert CNNClassifier(SMALL, epochs=1).fit(X[:40], y[:40]).model_.backend.name == "numpy"


def test_channels_last_input(digits):
    X, y = digits
    first = X[:200].reshape(-1, 1, 8, 8)
    last = np.moveaxis(first, 1, -1)  # (n, 8, 8, 1): the Keras / PIL habit
    assert last.shape == (200, 8, 8, 1)
    with pytest.raises(ValueError, match=r"channels-first \(n, c, h, w\) expected; use np.moveaxis\(X, -1, 1\)"):
        CNNClassifier(SMALL, epochs=1).fit(last, y[:200])
    reference = CNNClassifier(SMALL, epochs=2, random_state=1).fit(first, y[:200])
    keras = CNNClassifier(SMALL, epochs=2, random_state=1, data_format="channels_last").fit(last, y[:200])
    assert keras.image_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(keras.predict_proba(last[:30]), reference.predict_proba(first[:30]))
    # Three channels, channels-last: the network sees (3, 8, 8) and the numbers equal channels-first input.
    rgb_first = np.concatenate([first, first[:, :, ::-1], 1 - first], axis=1)
    rgb_last = np.moveaxis(rgb_first, 1, -1)
    a = CNNClassifier(SMALL, epochs=1, random_state=2).fit(rgb_first, y[:200]).predict_proba(rgb_first[:20])
    b = CNNClassifier(SMALL, epochs=1, random_state=2, data_format="channels_last").fit(rgb_last, y[:200])
    assert b.image_shape_ == (3, 8, 8)
    np.testing.assert_array_equal(b.predict_proba(rgb_last[:20]), a)
    # image_shape follows data_format: (h, w, c) for channels-last rows.
    rows = rgb_last.reshape(200, -1)
    c = CNNClassifier(SMALL, epochs=1, random_state=2, data_format="channels_last", image_shape=(8, 8, 3))
    np.testing.assert_array_equal(c.fit(rows, y[:200]).predict_proba(rows[:20]), a)
    # Saying channels_first explicitly reads the array as it is (8 channels of 8x1 images).
    assert CNNClassifier(SMALL[2:], epochs=1, data_format="channels_first").fit(last, y[:200]).image_shape_ == (8, 8, 1)
    with pytest.raises(ValueError, match="data_format must be one of"):
        CNNClassifier(epochs=1, data_format="NHWC").fit(first, y[:200])


def test_random_state_forms(digits):
    X, y = digits
    from nncore import CNN

    a = CNNClassifier(SMALL, epochs=1, random_state=7).fit(X[:60], y[:60])
    # An int gives the initial weights of CNN(seed=random_state).
    cnn = CNN(seed=7)
    cnn.add_Convolution2DLayer(1, 4, 3, 3)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(10)
    b = CNNClassifier(SMALL, epochs=1, random_state=7).fit(X[:60], y[:60])
    np.testing.assert_array_equal(a.predict_proba(X[:9]), b.predict_proba(X[:9]))
    cnn.predict_proba(X[:2].reshape(-1, 1, 8, 8))  # builds the layers
    untrained = CNNClassifier(SMALL, epochs=1, eta=1e-30, random_state=7).fit(X[:60], y[:60])
    np.testing.assert_allclose(untrained.model_.layers[0].kernel, cnn.layers[0].kernel, rtol=1e-6)
    # Generators are drawn from: the same generator state gives the same model, successive fits differ.
    for make in (np.random.RandomState, np.random.default_rng):
        rng = make(3)
        one = CNNClassifier(SMALL, epochs=1, random_state=rng).fit(X[:60], y[:60]).predict_proba(X[:9])
        two = CNNClassifier(SMALL, epochs=1, random_state=rng).fit(X[:60], y[:60]).predict_proba(X[:9])
        again = CNNClassifier(SMALL, epochs=1, random_state=make(3)).fit(X[:60], y[:60]).predict_proba(X[:9])
        np.testing.assert_array_equal(one, again)
        assert not np.array_equal(one, two)
    with pytest.raises(TypeError, match="random_state must be None, an int"):
        CNNClassifier(epochs=1, random_state="seven").fit(X[:20], y[:20])
    with pytest.raises(ValueError, match="random_state must be in"):
        CNNClassifier(epochs=1, random_state=-1).fit(X[:20], y[:20])


def test_error_types_match_cnn(digits):
    X, y = digits
    from nncore import CNN, Adam

    with pytest.raises(TypeError):
        Adam("fast")
    with pytest.raises(TypeError, match="eta must be a positive number"):
        CNNClassifier(eta="fast", epochs=1).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match="eta must be a positive number"):
        CNNClassifier(eta=0.0, epochs=1).fit(X[:20], y[:20])
    with pytest.raises(TypeError):
        CNN().fit(X[:20].reshape(-1, 1, 8, 8), np.eye(10)[y[:20]], lam="x")
    with pytest.raises(TypeError, match="lam"):
        CNNClassifier(lam="x", epochs=1).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match="lam"):
        CNNClassifier(lam=-1.0, epochs=1).fit(X[:20], y[:20])
    with pytest.raises(TypeError, match="scheduler must be"):
        CNNClassifier(scheduler=3, epochs=1).fit(X[:20], y[:20])
    with pytest.raises(TypeError, match="layers must be a list"):
        CNNClassifier(layers="conv", epochs=1).fit(X[:20], y[:20])


def test_dtype_follows_the_data_unless_given(digits):
    X, y = digits
    assert X.dtype == np.float32
    assert CNNClassifier(SMALL, epochs=1).fit(X[:40], y[:40]).model_.dtype == np.float32
    assert CNNClassifier(SMALL, epochs=1).fit(X[:40].astype(np.float64), y[:40]).model_.dtype == np.float64
    assert CNNClassifier(SMALL, epochs=1).fit((X[:40] * 16).astype(np.int64), y[:40]).model_.dtype == np.float64
    assert CNNClassifier(SMALL, epochs=1, dtype="float32").fit(X[:40].astype(np.float64), y[:40]).model_.dtype \
        == np.float32
    proba = CNNClassifier(SMALL, epochs=1).fit(X[:40], y[:40]).predict_proba(X[:5])
    assert proba.dtype == np.float32  # float32 stays float32


def test_scheduler_names_agree_with_the_scheduler_classes():
    from nncore import estimator, schedulers
    from nncore.estimator import SCHEDULER_NAMES

    assert {cls.lower() for cls in schedulers.SCHEDULERS} <= set(SCHEDULER_NAMES)
    for name, (cls, settings) in SCHEDULER_NAMES.items():
        scheduler = schedulers.SCHEDULERS[cls](0.01, **settings)
        assert scheduler.eta == 0.01
        if name == cls.lower():
            assert type(scheduler).__name__ == cls
    # No second table under the same name with other values (issue 10).
    assert getattr(estimator, "SCHEDULERS", schedulers.SCHEDULERS) is schedulers.SCHEDULERS


# ---- the layers description goes through the layer registry ------------------------------------


@register_layer("users_test_gain", aliases=("UsersTestGain",))
class GainLayer(Layer):
    """``a * gain``, a fixed factor: a parameter-free toy layer defined outside nncore. Any input shape."""

    def __init__(self, gain=2.0, seed=None):
        super().__init__(seed)
        self.gain = float(gain)

    def forward(self, a, training=False):
        return a * self.gain

    def backward(self, delta, need_input_grad=True):
        return delta * self.gain

    def get_config(self):
        return {"gain": self.gain}


def test_layers_by_any_registered_name(digits):
    X, y = digits
    # nncore's class names are registered names too, and a layer registered here works like nncore's own.
    named = [("Convolution2DLayer", {"feature_maps": 4}), ("users_test_gain", {"gain": 0.5}), "maxpool",
             ("fully_connected", {"nodes": 8}), "UsersTestGain"]
    model = CNNClassifier(named, epochs=1, random_state=0).fit(X[:60], y[:60]).model_
    assert [type(layer).__name__ for layer in model.layers] == [
        "Convolution2DLayer", "GainLayer", "Pooling2DLayer", "FlattenLayer", "FullyConnectedLayer", "GainLayer",
        "OutputLayer"]
    assert model.layers[1].gain == 0.5 and model.layers[5].gain == 2.0
    # The factor really is applied: gain 0 leaves only the (zero) initial biases, so every class gets 0.1.
    zeroed = CNNClassifier([("users_test_gain", {"gain": 0.0}), ("dense", {"nodes": 4})], epochs=1, eta=1e-30,
                           random_state=0).fit(X[:60], y[:60])
    np.testing.assert_allclose(zeroed.predict_proba(X[:5]), np.full((5, 10), 0.1), rtol=1e-4)
    with pytest.raises(ValueError, match=r"layers\[0\] is an output layer; the estimator adds it"):
        CNNClassifier([("output", {"nodes": 10})], epochs=1).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match=r"unknown kind 'lstm'.*registered layers are \[.*'conv'.*'users_test_gain'"):
        CNNClassifier([("lstm", {})], epochs=1).fit(X[:20], y[:20])
    with pytest.raises(TypeError, match=r"layers\[0\] \('users_test_gain'\).*unexpected keyword"):
        CNNClassifier([("users_test_gain", {"factor": 3})], epochs=1).fit(X[:20], y[:20])
