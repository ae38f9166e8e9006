"""The course's two usage examples (cnn-lecture-notes.md, "Usage of CNN code") run unchanged.

The add_* calls below are copied verbatim from the notes; only the data (random 28x28 images
instead of MNIST) and the number of epochs differ.
"""

import numpy as np
import pytest

from nncore import *  # noqa: F403 -- exactly as the course imports it


def onehot(target: np.ndarray):
    # The course's helper, verbatim.
    onehot = np.zeros((target.size, target.max() + 1))
    onehot[np.arange(target.size), target] = 1
    return onehot


@pytest.fixture
def mnist_like():
    rng = np.random.default_rng(2023)
    x_train = rng.uniform(0, 1, size=(200, 1, 28, 28))
    x_val = rng.uniform(0, 1, size=(50, 1, 28, 28))
    y_train = onehot(np.concatenate([np.arange(10), rng.integers(0, 10, size=190)]))
    y_val = onehot(np.concatenate([np.arange(10), rng.integers(0, 10, size=40)]))
    return x_train, x_val, y_train, y_val


def check_scores(scores, cnn, x_val):
    for key in ("train_error", "train_acc", "val_error", "val_acc"):
        assert scores[key].shape == (1,)
        assert np.all(np.isfinite(scores[key])), key
    assert 0 <= scores["train_acc"][0] <= 1 and 0 <= scores["val_acc"][0] <= 1
    predictions = cnn.predict(x_val)
    assert predictions.shape == (x_val.shape[0], 10)
    np.testing.assert_array_equal(np.sum(predictions, axis=1), 1)  # one-hot rows


def test_quickstart_example(mnist_like):
    x_train, x_val, y_train, y_val = mnist_like

    adam_scheduler = Adam(eta=1e-3, rho=0.9, rho2=0.999)
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=adam_scheduler, seed=2023)

    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=1,
        kernel_height=3,
        kernel_width=3,
        act_func=LRELU,
    )

    cnn.add_FlattenLayer()

    cnn.add_FullyConnectedLayer(30, LRELU)

    cnn.add_FullyConnectedLayer(20, LRELU)

    cnn.add_OutputLayer(10, softmax)

    scores = cnn.fit(
        x_train,
        y_train,
        lam=1e-5,
        batches=10,
        epochs=1,
        X_val=x_val,
        t_val=y_val,
    )
    check_scores(scores, cnn, x_val)


def test_untraditional_example(mnist_like):
    x_train, x_val, y_train, y_val = mnist_like

    adam_scheduler = Adam(eta=1e-3, rho=0.9, rho2=0.999)
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=adam_scheduler, seed=2023)

    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=7,
        kernel_height=7,
        kernel_width=1,
        act_func=LRELU,
    )

    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="average",
    )

    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="max",
    )

    cnn.add_Convolution2DLayer(
        input_channels=7,
        feature_maps=1,
        kernel_height=4,
        kernel_width=4,
        v_stride=2,
        h_stride=3,
        act_func=LRELU,
        optimized=False,
    )

    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=1,
        kernel_height=2,
        kernel_width=2,
        act_func=sigmoid,
        optimized=True,
    )

    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="max"
    )

    cnn.add_FlattenLayer()

    cnn.add_FullyConnectedLayer(100, LRELU)

    cnn.add_FullyConnectedLayer(10, sigmoid)

    cnn.add_FullyConnectedLayer(101, identity)

    cnn.add_OutputLayer(10, softmax)

    scores = cnn.fit(
        x_train,
        y_train,
        lam=1e-5,
        batches=10,
        epochs=1,
        X_val=x_val,
        t_val=y_val,
    )
    check_scores(scores, cnn, x_val)
    # Shapes through the network (28x28 "same" 7x1 -> pools to 26x26 -> stride (2, 3) "same" -> 13x9
    # -> 2x2 "same" -> max pool -> 12x8 -> 96 features).
    assert cnn.layers[6].input_shape == (1, 12, 8)
    assert cnn.layers[7].input_shape == (96,)
