"""Main job: ``python -m nncore`` trains the reference CNN on scikit-learn's digits.

Prints the test accuracy (``test accuracy: 0.9xxx``) and the training
throughput in images per second.
"""

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import CNN, RELU, Adam, CostCrossEntropy, softmax


def reference_cnn(backend="numpy", seed=2023, in_channels=1):
    """The reference network for 8x8 digits: two 3x3 convolutions, max pooling, two dense layers."""
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(eta=1e-3, rho=0.9, rho2=0.999), seed=seed, backend=backend)
    cnn.add_Convolution2DLayer(in_channels, 16, 3, 3, act_func=RELU)
    cnn.add_Convolution2DLayer(16, 32, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(128, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def digits_split(seed):
    """Digits as ``(n, 1, 8, 8)`` in [0, 1] with one-hot targets, split 80/20."""
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    t = np.eye(10, dtype=np.float32)[digits.target]
    return train_test_split(X, t, test_size=0.2, random_state=seed, stratify=digits.target)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nncore", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto or array_api_strict")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    X_train, X_test, t_train, t_test = digits_split(args.seed)
    cnn = reference_cnn(args.backend, args.seed)
    print(f"training on {len(X_train)} digits, testing on {len(X_test)}; backend {cnn.backend.name}")
    start = time.perf_counter()
    cnn.fit(X_train, t_train, epochs=args.epochs, batch_size=args.batch_size, verbose=not args.quiet)
    cnn.backend.synchronize()
    seconds = time.perf_counter() - start
    print(f"training throughput: {args.epochs * len(X_train) / seconds:.0f} images/s ({seconds:.1f} s)")
    print(f"test accuracy: {cnn.score(X_test, t_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
