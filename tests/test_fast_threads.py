"""How NNCORE_NUM_THREADS splits the work never changes the numbers of the NumPy fast paths.

For one BLAS thread count, serial runs and runs whose samples are split
between two or three threads agree bit for bit: the chunks do not depend on
the thread count, and the per-chunk shares of the kernel and bias gradients are
added in sample order. (Inside a parallel region BLAS is held to one thread,
and OpenBLAS rounds differently with more threads; so the tests hold BLAS to
one thread throughout, and the last test bounds the difference otherwise.)
"""

import numpy as np
import pytest

from backends.numpy_fast import threads
from nncore import CNN, LRELU, RELU, Adam, CostCrossEntropy, ops, softmax

RNG = np.random.default_rng(1313)

CASES = [
    # (n, c, h, w, f, kh, kw, stride, pad): each fast convolution route
    (9, 3, 10, 10, 4, 3, 3, (1, 1), "same"),  # im2col, input gradient by the flipped kernel
    (7, 2, 9, 8, 3, 3, 2, (2, 1), "same"),  # im2col, input gradient by col2im
    (8, 1, 11, 9, 1, 3, 3, (1, 1), "same"),  # one channel, one map: shifted sums
    (8, 1, 11, 9, 2, 3, 3, (1, 1), "same"),  # one channel, two maps: wide rows
    (64, 16, 14, 14, 32, 3, 3, (1, 1), "same"),  # LeNet's second convolution: products BLAS blocks
]


def run_with(workers, monkeypatch, fn, chunk_bytes=6000):
    """``fn()`` with the fast paths on ``workers`` threads, in chunks of a few samples, BLAS on one thread."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with monkeypatch.context() as patch, threadpoolctl.threadpool_limits(1, user_api="blas"):
        patch.setattr(threads, "WORKERS", workers)
        patch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 0)
        patch.setattr(threads, "COL_CHUNK_BYTES", chunk_bytes)
        return fn()


def assert_bitwise(got, want):
    # Compared as bytes: -0.0 and 0.0 (or two NaNs) must match too.
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_convolution_threads_equal_serial_bitwise(case, dtype, monkeypatch):
    n, c, h, w, f, kh, kw, stride, pad = case
    x = RNG.standard_normal((n, c, h, w)).astype(dtype)
    kernel = RNG.standard_normal((f, c, kh, kw)).astype(dtype)
    bias = RNG.standard_normal(f).astype(dtype)
    padding = ops.resolve_padding(pad, (h, w), (kh, kw), stride)

    def forward_backward():
        out, cache = ops.conv2d_act_forward(x, kernel, bias, stride, padding, "lrelu", 1e-3, training=True)
        out = np.array(out)  # recycled arrays may be handed out again: keep a copy
        delta = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
        with_dx = ops.conv2d_act_backward(delta, cache, kernel, stride, padding, "lrelu", 1e-3, True)
        without_dx = ops.conv2d_act_backward(delta, cache, kernel, stride, padding, "lrelu", 1e-3, False)
        inference, _ = ops.conv2d_act_forward(x, kernel, bias, stride, padding, "lrelu", 1e-3)
        return [out, *with_dx, *without_dx, np.array(inference)]

    chunk_bytes = 6000 if n < 64 else 1 << 20  # several chunks of samples either way
    serial = run_with(1, monkeypatch, forward_backward, chunk_bytes)
    for workers in (2, 3):
        assert_bitwise(run_with(workers, monkeypatch, forward_backward, chunk_bytes), serial)


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_pooling_threads_equal_serial_bitwise(pooling, monkeypatch):
    x = RNG.standard_normal((9, 4, 12, 12)).astype(np.float32)
    dy = RNG.standard_normal((9, 4, 6, 6)).astype(np.float32)

    def forward_backward():
        y, argmax = ops.pool2d_forward(x, (2, 2), (2, 2), pooling)
        dx = ops.pool2d_backward(dy, (12, 12), (2, 2), (2, 2), pooling, argmax)
        return [np.array(y), None if argmax is None else np.array(argmax), dx]

    assert_bitwise(run_with(2, monkeypatch, forward_backward), run_with(1, monkeypatch, forward_backward))


def test_training_with_two_threads_equals_serial_bitwise(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.random((40, 1, 12, 12), dtype=np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 40)]

    def fit():
        cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-3, 0.9, 0.999), seed=11)
        cnn.add_Convolution2DLayer(1, 4, 3, 3, act_func=RELU)
        cnn.add_PoolingLayer(2, 2, 2, 2)
        cnn.add_Convolution2DLayer(4, 6, 3, 3, act_func=LRELU)
        cnn.add_FlattenLayer()
        cnn.add_OutputLayer(10, softmax)
        scores = cnn.fit(X, t, epochs=2, batch_size=20, verbose=False)
        weights = [np.array(getattr(layer, name)) for layer in cnn.layers for name in layer.params]
        return [np.asarray(scores["train_error"]), cnn.predict_proba(X), *weights]

    assert_bitwise(run_with(2, monkeypatch, fit), run_with(1, monkeypatch, fit))


def test_threads_with_blas_threads_differ_only_by_rounding(monkeypatch):
    # Serial runs let BLAS use its threads; parallel regions hold it to one. OpenBLAS's
    # products round differently then, so the numbers agree to rounding, not bitwise.
    x = RNG.standard_normal((64, 16, 14, 14)).astype(np.float32)
    kernel = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(32).astype(np.float32)
    delta = RNG.standard_normal((64, 32, 14, 14)).astype(np.float32)
    padding = ops.resolve_padding("same", (14, 14), (3, 3), (1, 1))
    runs = []
    for workers in (1, 2):
        with monkeypatch.context() as patch:
            patch.setattr(threads, "WORKERS", workers)
            out, cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu", training=True)
            runs.append([np.array(out), *ops.conv2d_act_backward(delta, cache, kernel, (1, 1), padding, "relu")])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))
