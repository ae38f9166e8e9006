"""The number of array operations per training step: the cost model of the GPU path.

On CuPy each namespace function or array operator is at least one kernel launch
(about 15 us with Python), so at small batches a training step costs what its
operation count costs. The count is taken on array_api_strict (tests/opcount.py),
where every operation is visible, on workload B (LeNet) of the benchmarks.
"""

import numpy as np
import pytest

from nncore import CNN, RELU, Adam, softmax

from opcount import count_operations

TRAINING_STEP_BUDGET = 120
INFERENCE_BUDGET = 60


def lenet(backend):
    cnn = CNN(scheduler=Adam(1e-3, 0.9, 0.999), seed=0, backend=backend)
    cnn.add_Convolution2DLayer(1, 16, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2)
    cnn.add_Convolution2DLayer(16, 32, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(128, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]


def operations_of_one_epoch(backend, steps, lam):
    cnn = lenet(backend)
    X, t = data(8 * steps)
    cnn.fit(X, t, epochs=1, batch_size=8, lam=lam, verbose=False)  # build and warm up outside the count
    X, t = backend.asarray(X), backend.asarray(t)
    with count_operations() as counter:
        cnn.fit(X, t, epochs=1, batch_size=8, lam=lam, verbose=False)
    return counter


@pytest.mark.parametrize("lam", [0.0, 1e-4])
def test_training_step_stays_within_the_operation_budget(strict_device1, lam):
    # Two epochs that differ only in their number of steps: the difference is per-step work alone
    # (shuffling, the divergence check and the scores are per-epoch work).
    few, many = (operations_of_one_epoch(strict_device1, steps, lam) for steps in (2, 6))
    per_step = (many.count - few.count) / 4
    assert per_step == int(per_step), "every step should cost the same"
    busiest = (many.by_name - few.by_name).most_common(8)
    print(f"operations per LeNet training step (lam={lam}): {per_step:.0f}; most used: {busiest}")
    assert per_step <= TRAINING_STEP_BUDGET, f"{per_step} operations per step; most used: {busiest}"


def test_inference_stays_within_the_operation_budget(strict_device1):
    cnn = lenet(strict_device1)
    X, t = data(64)
    cnn.fit(X, t, epochs=1, batch_size=64, verbose=False)
    X = strict_device1.asarray(X)
    with count_operations() as counter:
        cnn.predict_proba(X)
    print(f"operations per LeNet inference batch: {counter.count}; most used: {counter.by_name.most_common(8)}")
    assert counter.count <= INFERENCE_BUDGET, counter.by_name.most_common(8)


def test_the_counter_sees_operations(strict_device1):
    xp = strict_device1.xp
    a = strict_device1.asarray(np.ones(3))
    with count_operations() as counter:
        b = xp.sum(a * 2.0 + a)
    assert float(b) == 9.0
    assert counter.count == 3 and counter.by_name == {"__mul__": 1, "__add__": 1, "sum": 1}
