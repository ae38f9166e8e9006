"""The notes' claim: a CNN of the course code reaches 99 % accuracy on 28x28 MNIST.

A LeNet-like network in the course API -- 3x3 convolution into 16 maps (ReLU),
2x2 max pooling, 3x3 convolution into 32 maps (ReLU), 2x2 max pooling, a
128-node ReLU layer and a 10-node softmax output -- trained with Adam
(eta=1e-3) in minibatches of 128 on the training images (the last 5000 held
out for the validation curve), then scored on the test images.

The data is read from a folder of the four standard IDX files
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``): MNIST, or
any data set in its format such as Fashion-MNIST (Debian's package
``dataset-fashion-mnist`` installs it in /usr/share/datasets/fashion-mnist).
This script does not download anything. The verdict on the 99 % claim is only
printed for MNIST, that is when the folder (or ``--dataset-name``) is called
``mnist``.

    python examples/mnist.py --data-dir ~/data/mnist            # 10 epochs
    python examples/mnist.py --data-dir /usr/share/datasets/fashion-mnist
    python examples/mnist.py --quick                            # synthetic IDX files, seconds

Writes ``mnist_accuracy.png`` (and ``mnist_model.npz``) to ``--out``.
"""

import sys

import numpy as np

from _shared import Timer, parser, plot_accuracy, use_agg_unless_interactive, write_synthetic_idx
from nncore import CNN, RELU, Adam, CostCrossEntropy, distributed, softmax
from nncore.datasets import idx_dataset_name, load_mnist

CLAIM = 0.99
VALIDATION = 5000


def lenet(seed=2023, backend=None):
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


def claim_verdict(dataset, accuracy, full_data):
    """The line about the notes' 99 % claim: a verdict for MNIST only."""
    if dataset != "MNIST":
        return (f"the notes' claim of {CLAIM:.0%} test accuracy is about MNIST; this data is {dataset}, "
                "so it is not checked here")
    verdict = "reproduced" if accuracy >= CLAIM else "NOT reproduced"
    return f"the notes' claim of {CLAIM:.0%} test accuracy: {verdict}" + (
        "" if full_data else " (on a subset of the training data)")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="default 10 (--quick: 1)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--dataset-name", default=None,
                   help="name of the data in --data-dir (default: the folder's name); the 99 %% verdict is "
                        "only given for 'mnist'")
    args = p.parse_args(argv)
    if args.data_dir is None and not args.quick:
        print("examples/mnist.py needs IDX files: pass --data-dir DIR, a folder with "
              "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
              "t10k-labels-idx1-ubyte (each may be .gz), e.g. /usr/share/datasets/fashion-mnist after "
              "'apt-get install dataset-fashion-mnist'. Nothing is downloaded. --quick alone runs on "
              "synthetic IDX files it writes itself.", file=sys.stderr)
        return 2
    use_agg_unless_interactive()
    comm = distributed.world()  # under mpiexec -n N: train data-parallel, print and write files once
    is_root = distributed.root_prints_only(comm)
    data_dir, name = args.data_dir, args.dataset_name
    if data_dir is None:  # --quick without data: a smoke run on made-up images
        data_dir, name = args.out / "synthetic-idx", "synthetic"
        if is_root:
            write_synthetic_idx(data_dir, seed=args.seed)
        if comm is not None:
            comm.Barrier()  # the files are complete before any process reads them
    dataset = idx_dataset_name(data_dir, name)
    try:
        X_train, t_train, X_test, t_test = load_mnist(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"examples/mnist.py: {exc}", file=sys.stderr)
        return 2
    n_available = len(X_train)
    epochs = args.epochs or (1 if args.quick else 10)
    n_train = args.train_size or (1000 if args.quick else None)
    if n_train is not None:
        X_train, t_train = X_train[:n_train], t_train[:n_train]
    if args.quick:
        X_test, t_test = X_test[:500], t_test[:500]
    n_val = min(VALIDATION, len(X_train) // 10)
    X_fit, t_fit, X_val, t_val = X_train[:-n_val], t_train[:-n_val], X_train[-n_val:], t_train[-n_val:]

    cnn = lenet(args.seed, args.backend)
    cnn.summary(input_shape=X_fit.shape[1:])
    print(f"training on {len(X_fit)} {dataset} images ({len(X_val)} held out for validation), "
          f"{epochs} epochs of batch {args.batch_size}, backend {cnn.backend.name}")
    with Timer() as timer:
        scores = cnn.fit(X_fit, t_fit, epochs=epochs, batch_size=args.batch_size, X_val=X_val, t_val=t_val,
                         comm=comm)
    print(f"trained in {timer.seconds:.0f} s ({epochs * len(X_fit) / timer.seconds:.0f} images/s, "
          "including the validation pass per epoch)")
    accuracy = cnn.score(X_test, t_test)
    print(f"test accuracy: {accuracy:.4f} on {len(X_test)} {dataset} test images")
    print(claim_verdict(dataset, accuracy, len(X_train) >= n_available))

    args.out.mkdir(parents=True, exist_ok=True)
    height, width = X_fit.shape[2:]
    data = (f"{dataset} {height}x{width}: {len(X_fit)} training, {len(X_val)} validation images; "
            f"test accuracy {accuracy:.4f}")
    if is_root:
        path = plot_accuracy(scores, "LeNet-like CNN: accuracy per epoch", data, args.out / "mnist_accuracy.png",
                             ylim_low=0.9)
        print(f"saved {path}")
    print(f"saved {cnn.save(args.out / 'mnist_model.npz')}")  # reload with CNN.load(path)
    return 0 if np.isfinite(accuracy) else 1


if __name__ == "__main__":
    sys.exit(main())
