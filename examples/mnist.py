"""The notes' claim: a CNN of the course code reaches 99 % accuracy on 28x28 MNIST.

A LeNet-like network in the course API -- 3x3 convolution into 16 maps (ReLU),
2x2 max pooling, 3x3 convolution into 32 maps (ReLU), 2x2 max pooling, a
128-node ReLU layer and a 10-node softmax output -- trained with Adam
(eta=1e-3) in minibatches of 128 on the 60000 MNIST training images (5000 of
them held out for the validation curve), then scored on the 10000 test
images.

MNIST is read from a folder of the four standard IDX files
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), e.g. from
https://ossci-datasets.s3.amazonaws.com/mnist/ or Kaggle; this script does not
download anything.

    python examples/mnist.py --data-dir ~/data/mnist            # 10 epochs
    python examples/mnist.py --data-dir ~/data/mnist --backend cupy

Writes ``mnist_accuracy.png`` (and ``mnist_model.npz``) to ``--out``.
"""

import sys

import numpy as np

from _shared import Timer, parser, plot_accuracy, use_agg_unless_interactive
from nncore import CNN, RELU, Adam, CostCrossEntropy, distributed, softmax
from nncore.datasets import load_mnist

CLAIM = 0.99
VALIDATION = 5000


def lenet(seed=2023, backend="numpy"):
    """The LeNet-like network of the benchmarks (workload B), in the course API."""
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(eta=1e-3, rho=0.9, rho2=0.999), seed=seed, backend=backend)
    cnn.add_Convolution2DLayer(input_channels=1, feature_maps=16, kernel_height=3, kernel_width=3, act_func=RELU)
    cnn.add_PoolingLayer(kernel_height=2, kernel_width=2, v_stride=2, h_stride=2, pooling="max")
    cnn.add_Convolution2DLayer(input_channels=16, feature_maps=32, kernel_height=3, kernel_width=3, act_func=RELU)
    cnn.add_PoolingLayer(kernel_height=2, kernel_width=2, v_stride=2, h_stride=2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(128, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="default 10 (--quick: 1)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    args = p.parse_args(argv)
    if args.data_dir is None:
        print("examples/mnist.py needs the MNIST IDX files: pass --data-dir DIR, a folder with "
              "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
              "t10k-labels-idx1-ubyte (each may be .gz). Nothing is downloaded.", file=sys.stderr)
        return 2
    use_agg_unless_interactive()
    try:
        X_train, t_train, X_test, t_test = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"examples/mnist.py: {exc}", file=sys.stderr)
        return 2
    epochs = args.epochs or (1 if args.quick else 10)
    n_train = args.train_size or (1000 if args.quick else None)
    if n_train is not None:
        X_train, t_train = X_train[:n_train], t_train[:n_train]
    if args.quick:
        X_test, t_test = X_test[:500], t_test[:500]
    n_val = min(VALIDATION, len(X_train) // 10)
    X_fit, t_fit, X_val, t_val = X_train[:-n_val], t_train[:-n_val], X_train[-n_val:], t_train[-n_val:]

    comm = distributed.world()  # under mpiexec -n N: train data-parallel, print and write files once
    is_root = distributed.root_prints_only(comm)
    cnn = lenet(args.seed, args.backend or "numpy")
    cnn.summary(input_shape=X_fit.shape[1:])
    print(f"training on {len(X_fit)} MNIST images ({len(X_val)} held out for validation), "
          f"{epochs} epochs of batch {args.batch_size}, backend {cnn.backend.name}")
    with Timer() as timer:
        scores = cnn.fit(X_fit, t_fit, epochs=epochs, batch_size=args.batch_size, X_val=X_val, t_val=t_val,
                         comm=comm)
    print(f"trained in {timer.seconds:.0f} s ({epochs * len(X_fit) / timer.seconds:.0f} images/s, "
          "including the validation pass per epoch)")
    accuracy = cnn.score(X_test, t_test)
    print(f"test accuracy: {accuracy:.4f} on {len(X_test)} test images")
    verdict = "reproduced" if accuracy >= CLAIM else "NOT reproduced"
    print(f"the notes' claim of {CLAIM:.0%} test accuracy: {verdict}"
          + ("" if len(X_fit) + n_val >= 60000 else " (on a subset of the training data)"))

    args.out.mkdir(parents=True, exist_ok=True)
    data = f"MNIST 28x28: {len(X_fit)} training, {len(X_val)} validation images; test accuracy {accuracy:.4f}"
    if is_root:
        path = plot_accuracy(scores, "LeNet-like CNN: accuracy per epoch", data, args.out / "mnist_accuracy.png",
                             ylim_low=0.9)
        print(f"saved {path}")
    print(f"saved {cnn.save(args.out / 'mnist_model.npz')}")  # reload with CNN.load(path)
    return 0 if np.isfinite(accuracy) else 1


if __name__ == "__main__":
    sys.exit(main())
