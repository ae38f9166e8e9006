"""Backends and trained networks survive pickle and deepcopy (joblib, sklearn.clone, multiprocessing)."""

import copy
import pickle

import numpy as np
import pytest

from backends import get_backend
from nncore import CNN, softmax


@pytest.mark.parametrize("name, device", [("numpy", None), ("array_api_strict", "device1")])
def test_backend_round_trips(name, device):
    backend = get_backend(name, device)
    for clone in (pickle.loads(pickle.dumps(backend)), copy.deepcopy(backend)):
        assert clone == backend
        assert clone.xp is backend.xp
        assert repr(clone.device) == repr(backend.device)


@pytest.mark.parametrize("name, device", [("numpy", None), ("array_api_strict", "device1")])
def test_trained_cnn_round_trips(name, device):
    rng = np.random.default_rng(0)
    X, t = rng.random((12, 1, 6, 6)), np.eye(2)[np.arange(12) % 2]
    cnn = CNN(seed=1, backend=get_backend(name, device), dtype="float64")
    cnn.add_Convolution2DLayer(1, 2, 3, 3)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(3)
    cnn.add_OutputLayer(2, softmax)
    cnn.fit(X, t, epochs=2, batches=3, verbose=False)
    expected = cnn.predict_proba(X)
    for clone in (pickle.loads(pickle.dumps(cnn)), copy.deepcopy(cnn)):
        assert clone.backend == cnn.backend
        np.testing.assert_array_equal(clone.predict_proba(X), expected)
        # Training the clone goes on from the same state (Adam step count included).
        assert clone.layers[0].schedulers["kernel"].t == cnn.layers[0].schedulers["kernel"].t == 2 * 3
