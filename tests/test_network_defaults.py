"""What a user of Keras or PyTorch expects of CNN itself: the backend rule, channels-last input."""

import numpy as np
import pytest

from nncore import CNN, RELU, softmax


def small_cnn(**kwargs):
    cnn = CNN(seed=0, **kwargs)
    cnn.add_Convolution2DLayer(1, 2, 3, 3, act_func=RELU)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    return cnn


def test_backend_none_is_the_default_and_reads_nncore_backend(monkeypatch):
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    assert CNN().backend.name == "array_api_strict"
    monkeypatch.delenv("NNCORE_BACKEND")
    assert CNN().backend.name == "numpy"
    monkeypatch.setenv("NNCORE_BACKEND", "cupyy")
    with pytest.raises(ValueError, match="NNCORE_BACKEND.*'cupyy'"):
        CNN()
    assert CNN(backend="numpy").backend.name == "numpy"  # an explicit name wins over the variable


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_images_get_the_fix_in_the_message(channels):
    cnn = CNN(seed=0)
    cnn.add_Convolution2DLayer(channels, 2, 3, 3)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    X = np.zeros((5, 28, 28, channels))
    t = np.eye(3)[np.zeros(5, int)]
    with pytest.raises(ValueError, match=rf"fit: X has shape \(5, 28, 28, {channels}\).*channels-last.*"
                                         r"channels-first \(n, c, h, w\) expected; use np.moveaxis\(X, -1, 1\)"):
        cnn.fit(X, t, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="channels-first"):
        cnn.predict(X)
    cnn.fit(np.moveaxis(X, -1, 1), t, epochs=1, verbose=False)  # the suggested fix works


def test_a_genuine_channel_mismatch_keeps_its_own_message():
    cnn = small_cnn()
    with pytest.raises(ValueError, match="expects 1 input channels, got 2"):
        cnn.predict(np.zeros((4, 2, 8, 8)))
