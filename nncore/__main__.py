"""Main job: ``python -m nncore`` trains the reference CNN on scikit-learn's digits.

Prints the test accuracy (``test accuracy: 0.9xxx``) and the training
throughput in images per second.

Data: the 1797 bundled 8x8 digits, split 80/20 (stratified) into training and
test images; ``--data mnist --data-dir DIR`` uses the 60000/10000 split of a
folder of IDX files instead (MNIST, or a data set in its format such as
Fashion-MNIST), with a LeNet-like network for 28x28 images; ``--data mnist``
without ``--data-dir`` downloads MNIST through scikit-learn's ``fetch_openml``
(cached under ``~/scikit_learn_data``). In both cases a stratified
``--val-fraction`` (default 10 %) of the *training* images is held out as
validation data: it is scored after every epoch for the learning curve, while
the test images are only used once, for the final accuracy.

``--out DIR`` writes the trained model (``DIR/model.npz``, see
:meth:`nncore.CNN.save`), the learning curve (``DIR/learning_curve.png``:
training and validation loss and accuracy per epoch) and the same numbers as
``DIR/learning_curve.csv``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from backends import get_backend

from . import CNN, RELU, Adam, CostCrossEntropy, distributed, softmax
from .datasets import idx_dataset_name, load_digits, load_mnist

DEFAULTS = {"digits": {"epochs": 30, "batch_size": 32}, "mnist": {"epochs": 10, "batch_size": 128}}

#: ``--help``'s description: plain text (the module docstring is reStructuredText).
DESCRIPTION = """\
Train nncore's reference CNN and print its test accuracy and training throughput.
Default data: scikit-learn's bundled 8x8 digits (no download), split 80/20 into
training and test images. --data mnist --data-dir DIR reads a folder of the four
IDX files (MNIST, or a data set in its format such as Fashion-MNIST) and trains a
LeNet-like network; --data mnist alone downloads MNIST with scikit-learn's
fetch_openml (cached in ~/scikit_learn_data). --val-fraction of the training images
is held out and scored every epoch for the learning curve; the test images are
used once, for the final accuracy."""


def reference_cnn(backend=None, seed=2023, in_channels=1):
    """The reference network for 8x8 digits: two 3x3 convolutions, max pooling, two dense layers."""
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(eta=1e-3, rho=0.9, rho2=0.999), seed=seed, backend=backend)
    cnn.add_Convolution2DLayer(in_channels, 16, 3, 3, act_func=RELU)
    cnn.add_Convolution2DLayer(16, 32, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(128, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def mnist_cnn(backend=None, seed=2023, in_channels=1):
    """A LeNet-like network for 28x28 images (the benchmarks' workload B).

    3x3 conv into 16 maps, 2x2 max pool, 3x3 conv into 32 maps, 2x2 max pool,
    128 ReLU nodes, 10 softmax outputs.
    """
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(eta=1e-3, rho=0.9, rho2=0.999), seed=seed, backend=backend)
    cnn.add_Convolution2DLayer(in_channels, 16, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_Convolution2DLayer(16, 32, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(128, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def digits_split(seed):
    """Digits as ``(n, 1, 8, 8)`` in [0, 1] with one-hot targets, split 80/20 (stratified).

    Returns ``X_train, X_test, t_train, t_test``.
    """
    X, t = load_digits()
    return train_test_split(X, t, test_size=0.2, random_state=seed, stratify=t.argmax(axis=1))


def validation_split(X, t, fraction, seed):
    """``X_fit, X_val, t_fit, t_val``: a stratified ``fraction`` of the training data held out."""
    if fraction == 0:
        return X, None, t, None
    return train_test_split(X, t, test_size=fraction, random_state=seed, stratify=t.argmax(axis=1))


def plot_learning_curve(scores, title, path):
    """Training and validation loss (left) and accuracy (right) per epoch, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no window, no global state, works without a display
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(scores["train_error"]) + 1)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, label in ((loss_ax, "error", "loss (cross entropy)"), (acc_ax, "acc", "accuracy")):
        ax.plot(epochs, scores[f"train_{key}"], marker=".", label="training")
        if np.isfinite(scores[f"val_{key}"]).any():
            ax.plot(epochs, scores[f"val_{key}"], marker=".", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_yscale("log")
    loss_ax.set_title("Loss per epoch")
    acc_ax.set_title("Accuracy per epoch")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def write_scores(scores, path):
    keys = ("train_error", "train_acc", "val_error", "val_acc")
    rows = ["epoch," + ",".join(keys)]
    rows += [f"{i + 1}," + ",".join(f"{scores[k][i]:.6g}" for k in keys) for i in range(len(scores["train_error"]))]
    path.write_text("\n".join(rows) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nncore", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default=None,
                        help="numpy, cupy, auto or array_api_strict; default: the environment variable "
                             "NNCORE_BACKEND if set, else numpy")
    parser.add_argument("--data", choices=sorted(DEFAULTS), default="digits",
                        help="digits (default: scikit-learn's bundled 8x8 digits) or mnist (28x28 IDX files)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="with --data mnist: folder of the four IDX files of MNIST or a data set in its "
                             "format such as Fashion-MNIST (without it MNIST is downloaded with scikit-learn's "
                             "fetch_openml, which needs the network once and then caches it)")
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (digits) or 10 (mnist)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (digits) or 128 (mnist)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="part of the training data held out for the validation curve (default 0.1; 0: none)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for model.npz, learning_curve.png and learning_curve.csv")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.data_dir is not None and args.data != "mnist":
        parser.error("--data-dir is for --data mnist")
    epochs = args.epochs or DEFAULTS[args.data]["epochs"]
    batch_size = args.batch_size or DEFAULTS[args.data]["batch_size"]
    try:  # before any data is read: a misspelt --backend or NNCORE_BACKEND, or CuPy without a GPU
        backend = get_backend(args.backend)
    except (ValueError, ImportError, RuntimeError) as exc:
        print(f"python -m nncore: {exc}", file=sys.stderr)
        return 2
    comm = distributed.world()  # under mpiexec -n N: train data-parallel, print and write files once
    is_root = distributed.root_prints_only(comm)

    if args.data == "mnist":
        try:
            X_train, t_train, X_test, t_test = load_mnist(args.data_dir)
        except (OSError, ValueError) as exc:  # FileNotFoundError is an OSError
            print(f"python -m nncore: cannot load MNIST (or the IDX data in --data-dir): {exc}", file=sys.stderr)
            return 2
        cnn = mnist_cnn(backend, args.seed, X_train.shape[1])
        name = f"{idx_dataset_name(args.data_dir)} images"
    else:
        X_train, X_test, t_train, t_test = digits_split(args.seed)
        cnn = reference_cnn(backend, args.seed)
        name = "digits"
    X_fit, X_val, t_fit, t_val = validation_split(X_train, t_train, args.val_fraction, args.seed)

    held_out = f" ({len(X_val)} held out for validation)" if X_val is not None else ""
    print(f"training on {len(X_fit)} {name}{held_out}, testing on {len(X_test)}; backend {cnn.backend.name}")
    start = time.perf_counter()
    scores = cnn.fit(X_fit, t_fit, epochs=epochs, batch_size=batch_size, X_val=X_val, t_val=t_val,
                     verbose=not args.quiet, comm=comm)
    cnn.backend.synchronize()
    seconds = time.perf_counter() - start
    print(f"training throughput: {epochs * len(X_fit) / seconds:.0f} images/s ({seconds:.1f} s)")
    print(f"test accuracy: {cnn.score(X_test, t_test):.4f}")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"saved the model to {cnn.save(args.out / 'model.npz')}")
    if args.out is not None and is_root:
        title = f"{'Reference CNN on 8x8 digits' if args.data == 'digits' else 'LeNet-like CNN on ' + name}: " \
                f"{len(X_fit)} training, {len(X_val) if X_val is not None else 0} validation images"
        print(f"saved the learning curve to {plot_learning_curve(scores, title, args.out / 'learning_curve.png')} "
              f"and {write_scores(scores, args.out / 'learning_curve.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
